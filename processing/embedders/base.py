"""The ``Embedder`` protocol, the ONNX crop embedder both models share, and the registry by name."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from processing.onnx_runtime import get_session
from processing.registry import Registry


@runtime_checkable
class Embedder(Protocol):
    """Turns object boxes of a BGR frame into L2-normalised float32 vectors of ``dim`` values."""

    dim: int

    def embed(self, frame_bgr: npt.NDArray[np.uint8], boxes: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """``(N, dim)`` unit rows for ``(N, 4)`` xyxy boxes in ``frame_bgr``'s pixels (``(0, dim)`` for none)."""
        ...


class OnnxCropEmbedder:
    """An ONNX model run over crops of the boxes, ``max_batch_size`` at a time, its rows L2-normalised.

    Subclasses set ``dim`` and ``input_name`` and turn boxes of a frame into the model's input in :meth:`batch`.
    """

    dim: int
    input_name: str

    def __init__(self, model_path: str | os.PathLike[str], *, max_batch_size: int = 16,
                 providers: Sequence[str] | None = None, intra_op_num_threads: int = 0) -> None:
        self.model_path = Path(model_path)
        self.max_batch_size = max(1, int(max_batch_size))
        self.providers = providers
        self.intra_op_num_threads = intra_op_num_threads

    def batch(self, frame_bgr: npt.NDArray[np.uint8], boxes: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        raise NotImplementedError

    def embed(self, frame_bgr: npt.NDArray[np.uint8], boxes: npt.ArrayLike) -> npt.NDArray[np.float32]:
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        if len(boxes) == 0:
            return np.zeros((0, self.dim), np.float32)
        session = get_session(self.model_path, providers=self.providers,
                              intra_op_num_threads=self.intra_op_num_threads)
        out = [
            session.run(None, {self.input_name: self.batch(frame_bgr, boxes[start:start + self.max_batch_size])})[0]
            for start in range(0, len(boxes), self.max_batch_size)
        ]
        return l2_normalise(np.concatenate(out))


def l2_normalise(vectors: npt.ArrayLike) -> npt.NDArray[np.float32]:
    array = np.asarray(vectors, dtype=np.float32)
    rows = array.reshape(len(array), -1)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return (rows / np.maximum(norms, 1e-12)).astype(np.float32)


def crop_box(frame: npt.NDArray[np.uint8], box: npt.ArrayLike, margin: float = 0.0,
             square: bool = False) -> npt.NDArray[np.uint8]:
    """The box (grown by ``margin`` of its size on each side, squared around its centre when asked), clipped to
    the frame; a box that falls outside gives a 2x2 black patch instead of an empty array."""
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box).reshape(4))
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
