from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from processing.detections import Detections
from processing.trackers import SimpleIouTracker, Track, Tracker, create_tracker

Box = tuple[float, float, float, float]


def frame(*boxes: Box, class_ids: Sequence[int] | None = None) -> Detections:
    n = len(boxes)
    return Detections(
        xyxy=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        confidence=np.full(n, 0.9),
        class_id=np.zeros(n) if class_ids is None else class_ids,
        data={"landmarks": np.zeros((n, 5, 2), np.float32)},
    )


def run(tracker: SimpleIouTracker, frames: Sequence[tuple[int, Detections]]) -> list[list[int]]:
    """Tracker ids per processed frame."""
    ids = []
    for index, detections in frames:
        tracked = tracker.update(detections, index)
        assert tracked.tracker_id is not None
        ids.append(tracked.tracker_id.tolist())
    return ids


def shifted(box: Box, dx: float) -> Box:
    return (box[0] + dx, box[1], box[2] + dx, box[3])


def test_is_registered_and_satisfies_protocol() -> None:
    tracker = create_tracker("simple_iou", track_miss_interval=3)
    assert isinstance(tracker, SimpleIouTracker) and isinstance(tracker, Tracker)
    assert tracker.track_miss_interval == 3
    with pytest.raises(ValueError, match="unknown tracker"):
        create_tracker("nope")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"track_overlap_threshold": 1.5},
        {"track_overlap_threshold": -0.1},
        {"track_miss_interval": -1},
        {"track_max_duration_frames": -1},
    ],
)
def test_rejects_invalid_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SimpleIouTracker(**kwargs)


A_START: Box = (0, 0, 20, 20)
B_START: Box = (100, 10, 120, 30)  # 10 px lower: the paths cross with partial overlap


@pytest.mark.parametrize("swap_rows_on_odd_frames", [False, True])
@pytest.mark.parametrize("step", [2, 5])
def test_two_boxes_crossing_keep_their_ids(swap_rows_on_odd_frames: bool, step: int) -> None:
    # Low threshold on purpose: near the crossing each track's old box also overlaps the other
    # object's new box (IoU up to ~0.3), so only ranking by IoU keeps the ids apart.
    tracker = SimpleIouTracker(track_overlap_threshold=0.1)
    frames, expected = [], []
    for index in range(100 // step + 1):
        a, b = shifted(A_START, step * index), shifted(B_START, -step * index)
        swap = swap_rows_on_odd_frames and index % 2 == 1
        frames.append((index, frame(b, a) if swap else frame(a, b)))
        expected.append([2, 1] if swap else [1, 2])

    ids = run(tracker, frames)

    assert ids == expected  # ids follow the boxes through the crossing, whatever the row order
    tracks = tracker.finish()
    assert [t.track_id for t in tracks] == [1, 2]
    assert all(t.end_reason == "finished" and len(t.frame_indices) == len(frames) for t in tracks)
    a_track = tracks[0]
    np.testing.assert_allclose(a_track.xyxy[-1], shifted(A_START, 100))


@pytest.mark.parametrize(
    ("miss_interval", "missed_frames", "same_track"),
    [
        (0, 0, True),
        (0, 1, False),
        (1, 1, True),
        (1, 2, False),
        (3, 3, True),
        (3, 4, False),
    ],
)
def test_miss_interval(miss_interval: int, missed_frames: int, same_track: bool) -> None:
    tracker = SimpleIouTracker(track_miss_interval=miss_interval)
    box: Box = (10, 10, 50, 50)
    frames = [(0, frame(box)), (1, frame(box))]
    frames += [(2 + i, frame()) for i in range(missed_frames)]
    frames.append((2 + missed_frames, frame(box)))

    ids = run(tracker, frames)

    assert ids[-1] == ([1] if same_track else [2])
    ended = tracker.pop_finished()
    if same_track:
        assert ended == []
    else:
        assert [(t.track_id, t.end_reason, t.last_frame) for t in ended] == [(1, "missed", 1)]


def test_miss_interval_counts_frames_not_update_calls() -> None:
    # Detecting every 5th frame: a miss interval of 4 frames is shorter than one stride, so a
    # single missed detection ends the track; 10 frames survive it.
    box: Box = (10, 10, 50, 50)
    frames = [(0, frame(box)), (5, frame()), (10, frame(box))]
    assert run(SimpleIouTracker(track_miss_interval=4), frames)[-1] == [2]
    assert run(SimpleIouTracker(track_miss_interval=10), frames)[-1] == [1]


@pytest.mark.parametrize(
    ("max_duration", "expected_ids"),
    [
        (0, [1, 1, 1, 1, 1, 1, 1]),
        (1, [1, 2, 3, 4, 5, 6, 7]),
        (3, [1, 1, 1, 2, 2, 2, 3]),
        (7, [1, 1, 1, 1, 1, 1, 1]),
    ],
)
def test_max_duration_cuts_tracks(max_duration: int, expected_ids: list[int]) -> None:
    tracker = SimpleIouTracker(track_max_duration_frames=max_duration)
    ids = run(tracker, [(index, frame((0, 0, 40, 40))) for index in range(7)])

    assert [row[0] for row in ids] == expected_ids
    cut = tracker.pop_finished()
    assert all(t.end_reason == "max_duration" for t in cut)
    assert all(t.last_frame - t.start_frame + 1 == max_duration for t in cut)
    assert len(cut) == expected_ids[-1] - 1


def test_max_duration_is_measured_in_frames_with_stride() -> None:
    tracker = SimpleIouTracker(track_max_duration_frames=10, track_miss_interval=10)
    ids = run(tracker, [(index, frame((0, 0, 40, 40))) for index in range(0, 30, 5)])
    assert [row[0] for row in ids] == [1, 1, 2, 2, 3, 3]


@pytest.mark.parametrize(
    ("interpolate", "frames", "expected_frames", "expected_x1", "expected_interpolated"),
    [
        (True, [0, 3], [0, 1, 2, 3], [0, 10, 20, 30], [False, True, True, False]),
        (False, [0, 3], [0, 3], [0, 30], [False, False]),
        # Every 2nd frame processed: only the processed frame 2 was "missed" and gets a box.
        (True, [0, 4], [0, 2, 4], [0, 15, 30], [False, True, False]),
        (True, [0, 1], [0, 1], [0, 30], [False, False]),  # no miss, nothing to fill
    ],
)
def test_interpolation_fills_missed_frames(
    interpolate: bool,
    frames: list[int],
    expected_frames: list[int],
    expected_x1: list[float],
    expected_interpolated: list[bool],
) -> None:
    tracker = SimpleIouTracker(track_interpolate_bboxes=interpolate, track_miss_interval=5)
    first, last = frames
    processed = [(first, frame((0, 0, 100, 100)))]
    stride = 2 if last == 4 else 1
    processed += [(index, frame()) for index in range(first + stride, last, stride)]
    processed.append((last, frame((30, 0, 130, 100))))  # IoU 70/130 with the old box

    ids = run(tracker, processed)
    (track,) = tracker.finish()

    assert ids[0] == ids[-1] == [1]
    assert track.frame_indices.tolist() == expected_frames
    np.testing.assert_allclose(track.xyxy[:, 0], expected_x1)
    np.testing.assert_allclose(track.xyxy[:, 2], np.asarray(expected_x1) + 100)
    assert track.interpolated.tolist() == expected_interpolated
    assert len(track.observations) == 2
    assert track.observed_frame_indices.tolist() == frames
    assert track.observations.tracker_id is not None and track.observations.tracker_id.tolist() == [1, 1]
    assert track.observations.data["landmarks"].shape == (2, 5, 2)


def test_missed_track_has_no_trailing_interpolation() -> None:
    tracker = SimpleIouTracker(track_miss_interval=1)
    run(tracker, [(0, frame((0, 0, 10, 10))), (1, frame()), (2, frame())])
    (track,) = tracker.pop_finished()
    assert track.frame_indices.tolist() == [0] and track.end_reason == "missed"


@pytest.mark.parametrize(
    ("threshold", "same_track"),
    [(0.0, True), (0.5, True), (0.6, False)],
)
def test_overlap_threshold(threshold: float, same_track: bool) -> None:
    # 100 px boxes shifted by 30 px: IoU = 70 / 130 = 0.54.
    tracker = SimpleIouTracker(track_overlap_threshold=threshold)
    ids = run(tracker, [(0, frame((0, 0, 100, 100))), (1, frame((30, 0, 130, 100)))])
    assert ids[1] == ([1] if same_track else [2])


def test_boxes_must_overlap_even_at_threshold_zero() -> None:
    tracker = SimpleIouTracker(track_overlap_threshold=0.0)
    ids = run(tracker, [(0, frame((0, 0, 10, 10))), (1, frame((50, 50, 60, 60)))])
    assert ids == [[1], [2]]


def test_classes_never_share_a_track() -> None:
    tracker = SimpleIouTracker()
    box: Box = (0, 0, 50, 50)
    ids = run(tracker, [(0, frame(box, class_ids=[0])), (1, frame(box, class_ids=[1]))])
    assert ids == [[1], [2]]


def test_best_overlap_wins_the_track() -> None:
    tracker = SimpleIouTracker(track_overlap_threshold=0.1)
    # Both new boxes overlap track 1; the better one continues it, the other starts track 2.
    ids = run(tracker, [(0, frame((0, 0, 100, 100))), (1, frame((40, 0, 140, 100), (5, 0, 105, 100)))])
    assert ids == [[1], [2, 1]]


def test_does_not_mutate_input_and_keeps_row_order() -> None:
    tracker = SimpleIouTracker()
    detections = frame((0, 0, 10, 10), (20, 0, 30, 10))
    tracked = tracker.update(detections, 0)
    assert detections.tracker_id is None
    assert tracked is not detections
    np.testing.assert_array_equal(tracked.xyxy, detections.xyxy)
    assert tracked.tracker_id is not None and tracked.tracker_id.tolist() == [1, 2]


def test_empty_frames_and_reset() -> None:
    tracker = SimpleIouTracker()
    assert tracker.update(Detections.empty(), 0).tracker_id.tolist() == []  # type: ignore[union-attr]
    run(tracker, [(1, frame((0, 0, 10, 10)))])
    assert tracker.open_track_ids == [1]
    tracker.reset()
    assert tracker.open_track_ids == [] and tracker.finish() == []
    assert run(tracker, [(0, frame((0, 0, 10, 10)))]) == [[1]]  # ids and frame order start over


@pytest.mark.parametrize("next_index", [4, 3])
def test_frame_index_must_increase(next_index: int) -> None:
    tracker = SimpleIouTracker()
    tracker.update(frame(), 4)
    with pytest.raises(ValueError, match="must increase"):
        tracker.update(frame(), next_index)


def test_finished_tracks_are_read_only_and_ordered() -> None:
    tracker = SimpleIouTracker(track_miss_interval=0)
    run(tracker, [(0, frame((0, 0, 10, 10), (50, 0, 60, 10))), (1, frame((50, 0, 60, 10)))])
    finished: list[Track] = tracker.pop_finished()
    assert [t.track_id for t in finished] == [1]
    with pytest.raises(ValueError, match="read-only"):
        finished[0].xyxy[0, 0] = 1
    assert [t.track_id for t in tracker.finish()] == [2]
    assert tracker.pop_finished() == []


# Re-association of lost tracks: a walker (40 px wide, 6 px a frame) is hidden for a few frames.
WALKER: Box = (100, 100, 140, 200)


def walk(first: int, last: int, start: Box, step: float) -> list[tuple[int, Box]]:
    return [(index, shifted(start, step * (index - first))) for index in range(first, last + 1)]


@pytest.mark.parametrize(("reassociate", "expected_last_id"), [(True, 1), (False, 2)])
def test_a_walker_who_stops_behind_an_obstacle_keeps_the_id(reassociate: bool, expected_last_id: int) -> None:
    # Seen walking on frames 0-4, hidden on 5-11, found again just past where they vanished: they stopped.
    # Prediction puts them 48 px further on (IoU 0, and beyond half a width): without re-association, a new id.
    tracker = SimpleIouTracker(track_miss_interval=10, motion_prediction=True, reassociate_lost=reassociate)
    seen = walk(0, 4, WALKER, 6.0)
    frames = [(index, frame(box)) for index, box in seen]
    frames += [(index, frame()) for index in range(5, 12)]
    frames.append((12, frame(shifted(seen[-1][1], 6.0))))

    ids = run(tracker, frames)

    assert ids[-1] == [expected_last_id]
    if reassociate:
        (track,) = tracker.finish()
        assert track.frame_indices.tolist() == list(range(13))  # hidden frames interpolated
        assert track.interpolated.sum() == 7


def test_a_lost_track_is_open_until_dropped() -> None:
    # Resume checkpoints only where no track is open: a lost track that may still be re-associated is open.
    tracker = SimpleIouTracker(track_miss_interval=3, motion_prediction=True)
    run(tracker, [(0, frame(WALKER)), (1, frame()), (2, frame()), (3, frame())])
    assert tracker.open_track_ids == [1]
    run(tracker, [(4, frame())])
    assert tracker.open_track_ids == [] and [t.end_reason for t in tracker.pop_finished()] == ["missed"]


@pytest.mark.parametrize("swap_rows", [False, True])
@pytest.mark.parametrize(("reassociate", "a_after"), [(True, 1), (False, 3)])
def test_crossing_walkers_one_hidden_behind_the_other_keep_their_ids(
    swap_rows: bool, reassociate: bool, a_after: int
) -> None:
    # A walks right behind B, who walks left a little lower (in front); A is hidden while B covers it
    # (frames 8-12) and comes out slower, 30 px short of where its pace would put it (IoU 0.14 with the
    # prediction). B is matched by IoU throughout; A's row is left over and goes back to A's lost track.
    tracker = SimpleIouTracker(track_miss_interval=10, motion_prediction=True, reassociate_lost=reassociate)
    ids = []
    for index in range(21):
        a = shifted((0, 100, 40, 200), 10.0 * index if index <= 7 else 70.0 + 5.0 * (index - 7))
        b = shifted((200, 110, 240, 214), -10.0 * index)
        rows = [b] if 8 <= index <= 12 else ([b, a] if swap_rows and index % 2 else [a, b])
        tracked = run(tracker, [(index, frame(*rows))])[0]
        ids.append(dict(zip([("B" if box == b else "A") for box in rows], tracked, strict=True)))

    assert all(row["B"] == 2 for row in ids)  # B never swaps
    assert [row["A"] for row in ids if "A" in row] == [1] * 8 + [a_after] * 8


@pytest.mark.parametrize(
    "reappearing",
    [
        shifted(WALKER, 100.0),  # far from the path: someone else
        (106, 60, 186, 200),  # on the path but twice as wide and 40% taller: not the walker
    ],
)
def test_implausible_rows_start_new_tracks(reappearing: Box) -> None:
    tracker = SimpleIouTracker(track_miss_interval=10, motion_prediction=True)
    frames = [(index, frame(box)) for index, box in walk(0, 4, WALKER, 6.0)]
    frames += [(index, frame()) for index in range(5, 12)]
    frames.append((12, frame(reappearing)))

    assert run(tracker, frames)[-1] == [2]


def test_embeddings_veto_a_row_that_looks_different() -> None:
    def looking(box: Box, look: list[float]) -> Detections:
        return frame(box).with_data(embedding=np.asarray([look], np.float32))

    seen = walk(0, 4, WALKER, 6.0)
    back = shifted(seen[-1][1], 6.0)
    for look, expected in (([1.0, 0.0], [1]), ([0.0, 1.0], [2])):
        tracker = SimpleIouTracker(track_miss_interval=10, motion_prediction=True)
        frames = [(index, looking(box, [1.0, 0.0])) for index, box in seen]
        frames += [(index, frame()) for index in range(5, 12)]
        frames.append((12, looking(back, look)))
        assert run(tracker, frames)[-1] == expected
