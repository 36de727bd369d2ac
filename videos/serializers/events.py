"""Output serializers of `/events/<kind>/` (read-only: events are made by processing, not by clients)."""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from videos.models import Event
from videos.serializers.fields import FastRepresentationMixin

# An id of 18 digits (what the detail routes take) that no host, port or path of ours contains.
_PK_SENTINEL = "918273645546372819"


def absolute_url(context: dict, view_name: str, pk: int) -> str:
    """The (absolute, given a request) URL of a detail route; reversed once per view name and serializer context,
    not once per row (a page of 1,000 events has 2,000 of them)."""
    templates = context.setdefault("_url_templates", {})
    template = templates.get(view_name)
    if template is None:
        path = reverse(view_name, kwargs={"pk": _PK_SENTINEL})
        request = context.get("request")
        template = (request.build_absolute_uri(path) if request is not None else path).split(_PK_SENTINEL)
        templates[view_name] = template
    return f"{template[0]}{pk}{template[1]}"


class EventSerializer(FastRepresentationMixin, serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    created_date = serializers.DateTimeField(read_only=True)
    video_archive = serializers.IntegerField(source="video_archive_id", read_only=True)
    camera_group = serializers.IntegerField(source="camera_group_id", read_only=True)
    frame_timestamp = serializers.FloatField(read_only=True, help_text="Seconds into the video.")
    frame_coords_left = serializers.IntegerField(read_only=True)
    frame_coords_top = serializers.IntegerField(read_only=True)
    frame_coords_right = serializers.IntegerField(read_only=True)
    frame_coords_bottom = serializers.IntegerField(read_only=True)
    quality = serializers.FloatField(read_only=True)
    track_id = serializers.IntegerField(read_only=True)
    thumbnail = serializers.SerializerMethodField(help_text="The thumbnail's URL (needs the token too).")
    fullframe = serializers.SerializerMethodField(help_text="The full frame's URL (needs the token too).")
    cluster = serializers.IntegerField(source="cluster_id", read_only=True, allow_null=True)
    detector_params = serializers.DictField(read_only=True)

    @extend_schema_field({"type": "string", "format": "uri"})
    def get_thumbnail(self, event: Event) -> str:
        return absolute_url(self.context, f"{event._meta.model_name}-thumbnail", event.pk)

    @extend_schema_field({"type": "string", "format": "uri"})
    def get_fullframe(self, event: Event) -> str:
        return absolute_url(self.context, f"{event._meta.model_name}-fullframe", event.pk)


class FaceEventSerializer(EventSerializer):
    looks_like_confidence = serializers.SerializerMethodField(
        help_text="Similarity to the looks_like probe (0..1); null when the request has no looks_like."
    )

    matched = serializers.SerializerMethodField(help_text="Whether it matched a watch list card.")
    matched_card = serializers.IntegerField(source="matched_card_id", read_only=True, allow_null=True,
                                            help_text="The watch list card it matched, or null.")
    matched_lists = serializers.ListField(source="matched_list_ids", child=serializers.IntegerField(), read_only=True,
                                          help_text="The watch lists through which it matched.")
    confidence = serializers.FloatField(source="match_confidence", read_only=True, allow_null=True,
                                        help_text="Similarity (0..1) to the matched card's closest photo, or null.")

    def get_matched(self, event: Event) -> bool:
        return event.matched_card_id is not None

    @extend_schema_field({"type": "number", "format": "double", "nullable": True})
    def get_looks_like_confidence(self, event: Event) -> float | None:
        return getattr(event, "looks_like_confidence", None)
