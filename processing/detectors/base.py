"""The ``Detector`` protocol and the registry that builds detectors from settings by name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from processing.detections import Detections
from processing.registry import Registry


@runtime_checkable
class Detector(Protocol):
    """Finds objects in BGR frames (OpenCV's channel order, as decoders hand them out).

    Attributes:
        input_size: ``(width, height)`` the network runs at; frames of other sizes are
            letterboxed into it and results are mapped back to frame pixels.
        class_names: names of the ``class_id`` values this detector emits.
    """

    input_size: tuple[int, int]
    class_names: tuple[str, ...]

    def detect(self, frame_bgr: npt.NDArray[np.uint8]) -> Detections:
        """Detections for one ``(H, W, 3)`` uint8 BGR frame, boxes in that frame's pixels."""
        ...

    def detect_batch(self, frames_bgr: Sequence[npt.NDArray[np.uint8]]) -> list[Detections]:
        """One ``Detections`` per frame, same order; frames may differ in size."""
        ...


_detectors: Registry[Detector] = Registry("detector")

#: Class decorator: make ``create_detector(name, ...)`` build this detector.
register_detector = _detectors.register
#: Build the detector registered as ``name``; settings go to its constructor.
create_detector = _detectors.create
#: Registered detector names, sorted.
available_detectors = _detectors.names
