"""The benchmark's track-matching rules and compute count (bench/bench_pipeline.py), on hand-made tracks.

Issue 4's speed target is judged by these numbers, so what "found" and "covered" mean is pinned here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_pipeline.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_pipeline", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def naive_track(first: int, last: int, x: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
    """A person walking right 2 px a frame: (frame indices, boxes)."""
    frames = np.arange(first, last + 1)
    boxes = np.stack([x + 2 * (frames - first), np.full(len(frames), 50.0),
                      x + 40 + 2 * (frames - first), np.full(len(frames), 150.0)], axis=1).astype(np.float64)
    return frames, boxes


def history(frames: np.ndarray, boxes: np.ndarray, rows: slice, step: int = 1) -> np.ndarray:
    """A pipeline track's posted history ([frame, ts, x1, y1, x2, y2]) over part of a naive track."""
    picked = np.arange(len(frames))[rows][::step]
    return np.column_stack([frames[picked], frames[picked] / 10.0, boxes[picked]])


def test_one_pipeline_track_over_every_other_frame_follows_the_naive_track(bench):
    frames, boxes = naive_track(0, 19)
    strided = history(frames, boxes, slice(None), step=2)  # detected on even frames, boxes interpolated between

    assert bench.track_found(frames, boxes, [strided])
    assert bench.track_covered(frames, boxes, [strided])


def test_a_track_cut_in_three_is_covered_but_not_followed_by_one_identity(bench):
    frames, boxes = naive_track(0, 19)
    pieces = [history(frames, boxes, slice(0, 7)), history(frames, boxes, slice(7, 13)),
              history(frames, boxes, slice(13, 20))]

    assert not bench.track_found(frames, boxes, pieces)  # no piece spans half of the 20 frames
    assert bench.track_covered(frames, boxes, pieces)


def test_a_box_elsewhere_neither_follows_nor_covers(bench):
    frames, boxes = naive_track(0, 9)
    elsewhere_frames, elsewhere_boxes = naive_track(0, 9, x=400.0)
    other = history(elsewhere_frames, elsewhere_boxes, slice(None))

    assert not bench.track_found(frames, boxes, [other])
    assert not bench.track_covered(frames, boxes, [other])


def test_coverage_of_less_than_half_the_frames_is_a_miss(bench):
    frames, boxes = naive_track(0, 9)
    early = history(frames, boxes, slice(0, 4))  # 4 of 10 frames

    assert not bench.track_covered(frames, boxes, [early])
    recall = bench.track_recall({"body": [bench.NaiveTrack(frames, boxes, frames)]}, {"body": [early]},
                                match=bench.covered)
    assert recall["overall"] == {"found": 0, "total": 1, "recall": 0.0}


def test_confirmed_tracks_are_those_the_detector_found_on_enough_frames(bench):
    frames, boxes = naive_track(0, 9)
    long_but_thin = bench.NaiveTrack(frames, boxes, frames[[0, 9]])  # 10 frames, 2 of them detections
    confirmed = bench.NaiveTrack(frames, boxes, frames[[0, 4, 9]])
    strided = history(frames, boxes, slice(None), step=2)

    recall = bench.track_recall({"body": [long_but_thin, confirmed]}, {"body": [strided]}, min_detections=3)
    assert recall["body"] == {"found": 1, "total": 1, "recall": 1.0}
    assert bench.track_recall({"body": [long_but_thin, confirmed]}, {"body": []})["overall"]["total"] == 2


def test_archive_default_filters_are_the_services_defaults(bench):
    from videos.serializers.stream_settings import default_stream_settings

    detectors = default_stream_settings()["detectors"]
    service = {kind: (detectors[kind]["filter_min_size"], detectors[kind]["filter_min_quality"]) for kind in detectors}
    filters = bench.detector_filters("defaults", face_min_size=0)

    assert {kind: (cfg.filter_min_size, cfg.filter_min_quality) for kind, cfg in filters.items()} == service
    every_track = bench.detector_filters("bench", face_min_size=60)
    assert {kind: (cfg.filter_min_size, cfg.filter_min_quality) for kind, cfg in every_track.items()} == {
        "face": (60, 0.0), "body": (0, 0.0), "car": (0, 0.0)}


def test_the_flop_count_of_yolov8n_is_ultralytics_published_figure(bench, models_dir):
    # ultralytics lists YOLOv8n at 8.7 GFLOPs for 640x640; the trimmed 640x512 input of a 4:3 frame costs 4/5.
    square = bench.conv_gflop(models_dir / "yolov8n.onnx", (640, 640))
    trimmed = bench.conv_gflop(models_dir / "yolov8n.onnx", (512, 640))

    assert round(square, 1) == 8.7
    assert trimmed == pytest.approx(0.8 * square, rel=0.01)


def test_one_pipeline_track_per_naive_track_is_no_fragmentation(bench):
    frames, boxes = naive_track(0, 19)
    whole = history(frames, boxes, slice(None), step=2)

    assert bench.matched_ids(frames, boxes, [whole]).tolist() == [0] * 19 + [-1]  # no box after its last row
    figures = bench.track_fragmentation({"body": [bench.NaiveTrack(frames, boxes, frames)]}, {"body": [whole]})
    assert figures["body"] == {"naive": 1, "matched": 1, "fragmented": 0, "pipeline_tracks": 1, "id_switches": 0,
                               "merging": 0, "fragmented_share": 0.0, "tracks_per_matched": 1.0}


def test_a_track_cut_in_three_counts_three_tracks_and_two_switches(bench):
    frames, boxes = naive_track(0, 19)
    pieces = [history(frames, boxes, slice(0, 7)), history(frames, boxes, slice(7, 13)),
              history(frames, boxes, slice(13, 20))]
    elsewhere_frames, elsewhere_boxes = naive_track(0, 9, x=400.0)
    other = bench.NaiveTrack(elsewhere_frames, elsewhere_boxes, elsewhere_frames)  # covered by nothing

    ids = bench.matched_ids(frames, boxes, pieces)
    assert ids.tolist() == [0] * 7 + [1] * 6 + [2] * 7
    assert bench.id_switches(ids) == 2
    figures = bench.track_fragmentation({"body": [bench.NaiveTrack(frames, boxes, frames), other]}, {"body": pieces})
    assert figures["overall"] == {"naive": 2, "matched": 1, "fragmented": 1, "pipeline_tracks": 3, "id_switches": 2,
                                  "merging": 0, "fragmented_share": 0.5, "tracks_per_matched": 3.0}


def test_an_id_that_comes_back_is_one_track_and_two_switches(bench):
    # A-B-A: two distinct pipeline tracks, but the matched id changes twice; a frame covered by nothing between
    # matched frames is skipped, not counted as a switch.
    frames, boxes = naive_track(0, 14)
    away = history(frames, boxes, slice(None))
    away[5:11, 2:] += 200.0  # track A is elsewhere on frames 5-10 (another person's box), then back
    b = history(frames, boxes, slice(6, 11))  # track B covers frames 6-10; frame 5 is covered by nothing

    ids = bench.matched_ids(frames, boxes, [away, b])
    assert ids.tolist() == [0] * 5 + [-1] + [1] * 5 + [0] * 4
    assert bench.id_switches(ids) == 2
    assert bench.id_switches(np.array([-1, 3, -1, -1, 3, 4, -1])) == 1
    figures = bench.track_fragmentation({"body": [bench.NaiveTrack(frames, boxes, frames)]}, {"body": [away, b]})
    assert (figures["body"]["pipeline_tracks"], figures["body"]["id_switches"]) == (2, 2)


def test_the_matched_track_keeps_the_match_while_it_covers(bench):
    # Two pipeline tracks on the same place (a duplicate box): the one matched first keeps the naive track while
    # its IoU stays >= 0.5, even where the other overlaps more (CLEAR MOT), so taking turns is not a switch.
    frames, boxes = naive_track(0, 9)
    exact = history(frames, boxes, slice(None))
    near = exact.copy()
    near[:, 2] += 4  # x1 4 px in: IoU 36/40 = 0.9 with the naive box
    near[:5, 2:] = exact[:5, 2:]  # identical for the first half: ties go to the earlier candidate
    slightly_off = exact.copy()
    slightly_off[5:, 2] += 8  # IoU 32/40 = 0.8 from frame 5: less than near's, still >= 0.5: keeps it

    ids = bench.matched_ids(frames, boxes, [slightly_off, near])
    assert ids.tolist() == [0] * 10
    assert bench.id_switches(ids) == 0


def test_one_pipeline_track_over_two_naive_tracks_is_merging(bench):
    frames, boxes = naive_track(0, 9)
    later_frames, later_boxes = naive_track(10, 19, x=120.0)  # the same walk, cut in two by the reference
    joined = np.concatenate([history(frames, boxes, slice(None)), history(later_frames, later_boxes, slice(None))])
    reference = [bench.NaiveTrack(frames, boxes, frames), bench.NaiveTrack(later_frames, later_boxes, later_frames)]

    figures = bench.track_fragmentation({"body": reference}, {"body": [joined]})
    assert figures["overall"]["fragmented"] == 0 and figures["overall"]["merging"] == 1


def test_interpolated_footage_moves_objects_between_source_frames(bench):
    """Issue 17's 30 fps film is vtest with motion-interpolated frames: the frames between two source frames show
    an object part of the way along its path (not a cross-fade of both positions)."""
    import cv2

    rng = np.random.default_rng(0)
    background = cv2.GaussianBlur(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), (0, 0), 3)
    first, second = background.copy(), background.copy()
    first[40:80, 40:60] = 255
    second[40:80, 52:72] = 255  # 12 px to the right
    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    # 10 -> 30 fps: source frames 0 and 1 are output frames 0 and 3; frames 1 and 2 lie a third and two thirds on.
    frames = list(bench._interpolated(flow, first, second, 0, 10.0, 30.0, 1))
    assert len(frames) == 2
    for frame, shift in zip(frames, (4, 8), strict=True):
        bright = np.nonzero(frame[60, :, 0] > 200)[0]
        assert abs(bright.mean() - (49.5 + shift)) <= 2, bright
