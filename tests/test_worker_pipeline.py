"""Real footage through the whole API flow with a real worker: upload, process, poll, events in the database.

Needs the prepared models (`manage.py prepare_models`, run by ./dev) and Debian opencv-doc's sample videos
(fetched by ./dev test); skips without them locally and fails under CI=true.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, WorkerProcess, requires, upload, wait_for
from tests.footage import trim
from videos.models import BodyEvent, FaceEvent, JobState, VideoArchive

pytestmark = pytest.mark.worker

DATA_DIR = Path(os.environ.get("OPENCV_DOC_DATA_DIR", "/usr/share/doc/opencv-doc/examples/data"))


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """Prepared once per run, as the setup step does; a subprocess so this test process loads no model."""
    target = ROOT / "var" / "models"
    result = subprocess.run([sys.executable, "manage.py", "prepare_models", "--models-dir", str(target)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    requires(result.returncode == 0, f"models cannot be prepared: {result.stderr[-500:]}")
    return target


def footage(name: str) -> Path:
    path = DATA_DIR / name
    requires(path.is_file(), f"{path} is missing (./dev test fetches Debian's opencv-doc)")
    return path


@pytest.fixture
def model_worker(transactional_db, processing_queue, media_root, tmp_path, models_dir):
    process = WorkerProcess(processing_queue, media_root, tmp_path / "worker.log",
                            extra_env={"FFV_MODELS_DIR": str(models_dir), "FFV_JOB_LEASE_SECONDS": "5"}).start()
    yield process
    process.stop()


def create_archive(api, group, path: Path, detectors: dict) -> int:
    body = {"camera_group": group.pk, "name": path.name, "stream_settings": {"detectors": detectors}}
    archive_id = api.post("/videos/", body, format="json").json()["id"]
    assert upload(api, archive_id, path, content_type="application/octet-stream").status_code == 201
    return archive_id


def finished(api, archive_id: int) -> bool:
    status = api.get(f"/videos/{archive_id}/").json()["health_status"]["status"]
    return status in ("COMPLETED", "MISCONFIGURED")


def test_megamind_gives_face_events_and_counts_agree(api, default_group, model_worker):
    archive_id = create_archive(api, default_group, footage("Megamind.avi"), {"body": None, "car": None})
    assert api.post(f"/videos/{archive_id}/process/").status_code == 200
    assert wait_for(lambda: finished(api, archive_id), timeout=300), model_worker.log()

    body = api.get(f"/videos/{archive_id}/").json()
    health = body["health_status"]
    assert (health["status"], health["code"]) == ("COMPLETED", "green"), health
    faces = FaceEvent.objects.filter(video_archive_id=archive_id)
    assert faces.count() >= 2
    assert body["face_count"] == faces.count() == health["statistic"]["faces_posted"]
    assert health["statistic"]["objects"]["face"]["posted"] == faces.count()
    assert body["body_count"] == body["car_count"] == 0
    assert health["statistic"]["frames_processed"] == 270
    assert (health["statistic"]["frame_width"], health["statistic"]["frame_height"]) == (720, 528)
    for event in faces:
        assert event.camera_group_id == default_group.pk
        assert 0 <= event.frame_timestamp <= body["source_len"] + 0.1
        assert event.thumbnail.storage.exists(event.thumbnail.name)


def test_a_worker_killed_mid_job_is_resumed_by_another_without_duplicate_events(
    api, default_group, model_worker, processing_queue, media_root, tmp_path, models_dir
):
    detectors = {"face": None, "car": None}
    # 300 of vtest's 795 frames keep the two runs short.
    clip = trim(footage("vtest.avi"), tmp_path / "vtest-300.mp4", 300)
    reference_id = create_archive(api, default_group, clip, detectors)
    assert api.post(f"/videos/{reference_id}/process/").status_code == 200
    assert wait_for(lambda: finished(api, reference_id), timeout=600), model_worker.log()
    reference = BodyEvent.objects.filter(video_archive_id=reference_id).count()
    assert reference > 0

    archive_id = create_archive(api, default_group, clip, detectors)
    assert api.post(f"/videos/{archive_id}/process/").status_code == 200
    assert wait_for(
        lambda: api.get(f"/videos/{archive_id}/").json()["health_status"]["statistic"].get("frames_processed", 0)
        > 100,
        timeout=300,
    ), model_worker.log()
    model_worker.kill(signal.SIGKILL)
    assert VideoArchive.objects.get(pk=archive_id).job_state in (JobState.STARTING, JobState.IN_PROGRESS)

    # The task is unacked with the dead worker; the sweeper (beat, and every worker at start) re-sends the job
    # once its lease has run out, and the next worker resumes it.
    second = WorkerProcess(processing_queue, media_root, tmp_path / "worker2.log",
                           extra_env={"FFV_MODELS_DIR": str(models_dir), "FFV_JOB_LEASE_SECONDS": "5",
                                      "FFV_SWEEP_INTERVAL": "1"}, beat=True).start()
    try:
        assert wait_for(lambda: finished(api, archive_id), timeout=600), second.log()
    finally:
        second.stop()
    body = api.get(f"/videos/{archive_id}/").json()
    assert body["health_status"]["status"] == "COMPLETED"
    assert body["health_status"]["statistic"]["job_starts"] == 2
    assert BodyEvent.objects.filter(video_archive_id=archive_id).count() == reference
    assert body["body_count"] == reference
