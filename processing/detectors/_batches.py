"""Frames' input tensors run through one ONNX session in batches: grouped by shape, padded, optionally bound.

Shared by the detectors' ``detect_batch``.  A batch is cut from tensors of one shape only (a YOLO input trimmed
to a frame's aspect differs between videos of different shapes), so frames of mixed sizes still batch with
their own kind.  A static-shape model (its input's batch dimension fixed at export) gets exactly that many
frames a call: one at a time for a batch of 1, a partial batch padded up to it otherwise.  With ``pad`` (the
CUDA default) a partial batch of a dynamic model is padded to the next power of two.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import numpy as np
import numpy.typing as npt

from processing.onnx_runtime import fixed_batch, run_batch

if TYPE_CHECKING:
    import onnxruntime

Tensor = npt.NDArray[np.float32]


def padded_size(count: int, batch_size: int) -> int:
    """A partial batch of ``count`` padded to the next power of two, at most ``batch_size``: batch shapes are
    1, 2, 4, ... and ``batch_size``, and a padded call never costs twice the frames it carries."""
    return min(batch_size, 1 << max(0, count - 1).bit_length())


def run_in_batches(
    session: onnxruntime.InferenceSession,
    input_name: str,
    output_names: Sequence[str],
    tensors: Sequence[Tensor],
    *,
    batch_size: int,
    pad: bool,
    io_binding: bool,
) -> list[list[Tensor]]:
    """Each ``(3, H, W)`` tensor's outputs, in order: per tensor, one ``(1, ...)`` slice of every output.

    Args:
        batch_size: tensors per ORT call (a static model's own batch size wins).
        pad: fill a partial batch with zero tensors (their outputs are dropped) up to :func:`padded_size`: the
            session then sees a few input shapes only, which CUDA's per-shape kernel choices and memory arena like.
        io_binding: see :func:`processing.onnx_runtime.run_batch`.
    """
    fixed = fixed_batch(session, input_name)
    if fixed is not None:
        batch_size = fixed
    batch_size = max(1, batch_size)
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, tensor in enumerate(tensors):
        groups.setdefault(tuple(tensor.shape), []).append(index)
    results: list[list[Tensor] | None] = [None] * len(tensors)
    for shape, indices in groups.items():
        for start in range(0, len(indices), batch_size):
            part = indices[start : start + batch_size]
            batch = np.stack([tensors[index] for index in part])
            target = batch_size if fixed is not None else padded_size(len(part), batch_size) if pad else len(part)
            if target > len(part):
                filler = np.zeros((target - len(part), *shape), dtype=batch.dtype)
                batch = np.concatenate([batch, filler])
            outputs = cast("list[Tensor]", run_batch(session, input_name, output_names, batch, io_binding=io_binding))
            for row, index in enumerate(part):
                results[index] = [output[row : row + 1] for output in outputs]
    return cast("list[list[Tensor]]", results)
