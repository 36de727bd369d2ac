"""Benchmark: the naive detect-everything loop against `processing.pipeline.run_pipeline`.

For each video, in one run:

1. naive loop: PyAV decode (``processing.decoding.decode_frames``, no prefetch thread), then YOLOv8n at 640
   and RetinaFace at 640 on every frame, ONNX Runtime with ``intra_op_num_threads=1``, one
   ``SimpleIouTracker`` per kind (face, body, car) configured as the pipeline configures its trackers (default
   settings, motion prediction on) but without re-association of lost tracks (session 7), so that the
   reference is the same for every pipeline tracker; its tracks are the reference; YOLO sees the plain 640x640
   letterbox;
2. ``run_pipeline`` with face, body and car detectors on, once per configuration (``--stride``,
   ``--object-size``, ``--face-size``, ``--threads``, ``--workers``; lists are zipped, a single value is
   repeated), tracks collected from the posted events' ``detector_params["history"]`` (``track_send_history``,
   ``overall_only``, ``post_best_track_frame``, ``filter_min_quality=0``: every track posts exactly once).
   Both loops drop faces under ``--face-min-size`` (the face detector's default ``filter_min_size``, 60);
   bodies and cars keep every size.  ``--filters defaults`` instead gives both loops a new archive's default
   size and quality filters (api-notes.md: face 60 / 0.45, body 70 / 0.6, car 100 / 0.73): boxes under the
   size are dropped before tracking, and a track counts only when its best quality reaches the minimum, i.e.
   the tracks the service would post as events by default;
3. track recall of each pipeline run against the naive tracks (see :func:`track_recall`): "recall" counts a
   naive track found when one pipeline track follows it (same identity over time), "covered" when the
   pipeline's tracks together have its box on at least half of its frames, however they cut it into tracks
   (the naive loop's own tracker swaps identities in a crowd, and that should not count as a miss).
   Two more figures count only some naive tracks: those spanning >= ``--min-track-frames`` frames, and the
   confirmed ones, found by the detector on >= ``--min-track-detections`` frames (deep_sort's n_init).
   Fragmentation (:func:`track_fragmentation`): the share of naive tracks covered by more than one pipeline
   track, pipeline tracks per covered naive track, MOT-style ID switches, and pipeline tracks over more than one
   naive track (merging: two people joined, or one person the reference cut in two);
4. x real-time (video duration / wall time) and speedup (naive wall / pipeline wall). Before the naive loop,
   YOLO alone is timed at the pipeline's input, one frame on one thread and two at once (the pipeline's
   detect workers), with its convolutions' GFLOP: the x real-time that stride 1 cannot pass on this machine.

A small profiling section times the stages separately on a few frames (decode, YOLO at several input
sizes, RetinaFace at 640 and on upper-body crops).  ``--max-frames`` cuts a video by remuxing its first
packets (stream copy, no re-encode) into a temporary file, so both loops decode the same bytes.  A video given
as ``vtest@640x360@30`` is made from vtest in that folder (scaled, cropped, resampled; never committed).
``--object-model fp32|int8|PATH`` (per configuration) picks the pipeline's YOLO file (``int8`` = ``yolov8n_int8.onnx``
from ``prepare_models --int8``); the naive loop always runs ``yolov8n.onnx``.  ``--detections-cache DIR`` records
every detection by image bytes; ``--replay naive|all`` takes them from there
again (the reference without re-detecting it, or every run, to compare trackers on the same detections).

Run from the repository root::

    .venv/bin/python bench/bench_pipeline.py --models-dir var/models --stride 1 2 3 \\
        --object-size 640 640 416 --max-frames 300 --json-out bench/results.json
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import pickle
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import av  # noqa: E402

import processing.pipeline.detection  # noqa: E402
from processing.config import DetectorConfig, ModelPaths, PipelineSettings  # noqa: E402
from processing.decoding import DecodeStats, decode_frames  # noqa: E402
from processing.detections import Detections  # noqa: E402
from processing.detectors import create_detector  # noqa: E402
from processing.frames import geometry_mask, object_quality  # noqa: E402
from processing.models_prep.prepare import sha256_file  # noqa: E402
from processing.onnx_runtime import choose_providers, get_session  # noqa: E402
from processing.pipeline import run_pipeline  # noqa: E402
from processing.trackers import create_tracker  # noqa: E402

# opencv-doc's sample data: where `./dev test` unpacks it (OPENCV_DOC_DATA_DIR), else Debian's own path.
DATA = Path(os.environ.get("OPENCV_DOC_DATA_DIR") or "/usr/share/doc/opencv-doc/examples/data")
DEFAULT_VIDEOS = [str(DATA / "vtest.avi"), str(DATA / "Megamind.avi")]
KINDS = ("face", "body", "car")
MAX_PIXELS = 8192 * 8192
# A new archive's per-detector (filter_min_size, filter_min_quality), from ../shared/spec/api-notes.md.
ARCHIVE_DEFAULT_FILTERS = {"face": (60, 0.45), "body": (70, 0.6), "car": (100, 0.73)}
FACE_CONFIDENCE = 0.9  # PipelineSettings defaults, used by the naive loop too
OBJECT_CONFIDENCE = 0.25
TRACK_OVERLAP = 0.25  # DetectorConfig defaults
TRACK_MISS_SECONDS = 1.0


# ----------------------------------------------------------------------------------------------- helpers


def parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    sides = [int(p) for p in parts]
    return (sides[0], sides[0]) if len(sides) == 1 else (sides[0], sides[1])


def size_text(size: tuple[int, int]) -> str:
    return str(size[0]) if size[0] == size[1] else f"{size[0]}x{size[1]}"


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def ms(values: list[float]) -> dict[str, float | None]:
    """Mean, p50 and p95 of durations in seconds, as milliseconds."""
    if not values:
        return {"mean_ms": None, "p50_ms": None, "p95_ms": None, "n": 0}
    return {
        "mean_ms": round(1000 * statistics.fmean(values), 2),
        "p50_ms": round(1000 * pct(values, 50), 2),
        "p95_ms": round(1000 * pct(values, 95), 2),
        "n": len(values),
    }


def video_info(path: Path) -> tuple[int, float, int, int]:
    """(frames, fps, width, height) by decoding headers only."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 25)
        frames = stream.frames or sum(1 for _ in container.demux(stream) if _.dts is not None)
        return frames, fps, stream.codec_context.width, stream.codec_context.height


def cut_video(source: Path, max_frames: int, workdir: Path) -> Path:
    """The first `max_frames` packets of `source` remuxed (stream copy) into a new file of the same format."""
    target = workdir / f"{source.stem}.first{max_frames}{source.suffix}"
    with av.open(str(source)) as src, av.open(str(target), "w", format=src.format.name) as dst:
        in_stream = src.streams.video[0]
        out_stream = dst.add_stream_from_template(in_stream)
        written = 0
        for packet in src.demux(in_stream):
            if packet.dts is None:
                continue
            packet.stream = out_stream
            dst.mux(packet)
            written += 1
            if written >= max_frames:
                break
    return target


def resolve_video(arg: str) -> Path:
    """A path, or a bare opencv-doc sample name (``vtest``, ``Megamind.avi``) looked up in DATA."""
    path = Path(arg)
    if path.exists() or path.parent != Path("."):
        return path
    return DATA / (arg if path.suffix else f"{arg}.avi")


def count_frames(path: Path) -> int:
    return sum(1 for _ in decode_frames(path, DecodeStats(), max_pixels=MAX_PIXELS))


def derived_video(source: Path, size: tuple[int, int], fps: float, workdir: Path, interpolate: bool = False) -> Path:
    """`source` scaled to the width of `size`, its middle rows cropped (or padded black) to the height, and
    resampled to `fps` by repeating or dropping frames (each output frame shows the source frame on screen at
    its time), encoded as MPEG-4 part 2 in AVI at high quality into `workdir`: e.g. vtest as a 640x360 30 fps
    street film. With `interpolate`, the frames between two source frames are made by motion interpolation
    instead (each half warped along DIS optical flow to the in-between time and blended): every frame shows
    people moving, none repeats, as in footage shot at that rate."""
    import cv2

    width, height = size
    target = workdir / f"{source.stem}.{width}x{height}.{fps:g}fps{'.interp' if interpolate else ''}.avi"
    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM) if interpolate else None
    previous: np.ndarray | None = None
    with av.open(str(source)) as src, av.open(str(target), "w") as dst:
        in_stream = src.streams.video[0]
        in_fps = float(in_stream.average_rate or 25)
        out_stream = dst.add_stream("mpeg4", rate=round(fps))
        out_stream.width, out_stream.height, out_stream.pix_fmt = width, height, "yuv420p"
        out_stream.bit_rate = 8_000_000
        written = 0
        for index, frame in enumerate(src.decode(in_stream)):
            image = frame.to_ndarray(format="bgr24")
            scaled = cv2.resize(image, (width, round(image.shape[0] * width / image.shape[1])),
                                interpolation=cv2.INTER_AREA)
            top = (scaled.shape[0] - height) // 2
            if top >= 0:
                fitted = scaled[top:top + height]
            else:
                fitted = cv2.copyMakeBorder(scaled, -top, height - scaled.shape[0] + top, 0, 0, cv2.BORDER_CONSTANT)
            if flow is not None:
                # Frames whose time falls between the previous source frame and this one, interpolated.
                if previous is not None:
                    for picture in _interpolated(flow, previous, fitted, index - 1, in_fps, fps, written):
                        out = av.VideoFrame.from_ndarray(picture, format="bgr24")
                        out.pts = written
                        for packet in out_stream.encode(out):
                            dst.mux(packet)
                        written += 1
                previous = fitted
                until = written + 1 if abs(written * in_fps / fps - index) < 1e-6 else written
            else:
                # Output frames whose time falls within this source frame's display interval.
                until = round((index + 1) * fps / in_fps)
            while written < until:
                out = av.VideoFrame.from_ndarray(np.ascontiguousarray(fitted), format="bgr24")
                out.pts = written
                for packet in out_stream.encode(out):
                    dst.mux(packet)
                written += 1
        for packet in out_stream.encode():
            dst.mux(packet)
    return target


def _interpolated(flow: Any, first: np.ndarray, second: np.ndarray, first_index: int, in_fps: float, fps: float,
                  written: int) -> Iterator[np.ndarray]:
    """The output frames (from number `written` on) whose time lies strictly between source frames
    `first_index` and `first_index + 1`, each warped along the optical flow from both sides and blended."""
    import cv2

    gray = [cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) for image in (first, second)]
    forward = flow.calc(gray[0], gray[1], None)
    backward = flow.calc(gray[1], gray[0], None)
    height, width = first.shape[:2]
    grid = np.stack(np.meshgrid(np.arange(width), np.arange(height)), axis=-1).astype(np.float32)
    out = written
    while True:
        position = out * in_fps / fps - first_index  # 0 at the first source frame, 1 at the second
        if position >= 1 - 1e-6:
            return
        if position > 1e-6:
            # Backward warping with the flow taken at the target pixel (a fair approximation for small motion).
            from_first = cv2.remap(first, *np.moveaxis(grid - position * forward, -1, 0), cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REPLICATE)
            from_second = cv2.remap(second, *np.moveaxis(grid - (1 - position) * backward, -1, 0),
                                    cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            yield np.ascontiguousarray(cv2.addWeighted(from_first, 1 - position, from_second, position, 0))
        out += 1


def resolve_video_spec(arg: str, workdir: Path) -> Path:
    """A video argument; ``NAME@WxH@FPS`` (e.g. ``vtest@640x360@30``) makes :func:`derived_video` of NAME, with
    frames repeated; ``NAME@WxH@FPS@interp`` with frames motion-interpolated."""
    if "@" not in arg:
        return resolve_video(arg)
    name, size, fps, *mode = arg.split("@")
    if mode not in ([], ["interp"]):
        raise SystemExit(f"unknown derived-video mode in {arg!r} (only @interp)")
    return derived_video(resolve_video(name), parse_size(size), float(fps), workdir, interpolate=bool(mode))


class DetectionCache:
    """Detections by (detector settings, image bytes), so runs can be replayed through other trackers.

    `record`: detectors run as usual (timings stay real, plus hashing each image, ~1 ms) and their output is
    kept; `replay`: a stored result is returned without running the detector (wall times are then tracking,
    decoding and posting only, not comparable). Stored as one pickle per cache directory.
    """

    def __init__(self, directory: Path, replay: bool) -> None:
        self.path = directory / "detections.pkl"
        self.replay = replay
        self.entries: dict[str, Any] = pickle.loads(self.path.read_bytes()) if self.path.is_file() else {}
        self.misses = 0

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(pickle.dumps(self.entries, protocol=pickle.HIGHEST_PROTOCOL))

    def create_detector(self, name: str, **options: Any) -> Any:
        detector = create_detector(name, **options)
        settings = {k: v for k, v in options.items() if k != "intra_op_num_threads"}
        settings["model_path"] = Path(settings["model_path"]).name
        prefix = f"{name}|{detector!r}|{sorted(settings.items())}|"
        return _CachedDetector(detector, prefix, self)

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        if self.replay and key in self.entries:
            return self.entries[key]
        self.misses += 1
        self.entries[key] = value = compute()
        return value


class _CachedDetector:
    def __init__(self, detector: Any, prefix: str, cache: DetectionCache) -> None:
        self._detector, self._prefix, self._cache = detector, prefix, cache

    def __getattr__(self, name: str) -> Any:
        return getattr(self._detector, name)

    def _key(self, image: np.ndarray) -> str:
        digest = hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).hexdigest()
        return f"{self._prefix}{image.shape}|{digest}"

    def detect(self, image: np.ndarray) -> Detections:
        return self._cache.get(self._key(image), lambda: self._detector.detect(image))

    def detect_batch(self, images: list[np.ndarray]) -> list[Detections]:
        keys = [self._key(image) for image in images]
        if self._cache.replay and all(key in self._cache.entries for key in keys):
            return [self._cache.entries[key] for key in keys]
        found = self._detector.detect_batch(images)  # batched, as the pipeline runs it
        self._cache.misses += len(keys)
        self._cache.entries.update(zip(keys, found, strict=True))
        return found


_cache: DetectionCache | None = None


def make_detector(name: str, **options: Any) -> Any:
    """`create_detector`, through the detection cache when the bench has one (`--detections-cache`)."""
    return create_detector(name, **options) if _cache is None else _cache.create_detector(name, **options)


# ----------------------------------------------------------------------------------------------- naive loop


class NaiveTrack(NamedTuple):
    """One reference track: its frames (interpolated ones included), a box on each, and the frames on which the
    detector found it (the rest are the tracker's interpolation across misses)."""

    frames: np.ndarray
    boxes: np.ndarray
    detected: np.ndarray


def detector_filters(mode: str, face_min_size: int) -> dict[str, DetectorConfig]:
    """Each kind's size and quality filters: `bench` = faces under `face_min_size` dropped, every track counts;
    `defaults` = a new archive's defaults (ARCHIVE_DEFAULT_FILTERS)."""
    if mode == "defaults":
        return {
            kind: DetectorConfig(kind=kind, filter_min_size=size, filter_min_quality=quality)
            for kind, (size, quality) in ARCHIVE_DEFAULT_FILTERS.items()
        }
    return {kind: DetectorConfig(kind=kind, filter_min_size=face_min_size if kind == "face" else 0) for kind in KINDS}


def naive_loop(path: Path, models: ModelPaths, fps: float, filters: dict[str, DetectorConfig]) -> dict[str, Any]:
    """Decode, YOLO 640 + RetinaFace 640 on every frame, one ORT thread, SimpleIouTracker per kind; the tracks
    whose best quality reaches their kind's filter_min_quality (the pipeline's posting rule)."""
    yolo = make_detector(
        "yolov8",
        model_path=models.objects,
        input_size=(640, 640),
        trim_padding=False,  # the plain square input, as ultralytics' predict at imgsz=640
        confidence_threshold=OBJECT_CONFIDENCE,
        intra_op_num_threads=1,
    )
    face = make_detector(
        "retinaface",
        model_path=models.face,
        input_size=(640, 640),
        confidence_threshold=FACE_CONFIDENCE,
        intra_op_num_threads=1,
    )
    warm = np.zeros((64, 64, 3), np.uint8)
    yolo.detect(warm)
    face.detect(warm)
    miss = max(1, round(TRACK_MISS_SECONDS * fps))
    trackers = {
        kind: create_tracker(
            "simple_iou",
            track_overlap_threshold=TRACK_OVERLAP,
            track_miss_interval=miss,
            track_max_duration_frames=0,
            track_interpolate_bboxes=True,
            motion_prediction=True,  # as the pipeline's trackers: the runs differ only in what is detected when
            # The reference stays sessions 1-6's tracker, so that pipeline trackers are compared against one thing.
            reassociate_lost=False,
        )
        for kind in KINDS
    }
    stages: dict[str, list[float]] = {"decode": [], "yolo": [], "retinaface": [], "track": [], "frame": []}
    frames = decode_frames(path, DecodeStats(), max_pixels=MAX_PIXELS)
    n = 0
    frame_shape: tuple[int, ...] = (0, 0)
    started = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        frame = next(frames, None)
        t1 = time.perf_counter()
        if frame is None:
            break
        objects = yolo.detect(frame.image)
        t2 = time.perf_counter()
        faces = face.detect(frame.image)
        t3 = time.perf_counter()
        found = {"face": faces}
        for class_index, name in enumerate(yolo.class_names):
            found[name] = objects[objects.class_id == class_index]
        for kind, tracker in trackers.items():
            # Boxes outside the size filters are dropped before tracking, by the pipeline's own rule.
            detections = found.get(kind, Detections.empty())
            tracker.update(detections[geometry_mask(detections, filters[kind])], frame.index)
        frame_shape = frame.image.shape
        t4 = time.perf_counter()
        stages["decode"].append(t1 - t0)
        stages["yolo"].append(t2 - t1)
        stages["retinaface"].append(t3 - t2)
        stages["track"].append(t4 - t3)
        stages["frame"].append(t4 - t0)
        n += 1
    wall = time.perf_counter() - started
    tracks: dict[str, list[NaiveTrack]] = {}
    for kind, tracker in trackers.items():
        tracks[kind] = [
            NaiveTrack(
                np.asarray(t.frame_indices),
                np.asarray(t.xyxy, np.float64),
                np.asarray(t.frame_indices)[~np.asarray(t.interpolated)],
            )
            for t in tracker.finish()
            if float(object_quality(t.observations, frame_shape).max()) >= filters[kind].filter_min_quality
        ]
    return {"wall_s": wall, "frames": n, "stages": {k: ms(v) for k, v in stages.items()}, "tracks": tracks}


# ----------------------------------------------------------------------------------------------- pipeline


def pipeline_run(
    path: Path,
    models: ModelPaths,
    stride: int,
    object_size: tuple[int, int],
    face_size: tuple[int, int],
    threads: int | None,
    workers: int,
    filters: dict[str, DetectorConfig],
    tracker: str = "simple_iou",
    rate: float = 0.0,
    skip_duplicates: bool = False,
    trim: bool = True,
) -> dict[str, Any]:
    """One `run_pipeline` call with every kind's `tracker`; `threads` None = as configured (ORT default), else
    the detectors' intra_op_num_threads (PipelineSettings.ort_threads); `workers` = PipelineSettings.detect_workers;
    `rate` = detect_rate, `skip_duplicates` = skip_duplicate_frames; `trim` False feeds YOLO the whole square
    letterbox (as the naive loop does) instead of the rows that hold the frame.
    """
    detector_settings = {"track_send_history": True, "overall_only": True, "post_best_track_frame": True}
    stream_settings = {
        "detectors": {
            kind: {
                **detector_settings,
                "tracker_type": tracker,
                "filter_min_size": filters[kind].filter_min_size,
                "filter_min_quality": filters[kind].filter_min_quality,
            }
            for kind in KINDS
        }
    }
    settings = PipelineSettings.from_stream_settings(
        stream_settings,
        source=str(path),
        models=models,
        max_pixels=MAX_PIXELS,
        progress_interval=0.0,  # on_progress after every frame: gives per-frame timings
        detect_stride=stride,
        detect_rate=rate,
        skip_duplicate_frames=skip_duplicates,
        face_input_size=face_size,
        object_input_size=object_size,
        ort_threads=0 if threads is None else threads,
        detect_workers=workers,
    )
    # Warm the sessions the pipeline will use (same cache key: default threads and providers).
    extra = {} if threads is None else {"intra_op_num_threads": threads}
    warm = np.zeros((64, 64, 3), np.uint8)
    create_detector("retinaface", model_path=models.face, input_size=face_size, **extra).detect(warm)
    create_detector("yolov8", model_path=models.objects, input_size=object_size, **extra).detect(warm)

    tracks: dict[str, list[np.ndarray]] = {kind: [] for kind in KINDS}
    ticks: list[tuple[int, float]] = []

    def on_event(item: Any) -> bool:
        history = item.detector_params.get("history") or []
        if history:
            tracks[item.kind].append(np.asarray(history, dtype=np.float64))
        return True

    def on_progress(progress: Any) -> None:
        ticks.append((progress.frames_processed, time.perf_counter()))

    analysed = [0]

    class Counted:  # the object detector, counting the frames it sees (every analysed frame)
        def __init__(self, detector: Any) -> None:
            self._detector = detector

        def __getattr__(self, name: str) -> Any:
            return getattr(self._detector, name)

        def detect(self, image: np.ndarray) -> Detections:
            analysed[0] += 1
            return self._detector.detect(image)

    def pipeline_detector(name: str, **options: Any) -> Any:
        if name != "yolov8":
            return make_detector(name, **options)
        if not trim:
            options["trim_padding"] = False
        return Counted(make_detector(name, **options))

    # The detection stage looks the factory up in its own module (since the pipeline was split into stages, a
    # hook on the package no longer reached it: sessions 7's pipeline runs bypassed the detection cache).
    processing.pipeline.detection.create_detector = pipeline_detector  # type: ignore[attr-defined]
    started = time.perf_counter()
    result = run_pipeline(settings, on_progress=on_progress, should_stop=lambda: False, on_event=on_event)
    wall = time.perf_counter() - started
    # Per-frame times: difference between consecutive progress ticks (the first from the start).
    per_frame: list[float] = []
    detect_frames: list[float] = []
    previous_count, previous_time = 0, started
    for count, moment in ticks:
        if count > previous_count:
            dt = (moment - previous_time) / (count - previous_count)
            per_frame.append(dt)
            if rate == 0 and not skip_duplicates and (count - 1) % stride == 0:  # count-1 was a detection frame
                detect_frames.append(dt)
            previous_count, previous_time = count, moment
    return {
        "wall_s": wall,
        "frames": result.progress.frames_processed,
        "per_frame": ms(per_frame),
        "per_detect_frame": ms(detect_frames),
        "tracks": tracks,
        "posted": {k: c.posted for k, c in result.progress.objects.items()},
        "analysed": analysed[0],
    }


# ----------------------------------------------------------------------------------------------- recall


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of two (N, 4) arrays."""
    x1 = np.maximum(a[:, 0], b[:, 0])
    y1 = np.maximum(a[:, 1], b[:, 1])
    x2 = np.minimum(a[:, 2], b[:, 2])
    y2 = np.minimum(a[:, 3], b[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def _overlaps(
    frames: np.ndarray, boxes: np.ndarray, candidates: list[np.ndarray]
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """For each candidate whose span meets the naive track's: (which of the track's frames lie in the span, the
    IoU with the candidate on those frames).

    The candidate's box on a frame between two of its rows ([frame, ts, x1, y1, x2, y2]) is linearly
    interpolated; it has no box outside [first row, last row].
    """
    for history in candidates:
        h_frames = history[:, 0]
        if h_frames[-1] < frames[0] or h_frames[0] > frames[-1]:
            continue
        inside = (frames >= h_frames[0]) & (frames <= h_frames[-1])
        at = frames[inside].astype(np.float64)
        interp = np.stack([np.interp(at, h_frames, history[:, 2 + c]) for c in range(4)], axis=1)
        yield inside, _box_iou(boxes[inside], interp)


def track_found(
    frames: np.ndarray, boxes: np.ndarray, candidates: list[np.ndarray], min_iou: float = 0.5, min_cover: float = 0.5
) -> bool:
    """Whether one candidate history follows the naive track: it covers >= `min_cover` of the naive track's
    frames with mean IoU >= `min_iou` over the frames both have a box (same identity over time)."""
    return any(
        int(inside.sum()) >= min_cover * len(frames) and float(iou.mean()) >= min_iou
        for inside, iou in _overlaps(frames, boxes, candidates)
    )


def track_covered(
    frames: np.ndarray, boxes: np.ndarray, candidates: list[np.ndarray], min_iou: float = 0.5, min_cover: float = 0.5
) -> bool:
    """Whether the candidates together have a box of IoU >= `min_iou` on >= `min_cover` of the naive track's
    frames, whichever candidate it is: the object was found, even where the two runs cut its track differently
    (MOTChallenge's "mostly tracked" counts coverage the same way, ID switches aside)."""
    hit = np.zeros(len(frames), bool)
    for inside, iou in _overlaps(frames, boxes, candidates):
        hit[np.flatnonzero(inside)[iou >= min_iou]] = True
    return bool(hit.mean() >= min_cover)


def followed(track: NaiveTrack, candidates: list[np.ndarray]) -> bool:
    return track_found(track.frames, track.boxes, candidates)


def covered(track: NaiveTrack, candidates: list[np.ndarray]) -> bool:
    return track_covered(track.frames, track.boxes, candidates)


def track_recall(
    naive: dict[str, list[NaiveTrack]],
    piped: dict[str, list[np.ndarray]],
    min_frames: int = 1,
    match: Callable[[NaiveTrack, list[np.ndarray]], bool] = followed,
    min_detections: int = 1,
) -> dict[str, Any]:
    """Found / total naive tracks per kind and overall, counting naive tracks of >= `min_frames` frames that the
    detector found on >= `min_detections` of them; `match` is followed (one candidate follows the track) or
    covered (candidates together cover it)."""
    out: dict[str, Any] = {}
    total_found = total = 0
    for kind in KINDS:
        candidates = sorted(piped.get(kind, []), key=lambda h: h[0, 0])
        eligible = [t for t in naive.get(kind, []) if len(t.frames) >= min_frames and len(t.detected) >= min_detections]
        found = sum(match(t, candidates) for t in eligible)
        out[kind] = {
            "found": found,
            "total": len(eligible),
            "recall": round(found / len(eligible), 4) if eligible else None,
        }
        total_found += found
        total += len(eligible)
    out["overall"] = {"found": total_found, "total": total, "recall": round(total_found / total, 4) if total else None}
    return out


# ----------------------------------------------------------------------------------------------- fragmentation


def matched_ids(
    frames: np.ndarray, boxes: np.ndarray, candidates: list[np.ndarray], min_iou: float = 0.5
) -> np.ndarray:
    """Which candidate (index into `candidates`, -1 = none) has the naive track's box on each of its frames.

    CLEAR MOT's rule: the candidate matched on the previous matched frame keeps the match while its IoU stays
    >= `min_iou`, else the candidate of highest IoU >= `min_iou` takes it (ties: the earlier candidate), so two
    pipeline tracks on one place taking turns at the higher IoU do not count as switches while both cover it.
    """
    iou = np.zeros((len(candidates), len(frames)))
    for index, history in enumerate(candidates):
        h_frames = history[:, 0]
        if h_frames[-1] < frames[0] or h_frames[0] > frames[-1]:
            continue
        (inside, overlap), = _overlaps(frames, boxes, [history])
        iou[index, inside] = overlap
    ids = np.full(len(frames), -1, np.int64)
    previous = -1
    for column in range(len(frames)):
        if previous >= 0 and iou[previous, column] >= min_iou:
            ids[column] = previous
            continue
        if len(candidates) and iou[:, column].max() >= min_iou:
            previous = ids[column] = int(np.argmax(iou[:, column]))
    return ids


def id_switches(ids: np.ndarray) -> int:
    """Times the matched candidate changes between consecutive matched frames (unmatched frames skipped)."""
    matched = ids[ids >= 0]
    return int(np.count_nonzero(matched[1:] != matched[:-1]))


def track_fragmentation(
    naive: dict[str, list[NaiveTrack]],
    piped: dict[str, list[np.ndarray]],
    min_iou: float = 0.5,
) -> dict[str, Any]:
    """How many pipeline tracks each naive track is cut into, per kind and overall.

    For each naive track, :func:`matched_ids` names the pipeline track covering it (IoU >= `min_iou`) frame by
    frame.  `matched` = naive tracks covered on at least one frame; `fragmented` = those covered by more than
    one distinct pipeline track (`fragmented_share` = fragmented / all naive tracks); `tracks_per_matched` =
    mean distinct pipeline tracks per matched naive track (1.0 = no cuts); `id_switches` = MOT-style changes of
    the matched pipeline track, summed (a track cut in three that never comes back has 2); `merging` =
    pipeline tracks matched to more than one naive track (two people joined, or one the reference cut).
    """
    out: dict[str, Any] = {}
    totals = {"naive": 0, "matched": 0, "fragmented": 0, "pipeline_tracks": 0, "id_switches": 0, "merging": 0}
    for kind in KINDS:
        candidates = sorted(piped.get(kind, []), key=lambda h: h[0, 0])
        tracks = naive.get(kind, [])
        counts = {"naive": len(tracks), "matched": 0, "fragmented": 0, "pipeline_tracks": 0, "id_switches": 0}
        naive_of_candidate: dict[int, set[int]] = {}
        for number, track in enumerate(tracks):
            ids = matched_ids(track.frames, track.boxes, candidates, min_iou)
            distinct = set(ids[ids >= 0].tolist())
            for candidate in distinct:
                naive_of_candidate.setdefault(candidate, set()).add(number)
            counts["matched"] += bool(distinct)
            counts["fragmented"] += len(distinct) > 1
            counts["pipeline_tracks"] += len(distinct)
            counts["id_switches"] += id_switches(ids)
        counts["merging"] = sum(len(numbers) > 1 for numbers in naive_of_candidate.values())
        out[kind] = _fragmentation_figures(counts)
        for key in totals:
            totals[key] += counts[key]
    out["overall"] = _fragmentation_figures(totals)
    return out


def _fragmentation_figures(counts: dict[str, int]) -> dict[str, Any]:
    return {
        **counts,
        "fragmented_share": round(counts["fragmented"] / counts["naive"], 4) if counts["naive"] else None,
        "tracks_per_matched": round(counts["pipeline_tracks"] / counts["matched"], 4) if counts["matched"] else None,
    }


# ----------------------------------------------------------------------------------------------- profiling


def conv_gflop(model_path: Path, input_hw: tuple[int, int]) -> float:
    """Floating-point operations (2 x multiply-adds) of the model's convolutions on one (1, 3, H, W) input."""
    import onnx

    model = onnx.load(str(model_path))
    for dim, value in zip(model.graph.input[0].type.tensor_type.shape.dim, (1, 3, *input_hw), strict=True):
        dim.Clear()
        dim.dim_value = value
    model = onnx.shape_inference.infer_shapes(model)
    shapes = {
        info.name: [d.dim_value for d in info.type.tensor_type.shape.dim]
        for info in (*model.graph.value_info, *model.graph.output)
    }
    weights = {init.name: init.dims for init in model.graph.initializer}
    macs = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            _, per_group_in, kernel_h, kernel_w = weights[node.input[1]]
            macs += int(np.prod(shapes[node.output[0]][1:])) * per_group_in * kernel_h * kernel_w
    return 2 * macs / 1e9


def yolo_bound(
    path: Path, models: ModelPaths, object_size: tuple[int, int], fps: float, n_frames: int = 32
) -> dict[str, Any]:
    """How fast YOLO alone can go at the pipeline's input on this machine: one frame at a time on one thread,
    and two frames at once on one thread each (as the pipeline's detect workers run); the second bounds the
    x real-time of stride 1, whatever else the pipeline saves."""
    from concurrent.futures import ThreadPoolExecutor

    from processing.detectors._letterbox import letterbox

    images = []
    frames = decode_frames(path, DecodeStats(), max_pixels=MAX_PIXELS)
    for frame in frames:
        images.append(frame.image)
        if len(images) >= n_frames:
            break
    frames.close()
    yolo = create_detector(
        "yolov8",
        model_path=models.objects,
        input_size=object_size,
        confidence_threshold=OBJECT_CONFIDENCE,
        intra_op_num_threads=1,
    )
    tensor, _ = letterbox(images[0], (object_size[1], object_size[0]), trim=yolo.trim_padding)
    input_hw = (int(tensor.shape[2]), int(tensor.shape[3]))
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(yolo.detect, images[:2]))  # warm: the session's buffers for two runs at once
        started = time.perf_counter()
        list(pool.map(yolo.detect, images + images))
        two = (time.perf_counter() - started) / (2 * len(images))
    started = time.perf_counter()
    for image in images:
        yolo.detect(image)
    one = (time.perf_counter() - started) / len(images)
    gflop = conv_gflop(models.objects, input_hw)
    return {
        "input": f"{input_hw[1]}x{input_hw[0]}",
        "gflop_per_frame": round(gflop, 2),
        "one_thread_ms": round(1000 * one, 1),
        "one_thread_gflops": round(gflop / one, 1),
        "two_at_once_ms_per_frame": round(1000 * two, 1),
        "two_at_once_gflops": round(gflop / two, 1),
        "stride1_max_x_realtime": round(1 / two / fps, 2),
        "gflops_for_3x_realtime_stride1": round(3 * fps * gflop, 1),
    }


def profile_stages(path: Path, models: ModelPaths, n_frames: int, crop_size: int) -> dict[str, Any]:
    """Per-stage costs on the first `n_frames` frames, ORT one thread."""
    decode_times: list[float] = []
    images: list[np.ndarray] = []
    frames = decode_frames(path, DecodeStats(), max_pixels=MAX_PIXELS)
    while len(images) < n_frames:
        t0 = time.perf_counter()
        frame = next(frames, None)
        if frame is None:
            break
        decode_times.append(time.perf_counter() - t0)
        images.append(frame.image)
    frames.close()
    result: dict[str, Any] = {"frames": len(images), "decode": ms(decode_times)}
    # bgr24 conversion alone, to split decode from the numpy frame copy
    bodies: list[list[np.ndarray]] = []
    for size in ((640, 640), (640, 480), (416, 416), (320, 320)):
        yolo = create_detector(
            "yolov8",
            model_path=models.objects,
            input_size=size,
            trim_padding=False,
            confidence_threshold=OBJECT_CONFIDENCE,
            intra_op_num_threads=1,
        )
        yolo.detect(images[0])
        times = []
        for image in images:
            t0 = time.perf_counter()
            found = yolo.detect(image)
            times.append(time.perf_counter() - t0)
            if size == (640, 640):
                bodies.append([box for box in found.xyxy[found.class_id == 0]])
        result[f"yolo_{size_text(size)}"] = ms(times)
    for size in ((640, 640), (640, 480), (416, 416)):
        face = create_detector(
            "retinaface",
            model_path=models.face,
            input_size=size,
            trim_padding=False,
            confidence_threshold=FACE_CONFIDENCE,
            intra_op_num_threads=1,
        )
        face.detect(images[0])
        times = []
        for image in images:
            t0 = time.perf_counter()
            face.detect(image)
            times.append(time.perf_counter() - t0)
        result[f"retinaface_{size_text(size)}"] = ms(times)
    # RetinaFace on the upper 45% of each YOLO person box (grown by 20%), letterboxed to crop_size.
    face = create_detector(
        "retinaface",
        model_path=models.face,
        input_size=(crop_size, crop_size),
        confidence_threshold=FACE_CONFIDENCE,
        intra_op_num_threads=1,
    )
    face.detect(images[0][:crop_size, :crop_size])
    crop_times: list[float] = []
    per_frame_crops: list[float] = []
    for image, boxes in zip(images, bodies, strict=True):
        height, width = image.shape[:2]
        frame_total = 0.0
        for x1, y1, x2, y2 in boxes:
            bw, bh = x2 - x1, y2 - y1
            left, right = int(max(0, x1 - 0.1 * bw)), int(min(width, x2 + 0.1 * bw))
            top, bottom = int(max(0, y1 - 0.1 * bh)), int(min(height, y1 + 0.45 * bh))
            if right - left < 8 or bottom - top < 8:
                continue
            t0 = time.perf_counter()
            face.detect(image[top:bottom, left:right])
            dt = time.perf_counter() - t0
            crop_times.append(dt)
            frame_total += dt
        per_frame_crops.append(frame_total)
    result[f"retinaface_crop_{crop_size}"] = ms(crop_times)
    result[f"retinaface_crops_per_frame_{crop_size}"] = ms(per_frame_crops)
    result["persons_per_frame"] = round(statistics.fmean(len(b) for b in bodies), 2) if bodies else 0
    return result


# ----------------------------------------------------------------------------------------------- main


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


class Config(NamedTuple):
    stride: int
    object_size: tuple[int, int]
    face_size: tuple[int, int]
    threads: int | None
    workers: int
    rate: float
    dedup: bool
    trim: bool
    object_model: str


def configs(args: argparse.Namespace) -> Iterator[Config]:
    lists = [args.stride, args.object_size, args.face_size, args.threads, args.workers, args.rate, args.dedup,
             args.trim, args.object_model]
    count = max(len(x) for x in lists)
    names = ("--stride", "--object-size", "--face-size", "--threads", "--workers", "--rate", "--dedup", "--trim",
             "--object-model")
    for name, values in zip(names, lists, strict=True):
        if len(values) not in (1, count):
            raise SystemExit(f"{name} needs 1 or {count} values")
    for i in range(count):
        yield Config(
            args.stride[i if len(args.stride) > 1 else 0],
            parse_size(args.object_size[i if len(args.object_size) > 1 else 0]),
            parse_size(args.face_size[i if len(args.face_size) > 1 else 0]),
            _threads(args.threads[i if len(args.threads) > 1 else 0]),
            args.workers[i if len(args.workers) > 1 else 0],
            args.rate[i if len(args.rate) > 1 else 0],
            bool(args.dedup[i if len(args.dedup) > 1 else 0]),
            bool(args.trim[i if len(args.trim) > 1 else 0]),
            args.object_model[i if len(args.object_model) > 1 else 0],
        )


def object_model_path(models_dir: Path, name: str) -> Path:
    """--object-model's value -> the YOLO file: fp32 and int8 name the prepared ones, anything else is a path."""
    return {"fp32": models_dir / "yolov8n.onnx", "int8": models_dir / "yolov8n_int8.onnx"}.get(name, Path(name))


def _threads(text: str) -> int | None:
    return None if text == "default" else int(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", nargs="+", default=DEFAULT_VIDEOS, help="paths, or opencv-doc sample names (vtest)")
    default_models = REPO / "var" / "models"
    if not (default_models / "yolov8n.onnx").is_file():
        default_models = Path("/tmp/bench-models")
    parser.add_argument(
        "--models-dir",
        default=str(default_models),
        help="holds yolov8n.onnx and retinaface_mnet025.onnx (processing.models_prep.prepare)",
    )
    parser.add_argument("--stride", nargs="+", type=int, default=[1], help="detect_stride per configuration")
    parser.add_argument("--object-size", nargs="+", default=["640"], help="YOLO input per configuration: 640, 640x480")
    parser.add_argument("--face-size", nargs="+", default=["640"], help="RetinaFace input per configuration")
    parser.add_argument(
        "--threads",
        nargs="+",
        default=["default"],
        help="pipeline ORT intra_op_num_threads per configuration: 'default' = as the pipeline "
        "configures it (0 = all cores), or a number (the naive loop always uses 1)",
    )
    parser.add_argument(
        "--workers",
        nargs="+",
        type=int,
        default=[1],
        help="pipeline detect_workers per configuration: frames detected at once, one thread each",
    )
    parser.add_argument(
        "--rate", nargs="+", type=float, default=[0.0],
        help="detect_rate per configuration: detections per second of video (0 = every frame on the stride)",
    )
    parser.add_argument(
        "--dedup", nargs="+", type=int, choices=(0, 1), default=[0],
        help="skip_duplicate_frames per configuration (1 = pass over due frames that repeat the last analysed one)",
    )
    parser.add_argument(
        "--trim", nargs="+", type=int, choices=(0, 1), default=[1],
        help="per configuration: 1 = YOLO sees only the rows of its letterboxed input that hold the frame (640x384 "
        "for 16:9 at 640, the service's way), 0 = the whole square letterbox",
    )
    parser.add_argument(
        "--object-model", nargs="+", default=["fp32"],
        help="the pipeline's YOLO per configuration: fp32 (yolov8n.onnx), int8 (yolov8n_int8.onnx, prepare_models "
        "--int8) in --models-dir, or a path; the naive loop always runs fp32",
    )
    parser.add_argument(
        "--min-track-seconds", type=float, default=1.0,
        help="another recall figure counts only naive tracks lasting at least this long (issue 17: 1 s)",
    )
    parser.add_argument("--max-frames", type=int, default=0, help="cut each video to its first N frames (0 = all)")
    parser.add_argument("--profile-frames", type=int, default=20, help="frames for the per-stage profile (0 = skip)")
    parser.add_argument(
        "--bound-frames",
        type=int,
        default=32,
        help="frames for timing YOLO alone at the first configuration's object size, one and two at once (0 = skip)",
    )
    parser.add_argument("--crop-size", type=int, default=160, help="RetinaFace input for upper-body crops")
    parser.add_argument(
        "--min-track-frames",
        type=int,
        default=5,
        help="second recall figure counts only naive tracks of at least this many frames",
    )
    parser.add_argument(
        "--min-track-detections",
        type=int,
        default=3,
        help="third recall figure counts only naive tracks the detector found on at least this many frames "
        "(3 = deep_sort's n_init: a confirmed track)",
    )
    parser.add_argument(
        "--face-min-size",
        type=int,
        default=60,
        help="face filter_min_size in both loops (60 = the face detector's default; bodies and cars: 0)",
    )
    parser.add_argument(
        "--filters",
        choices=("bench", "defaults"),
        default="bench",
        help="bench: every track counts (faces under --face-min-size dropped); defaults: a new archive's size and "
        "quality filters in both loops, so only the tracks the service would post count",
    )
    parser.add_argument("--no-embeddings", action="store_true", help="run the pipeline without its embedders")
    parser.add_argument(
        "--tracker", default="simple_iou", help="the pipeline's tracker_type for every kind (simple_iou, deep_sort)"
    )
    parser.add_argument(
        "--detections-cache",
        default="",
        help="directory of a detection cache (detections by detector settings and image bytes): every run "
        "records into it; see --replay",
    )
    parser.add_argument(
        "--replay",
        choices=("none", "naive", "all"),
        default="none",
        help="with --detections-cache: take the naive loop's detections (naive) or every detection (all) from "
        "the cache where it has them; replayed runs' wall times do not count detection",
    )
    parser.add_argument("--json-out", default="", help="write all numbers here")
    args = parser.parse_args()

    models_dir = Path(args.models_dir)
    # The embedders too, when prepared: the pipeline embeds every posted object, as in production.
    embedders = {
        "face_embedder": models_dir / "facenet.onnx",
        "object_embedder": models_dir / "mobilenetv2_reid.onnx",
    }
    models = ModelPaths(
        face=models_dir / "retinaface_mnet025.onnx",
        objects=models_dir / "yolov8n.onnx",
        **{key: path for key, path in embedders.items() if path.is_file() and not args.no_embeddings},
    )
    for model in (models.face, models.objects):
        if not model.is_file():
            raise SystemExit(f"model missing: {model} (run python -m processing.models_prep.prepare DIR)")
    import onnxruntime

    providers = choose_providers()
    session = get_session(models.objects, intra_op_num_threads=1)
    report: dict[str, Any] = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "loadavg_start": os.getloadavg(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "onnxruntime": {
            "version": onnxruntime.__version__,
            "providers": session.get_providers(),
            "chosen_providers": providers,
            "threads": {"naive": 1, "pipeline": "per run (ort_threads; default = 0 = all cores)", "profile": 1},
        },
        "models": {p.name: {"path": str(p), "sha256": sha256_file(p)} for p in (models.objects, models.face)},
        "max_frames": args.max_frames,
        "face_min_size": args.face_min_size,
        "filters": args.filters,
        "videos": [],
    }
    config_list = list(configs(args))
    object_models = {name: object_model_path(models_dir, name) for name in {c.object_model for c in config_list}}
    for path in object_models.values():
        if not path.is_file():
            raise SystemExit(f"model missing: {path} (int8: python -m processing.models_prep.prepare DIR --int8 "
                             f"--calibration-dir OPENCV_DOC_DATA)")
    report["models"].update({p.name: {"path": str(p), "sha256": sha256_file(p)} for p in object_models.values()})
    filters = detector_filters(args.filters, args.face_min_size)
    global _cache
    if args.detections_cache:
        _cache = DetectionCache(Path(args.detections_cache), replay=args.replay != "none")
    report["tracker"] = args.tracker
    report["replay"] = args.replay
    run_started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for video_arg in args.videos:
            source = resolve_video_spec(video_arg, Path(tmp))
            total_frames, fps, width, height = video_info(source)
            path = source
            if args.max_frames and args.max_frames < total_frames:
                path = cut_video(source, args.max_frames, Path(tmp))
            n_frames = count_frames(path)
            duration = n_frames / fps
            print(
                f"\n== {source.name}: {width}x{height}, {fps:.3f} fps, {n_frames} frames "
                f"({duration:.1f} s of video){' [cut]' if path != source else ''}",
                flush=True,
            )
            entry: dict[str, Any] = {
                "video": str(source),
                "width": width,
                "height": height,
                "fps": fps,
                "frames": n_frames,
                "duration_s": round(duration, 3),
                "runs": [],
            }
            if args.profile_frames > 0:
                entry["profile"] = profile_stages(path, models, args.profile_frames, args.crop_size)
                print(
                    "profile (ms, 1 ORT thread): "
                    + ", ".join(f"{k}={v['mean_ms']}" for k, v in entry["profile"].items() if isinstance(v, dict)),
                    flush=True,
                )

            if args.bound_frames > 0:
                entry["yolo_bound"] = yolo_bound(path, models, config_list[0].object_size, fps, args.bound_frames)
                print(
                    "YOLO alone at the pipeline's input: "
                    + ", ".join(f"{k}={v}" for k, v in entry["yolo_bound"].items()),
                    flush=True,
                )

            naive = naive_loop(path, models, fps, filters)
            if _cache is not None and args.replay == "naive":
                _cache.replay = False  # the pipeline's detectors run for real
            naive_counts = {k: len(v) for k, v in naive["tracks"].items()}
            entry["naive"] = {
                "wall_s": round(naive["wall_s"], 3),
                "fps": round(naive["frames"] / naive["wall_s"], 2),
                "x_realtime": round(duration / naive["wall_s"], 3),
                "stages": naive["stages"],
                "tracks": naive_counts,
            }
            # One row per run: (label, wall, fps, xRT, speedup, p50, p95, track counts, recall figures or None).
            rows: list[tuple[str, float, float, float, float, Any, Any, dict[str, int], dict[str, Any] | None]] = [
                (
                    "naive 640/640 1thr",
                    naive["wall_s"],
                    naive["frames"] / naive["wall_s"],
                    duration / naive["wall_s"],
                    1.0,
                    naive["stages"]["frame"]["p50_ms"],
                    naive["stages"]["frame"]["p95_ms"],
                    naive_counts,
                    None,
                )
            ]
            print(f"naive: {naive['wall_s']:.1f} s, tracks {naive_counts}", flush=True)
            long_key = f"recall_tracks_ge_{args.min_track_frames}_frames"
            confirmed_key = f"recall_tracks_ge_{args.min_track_detections}_detections"
            seconds_frames = max(1, round(args.min_track_seconds * fps))
            seconds_key = f"recall_tracks_ge_{args.min_track_seconds:g}s"
            for stride, object_size, face_size, threads, workers, rate, dedup, trim, object_model in config_list:
                run_models = dataclasses.replace(models, objects=object_models[object_model])
                run = pipeline_run(
                    path, run_models, stride, object_size, face_size, threads, workers, filters, args.tracker,
                    rate=rate, skip_duplicates=dedup, trim=trim,
                )
                recalls = {
                    "recall": track_recall(naive["tracks"], run["tracks"]),
                    seconds_key: track_recall(naive["tracks"], run["tracks"], min_frames=seconds_frames),
                    f"covered_tracks_ge_{args.min_track_seconds:g}s": track_recall(
                        naive["tracks"], run["tracks"], min_frames=seconds_frames, match=covered),
                    long_key: track_recall(naive["tracks"], run["tracks"], min_frames=args.min_track_frames),
                    confirmed_key: track_recall(
                        naive["tracks"], run["tracks"], min_detections=args.min_track_detections
                    ),
                    "coverage_recall": track_recall(naive["tracks"], run["tracks"], match=covered),
                    "fragmentation": track_fragmentation(naive["tracks"], run["tracks"]),
                }
                counts = {k: len(v) for k, v in run["tracks"].items()}
                label = (
                    f"s{stride} r{rate:g}{' dup' if dedup else ''} obj{size_text(object_size)}"
                    f"{'' if trim else 'sq'} face{size_text(face_size)} "
                    f"{'thr=dflt' if threads is None else f'thr={threads}'} w={workers}"
                    f"{'' if object_model == 'fp32' else f' {object_model}'}"
                )
                entry["runs"].append(
                    {
                        "stride": stride,
                        "object_size": list(object_size),
                        "face_size": list(face_size),
                        "ort_threads": "default" if threads is None else threads,
                        "detect_workers": workers,
                        "detect_rate": rate,
                        "skip_duplicate_frames": dedup,
                        "trim_padding": trim,
                        "object_model": object_models[object_model].name,
                        "frames_analysed": run["analysed"],
                        "wall_s": round(run["wall_s"], 3),
                        "fps": round(run["frames"] / run["wall_s"], 2),
                        "x_realtime": round(duration / run["wall_s"], 3),
                        "speedup_vs_naive": round(naive["wall_s"] / run["wall_s"], 3),
                        "per_frame": run["per_frame"],
                        "per_detect_frame": run["per_detect_frame"],
                        "tracks": counts,
                        "posted": run["posted"],
                        **recalls,
                    }
                )
                rows.append(
                    (
                        label,
                        run["wall_s"],
                        run["frames"] / run["wall_s"],
                        duration / run["wall_s"],
                        naive["wall_s"] / run["wall_s"],
                        run["per_frame"]["p50_ms"],
                        run["per_frame"]["p95_ms"],
                        counts,
                        recalls,
                    )
                )
                print(f"{label}: {run['wall_s']:.1f} s, recall {recalls['recall']['overall']['recall']}", flush=True)
            if _cache is not None:
                _cache.replay = args.replay != "none"
                _cache.save()
            columns = {  # the overall figures printed after the per-kind recall, by their key in `recalls`
                seconds_key: f">={args.min_track_seconds:g}s",
                f"covered_tracks_ge_{args.min_track_seconds:g}s": f"cov>={args.min_track_seconds:g}s",
                long_key: f">={args.min_track_frames}fr",
                confirmed_key: f">={args.min_track_detections}det",
                "coverage_recall": "covered",
            }
            fragment_columns = ("frag", "trk/naive", "IDsw", "merging")
            header = (
                f"{'run':<48} {'wall s':>7} {'fps':>6} {'xRT':>5} {'speedup':>7} {'p50 ms':>7} {'p95 ms':>7} "
                f"{'tracks f/b/c':>13} {'recall f/b/c/all':>24} " + " ".join(f"{name:>8}" for name in columns.values())
                + " " + " ".join(f"{name:>9}" for name in fragment_columns)
            )
            print(header)
            print("-" * len(header))
            for label, wall, fps_run, xrt, speed, p50, p95, counts, figures in rows:
                tracks_text = "/".join(str(counts[k]) for k in KINDS)
                if figures is None:
                    recall_text, others = "(reference)", ["-"] * len(columns)
                    fragments = ["-"] * len(fragment_columns)
                else:
                    recall_text = "/".join(fmt(figures["recall"][k]["recall"]) for k in (*KINDS, "overall"))
                    others = [fmt(figures[key]["overall"]["recall"]) for key in columns]
                    cut = figures["fragmentation"]["overall"]
                    fragments = [fmt(cut["fragmented_share"]), fmt(cut["tracks_per_matched"]),
                                 str(cut["id_switches"]), str(cut["merging"])]
                print(
                    f"{label:<48} {wall:>7.1f} {fps_run:>6.2f} {xrt:>5.2f} {speed:>7.2f} {fmt(p50, 1):>7} "
                    f"{fmt(p95, 1):>7} {tracks_text:>13} {recall_text:>24} " + " ".join(f"{v:>8}" for v in others)
                    + " " + " ".join(f"{v:>9}" for v in fragments)
                )
            report["videos"].append(entry)
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["total_run_s"] = round(time.perf_counter() - run_started, 1)
    print(
        f"\ntotal {report['total_run_s']} s; ORT {onnxruntime.__version__} {session.get_providers()}; "
        f"load {report['machine']['loadavg_start']} -> {report['machine']['loadavg_end']}"
    )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
