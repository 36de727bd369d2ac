"""The ``Detector`` protocol and the registry that builds detectors from settings by name."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import numpy.typing as npt

from processing.detections import Detections


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


DetectorFactory = Callable[..., Detector]
F = TypeVar("F", bound=DetectorFactory)

_registry: dict[str, DetectorFactory] = {}


def register_detector(name: str) -> Callable[[F], F]:
    """Class decorator: make ``create_detector(name, ...)`` build this detector."""

    def decorator(factory: F) -> F:
        existing = _registry.get(name)
        if existing is not None and existing is not factory:
            raise ValueError(f"detector {name!r} is already registered to {existing!r}")
        _registry[name] = factory
        return factory

    return decorator


def create_detector(name: str, **settings: Any) -> Detector:
    """Build the detector registered as ``name``; ``settings`` go to its constructor."""
    try:
        factory = _registry[name]
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; known: {sorted(_registry)}") from None
    return factory(**settings)


def available_detectors() -> list[str]:
    """Registered detector names, sorted."""
    return sorted(_registry)
