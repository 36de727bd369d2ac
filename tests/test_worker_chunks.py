"""One long archive across several real workers (FFV_CHUNK_SECONDS): chunks at keyframes, tracks stitched.

A 40 s cut of opencv-doc's vtest.avi is processed once as one job (the reference) and once cut into chunks run
by two worker processes, one of them killed mid-chunk. Needs the prepared models and the footage (see
tests/test_worker_pipeline.py); fails under CI=true without them.
"""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest

from tests.conftest import WorkerProcess, wait_for
from tests.footage import trim
from tests.test_worker_pipeline import create_archive, finished, footage
from videos.models import ArchiveChunk, BodyEvent, JobState, VideoArchive

pytestmark = pytest.mark.worker

# People only, every track posting its first, best and last object: each policy must come out once per object.
DETECTORS = {"face": None, "car": None, "body": {"post_first_track_frame": True, "post_last_track_frame": True}}
CHUNKED = {"FFV_CHUNK_SECONDS": "15", "FFV_CHUNK_OVERLAP_SECONDS": "3"}


@pytest.fixture
def long_clip(tmp_path):
    return trim(footage("vtest.avi"), tmp_path / "vtest-400.mp4", 400)  # 40 s at 10 fps, a keyframe every 1.2 s


def _worker(name, processing_queue, media_root, tmp_path, models_dir, extra=None, *, beat=False):
    env = {"FFV_MODELS_DIR": str(models_dir), "FFV_JOB_LEASE_SECONDS": "5", "FFV_SWEEP_INTERVAL": "1",
           **(extra or {})}
    return WorkerProcess(processing_queue, media_root, tmp_path / f"{name}.log", extra_env=env, beat=beat).start()


def _tracks(archive_id: int) -> Counter:
    """Events per posting policy, and distinct tracks."""
    events = BodyEvent.objects.filter(video_archive_id=archive_id)
    counts = Counter(events.values_list("post_policy", flat=True))
    counts["tracks"] = events.values("track_id").distinct().count()
    return counts


def _pid(worker_label: str) -> str:
    return worker_label.rsplit(" pid ", 1)[-1]


def test_a_long_archive_runs_in_chunks_on_two_workers_and_gives_the_events_of_one_run(
    transactional_db, api, default_group, processing_queue, media_root, tmp_path, models_dir, long_clip
):
    reference_worker = _worker("reference", processing_queue, media_root, tmp_path, models_dir,
                               {"FFV_CHUNK_SECONDS": "0"})
    try:
        reference_id = create_archive(api, default_group, long_clip, DETECTORS)
        assert api.post(f"/videos/{reference_id}/process/").status_code == 200
        started = time.monotonic()
        assert wait_for(lambda: finished(api, reference_id), timeout=900), reference_worker.log()
        one_job_seconds = time.monotonic() - started
        # (its clustering done here, so that the chunked run's workers below receive only the chunked one's)
        assert wait_for(lambda: VideoArchive.objects.get(pk=reference_id).body_cluster_count is not None,
                        timeout=120), reference_worker.log()
    finally:
        reference_worker.stop()
    assert not ArchiveChunk.objects.filter(video_archive_id=reference_id).exists()
    reference = _tracks(reference_id)
    assert reference["best"] >= 5, reference

    first = _worker("first", processing_queue, media_root, tmp_path, models_dir, CHUNKED)
    second = _worker("second", processing_queue, media_root, tmp_path, models_dir, CHUNKED, beat=True)
    try:
        archive_id = create_archive(api, default_group, long_clip, DETECTORS)
        assert api.post(f"/videos/{archive_id}/process/").status_code == 200
        started = time.monotonic()
        assert wait_for(lambda: ArchiveChunk.objects.filter(video_archive_id=archive_id).count() == 3,
                        timeout=120), first.log() + second.log()
        # Both workers run a chunk at once, and the archive's statistic sums theirs while they run.
        both_running = []

        def two_running() -> bool:
            running = ArchiveChunk.objects.filter(video_archive_id=archive_id, state=JobState.IN_PROGRESS,
                                                  statistic__frames_processed__gt=20)
            both_running[:] = list(running.values_list("pk", "worker", "statistic"))
            return len(both_running) == 2

        assert wait_for(two_running, timeout=300), first.log() + second.log()
        assert len({_pid(label) for _pk, label, _s in both_running}) == 2
        health = api.get(f"/videos/{archive_id}/").json()["health_status"]
        assert health["status"] == "INPROGRESS"
        assert health["statistic"]["frames_processed"] >= sum(s["frames_processed"] for *_x, s in both_running)
        assert 0 < health["statistic"]["progress"] < 1

        # The first worker dies mid-chunk: that chunk alone goes back in line (the sweeper, after the lease)
        # and the second worker resumes it; the others are not run again.
        labels_at_kill = {pk: label for pk, label, _s in both_running}
        first.kill(signal.SIGKILL)
        assert wait_for(lambda: finished(api, archive_id), timeout=900), second.log()
        chunked_seconds = time.monotonic() - started
        # Clustering runs once, after the last chunk (its own task, on the control queue).
        assert wait_for(lambda: VideoArchive.objects.get(pk=archive_id).body_cluster_count is not None,
                        timeout=120), second.log()
    finally:
        first.stop()
        second.stop()
    archive = VideoArchive.objects.get(pk=archive_id)
    assert archive.job_state == JobState.COMPLETED, (archive.job_msg_code, second.log()[-3000:])
    chunks = list(ArchiveChunk.objects.filter(video_archive_id=archive_id).order_by("index"))
    assert [chunk.state for chunk in chunks] == [JobState.COMPLETED] * 3
    print(f"\nchunks {[(c.index, c.start, c.end, c.starts, c.worker) for c in chunks]}; "
          f"one job {one_job_seconds:.0f} s, chunked (one worker killed) {chunked_seconds:.0f} s")
    restarted = [chunk for chunk in chunks if chunk.starts > 1]
    assert len(restarted) == 1 and all(chunk.starts == 1 for chunk in chunks if chunk not in restarted)
    assert restarted[0].pk in labels_at_kill and restarted[0].worker != labels_at_kill[restarted[0].pk]

    # The same people as the one run: per posting policy one event per track, tracks crossing a cut stitched
    # into one (the chunks posted more, each its part of such a track).
    chunked = _tracks(archive_id)
    posted_by_chunks = sum(chunk.statistic["objects"]["body"]["posted"] for chunk in chunks)
    print(f"reference {dict(reference)}, chunked {dict(chunked)}, posted by the chunks {posted_by_chunks}")
    assert posted_by_chunks > sum(chunked[p] for p in ("best", "first", "last"))
    assert chunked["best"] == chunked["first"] == chunked["last"] == chunked["tracks"]
    margin = max(2, round(0.15 * reference["tracks"]))
    assert abs(chunked["tracks"] - reference["tracks"]) <= margin, (chunked, reference)
    body = api.get(f"/videos/{archive_id}/").json()
    assert body["body_count"] == BodyEvent.objects.filter(video_archive_id=archive_id).count()
    assert body["health_status"]["statistic"]["bodies_posted"] == body["body_count"]
    assert body["health_status"]["statistic"]["progress"] == 1

    logs = first.log() + second.log()
    received = [line for line in logs.splitlines() if "videos.cluster_archive[" in line and "received" in line]
    assert len(received) == 1, received


def test_stop_ends_every_chunk_and_processing_again_purges_once(
    transactional_db, api, default_group, processing_queue, media_root, tmp_path, models_dir, long_clip
):
    first = _worker("first", processing_queue, media_root, tmp_path, models_dir, CHUNKED)
    second = _worker("second", processing_queue, media_root, tmp_path, models_dir, CHUNKED)
    try:
        archive_id = create_archive(api, default_group, long_clip, DETECTORS)
        assert api.post(f"/videos/{archive_id}/process/").status_code == 200
        chunks = ArchiveChunk.objects.filter(video_archive_id=archive_id)
        assert wait_for(lambda: chunks.filter(state=JobState.IN_PROGRESS).count() == 2, timeout=300), first.log()
        assert api.post(f"/videos/{archive_id}/stop/").status_code == 200
        # Both running chunks stop within a report or two; the one waiting in line ends without running.
        assert wait_for(lambda: api.get(f"/videos/{archive_id}/").json()["health_status"]["status"]
                        == "INTERRUPTED", timeout=60), first.log() + second.log()
        states = sorted((chunk.state, chunk.starts) for chunk in chunks)
        assert states == [(JobState.INTERRUPTED, 0), (JobState.INTERRUPTED, 1), (JobState.INTERRUPTED, 1)]
        old_job = VideoArchive.objects.get(pk=archive_id).job_task_id
        old_events = set(BodyEvent.objects.filter(video_archive_id=archive_id).values_list("pk", flat=True))

        # A new job: its first attempt purges the stopped job's events and chunks once; chunks claimed later
        # (the third, after one of the first two ends) add to the events and never purge them again.
        assert api.post(f"/videos/{archive_id}/process/").status_code == 200
        seen: list[int] = []

        def sample() -> bool:
            count = BodyEvent.objects.filter(video_archive_id=archive_id).count()
            # Counted while a chunk still ran: before the stitching at the end, which removes duplicates.
            if ArchiveChunk.objects.filter(video_archive_id=archive_id).exclude(job_task_id=old_job).exclude(
                    state__in=(JobState.COMPLETED, JobState.FAILED, JobState.INTERRUPTED)).exists():
                seen.append(count)
            return finished(api, archive_id)

        assert wait_for(sample, timeout=900, interval=0.5), first.log() + second.log()
    finally:
        first.stop()
        second.stop()
    assert not ArchiveChunk.objects.filter(video_archive_id=archive_id, job_task_id=old_job).exists()
    new_chunks = ArchiveChunk.objects.filter(video_archive_id=archive_id)
    assert sorted(new_chunks.values_list("state", "starts")) == [(JobState.COMPLETED, 1)] * 3
    assert seen and seen == sorted(seen) and seen[-1] > 0, seen
    assert not BodyEvent.objects.filter(pk__in=old_events).exists()
    body_count = api.get(f"/videos/{archive_id}/").json()["body_count"]
    assert 0 < body_count == BodyEvent.objects.filter(video_archive_id=archive_id).count() <= seen[-1]
