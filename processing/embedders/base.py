"""The ``Embedder`` protocol and its registry by name."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from processing.registry import Registry


@runtime_checkable
class Embedder(Protocol):
    """Turns object boxes of a BGR frame into L2-normalised float32 vectors of ``dim`` values."""

    dim: int

    def embed(self, frame_bgr: npt.NDArray[np.uint8], boxes: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """``(N, dim)`` unit rows for ``(N, 4)`` xyxy boxes in ``frame_bgr``'s pixels (``(0, dim)`` for none)."""
        ...


def l2_normalise(vectors: npt.ArrayLike) -> npt.NDArray[np.float32]:
    rows = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), -1)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return (rows / np.maximum(norms, 1e-12)).astype(np.float32)


def crop_box(frame: npt.NDArray[np.uint8], box: npt.ArrayLike, margin: float = 0.0,
             square: bool = False) -> npt.NDArray[np.uint8]:
    """The box (grown by ``margin`` of its size on each side, squared around its centre when asked), clipped to
    the frame; a box that falls outside gives a 2x2 black patch instead of an empty array."""
    x1, y1, x2, y2 = (float(v) for v in box)
    width, height = x2 - x1, y2 - y1
    if square:
        side = max(width, height)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        x1, x2, y1, y2 = cx - side / 2, cx + side / 2, cy - side / 2, cy + side / 2
        width = height = side
    x1, x2 = x1 - width * margin, x2 + width * margin
    y1, y2 = y1 - height * margin, y2 + height * margin
    frame_height, frame_width = frame.shape[:2]
    left, top = max(0, int(round(x1))), max(0, int(round(y1)))
    right, bottom = min(frame_width, int(round(x2))), min(frame_height, int(round(y2)))
    if right - left < 2 or bottom - top < 2:
        return np.zeros((2, 2, 3), np.uint8)
    return frame[top:bottom, left:right]


_embedders: Registry[Embedder] = Registry("embedder")
register_embedder = _embedders.register
create_embedder = _embedders.create
available_embedders = _embedders.names
