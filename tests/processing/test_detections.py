from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from processing.detections import Detections, box_iou_batch, non_max_suppression


def make(n: int, *, tracker: bool = False, landmarks: bool = True) -> Detections:
    xyxy = np.array([[10 * i, 0, 10 * i + 5, 4] for i in range(n)], dtype=np.float32).reshape(-1, 4)
    return Detections(
        xyxy=xyxy,
        confidence=np.linspace(0.5, 1.0, n, dtype=np.float32),
        class_id=np.arange(n) % 2,
        tracker_id=np.arange(1, n + 1) if tracker else None,
        data={"landmarks": np.arange(n * 10, dtype=np.float32).reshape(n, 5, 2)} if landmarks else {},
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"xyxy": np.zeros((2, 3))}, "xyxy must have shape"),
        ({"xyxy": np.zeros(8)}, "xyxy must have shape"),
        ({"confidence": np.zeros(3)}, "confidence must have shape"),
        ({"class_id": np.zeros((2, 1))}, "class_id must have shape"),
        ({"tracker_id": [1]}, "tracker_id must have shape"),
        ({"data": {"landmarks": np.zeros((3, 5, 2))}}, "data\\['landmarks'\\] must have 2 rows"),
        ({"data": {"flag": np.float32(1)}}, "data\\['flag'\\] must have 2 rows"),
    ],
)
def test_post_init_rejects_bad_shapes(kwargs: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"xyxy": np.zeros((2, 4)), "confidence": np.ones(2), "class_id": np.zeros(2)}
    with pytest.raises(ValueError, match=message):
        Detections(**{**base, **kwargs})


def test_post_init_normalises_dtypes_and_copies() -> None:
    xyxy = np.array([[0, 0, 2, 2]], dtype=np.float64)
    tracker_id = np.array([7], dtype=np.int32)
    landmarks = np.zeros((1, 5, 2), dtype=np.float32)
    detections = Detections(xyxy, [0.9], [0], tracker_id, {"landmarks": landmarks})

    assert detections.xyxy.dtype == np.float32
    assert detections.confidence.dtype == np.float32
    assert detections.class_id.dtype == np.int64
    assert detections.tracker_id is not None and detections.tracker_id.dtype == np.int64
    # Inputs are neither shared nor altered: changing them later must not leak in, and the
    # caller's arrays stay writable.
    landmarks[0, 0, 0] = 99
    xyxy[0, 0] = 99
    assert detections.data["landmarks"][0, 0, 0] == 0 and detections.xyxy[0, 0] == 0
    assert landmarks.flags.writeable and xyxy.flags.writeable


def test_arrays_are_read_only() -> None:
    detections = make(2, tracker=True)
    for array in (detections.xyxy, detections.confidence, detections.class_id, detections.data["landmarks"]):
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 0


def test_empty() -> None:
    empty = Detections.empty()
    assert len(empty) == 0
    assert empty.xyxy.shape == (0, 4) and empty.confidence.shape == (0,)
    assert empty.tracker_id is None and empty.data == {}
    assert empty.area.shape == (0,)
    assert Detections(xyxy=[], confidence=[], class_id=[]) == empty


@pytest.mark.parametrize(
    ("index", "expected_rows"),
    [
        (1, [1]),
        (-1, [3]),
        (np.int64(2), [2]),
        (slice(1, 3), [1, 2]),
        ([3, 0], [3, 0]),
        (np.array([True, False, True, False]), [0, 2]),
        ([False, False, False, False], []),
        (np.array([], dtype=np.int64), []),
    ],
)
def test_getitem_selects_rows_of_every_column(index: Any, expected_rows: list[int]) -> None:
    detections = make(4, tracker=True)
    selected = detections[index]
    assert isinstance(selected, Detections)
    assert len(selected) == len(expected_rows)
    np.testing.assert_array_equal(selected.xyxy, detections.xyxy[expected_rows])
    np.testing.assert_array_equal(selected.confidence, detections.confidence[expected_rows])
    np.testing.assert_array_equal(selected.class_id, detections.class_id[expected_rows])
    assert selected.tracker_id is not None
    np.testing.assert_array_equal(selected.tracker_id, np.arange(1, 5)[expected_rows])
    np.testing.assert_array_equal(selected.data["landmarks"], detections.data["landmarks"][expected_rows])


def test_getitem_rejects_mask_of_wrong_length() -> None:
    with pytest.raises(IndexError):
        make(3)[np.array([True, False])]


@pytest.mark.parametrize(
    ("parts", "expected_len", "has_tracker"),
    [
        ([], 0, False),
        ([Detections.empty(), Detections.empty()], 0, False),
        ([make(2), make(3)], 5, False),
        ([make(2, tracker=True), Detections.empty(), make(1, tracker=True)], 3, True),
    ],
)
def test_merge(parts: list[Detections], expected_len: int, has_tracker: bool) -> None:
    merged = Detections.merge(parts)
    assert len(merged) == expected_len
    assert (merged.tracker_id is not None) == has_tracker
    if expected_len:
        np.testing.assert_array_equal(merged.xyxy, np.concatenate([p.xyxy for p in parts if len(p)]))
        assert merged.data["landmarks"].shape == (expected_len, 5, 2)


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ([make(1, tracker=True), make(1)], "with and without tracker_id"),
        ([make(1), make(1, landmarks=False)], "different data keys"),
    ],
)
def test_merge_rejects_inconsistent_parts(parts: list[Detections], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Detections.merge(parts)


@pytest.mark.parametrize(
    ("xyxy", "expected"),
    [
        ([[0, 0, 10, 5]], [50]),
        ([[2, 2, 2, 9]], [0]),  # zero width
        ([[5, 5, 1, 1]], [0]),  # inverted box counts as empty, not as positive area
        ([[0.5, 0.5, 1.5, 2.5], [0, 0, 3, 3]], [2, 9]),
    ],
)
def test_area(xyxy: list[list[float]], expected: list[float]) -> None:
    n = len(xyxy)
    area = Detections(xyxy, np.ones(n), np.zeros(n)).area
    assert area.dtype == np.float32
    np.testing.assert_allclose(area, expected)


def test_with_tracker_id_and_with_data_return_new_objects() -> None:
    original = make(2)
    tracked = original.with_tracker_id([5, 6])
    extended = tracked.with_data(embedding=np.ones((2, 3)))

    assert original.tracker_id is None and "embedding" not in original.data
    assert tracked.tracker_id is not None and tracked.tracker_id.tolist() == [5, 6]
    assert extended.data.keys() == {"landmarks", "embedding"}
    assert tracked.with_tracker_id(None).tracker_id is None
    with pytest.raises(ValueError, match="tracker_id"):
        original.with_tracker_id([1, 2, 3])


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([[0, 0, 10, 10]], [[0, 0, 10, 10]], [[1.0]]),
        ([[0, 0, 10, 10]], [[5, 0, 15, 10]], [[1 / 3]]),
        ([[0, 0, 10, 10]], [[10, 10, 20, 20]], [[0.0]]),  # touching corners
        ([[0, 0, 0, 0]], [[0, 0, 0, 0]], [[0.0]]),  # empty union: 0, not NaN
        ([[0, 0, 2, 2], [0, 0, 4, 4]], [[0, 0, 4, 4]], [[0.25], [1.0]]),
    ],
)
def test_box_iou_batch(a: list[list[float]], b: list[list[float]], expected: list[list[float]]) -> None:
    np.testing.assert_allclose(box_iou_batch(a, b), expected, rtol=1e-6)


def test_box_iou_batch_shapes_for_empty_inputs() -> None:
    assert box_iou_batch(np.empty((0, 4)), [[0, 0, 1, 1]]).shape == (0, 1)
    assert box_iou_batch([[0, 0, 1, 1]], np.empty((0, 4))).shape == (1, 0)


@pytest.mark.parametrize(
    ("boxes", "scores", "threshold", "expected"),
    [
        ([], [], 0.4, []),
        ([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], [0.8, 0.9, 0.7], 0.4, [1, 2]),
        # IoU(0, 1) = 0.82: kept both when the threshold is above it.
        ([[0, 0, 10, 10], [1, 0, 11, 10]], [0.8, 0.9], 0.9, [1, 0]),
        ([[0, 0, 10, 10], [5, 0, 15, 10]], [0.9, 0.8], 0.3, [0]),  # IoU 1/3 > 0.3 suppressed
    ],
)
def test_non_max_suppression(
    boxes: list[list[float]], scores: list[float], threshold: float, expected: list[int]
) -> None:
    assert non_max_suppression(boxes, scores, threshold).tolist() == expected
