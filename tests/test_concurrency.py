"""Fifty clients at once against a real gunicorn on loopback: they create, upload, list, count and delete archives.

No request may fail with a 5xx or hang, and afterwards the count, the list and the media folder must agree with
what the clients did. The server gets a database of its own: on SQLite the default setup (a file under its own
`FFV_VAR_DIR`, no DATABASE_URL), on PostgreSQL a `test_concurrency_<pid>` database next to the test database.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from tests.conftest import ROOT, make_video, requires, wait_for

CLIENTS = 50
ARCHIVES_PER_CLIENT = 2
REQUEST_TIMEOUT = 30.0  # a request slower than this counts as a hang
NO_DETECTORS = {"detectors": {"face": None, "body": None, "car": None}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def manage(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture
def server_env(tmp_path) -> Iterator[dict[str, str]]:
    """Environment of a server with a migrated database of its own and its own media and var folders."""
    var_dir = tmp_path / "var"
    # Made here, as `./dev` makes var/: on SQLite the database file goes in it and SQLite makes no folder.
    var_dir.mkdir()
    env = {**os.environ, "FFV_VAR_DIR": str(var_dir), "MEDIA_ROOT": str(tmp_path / "server-media"),
           "PYTHONPATH": str(ROOT), "DJANGO_DEBUG": "false"}
    cfg = connection.settings_dict
    dbname = None
    admin = None
    if connection.vendor == "postgresql":
        dbname = f"test_concurrency_{os.getpid()}"
        admin = psycopg.connect(host=cfg["HOST"] or "127.0.0.1", port=cfg["PORT"] or 5432, user=cfg["USER"],
                                password=cfg["PASSWORD"] or None, dbname="postgres", autocommit=True)
        admin.execute(f"DROP DATABASE IF EXISTS {dbname}")
        admin.execute(f"CREATE DATABASE {dbname}")
        password = f":{cfg['PASSWORD']}" if cfg["PASSWORD"] else ""
        port = f":{cfg['PORT']}" if cfg["PORT"] else ""
        env["DATABASE_URL"] = f"postgres://{cfg['USER']}{password}@{cfg['HOST'] or '127.0.0.1'}{port}/{dbname}"
    else:
        env.pop("DATABASE_URL", None)  # the default: SQLite under FFV_VAR_DIR, with the settings' own options
    try:
        manage(env, "migrate", "--noinput")
        yield env
    finally:
        if admin is not None:
            admin.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
            admin.close()


_TOKENS = """
import json
from django.contrib.auth.models import Permission, User
from videos.auth_views import token_create
user = User.objects.create_user("load", password=None)
user.user_permissions.set(Permission.objects.filter(content_type__app_label="videos"))
print("TOKENS", json.dumps([token_create(user=user, device_uuid=f"client-{{i}}").key for i in range({count})]))
"""


@dataclass
class Server:
    port: int
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def gunicorn(server_env, tmp_path) -> Iterator[Server]:
    requires(importlib.util.find_spec("gunicorn") is not None, "gunicorn is not installed")
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "findface_videos.wsgi:application", "--bind", f"127.0.0.1:{port}",
             "--workers", "3", "--threads", "4", "--timeout", "60", "--graceful-timeout", "5",
             "--access-logfile", "-", "--access-logformat", 'ACCESS %(m)s %(U)s %(s)s %(L)s'],
            cwd=ROOT, env=server_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    server = Server(port, process, log_path)

    def listening() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return process.poll() is not None  # stop waiting for a server that died

    try:
        assert wait_for(listening, timeout=60) and process.poll() is None, server.log()
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass
class Call:
    method: str
    route: str
    status: int | None  # None: no response (timeout, reset)
    seconds: float
    error: str = ""


@dataclass
class Client:
    port: int
    token: str
    calls: list[Call] = field(default_factory=list)

    def request(self, method: str, path: str, route: str, body: bytes | None = None,
                content_type: str = "application/json") -> tuple[int | None, bytes]:
        headers = {"Authorization": f"Token {self.token}", "Connection": "close"}
        if body is not None:
            headers["Content-Type"] = content_type
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.calls.append(Call(method, route, None, time.monotonic() - started, repr(exc)))
            return None, b""
        finally:
            conn.close()
        self.calls.append(Call(method, route, response.status, time.monotonic() - started,
                               "" if response.status < 400 else data[:300].decode(errors="replace")))
        return response.status, data


def run_client(client: Client, index: int, video: bytes, start: threading.Barrier, created: list[int],
               deleted: list[int]) -> None:
    start.wait()
    mine: list[int] = []
    for number in range(ARCHIVES_PER_CLIENT):
        body = json.dumps({"camera_group": 1, "name": f"client-{index}-{number}", "stream_settings": NO_DETECTORS})
        status, data = client.request("POST", "/videos/", "POST /videos/", body.encode())
        if status != 201:
            continue
        archive_id = json.loads(data)["id"]
        mine.append(archive_id)
        created.append(archive_id)
        client.request("PUT", f"/videos/{archive_id}/upload/source_file/", "PUT /videos/{id}/upload/source_file/",
                       video, "video/mp4")
        client.request("GET", "/videos/?limit=20", "GET /videos/")
    client.request("GET", "/videos/count/", "GET /videos/count/")
    if mine:
        status, _ = client.request("DELETE", f"/videos/{mine[0]}/", "DELETE /videos/{id}/")
        if status == 204:
            deleted.append(mine[0])
        client.request("GET", f"/videos/{mine[0]}/", "GET /videos/{id}/ (deleted)")


def test_the_server_gets_a_migrated_database_of_its_own(server_env):
    """The fixture's own setup, fast: it failed on SQLite when nothing had made the var folder before."""
    assert Path(server_env["FFV_VAR_DIR"]).is_dir()
    if connection.vendor == "sqlite":
        assert "DATABASE_URL" not in server_env
        assert (Path(server_env["FFV_VAR_DIR"]) / "db.sqlite3").is_file()
    else:
        assert server_env["DATABASE_URL"].endswith(f"/test_concurrency_{os.getpid()}")
    assert "[X] 0001_initial" in manage(server_env, "showmigrations", "videos")


EXPECTED = {"POST /videos/": 201, "PUT /videos/{id}/upload/source_file/": 201, "GET /videos/": 200,
            "GET /videos/count/": 200, "DELETE /videos/{id}/": 204, "GET /videos/{id}/ (deleted)": 404}


def test_fifty_parallel_clients_get_no_5xx_no_hang_and_consistent_counts(
    gunicorn, server_env, tmp_path, record_property
):
    tokens = json.loads(manage(server_env, "shell", "-c", _TOKENS.format(count=CLIENTS + 1)).split("TOKENS")[-1])
    video = make_video(tmp_path / "small.mp4", frames=10, width=160, height=120).read_bytes()
    clients = [Client(gunicorn.port, token) for token in tokens[:CLIENTS]]
    checker = Client(gunicorn.port, tokens[CLIENTS])
    created: list[int] = []
    deleted: list[int] = []
    start = threading.Barrier(CLIENTS)
    threads = [threading.Thread(target=run_client, args=(client, index, video, start, created, deleted),
                                name=f"client-{index}", daemon=True)
               for index, client in enumerate(clients)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    elapsed = time.monotonic() - began
    assert not [thread.name for thread in threads if thread.is_alive()], "clients hung"

    calls = [call for client in clients for call in client.calls]
    unexpected = [call for call in calls if call.status != EXPECTED[call.route]]
    server_errors = [call for call in calls if call.status is None or call.status >= 500]
    slowest = max(call.seconds for call in calls)
    figures = {"clients": CLIENTS, "requests": len(calls), "5xx_or_no_response": len(server_errors),
               "unexpected_status": len(unexpected), "slowest_request_s": round(slowest, 2),
               "load_phase_s": round(elapsed, 1), "created": len(created), "deleted": len(deleted),
               "database": connection.vendor}
    record_property("load", figures)
    print("FIGURES", figures)
    assert not server_errors, (server_errors[:5], gunicorn.log()[-5000:])
    assert not unexpected, unexpected[:5]
    assert len(calls) == CLIENTS * (3 * ARCHIVES_PER_CLIENT + 3)
    assert slowest < REQUEST_TIMEOUT
    # The server's own access log agrees: no 5xx left it.
    access = [line.split() for line in gunicorn.log().splitlines() if line.startswith("ACCESS ")]
    assert not [line for line in access if line[3].startswith("5")], gunicorn.log()[-5000:]

    # Afterwards the count, the list and the files agree with what the clients did.
    assert len(created) == CLIENTS * ARCHIVES_PER_CLIENT and len(deleted) == CLIENTS
    status, data = checker.request("GET", "/videos/count/", "GET /videos/count/")
    assert (status, json.loads(data)["count"]) == (200, len(created) - len(deleted))
    status, data = checker.request("GET", "/videos/?limit=1000", "GET /videos/")
    survivors = {archive["id"] for archive in json.loads(data)["results"]}
    assert survivors == set(created) - set(deleted)
    assert all(archive["file_size"] == len(video) for archive in json.loads(data)["results"])
    media = Path(server_env["MEDIA_ROOT"]) / "videos"
    for archive_id in deleted:
        leftovers = list((media / str(archive_id)).glob("*")) if (media / str(archive_id)).exists() else []
        assert not leftovers, f"orphan files of deleted archive {archive_id}: {leftovers}"
    for archive_id in survivors:
        assert len(list((media / str(archive_id)).glob("source-*"))) == 1, archive_id
    assert gunicorn.process.poll() is None, "the server died"
