"""Infrastructure faults under a real worker: PostgreSQL dropping the worker's connections in the middle of a job,
and Redis stopping under process/ or losing its queue in a restart.

Both run servers of their own (a throwaway PostgreSQL cluster from the machine's binaries, a `redis-server` on a
spare loopback port) and never touch the machine's own PostgreSQL and Redis, which other tests share. A worker
killed with SIGKILL mid-job is tests/test_worker_pipeline.py's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import redis
from django.db import connection

from findface_videos.celery import app as celery_app
from processing.pipeline import Progress
from processing.posting import PostedObject
from tests.conftest import ROOT, WorkerProcess, redis_reachable, redis_url, requires, upload, wait_for
from tests.errors import assert_error
from tests.footage import trim
from videos import jobs
from videos.models import BodyEvent, JobState, VideoArchive

pytestmark = pytest.mark.worker

PG_BIN = Path(os.environ.get("FFV_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
DATA_DIR = Path(os.environ.get("OPENCV_DOC_DATA_DIR", "/usr/share/doc/opencv-doc/examples/data"))
NO_DETECTORS = {"detectors": {"face": None, "body": None, "car": None}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- a throwaway PostgreSQL cluster


@dataclass
class ThrowawayPostgres:
    """A PostgreSQL cluster of this module's own on a spare loopback port (trust auth, fsync off)."""

    base: Path
    port: int
    dbname: str = "ffv"

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{self.dbname}"

    def connect(self, dbname: str | None = None) -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=dbname or self.dbname,
                               autocommit=True, connect_timeout=5)

    def backends(self, conn: psycopg.Connection) -> list[int]:
        """Other sessions on the database (the worker's): everything but `conn` itself."""
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                            [self.dbname]).fetchall()
        return [pid for (pid,) in rows]

    def terminate_backends(self, conn: psycopg.Connection) -> int:
        """What a DBA, a failover or an idle-session killer does: drop every other session on the database."""
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [self.dbname],
        ).fetchall()
        return sum(1 for (done,) in rows if done)


def _as_postgres_user() -> list[str]:
    # PostgreSQL refuses to run as root: as root, run its binaries as the `postgres` OS user.
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@pytest.fixture(scope="module")
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    requires((PG_BIN / "initdb").is_file() and (PG_BIN / "pg_ctl").is_file(), f"no PostgreSQL binaries in {PG_BIN}")
    if os.geteuid() == 0:
        requires(shutil.which("runuser") is not None, "runuser is needed to run PostgreSQL as root")
    # Not under pytest's tmp_path: that folder is root's alone (0700) and the server runs as `postgres`.
    base = Path(tempfile.mkdtemp(prefix="ffv-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    cluster = ThrowawayPostgres(base=base, port=free_port())
    data = base / "data"
    started = False
    try:
        subprocess.run([*_as_postgres_user(), str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U",
                        "postgres", "-E", "UTF8", "--no-sync"], check=True, capture_output=True, timeout=120)
        options = (f"-p {cluster.port} -c listen_addresses=127.0.0.1 -k {base} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off")
        subprocess.run([*_as_postgres_user(), str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options,
                        "-l", str(base / "server.log"), "-w", "-t", "60", "start"],
                       check=True, capture_output=True, timeout=90)
        started = True
        with cluster.connect("postgres") as conn:
            conn.execute(f"CREATE DATABASE {cluster.dbname}")
        migrate = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT,
                                 env={**os.environ, "DATABASE_URL": cluster.url}, capture_output=True, text=True,
                                 timeout=300)
        assert migrate.returncode == 0, migrate.stderr[-3000:]
        yield cluster
    finally:
        if started:
            subprocess.run([*_as_postgres_user(), str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate",
                            "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


# Runs in a `manage.py shell` against the throwaway database: the same services the API calls.
_QUEUE_ARCHIVE = """
import json
from pathlib import Path
from videos.models import CameraGroup
from processing.stream_settings import complete_stream_settings, current_version
from videos.services import archive_create, archive_process, archive_upload_source
args = json.loads(Path({args!r}).read_text())
group, _ = CameraGroup.objects.get_or_create(pk=1, defaults={{"name": "Default Camera Group"}})
settings = complete_stream_settings(args["stream_settings"], version=current_version())
archive = archive_create(data={{"camera_group": group, "name": args["name"], "stream_settings": settings}})
path = Path(args["path"])
with path.open("rb") as reader:
    archive_upload_source(archive_id=archive.pk, reader=reader, size=path.stat().st_size)
archive_process(archive_id=archive.pk)
print("ARCHIVE", archive.pk)
"""


def queue_archive(cluster: ThrowawayPostgres, env: dict[str, str], path: Path, stream_settings: dict,
                  tmp_path: Path) -> int:
    """Create, upload and process/ an archive in the throwaway database; its id."""
    args = tmp_path / f"args-{uuid.uuid4().hex[:8]}.json"
    args.write_text(json.dumps({"name": path.name, "path": str(path), "stream_settings": stream_settings}))
    result = subprocess.run([sys.executable, "manage.py", "shell", "-c", _QUEUE_ARCHIVE.format(args=str(args))],
                            cwd=ROOT, env={**os.environ, **env, "DATABASE_URL": cluster.url}, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return int(result.stdout.split("ARCHIVE")[-1].split()[0])


@dataclass(frozen=True)
class JobRow:
    state: str
    starts: int
    body_count: int
    statistic: dict
    events: int
    distinct_events: int


def job_row(conn: psycopg.Connection, archive_id: int) -> JobRow:
    state, starts, body_count, statistic = conn.execute(
        "SELECT job_state, job_starts, body_count, statistic FROM videos_videoarchive WHERE id = %s", [archive_id]
    ).fetchone()
    events, distinct_events = conn.execute(
        "SELECT count(*), count(DISTINCT (track_id, post_policy, frame_index)) FROM videos_bodyevent "
        "WHERE video_archive_id = %s", [archive_id]
    ).fetchone()
    statistic = statistic if isinstance(statistic, dict) else json.loads(statistic)
    return JobRow(state, starts, body_count, statistic, events, distinct_events)


def test_the_database_dropping_the_workers_connections_mid_job_loses_no_event(
    throwaway_postgres, processing_queue, media_root, tmp_path, models_dir, record_property
):
    source = DATA_DIR / "vtest.avi"
    requires(source.is_file(), f"{source} is missing (./dev test fetches Debian's opencv-doc)")
    clip = trim(source, tmp_path / "vtest-150.mp4", 150)
    env = {"CELERY_BROKER_URL": redis_url(), "FFV_PROCESSING_QUEUE": processing_queue, "MEDIA_ROOT": str(media_root)}
    bodies_only = {"detectors": {"face": None, "car": None}}
    worker = WorkerProcess(processing_queue, media_root, tmp_path / "worker.log", extra_env={
        "DATABASE_URL": throwaway_postgres.url, "FFV_MODELS_DIR": str(models_dir), "FFV_ORT_THREADS": "1",
        "FFV_OBJECT_INPUT_WIDTH": "320", "FFV_OBJECT_INPUT_HEIGHT": "256",
    }).start()
    conn = throwaway_postgres.connect()
    try:
        # The same clip without faults first: tracking is deterministic, so this is how many events there are.
        began = time.monotonic()
        reference_id = queue_archive(throwaway_postgres, env, clip, bodies_only, tmp_path)
        assert wait_for(lambda: job_row(conn, reference_id).state in ("completed", "failed"), timeout=180), \
            worker.log()
        reference = job_row(conn, reference_id)
        assert reference.state == "completed", worker.log()
        assert reference.events > 0
        reference_s = time.monotonic() - began

        # Paced to half a second of video per second of work, so the job runs long enough to be hit repeatedly.
        archive_id = queue_archive(throwaway_postgres, env, clip, {**bodies_only, "play_speed": 2}, tmp_path)
        assert wait_for(lambda: job_row(conn, archive_id).state == "in_progress", timeout=60), worker.log()
        terminated: list[int] = []
        while job_row(conn, archive_id).state == "in_progress" and len(terminated) < 4:
            # Wait until the worker holds a connection again (it reconnects at its next write), then drop it.
            if wait_for(lambda: bool(throwaway_postgres.backends(conn)), timeout=5, interval=0.05):
                terminated.append(throwaway_postgres.terminate_backends(conn))
            time.sleep(1.0)
        assert wait_for(lambda: job_row(conn, archive_id).state not in ("queued", "starting", "in_progress"),
                        timeout=120), worker.log()
        row = job_row(conn, archive_id)
    finally:
        conn.close()
        worker.stop()

    figures = {"injections": len(terminated), "connections_terminated": sum(terminated),
               "worker_reconnects": worker.log().count("database connection lost"),
               "reference_run_s": round(reference_s, 1), "events": row.events, "reference_events": reference.events}
    record_property("faults", figures)
    print("FIGURES", figures)
    assert len(terminated) >= 3 and all(terminated), terminated
    assert row.state == "completed", worker.log()[-5000:]
    assert row.starts == 1, "the job survived in place, no second start"
    assert row.events == row.distinct_events == reference.events, (row, reference)
    assert row.body_count == row.events == row.statistic["bodies_posted"]
    assert row.statistic["bodies_failed"] == 0, "an event was lost to a dropped connection"
    assert row.statistic["frames_processed"] == 150


def _drop_own_connection() -> None:
    """Terminate the backend of this process's Django connection from a side connection, as a DBA would."""
    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    cfg = connection.settings_dict
    with psycopg.connect(host=cfg["HOST"] or "127.0.0.1", port=cfg["PORT"] or 5432, user=cfg["USER"],
                         password=cfg["PASSWORD"] or None, dbname=cfg["NAME"], autocommit=True) as side:
        assert side.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0]
        gone = wait_for(lambda: not side.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone(),
                        timeout=10, interval=0.05)
        assert gone


def test_progress_finish_and_event_writes_reconnect_after_their_connection_was_dropped(
    transactional_db, default_group, media_root
):
    # The end-to-end test above hits these at random points; here each one meets a dead connection for sure.
    requires(connection.vendor == "postgresql", "DATABASE_URL must name PostgreSQL")
    archive = VideoArchive.objects.create(camera_group=default_group, name="x", job_state=JobState.IN_PROGRESS,
                                          job_task_id="task", job_claim="claim", job_starts=1,
                                          stream_settings={})
    job = jobs.ClaimedJob(archive_id=archive.pk, task_id="task", claim="claim", camera_group_id=default_group.pk,
                          source_name="", url=None, stream_settings={})
    posted = PostedObject(kind="body", track_id=1, policy="best", frame_index=7, timestamp=0.28, box=(1, 2, 30, 40),
                          quality=0.9, confidence=0.9, thumbnail=b"jpeg", fullframe=b"jpeg", fullframe_format="jpg",
                          normalized=None, detector_params={})

    _drop_own_connection()
    assert jobs.job_report(job, Progress(frames_processed=7)) is True
    _drop_own_connection()
    assert jobs._event_store(job, posted) is True
    _drop_own_connection()
    jobs.job_finish(job, JobState.COMPLETED, progress=Progress(frames_processed=9))

    archive.refresh_from_db()
    assert (archive.job_state, archive.body_count, archive.statistic["frames_processed"]) == (JobState.COMPLETED, 1, 9)
    assert BodyEvent.objects.filter(video_archive=archive).count() == 1


def test_an_event_whose_insert_meets_a_dropped_connection_is_stored_on_the_next_one(
    transactional_db, default_group, media_root, monkeypatch
):
    # The claim check has run in the event's transaction; the connection dies before the insert. Django's rollback
    # then closes it and opens a fresh one at once, so a usable connection must not pass for "it was not the
    # connection" (an event was once lost that way, counted as failed).
    requires(connection.vendor == "postgresql", "DATABASE_URL must name PostgreSQL")
    from videos import events

    archive = VideoArchive.objects.create(camera_group=default_group, name="x", job_state=JobState.IN_PROGRESS,
                                          job_task_id="task", job_claim="claim", job_starts=1, stream_settings={})
    job = jobs.ClaimedJob(archive_id=archive.pk, task_id="task", claim="claim", camera_group_id=default_group.pk,
                          source_name="", url=None, stream_settings={})
    posted = PostedObject(kind="body", track_id=1, policy="best", frame_index=7, timestamp=0.28, box=(1, 2, 30, 40),
                          quality=0.9, confidence=0.9, thumbnail=b"jpeg", fullframe=b"jpeg", fullframe_format="jpg",
                          normalized=None, detector_params={})
    save, dropped = events.default_storage.save, []

    def save_then_drop(name, content, *args, **kwargs):
        stored = save(name, content, *args, **kwargs)
        if not dropped:  # between the claim check and the insert
            dropped.append(name)
            _drop_own_connection()
        return stored

    monkeypatch.setattr(events.default_storage, "save", save_then_drop)
    assert jobs._event_store(job, posted) is True
    assert dropped
    assert BodyEvent.objects.filter(video_archive=archive).count() == 1


# --- a Redis of the test's own


class OwnRedis:
    """`redis-server` on a spare loopback port with no persistence: a restart loses every queued message."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = (self.folder / "redis.log").open("ab")
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        assert wait_for(lambda: redis_reachable(self.url), timeout=10), self.log()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=20)

    def queued(self, queue: str) -> int:
        """Messages waiting in `queue` (kombu keeps a queue as a Redis list of its name)."""
        client = redis.Redis.from_url(self.url)
        try:
            return client.llen(queue)
        finally:
            client.close()

    def log(self) -> str:
        path = self.folder / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture
def own_redis(tmp_path) -> Iterator[OwnRedis]:
    requires(shutil.which("redis-server") is not None, "redis-server is not installed")
    folder = tmp_path / "redis"
    folder.mkdir()
    server = OwnRedis(folder)
    server.start()
    yield server
    server.stop()


@contextmanager
def broker_at(url: str) -> Iterator[None]:
    """Point this process's Celery app at another broker; its pools for the old URL are set aside meanwhile."""
    conf = celery_app.conf
    saved = conf.broker_url, conf.broker_write_url, celery_app._pool, celery_app.amqp._producer_pool
    conf.broker_url, conf.broker_write_url, celery_app._pool, celery_app.amqp._producer_pool = url, url, None, None
    try:
        yield
    finally:
        pool = celery_app._pool
        conf.broker_url, conf.broker_write_url, celery_app._pool, celery_app.amqp._producer_pool = saved
        if pool is not None:
            pool.force_close_all()


@pytest.fixture
def api_on_own_redis(own_redis, settings) -> Iterator[OwnRedis]:
    settings.CELERY_BROKER_URL = own_redis.url
    settings.FFV_PROCESSING_QUEUE = f"test-{uuid.uuid4().hex[:12]}"
    with broker_at(own_redis.url):
        yield own_redis


def _create_with_video(api, default_group, path) -> int:
    body = {"camera_group": default_group.pk, "name": path.name, "stream_settings": NO_DETECTORS}
    archive_id = api.post("/videos/", body, format="json").json()["id"]
    assert upload(api, archive_id, path).status_code == 201
    return archive_id


def _status(api, archive_id: int) -> str:
    return api.get(f"/videos/{archive_id}/").json()["health_status"]["status"]


def test_redis_stopped_under_process_is_503_and_the_next_call_after_its_restart_runs_the_job(
    api, default_group, api_on_own_redis, settings, media_root, tmp_path, video_factory, transactional_db,
    record_property,
):
    own_redis = api_on_own_redis
    worker = WorkerProcess(settings.FFV_PROCESSING_QUEUE, media_root, tmp_path / "worker.log",
                           extra_env={"CELERY_BROKER_URL": own_redis.url}).start()
    try:
        archive_id = _create_with_video(api, default_group, video_factory(frames=40))
        # A first job, so the API's connection pool and the worker hold live connections when Redis goes.
        assert api.post(f"/videos/{archive_id}/process/").status_code == 200
        assert wait_for(lambda: _status(api, archive_id) == "COMPLETED", timeout=60), worker.log()

        own_redis.stop()
        started = time.monotonic()
        response = api.post(f"/videos/{archive_id}/process/")
        refused_in = time.monotonic() - started
        assert_error(response, 503, "SERVICE_UNAVAILABLE")
        assert refused_in < 10, refused_in
        archive = VideoArchive.objects.get(pk=archive_id)
        assert (archive.job_state, archive.job_starts) == (JobState.COMPLETED, 1), "not left queued"
        assert _status(api, archive_id) == "COMPLETED"

        own_redis.start()
        # The first call after the restart goes through: the stale pooled connection is replaced, not a 503.
        assert api.post(f"/videos/{archive_id}/process/").status_code == 200
        # The worker reconnects by itself and takes the job.
        assert wait_for(lambda: _status(api, archive_id) == "COMPLETED" and VideoArchive.objects.get(
            pk=archive_id).job_task_id != archive.job_task_id, timeout=90), worker.log()
    finally:
        worker.stop()
    figures = {"redis_stops": 1, "refused_in_s": round(refused_in, 2)}
    record_property("faults", figures)
    print("FIGURES", figures)
    statistic = api.get(f"/videos/{archive_id}/").json()["health_status"]["statistic"]
    assert (statistic["frames_processed"], statistic["job_starts"]) == (40, 1)


def test_a_job_whose_message_a_redis_restart_lost_is_sent_again_by_the_sweeper(
    api, default_group, api_on_own_redis, settings, media_root, tmp_path, video_factory, transactional_db,
    record_property,
):
    own_redis = api_on_own_redis
    archive_id = _create_with_video(api, default_group, video_factory(frames=30))
    assert api.post(f"/videos/{archive_id}/process/").status_code == 200
    assert own_redis.queued(settings.FFV_PROCESSING_QUEUE) == 1

    own_redis.stop()  # no persistence: the queued message is gone with it
    own_redis.start()
    assert own_redis.queued(settings.FFV_PROCESSING_QUEUE) == 0
    assert _status(api, archive_id) == "AWAITING"

    lost_at = time.monotonic()
    worker = WorkerProcess(settings.FFV_PROCESSING_QUEUE, media_root, tmp_path / "worker.log", beat=True, extra_env={
        "CELERY_BROKER_URL": own_redis.url, "FFV_QUEUE_STALE_SECONDS": "10", "FFV_SWEEP_INTERVAL": "1",
    }).start()
    try:
        assert wait_for(lambda: _status(api, archive_id) == "COMPLETED", timeout=90), worker.log()
        recovered_in = time.monotonic() - lost_at
    finally:
        worker.stop()
    assert "the broker lost the queued job's message; re-sent" in worker.log()
    figures = {"messages_lost": 1, "recovered_in_s": round(recovered_in, 1)}
    record_property("faults", figures)
    print("FIGURES", figures)
    statistic = api.get(f"/videos/{archive_id}/").json()["health_status"]["statistic"]
    assert (statistic["frames_processed"], statistic["job_starts"]) == (30, 1)
