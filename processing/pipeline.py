"""The video pipeline: decode, detect, track, post; progress reported through callbacks. No Django here.

`run_pipeline` takes plain settings and callbacks and returns plain results; `videos.jobs` glues it to the
database. Decoding runs in its own thread feeding a bounded queue, so decoding overlaps with inference.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from processing.config import OBJECT_KINDS, DetectorConfig, PipelineSettings
from processing.decoding import DecodedFrame, DecodeStats, decode_frames
from processing.detections import Detections, non_max_suppression
from processing.detectors import create_detector
from processing.embedders import Embedder, create_embedder
from processing.frames import MotionMeter, apply_transform, geometry_mask, object_quality
from processing.posting import PostedObject, TrackPoster
from processing.trackers import available_trackers, create_tracker

KIND_PLURALS = {"face": "faces", "body": "bodies", "car": "cars"}
# Copies of a frame a run holds at once (decoder's picture, BGR frame, transformed frame, the detector's input):
# frames that cannot fit the worker's memory limit this many times over are refused before decoding goes on.
FRAME_COPIES = 4
# Posted objects smaller than this (larger box side, pixels) get no embedding.
MIN_EMBEDDED_SIDE = 24


class PipelineError(Exception):
    """The run cannot go on for a reason the user can act on (the message says which)."""


@dataclass
class KindCounters:
    posted: int = 0
    failed: int = 0
    not_posted: int = 0


@dataclass
class Progress:
    frames_processed: int = 0
    frames_dropped: int = 0
    frames_imotion_skipped: int = 0
    processed_duration: float = 0.0
    last_stream_timestamp: float = 0.0
    processing_fps: float = 0.0
    decoding_soft_errors: int = 0
    frame_width: int = 0
    frame_height: int = 0
    source_len: float | None = None
    objects: dict[str, KindCounters] = field(default_factory=lambda: {k: KindCounters() for k in OBJECT_KINDS})
    # The last quiet point (an analysed frame after which no track was open): where a resumed run starts.
    checkpoint: dict[str, Any] | None = None
    resumed_from_frame: int | None = None

    def frame_counters(self) -> dict[str, int]:
        """How many frames were processed, dropped and skipped as still so far."""
        return {
            "frames_processed": self.frames_processed,
            "frames_dropped": self.frames_dropped,
            "frames_imotion_skipped": self.frames_imotion_skipped,
        }

    def counters(self) -> dict[str, Any]:
        """What a resumed run restores (see `checkpoint`)."""
        return {
            **self.frame_counters(),
            "objects": {kind: dataclasses.asdict(c) for kind, c in self.objects.items()},
        }

    def restore(self, counters: dict[str, Any]) -> None:
        self.frames_processed = int(counters.get("frames_processed", 0))
        self.frames_dropped = int(counters.get("frames_dropped", 0))
        self.frames_imotion_skipped = int(counters.get("frames_imotion_skipped", 0))
        for kind, values in (counters.get("objects") or {}).items():
            if kind in self.objects:
                self.objects[kind] = KindCounters(**{k: int(v) for k, v in values.items()})

    def as_statistic(self) -> dict[str, Any]:
        statistic: dict[str, Any] = {"processed_duration": round(self.processed_duration, 3)}
        for kind, counters in self.objects.items():
            plural = KIND_PLURALS[kind]
            statistic[f"{plural}_posted"] = counters.posted
            statistic[f"{plural}_failed"] = counters.failed
            statistic[f"{plural}_not_posted"] = counters.not_posted
        statistic.update(
            {
                "processing_fps": round(self.processing_fps, 2),
                "frames_dropped": self.frames_dropped,
                "frames_processed": self.frames_processed,
                "frames_imotion_skipped": self.frames_imotion_skipped,
                "decoding_soft_errors": self.decoding_soft_errors,
                "frame_width": self.frame_width,
                "frame_height": self.frame_height,
                "last_stream_timestamp": round(self.last_stream_timestamp, 3),
                "objects": {
                    kind: {"posted": c.posted, "failed": c.failed, "not_posted": c.not_posted}
                    for kind, c in self.objects.items()
                },
            }
        )
        return statistic


@dataclass(frozen=True)
class _PendingFrame:
    """A frame handed to the detectors, waiting for tracking and posting, which go in frame order."""

    frame: DecodedFrame
    stream_offset: float
    image: np.ndarray
    full: np.ndarray
    offset: tuple[int, int]
    found: Future[dict[str, Detections]] | dict[str, Detections]
    # The frame counters once this frame was counted: what a checkpoint at this frame restores.
    frame_counters: dict[str, int]


@dataclass(frozen=True)
class PipelineResult:
    progress: Progress
    stopped: bool


_END = object()


def _prefetch(frames: Iterator[DecodedFrame], size: int, stop: threading.Event) -> Iterator[DecodedFrame]:
    """Decode in a background thread into a bounded queue; re-raises the decoder's error in the caller."""
    buffer: queue.Queue[Any] = queue.Queue(maxsize=size)

    def produce() -> None:
        try:
            for frame in frames:
                while not stop.is_set():
                    try:
                        buffer.put(frame, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put(_END)
        except BaseException as exc:  # handed to the consumer, which raises it
            buffer.put(exc)

    thread = threading.Thread(target=produce, name="decoder", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


class _KindRunner:
    """Tracker, embedder and poster of one object kind."""

    def __init__(self, config: DetectorConfig, fps: float, stride: int, embedder: Embedder | None) -> None:
        if config.tracker_type not in available_trackers():
            raise PipelineError(
                f"tracker {config.tracker_type!r} of the {config.kind} detector is not available on this worker "
                f"(available: {', '.join(available_trackers())})"
            )
        options: dict[str, Any] = {
            "track_overlap_threshold": config.track_overlap_threshold,
            "track_miss_interval": max(stride, round(config.track_miss_interval * fps)),
            "track_max_duration_frames": config.track_max_duration_frames,
            "track_interpolate_bboxes": config.track_interpolate_bboxes,
            # Objects move between detections on a stride; matching where they should be keeps their tracks.
            "motion_prediction": True,
        }
        self.embed_detections = config.tracker_type == "deep_sort"
        if self.embed_detections:
            if embedder is None:
                raise PipelineError(f"the deep_sort tracker of the {config.kind} detector needs an embedder model")
            options["track_deep_sort_matching_threshold"] = config.track_deep_sort_matching_threshold
            options["track_deep_sort_filter_unconfirmed_tracks"] = config.track_deep_sort_filter_unconfirmed_tracks
        self.tracker = create_tracker(config.tracker_type, **options)
        self.embedder = embedder
        self.poster = TrackPoster(config, embed=None if embedder is None else self._embed_one)
        self.config = config

    def _embed_one(self, image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray | None:
        assert self.embedder is not None
        if max(box[2] - box[0], box[3] - box[1]) < MIN_EMBEDDED_SIDE:
            return None  # a face a dozen pixels wide has no identity to compare; and it costs as much as any
        return self.embedder.embed(image, np.asarray([box], np.float32))[0]

    @property
    def quiet(self) -> bool:
        return not self.tracker.open_track_ids and self.poster.open_tracks == 0


def _embedders(settings: PipelineSettings) -> dict[str, Embedder]:
    """The embedder of each enabled kind whose model is configured (FaceNet for faces, MobileNetV2 else)."""
    paths = {"face": settings.models.face_embedder, "body": settings.models.object_embedder,
             "car": settings.models.object_embedder}
    names = {"face": "facenet", "body": "mobilenetv2", "car": "mobilenetv2"}
    embedders: dict[str, Embedder] = {}
    for kind in settings.detectors:
        path = paths[kind]
        if path is None:
            continue
        if not Path(path).is_file():
            raise FileNotFoundError(f"embedder model not found: {path}")
        embedders[kind] = create_embedder(names[kind], model_path=path, intra_op_num_threads=settings.ort_threads)
    return embedders


def run_pipeline(
    settings: PipelineSettings,
    *,
    on_progress: Callable[[Progress], None],
    should_stop: Callable[[], bool],
    on_event: Callable[[PostedObject], bool],
) -> PipelineResult:
    """Process the source; `on_event` stores one posted object and says whether that worked.

    `on_progress` is called about every `progress_interval` seconds and at the end, and `should_stop` is asked
    at the same rate; when it says yes the run ends early with `stopped=True`. Raises processing.media.MediaError
    when the source cannot be read at all and PipelineError when the settings cannot be honoured.
    """
    stats = DecodeStats()
    progress = Progress()
    resume = settings.resume_from or {}
    resume_frame = int(resume.get("frame_index", -1))
    if resume_frame >= 0:
        progress.restore(resume.get("progress") or {})
        progress.resumed_from_frame = resume_frame
        progress.checkpoint = dict(resume)
    stop_decoding = threading.Event()
    decoded = decode_frames(
        settings.source,
        stats,
        max_pixels=settings.max_pixels,
        options=settings.ffmpeg_options,
        format_name=settings.ffmpeg_format or None,
        first_index=max(0, resume_frame),
    )
    first = _first_frame(decoded, stats)
    frame_bytes = stats.width * stats.height * 3
    workers = max(1, settings.detect_workers)
    if settings.memory_limit_bytes and frame_bytes * FRAME_COPIES * workers > settings.memory_limit_bytes:
        raise PipelineError(_out_of_memory(stats))
    # As many frames ahead as fit the buffer budget: 8 small ones, a single one of 8192x8192 (200 MB).
    depth = max(1, min(8, settings.decode_buffer_bytes // max(1, frame_bytes)))
    frames = _prefetch(_chain(first, decoded), size=depth, stop=stop_decoding)
    face_detector = None
    object_detector = None
    if "face" in settings.detectors:
        face_detector = create_detector(
            "retinaface", model_path=settings.models.face, input_size=settings.face_input_size,
            confidence_threshold=settings.face_confidence, intra_op_num_threads=settings.ort_threads,
        )
    crop_face_detector = None
    if face_detector is not None and "body" in settings.detectors and settings.face_search == "bodies":
        side = settings.face_crop_size
        crop_face_detector = create_detector(
            "retinaface", model_path=settings.models.face, input_size=(side, side),
            confidence_threshold=settings.face_confidence, intra_op_num_threads=settings.ort_threads,
        )
    if "body" in settings.detectors or "car" in settings.detectors:
        object_detector = create_detector(
            "yolov8", model_path=settings.models.objects, input_size=settings.object_input_size,
            confidence_threshold=settings.object_confidence, intra_op_num_threads=settings.ort_threads,
        )
    embedders = _embedders(settings)
    runners: dict[str, _KindRunner] = {}
    motion = MotionMeter()
    started = time.monotonic()
    last_report = started
    pace_origin: float | None = None  # stream position of the first frame this run analyses
    stride = max(1, settings.detect_stride)
    stopped = False

    def post(posts: list[PostedObject], stream_offset: float) -> None:
        for item in posts:
            counters = progress.objects[item.kind]
            params = {**item.detector_params,
                      "stream_timestamp": round(settings.start_stream_timestamp + item.timestamp + stream_offset, 3)}
            if on_event(dataclasses.replace(item, detector_params=params)):
                counters.posted += 1
            else:
                counters.failed += 1

    # Frames are detected on `workers` threads at once (onnxruntime releases the GIL; frame-level parallelism
    # uses cores better than threads inside one inference), then tracked and posted one by one in frame order.
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="detect") if workers > 1 else None
    # Faces smaller than the face detector's filter_min_size are dropped anyway: heads that small are not searched.
    min_face_side = settings.detectors["face"].filter_min_size if "face" in settings.detectors else 0
    pending: deque[_PendingFrame] = deque()

    def analyse(frame: DecodedFrame, stream_offset: float) -> None:
        """Hand one frame to the detectors, unless it is too still; conclude the oldest frames in flight."""
        assert frame.image is not None
        image, full, offset = _analysed_image(frame.image, settings)
        if settings.imotion_threshold > 0:
            if motion.measure(image) < settings.imotion_threshold:
                progress.frames_imotion_skipped += 1
                return
            motion.accept()
        detectors = (image, face_detector, object_detector, crop_face_detector, min_face_side)
        found = pool.submit(_detect, *detectors) if pool is not None else _detect(*detectors)
        pending.append(_PendingFrame(frame, stream_offset, image, full, offset, found, progress.frame_counters()))
        if len(pending) >= workers:
            conclude(pending.popleft())

    def conclude(item: _PendingFrame) -> None:
        """Track and post one detected frame; a frame after which no track is open becomes the checkpoint."""
        found = item.found.result() if isinstance(item.found, Future) else item.found
        frame, image = item.frame, item.image
        for kind, runner in runners.items():
            detections = found.get(kind, Detections.empty())
            detections = detections[geometry_mask(detections, runner.config)]
            if runner.embed_detections:
                assert runner.embedder is not None
                detections = detections.with_data(embedding=runner.embedder.embed(image, detections.xyxy))
            tracked = runner.tracker.update(detections, frame.index)
            quality = object_quality(tracked, image.shape)
            post(runner.poster.observe(tracked, quality, frame_index=frame.index, timestamp=frame.timestamp,
                                       image=image, full_image=item.full, offset=item.offset), item.stream_offset)
            post(runner.poster.finish(runner.tracker.pop_finished()), item.stream_offset)
        if all(runner.quiet for runner in runners.values()):
            progress.checkpoint = {
                "frame_index": frame.index,
                "next_track_ids": {kind: runner.tracker.next_id for kind, runner in runners.items()},
                "progress": {**progress.counters(), **item.frame_counters},
            }

    try:
        for frame in frames:
            if not runners:
                fps = stats.fps or 25.0
                runners = {kind: _KindRunner(config, fps, stride, embedders.get(kind))
                           for kind, config in settings.detectors.items()}
                for kind, runner in runners.items():
                    runner.tracker.next_id = int((resume.get("next_track_ids") or {}).get(kind, 1))
                    runner.poster.not_posted = progress.objects[kind].not_posted
            # With use_stream_timestamp, times follow the container's clock (its pts), else the file's position.
            stream_offset = frame.stream_time - frame.timestamp if settings.use_stream_timestamp else 0.0
            progress.last_stream_timestamp = settings.start_stream_timestamp + frame.timestamp + stream_offset
            progress.processed_duration = frame.timestamp
            # Frames up to a resumed run's checkpoint were handled by the run before; they only keep the
            # heartbeat (below) going while the decoder reaches the checkpoint.
            if frame.index <= resume_frame:
                if frame.index == resume_frame and settings.imotion_threshold > 0 and frame.image is not None:
                    # The checkpoint's frame was analysed: it is what the motion of the next frames compares with.
                    motion.measure(_analysed_image(frame.image, settings)[0])
                    motion.accept()
            else:
                if pace_origin is None:
                    pace_origin = frame.timestamp
                if settings.play_speed > 0 and _too_late(frame.timestamp - pace_origin, settings, stats, started):
                    progress.frames_dropped += 1
                else:
                    progress.frames_processed += 1
                    if runners and frame.index % stride == 0:
                        analyse(frame, stream_offset)
            now = time.monotonic()
            if now - last_report >= settings.progress_interval:
                _fill(progress, stats, runners, now - started)
                on_progress(progress)
                last_report = now
                if should_stop():
                    stopped = True
                    break
        if not stopped:
            while pending:
                conclude(pending.popleft())
    except ValueError as exc:  # a crop outside the frame, and the like
        raise PipelineError(str(exc)) from exc
    except MemoryError as exc:
        raise PipelineError(_out_of_memory(stats)) from exc
    finally:
        stop_decoding.set()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        frames.close()
    if not stopped:
        offset = 0.0
        if settings.use_stream_timestamp:
            offset = progress.last_stream_timestamp - settings.start_stream_timestamp - progress.processed_duration
        for runner in runners.values():
            post(runner.poster.finish(runner.tracker.finish()), offset)
        if stats.duration:
            progress.processed_duration = max(progress.processed_duration, stats.duration)
    _fill(progress, stats, runners, time.monotonic() - started)
    on_progress(progress)
    return PipelineResult(progress=progress, stopped=stopped)


def _first_frame(decoded: Iterator[DecodedFrame], stats: DecodeStats) -> DecodedFrame | None:
    """Open the stream and decode its first frame here, so that its size is known before buffering starts."""
    try:
        return next(decoded, None)
    except MemoryError as exc:
        raise PipelineError(_out_of_memory(stats)) from exc


def _chain(first: DecodedFrame | None, rest: Iterator[DecodedFrame]) -> Iterator[DecodedFrame]:
    if first is not None:
        yield first
    yield from rest


def _out_of_memory(stats: DecodeStats) -> str:
    size = f" of {stats.width}x{stats.height}" if stats.width else ""
    return (f"the video's frames{size} need more memory than this worker may use; lower FFV_MAX_FRAME_PIXELS to "
            f"refuse such videos at upload, or give workers more memory")


def _analysed_image(image: np.ndarray, settings: PipelineSettings) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """(what the detectors see, the full transformed frame, where the first lies in the second)."""
    full = apply_transform(image, settings.video_transform)
    if settings.rot is None:
        return full, full, (0, 0)
    return settings.rot.apply(full), full, (settings.rot.x, settings.rot.y)


def _detect(image: np.ndarray, face_detector: Any, object_detector: Any, crop_face_detector: Any = None,
            min_face_side: int = 0) -> dict[str, Detections]:
    found: dict[str, Detections] = {}
    if object_detector is not None:
        objects = object_detector.detect(image)
        for class_index, name in enumerate(object_detector.class_names):
            found[name] = objects[objects.class_id == class_index]
    if crop_face_detector is not None:
        found["face"] = faces_in_upper_bodies(crop_face_detector, image, found.get("body", Detections.empty()),
                                              min_face_side)
    elif face_detector is not None:
        found["face"] = face_detector.detect(image)
    return found


def faces_in_upper_bodies(detector: Any, image: np.ndarray, bodies: Detections, min_face_side: int = 0
                          ) -> Detections:
    """Faces found in the head-and-shoulders part of each person box, in frame coordinates.

    Each crop is the upper 45% of the box (or a square of its width, for close-ups), widened by 10% on each side
    (a bowed or turned head leaves the box a little); overlapping persons give overlapping crops, so a face found
    twice is kept once (NMS). A crop whose sides are both under `min_face_side` cannot hold a face that large
    and is not searched: with the default face `filter_min_size` (60) the distant pedestrians of a surveillance
    view cost nothing.
    """
    height, width = image.shape[:2]
    crops: list[np.ndarray] = []
    offsets: list[tuple[int, int]] = []
    for x1, y1, x2, y2 in bodies.xyxy.tolist():
        box_w, box_h = x2 - x1, y2 - y1
        left, right = int(max(0, x1 - 0.1 * box_w)), int(min(width, x2 + 0.1 * box_w))
        # Standing people: the head is in the top 45%; a close-up box (wide for its height) is mostly head.
        head = min(box_h, max(0.45 * box_h, box_w))
        top, bottom = int(max(0, y1 - 0.05 * box_h)), int(min(height, y1 + head))
        if right - left >= 8 and bottom - top >= 8 and max(right - left, bottom - top) >= min_face_side:
            crops.append(image[top:bottom, left:right])
            offsets.append((left, top))
    parts = []
    for (dx, dy), faces in zip(offsets, detector.detect_batch(crops), strict=True):
        if len(faces):
            shift = np.array([dx, dy], np.float32)
            parts.append(Detections(xyxy=faces.xyxy + np.tile(shift, 2), confidence=faces.confidence,
                                    class_id=faces.class_id, data={"landmarks": faces.data["landmarks"] + shift}))
    if not parts:
        return Detections(xyxy=np.empty((0, 4), np.float32), confidence=np.empty(0, np.float32),
                          class_id=np.empty(0, np.int64), data={"landmarks": np.empty((0, 5, 2), np.float32)})
    merged = Detections.merge(parts)
    return merged[non_max_suppression(merged.xyxy, merged.confidence, 0.4)]


def _too_late(stream_seconds: float, settings: PipelineSettings, stats: DecodeStats, started: float) -> bool:
    """Pace to `play_speed`; True when the frame is over a frame interval late and drops are allowed."""
    late = _pace(stream_seconds, settings.play_speed, started)
    return not settings.disable_drops and late > 1.0 / ((stats.fps or 25.0) * settings.play_speed)


def _pace(stream_seconds: float, play_speed: float, started: float) -> float:
    """Hold the loop back to `play_speed` times real time; returns how many seconds late the frame is (>= 0)."""
    delay = stream_seconds / play_speed - (time.monotonic() - started)
    if delay > 0:
        time.sleep(delay)
        return 0.0
    return -delay


def _fill(progress: Progress, stats: DecodeStats, runners: dict[str, _KindRunner], elapsed: float) -> None:
    progress.decoding_soft_errors = stats.soft_errors
    progress.frame_width, progress.frame_height = stats.width, stats.height
    progress.source_len = stats.duration
    progress.processing_fps = progress.frames_processed / elapsed if elapsed > 0 else 0.0
    for kind, runner in runners.items():
        progress.objects[kind].not_posted = runner.poster.not_posted
