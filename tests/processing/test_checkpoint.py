"""The checkpoint protocol of trackers and posters: what a run resumed at a quiet point restores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from processing.config import DetectorConfig
from processing.detections import Detections
from processing.posting import TrackPoster
from processing.trackers import Checkpointable, create_tracker


def boxes(*xyxy: tuple[float, float, float, float], embed: bool = False) -> Detections:
    n = len(xyxy)
    data = {"embedding": np.tile(np.eye(1, 8, dtype=np.float32), (n, 1))} if embed else {}
    return Detections(xyxy=np.asarray(xyxy, np.float32).reshape(-1, 4), confidence=np.full(n, 0.9, np.float32),
                      class_id=np.zeros(n, np.int64), data=data)


# Two objects, then nothing (a quiet point after frame 4), then a third object.
SCENE = [(0, [(0, 0, 10, 10)]), (1, [(1, 0, 11, 10), (50, 50, 60, 60)]), (2, [(2, 0, 12, 10), (51, 50, 61, 60)]),
         (3, [(3, 0, 13, 10), (52, 50, 62, 60)]), (4, []), (5, []), (6, []), (7, [(30, 30, 40, 40)]),
         (8, [(31, 30, 41, 40)]), (9, [(32, 30, 42, 40)]), (10, [(33, 30, 43, 40)])]


def track_ids(tracker, frames, embed: bool) -> list[list[int]]:
    out = []
    for index, rows in frames:
        tracked = tracker.update(boxes(*rows, embed=embed), index)
        out.append(tracked.tracker_id.tolist())
        tracker.pop_finished()
    return out


@pytest.mark.parametrize("name", ["simple_iou", "deep_sort"])
def test_a_tracker_restored_at_a_quiet_point_continues_as_the_uninterrupted_one(name: str) -> None:
    embed = name == "deep_sort"
    options = {"track_miss_interval": 1, "track_deep_sort_filter_unconfirmed_tracks": False} if embed else \
        {"track_miss_interval": 1}
    whole = create_tracker(name, **options)
    assert isinstance(whole, Checkpointable) and whole.quiet
    ids = track_ids(whole, SCENE, embed)
    assert ids[-1] == [3]

    first = create_tracker(name, **options)
    track_ids(first, SCENE[:2], embed)
    assert not first.quiet
    with pytest.raises(RuntimeError):
        first.checkpoint()
    track_ids(first, SCENE[2:6], embed)  # frame 5: every track ended and was popped
    assert first.quiet
    state = first.checkpoint()
    assert json.loads(json.dumps(state)) == state == {"next_id": 3}

    resumed = create_tracker(name, **options)
    resumed.restore(state)
    assert resumed.checkpoint() == state  # round trip
    assert track_ids(resumed, SCENE[6:], embed) == ids[6:]


def test_a_poster_checkpoints_its_not_posted_count_only_when_no_track_is_open() -> None:
    poster = TrackPoster(DetectorConfig(kind="face", filter_min_quality=0.5))
    assert isinstance(poster, Checkpointable) and poster.quiet
    assert poster.checkpoint() == {"not_posted": 0}
    image = np.zeros((64, 64, 3), np.uint8)
    tracker = create_tracker("simple_iou", track_miss_interval=0)
    tracked = tracker.update(boxes((5, 5, 20, 20)), 0)
    poster.observe(tracked, np.array([0.1], np.float32), frame_index=0, timestamp=0.0, image=image,
                   full_image=image, offset=(0, 0))
    assert not poster.quiet
    with pytest.raises(RuntimeError):
        poster.checkpoint()
    tracker.update(boxes(), 2)
    assert poster.finish(tracker.pop_finished()) == []  # below filter_min_quality: not posted
    assert poster.quiet and poster.checkpoint() == {"not_posted": 1}

    restored = TrackPoster(DetectorConfig(kind="face"))
    restored.restore({"not_posted": 1})
    assert restored.not_posted == 1 and restored.checkpoint() == {"not_posted": 1}


def test_a_checkpoint_counts_tracks_not_posted_up_to_its_frame_even_between_reports() -> None:
    from pathlib import Path

    from processing.config import ModelPaths, PipelineSettings
    from processing.decoding import DecodedFrame
    from processing.pipeline import DetectedFrame, Progress, SampledFrame, Tracking

    config = DetectorConfig(kind="face", filter_min_quality=0.99, track_miss_interval=0)
    settings = PipelineSettings(source="clip.mp4", models=ModelPaths(face=Path("f"), objects=Path("o")),
                                max_pixels=10**8, detectors={"face": config})
    progress = Progress()
    posted: list = []
    tracking = Tracking(settings, progress, fps=25.0, embedders={}, on_event=lambda item: posted.append(item) or True,
                        resume=None)
    image = np.zeros((64, 64, 3), np.uint8)
    for index, rows in enumerate([[(5, 5, 40, 40)], [(6, 5, 41, 40)], [], []]):
        sampled = SampledFrame(DecodedFrame(index, index / 25, image), 0.0, image, image, (0, 0),
                               {"frames_processed": index + 1, "frames_dropped": 0, "frames_imotion_skipped": 0})
        tracking.conclude(DetectedFrame(sampled, {"face": boxes(*rows)}))
    assert posted == []  # the one track was below the quality filter
    assert progress.checkpoint is not None and progress.checkpoint["frame_index"] == 3
    assert progress.checkpoint["progress"]["objects"]["face"]["not_posted"] == 1
    assert progress.checkpoint["next_track_ids"] == {"face": 2}

    resumed_progress = Progress()
    resumed_progress.restore(progress.checkpoint["progress"])
    resumed = Tracking(settings, resumed_progress, fps=25.0, embedders={}, on_event=lambda item: True,
                       resume=progress.checkpoint)
    assert resumed.not_posted() == {"face": 1}
