"""The detection stage: the detectors of a run, and frames in flight through them. No Django here.

`FrameDetection` is the stage's interface: frames go in with `push`, detected frames come out in the same
order, from `push` (when a frame's turn has come) or at the end from `drain`. `ThreadedDetection` detects
`detect_workers` frames at once, each on its own thread (onnxruntime releases the GIL; frame-level parallelism
used cores better than threads inside one inference). A GPU stage that batches frames across the stream would
push into a batch and hand back the whole batch once it is full: the run around it stays the same.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from processing.config import PipelineSettings
from processing.detections import Detections, non_max_suppression
from processing.detectors import create_detector
from processing.pipeline.sampler import SampledFrame


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


class Detectors:
    """The run's detectors: RetinaFace for faces (on the frame, or on upper-body crops), YOLOv8 for the rest."""

    def __init__(self, settings: PipelineSettings) -> None:
        self.face: Any = None
        self.objects: Any = None
        self.crop_faces: Any = None
        if "face" in settings.detectors:
            self.face = create_detector(
                "retinaface", model_path=settings.models.face, input_size=settings.face_input_size,
                confidence_threshold=settings.face_confidence, intra_op_num_threads=settings.ort_threads,
            )
        if self.face is not None and "body" in settings.detectors and settings.face_search == "bodies":
            side = settings.face_crop_size
            self.crop_faces = create_detector(
                "retinaface", model_path=settings.models.face, input_size=(side, side),
                confidence_threshold=settings.face_confidence, intra_op_num_threads=settings.ort_threads,
            )
        if "body" in settings.detectors or "car" in settings.detectors:
            self.objects = create_detector(
                "yolov8", model_path=settings.models.objects, input_size=settings.object_input_size,
                confidence_threshold=settings.object_confidence, intra_op_num_threads=settings.ort_threads,
            )
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
