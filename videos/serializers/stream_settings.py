"""`stream_settings` of a video archive: validated, excess keys rejected, omitted keys defaulted.

The keys, their JSON types, bounds, choices and defaults are those of processing.stream_settings; the fields here are
built from its tables once, at import. This module adds the API's side: messages, the excess-key check of every
level, cross-field rules and PATCH merging.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from processing.stream_settings import (
    DEFAULTS_BY_VERSION,
    DETECTOR_SETTINGS,
    FFMPEG_FORMATS,
    FFMPEG_OPTIONS,
    GEOMETRY_RE,
    OBJECT_KINDS,
    TOP_SETTINGS,
    TRACKER_TYPES,
    VIDEO_TRANSFORMS,
    Setting,
    complete_stream_settings,
    current_version,
    defaults_of,
    detector_defaults,
)
from processing.stream_settings import default_stream_settings as _default_stream_settings
from videos.selectors import STREAM_SETTINGS_TEXT
from videos.serializers.fields import (
    ExcessFieldsRejectMixin,
    StrictBooleanField,
    StrictCharField,
    StrictIntegerField,
    StrictNumberField,
)

logger = logging.getLogger(__name__)


def validate_geometry(value: str) -> str:
    """`WxH+X+Y` in pixels, or empty for none."""
    if value == "":
        return value
    match = GEOMETRY_RE.fullmatch(value)
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
        if not pattern.fullmatch(value):
            raise serializers.ValidationError(
                _("Value %(value)r is not allowed for -%(name)s.") % {"value": value, "name": name}
            )
        pairs.append((name, value))
        index += 2
    return pairs


def settings_field(setting: Setting, default: Any) -> serializers.Field:
    """The strict DRF field of one key of processing.stream_settings, taking `default` when omitted."""
    if setting.type == "bool":
        return StrictBooleanField(default=default)
    if setting.type == "int":
        return StrictIntegerField(min_value=setting.minimum, max_value=setting.maximum, default=default)
    if setting.type == "number":
        return StrictNumberField(min_value=setting.minimum, max_value=setting.maximum, default=default)
    if setting.type == "str":
        return StrictCharField(
            allow_blank=setting.choices is None or "" in setting.choices,
            max_length=setting.max_length,
            default=default,
            validators=[validate_geometry] if setting.geometry else [],
        )
    if setting.type == "str_list":
        return serializers.ListField(
            child=StrictCharField(max_length=setting.item_max_length, allow_blank=False),
            max_length=setting.max_length,
            default=functools.partial(list, default),
        )
    raise ValueError(f"no field for settings of type {setting.type!r}")


_SerializerT = TypeVar("_SerializerT", bound=serializers.Serializer)


def _with_settings_fields(
    base: type[_SerializerT], name: str, settings: Mapping[str, Setting], defaults: Mapping[str, Any], **attrs: Any
) -> type[_SerializerT]:
    """A subclass of `base` named `name` with one field per key of `settings`, in their order after base's own."""
    fields = {key: settings_field(setting, defaults[key]) for key, setting in settings.items()}
    return type(name, (base,), {"__module__": __name__, "__qualname__": name, **attrs, **fields})


class DetectorSettingsSerializer(ExcessFieldsRejectMixin, serializers.Serializer):
    """Settings of one object detector; its fields come from DETECTOR_SETTINGS with the defaults of `kind`."""

    kind: str = ""

    def validate_tracker_type(self, value: str) -> str:
        if value not in TRACKER_TYPES:
            raise serializers.ValidationError(_("Must be one of: %(choices)s.") % {"choices": ", ".join(TRACKER_TYPES)})
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # Outside a PATCH both are there (sent or defaulted). A PATCH that sends one of the two is checked against
        # the stored other after the merge.
        min_size, max_size = attrs.get("filter_min_size"), attrs.get("filter_max_size")
        if min_size is not None and max_size is not None and min_size > max_size:
            raise serializers.ValidationError({"filter_min_size": [_("Must not exceed filter_max_size.")]})
        return attrs


# Built once: each kind's class holds fields whose defaults are that kind's, so no instance adjusts its fields.
DETECTOR_SERIALIZERS: dict[str, type[DetectorSettingsSerializer]] = {
    kind: _with_settings_fields(
        DetectorSettingsSerializer,
        f"{kind.capitalize()}DetectorSettingsSerializer",
        DETECTOR_SETTINGS,
        defaults_of(current_version()).detectors[kind],
        kind=kind,
        __doc__=f"Settings of the {kind} detector.",
    )
    for kind in OBJECT_KINDS
}
FaceDetectorSettingsSerializer = DETECTOR_SERIALIZERS["face"]
BodyDetectorSettingsSerializer = DETECTOR_SERIALIZERS["body"]
CarDetectorSettingsSerializer = DETECTOR_SERIALIZERS["car"]


class DetectorsSerializer(ExcessFieldsRejectMixin, serializers.Serializer):
    face = FaceDetectorSettingsSerializer(allow_null=True, required=False)
    body = BodyDetectorSettingsSerializer(allow_null=True, required=False)
    car = CarDetectorSettingsSerializer(allow_null=True, required=False)

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        value = super().to_internal_value(data)
        # An omitted detector takes its defaults (on); only an explicit null turns it off.
        if not self.root.partial:
            for kind in OBJECT_KINDS:
                value.setdefault(kind, detector_defaults(kind))
        return {name: value[name] for name in self.fields if name in value}


class StreamSettingsRulesSerializer(ExcessFieldsRejectMixin, serializers.Serializer):
    """`detectors` and the rules of the top level; StreamSettingsSerializer adds a field per TOP_SETTINGS key."""

    detectors = DetectorsSerializer(required=False)

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise serializers.ValidationError(_("Must be an object."))
        value = super().to_internal_value(data)
        if "detectors" not in value and not self.root.partial:
            value["detectors"] = {kind: detector_defaults(kind) for kind in OBJECT_KINDS}
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


StreamSettingsSerializer = _with_settings_fields(
    StreamSettingsRulesSerializer,
    "StreamSettingsSerializer",
    TOP_SETTINGS,
    defaults_of(current_version()).top,
    __doc__="An archive's stream_settings: every key of the page, unknown keys rejected at every level.",
)


def default_stream_settings() -> dict[str, Any]:
    """A new archive's settings: the defaults of the current version."""
    return _default_stream_settings()


def merge_stream_settings(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """PATCH semantics: keys the client sent replace, nested objects merge, everything else stays."""
    merged = dict(current)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_stream_settings(merged[key], value)
        else:
            merged[key] = value
    return merged


_COMPLETED_PER_PAGE = 256  # distinct settings kept per serializer: a bound, not a tuning knob


@dataclass(frozen=True, slots=True)
class _StoredText:
    """Stored stream_settings still as the database's JSON text."""

    text: str


@extend_schema_field(StreamSettingsSerializer)
class StreamSettingsField(serializers.Field):
    """`stream_settings` on an archive: full validation always; on PATCH the sent keys merge into the stored ones.

    Validation runs on a standalone (never partial) StreamSettingsSerializer so omitted keys always take their
    defaults and cross-field rules see the whole object. A PATCH merges into the stored settings completed with
    the defaults of the version they were written at, so keys it does not send keep what they meant.

    The output completes the stored settings with the defaults of their version: plain dict work, no serializer
    built per row.
    """

    def get_attribute(self, instance: Any) -> tuple[Any, int | None]:
        # The representation needs the version the settings were written at; None (no row yet): the current one.
        version = getattr(instance, "stream_settings_version", None)
        text = getattr(instance, "__dict__", {}).get(STREAM_SETTINGS_TEXT)
        if text is not None:  # a list page (selectors.archive_page_list): the JSON text, completed once per value
            return _StoredText(text), version
        return super().get_attribute(instance), version

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise serializers.ValidationError(_("Must be an object."))
        instance = getattr(self.parent, "instance", None)
        if getattr(self.root, "partial", False) and instance is not None:
            # Validate what was sent first so excess keys are reported where the client put them.
            StreamSettingsSerializer(data=data, partial=True).is_valid(raise_exception=True)
            stored = complete_stream_settings(instance.stream_settings, version=instance.stream_settings_version)
            data = merge_stream_settings(stored, data)
        serializer = StreamSettingsSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)

    def to_representation(self, value: tuple[Any, int | None]) -> dict[str, Any]:
        stored, version = value
        if version is None or version not in DEFAULTS_BY_VERSION:
            if version is not None:  # written by a newer release (then rolled back): shown, not a 500 for the page
                logger.warning("archive stream_settings_version %r is unknown here; completing with version %s",
                               version, current_version())
            version = current_version()
        if not isinstance(stored, _StoredText):
            return complete_stream_settings(stored, version=version)
        # One page shares the completed dict between the rows with the same text: it is only rendered, never changed.
        completed = self.__dict__.setdefault("_completed_by_text", {})
        key = (version, stored.text)
        result = completed.get(key)
        if result is None:
            if len(completed) >= _COMPLETED_PER_PAGE:
                completed.clear()
            result = completed[key] = complete_stream_settings(json.loads(stored.text), version=version)
        return result
