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
