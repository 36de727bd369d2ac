"""deep_sort: appearance keeps identities where boxes alone swap them; tentative one-off tracks are filtered."""

from __future__ import annotations

import numpy as np

from processing.detections import Detections
from processing.trackers import DeepSortTracker, SimpleIouTracker, create_tracker


def unit(vector) -> np.ndarray:
    vector = np.asarray(vector, np.float32)
    return vector / np.linalg.norm(vector)


RED, BLUE, GREEN = unit([1, 0.1, 0]), unit([0.1, 1, 0]), unit([0, 0.1, 1])


def frame(*objects: tuple[tuple[float, float, float, float], np.ndarray]) -> Detections:
    return Detections(
        xyxy=np.array([box for box, _ in objects], np.float32).reshape(-1, 4),
        confidence=np.full(len(objects), 0.9, np.float32),
        class_id=np.zeros(len(objects), np.int64),
        data={"embedding": np.stack([embedding for _, embedding in objects]) if objects else np.zeros((0, 3))},
    )


def crossing(frames: int = 21):
    """Two people walking towards each other along one line; their boxes coincide in the middle, and the detector
    reports them in the other order after they pass (as real detectors do)."""
    for index in range(frames):
        x_red, x_blue = 10 * index, 200 - 10 * index
        red, blue = ((x_red, 0, x_red + 40, 100), RED), ((x_blue, 0, x_blue + 40, 100), BLUE)
        yield index, frame(*((blue, red) if index % 2 else (red, blue)))


def identities(tracker) -> dict[int, set[str]]:
    """Track id -> the colours (true identities) of the rows it got."""
    seen: dict[int, set[str]] = {}
    for index, detections in crossing():
        tracked = tracker.update(detections, index)
        for row, track_id in enumerate(tracked.tracker_id.tolist()):
            colour = "red" if np.allclose(detections.data["embedding"][row], RED) else "blue"
            seen.setdefault(track_id, set()).add(colour)
    return seen


def test_the_registry_builds_deep_sort_with_findface_settings():
    tracker = create_tracker("deep_sort", track_overlap_threshold=0.3, track_miss_interval=5,
                             track_deep_sort_matching_threshold=0.7, track_deep_sort_filter_unconfirmed_tracks=False)
    assert isinstance(tracker, DeepSortTracker)
    assert tracker.matching_threshold == 0.7 and tracker.filter_unconfirmed is False


def test_appearance_keeps_identities_through_a_crossing():
    tracks = identities(DeepSortTracker(track_miss_interval=3))
    assert len(tracks) == 2
    assert sorted(map(sorted, tracks.values())) == [["blue"], ["red"]]


def test_without_appearance_the_boxes_alone_mix_identities_up():
    # The same scene for simple_iou: at the crossing both boxes overlap both tracks and ids get mixed.
    tracks = identities(SimpleIouTracker(track_miss_interval=3))
    assert any(len(colours) > 1 for colours in tracks.values()) or len(tracks) > 2


def test_a_one_off_detection_ends_unconfirmed_and_a_steady_one_is_kept():
    tracker = DeepSortTracker(track_miss_interval=10)
    steady = ((100, 100, 140, 200), GREEN)
    for index in range(6):
        objects = [steady] + ([((400, 0, 430, 60), RED)] if index == 1 else [])
        tracker.update(frame(*objects), index)
    ended = tracker.pop_finished()
    assert [track.end_reason for track in ended] == ["unconfirmed"]
    finished = tracker.finish()
    assert [track.end_reason for track in finished] == ["finished"] and len(finished[0].observations) == 6


def test_unconfirmed_tracks_are_kept_when_the_filter_is_off():
    tracker = DeepSortTracker(track_miss_interval=1, track_deep_sort_filter_unconfirmed_tracks=False)
    tracker.update(frame(((400, 0, 430, 60), RED)), 0)
    tracker.update(frame(), 1)
    tracker.update(frame(), 2)
    assert [track.end_reason for track in tracker.pop_finished()] == ["missed"]


def test_motion_prediction_bridges_a_stride_that_iou_alone_cannot():
    # A box speeding up to 30 px per detected frame (every third frame): its last box and the new one overlap
    # less and less, while where it should be by now stays close to where it is.
    def run(tracker) -> int:
        for step, x in enumerate((0, 8, 24, 48, 78, 108, 138, 168)):
            tracker.update(frame(((x, 0, x + 40, 100), RED)), 3 * step)
        return len(tracker.finish())

    assert run(SimpleIouTracker(track_overlap_threshold=0.4, track_miss_interval=3)) > 1
    assert run(SimpleIouTracker(track_overlap_threshold=0.4, track_miss_interval=3, motion_prediction=True)) == 1
