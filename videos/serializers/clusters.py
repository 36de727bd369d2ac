"""Serializers of `/clusters/<kind>/`: the output (the view gives each cluster's sources in the context), and the
inputs of naming, merging and splitting (videos.persons)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from videos.event_selectors import ClusterSources
from videos.models import Card, Cluster
from videos.serializers.archives import StrictPrimaryKeyRelatedField
from videos.serializers.events import absolute_url
from videos.serializers.fields import (
    ExcessFieldsRejectMixin,
    FastRepresentationMixin,
    StrictCharField,
    StrictIntegerField,
)

_ID_LIST = {"type": "array", "items": {"type": "integer"}}


class ClusterSerializer(FastRepresentationMixin, serializers.Serializer):
    """`context["sources"]` maps cluster ids to their ClusterSources (videos.event_selectors.cluster_sources)."""

    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(read_only=True, help_text="The person's name; empty when nobody named it.")
    created_date = serializers.DateTimeField(read_only=True)
    modified_date = serializers.DateTimeField(read_only=True)
    event_count = serializers.IntegerField(read_only=True)
    best_event = serializers.IntegerField(source="best_event_id", read_only=True, allow_null=True)
    thumbnail = serializers.SerializerMethodField(help_text="The best event's thumbnail URL, or null.")
    video_archives = serializers.SerializerMethodField(help_text="Sorted ids of the archives of its events.")
    camera_groups = serializers.SerializerMethodField(help_text="Sorted ids of the camera groups of its events.")

    @extend_schema_field({"type": "string", "format": "uri", "nullable": True})
    def get_thumbnail(self, cluster: Cluster) -> str | None:
        if cluster.best_event_id is None:
            return None
        event_model = cluster._meta.get_field("best_event").related_model
        return absolute_url(self.context, f"{event_model._meta.model_name}-thumbnail", cluster.best_event_id)

    @extend_schema_field(_ID_LIST)
    def get_video_archives(self, cluster: Cluster) -> list[int]:
        return self._sources(cluster).video_archives

    @extend_schema_field(_ID_LIST)
    def get_camera_groups(self, cluster: Cluster) -> list[int]:
        return self._sources(cluster).camera_groups

    def _sources(self, cluster: Cluster) -> ClusterSources:
        return self.context["sources"][cluster.pk]


# Ids are bigints; the path's id is at most 18 digits, and so are these.
_MAX_ID = 10**18 - 1
# Clusters one merge takes, events one split moves: bounded so one request stays one short transaction.
MERGE_MAX_IDS = 100
SPLIT_MAX_EVENTS = 1000


class ClusterUpdateSerializer(ExcessFieldsRejectMixin, ClusterSerializer):
    """PATCH: only `name` is written; the other fields a client echoes back are ignored."""

    name = StrictCharField(max_length=256, allow_blank=True, required=False,
                           help_text="The person's name; an empty string takes it away.")


class ClusterMergeSerializer(ExcessFieldsRejectMixin, serializers.Serializer):
    ids = serializers.ListField(
        child=StrictIntegerField(min_value=1, max_value=_MAX_ID), min_length=1, max_length=MERGE_MAX_IDS,
        help_text=f"Ids of clusters of the same kind to merge into this one (1 to {MERGE_MAX_IDS}).",
    )


class MergeResultSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    success = serializers.BooleanField()
    error = serializers.ChoiceField(
        choices=["duplicate", "not_found", "same_frame", "incompatible"], allow_null=True,
        help_text="Why this id was not merged: given twice, no such cluster of this kind, an event of a frame "
                  "the target already has one of, or embeddings of another model; null when merged.",
    )


class ClusterSplitSerializer(ExcessFieldsRejectMixin, serializers.Serializer):
    events = serializers.ListField(
        child=StrictIntegerField(min_value=1, max_value=_MAX_ID), min_length=1, max_length=SPLIT_MAX_EVENTS,
        help_text=f"Ids of events of this cluster to move into a new cluster (1 to {SPLIT_MAX_EVENTS}; at least "
                  "one must stay).",
    )
    name = StrictCharField(max_length=256, allow_blank=True, required=False, default="",
                           help_text="The new cluster's name.")


class FaceClusterSerializer(ClusterSerializer):
    card = serializers.IntegerField(source="card_id", read_only=True, allow_null=True,
                                    help_text="The watch list card of the person it is (PATCH to set), or null.")


class FaceClusterUpdateSerializer(ClusterUpdateSerializer):
    """PATCH of a face cluster: `name` (persons) and `card`, the watch list card of the person it is (null to
    detach)."""

    card = StrictPrimaryKeyRelatedField(queryset=Card.objects.all(), allow_null=True, required=False,
                                        help_text="The watch list card of the person it is, or null.")
