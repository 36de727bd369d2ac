"""Output serializer of `/clusters/<kind>/`; the view gives each cluster's sources in the context."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from videos.event_selectors import ClusterSources
from videos.models import Cluster
from videos.serializers.events import absolute_url
from videos.serializers.fields import FastRepresentationMixin

_ID_LIST = {"type": "array", "items": {"type": "integer"}}


class ClusterSerializer(FastRepresentationMixin, serializers.Serializer):
    """`context["sources"]` maps cluster ids to their ClusterSources (videos.event_selectors.cluster_sources)."""

    id = serializers.IntegerField(read_only=True)
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


class FaceClusterSerializer(ClusterSerializer):
    card = serializers.IntegerField(source="card_id", read_only=True, allow_null=True,
                                    help_text="The watch list card of the person it is (PATCH to set), or null.")
