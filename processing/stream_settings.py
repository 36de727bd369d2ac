"""The one definition of a video archive's `stream_settings`: keys, JSON types, bounds, choices and defaults.

The API builds its serializer fields from these tables (videos.serializers.stream_settings), the worker completes a
stored dict with `complete_stream_settings`, and processing.config and the trackers take their defaults from here.
No Django here.

Defaults are versioned. A row stores the version its settings were written at (VideoArchive.stream_settings_version)
and is completed with the defaults of that version, so changing a default later never rewrites what an old archive
does. To change a default, add one line after `DEFAULTS_BY_VERSION`, e.g.::

    DEFAULTS_BY_VERSION[2] = DEFAULTS_BY_VERSION[1].changed(detector={"track_miss_interval": 2})

(`detector=` changes every object kind, `kinds={"face": {...}}` one kind, `top=` the top level). New rows are then
written at version 2 (`current_version()`); rows of version 1 keep version 1's defaults.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import Any, Literal

OBJECT_KINDS = ("face", "body", "car")
TRACKER_TYPES = ("simple_iou", "deep_sort")
VIDEO_TRANSFORMS = (
    "", "FlipHorizontal", "FlipVertical", "Rotate90", "Rotate180", "Rotate270", "Transpose", "Transverse",
)
# Demuxers that read a plain media stream. Everything that opens other files, devices or generators
# (concat, image2, lavfi, v4l2, x11grab, fbdev, alsa, pulse, hls playlists, tee ...) is left out on purpose.
FFMPEG_FORMATS = (
    "", "mp4", "mov", "matroska", "webm", "avi", "flv", "mpegts", "mpeg", "h264", "hevc", "mjpeg", "asf", "ogg",
    "rtsp",
)
# [0-9], never \d: \d also matches other scripts' digits (Arabic-Indic "١٢٣"), which FFmpeg does not read.
_UINT = r"[0-9]{1,12}"
_FFLAGS = r"(nobuffer|genpts|discardcorrupt|igndts|ignidx|nofillin|noparse|fastseek)"
# Demuxer options a client may pass, each with the only values it may take: none of them names a path or URL.
# Matched whole (fullmatch: `$` alone would also let a trailing newline through).
FFMPEG_OPTIONS: Mapping[str, re.Pattern[str]] = MappingProxyType({
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
    "framerate": re.compile(r"^[0-9]{1,4}(/[0-9]{1,4}|\.[0-9]{1,4})?$"),
    "video_size": re.compile(r"^[0-9]{1,5}x[0-9]{1,5}$"),
    "pixel_format": re.compile(r"^[a-z0-9_]{1,32}$"),
    "err_detect": re.compile(r"^[+-]?[a-z]{1,16}([+-][a-z]{1,16})*$"),
    "ss": re.compile(r"^([0-9]{1,9}(\.[0-9]{1,6})?|[0-9]{1,3}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?)$"),
})
# `roi` and `rot`: `WxH+X+Y` in pixels (width and height > 0), or empty for none.
GEOMETRY_RE = re.compile(r"^([0-9]{1,5})x([0-9]{1,5})\+([0-9]{1,5})\+([0-9]{1,5})$")

SettingType = Literal["bool", "int", "number", "str", "str_list"]


class _PerKind:
    """Marks a detector key whose default each object kind sets (KIND_DEFAULTS)."""

    def __repr__(self) -> str:
        return "PER_KIND"


PER_KIND: Any = _PerKind()


@dataclass(frozen=True)
class Setting:
    """One key of stream_settings.

    Attributes:
        type: its JSON type: "bool", "int" (an integer), "number" (an integer or a fraction), "str",
            "str_list" (an array of non-empty strings).
        default: the value an omitted key takes in version 1 (later versions change it in DEFAULTS_BY_VERSION);
            PER_KIND where each object kind has its own (KIND_DEFAULTS).
        minimum, maximum: inclusive bounds of a number.
        max_length: characters of a string; items of a list.
        item_max_length: characters of each item of a list.
        choices: the only values a string may take ("" among them where empty is allowed).
        geometry: a string that is empty or `WxH+X+Y` (GEOMETRY_RE).
    """

    type: SettingType
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    item_max_length: int | None = None
    choices: tuple[str, ...] | None = None
    geometry: bool = False


# The keys of each detector (`detectors.face`, `.body`, `.car`), in the page's order.
DETECTOR_SETTINGS: Mapping[str, Setting] = MappingProxyType({
    "filter_max_size": Setting("int", 8192, minimum=1, maximum=65535),
    "filter_min_quality": Setting("number", PER_KIND, minimum=0, maximum=1),
    "filter_min_size": Setting("int", PER_KIND, minimum=0, maximum=65535),
    "fullframe_crop_rot": Setting("bool", False),
    "fullframe_use_png": Setting("bool", False),
    "jpeg_quality": Setting("int", 95, minimum=1, maximum=100),
    "overall_only": Setting("bool", True),
    "post_best_track_frame": Setting("bool", True),
    "post_best_track_normalize": Setting("bool", True),
    "post_first_track_frame": Setting("bool", False),
    "post_last_track_frame": Setting("bool", False),
    "realtime_post_every_interval": Setting("bool", False),
    "realtime_post_first_immediately": Setting("bool", False),
    "realtime_post_interval": Setting("number", 1, minimum=0, maximum=86400),  # seconds
    "roi": Setting("str", "", max_length=64, geometry=True),
    "track_interpolate_bboxes": Setting("bool", True),
    "track_max_duration_frames": Setting("int", 0, minimum=0, maximum=10**9),
    "track_miss_interval": Setting("number", 1, minimum=0, maximum=10**6),  # seconds, fractions allowed
    "track_overlap_threshold": Setting("number", 0.25, minimum=0, maximum=1),
    "track_send_history": Setting("bool", False),
    "tracker_type": Setting("str", "simple_iou", choices=TRACKER_TYPES),
    "track_deep_sort_matching_threshold": Setting("number", 0.65, minimum=0, maximum=1),
    "track_deep_sort_filter_unconfirmed_tracks": Setting("bool", True),
})

# Version 1's defaults of the keys each object kind sets for itself (api-notes.md).
KIND_DEFAULTS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "face": MappingProxyType({"filter_min_quality": 0.45, "filter_min_size": 60}),
    "body": MappingProxyType({"filter_min_quality": 0.6, "filter_min_size": 70}),
    "car": MappingProxyType({"filter_min_quality": 0.73, "filter_min_size": 100}),
})

# The top-level keys besides `detectors` (which comes first), in the page's order.
TOP_SETTINGS: Mapping[str, Setting] = MappingProxyType({
    "disable_drops": Setting("bool", True),
    "ffmpeg_format": Setting("str", "", max_length=32, choices=FFMPEG_FORMATS),
    "ffmpeg_params": Setting("str_list", (), max_length=64, item_max_length=256),
    "imotion_threshold": Setting("number", 0, minimum=0, maximum=1_000_000),
    "play_speed": Setting("number", -1, minimum=-1, maximum=1000),  # -1 or > 0
    "rot": Setting("str", "", max_length=64, geometry=True),
    "router_timeout_ms": Setting("int", 15000, minimum=1, maximum=3_600_000),
    "router_verify_ssl": Setting("bool", True),
    "start_stream_timestamp": Setting("number", 0, minimum=0, maximum=10**12),
    "stream_data_filter": Setting("str", "", max_length=1024),
    "use_stream_timestamp": Setting("bool", False),
    "video_transform": Setting("str", "", choices=VIDEO_TRANSFORMS),
    "enable_recorder": Setting("bool", False),
    "enable_liveness": Setting("bool", False),
})

# Every top-level key in the page's order.
TOP_KEYS = ("detectors", *TOP_SETTINGS)


def _frozen(values: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(values))


@dataclass(frozen=True)
class Defaults:
    """Every default of one version: the top level's and each object kind's detector's (all keys, page order)."""

    top: Mapping[str, Any]
    detectors: Mapping[str, Mapping[str, Any]]

    def __post_init__(self) -> None:
        if list(self.top) != list(TOP_SETTINGS) or list(self.detectors) != list(OBJECT_KINDS):
            raise ValueError("defaults must name every top-level key and every object kind")
        for kind, values in self.detectors.items():
            if list(values) != list(DETECTOR_SETTINGS) or any(value is PER_KIND for value in values.values()):
                raise ValueError(f"the {kind} detector's defaults must name every key with a value")

    @cached_property
    def plain(self) -> dict[str, dict[str, Any]]:
        """The same as plain dicts ("top" and each kind): copying a dict is far cheaper than dict() of a proxy."""
        return {"top": dict(self.top), **{kind: dict(values) for kind, values in self.detectors.items()}}

    def changed(
        self,
        *,
        top: Mapping[str, Any] | None = None,
        detector: Mapping[str, Any] | None = None,
        kinds: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Defaults:
        """These defaults with some replaced: `top` at the top level, `detector` for every kind, `kinds` per kind."""
        for name in {*(top or {}), *(detector or {}), *(key for one in (kinds or {}).values() for key in one)}:
            if name not in TOP_SETTINGS and name not in DETECTOR_SETTINGS:
                raise KeyError(f"no stream_settings key {name!r}")
        return Defaults(
            top=_frozen({**self.top, **(top or {})}),
            detectors=_frozen({
                kind: _frozen({**values, **(detector or {}), **(kinds or {}).get(kind, {})})
                for kind, values in self.detectors.items()
            }),
        )


def _version_1() -> Defaults:
    return Defaults(
        top=_frozen({name: setting.default for name, setting in TOP_SETTINGS.items()}),
        detectors=_frozen({
            kind: _frozen({
                name: KIND_DEFAULTS[kind][name] if setting.default is PER_KIND else setting.default
                for name, setting in DETECTOR_SETTINGS.items()
            })
            for kind in OBJECT_KINDS
        }),
    )


# The defaults of each version settings were ever written at. Append only: a stored row names its version.
# A new version is one line here, built on the one before (see the module docstring).
DEFAULTS_BY_VERSION: dict[int, Defaults] = {1: _version_1()}


def current_version() -> int:
    """The version settings are written at now: the newest in DEFAULTS_BY_VERSION."""
    return max(DEFAULTS_BY_VERSION)


def defaults_of(version: int | None = None) -> Defaults:
    """The defaults of `version` (None: the current one)."""
    version = current_version() if version is None else version
    try:
        return DEFAULTS_BY_VERSION[version]
    except KeyError:
        raise ValueError(f"unknown stream_settings version {version!r}") from None


def _copy(value: Any) -> Any:
    # Lists are the only mutable values; the tables hold them as tuples.
    return list(value) if isinstance(value, (list, tuple)) else value


def detector_defaults(kind: str, version: int | None = None) -> dict[str, Any]:
    """A fresh dict of one object kind's detector defaults."""
    return {name: _copy(value) for name, value in defaults_of(version).detectors[kind].items()}


def complete_stream_settings(stored: Any, *, version: int) -> dict[str, Any]:
    """`stored` with every omitted key at the default of `version` (the version it was written at), page order.

    A detector stored as null stays off; a missing one takes its defaults, as the API does on input. Other keys the
    tables do not know are kept, after the known ones (detectors of unknown kinds are dropped). `stored` is not
    changed; the result shares no list with it.
    """
    plain = defaults_of(version).plain
    stored = stored if isinstance(stored, Mapping) else {}
    stored_detectors = stored.get("detectors")
    stored_detectors = stored_detectors if isinstance(stored_detectors, Mapping) else {}
    detectors: dict[str, Any] = {}
    for kind in OBJECT_KINDS:
        value = stored_detectors.get(kind, {})
        if value is None or not isinstance(value, Mapping):
            detectors[kind] = None if value is None else _copy(value)
            continue
        # Defaults first, then the stored values over them: known keys keep the defaults' order, unknown ones
        # follow in stored order (the API lists 1,000 archives with this, so it stays in dict.update).
        detector = plain[kind].copy()
        detector.update(value)
        _copy_lists(detector)
        detectors[kind] = detector
    complete: dict[str, Any] = {"detectors": detectors}
    complete.update(plain["top"])
    complete.update((name, item) for name, item in stored.items() if name != "detectors")
    _copy_lists(complete)
    return complete


def _copy_lists(values: dict[str, Any]) -> None:
    for name, value in values.items():
        if isinstance(value, (list, tuple)):
            values[name] = list(value)


def default_stream_settings(*, version: int | None = None) -> dict[str, Any]:
    """The settings of a new archive (`complete_stream_settings({})`); None: the current version."""
    return complete_stream_settings({}, version=current_version() if version is None else version)
