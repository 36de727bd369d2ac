"""`statistic.progress` and `statistic.eta_seconds`, and process_video's progress bar.

The end-to-end test polls the API while a real worker runs opencv-doc's vtest.avi, paced (`play_speed`) so that
the run lasts about ten seconds on any machine.
"""

from __future__ import annotations

import io
import os
import re
import time
from pathlib import Path

import pytest
from django.core.management import call_command

from tests.conftest import requires, upload
from videos.models import JobState, VideoArchive

DATA_DIR = Path(os.environ.get("OPENCV_DOC_DATA_DIR", "/usr/share/doc/opencv-doc/examples/data"))
NO_DETECTORS = {"face": None, "body": None, "car": None}


def _archive(api, default_group, path: Path, **stream_settings) -> int:
    body = {"camera_group": default_group.pk, "name": path.name,
            "stream_settings": {"detectors": NO_DETECTORS, **stream_settings}}
    archive_id = api.post("/videos/", body, format="json").json()["id"]
    assert upload(api, archive_id, path).status_code == 201
    return archive_id


def _statistic(api, archive_id: int) -> tuple[str, dict]:
    health = api.get(f"/videos/{archive_id}/").json()["health_status"]
    return health["status"], health["statistic"]


@pytest.mark.worker
def test_progress_goes_from_0_to_1_and_eta_is_null_until_measured_then_a_number(api, default_group, worker):
    vtest = DATA_DIR / "vtest.avi"
    requires(vtest.is_file(), f"opencv-doc footage is missing ({vtest}); set OPENCV_DOC_DATA_DIR")
    # 79.5 s of video at 8x real time: about ten seconds of processing, reported every 0.2 s.
    archive_id = _archive(api, default_group, vtest, play_speed=8)
    status, statistic = _statistic(api, archive_id)
    assert (status, statistic["progress"], statistic["eta_seconds"]) == ("DISABLED", 0, None)
    keys = list(statistic)
    assert keys[-3:] == ["job_starts", "progress", "eta_seconds"]  # ours after the page's keys

    assert api.post(f"/videos/{archive_id}/process/").status_code == 200
    polls: list[tuple[float, str, float, float | None]] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status, statistic = _statistic(api, archive_id)
        polls.append((time.monotonic(), status, statistic["progress"], statistic["eta_seconds"]))
        if status not in ("AWAITING", "STARTING", "INPROGRESS"):
            break
        time.sleep(0.1)
    finished_at = polls[-1][0]

    assert polls[-1][1:] == ("COMPLETED", 1, 0), polls[-5:]
    waiting = [poll for poll in polls if poll[1] in ("AWAITING", "STARTING")]
    assert all(poll[3] is None for poll in waiting), waiting
    running = [poll for poll in polls if poll[1] == "INPROGRESS"]
    progresses = [poll[2] for poll in running]
    assert progresses == sorted(progresses), progresses
    assert any(0 < p < 0.5 for p in progresses) and any(0.5 < p < 1 for p in progresses), progresses
    etas = [poll[3] for poll in running]
    first_eta = next(index for index, eta in enumerate(etas) if eta is not None)
    assert first_eta > 0, "an ETA before any rate could be measured"
    measured = [poll for poll in running[first_eta:] if poll[3] is not None]
    assert all(isinstance(eta, (int, float)) and eta >= 0 for _, _, _, eta in measured), measured
    # And it means something: the time that was actually left, within a couple of seconds or a third.
    for at, _, _, eta in measured[: len(measured) * 3 // 4]:
        actual = finished_at - at
        assert abs(eta - actual) <= max(2.5, actual / 3), (eta, actual)


@pytest.mark.parametrize(
    "state, purge_pending, expected",
    [
        (JobState.IDLE, False, (0, None)),
        (JobState.QUEUED, True, (0, None)),  # a new job: the previous run's figures are about to go
        (JobState.QUEUED, False, (0.25, None)),  # a resume waiting for a worker: where it stopped
        (JobState.STARTING, False, (0.25, None)),
        (JobState.IN_PROGRESS, False, (0.25, 12.5)),
        (JobState.COMPLETED, False, (1, 0)),
        (JobState.FAILED, False, (0.25, None)),  # not going to finish: no ETA
        (JobState.INTERRUPTED, False, (0.25, None)),
    ],
)
def test_progress_and_eta_by_job_state(api, default_group, state, purge_pending, expected):
    archive = VideoArchive.objects.create(
        camera_group=default_group, name="a", url="https://example.com/a.mp4", source_len=20.0, job_state=state,
        job_purge_pending=purge_pending, statistic={"processed_duration": 5.0, "eta_seconds": 12.5},
    )
    statistic = api.get(f"/videos/{archive.pk}/").json()["health_status"]["statistic"]
    assert (statistic["progress"], statistic["eta_seconds"]) == expected


def test_an_unknown_length_is_progress_0_and_no_eta_while_running(api, default_group):
    archive = VideoArchive.objects.create(
        camera_group=default_group, name="live", url="https://example.com/live", source_len=None,
        job_state=JobState.IN_PROGRESS, statistic={"processed_duration": 5.0, "eta_seconds": 3.0},
    )
    statistic = api.get(f"/videos/{archive.pk}/").json()["health_status"]["statistic"]
    assert (statistic["progress"], statistic["eta_seconds"]) == (0, None)


def test_the_schema_describes_progress_and_eta(api):
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    health = schema["components"]["schemas"]["VideoArchive"]["properties"]["health_status"]
    statistic = health["properties"]["statistic"]["properties"]
    assert statistic["progress"]["type"] == "number"
    assert (statistic["progress"]["minimum"], statistic["progress"]["maximum"]) == (0, 1)
    assert statistic["eta_seconds"]["nullable"] is True
    assert list(statistic)[-3:] == ["job_starts", "progress", "eta_seconds"]


def test_process_video_shows_a_bar_with_an_eta(api, default_group, video_factory, settings):
    settings.FFV_PROGRESS_INTERVAL = 0.2
    # 5 s of video at real time: the rate is measured after 2 s, so the ETA shows for the last ~3 s.
    archive_id = _archive(api, default_group, video_factory(frames=125, fps=25), play_speed=1)
    out = io.StringIO()

    call_command("process_video", archive_id, stdout=out)

    lines = [line.strip() for line in re.split(r"[\r\n]", out.getvalue()) if line.strip()]
    bars = [line for line in lines if line.startswith("[")]
    assert any(re.search(r"ETA 0:00:0[1-4]\b", line) for line in bars), bars
    assert "--:--" in bars[0], bars[0]  # nothing measured yet
    assert bars[-1].startswith("[" + "#" * 30 + "] 100.0%") and "ETA 0:00:00" in bars[-1], bars[-1]
    assert lines[-1].startswith(f"video archive {archive_id}: completed")
