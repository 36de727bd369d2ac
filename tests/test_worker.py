"""process/ and stop/ through a real Celery worker on Redis (no eager mode)."""

from __future__ import annotations

import pytest

from tests.conftest import WorkerProcess, upload, wait_for
from videos.models import JobState, VideoArchive

pytestmark = pytest.mark.worker


# Detectors off: these tests are about the queue and job state, not detection (tests/pipeline has those).
NO_DETECTORS = {"detectors": {"face": None, "body": None, "car": None}}


def _create_with_video(api, default_group, path) -> int:
    body = {"camera_group": default_group.pk, "name": path.name, "stream_settings": NO_DETECTORS}
    archive_id = api.post("/videos/", body, format="json").json()["id"]
    assert upload(api, archive_id, path).status_code == 201
    return archive_id


def test_process_moves_archive_through_the_queue_to_completed(api, default_group, worker, video_factory):
    archive_id = _create_with_video(api, default_group, video_factory(frames=120))

    response = api.post(f"/videos/{archive_id}/process/")
    assert response.status_code == 200
    assert response.content == b""
    queued = api.get(f"/videos/{archive_id}/").json()
    assert queued["queued"] is True or queued["active"] is True or queued["finished"] is True

    def finished() -> bool:
        return api.get(f"/videos/{archive_id}/").json()["finished"]

    assert wait_for(finished, timeout=60), worker.log()
    body = api.get(f"/videos/{archive_id}/").json()
    assert body["queued"] is False
    assert body["active"] is False
    assert body["processing_start_date"] is not None
    health = body["health_status"]
    assert (health["status"], health["code"], health["enabled"]) == ("COMPLETED", "green", False)
    assert health["statistic"]["frames_processed"] == 120
    assert health["statistic"]["frame_width"] == 320
    assert health["statistic"]["frame_height"] == 240
    assert health["statistic"]["job_starts"] == 1
    assert health["statistic"]["processed_duration"] == pytest.approx(body["source_len"], abs=0.1)


def test_stop_interrupts_a_running_job_within_seconds(api, default_group, worker, video_factory, settings):
    # Long enough that it is still running when stop/ arrives, even on a fast machine.
    archive_id = _create_with_video(api, default_group, video_factory(frames=3000, width=640, height=480))
    assert api.post(f"/videos/{archive_id}/process/").status_code == 200
    assert wait_for(lambda: api.get(f"/videos/{archive_id}/").json()["active"], timeout=60), worker.log()

    assert api.post(f"/videos/{archive_id}/stop/").status_code == 200

    def interrupted() -> bool:
        return api.get(f"/videos/{archive_id}/").json()["health_status"]["status"] == "INTERRUPTED"

    assert wait_for(interrupted, timeout=5), worker.log()
    body = api.get(f"/videos/{archive_id}/").json()
    assert body["finished"] is False and body["active"] is False
    assert body["health_status"]["code"] == "gray"
    assert 0 < body["health_status"]["statistic"]["frames_processed"] < 3000


def test_a_corrupt_file_that_passed_upload_ends_misconfigured_and_the_worker_survives(
    api, default_group, worker, video_factory, media_root
):
    broken_id = _create_with_video(api, default_group, video_factory("broken.mp4", frames=30))
    # Damage the stored file after upload (as a disk fault would): the job must fail with a message.
    archive = VideoArchive.objects.get(pk=broken_id)
    Path = type(media_root)
    stored = Path(archive.source_file.path)
    stored.write_bytes(b"this is not a video any more" * 100)
    assert api.post(f"/videos/{broken_id}/process/").status_code == 200

    def failed() -> bool:
        return api.get(f"/videos/{broken_id}/").json()["health_status"]["status"] == "MISCONFIGURED"

    assert wait_for(failed, timeout=60), worker.log()
    health = api.get(f"/videos/{broken_id}/").json()["health_status"]
    assert health["code"] == "red"
    assert health["msg"]

    good_id = _create_with_video(api, default_group, video_factory("good.mp4", frames=20))
    assert api.post(f"/videos/{good_id}/process/").status_code == 200
    assert wait_for(lambda: api.get(f"/videos/{good_id}/").json()["finished"], timeout=60), worker.log()


def test_a_duplicate_delivery_of_the_task_does_not_run_the_job_twice(api, default_group, worker, video_factory):
    archive_id = _create_with_video(api, default_group, video_factory(frames=30))
    assert api.post(f"/videos/{archive_id}/process/").status_code == 200
    assert wait_for(lambda: api.get(f"/videos/{archive_id}/").json()["finished"], timeout=60), worker.log()
    archive = VideoArchive.objects.get(pk=archive_id)

    # Redeliver the same task id (as Redis does after a visibility timeout): the job is not ours to claim.
    from videos.broker import send_processing

    send_processing(archive_id, archive.job_task_id)
    assert wait_for(lambda: "nothing to do" in worker.log(), timeout=30), worker.log()
    archive.refresh_from_db()
    assert archive.job_state == JobState.COMPLETED
    assert archive.job_starts == 1


@pytest.fixture
def http_video(video_factory):
    """A video served over HTTP on loopback by a server in this test process."""
    import functools
    import http.server
    import threading

    path = video_factory("served.mp4", frames=40)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(path.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{path.name}"
    server.shutdown()
    server.server_close()


def _create_with_url(api, default_group, url: str) -> int:
    body = {"camera_group": default_group.pk, "name": "remote", "url": url, "stream_settings": NO_DETECTORS}
    response = api.post("/videos/", body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["id"]


def test_a_url_source_is_processed_when_the_operator_allows_its_host(
    api, default_group, http_video, processing_queue, media_root, tmp_path, settings, transactional_db
):
    settings.FFV_URL_ALLOW_PRIVATE = True
    archive_id = _create_with_url(api, default_group, http_video)
    worker = WorkerProcess(processing_queue, media_root, tmp_path / "worker.log",
                           extra_env={"FFV_URL_ALLOW_PRIVATE": "true"}).start()
    try:
        assert api.post(f"/videos/{archive_id}/process/").status_code == 200
        assert wait_for(lambda: api.get(f"/videos/{archive_id}/").json()["finished"], timeout=60), worker.log()
    finally:
        worker.stop()
    statistic = api.get(f"/videos/{archive_id}/").json()["health_status"]["statistic"]
    assert statistic["frames_processed"] == 40


def test_the_worker_refuses_a_url_whose_host_is_private(
    api, default_group, http_video, processing_queue, media_root, tmp_path, settings, transactional_db
):
    # The API was told private hosts are fine, the worker was not: the worker's own check (on the resolved
    # address) is what stops it.
    settings.FFV_URL_ALLOW_PRIVATE = True
    archive_id = _create_with_url(api, default_group, http_video)
    worker = WorkerProcess(processing_queue, media_root, tmp_path / "worker.log",
                           extra_env={"FFV_URL_ALLOW_PRIVATE": "false"}).start()
    try:
        assert api.post(f"/videos/{archive_id}/process/").status_code == 200

        def refused() -> bool:
            return api.get(f"/videos/{archive_id}/").json()["health_status"]["status"] == "MISCONFIGURED"

        assert wait_for(refused, timeout=60), worker.log()
    finally:
        worker.stop()
    health = api.get(f"/videos/{archive_id}/").json()["health_status"]
    assert health["code"] == "red"
    assert "private" in health["msg"]


def test_a_decompression_bomb_ends_red_within_the_memory_limit_and_the_worker_goes_on(
    api, default_group, transactional_db, processing_queue, media_root, tmp_path, video_factory
):
    # 8000x8000 frames: under a megabyte on disk, 192 MB each once decoded to BGR. The worker may use 700 MB.
    bomb = video_factory("bomb.mp4", frames=2, width=8000, height=8000)
    assert bomb.stat().st_size < 2_000_000
    limited = WorkerProcess(processing_queue, media_root, tmp_path / "limited.log",
                            {"FFV_WORKER_MEMORY_LIMIT_MB": "700"}).start()
    try:
        bomb_id = _create_with_video(api, default_group, bomb)
        assert api.post(f"/videos/{bomb_id}/process/").status_code == 200

        def red() -> bool:
            return api.get(f"/videos/{bomb_id}/").json()["health_status"]["code"] == "red"

        assert wait_for(red, timeout=90), limited.log()
        health = api.get(f"/videos/{bomb_id}/").json()["health_status"]
        assert health["status"] == "MISCONFIGURED"
        assert "8000x8000" in health["msg"] and "memory" in health["msg"]
        # The same worker process pool then runs an ordinary video to the end.
        good_id = _create_with_video(api, default_group, video_factory("good.mp4", frames=20))
        assert api.post(f"/videos/{good_id}/process/").status_code == 200
        assert wait_for(lambda: api.get(f"/videos/{good_id}/").json()["finished"], timeout=60), limited.log()
        assert limited.process.poll() is None
    finally:
        limited.stop()
