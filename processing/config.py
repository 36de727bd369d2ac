"""Plain settings of one pipeline run, read from an archive's `stream_settings` dict. No Django here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from processing.fetch import FetchPolicy
from processing.media import Crop
from processing.stream_settings import OBJECT_KINDS, defaults_of, detector_defaults

# Defaults of keys a caller leaves out: those of the current stream_settings version. The worker passes settings
# already completed with their own version's defaults (complete_stream_settings), so these only serve callers
# that build settings by hand (tests, bench/).
_DETECTOR = defaults_of().detectors["face"]  # the keys every kind shares; from_settings adds the kind's own
_TOP = defaults_of().top


@dataclass(frozen=True)
class DetectorConfig:
    """What one object kind's detector, tracker and posting policy do (one entry of `detectors`).

    The fields are the keys of processing.stream_settings.DETECTOR_SETTINGS, `roi` parsed. Built directly, a
    config filters nothing by size or quality (0); `from_settings` gives every omitted key the kind's default.
    """

    kind: str
    roi: Crop | None = None
    filter_min_size: int = 0
    filter_max_size: int = _DETECTOR["filter_max_size"]
    filter_min_quality: float = 0.0
    jpeg_quality: int = _DETECTOR["jpeg_quality"]
    fullframe_use_png: bool = _DETECTOR["fullframe_use_png"]
    fullframe_crop_rot: bool = _DETECTOR["fullframe_crop_rot"]
    post_best_track_frame: bool = _DETECTOR["post_best_track_frame"]
    post_best_track_normalize: bool = _DETECTOR["post_best_track_normalize"]
    post_first_track_frame: bool = _DETECTOR["post_first_track_frame"]
    post_last_track_frame: bool = _DETECTOR["post_last_track_frame"]
    realtime_post_first_immediately: bool = _DETECTOR["realtime_post_first_immediately"]
    realtime_post_interval: float = _DETECTOR["realtime_post_interval"]
    realtime_post_every_interval: bool = _DETECTOR["realtime_post_every_interval"]
    overall_only: bool = _DETECTOR["overall_only"]
    track_send_history: bool = _DETECTOR["track_send_history"]
    tracker_type: str = _DETECTOR["tracker_type"]
    track_overlap_threshold: float = _DETECTOR["track_overlap_threshold"]
    # Seconds (fractions allowed); the pipeline turns them into frames at the video's frame rate.
    track_miss_interval: float = _DETECTOR["track_miss_interval"]
    track_max_duration_frames: int = _DETECTOR["track_max_duration_frames"]
    track_interpolate_bboxes: bool = _DETECTOR["track_interpolate_bboxes"]
    track_deep_sort_matching_threshold: float = _DETECTOR["track_deep_sort_matching_threshold"]
    track_deep_sort_filter_unconfirmed_tracks: bool = _DETECTOR["track_deep_sort_filter_unconfirmed_tracks"]

    @classmethod
    def from_settings(cls, kind: str, values: dict[str, Any]) -> DetectorConfig:
        """One detector's settings, every omitted key at `kind`'s default of the current version."""
        values = {**detector_defaults(kind), **values}
        known = {name for name in cls.__dataclass_fields__ if name not in ("kind", "roi")}
        kwargs = {name: value for name, value in values.items() if name in known}
        return cls(kind=kind, roi=Crop.parse(values["roi"]), **kwargs)


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

    # A path, an http(s) url (fetched first, processing.fetch) or a seekable binary file (an object in a bucket).
    source: str | Path | BinaryIO
    models: ModelPaths
    max_pixels: int
    detectors: dict[str, DetectorConfig] = field(default_factory=dict)
    rot: Crop | None = None
    video_transform: str = _TOP["video_transform"]
    imotion_threshold: float = _TOP["imotion_threshold"]
    play_speed: float = _TOP["play_speed"]
    # Events' and the statistic's stream timestamp = start_stream_timestamp + (the container's own pts clock when
    # use_stream_timestamp, else seconds from the first frame).
    start_stream_timestamp: float = _TOP["start_stream_timestamp"]
    use_stream_timestamp: bool = _TOP["use_stream_timestamp"]
    # With play_speed > 0, frames the pipeline is too late for are dropped (counted in frames_dropped) unless
    # disable_drops; as fast as possible (play_speed -1) never drops.
    disable_drops: bool = _TOP["disable_drops"]
    ffmpeg_format: str = _TOP["ffmpeg_format"]
    ffmpeg_options: dict[str, str] = field(default_factory=dict)
    progress_interval: float = 1.0
    # Run the detectors on every n-th frame; the trackers bridge and interpolate the frames between.
    detect_stride: int = 1
    # Detect at most this many frames per second of video, whatever the frame rate (0 = every frame on the
    # stride); see processing.pipeline.sampler. The worker's default is FFV_DETECT_RATE's.
    detect_rate: float = 0.0
    # Pass over a due frame that shows what the last analysed frame showed (repeated frames, still scenes).
    skip_duplicate_frames: bool = False
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
    # Frames per detector call (processing.pipeline.detection.BatchedDetection); 0 = "auto": 8 where onnxruntime
    # has CUDA, else 1. With 1 frames are detected one by one, as detect_workers says; with more, detect_workers
    # batches are in flight at once, and pipelines of one process share their batches.
    detect_batch: int = 1
    # Seconds a batch of the process's shared batcher waits for frames of other pipelines still to come.
    detect_batch_wait: float = 0.01
    # FFmpeg decoder threads (0 = FFmpeg's choice: one per core). A GPU host running several pipelines wants its
    # cores divided among them (decoding is its CPU's main work there).
    decode_threads: int = 0
    # Bytes of decoded frames the decode thread may buffer ahead (up to 8 frames): bounds memory for huge frames.
    decode_buffer_bytes: int = 256 * 1024 * 1024
    # Seconds the decoder may go without handing over a frame (a stuck demuxer, a source that stopped sending)
    # before the run ends with the `source_stalled` error; 0 = wait for ever. Stop requests and progress reports
    # go on while it waits.
    decode_stall_seconds: float = 60.0
    # The worker process's memory limit in bytes (0 = none): a video whose frames cannot fit it fails at once.
    memory_limit_bytes: int = 0
    # How a url source is fetched (processing.fetch): FFmpeg only ever opens the local spool file.
    fetch: FetchPolicy = field(default_factory=FetchPolicy)
    # The checkpoint a resumed run starts from (Progress.checkpoint of the interrupted run), or None.
    resume_from: dict[str, Any] | None = None
    # A chunk of a long video (processing.chunks): decode from `span[0]` (a keyframe) up to `span[1]` seconds.
    span: tuple[float, float | None] | None = None

    @classmethod
    def from_stream_settings(cls, stream_settings: dict[str, Any], **kwargs: Any) -> PipelineSettings:
        """A run of `stream_settings`; omitted keys take the current version's defaults, omitted detectors are off.

        The worker passes settings completed with their own version's defaults (complete_stream_settings).
        """
        values = {**_TOP, **stream_settings}
        detectors = {
            kind: DetectorConfig.from_settings(kind, settings)
            for kind, settings in (values.get("detectors") or {}).items()
            if kind in OBJECT_KINDS and settings is not None
        }
        options: dict[str, str] = {}
        tokens = [token for item in values["ffmpeg_params"] for token in item.split()]
        for key, value in zip(tokens[::2], tokens[1::2], strict=False):
            options[key.lstrip("-")] = value
        return cls(
            detectors=detectors,
            rot=Crop.parse(values["rot"]),
            video_transform=values["video_transform"],
            imotion_threshold=float(values["imotion_threshold"] or 0),
            play_speed=float(values["play_speed"]),
            start_stream_timestamp=float(values["start_stream_timestamp"] or 0),
            use_stream_timestamp=bool(values["use_stream_timestamp"]),
            disable_drops=bool(values["disable_drops"]),
            ffmpeg_format=values["ffmpeg_format"],
            ffmpeg_options=options,
            **kwargs,
        )
