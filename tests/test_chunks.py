"""Cutting a long video into chunks at keyframes, decoding a chunk, stitching tracks across a cut (no worker).

The whole flow with real workers is in tests/test_worker_chunks.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from processing.chunks import OverlapRecorder, Span, first_track_id, keyframes, plan_spans, stitch
from processing.decoding import DecodeStats, decode_frames
from tests.conftest import make_video


def test_a_long_video_is_cut_at_keyframes_and_a_chunk_decodes_exactly_its_frames(tmp_path):
    # 20 s at 25 fps; mpeg4's default group of pictures puts a keyframe every 12 frames.
    path = make_video(tmp_path / "long.mp4", frames=500, fps=25)
    times, duration = keyframes(path)
    assert duration == pytest.approx(20.0, abs=0.05)
    spans = plan_spans(times, duration, chunk_seconds=6, overlap=2)
    assert len(spans) == 3
    assert spans[0].start == 0 and spans[-1].end is None
    for before, after in zip(spans, spans[1:], strict=False):
        assert before.end == after.start and after.start in times  # cut where decoding can start
        assert after.start - before.start >= 6

    whole = [(f.index, f.timestamp) for f in decode_frames(path, DecodeStats(), max_pixels=10**7)]
    second = spans[1]
    assert second.end is not None
    decode_end = second.decode_end(2)
    part = list(decode_frames(path, DecodeStats(), max_pixels=10**7, start_time=second.start, end_time=decode_end))
    expected = [(i, t) for i, t in whole if second.start - 1e-6 <= t < decode_end - 1e-6]
    # The same frames with the same indices as a run from the start: events of both runs are comparable.
    assert [(f.index, f.timestamp) for f in part] == expected
    assert all(f.image is not None for f in part)


def test_a_video_not_longer_than_a_chunk_is_one_span():
    assert plan_spans([0.0, 5.0, 10.0], 12.0, chunk_seconds=12, overlap=2) == [Span(0, 0.0, None)]
    assert plan_spans([0.0, 5.0], 12.0, chunk_seconds=0, overlap=2) == [Span(0, 0.0, None)]
    # No cut that would leave a last piece shorter than the overlap.
    assert [s.start for s in plan_spans([0.0, 10.0, 19.5], 20.0, chunk_seconds=8, overlap=2)] == [0.0, 10.0]


def _recorder(span: Span, tracks: dict[int, list[tuple[int, float, list[float]]]]) -> dict:
    recorder = OverlapRecorder(span.windows(2.0))
    for track_id, seen in tracks.items():
        for frame, timestamp, box in seen:
            recorder.record("body", frame, timestamp, [track_id], np.asarray([box], np.float32))
    return recorder.tracks


def test_tracks_following_one_object_across_two_cuts_become_one_chain():
    spans = [Span(0, 0.0, 10.0), Span(1, 10.0, 20.0), Span(2, 20.0, None)]
    a, b, c = first_track_id(0), first_track_id(1), first_track_id(2)
    moving = [(f, f / 10, [f * 2.0, 10, f * 2.0 + 40, 90]) for f in range(95, 125)]
    later = [(f, f / 10, [f * 2.0, 10, f * 2.0 + 40, 90]) for f in range(195, 225)]
    recorded = {
        # Chunk 0 records its tail window only (10..12 s): frames before 100 are outside every window.
        0: _recorder(spans[0], {a: moving,
                                a + 1: [(105, 10.5, [500, 500, 540, 580]), (106, 10.6, [501, 500, 541, 580])]}),
        1: _recorder(spans[1], {b: [m for m in moving if m[0] >= 100], b + 5: later}),
        2: _recorder(spans[2], {c + 2: [m for m in later if m[0] >= 200]}),
    }
    assert set(recorded[0]["body"][str(a)]) == {str(f) for f in range(100, 120)}
    heads = stitch(recorded)
    # a continues as b; the object of b+5 continues as c+2; a+1 (elsewhere in the frame) matches nothing.
    assert heads == {("body", b): a, ("body", c + 2): b + 5}


def test_appearance_decides_between_two_tracks_in_the_same_place():
    span0, span1 = Span(0, 0.0, 10.0), Span(1, 10.0, None)
    a, b = first_track_id(0), first_track_id(1)
    box = [(f, f / 10, [100.0, 100, 140, 200]) for f in range(100, 110)]
    recorded = {0: _recorder(span0, {a: box}), 1: _recorder(span1, {b: box, b + 1: box})}
    looks = {(a, b): 0.1, (a, b + 1): 0.9}
    assert stitch(recorded, lambda kind, x, y: looks[(x, y)]) == {("body", b + 1): a}
    # With boxes apart, appearance alone never stitches.
    far = {0: _recorder(span0, {a: box}),
           1: _recorder(span1, {b: [(f, t, [400.0, 100, 440, 200]) for f, t, _ in box]})}
    assert stitch(far, lambda kind, x, y: 1.0) == {}
