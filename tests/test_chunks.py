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


# --- the chunk lifecycle (videos.jobs), in this process: claims, reports, the sweeper, stitching at the end

from datetime import timedelta  # noqa: E402

from django.utils import timezone  # noqa: E402

from processing.pipeline import Progress  # noqa: E402
from processing.posting import PostedObject  # noqa: E402
from tests.conftest import upload  # noqa: E402
from videos import broker, clusters, jobs  # noqa: E402
from videos.models import ArchiveChunk, BodyEvent, JobState, VideoArchive  # noqa: E402


@pytest.fixture
def chunked(transactional_db, settings, monkeypatch):
    """FFV_CHUNK_SECONDS on; chunk messages collected instead of sent (this test is the worker)."""
    settings.FFV_CHUNK_SECONDS, settings.FFV_CHUNK_OVERLAP_SECONDS = 6.0, 2.0
    sent: list[tuple[int, str]] = []
    monkeypatch.setattr(broker, "send_chunk", lambda chunk_id, task_id: sent.append((chunk_id, task_id)))
    monkeypatch.setattr(clusters, "send_clustering", lambda archive_id: sent.append((-1, f"cluster {archive_id}")))
    return sent


def _long_archive(api, default_group, tmp_path, detectors=None) -> int:
    path = make_video(tmp_path / "long.mp4", frames=500, fps=25)  # 20 s
    body = {"camera_group": default_group.pk, "name": "long",
            "stream_settings": {"detectors": detectors or {"face": None, "body": None, "car": None}}}
    archive_id = api.post("/videos/", body, format="json").json()["id"]
    assert upload(api, archive_id, path).status_code == 201
    return archive_id


def _posted(track_id: int, policy: str, frame: int, quality: float) -> PostedObject:
    return PostedObject(kind="body", track_id=track_id, policy=policy, frame_index=frame, timestamp=frame / 25,
                        box=(1, 2, 30, 40), quality=quality, confidence=0.9, thumbnail=b"jpeg", fullframe=b"jpeg",
                        fullframe_format="jpg", normalized=None, detector_params={"track_id": track_id})


def test_chunks_run_alone_and_the_last_one_ends_the_job(api, default_group, tmp_path, chunked):
    archive_id = _long_archive(api, default_group, tmp_path)
    task_id = jobs.job_queue(archive_id=archive_id, send=None)
    assert jobs.run_job(archive_id=archive_id, task_id=task_id, worker="planner") == JobState.IN_PROGRESS
    chunks = list(ArchiveChunk.objects.filter(video_archive_id=archive_id).order_by("index"))
    assert len(chunks) == 3 and [c.state for c in chunks] == [JobState.QUEUED] * 3
    assert chunked == [(c.pk, c.task_id) for c in chunks]
    assert api.get(f"/videos/{archive_id}/").json()["health_status"]["status"] == "INPROGRESS"

    # Each chunk is a task of its own; the archive stays in progress until the last one ends.
    for chunk in chunks[:2]:
        assert jobs.run_chunk(chunk_id=chunk.pk, task_id=chunk.task_id, worker="w") == JobState.COMPLETED
        health = api.get(f"/videos/{archive_id}/").json()["health_status"]
        assert health["status"] == "INPROGRESS" and 0 < health["statistic"]["progress"] < 1
    assert not [item for item in chunked if item[0] == -1]  # no clustering yet
    # A redelivered message finds nothing to claim.
    assert jobs.run_chunk(chunk_id=chunks[0].pk, task_id=chunks[0].task_id, worker="w") is None
    assert jobs.run_chunk(chunk_id=chunks[2].pk, task_id=chunks[2].task_id, worker="w") == JobState.COMPLETED
    body = api.get(f"/videos/{archive_id}/").json()
    statistic = body["health_status"]["statistic"]
    assert body["health_status"]["status"] == "COMPLETED" and statistic["progress"] == 1
    # Every frame once, plus the shared seconds analysed by both neighbours (2 x 2 s at 25 fps).
    assert statistic["frames_processed"] == 500 + 2 * 50
    assert statistic["processed_duration"] == pytest.approx(20.0, abs=0.05)
    assert [item for item in chunked if item[0] == -1] == [(-1, f"cluster {archive_id}")]  # clustering once


def test_a_dead_chunk_is_sent_again_alone_and_resumes(api, default_group, tmp_path, chunked, settings):
    archive_id = _long_archive(api, default_group, tmp_path)
    task_id = jobs.job_queue(archive_id=archive_id, send=None)
    jobs.run_job(archive_id=archive_id, task_id=task_id, worker="planner")
    chunks = list(ArchiveChunk.objects.filter(video_archive_id=archive_id).order_by("index"))
    first = jobs.chunk_claim(chunk_id=chunks[0].pk, task_id=chunks[0].task_id, worker="a")
    second = jobs.chunk_claim(chunk_id=chunks[1].pk, task_id=chunks[1].task_id, worker="b")
    assert first is not None and second is not None and first.attempt == 1
    assert jobs.job_report(first, Progress()) and jobs.job_report(second, Progress())
    # a's worker dies: its heartbeat runs out; b's goes on.
    old = timezone.now() - timedelta(seconds=settings.FFV_JOB_LEASE_SECONDS + 5)
    ArchiveChunk.objects.filter(pk=chunks[0].pk).update(heartbeat=old)
    VideoArchive.objects.filter(pk=archive_id).update(job_heartbeat=old)  # (no chunk of a's reported lately)
    chunked.clear()
    jobs.jobs_sweep(enqueue=lambda *args: pytest.fail("the archive is never re-sent whole"))
    assert chunked == [(chunks[0].pk, chunks[0].task_id)]
    again = jobs.chunk_claim(chunk_id=chunks[0].pk, task_id=chunks[0].task_id, worker="c")
    assert again is not None and again.resumed and again.attempt == 2
    assert jobs.job_report(second, Progress())  # b was not disturbed
    assert not jobs.job_report(first, Progress())  # a's claim is gone: it writes nothing more
    assert ArchiveChunk.objects.get(pk=chunks[1].pk).starts == 1


def test_stop_ends_running_and_waiting_chunks(api, default_group, tmp_path, chunked):
    archive_id = _long_archive(api, default_group, tmp_path)
    task_id = jobs.job_queue(archive_id=archive_id, send=None)
    jobs.run_job(archive_id=archive_id, task_id=task_id, worker="planner")
    chunks = list(ArchiveChunk.objects.filter(video_archive_id=archive_id).order_by("index"))
    running = jobs.chunk_claim(chunk_id=chunks[0].pk, task_id=chunks[0].task_id, worker="a")
    assert running is not None
    assert api.post(f"/videos/{archive_id}/stop/").status_code == 200
    assert jobs.job_report(running, Progress()) is False  # the running chunk stops at its next report
    assert ArchiveChunk.objects.filter(video_archive_id=archive_id, state=JobState.QUEUED).count() == 0
    assert jobs.job_finish(running, JobState.INTERRUPTED, progress=Progress())
    assert api.get(f"/videos/{archive_id}/").json()["health_status"]["status"] == "INTERRUPTED"
    assert VideoArchive.objects.get(pk=archive_id).stop_requested is False


def test_a_track_crossing_a_cut_keeps_one_event_per_policy(api, default_group, tmp_path, chunked):
    archive_id = _long_archive(api, default_group, tmp_path)
    task_id = jobs.job_queue(archive_id=archive_id, send=None)
    jobs.run_job(archive_id=archive_id, task_id=task_id, worker="planner")
    chunks = list(ArchiveChunk.objects.filter(video_archive_id=archive_id).order_by("index"))
    cut = chunks[1].start
    claimed = [jobs.chunk_claim(chunk_id=c.pk, task_id=c.task_id, worker="w") for c in chunks]
    assert all(claimed)
    a, b = first_track_id(0), first_track_id(1)
    # One person walks across the first cut: chunk 0 sees them until its end (cut + 2 s), chunk 1 from the cut.
    start, cut_frame, end = round((cut - 3) * 25), round(cut * 25), round((cut + 5) * 25)
    for frame in range(start, end):
        box = np.asarray([[frame * 1.0, 10, frame + 40.0, 90]], np.float32)
        if frame < cut_frame + 50:
            claimed[0].overlap.record("body", frame, frame / 25, [a], box)
        if frame >= cut_frame:
            claimed[1].overlap.record("body", frame, frame / 25, [b], box)
    # Another person only chunk 1 sees, in the same stretch but elsewhere.
    claimed[1].overlap.record("body", cut_frame + 3, (cut_frame + 3) / 25, [b + 1],
                              np.asarray([[600, 400, 640, 480]], np.float32))
    stored = [
        (claimed[0], _posted(a, "first", start, 0.5)), (claimed[0], _posted(a, "best", start + 10, 0.7)),
        (claimed[0], _posted(a, "last", cut_frame + 49, 0.6)),
        (claimed[0], _posted(a, "realtime", cut_frame + 20, 0.6)),
        (claimed[1], _posted(b, "first", cut_frame, 0.6)), (claimed[1], _posted(b, "best", cut_frame + 80, 0.9)),
        (claimed[1], _posted(b, "last", end - 1, 0.4)),
        (claimed[1], _posted(b, "realtime", cut_frame + 25, 0.6)),  # chunk 0 analysed that frame: dropped
        (claimed[1], _posted(b, "realtime", cut_frame + 75, 0.8)),
        (claimed[1], _posted(b + 1, "best", cut_frame + 3, 0.5)),
    ]
    for job, posted in stored:
        assert jobs._event_store(job, posted) is True
    for job in claimed:
        assert jobs.job_finish(job, JobState.COMPLETED, progress=Progress())
    events = BodyEvent.objects.filter(video_archive_id=archive_id)
    kept = sorted(events.values_list("track_id", "post_policy", "frame_index"))
    assert kept == sorted([
        (a, "first", start), (a, "best", cut_frame + 80), (a, "last", end - 1),
        (a, "realtime", cut_frame + 20), (a, "realtime", cut_frame + 75), (b + 1, "best", cut_frame + 3),
    ])
    assert all(e.detector_params["track_id"] == e.track_id for e in events)
    assert api.get(f"/videos/{archive_id}/").json()["body_count"] == 6


def test_an_attempt_resuming_a_job_that_ran_uncut_is_not_cut(api, default_group, tmp_path, chunked, settings):
    archive_id = _long_archive(api, default_group, tmp_path)
    task_id = jobs.job_queue(archive_id=archive_id, send=None)
    # The first attempt ran uncut (chunking was off then) and its worker died; chunking is on by the retry.
    settings.FFV_CHUNK_SECONDS = 0
    assert jobs.job_claim(archive_id=archive_id, task_id=task_id, worker="died") is not None
    VideoArchive.objects.filter(pk=archive_id).update(job_heartbeat=None)
    settings.FFV_CHUNK_SECONDS = 6.0

    assert jobs.run_job(archive_id=archive_id, task_id=task_id, worker="w") == JobState.COMPLETED
    assert not ArchiveChunk.objects.filter(video_archive_id=archive_id).exists() and not chunked[:-1]
    assert api.get(f"/videos/{archive_id}/").json()["health_status"]["statistic"]["frames_processed"] == 500
