"""Typed container for per-frame detections plus the box maths shared by detectors and trackers.

Modelled on ``supervision.Detections`` (roboflow/supervision) but immutable: every array is
copied on construction and marked read-only, so a ``Detections`` can be passed between the
detector, the tracker and storage code without anyone mutating someone else's data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

# Anything NumPy can index rows with: an int, a slice, an int array/list or a boolean mask.
RowIndex: TypeAlias = int | np.integer | slice | Sequence[int] | Sequence[bool] | npt.NDArray[Any]


def _frozen(array: npt.ArrayLike, dtype: npt.DTypeLike | None = None) -> npt.NDArray[Any]:
    # Copy so callers keep ownership of what they passed in; read-only so nobody downstream can
    # change a Detections in place (that would silently corrupt tracks holding the same rows).
    result = np.array(array, dtype=dtype, copy=True)
    result.flags.writeable = False
    return result


@dataclass(frozen=True, eq=False)
class Detections:
    """Detections of one frame, one row per object.

    Attributes:
        xyxy: ``(N, 4)`` float32, ``x1, y1, x2, y2`` in pixels of the original frame.
        confidence: ``(N,)`` float32 detector scores in ``[0, 1]``.
        class_id: ``(N,)`` int64 class index of the detector that made the rows (0 = face for
            RetinaFace).
        tracker_id: ``(N,)`` int64 track ids, or ``None`` before tracking.
        data: per-row extras, each an array whose first axis has length ``N``, e.g.
            ``data["landmarks"]`` ``(N, 5, 2)`` float32 or ``data["embedding"]`` ``(N, D)``.

    All arrays are private read-only copies; use the ``with_*`` methods to derive new objects.
    """

    xyxy: npt.NDArray[np.float32]
    confidence: npt.NDArray[np.float32]
    class_id: npt.NDArray[np.int64]
    tracker_id: npt.NDArray[np.int64] | None = None
    data: Mapping[str, npt.NDArray[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        xyxy = _frozen(self.xyxy, np.float32)
        if xyxy.size == 0:
            xyxy = _frozen(xyxy.reshape(0, 4))  # accept [] / np.empty(0) for "no rows"
        if xyxy.ndim != 2 or xyxy.shape[1] != 4:
            raise ValueError(f"xyxy must have shape (N, 4), got {xyxy.shape}")
        n = xyxy.shape[0]

        def column(name: str, value: npt.ArrayLike, dtype: npt.DTypeLike) -> npt.NDArray[Any]:
            array = _frozen(value, dtype)
            if array.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {array.shape}")
            return array

        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "confidence", column("confidence", self.confidence, np.float32))
        object.__setattr__(self, "class_id", column("class_id", self.class_id, np.int64))
        if self.tracker_id is not None:
            object.__setattr__(self, "tracker_id", column("tracker_id", self.tracker_id, np.int64))

        data: dict[str, npt.NDArray[Any]] = {}
        for key, value in dict(self.data).items():
            array = _frozen(value)
            if array.ndim == 0 or array.shape[0] != n:
                raise ValueError(f"data[{key!r}] must have {n} rows, got shape {array.shape}")
            data[key] = array
        object.__setattr__(self, "data", data)

    @classmethod
    def empty(cls) -> Detections:
        """A ``Detections`` with zero rows and no tracker ids or data."""
        return cls(
            xyxy=np.empty((0, 4), np.float32),
            confidence=np.empty(0, np.float32),
            class_id=np.empty(0, np.int64),
        )

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def __getitem__(self, index: RowIndex) -> Detections:
        """Select rows; an integer gives a one-row ``Detections`` so the type never changes."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        elif not isinstance(index, slice):
            index = np.asarray(index)
            if index.dtype == bool and index.shape != (len(self),):
                raise IndexError(f"boolean mask must have shape ({len(self)},), got {index.shape}")
        return Detections(
            xyxy=self.xyxy[index],
            confidence=self.confidence[index],
            class_id=self.class_id[index],
            tracker_id=None if self.tracker_id is None else self.tracker_id[index],
            data={key: value[index] for key, value in self.data.items()},
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Detections):
            return NotImplemented
        if (self.tracker_id is None) != (other.tracker_id is None) or self.data.keys() != other.data.keys():
            return False
        pairs: list[tuple[npt.NDArray[Any], npt.NDArray[Any]]] = [
            (self.xyxy, other.xyxy),
            (self.confidence, other.confidence),
            (self.class_id, other.class_id),
            *((self.data[key], other.data[key]) for key in self.data),
        ]
        if self.tracker_id is not None and other.tracker_id is not None:
            pairs.append((self.tracker_id, other.tracker_id))
        return all(np.array_equal(a, b) for a, b in pairs)

    __hash__ = None  # type: ignore[assignment]  # mutable-looking arrays: equality, not identity

    @classmethod
    def merge(cls, detections_list: Iterable[Detections]) -> Detections:
        """Concatenate rows, e.g. several detectors on one frame or one track's frames.

        Empty inputs are ignored.  The remaining items must agree on having tracker ids and on
        their ``data`` keys: silently dropping a column would lose landmarks or embeddings.
        """
        items = [item for item in detections_list if len(item) > 0]
        if not items:
            return cls.empty()
        has_tracker = {item.tracker_id is not None for item in items}
        if len(has_tracker) > 1:
            raise ValueError("cannot merge Detections with and without tracker_id")
        keys = {frozenset(item.data) for item in items}
        if len(keys) > 1:
            raise ValueError(f"cannot merge Detections with different data keys: {sorted(map(sorted, keys))}")
        return cls(
            xyxy=np.concatenate([item.xyxy for item in items]),
            confidence=np.concatenate([item.confidence for item in items]),
            class_id=np.concatenate([item.class_id for item in items]),
            tracker_id=(
                np.concatenate([item.tracker_id for item in items if item.tracker_id is not None])
                if has_tracker == {True}
                else None
            ),
            data={key: np.concatenate([item.data[key] for item in items]) for key in items[0].data},
        )

    @property
    def area(self) -> npt.NDArray[np.float32]:
        """``(N,)`` float32 box areas in pixels²; degenerate (inverted) boxes count as 0."""
        return box_area(self.xyxy)

    def with_tracker_id(self, tracker_id: npt.ArrayLike | None) -> Detections:
        """A copy with ``tracker_id`` replaced (``(N,)`` ints, or ``None`` to drop it)."""
        return Detections(self.xyxy, self.confidence, self.class_id,
                          None if tracker_id is None else np.asarray(tracker_id), self.data)

    def with_data(self, **arrays: npt.ArrayLike) -> Detections:
        """A copy with extra or replaced ``data`` columns, e.g. ``with_data(embedding=e)``."""
        columns = {name: np.asarray(array) for name, array in arrays.items()}
        return Detections(self.xyxy, self.confidence, self.class_id, self.tracker_id, {**self.data, **columns})


def box_area(xyxy: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Areas of ``(N, 4)`` xyxy boxes as ``(N,)`` float32; inverted boxes give 0."""
    boxes = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def box_iou_batch(boxes_a: npt.ArrayLike, boxes_b: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Pairwise IoU of ``(N, 4)`` and ``(M, 4)`` xyxy boxes as an ``(N, M)`` float32 matrix.

    Pairs whose union is empty (two zero-area boxes) get IoU 0 rather than NaN.
    """
    a = np.asarray(boxes_a, dtype=np.float32).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float32).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou.astype(np.float32)


def non_max_suppression(xyxy: npt.ArrayLike, scores: npt.ArrayLike, iou_threshold: float) -> npt.NDArray[np.int64]:
    """Greedy NMS: indices of the kept boxes, highest score first.

    A box is dropped when its IoU with an already kept, higher-scoring box is above
    ``iou_threshold``.  Lower thresholds remove more duplicates but also merge faces that
    genuinely overlap (crowds); 0.4 is RetinaFace's published setting.
    """
    boxes = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float32), kind="stable")
    areas = box_area(boxes)
    keep: list[int] = []
    while order.size > 0:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        top_left = np.maximum(boxes[best, :2], boxes[rest, :2])
        bottom_right = np.minimum(boxes[best, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
        union = areas[best] + areas[rest] - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, inter / union, 0.0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)
