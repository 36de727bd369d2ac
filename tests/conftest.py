"""Shared fixtures: users with and without model permissions, token clients, real small videos, a real worker.

Tests that need PostgreSQL, Redis or a model skip when those are missing on a developer's machine, and fail
under CI=true (`requires()` below), so CI can never go green by skipping.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import av
import numpy as np
import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from rest_framework.test import APIClient

from videos.auth_views import token_create
from videos.models import CameraGroup

ROOT = Path(__file__).resolve().parent.parent
# Each test's own queues purged at its end, a session that fails when Redis keeps something of them, the search
# index in each test's folder, the SQLite test database removed.
# remote_sources: public_address, serve; object_storage: moto's S3 server and a bucket per test.
pytest_plugins = ["tests.hygiene", "tests.remote_sources", "tests.object_storage"]
pytest.register_assert_rewrite("tests.hygiene")
from tests.hygiene import control_queue_of, register_test_queues  # noqa: E402 (after its rewrite is registered)

IN_CI = os.environ.get("CI", "").lower() == "true"


def requires(condition: bool, reason: str) -> None:
    """Skip a test whose infrastructure is missing, except under CI where that is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


# --- users and clients


def _user(username: str, codenames: list[str] | None = None, *, superuser: bool = False) -> User:
    if superuser:
        return User.objects.create_superuser(username=username, password="pw-" + username, email="")
    user = User.objects.create_user(username=username, password="pw-" + username)
    if codenames:
        user.user_permissions.set(Permission.objects.filter(content_type__app_label="videos", codename__in=codenames))
    return user


ALL_VIDEO_PERMS = [
    f"{action}_{model}"
    for action in ("view", "add", "change", "delete")
    for model in ("videoarchive", "cameragroup", "camera")
]


@pytest.fixture
def operator(db) -> User:
    """A user with every model permission of the videos app (not a superuser)."""
    return _user("operator", ALL_VIDEO_PERMS)


@pytest.fixture
def viewer(db) -> User:
    return _user("viewer", ["view_videoarchive", "view_cameragroup", "view_camera"])


@pytest.fixture
def outsider(db) -> User:
    """Authenticated, but without any model permission."""
    return _user("outsider")


def token_client(user: User, language: str | None = None) -> APIClient:
    client = APIClient()
    token = token_create(user=user, device_uuid="tests")
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    if language:
        client.defaults["HTTP_ACCEPT_LANGUAGE"] = language
    return client


@pytest.fixture
def api(operator) -> APIClient:
    return token_client(operator)


@pytest.fixture
def viewer_api(viewer) -> APIClient:
    return token_client(viewer)


@pytest.fixture
def outsider_api(outsider) -> APIClient:
    return token_client(outsider)


@pytest.fixture
def anon_api() -> APIClient:
    return APIClient()


# --- data


@pytest.fixture
def default_group(db) -> CameraGroup:
    """Camera group 1, as the data migration creates it (transactional tests flush it away)."""
    group, _ = CameraGroup.objects.get_or_create(id=1, defaults={"name": "Default Camera Group"})
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence('videos_cameragroup', 'id'), "
                "GREATEST((SELECT MAX(id) FROM videos_cameragroup), 1))"
            )
    return group


@pytest.fixture(autouse=True)
def fast_password_hashing(settings) -> None:
    """Test users' passwords need no slow hash (about a second per user otherwise)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path) -> Path:
    """Every test writes uploads and cache into its own folder."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                    "LOCATION": str(tmp_path / "cache")}
    }
    return settings.MEDIA_ROOT


def make_video(
    path: Path, *, frames: int = 50, width: int = 320, height: int = 240, fps: int = 25, codec: str = "mpeg4"
) -> Path:
    """A real small video with a white box moving across a dark background."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        for index in range(frames):
            image = np.full((height, width, 3), 30, np.uint8)
            x = (index * 4) % max(1, width - 40)
            image[height // 4 : height // 4 + 40, x : x + 40] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture
def video_file(tmp_path) -> Path:
    return make_video(tmp_path / "clip.mp4")


@pytest.fixture
def video_factory(tmp_path) -> Callable[..., Path]:
    def build(name: str = "clip.mp4", **kwargs) -> Path:
        return make_video(tmp_path / name, **kwargs)

    return build


def upload(client: APIClient, archive_id: int, path: Path, content_type: str = "video/mp4"):
    return client.put(
        f"/videos/{archive_id}/upload/source_file/", data=path.read_bytes(), content_type=content_type
    )


# --- Redis and a real Celery worker


def redis_url() -> str:
    return os.environ.get("CELERY_BROKER_URL", "")


def redis_reachable(url: str) -> bool:
    if not url.startswith("redis://"):
        return False
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def processing_queue(settings) -> str:
    """A queue of this test's own, so tests never pick up each other's tasks."""
    requires(redis_reachable(redis_url()), "CELERY_BROKER_URL must point at a reachable Redis")
    settings.FFV_PROCESSING_QUEUE = f"test-{uuid.uuid4().hex[:12]}"
    settings.FFV_CONTROL_QUEUE = control_queue_of(settings.FFV_PROCESSING_QUEUE)
    return settings.FFV_PROCESSING_QUEUE



def database_url_for_worker() -> str:
    """The URL of the database this test process uses (the test database), for a worker subprocess."""
    cfg = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{cfg['NAME']}"
    user = cfg.get("USER") or ""
    password = f":{cfg['PASSWORD']}" if cfg.get("PASSWORD") else ""
    host = cfg.get("HOST") or "127.0.0.1"
    port = f":{cfg['PORT']}" if cfg.get("PORT") else ""
    return f"postgres://{user}{password}@{host}{port}/{cfg['NAME']}"


class WorkerProcess:
    def __init__(
        self, queue: str, media_root: Path, log_path: Path, extra_env: dict[str, str] | None = None,
        *, beat: bool = False, pool: str = "prefork", concurrency: int = 1,
    ):
        self.queue = queue
        self.beat = beat
        self.pool, self.concurrency = pool, concurrency
        self.log_path = log_path
        env = {
            **os.environ,
            "DATABASE_URL": database_url_for_worker(),
            "CELERY_BROKER_URL": redis_url(),
            "MEDIA_ROOT": str(media_root),
            "FFV_PROCESSING_QUEUE": queue,
            "FFV_CONTROL_QUEUE": control_queue_of(queue),
            "FFV_PROGRESS_INTERVAL": "0.2",
            "PYTHONPATH": str(ROOT),
            **(extra_env or {}),
        }
        self.env = env
        self.process: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        register_test_queues(self.queue, control_queue_of(self.queue))  # purged when the test ends
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "findface_videos", "worker", "-Q",
             f"{self.queue},{control_queue_of(self.queue)}",
             "--concurrency", str(self.concurrency), "--pool", self.pool, "--without-gossip", "--without-mingle",
             "--without-heartbeat", "-n", f"{self.queue}-{uuid.uuid4().hex[:6]}@%h", "--loglevel", "INFO",
             *(["-B", "--schedule", str(self.log_path.with_suffix(".beat"))] if self.beat else [])],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        return self

    def kill(self, sig: int = 9) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """var/models prepared as the setup step does (a hash check when they are there already); in a subprocess,
    so that no model is loaded into the test process. (Its TMPDIR is the run's: onnxruntime leaves a `.ses` file
    there.)"""
    target = ROOT / "var" / "models"
    env = {**os.environ, "TMPDIR": str(tmp_path_factory.mktemp("prepare-models-tmp"))}
    # With the int8 YOLO too (the default FFV_OBJECT_PRECISION), calibrated on opencv-doc's footage.
    calibration = os.environ.get("OPENCV_DOC_DATA_DIR") or "/usr/share/doc/opencv-doc/examples/data"
    result = subprocess.run([sys.executable, "manage.py", "prepare_models", "--models-dir", str(target), "--int8",
                             "--calibration-dir", calibration],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    requires(result.returncode == 0, f"models cannot be prepared: {result.stderr[-500:]}")
    return target


@pytest.fixture
def worker(transactional_db, processing_queue, media_root, tmp_path) -> Iterator[WorkerProcess]:
    """A real `celery worker` process on this test's queue, against the test database and Redis."""
    process = WorkerProcess(processing_queue, media_root, tmp_path / "worker.log").start()
    yield process
    process.stop()


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def process_end(process: subprocess.Popen, timeout: float = 20) -> None:
    """Stop a server a test started: SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
