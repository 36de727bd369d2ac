"""GET /metrics (videos.metrics): who may scrape it, what it shows, and that every process adds to it.

The end-to-end test runs a real Celery worker and a real gunicorn with two processes on one
PROMETHEUS_MULTIPROC_DIR: the worker's frame counters and both web processes' request counts show in one scrape,
whichever process answers it.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from ipaddress import ip_network
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import (
    ROOT,
    WorkerProcess,
    _user,
    database_url_for_worker,
    redis_url,
    token_client,
    upload,
    wait_for,
)
from tests.errors import ERROR_KEYS, assert_error
from tests.hygiene import control_queue_of
from videos.auth_views import token_create
from videos.models import JobState, VideoArchive

NO_DETECTORS = {"detectors": {"face": None, "body": None, "car": None}}
LOOPBACK = [ip_network("127.0.0.1/32")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of an exposition."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(parsed: dict, name: str, **labels: str) -> float | None:
    return parsed.get((name, tuple(sorted(labels.items()))))


def total(parsed: dict, name: str, **labels: str) -> float:
    """The sum over every sample of `name` whose labels include `labels`."""
    return sum(v for (sample, sample_labels), v in parsed.items()
               if sample == name and set(labels.items()) <= set(sample_labels))


# --- who may scrape


def test_a_listed_address_scrapes_without_a_token_and_sees_jobs_by_state(anon_api, settings, default_group):
    settings.FFV_METRICS_ALLOWED_IPS = LOOPBACK  # the test client's REMOTE_ADDR is 127.0.0.1
    for state in (JobState.COMPLETED, JobState.COMPLETED, JobState.FAILED, JobState.QUEUED):
        VideoArchive.objects.create(camera_group=default_group, name=f"a {state}", job_state=state)

    response = anon_api.get("/metrics")

    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    parsed = samples(response.content.decode())
    assert value(parsed, "ffv_jobs", state="completed") == 2
    assert value(parsed, "ffv_jobs", state="failed") == 1
    assert value(parsed, "ffv_jobs", state="queued") == 1
    assert value(parsed, "ffv_jobs", state="in_progress") == 0  # every state, zeros included
    assert value(parsed, "ffv_metrics_source_up", source="database") == 1


def test_openmetrics_is_served_to_a_scraper_that_asks_for_it(anon_api, settings, db):
    settings.FFV_METRICS_ALLOWED_IPS = LOOPBACK
    response = anon_api.get("/metrics", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.decode().rstrip().endswith("# EOF")


@pytest.mark.parametrize("accept", ["application/openmetrics-text; version=abc",
                                    'application/openmetrics-text; version=2.0.0 "x', "text/plain; version=\u0000"])
def test_a_malformed_accept_gets_metrics_never_a_500_nor_its_own_text_back(anon_api, settings, db, accept):
    settings.FFV_METRICS_ALLOWED_IPS = LOOPBACK
    response = anon_api.get("/metrics", HTTP_ACCEPT=accept)
    assert response.status_code == 200
    assert response["Content-Type"] in ("application/openmetrics-text; version=1.0.0; charset=utf-8",
                                        "text/plain; version=0.0.4; charset=utf-8")
    assert b"ffv_metrics_source_up" in response.content


def test_others_are_refused_in_the_error_envelope_and_staff_tokens_let_in(anon_api, settings, db, viewer):
    settings.FFV_METRICS_ALLOWED_IPS = [ip_network("10.0.0.0/8")]

    assert_error(anon_api.get("/metrics"), 401, "UNAUTHORIZED")
    # A scraper that accepts only text still gets its refusal as JSON, not a 406.
    assert_error(anon_api.get("/metrics", HTTP_ACCEPT="text/plain"), 401, "UNAUTHORIZED")
    made_up = token_client(viewer)
    made_up.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert_error(made_up.get("/metrics"), 401, "UNAUTHORIZED")
    # Any model permission is not enough: metrics show the whole deployment.
    assert_error(token_client(viewer).get("/metrics"), 403, "PERMISSION_DENIED")
    staff = _user("staffer")
    staff.is_staff = True
    staff.save()
    assert token_client(staff).get("/metrics").status_code == 200

    assert anon_api.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert anon_api.get("/metrics", REMOTE_ADDR="::ffff:10.1.2.3").status_code == 200
    assert_error(anon_api.get("/metrics", REMOTE_ADDR="192.168.1.10"), 401, "UNAUTHORIZED")
    # Only the TCP peer counts: a forwarded-for header is whatever the client wrote.
    assert_error(anon_api.get("/metrics", REMOTE_ADDR="192.168.1.10", HTTP_X_FORWARDED_FOR="10.1.2.3"), 401,
                 "UNAUTHORIZED")


def test_a_broker_outage_shows_as_a_zero_not_as_a_failed_scrape(anon_api, settings, db):
    settings.FFV_METRICS_ALLOWED_IPS = LOOPBACK
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there

    response = anon_api.get("/metrics")

    assert response.status_code == 200, response.content
    parsed = samples(response.content.decode())
    assert value(parsed, "ffv_metrics_source_up", source="broker") == 0
    assert value(parsed, "ffv_jobs", state="idle") == 0


def test_request_latency_is_labelled_by_url_pattern_never_by_path(api, anon_api, settings, default_group):
    settings.FFV_METRICS_ALLOWED_IPS = LOOPBACK
    ids = [api.post("/videos/", {"camera_group": default_group.pk, "name": f"v{i}"}, format="json").json()["id"]
           for i in range(3)]
    before = samples(anon_api.get("/metrics").content.decode())
    for archive_id in ids:
        assert api.get(f"/videos/{archive_id}/").status_code == 200
    assert api.get("/videos/987654/").status_code == 404
    assert api.get("/no/such/route/4242/").status_code == 404

    text = anon_api.get("/metrics").content.decode()
    after = samples(text)

    def delta(**labels: str) -> float:
        name = "ffv_http_request_duration_seconds_count"
        return total(after, name, **labels) - total(before, name, **labels)

    assert delta(method="GET", route="videos/{pk}/", status="200") == 3
    assert delta(method="GET", route="videos/{pk}/", status="404") == 1
    assert delta(method="GET", route="unmatched", status="404") == 1
    routes = set(re.findall(r'route="([^"]*)"', text))
    assert not any(re.search(r"\d", route) for route in routes), routes


# --- every process adds up: a real worker and two gunicorn processes on one multiprocess folder


class Http:
    def __init__(self, port: int, token: str | None = None, source: str = "127.0.0.1") -> None:
        self.port, self.token, self.source = port, token, source

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30, source_address=(self.source, 0))
        try:
            headers = {"Connection": "close"}
            if self.token:
                headers["Authorization"] = f"Token {self.token}"
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()


@pytest.fixture
def metrics_dir(tmp_path) -> Path:
    folder = tmp_path / "prometheus"
    folder.mkdir()
    return folder


@pytest.fixture
def metered_worker(transactional_db, processing_queue, media_root, tmp_path, metrics_dir) -> Iterator[WorkerProcess]:
    process = WorkerProcess(processing_queue, media_root, tmp_path / "worker.log",
                            {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}).start()
    yield process
    process.stop()


_GUNICORN_PIDS: dict[int, int] = {}


def metered_web_pid(port: int) -> int:
    """The gunicorn arbiter serving on `port` (started by the metered_web fixture)."""
    return _GUNICORN_PIDS[port]


def _children(parent: int) -> set[int]:
    """The processes whose parent is `parent` (read from /proc)."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            children.add(int(stat.parent.name))
    return children


@pytest.fixture
def metered_web(transactional_db, processing_queue, media_root, tmp_path, metrics_dir) -> Iterator[int]:
    """gunicorn, two processes, on the test database and this test's queues; /metrics open to 127.0.0.1 only."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url_for_worker(), "CELERY_BROKER_URL": redis_url(),
           "MEDIA_ROOT": str(media_root), "FFV_PROCESSING_QUEUE": processing_queue,
           "FFV_CONTROL_QUEUE": control_queue_of(processing_queue), "PYTHONPATH": str(ROOT),
           "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "FFV_METRICS_ALLOWED_IPS": "127.0.0.1"}
    log_path = tmp_path / "gunicorn.log"
    env.update({"FFV_BIND": f"127.0.0.1:{port}", "FFV_WEB_WORKERS": "2"})
    with log_path.open("ab") as log:
        # As `./dev serve` starts it: the serving config file, with its hooks.
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "findface_videos/gunicorn_conf.py"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        def answering() -> bool:
            try:
                return Http(port).get("/videos/count/")[0] == 401
            except OSError:
                return process.poll() is not None
        assert wait_for(answering, timeout=60) and process.poll() is None, log_path.read_text(errors="replace")
        _GUNICORN_PIDS[port] = process.pid
        yield port
    finally:
        _GUNICORN_PIDS.pop(port, None)
        os.killpg(process.pid, 15)
        process.wait(timeout=30)


def _archive(api, default_group, path: Path) -> int:
    body = {"camera_group": default_group.pk, "name": path.name, "stream_settings": NO_DETECTORS}
    archive_id = api.post("/videos/", body, format="json").json()["id"]
    assert upload(api, archive_id, path).status_code == 201
    return archive_id


@pytest.mark.worker
def test_a_worker_and_two_web_processes_all_show_in_one_scrape(
    api, operator, default_group, video_factory, metered_worker, metered_web, metrics_dir, tmp_path
):
    good = _archive(api, default_group, video_factory("good.mp4", frames=120))
    bad = _archive(api, default_group, video_factory("bad.mp4", frames=30))
    # Damaged after upload, as a disk fault would: its job fails with a code.
    Path(VideoArchive.objects.get(pk=bad).source_file.path).write_bytes(b"not a video any more" * 100)
    for archive_id in (good, bad):
        assert api.post(f"/videos/{archive_id}/process/").status_code == 200

    def ended() -> bool:
        return all(api.get(f"/videos/{i}/").json()["health_status"]["status"] in ("COMPLETED", "MISCONFIGURED")
                   for i in (good, bad))

    assert wait_for(ended, timeout=120), metered_worker.log()
    statistic = api.get(f"/videos/{good}/").json()["health_status"]["statistic"]
    failed = VideoArchive.objects.get(pk=bad)
    assert failed.job_state == JobState.FAILED and failed.job_msg_code

    # API requests through gunicorn until both of its processes have measured some (a process's request
    # histogram file appears with its first measured request).
    web = Http(metered_web, token_create(user=operator, device_uuid="metrics").key)
    assert wait_for(lambda: len(_children(metered_web_pid(metered_web))) == 2, timeout=30)
    web_pids = _children(metered_web_pid(metered_web))
    sent = 0
    while sent < 200:
        assert web.get("/videos/count/")[0] == 200
        sent += 1
        measured = {pid for pid in web_pids if (metrics_dir / f"histogram_{pid}.db").exists()}
        if measured == web_pids and sent >= 10:
            break
    assert measured == web_pids, sorted(path.name for path in metrics_dir.iterdir())

    status, headers, body = Http(metered_web).get("/metrics")
    assert status == 200, body
    assert headers["content-type"].startswith("text/plain")
    parsed = samples(body.decode())
    # The worker's counters (only a worker process processes frames)...
    assert value(parsed, "ffv_video_frames_processed_total") == statistic["frames_processed"] > 0
    assert value(parsed, "ffv_video_seconds_processed_total") == pytest.approx(statistic["processed_duration"],
                                                                               abs=0.01)
    assert value(parsed, "ffv_job_attempts_total", kind="first") == 2
    assert value(parsed, "ffv_jobs_finished_total", state="completed") == 1
    assert value(parsed, "ffv_job_failures_total", code=failed.job_msg_code) == 1
    # ...both web processes' requests, whichever of them answers the scrape...
    assert value(parsed, "ffv_http_request_duration_seconds_count", method="GET", route="videos/count/",
                 status="200") == sent
    # ...and what the database and the broker say now.
    assert value(parsed, "ffv_jobs", state="completed") == 1
    assert value(parsed, "ffv_jobs", state="failed") == 1
    assert value(parsed, "ffv_queue_depth", queue=metered_worker.queue) == 0
    assert value(parsed, "ffv_metrics_source_up", source="broker") == 1
    writers = {int(m.group(1)) for m in (re.search(r"_(\d+)\.db$", f.name) for f in metrics_dir.iterdir()) if m}
    assert len(writers) >= 3, sorted(f.name for f in metrics_dir.iterdir())  # 2 web processes and the worker's

    # From an address that is not listed (another loopback address as the TCP peer): refused in the envelope.
    status, headers, body = Http(metered_web, source="127.0.0.3").get("/metrics")
    assert status == 401 and headers["content-type"].startswith("application/json")
    error = json.loads(body)
    assert list(error) == ERROR_KEYS and error["code"] == "UNAUTHORIZED"
    status, _, body = Http(metered_web, web.token, source="127.0.0.3").get("/metrics")
    assert status == 403 and json.loads(body)["code"] == "PERMISSION_DENIED"


@pytest.mark.worker
def test_a_worker_host_without_a_web_process_serves_its_own_counters(
    api, default_group, video_factory, transactional_db, processing_queue, media_root, tmp_path, metrics_dir
):
    port = free_port()
    worker = WorkerProcess(processing_queue, media_root, tmp_path / "worker.log",
                           {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
                            "FFV_WORKER_METRICS_BIND": f"127.0.0.1:{port}"}).start()
    try:
        archive_id = _archive(api, default_group, video_factory(frames=60))
        assert api.post(f"/videos/{archive_id}/process/").status_code == 200
        assert wait_for(lambda: api.get(f"/videos/{archive_id}/").json()["finished"], timeout=90), worker.log()
        frames = api.get(f"/videos/{archive_id}/").json()["health_status"]["statistic"]["frames_processed"]

        status, headers, body = Http(port).get("/metrics")

        assert status == 200, worker.log()
        parsed = samples(body.decode())
        assert value(parsed, "ffv_video_frames_processed_total") == frames > 0
        assert value(parsed, "ffv_jobs_finished_total", state="completed") == 1
    finally:
        worker.stop()


def test_gunicorn_hooks_mark_a_web_process_dead(metrics_dir, monkeypatch):
    """The documented child_exit bookkeeping: a dead process's live gauges go, its counters stay."""
    (metrics_dir / "gauge_livesum_4242.db").write_bytes(b"")
    (metrics_dir / "counter_4242.db").write_bytes(b"")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    from findface_videos.gunicorn_conf import child_exit

    child_exit(None, type("Worker", (), {"pid": 4242})())

    assert sorted(f.name for f in metrics_dir.iterdir()) == ["counter_4242.db"]


def test_the_grafana_dashboard_asks_only_for_metrics_we_export(anon_api, settings, db):
    settings.FFV_METRICS_ALLOWED_IPS = LOOPBACK
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "findface-videos.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    wanted = {re.sub(r"_(bucket|count|sum)$", "", name) for expr in exprs for name in re.findall(r"ffv_\w+", expr)}
    exported = set(re.findall(r"^# TYPE (\w+)", anon_api.get("/metrics").content.decode(), re.MULTILINE))
    exported |= {f"{name}_total" for name in exported}  # counters' TYPE lines name them without _total
    assert wanted and wanted <= exported, wanted - exported
