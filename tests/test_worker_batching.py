"""A real worker with detection in batches (FFV_DETECT_BATCH, what `auto` picks on a GPU host) stores the events
a worker detecting frame by frame stores: same tracks, frames, boxes and posting policies."""

from __future__ import annotations

import pytest

from tests.conftest import WorkerProcess, wait_for
from tests.test_worker_pipeline import create_archive, finished, footage
from videos.models import FaceEvent

pytestmark = pytest.mark.worker


def face_events(archive_id: int) -> set[tuple]:
    return set(FaceEvent.objects.filter(video_archive_id=archive_id).values_list(
        "track_id", "post_policy", "frame_index", "frame_coords_left", "frame_coords_top", "frame_coords_right",
        "frame_coords_bottom"))


def test_a_worker_detecting_in_batches_stores_the_events_of_frame_by_frame(api, default_group, transactional_db,
                                                                            processing_queue, media_root, tmp_path,
                                                                            models_dir):
    events = {}
    for batch in ("1", "4"):
        worker = WorkerProcess(processing_queue, media_root, tmp_path / f"worker-{batch}.log",
                               extra_env={"FFV_MODELS_DIR": str(models_dir), "FFV_DETECT_BATCH": batch}).start()
        try:
            archive_id = create_archive(api, default_group, footage("Megamind.avi"), {"body": None, "car": None})
            assert api.post(f"/videos/{archive_id}/process/").status_code == 200
            assert wait_for(lambda archive_id=archive_id: finished(api, archive_id), timeout=300), worker.log()
        finally:
            worker.stop()
        health = api.get(f"/videos/{archive_id}/").json()["health_status"]
        assert (health["status"], health["code"]) == ("COMPLETED", "green"), health
        assert health["statistic"]["frames_processed"] == 270
        events[batch] = face_events(archive_id)
    assert len(events["1"]) >= 2
    assert events["4"] == events["1"]


def test_a_threads_worker_runs_the_chunks_of_an_archive_at_once_sharing_batches(
    api, default_group, transactional_db, processing_queue, media_root, tmp_path, models_dir
):
    """A GPU host's worker (`--pool threads`): one process runs several chunks at once, their detection batched
    together by the process's shared batchers; the archive completes with one event per track and policy."""
    from collections import Counter

    from tests.footage import trim
    from videos.models import ArchiveChunk, BodyEvent, JobState, VideoArchive

    clip = trim(footage("vtest.avi"), tmp_path / "vtest-300.mp4", 300)  # 30 s: 3 chunks of 10 s
    detectors = {"face": None, "car": None,
                 "body": {"post_first_track_frame": True, "post_last_track_frame": True}}
    worker = WorkerProcess(processing_queue, media_root, tmp_path / "threads.log", pool="threads", concurrency=3,
                           extra_env={"FFV_MODELS_DIR": str(models_dir), "FFV_DETECT_BATCH": "2",
                                      "FFV_CHUNK_SECONDS": "10", "FFV_CHUNK_OVERLAP_SECONDS": "3",
                                      "FFV_JOB_LEASE_SECONDS": "30", "FFV_ORT_THREADS": "1"}).start()
    try:
        archive_id = create_archive(api, default_group, clip, detectors)
        assert api.post(f"/videos/{archive_id}/process/").status_code == 200
        running: list[str] = []

        def several_running() -> bool:
            labels = ArchiveChunk.objects.filter(video_archive_id=archive_id, state=JobState.IN_PROGRESS,
                                                 statistic__frames_processed__gt=5).values_list("worker", flat=True)
            running[:] = list(labels)
            return len(running) >= 2

        assert wait_for(several_running, timeout=300), worker.log()[-3000:]
        assert len({label.rsplit(" pid ", 1)[-1] for label in running}) == 1, running  # one process
        assert wait_for(lambda: finished(api, archive_id), timeout=900), worker.log()[-3000:]
    finally:
        worker.stop()
    archive = VideoArchive.objects.get(pk=archive_id)
    assert archive.job_state == JobState.COMPLETED, (archive.job_msg_code, worker.log()[-3000:])
    chunks = ArchiveChunk.objects.filter(video_archive_id=archive_id)
    assert chunks.count() >= 2 and all(chunk.state == JobState.COMPLETED for chunk in chunks)
    events = BodyEvent.objects.filter(video_archive_id=archive_id)
    policies = Counter(events.values_list("post_policy", flat=True))
    tracks = events.values("track_id").distinct().count()
    assert tracks >= 5
    assert policies["best"] == policies["first"] == policies["last"] == tracks
    # The pipelines' YOLO calls carried frames of several chunks (the worker logs each pipeline's batcher counters).
    merged = [int(line.split(" inputs, ")[1].split()[0]) for line in worker.log().splitlines()
              if "shared detection batches" in line and "YoloDetector" in line]
    assert len(merged) == chunks.count() and max(merged) > 0, worker.log()[-3000:]
