"""The detection stage: the detectors of a run, and frames in flight through them. No Django here.

`FrameDetection` is the stage's interface: frames go in with `push`, detected frames come out in the same
order, from `push` (when a frame's turn has come) or at the end from `drain`. `ThreadedDetection` detects
`detect_workers` frames at once, each on its own thread (onnxruntime releases the GIL; frame-level parallelism
used cores better than threads inside one inference). `BatchedDetection` (settings `detect_batch` > 1, the
default on CUDA) collects `detect_batch` frames and detects them in one call per model, up to `detect_workers`
batches in flight on threads while the next one fills; the detectors' calls go through the process's shared
batchers (processing.batching), so pipelines running side by side in one process (a GPU host's chunks) share
batches too. Either way frames come out in frame order, and the run around the stage stays the same.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from processing.batching import SharedBatches, shared_batches
from processing.config import PipelineSettings
from processing.detections import Detections, non_max_suppression
from processing.detectors import create_detector
from processing.pipeline.sampler import SampledFrame

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectedFrame:
    sampled: SampledFrame
    found: dict[str, Detections]  # by object kind ("face", "body", "car")


class FrameDetection(Protocol):
    def push(self, sampled: SampledFrame) -> list[DetectedFrame]:
        """Start detecting `sampled`; returns the frames whose detection is done, oldest first (maybe none)."""
        ...

    def drain(self) -> Iterator[DetectedFrame]:
        """The frames still in flight, in order, as each is done."""
        ...

    def close(self) -> None:
        """Cancel what is in flight and free the threads."""
        ...


def resolve_detect_batch(detect_batch: int, settings: PipelineSettings | None = None) -> int:
    """`detect_batch` as set, or for 0 ("auto") DEFAULT_GPU_BATCH when the run's detectors run on CUDA, else 1.

    With `settings`, "on CUDA" is what the session of the run's first model really got (the process's cached
    session, the one its detector then uses): onnxruntime-gpu on a host whose CUDA cannot start falls back to
    the CPU, where batches bring nothing. Without, it is what onnxruntime offers.
    """
    if detect_batch > 0:
        return detect_batch
    from processing.onnx_runtime import DEFAULT_GPU_BATCH, auto_batch_size, get_session, on_cuda

    if settings is None:
        return auto_batch_size()
    model = None
    if "body" in settings.detectors or "car" in settings.detectors:
        model = settings.models.objects
    elif "face" in settings.detectors:
        model = settings.models.face
    if model is None or not Path(model).is_file():
        return auto_batch_size()
    return DEFAULT_GPU_BATCH if on_cuda(get_session(model, intra_op_num_threads=settings.ort_threads)) else 1


# Crops searched for faces per frame batch: many small inputs, so several frames' heads go in one call.
CROPS_PER_FRAME = 4
# A detector call carries up to this many batches: of the pipelines of the process (a GPU host's chunks), or
# a pipeline's own batches in flight at once.
BATCHES_PER_CALL = 4


class SharedDetector:
    """A detector whose `detect_batch` calls go through the process's batcher for its configuration."""

    def __init__(self, detector: Any, max_batch: int, max_wait: float) -> None:
        self.detector = detector
        self.class_names = detector.class_names
        key = f"{type(detector).__module__}.{type(detector).__qualname__}:{sorted(vars(detector).items())!r}"
        self.batches: SharedBatches[np.ndarray, Detections] = shared_batches(
            key, detector.detect_batch, max_batch=max_batch, max_wait=max_wait, label=repr(detector))

    def detect(self, image: np.ndarray) -> Detections:
        return self.detect_batch([image])[0]

    def detect_batch(self, images: list[np.ndarray]) -> list[Detections]:
        return self.batches.submit(images)


class Detectors:
    """The run's detectors: RetinaFace for faces (on the frame, or on upper-body crops), YOLOv8 for the rest.

    With `batch` > 1 the stage hands `batch` frames at a time, and every detector is shared with the process's
    other pipelines of the same configuration (see SharedDetector): one call runs up to BATCHES_PER_CALL batches
    (crops: CROPS_PER_FRAME times as many inputs). With 1 they are those of one frame at a time, as they always
    were.
    """

    def __init__(self, settings: PipelineSettings, batch: int = 1) -> None:
        self.face: Any = None
        self.objects: Any = None
        self.crop_faces: Any = None
        self.batch = max(1, batch)
        per_call = self.batch * BATCHES_PER_CALL
        sized = {"max_batch_size": per_call} if self.batch > 1 else {}
        if "face" in settings.detectors:
            self.face = create_detector(
                "retinaface", model_path=settings.models.face, input_size=settings.face_input_size,
                confidence_threshold=settings.face_confidence, intra_op_num_threads=settings.ort_threads, **sized,
            )
        if self.face is not None and "body" in settings.detectors and settings.face_search == "bodies":
            side = settings.face_crop_size
            crops = {"max_batch_size": per_call * CROPS_PER_FRAME} if self.batch > 1 else {}
            self.crop_faces = create_detector(
                "retinaface", model_path=settings.models.face, input_size=(side, side),
                confidence_threshold=settings.face_confidence, intra_op_num_threads=settings.ort_threads, **crops,
            )
        if "body" in settings.detectors or "car" in settings.detectors:
            self.objects = create_detector(
                "yolov8", model_path=settings.models.objects, input_size=settings.object_input_size,
                confidence_threshold=settings.object_confidence, intra_op_num_threads=settings.ort_threads, **sized,
            )
        if self.batch > 1:
            wait = settings.detect_batch_wait
            if self.objects is not None:
                self.objects = SharedDetector(self.objects, per_call, wait)
            if self.crop_faces is not None:
                self.crop_faces = SharedDetector(self.crop_faces, per_call * CROPS_PER_FRAME, wait)
            elif self.face is not None:
                self.face = SharedDetector(self.face, per_call, wait)
        # Faces smaller than the face detector's filter_min_size are dropped anyway: heads that small are not
        # searched.
        self.min_face_side = settings.detectors["face"].filter_min_size if "face" in settings.detectors else 0

    def __call__(self, image: np.ndarray) -> dict[str, Detections]:
        found: dict[str, Detections] = {}
        if self.objects is not None:
            objects = self.objects.detect(image)
            for class_index, name in enumerate(self.objects.class_names):
                found[name] = objects[objects.class_id == class_index]
        if self.crop_faces is not None:
            found["face"] = faces_in_upper_bodies(self.crop_faces, image, found.get("body", Detections.empty()),
                                                  self.min_face_side)
        elif self.face is not None:
            found["face"] = self.face.detect(image)
        return found

    def detect_batch(self, images: list[np.ndarray]) -> list[dict[str, Detections]]:
        """What `__call__` finds in each image, each model run once on all of them (its batches)."""
        found: list[dict[str, Detections]] = [{} for _ in images]
        if self.objects is not None:
            for frame_found, objects in zip(found, self.objects.detect_batch(images), strict=True):
                for class_index, name in enumerate(self.objects.class_names):
                    frame_found[name] = objects[objects.class_id == class_index]
        if self.crop_faces is not None:
            heads = [head_crops(image, frame_found.get("body", Detections.empty()), self.min_face_side)
                     for image, frame_found in zip(images, found, strict=True)]
            faces = self.crop_faces.detect_batch([crop for crops, _ in heads for crop in crops])
            start = 0
            for frame_found, (crops, offsets) in zip(found, heads, strict=True):
                frame_found["face"] = faces_in_crops(offsets, faces[start : start + len(crops)])
                start += len(crops)
        elif self.face is not None:
            for frame_found, faces in zip(found, self.face.detect_batch(images), strict=True):
                frame_found["face"] = faces
        return found

    def shared(self) -> list[SharedBatches[np.ndarray, Detections]]:
        return [detector.batches for detector in (self.objects, self.crop_faces, self.face)
                if isinstance(detector, SharedDetector)]


class ThreadedDetection:
    """Up to `workers` frames detected at once on a thread pool (none with one worker: detected inline)."""

    def __init__(self, detectors: Detectors, workers: int) -> None:
        self.detectors = detectors
        self.workers = max(1, workers)
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="detect") \
            if self.workers > 1 else None
        self._pending: deque[tuple[SampledFrame, Future[dict[str, Detections]] | dict[str, Detections]]] = deque()

    def push(self, sampled: SampledFrame) -> list[DetectedFrame]:
        if self._pool is not None:
            self._pending.append((sampled, self._pool.submit(self.detectors, sampled.image)))
        else:
            self._pending.append((sampled, self.detectors(sampled.image)))
        if len(self._pending) >= self.workers:
            return [self._done(*self._pending.popleft())]
        return []

    def drain(self) -> Iterator[DetectedFrame]:
        while self._pending:
            yield self._done(*self._pending.popleft())

    def close(self) -> None:
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    @staticmethod
    def _done(sampled: SampledFrame, found: Future[dict[str, Detections]] | dict[str, Detections]) -> DetectedFrame:
        return DetectedFrame(sampled, found.result() if isinstance(found, Future) else found)


class BatchedDetection:
    """Frames detected `batch` at a time, up to `workers` batches in flight on threads while the next one fills."""

    def __init__(self, detectors: Detectors, batch: int, workers: int) -> None:
        self.detectors = detectors
        self.batch = max(1, batch)
        self.workers = max(1, workers)
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="detect-batch")
        self._filling: list[SampledFrame] = []
        self._pending: deque[tuple[list[SampledFrame], Future[list[dict[str, Detections]]]]] = deque()
        self._shared = detectors.shared()
        for batcher in self._shared:
            batcher.join()

    def push(self, sampled: SampledFrame) -> list[DetectedFrame]:
        self._filling.append(sampled)
        if len(self._filling) < self.batch:
            return []
        self._submit()
        done: list[DetectedFrame] = []
        # Past `workers` batches in flight the oldest is waited for; any batch already done comes out too.
        while self._pending and (len(self._pending) > self.workers or self._pending[0][1].done()):
            done.extend(self._done(*self._pending.popleft()))
        return done

    def drain(self) -> Iterator[DetectedFrame]:
        if self._filling:
            self._submit()
        while self._pending:
            yield from self._done(*self._pending.popleft())

    def close(self) -> None:
        self._filling.clear()
        self._pending.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)
        for batcher in self._shared:
            batcher.leave()
            logger.info("shared detection batches of process %d, %s", os.getpid(), batcher.describe())
        self._shared = []

    def _submit(self) -> None:
        frames, self._filling = self._filling, []
        self._pending.append((frames, self._pool.submit(self.detectors.detect_batch,
                                                        [sampled.image for sampled in frames])))

    @staticmethod
    def _done(frames: list[SampledFrame], found: Future[list[dict[str, Detections]]]) -> list[DetectedFrame]:
        return [DetectedFrame(sampled, each) for sampled, each in zip(frames, found.result(), strict=True)]


def head_crops(image: np.ndarray, bodies: Detections, min_face_side: int = 0
               ) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """The head-and-shoulders crops of `faces_in_upper_bodies` and their offsets in the image."""
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
    return crops, offsets


def faces_in_crops(offsets: list[tuple[int, int]], found: list[Detections]) -> Detections:
    """The faces found in `head_crops`' crops, in image coordinates, a face found in two crops kept once."""
    parts = []
    for (dx, dy), faces in zip(offsets, found, strict=True):
        if len(faces):
            shift = np.array([dx, dy], np.float32)
            parts.append(Detections(xyxy=faces.xyxy + np.tile(shift, 2), confidence=faces.confidence,
                                    class_id=faces.class_id, data={"landmarks": faces.data["landmarks"] + shift}))
    if not parts:
        return Detections(xyxy=np.empty((0, 4), np.float32), confidence=np.empty(0, np.float32),
                          class_id=np.empty(0, np.int64), data={"landmarks": np.empty((0, 5, 2), np.float32)})
    merged = Detections.merge(parts)
    return merged[non_max_suppression(merged.xyxy, merged.confidence, 0.4)]


def faces_in_upper_bodies(detector: Any, image: np.ndarray, bodies: Detections, min_face_side: int = 0
                          ) -> Detections:
    """Faces found in the head-and-shoulders part of each person box, in frame coordinates.

    Each crop is the upper 45% of the box (or a square of its width, for close-ups), widened by 10% on each side
    (a bowed or turned head leaves the box a little); overlapping persons give overlapping crops, so a face found
    twice is kept once (NMS). A crop whose sides are both under `min_face_side` cannot hold a face that large
    and is not searched: with the default face `filter_min_size` (60) the distant pedestrians of a surveillance
    view cost nothing.
    """
    crops, offsets = head_crops(image, bodies, min_face_side)
    return faces_in_crops(offsets, detector.detect_batch(crops))
