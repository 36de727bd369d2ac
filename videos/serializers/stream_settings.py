"""`stream_settings` of a video archive: validated, excess keys rejected, omitted keys defaulted.

Defaults are those of the page's create response; per detector only `filter_min_quality` and `filter_min_size`
differ (face 0.45/60, body 0.6/70, car 0.73/100). A detector set to null is off.
"""

from __future__ import annotations

import re
from typing import Any

from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from videos.serializers.fields import (
    ExcessFieldsRejectMixin,
    StrictBooleanField,
    StrictCharField,
    StrictIntegerField,
    StrictNumberField,
)

GEOMETRY_RE = re.compile(r"^(\d{1,5})x(\d{1,5})\+(\d{1,5})\+(\d{1,5})$")
VIDEO_TRANSFORMS = (
    "", "FlipHorizontal", "FlipVertical", "Rotate90", "Rotate180", "Rotate270", "Transpose", "Transverse",
)
TRACKER_TYPES = ("simple_iou", "deep_sort")

# Demuxers that read a plain media stream. Everything that opens other files, devices or generators
# (concat, image2, lavfi, v4l2, x11grab, fbdev, alsa, pulse, hls playlists, tee ...) is left out on purpose.
FFMPEG_FORMATS = (
    "",
    "mp4",
    "mov",
    "matroska",
    "webm",
    "avi",
    "flv",
    "mpegts",
    "mpeg",
    "h264",
    "hevc",
    "mjpeg",
    "asf",
    "ogg",
    "rtsp",
)
_UINT = r"\d{1,12}"
_FFLAGS = r"(nobuffer|genpts|discardcorrupt|igndts|ignidx|nofillin|noparse|fastseek)"
# Demuxer options a client may pass, each with the only values it may take: none of them names a path or URL.
FFMPEG_OPTIONS: dict[str, re.Pattern[str]] = {
    "analyzeduration": re.compile(rf"^{_UINT}$"),
    "probesize": re.compile(rf"^{_UINT}$"),
    "fpsprobesize": re.compile(rf"^{_UINT}$"),
    "timeout": re.compile(rf"^{_UINT}$"),
    "rw_timeout": re.compile(rf"^{_UINT}$"),
    "stimeout": re.compile(rf"^{_UINT}$"),
    "max_delay": re.compile(rf"^{_UINT}$"),
    "reorder_queue_size": re.compile(rf"^{_UINT}$"),
    "buffer_size": re.compile(rf"^{_UINT}$"),
    "fflags": re.compile(rf"^[+-]?{_FFLAGS}([+-]{_FFLAGS})*$"),
    "rtsp_transport": re.compile(r"^(tcp|udp|udp_multicast|http|https)$"),
    "rtsp_flags": re.compile(r"^(filter_src|listen|prefer_tcp)$"),
    "framerate": re.compile(r"^\d{1,4}(/\d{1,4}|\.\d{1,4})?$"),
    "video_size": re.compile(r"^\d{1,5}x\d{1,5}$"),
    "pixel_format": re.compile(r"^[a-z0-9_]{1,32}$"),
    "err_detect": re.compile(r"^[+-]?[a-z]{1,16}([+-][a-z]{1,16})*$"),
    "ss": re.compile(r"^(\d{1,9}(\.\d{1,6})?|\d{1,3}:\d{2}:\d{2}(\.\d{1,6})?)$"),
}


def validate_geometry(value: str) -> str:
    """`WxH+X+Y` in pixels, or empty for none."""
    if value == "":
        return value
    match = GEOMETRY_RE.match(value)
    if not match:
        raise serializers.ValidationError(_("Must be empty or of the form WxH+X+Y, e.g. 640x480+10+20."))
    width, height = int(match.group(1)), int(match.group(2))
    if width == 0 or height == 0:
        raise serializers.ValidationError(_("Width and height must be positive."))
    return value


def parse_ffmpeg_params(items: list[str]) -> list[tuple[str, str]]:
    """`["-key value", ...]` or `["-key", "value", ...]` into pairs; raises ValidationError on anything else."""
    tokens: list[str] = []
    for item in items:
        tokens.extend(item.split())
    pairs: list[tuple[str, str]] = []
    index = 0
    while index < len(tokens):
        key = tokens[index]
        if not key.startswith("-") or len(key) < 2:
            raise serializers.ValidationError(
                _("Expected an option of the form -key value, got %(token)r.") % {"token": key}
            )
        name = key[1:]
        pattern = FFMPEG_OPTIONS.get(name)
        if pattern is None:
            raise serializers.ValidationError(
                _("Option -%(name)s is not allowed; allowed: %(allowed)s.")
                % {"name": name, "allowed": ", ".join(sorted(FFMPEG_OPTIONS))}
            )
        if index + 1 >= len(tokens):
            raise serializers.ValidationError(_("Option -%(name)s needs a value.") % {"name": name})
        value = tokens[index + 1]
        if not pattern.match(value):
            raise serializers.ValidationError(
                _("Value %(value)r is not allowed for -%(name)s.") % {"value": value, "name": name}
            )
        pairs.append((name, value))
        index += 2
    return pairs


class DetectorSettingsSerializer(ExcessFieldsRejectMixin, serializers.Serializer):
    """Settings of one object detector (face, body or car)."""

    default_min_quality: float = 0.45
    default_min_size: int = 60

    filter_max_size = StrictIntegerField(min_value=1, max_value=65535, default=8192)
    filter_min_quality = StrictNumberField(min_value=0, max_value=1)
    filter_min_size = StrictIntegerField(min_value=0, max_value=65535)
    fullframe_crop_rot = StrictBooleanField(default=False)
    fullframe_use_png = StrictBooleanField(default=False)
    jpeg_quality = StrictIntegerField(min_value=1, max_value=100, default=95)
    overall_only = StrictBooleanField(default=True)
    post_best_track_frame = StrictBooleanField(default=True)
    post_best_track_normalize = StrictBooleanField(default=True)
    post_first_track_frame = StrictBooleanField(default=False)
    post_last_track_frame = StrictBooleanField(default=False)
    realtime_post_every_interval = StrictBooleanField(default=False)
    realtime_post_first_immediately = StrictBooleanField(default=False)
    realtime_post_interval = StrictNumberField(min_value=0, max_value=86400, default=1)
    roi = StrictCharField(allow_blank=True, max_length=64, default="", validators=[validate_geometry])
    track_interpolate_bboxes = StrictBooleanField(default=True)
    track_max_duration_frames = StrictIntegerField(min_value=0, max_value=10**9, default=0)
    track_miss_interval = StrictIntegerField(min_value=0, max_value=10**6, default=1)
    track_overlap_threshold = StrictNumberField(min_value=0, max_value=1, default=0.25)
    track_send_history = StrictBooleanField(default=False)
    tracker_type = StrictCharField(default="simple_iou")
    track_deep_sort_matching_threshold = StrictNumberField(min_value=0, max_value=1, default=0.65)
    track_deep_sort_filter_unconfirmed_tracks = StrictBooleanField(default=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Declared once on the base class; each object kind has its own defaults for these two.
        for name, default in (("filter_min_quality", self.default_min_quality),
                              ("filter_min_size", self.default_min_size)):
            self.fields[name].default = default
            self.fields[name].required = False

    def validate_tracker_type(self, value: str) -> str:
        if value not in TRACKER_TYPES:
            raise serializers.ValidationError(_("Must be one of: %(choices)s.") % {"choices": ", ".join(TRACKER_TYPES)})
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if self.root.partial and not {"filter_min_size", "filter_max_size"} <= attrs.keys():
            # A PATCH that sends one of the two is checked against the stored other after the merge.
            return attrs
        if attrs.get("filter_min_size", 0) > attrs.get("filter_max_size", 8192):
            raise serializers.ValidationError({"filter_min_size": [_("Must not exceed filter_max_size.")]})
        return attrs

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return dict(cls().to_internal_value({}))


class FaceDetectorSettingsSerializer(DetectorSettingsSerializer):
    default_min_quality = 0.45
    default_min_size = 60


class BodyDetectorSettingsSerializer(DetectorSettingsSerializer):
    default_min_quality = 0.6
    default_min_size = 70


class CarDetectorSettingsSerializer(DetectorSettingsSerializer):
    default_min_quality = 0.73
    default_min_size = 100


DETECTOR_SERIALIZERS = {
    "face": FaceDetectorSettingsSerializer,
    "body": BodyDetectorSettingsSerializer,
    "car": CarDetectorSettingsSerializer,
}


class DetectorsSerializer(ExcessFieldsRejectMixin, serializers.Serializer):
    face = FaceDetectorSettingsSerializer(allow_null=True, required=False)
    body = BodyDetectorSettingsSerializer(allow_null=True, required=False)
    car = CarDetectorSettingsSerializer(allow_null=True, required=False)

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        value = super().to_internal_value(data)
        # An omitted detector takes its defaults (on); only an explicit null turns it off.
        for kind, serializer_cls in DETECTOR_SERIALIZERS.items():
            if kind not in value and not self.root.partial:
                value[kind] = serializer_cls.defaults()
        return {name: value[name] for name in self.fields if name in value}


class StreamSettingsSerializer(ExcessFieldsRejectMixin, serializers.Serializer):
    """Serializer mixin that raises ValidationError if excess fields are presented."""

    detectors = DetectorsSerializer(required=False)
    disable_drops = StrictBooleanField(default=True)
    ffmpeg_format = StrictCharField(allow_blank=True, max_length=32, default="")
    ffmpeg_params = serializers.ListField(
        child=StrictCharField(max_length=256, allow_blank=False), max_length=64, default=list
    )
    imotion_threshold = StrictNumberField(min_value=0, max_value=1_000_000, default=0)
    play_speed = StrictNumberField(min_value=-1, max_value=1000, default=-1)
    rot = StrictCharField(allow_blank=True, max_length=64, default="", validators=[validate_geometry])
    router_timeout_ms = StrictIntegerField(min_value=1, max_value=3_600_000, default=15000)
    router_verify_ssl = StrictBooleanField(default=True)
    start_stream_timestamp = StrictNumberField(min_value=0, max_value=10**12, default=0)
    stream_data_filter = StrictCharField(allow_blank=True, max_length=1024, default="")
    use_stream_timestamp = StrictBooleanField(default=False)
    video_transform = StrictCharField(allow_blank=True, default="")
    enable_recorder = StrictBooleanField(default=False)
    enable_liveness = StrictBooleanField(default=False)

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise serializers.ValidationError(_("Must be an object."))
        value = super().to_internal_value(data)
        if "detectors" not in value and not self.root.partial:
            value["detectors"] = DetectorsSerializer().to_internal_value({})
        # Keep the page's key order (detectors first) whatever order the client used.
        return {name: value[name] for name in self.fields if name in value}

    def validate_play_speed(self, value: float) -> float:
        if value != -1 and value <= 0:
            raise serializers.ValidationError(_("Must be -1 (as fast as possible) or greater than 0."))
        return value

    def validate_video_transform(self, value: str) -> str:
        if value not in VIDEO_TRANSFORMS:
            raise serializers.ValidationError(
                _("Must be one of: %(choices)s.") % {"choices": ", ".join(repr(v) for v in VIDEO_TRANSFORMS)}
            )
        return value

    def validate_ffmpeg_format(self, value: str) -> str:
        if value not in FFMPEG_FORMATS:
            raise serializers.ValidationError(
                _("Format %(value)r is not allowed; allowed: %(allowed)s.")
                % {"value": value, "allowed": ", ".join(f for f in FFMPEG_FORMATS if f)}
            )
        return value

    def validate_ffmpeg_params(self, value: list[str]) -> list[str]:
        parse_ffmpeg_params(value)
        return value


def default_stream_settings() -> dict[str, Any]:
    return StreamSettingsSerializer().to_internal_value({})


def merge_stream_settings(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """PATCH semantics: keys the client sent replace, nested objects merge, everything else stays."""
    merged = dict(current)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_stream_settings(merged[key], value)
        else:
            merged[key] = value
    return merged


@extend_schema_field(StreamSettingsSerializer)
class StreamSettingsField(serializers.Field):
    """`stream_settings` on an archive: full validation always; on PATCH the sent keys merge into the stored ones.

    Validation runs on a standalone (never partial) StreamSettingsSerializer so omitted keys always take their
    defaults and cross-field rules see the whole object.
    """

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise serializers.ValidationError(_("Must be an object."))
        instance = getattr(self.parent, "instance", None)
        if getattr(self.root, "partial", False) and instance is not None:
            # Validate what was sent first so excess keys are reported where the client put them.
            StreamSettingsSerializer(data=data, partial=True).is_valid(raise_exception=True)
            data = merge_stream_settings(instance.stream_settings or default_stream_settings(), data)
        serializer = StreamSettingsSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)

    def to_representation(self, value: dict[str, Any]) -> dict[str, Any]:
        return ordered_stream_settings(complete_stream_settings(value))


def _ordered(value: dict[str, Any], order: Any) -> dict[str, Any]:
    """`value` with the keys of `order` first, in that order; any other (stored) key after them."""
    ordered = {key: value[key] for key in order if key in value}
    ordered.update((key, item) for key, item in value.items() if key not in ordered)
    return ordered


def ordered_stream_settings(value: Any) -> Any:
    """Stored settings in the page's key order: PostgreSQL's jsonb keeps no key order of its own."""
    if not isinstance(value, dict):
        return value
    result = _ordered(value, StreamSettingsSerializer._declared_fields)
    detectors = result.get("detectors")
    if isinstance(detectors, dict):
        detectors = _ordered(detectors, DETECTOR_SERIALIZERS)
        for kind, settings in detectors.items():
            if isinstance(settings, dict):
                detectors[kind] = _ordered(settings, DetectorSettingsSerializer._declared_fields)
        result["detectors"] = detectors
    return result


def complete_stream_settings(stored: Any) -> dict[str, Any]:
    """Stored settings with every omitted key at its default (rows written outside the API may lack keys).

    A detector stored as null stays off; a missing one takes its defaults, as the API does on input.
    """
    stored = stored if isinstance(stored, dict) else {}
    complete = {**default_stream_settings(), **{k: v for k, v in stored.items() if k != "detectors"}}
    stored_detectors = stored.get("detectors") if isinstance(stored.get("detectors"), dict) else {}
    detectors: dict[str, Any] = {}
    for kind, serializer_cls in DETECTOR_SERIALIZERS.items():
        value = stored_detectors.get(kind, {})
        detectors[kind] = None if value is None else {**serializer_cls.defaults(), **value}
    complete["detectors"] = detectors
    return complete
