"""Per-frame helpers: orientation transforms, motion measure, object filters and quality. No Django here."""

from __future__ import annotations

from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

from processing.config import DetectorConfig
from processing.detections import Detections

_TRANSFORMS = {
    "": None,
    "FlipHorizontal": lambda f: cv2.flip(f, 1),
    "FlipVertical": lambda f: cv2.flip(f, 0),
    "Rotate90": lambda f: cv2.rotate(f, cv2.ROTATE_90_CLOCKWISE),
    "Rotate180": lambda f: cv2.rotate(f, cv2.ROTATE_180),
    "Rotate270": lambda f: cv2.rotate(f, cv2.ROTATE_90_COUNTERCLOCKWISE),
    "Transpose": lambda f: cv2.transpose(f),
    "Transverse": lambda f: cv2.flip(cv2.transpose(f), -1),
}


def apply_transform(frame: npt.NDArray[np.uint8], name: str) -> npt.NDArray[np.uint8]:
    """`video_transform` of stream_settings (FFmpeg's names), applied before anything else."""
    transform = _TRANSFORMS[name]
    return frame if transform is None else cast("npt.NDArray[np.uint8]", transform(frame))


class MotionMeter:
    """Mean absolute difference (0..255) between a frame and the last frame that was analysed.

    Frames are compared at 64 px width in gray, so the measure costs well under a millisecond and ignores
    sensor noise that a full-resolution difference would count as motion.
    """

    def __init__(self) -> None:
        self._previous: npt.NDArray[np.int16] | None = None
        self._measured: npt.NDArray[np.int16] | None = None

    def measure(self, frame: npt.NDArray[np.uint8]) -> float:
        height, width = frame.shape[:2]
        small = cv2.resize(frame, (64, max(1, round(64 * height / width))), interpolation=cv2.INTER_AREA)
        self._measured = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.int16)
        if self._previous is None or self._previous.shape != self._measured.shape:
            return float("inf")
        return float(np.abs(self._measured - self._previous).mean())

    def accept(self) -> None:
        """The frame last measured becomes the one the next frames are compared with (it is being analysed)."""
        self._previous = self._measured


class DuplicateMeter:
    """Whether a frame shows what the last analysed frame showed: a repeated or telecined frame, or a still scene.

    Both are compared in gray at 160 px wide (averaging away codec noise and film grain): a frame is a duplicate
    when fewer than `share` of the small copy's pixels differ by more than `level` gray levels. A walker 20 px
    tall in a 640 px frame still changes about 0.3% of them between two frames; re-encoded repeats change none.
    """

    WIDTH = 160

    def __init__(self, *, level: int = 12, share: float = 0.0005) -> None:
        self.level = level
        self.share = share
        self._previous: npt.NDArray[np.int16] | None = None
        self._measured: npt.NDArray[np.int16] | None = None

    def changed_share(self, frame: npt.NDArray[np.uint8]) -> float:
        """The share of pixels that differ from the last accepted frame (1.0 when there is none to compare)."""
        height, width = frame.shape[:2]
        small = cv2.resize(frame, (self.WIDTH, max(1, round(self.WIDTH * height / width))),
                           interpolation=cv2.INTER_AREA)
        self._measured = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.int16)
        if self._previous is None or self._previous.shape != self._measured.shape:
            return 1.0
        return float(np.count_nonzero(np.abs(self._measured - self._previous) > self.level)) / self._measured.size

    def is_duplicate(self, frame: npt.NDArray[np.uint8]) -> bool:
        return self.changed_share(frame) < self.share

    def accept(self) -> None:
        """The frame last measured becomes the one the next frames are compared with (it is being analysed)."""
        self._previous = self._measured


def object_quality(detections: Detections, frame_shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
    """Quality in 0..1 per object: the detector's confidence, times 0.8 when the box touches the frame edge.

    An object cut by the frame border is a worse picture of it even when the detector is sure, so a track's
    best frame prefers the object fully in view. `filter_min_quality` compares against this number.
    """
    if len(detections) == 0:
        return np.zeros(0, np.float32)
    height, width = frame_shape[:2]
    box = detections.xyxy
    touches = (box[:, 0] <= 1) | (box[:, 1] <= 1) | (box[:, 2] >= width - 1) | (box[:, 3] >= height - 1)
    return (detections.confidence * np.where(touches, 0.8, 1.0)).astype(np.float32)


def geometry_mask(detections: Detections, config: DetectorConfig) -> npt.NDArray[np.bool_]:
    """Rows that pass `roi` (box centre inside it) and `filter_min_size`/`filter_max_size` (the box's larger side)."""
    if len(detections) == 0:
        return np.zeros(0, bool)
    box = detections.xyxy
    side = np.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1])
    keep = (side >= config.filter_min_size) & (side <= config.filter_max_size)
    if config.roi is not None:
        cx = (box[:, 0] + box[:, 2]) / 2
        cy = (box[:, 1] + box[:, 3]) / 2
        roi = config.roi
        keep &= (cx >= roi.x) & (cx < roi.x + roi.width) & (cy >= roi.y) & (cy < roi.y + roi.height)
    return keep
