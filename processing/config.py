"""Plain settings of one pipeline run, read from an archive's `stream_settings` dict. No Django here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from processing.media import Crop

OBJECT_KINDS = ("face", "body", "car")


@dataclass(frozen=True)
class DetectorConfig:
    """What one object kind's detector, tracker and posting policy do (one entry of `detectors`)."""

    kind: str
    roi: Crop | None = None
    filter_min_size: int = 0
    filter_max_size: int = 8192
    filter_min_quality: float = 0.0
    jpeg_quality: int = 95
    fullframe_use_png: bool = False
    fullframe_crop_rot: bool = False
    post_best_track_frame: bool = True
    post_best_track_normalize: bool = True
    post_first_track_frame: bool = False
    post_last_track_frame: bool = False
    realtime_post_first_immediately: bool = False
    realtime_post_interval: float = 1.0
    realtime_post_every_interval: bool = False
    overall_only: bool = True
    track_send_history: bool = False
    tracker_type: str = "simple_iou"
    track_overlap_threshold: float = 0.25
    track_miss_interval: float = 1.0
    track_max_duration_frames: int = 0
    track_interpolate_bboxes: bool = True
    track_deep_sort_matching_threshold: float = 0.65
    track_deep_sort_filter_unconfirmed_tracks: bool = True

    @classmethod
    def from_settings(cls, kind: str, values: dict[str, Any]) -> DetectorConfig:
        known = {name for name in cls.__dataclass_fields__ if name not in ("kind", "roi")}
        kwargs = {name: value for name, value in values.items() if name in known}
        return cls(kind=kind, roi=Crop.parse(values.get("roi", "")), **kwargs)


@dataclass(frozen=True)
class ModelPaths:
    face: Path
    objects: Path
    # Embedders of posted objects (and of every detection for `deep_sort`); None = events get no embedding.
    face_embedder: Path | None = None
    object_embedder: Path | None = None


@dataclass(frozen=True)
class PipelineSettings:
    """Everything one run needs; `from_stream_settings` reads an archive's stream_settings."""

    source: str | Path
    models: ModelPaths
    max_pixels: int
    detectors: dict[str, DetectorConfig] = field(default_factory=dict)
    rot: Crop | None = None
    video_transform: str = ""
    imotion_threshold: float = 0.0
    play_speed: float = -1
    # Events' and the statistic's stream timestamp = start_stream_timestamp + (the container's own pts clock when
    # use_stream_timestamp, else seconds from the first frame).
    start_stream_timestamp: float = 0.0
    use_stream_timestamp: bool = False
    # With play_speed > 0, frames the pipeline is too late for are dropped (counted in frames_dropped) unless
    # disable_drops; as fast as possible (play_speed -1) never drops.
    disable_drops: bool = True
    ffmpeg_format: str = ""
    ffmpeg_options: dict[str, str] = field(default_factory=dict)
    progress_interval: float = 1.0
    # Run the detectors on every n-th frame; the trackers bridge and interpolate the frames between.
    detect_stride: int = 1
    face_input_size: tuple[int, int] = (640, 640)
    object_input_size: tuple[int, int] = (640, 640)
    object_confidence: float = 0.25
    face_confidence: float = 0.9
    # Where faces are searched when persons are detected too: "bodies" = only in the upper part of each person
    # box (RetinaFace on small crops at `face_crop_size`; a fraction of a whole-frame pass), "frame" = everywhere.
    face_search: str = "bodies"
    face_crop_size: int = 160
    # onnxruntime threads per inference; 0 = all cores. Several workers on one host want cores // workers
    # (bench/RESULTS.md: all cores under contention ran 2.5x slower than one thread).
    ort_threads: int = 0
    # Frames detected at once, each on its own thread (tracking and posting stay in frame order). On a CPU,
    # two frames on one thread each ran 1.4x the frames per second of one frame on two threads (bench/RESULTS.md).
    detect_workers: int = 1
    # Bytes of decoded frames the decode thread may buffer ahead (up to 8 frames): bounds memory for huge frames.
    decode_buffer_bytes: int = 256 * 1024 * 1024
    # Seconds the decoder may go without handing over a frame (a stuck demuxer, a source that stopped sending)
    # before the run ends with the `source_stalled` error; 0 = wait for ever. Stop requests and progress reports
    # go on while it waits.
    decode_stall_seconds: float = 60.0
    # The worker process's memory limit in bytes (0 = none): a video whose frames cannot fit it fails at once.
    memory_limit_bytes: int = 0
    # The checkpoint a resumed run starts from (Progress.checkpoint of the interrupted run), or None.
    resume_from: dict[str, Any] | None = None

    @classmethod
    def from_stream_settings(cls, stream_settings: dict[str, Any], **kwargs: Any) -> PipelineSettings:
        detectors = {
            kind: DetectorConfig.from_settings(kind, values)
            for kind, values in (stream_settings.get("detectors") or {}).items()
            if kind in OBJECT_KINDS and values is not None
        }
        options: dict[str, str] = {}
        tokens = [token for item in stream_settings.get("ffmpeg_params", []) for token in item.split()]
        for key, value in zip(tokens[::2], tokens[1::2], strict=False):
            options[key.lstrip("-")] = value
        return cls(
            detectors=detectors,
            rot=Crop.parse(stream_settings.get("rot", "")),
            video_transform=stream_settings.get("video_transform", ""),
            imotion_threshold=float(stream_settings.get("imotion_threshold", 0) or 0),
            play_speed=float(stream_settings.get("play_speed", -1)),
            start_stream_timestamp=float(stream_settings.get("start_stream_timestamp", 0) or 0),
            use_stream_timestamp=bool(stream_settings.get("use_stream_timestamp", False)),
            disable_drops=bool(stream_settings.get("disable_drops", True)),
            ffmpeg_format=stream_settings.get("ffmpeg_format", ""),
            ffmpeg_options=options,
            **kwargs,
        )
