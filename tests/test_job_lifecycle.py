"""One job lifecycle (videos.jobs): a new job and a resume told apart explicitly, a claim token per attempt,
capped attempts, frozen inputs while a job runs, a sweeper that never re-sends a job waiting in line, and job
messages as codes rendered in the request's language."""

from __future__ import annotations

import io
import os
import signal
import time
from datetime import timedelta

import pytest
import redis
from django.core.management import call_command
from django.utils import timezone

from processing.pipeline import Progress
from processing.posting import PostedObject
from tests.conftest import WorkerProcess, redis_url, token_client, upload, wait_for
from tests.errors import assert_error
from tests.hygiene import control_queue_of
from videos import broker, jobs
from videos.models import BodyEvent, JobState, VideoArchive

NO_DETECTORS = {"detectors": {"face": None, "body": None, "car": None}}


def _archive_with_video(api, default_group, video_file, stream_settings=None) -> int:
    body = {"camera_group": default_group.pk, "name": "clip", "stream_settings": stream_settings or NO_DETECTORS}
    archive_id = api.post("/videos/", body, format="json").json()["id"]
    assert upload(api, archive_id, video_file).status_code == 201
    return archive_id


def _posted(frame_index: int = 7, track_id: int = 1) -> PostedObject:
    return PostedObject(kind="body", track_id=track_id, policy="best", frame_index=frame_index, timestamp=0.28,
                        box=(1, 2, 30, 40), quality=0.9, confidence=0.9, thumbnail=b"jpeg", fullframe=b"jpeg",
                        fullframe_format="jpg", normalized=None, detector_params={})


def _expire_heartbeat(archive_id: int, settings) -> None:
    old = timezone.now() - timedelta(seconds=settings.FFV_JOB_LEASE_SECONDS + 5)
    VideoArchive.objects.filter(pk=archive_id).update(job_heartbeat=old)


# --- a new job and a resume


def test_process_video_on_a_finished_archive_is_a_new_job_that_purges_the_previous_run(
    api, default_group, video_file
):
    archive_id = _archive_with_video(api, default_group, video_file)
    call_command("process_video", archive_id, stdout=io.StringIO())
    first = VideoArchive.objects.get(pk=archive_id)
    assert (first.job_state, first.job_starts) == (JobState.COMPLETED, 1)
    # An event of that first run (as a detector would have posted).
    claim = jobs.ClaimedJob(archive_id=archive_id, task_id=first.job_task_id, claim="x", camera_group_id=1,
                            source_name="", url=None, stream_settings={})
    VideoArchive.objects.filter(pk=archive_id).update(job_state=JobState.IN_PROGRESS, job_claim="x")
    assert jobs._event_store(claim, _posted()) is True
    VideoArchive.objects.filter(pk=archive_id).update(job_state=JobState.COMPLETED, job_claim="")

    # A manual re-run is a new job: it starts at attempt 1 and from the first frame, without the old events.
    call_command("process_video", archive_id, stdout=io.StringIO())
    again = VideoArchive.objects.get(pk=archive_id)
    assert (again.job_state, again.job_starts) == (JobState.COMPLETED, 1)
    assert not BodyEvent.objects.filter(video_archive_id=archive_id).exists()
    assert again.job_checkpoint["resumed_from_frame"] is None
    assert api.get(f"/videos/{archive_id}/").json()["health_status"]["statistic"]["frames_processed"] == 50


def test_a_resumed_attempt_keeps_what_the_crashed_one_stored(api, default_group, video_file, settings):
    archive_id = _archive_with_video(api, default_group, video_file)
    task_id = jobs.job_queue(archive_id=archive_id, send=None)
    first = jobs.job_claim(archive_id=archive_id, task_id=task_id, worker="a")
    assert first is not None and not first.resumed and first.attempt == 1
    assert jobs._event_store(first, _posted()) is True
    _expire_heartbeat(archive_id, settings)  # its worker died

    second = jobs.job_claim(archive_id=archive_id, task_id=task_id, worker="b")
    assert second is not None and second.resumed and second.attempt == 2
    assert BodyEvent.objects.filter(video_archive_id=archive_id).count() == 1
    assert VideoArchive.objects.get(pk=archive_id).job_starts == 2


# --- a claim per attempt


def test_a_worker_whose_claim_was_taken_over_writes_nothing_and_stops(api, default_group, video_file, settings):
    archive_id = _archive_with_video(api, default_group, video_file)
    task_id = jobs.job_queue(archive_id=archive_id, send=None)
    stalled = jobs.job_claim(archive_id=archive_id, task_id=task_id, worker="stalled")
    assert jobs.job_report(stalled, Progress(frames_processed=5)) is True
    _expire_heartbeat(archive_id, settings)
    # The same task id (the sweeper re-sends it): only the claim token tells the two attempts apart.
    taker = jobs.job_claim(archive_id=archive_id, task_id=task_id, worker="taker")
    assert taker is not None and taker.claim != stalled.claim

    assert jobs.job_report(stalled, Progress(frames_processed=999)) is False
    assert jobs._event_store(stalled, _posted(frame_index=900, track_id=9)) is None
    assert jobs.job_finish(stalled, JobState.COMPLETED, progress=Progress(frames_processed=999)) is False
    archive = VideoArchive.objects.get(pk=archive_id)
    assert archive.job_state == JobState.STARTING and archive.job_worker == "taker"
    assert archive.statistic["frames_processed"] == 5
    assert not BodyEvent.objects.filter(video_archive_id=archive_id).exists()

    assert jobs.job_report(taker, Progress(frames_processed=6)) is True
    assert jobs._event_store(taker, _posted()) is True
    assert jobs.job_finish(taker, JobState.COMPLETED, progress=Progress(frames_processed=50)) is True
    body = api.get(f"/videos/{archive_id}/").json()
    assert body["health_status"]["status"] == "COMPLETED" and body["body_count"] == 1


# --- capped attempts


def test_attempts_past_the_cap_end_the_job_red_with_a_message(api, default_group, video_file, settings, operator):
    settings.FFV_JOB_MAX_ATTEMPTS = 2
    archive_id = _archive_with_video(api, default_group, video_file)
    task_id = jobs.job_queue(archive_id=archive_id, send=None)
    for _attempt in range(2):
        assert jobs.job_claim(archive_id=archive_id, task_id=task_id, worker="crashes") is not None
        _expire_heartbeat(archive_id, settings)

    sent: list[int] = []
    assert jobs.jobs_sweep(enqueue=lambda archive, task: sent.append(archive), holds=lambda *a: True) == []
    assert sent == []  # not re-sent: failed
    assert jobs.job_claim(archive_id=archive_id, task_id=task_id, worker="late") is None
    health = api.get(f"/videos/{archive_id}/").json()["health_status"]
    assert (health["status"], health["code"]) == ("MISCONFIGURED", "red")
    assert "2 times" in health["msg"]
    russian = token_client(operator, "ru").get(f"/videos/{archive_id}/").json()["health_status"]["msg"]
    assert "2" in russian and russian != health["msg"]


def test_a_claim_past_the_cap_fails_the_job_too(api, default_group, video_file, settings):
    # A redelivered message may reach a worker before the sweeper sees the dead attempt.
    settings.FFV_JOB_MAX_ATTEMPTS = 1
    archive_id = _archive_with_video(api, default_group, video_file)
    task_id = jobs.job_queue(archive_id=archive_id, send=None)
    assert jobs.job_claim(archive_id=archive_id, task_id=task_id, worker="crashes") is not None
    _expire_heartbeat(archive_id, settings)
    assert jobs.job_claim(archive_id=archive_id, task_id=task_id, worker="next") is None
    archive = VideoArchive.objects.get(pk=archive_id)
    assert (archive.job_state, archive.job_msg_code, archive.job_starts) == (JobState.FAILED, "attempts_exhausted", 1)


# --- what a job runs from does not change under it


@pytest.mark.parametrize("change", [
    {"stream_settings": {"imotion_threshold": 3}},
    {"url": "https://example.com/other.mp4"},
])
def test_job_inputs_cannot_change_while_it_is_queued_or_running(api, default_group, video_file, change):
    archive_id = _archive_with_video(api, default_group, video_file)
    jobs.job_queue(archive_id=archive_id, send=None)
    before = api.get(f"/videos/{archive_id}/").json()

    body = assert_error(api.patch(f"/videos/{archive_id}/", change, format="json"), 409, "CONFLICT")
    assert body["param"] == next(iter(change))
    after = api.get(f"/videos/{archive_id}/").json()
    assert after["stream_settings"] == before["stream_settings"] and after["url"] == before["url"]
    # Whatever the job does not run from can change; and a client echoing the archive back is fine.
    assert api.patch(f"/videos/{archive_id}/", {"name": "renamed"}, format="json").status_code == 200
    echoed = {key: after[key] for key in ("camera_group", "name", "url", "stream_settings")}
    assert api.put(f"/videos/{archive_id}/", {**echoed, "name": "again"}, format="json").status_code == 200

    assert api.post(f"/videos/{archive_id}/stop/").status_code == 200  # a queued job is cancelled at once
    assert api.patch(f"/videos/{archive_id}/", change, format="json").status_code == 200


# --- the sweeper


@pytest.fixture
def redis_client(processing_queue):
    return redis.Redis.from_url(redis_url())


def test_the_sweeper_never_resends_a_job_waiting_in_line_only_one_whose_message_is_gone(
    api, default_group, video_file, processing_queue, redis_client, settings, django_capture_on_commit_callbacks
):
    settings.FFV_QUEUE_STALE_SECONDS = 10
    archive_id = _archive_with_video(api, default_group, video_file)
    with django_capture_on_commit_callbacks(execute=True):
        task_id = jobs.job_queue(archive_id=archive_id)
    assert redis_client.llen(processing_queue) == 1
    long_ago = timezone.now() - timedelta(hours=2)
    VideoArchive.objects.filter(pk=archive_id).update(queued_date=long_ago)

    assert broker.broker_holds(task_id, processing_queue) is True
    assert jobs.jobs_sweep() == []  # queued for two hours, but in line: left alone
    assert redis_client.llen(processing_queue) == 1

    redis_client.delete(processing_queue)  # the message is lost (a broker restart without persistence)
    assert broker.broker_holds(task_id, processing_queue) is False
    assert jobs.jobs_sweep() == [archive_id]
    assert redis_client.llen(processing_queue) == 1
    assert jobs.jobs_sweep() == []  # sent again once, then in line again
    redis_client.delete(processing_queue)


def test_the_sweeper_resends_a_job_by_its_heartbeat_alone(api, default_group, video_file, settings):
    archive_id = _archive_with_video(api, default_group, video_file)
    task_id = jobs.job_queue(archive_id=archive_id, send=None)
    claimed = jobs.job_claim(archive_id=archive_id, task_id=task_id, worker="a")
    sent: list[tuple[int, str]] = []
    resend = sent.append

    # Started long ago, but heartbeating: alive.
    VideoArchive.objects.filter(pk=archive_id).update(processing_start_date=timezone.now() - timedelta(days=1))
    assert jobs.job_report(claimed, Progress(frames_processed=1))
    assert jobs.jobs_sweep(enqueue=lambda *args: resend(args), holds=lambda *a: True) == []
    _expire_heartbeat(archive_id, settings)
    assert jobs.jobs_sweep(enqueue=lambda *args: resend(args), holds=lambda *a: True) == [archive_id]
    assert sent == [(archive_id, task_id)]
    assert VideoArchive.objects.get(pk=archive_id).job_state == JobState.QUEUED


def test_clustering_goes_to_the_control_queue(processing_queue, redis_client):
    broker.send_clustering(123)
    control = control_queue_of(processing_queue)
    assert (redis_client.llen(control), redis_client.llen(processing_queue)) == (1, 0)
    redis_client.delete(control)


# --- end to end, with a real worker


@pytest.mark.worker
def test_a_video_that_kills_its_worker_is_not_run_forever_and_the_fleet_goes_on(
    api, default_group, processing_queue, media_root, tmp_path, video_factory, transactional_db
):
    worker = WorkerProcess(processing_queue, media_root, tmp_path / "worker.log", beat=True, extra_env={
        "FFV_JOB_LEASE_SECONDS": "2", "FFV_SWEEP_INTERVAL": "0.5", "FFV_JOB_MAX_ATTEMPTS": "2",
    }).start()
    try:
        killer = _archive_with_video(api, default_group, video_factory("long.mp4", frames=3000, width=640,
                                                                       height=480))
        assert api.post(f"/videos/{killer}/process/").status_code == 200
        for attempt in (1, 2):
            assert wait_for(lambda a=attempt: VideoArchive.objects.filter(
                pk=killer, job_starts=a, job_state=JobState.IN_PROGRESS).exists(), timeout=60), worker.log()
            # The pool process running it dies, as with a segfault or the OOM killer.
            pid = int(VideoArchive.objects.get(pk=killer).job_worker.rsplit(" pid ", 1)[1])
            os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda: api.get(f"/videos/{killer}/").json()["health_status"]["status"] == "MISCONFIGURED",
                        timeout=60), worker.log()
        health = api.get(f"/videos/{killer}/").json()["health_status"]
        assert health["code"] == "red" and "2 times" in health["msg"]
        assert VideoArchive.objects.get(pk=killer).job_starts == 2
        time.sleep(3)  # several sweeps later it is still not retried
        assert VideoArchive.objects.get(pk=killer).job_starts == 2

        good = _archive_with_video(api, default_group, video_factory("good.mp4", frames=20))
        assert api.post(f"/videos/{good}/process/").status_code == 200
        assert wait_for(lambda: api.get(f"/videos/{good}/").json()["finished"], timeout=60), worker.log()
    finally:
        worker.stop()


@pytest.mark.worker
def test_job_messages_are_codes_rendered_in_the_request_language_without_server_paths(
    api, default_group, processing_queue, media_root, tmp_path, video_file, transactional_db, operator
):
    secret_dir = tmp_path / "srv-secret-models"
    worker = WorkerProcess(processing_queue, media_root, tmp_path / "worker.log", extra_env={
        "FFV_OBJECT_MODEL": str(secret_dir / "yolov8n.onnx"),
    }).start()
    try:
        archive_id = _archive_with_video(api, default_group, video_file,
                                         {"detectors": {"face": None, "car": None}})
        assert api.post(f"/videos/{archive_id}/process/").status_code == 200
        assert wait_for(lambda: api.get(f"/videos/{archive_id}/").json()["health_status"]["code"] == "red",
                        timeout=60), worker.log()
    finally:
        worker.stop()
    english = api.get(f"/videos/{archive_id}/").json()["health_status"]["msg"]
    russian = token_client(operator, "ru").get(f"/videos/{archive_id}/").json()["health_status"]["msg"]
    assert "yolov8n.onnx" in english and "prepare_models" in english
    assert str(tmp_path) not in english and "srv-secret-models" not in english
    assert str(tmp_path) not in russian and "srv-secret-models" not in russian
    assert russian != english and any("а" <= char <= "я" for char in russian.lower())


@pytest.mark.worker
def test_a_job_that_decodes_no_frame_is_red_not_completed(api, default_group, worker, video_file):
    # mjpeg forced onto an mp4: the demuxer opens it but yields nothing.
    archive_id = _archive_with_video(api, default_group, video_file, {**NO_DETECTORS, "ffmpeg_format": "mjpeg"})
    assert api.post(f"/videos/{archive_id}/process/").status_code == 200
    assert wait_for(lambda: not api.get(f"/videos/{archive_id}/").json()["health_status"]["enabled"]
                    and api.get(f"/videos/{archive_id}/").json()["health_status"]["status"] != "AWAITING",
                    timeout=60), worker.log()
    health = api.get(f"/videos/{archive_id}/").json()["health_status"]
    assert (health["status"], health["code"]) == ("MISCONFIGURED", "red"), health
    assert health["msg"]


@pytest.mark.worker
def test_a_source_file_gone_from_storage_is_red_with_its_own_message(api, default_group, worker, video_file,
                                                                     media_root):
    archive_id = _archive_with_video(api, default_group, video_file)
    stored = media_root / VideoArchive.objects.get(pk=archive_id).source_file.name
    stored.unlink()  # an operator's cleanup, or a storage that lost it
    assert api.post(f"/videos/{archive_id}/process/").status_code == 200
    assert wait_for(lambda: api.get(f"/videos/{archive_id}/").json()["health_status"]["code"] == "red",
                    timeout=60), worker.log()
    health = api.get(f"/videos/{archive_id}/").json()["health_status"]
    assert health["status"] == "MISCONFIGURED"
    assert "no longer in storage" in health["msg"] and "model" not in health["msg"]
    assert str(media_root) not in health["msg"]


def test_every_job_message_code_reads_in_english_and_russian_without_paths():
    from django.utils import translation

    from processing.errors import MESSAGES as PROCESSING_MESSAGES
    from videos.job_messages import MESSAGES, render_job_message, safe_params

    assert set(PROCESSING_MESSAGES) <= set(MESSAGES)
    params = safe_params({"attempts": 3, "decoded": 10, "expected": 300, "error": "KeyError", "host": "example.com",
                          "reason": "Invalid data", "width": 8000, "height": 8000, "max_pixels": 1, "count": 5,
                          "seconds": 60, "tracker": "x", "kind": "face", "available": "simple_iou",
                          "crop": "10x10+0+0", "frame_width": 5, "frame_height": 5,
                          "file": "/srv/models/secret/yolov8n.onnx", "limit": 5})
    assert params["file"] == "yolov8n.onnx"
    for code in MESSAGES:
        with translation.override("en"):
            english = render_job_message(code, params)
        with translation.override("ru"):
            russian = render_job_message(code, params)
        assert "%(" not in english and "%(" not in russian, code
        assert russian != english and any("а" <= char <= "я" for char in russian.lower()), code
        assert "/srv/" not in english + russian


@pytest.mark.worker
def test_a_job_that_decodes_a_small_part_of_the_video_is_yellow_with_a_message(
    api, default_group, worker, video_factory, operator
):
    # An AVI cut at 40% of its bytes: its header still says 200 frames, about 60 can be decoded.
    whole = video_factory("whole.avi", frames=200)
    cut = whole.with_name("cut.avi")
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.4)])
    archive_id = _archive_with_video(api, default_group, cut)
    assert api.post(f"/videos/{archive_id}/process/").status_code == 200
    assert wait_for(lambda: api.get(f"/videos/{archive_id}/").json()["finished"], timeout=60), worker.log()

    health = api.get(f"/videos/{archive_id}/").json()["health_status"]
    assert (health["status"], health["code"]) == ("COMPLETED", "yellow"), health
    decoded = health["statistic"]["frames_processed"]
    assert 0 < decoded < 100
    assert f"Only {decoded} of about 200 frames" in health["msg"]
    russian = token_client(operator, "ru").get(f"/videos/{archive_id}/").json()["health_status"]
    assert f"{decoded} из примерно 200" in russian["msg"] and russian["code_desc"] != health["code_desc"]

    # The whole file is green, without a message.
    whole_id = _archive_with_video(api, default_group, whole)
    assert api.post(f"/videos/{whole_id}/process/").status_code == 200
    assert wait_for(lambda: api.get(f"/videos/{whole_id}/").json()["finished"], timeout=60), worker.log()
    health = api.get(f"/videos/{whole_id}/").json()["health_status"]
    assert (health["code"], health["msg"], health["statistic"]["frames_processed"]) == ("green", "", 200)
