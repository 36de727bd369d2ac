"""Serializers of video archives, field for field as on the published page."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.validators import UniqueValidator

from processing.sources import SourceNotAllowed, check_source_url
from videos.health import COUNTER_KEYS, KIND_PLURALS, OBJECT_KINDS, code_descriptions, health_status
from videos.models import Camera, CameraGroup, Case, VideoArchive
from videos.serializers.events import absolute_url
from videos.serializers.fields import ExcessFieldsRejectMixin, FastRepresentationMixin, StrictCharField
from videos.serializers.stream_settings import StreamSettingsField, default_stream_settings


class StrictPrimaryKeyRelatedField(serializers.PrimaryKeyRelatedField):
    """A related id that must be a JSON integer (not "1", not true)."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("incorrect_type", data_type=type(data).__name__)
        return super().to_internal_value(data)


# The characters RFC 3986 allows in a URI, `%` escapes included (ASCII only). Anything else (a newline or another
# control character, a space, a quote, non-ASCII text) would reach response headers, logs and FFmpeg as is; a client
# percent-encodes it. Checked before anything is written.
_URL_CHARACTER = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]")


def check_url_characters(value: str) -> None:
    """Characters of a URI only (RFC 3986, `%`-escapes included); raises ValidationError naming the first other."""
    for position, character in enumerate(value):
        if not _URL_CHARACTER.fullmatch(character):
            raise serializers.ValidationError(
                _("The URL cannot contain %(character)s (at position %(position)d); percent-encode it.")
                % {"character": ascii(character), "position": position}
            )


def url_policy_message(exc: SourceNotAllowed) -> str:
    """What the API says about a URL the url policy refuses (processing.sources)."""
    if exc.reason == "scheme":
        return _("Only http and https URLs with a host are allowed.")
    if exc.reason == "host":
        return _("Host %(host)s is not in the allowed list.") % {"host": exc.host}
    if exc.reason == "private":
        return _("Private, loopback and link-local hosts are not allowed.")
    return _("Enter a valid URL.")


def validate_source_url(value: str | None) -> str | None:
    """Characters of a URI only; http/https only; allowed hosts; literal private, loopback or link-local hosts only
    when allowed.

    The worker checks the resolved host again before opening it (processing.sources).
    """
    if value is None:
        return value
    check_url_characters(value)
    try:
        check_source_url(value, allowed_hosts=settings.FFV_URL_ALLOWED_HOSTS,
                         allow_private=settings.FFV_URL_ALLOW_PRIVATE, resolve=False)
    except SourceNotAllowed as exc:
        raise serializers.ValidationError(url_policy_message(exc)) from exc
    return value


def _counters_schema() -> dict[str, Any]:
    return {"type": "object", "properties": {key: {"type": "integer"} for key in COUNTER_KEYS}}


# The statistic of api-notes.md (every key, in the page's order; empty while an archive waits for its source),
# then ours: progress and eta_seconds (README "API").
STATISTIC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "processed_duration": {"type": "number", "description": "Seconds of the video processed."},
        **{
            f"{KIND_PLURALS[kind]}_{key}": {"type": "integer"}
            for kind in OBJECT_KINDS
            for key in COUNTER_KEYS
        },
        "processing_fps": {"type": "number"},
        "frames_dropped": {"type": "integer"},
        "frames_processed": {"type": "integer"},
        "frames_imotion_skipped": {"type": "integer"},
        "decoding_soft_errors": {"type": "integer"},
        "frame_width": {"type": "integer"},
        "frame_height": {"type": "integer"},
        "last_stream_timestamp": {"type": "number"},
        "objects": {
            "type": "object",
            "nullable": True,
            "properties": {kind: _counters_schema() for kind in OBJECT_KINDS},
        },
        "job_starts": {"type": "integer", "description": "Times a worker started this job, resumes included."},
        "progress": {
            "type": "number",
            "minimum": 0,
            "maximum": 1,
            "description": "Share of the video processed: 1 once completed, 0 while its length is unknown; where "
            "it ended for a failed or interrupted job.",
        },
        "eta_seconds": {
            "type": "number",
            "minimum": 0,
            "nullable": True,
            "description": "Seconds until the running job is done, at its recent rate; null until that rate is "
            "measured, when the length is unknown and when the job is not running (0 once completed).",
        },
    },
}


class VideoArchiveSerializer(FastRepresentationMixin, ExcessFieldsRejectMixin, serializers.ModelSerializer):
    camera_group = StrictPrimaryKeyRelatedField(queryset=CameraGroup.objects.all())
    name = StrictCharField(allow_null=True, min_length=1, max_length=256)
    url = StrictCharField(allow_null=True, min_length=1, max_length=2048, required=False, default=None,
                          validators=[validate_source_url])
    camera = StrictPrimaryKeyRelatedField(queryset=Camera.objects.all(), allow_null=True, required=False, default=None)
    case = StrictPrimaryKeyRelatedField(queryset=Case.objects.all(), allow_null=True, required=False, default=None)
    # A PUT that leaves stream_settings out replaces them with the defaults, as it does url, camera and case.
    stream_settings = StreamSettingsField(required=False, default=default_stream_settings)
    screenshot = serializers.SerializerMethodField()
    health_status = serializers.SerializerMethodField()
    active = serializers.BooleanField(read_only=True)
    finished = serializers.BooleanField(read_only=True)
    queued = serializers.BooleanField(read_only=True)

    class Meta:
        model = VideoArchive
        fields = [
            "id",
            "camera_group",
            "name",
            "url",
            "camera",
            "processing_start_date",
            "active",
            "screenshot",
            "stream_settings",
            "source_len",
            "health_status",
            "finished",
            "queued",
            "face_count",
            "file_size",
            "created_date",
            "body_count",
            "car_count",
            "case",
            "face_cluster_count",
            "body_cluster_count",
            "car_cluster_count",
        ]
        read_only_fields = [
            "id",
            "processing_start_date",
            "source_len",
            "face_count",
            "file_size",
            "created_date",
            "body_count",
            "car_count",
            "face_cluster_count",
            "body_cluster_count",
            "car_cluster_count",
        ]

    @extend_schema_field({"type": "string", "format": "uri"})
    def get_screenshot(self, archive: VideoArchive) -> str:
        return absolute_url(self.context, "videoarchive-screenshot", archive.pk)

    @extend_schema_field(
        {
            "type": "object",
            "properties": {
                "enabled": {"type": "boolean"},
                "status": {"type": "string"},
                "msg": {"type": "string"},
                "statistic": STATISTIC_SCHEMA,
                "code": {"type": "string"},
                "code_desc": {"type": "string"},
            },
            "required": ["enabled", "status", "msg", "statistic", "code", "code_desc"],
        }
    )
    def get_health_status(self, archive: VideoArchive) -> dict[str, Any]:
        descriptions = self.__dict__.get("_code_descriptions")
        if descriptions is None:
            # Translated once per serializer (a list page reuses one for every row), not per row.
            descriptions = self.__dict__["_code_descriptions"] = code_descriptions()
        return dict(health_status(archive, descriptions))

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        camera = attrs.get("camera", getattr(self.instance, "camera", None))
        group = attrs.get("camera_group", getattr(self.instance, "camera_group", None))
        if camera is not None and group is not None and camera.camera_group_id != group.pk:
            raise serializers.ValidationError({"camera": [_("The camera belongs to another camera group.")]})
        return attrs


class CountSerializer(serializers.Serializer):
    count = serializers.IntegerField()


class CameraGroupSerializer(ExcessFieldsRejectMixin, serializers.ModelSerializer):
    # Names are unique in the table; checked here so a duplicate is BAD_PARAM, not a database error.
    name = StrictCharField(
        min_length=1, max_length=256, validators=[UniqueValidator(queryset=CameraGroup.objects.all())]
    )
    comment = StrictCharField(allow_blank=True, max_length=2048, required=False, default="")

    class Meta:
        model = CameraGroup
        fields = ["id", "name", "comment", "created_date", "modified_date"]
        read_only_fields = ["id", "created_date", "modified_date"]


class CameraSerializer(ExcessFieldsRejectMixin, serializers.ModelSerializer):
    camera_group = StrictPrimaryKeyRelatedField(queryset=CameraGroup.objects.all())
    name = StrictCharField(min_length=1, max_length=256)
    comment = StrictCharField(allow_blank=True, max_length=2048, required=False, default="")

    class Meta:
        model = Camera
        fields = ["id", "camera_group", "name", "comment", "created_date", "modified_date"]
        read_only_fields = ["id", "created_date", "modified_date"]
