"""The periodic sweeper's housekeeping: upload temporaries of killed web workers, expired `/detect/` results."""

from __future__ import annotations

import http.client
import json
import os
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from tests.conftest import _user, make_video, token_client, upload, wait_for
from tests.test_concurrency import _TOKENS, manage
from tests.test_concurrency import gunicorn as gunicorn  # noqa: F401 (a fixture)
from tests.test_concurrency import server_env as concurrency_server_env  # noqa: F401 (a fixture)
from videos import cleanup
from videos.models import FaceDetection, VideoArchive
from videos.tasks import sweep_jobs

HOUR = 3600


@pytest.fixture
def temp_dir(settings, tmp_path) -> Path:
    folder = tmp_path / "upload-tmp"
    folder.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(folder)
    settings.FFV_UPLOAD_TEMP_MAX_AGE = HOUR
    return folder


def temp_file(folder: Path, name: str, age: float) -> Path:
    path = folder / name
    path.write_bytes(b"\0" * 1024)
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


@pytest.mark.django_db
def test_the_sweeper_removes_stale_upload_temporaries_and_keeps_fresh_ones(temp_dir):
    stale = [temp_file(temp_dir, "upload-k3j_9x0a", 2 * HOUR),  # ours (services.archive_upload_source)
             temp_file(temp_dir, "tmpa8_kq2zz.upload.mp4", 2 * HOUR),  # Django's multipart spool
             temp_file(temp_dir, "tmpb9x0qq1w.upload", 2 * HOUR)]
    fresh = [temp_file(temp_dir, "upload-fr35h000", 60),  # an upload in progress
             temp_file(temp_dir, "tmpzz00yy11.upload.avi", HOUR - 120)]
    others = [temp_file(temp_dir, "notes.txt", 30 * 24 * HOUR), temp_file(temp_dir, "upload-of-my-own.mp4", 9 * HOUR),
              temp_file(temp_dir, "tmp12345678", 9 * HOUR)]
    (temp_dir / "upload-d1rector").mkdir()
    os.utime(temp_dir / "upload-d1rector", (0, 0))

    sweep_jobs()  # what celery beat runs every FFV_SWEEP_INTERVAL

    assert sorted(path.name for path in temp_dir.iterdir()) == sorted(
        [path.name for path in fresh + others] + ["upload-d1rector"])
    assert not any(path.exists() for path in stale)


@pytest.mark.django_db
def test_the_sweeper_removes_source_copies_only_once_no_job_can_still_read_them(temp_dir, settings, tmp_path):
    fetch_dir = tmp_path / "fetch"
    fetch_dir.mkdir()
    settings.FFV_FETCH_DIR = str(fetch_dir)
    settings.FFV_LONGEST_JOB_SECONDS = 6 * HOUR
    # A job reads its copy without writing it for as long as it runs: up to the longest job plus its margin.
    stale = [temp_file(temp_dir, "source-0a9b8c7d", 8 * HOUR),
             temp_file(fetch_dir, "ffv-fetch-q1w2e3r4.video", 8 * HOUR)]
    in_use = [temp_file(temp_dir, "source-1a2b3c4d", 5 * HOUR),
              temp_file(fetch_dir, "ffv-fetch-a1s2d3f4.video", 5 * HOUR)]
    others = [temp_file(fetch_dir, "ffv-fetch-notes.txt", 30 * 24 * HOUR)]

    sweep_jobs()

    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in in_use + others)


def test_a_starting_worker_removes_the_spool_a_killed_one_left_on_its_host(transactional_db, processing_queue,
                                                                           media_root, tmp_path):
    from tests.conftest import WorkerProcess

    fetch_dir = tmp_path / "fetch"
    fetch_dir.mkdir()
    left = temp_file(fetch_dir, "ffv-fetch-k1ll3d00.video", 8 * HOUR)  # the default longest job is 6 h
    current = temp_file(fetch_dir, "ffv-fetch-l1v3j0b0.video", 60)
    worker = WorkerProcess(processing_queue, media_root, tmp_path / "worker.log",
                           {"FFV_FETCH_DIR": str(fetch_dir)}).start()
    try:
        assert wait_for(lambda: not left.exists(), timeout=60), worker.log()
        assert current.exists()
    finally:
        worker.stop()


@pytest.mark.django_db
def test_an_upload_sweeps_what_killed_workers_left_and_leaves_nothing_of_its_own(api, default_group, temp_dir,
                                                                                video_file, monkeypatch):
    """The web tier sweeps too: in docker-compose its temporary folder is not the sweeper's."""
    monkeypatch.setattr(cleanup, "_last_web_sweep", 0.0)  # as in a fresh web process (it sweeps once a minute)
    stale = temp_file(temp_dir, "upload-abandon1", 2 * HOUR)
    fresh = temp_file(temp_dir, "upload-inflight", 5)
    archive_id = api.post("/videos/", {"camera_group": default_group.pk, "name": "a"}, format="json").json()["id"]

    assert upload(api, archive_id, video_file).status_code == 201

    assert sorted(path.name for path in temp_dir.iterdir()) == [fresh.name]
    assert not stale.exists()


def test_an_upload_whose_server_was_killed_leaves_a_temporary_the_sweep_removes(
    server_env, gunicorn, tmp_path, settings  # noqa: F811 (fixtures)
):
    """A real gunicorn, killed (SIGKILL) in the middle of a streamed upload: its temporary stays behind until the
    sweep finds it stale."""
    folder = Path(server_env["FILE_UPLOAD_TEMP_DIR"])
    token = json.loads(manage(server_env, "shell", "-c", _TOKENS.format(count=1)).split("TOKENS")[-1])[0]
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", gunicorn.port, timeout=30)
    conn.request("POST", "/videos/", body=json.dumps({"camera_group": 1, "name": "killed"}), headers=headers)
    response = conn.getresponse()
    assert response.status == 201, response.read()
    archive_id = json.loads(response.read())["id"]
    conn.close()

    video = make_video(tmp_path / "clip.mp4", frames=100).read_bytes()
    conn = http.client.HTTPConnection("127.0.0.1", gunicorn.port, timeout=30)
    conn.putrequest("PUT", f"/videos/{archive_id}/upload/source_file/")
    conn.putheader("Authorization", f"Token {token}")
    conn.putheader("Content-Type", "video/mp4")
    conn.putheader("Content-Length", str(64 * 1024 * 1024))  # more than is ever sent: the upload stays open
    conn.endheaders()
    sent = 0
    while sent < 3 * 1024 * 1024:  # a few of the server's 1 MiB chunks
        conn.send(video)
        sent += len(video)
    assert wait_for(lambda: any(p.name.startswith("upload-") and p.stat().st_size for p in folder.iterdir()), 30), \
        gunicorn.log()[-3000:]
    os.killpg(gunicorn.process.pid, signal.SIGKILL)
    gunicorn.process.wait(timeout=10)
    conn.close()
    left = [path for path in folder.iterdir() if path.name.startswith("upload-")]
    assert len(left) == 1 and left[0].stat().st_size >= 1024 * 1024  # the defect: nobody deletes it

    settings.FILE_UPLOAD_TEMP_DIR = str(folder)
    settings.FFV_UPLOAD_TEMP_MAX_AGE = HOUR
    assert cleanup.upload_temps_sweep() == []  # not yet stale: it could still be an upload in progress
    stamp = time.time() - 2 * HOUR  # an hour later, as the next sweeps see it
    os.utime(left[0], (stamp, stamp))
    assert cleanup.upload_temps_sweep() == [left[0].name]
    assert not left[0].exists()


@pytest.fixture
def server_env(concurrency_server_env, tmp_path):  # noqa: F811 (a fixture)
    """test_concurrency's server (its own database, media and var folders); its uploads spool into a folder of
    this test's own."""
    folder = tmp_path / "server-upload-tmp"
    folder.mkdir()
    return {**concurrency_server_env, "FILE_UPLOAD_TEMP_DIR": str(folder)}


# --- /detect/ results expire


def detection(pk: str, age: timedelta, user) -> FaceDetection:
    row = FaceDetection.objects.create(id=pk, created_by=user, frame_coords_left=1, frame_coords_top=2,
                                       frame_coords_right=30, frame_coords_bottom=40, confidence=0.9, quality=0.9,
                                       embedding=b"\0\0\x80?" * 512)
    FaceDetection.objects.filter(pk=pk).update(created_date=timezone.now() - age)
    return row


@pytest.mark.django_db
def test_old_detections_expire_and_fresh_ones_stay_searchable(settings, default_group):
    settings.FFV_DETECTION_MAX_AGE = 24 * HOUR
    searcher = _user("searcher", ["view_faceevent"])
    detection("old-probe-aaaaaaaaaaa", timedelta(hours=25), searcher)
    detection("new-probe-bbbbbbbbbbb", timedelta(hours=23), searcher)
    client = token_client(searcher)
    assert client.get("/events/faces/", {"looks_like": "detection:old-probe-aaaaaaaaaaa"}).status_code == 200

    sweep_jobs()

    assert list(FaceDetection.objects.values_list("pk", flat=True)) == ["new-probe-bbbbbbbbbbb"]
    assert client.get("/events/faces/", {"looks_like": "detection:new-probe-bbbbbbbbbbb"}).status_code == 200
    gone = client.get("/events/faces/", {"looks_like": "detection:old-probe-aaaaaaaaaaa"})
    assert gone.status_code in (400, 404), gone.content
    assert VideoArchive.objects.count() == 0
