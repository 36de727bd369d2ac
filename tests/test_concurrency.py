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
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from tests.conftest import ROOT, make_video, process_end, requires, wait_for

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


@contextmanager
def serve(server_env: dict[str, str], tmp_path: Path, **settings: str) -> Iterator[Server]:
    """The API server started as `./dev serve` starts it (gunicorn with findface_videos/gunicorn_conf.py) on a free
    loopback port; `settings` are extra environment variables (FFV_WEB_*)."""
    requires(importlib.util.find_spec("gunicorn") is not None, "gunicorn is not installed")
    port = free_port()
    log_path = tmp_path / f"gunicorn-{port}.log"
    env = {**server_env, "FFV_BIND": f"127.0.0.1:{port}", **settings}
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "findface_videos/gunicorn_conf.py"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
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
        process_end(process, timeout=40)


@pytest.fixture
def gunicorn(server_env, tmp_path) -> Iterator[Server]:
    with serve(server_env, tmp_path, FFV_WEB_WORKERS="3", FFV_WEB_THREADS="4") as server:
        yield server


def access_statuses(log: str) -> list[int]:
    """The status of every request in the server's access log (`127.0.0.1:5555 - "GET /path HTTP/1.1" 200`)."""
    return [int(match) for match in re.findall(r'^\S+ - "[A-Z]+ \S+ HTTP/[\d.]+" (\d{3})$', log, re.MULTILINE)]


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
    statuses = access_statuses(gunicorn.log())
    assert len(statuses) >= len(calls), gunicorn.log()[-5000:]
    assert not [status for status in statuses if status >= 500], gunicorn.log()[-5000:]

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


# --- idle and slow clients: they hold sockets, never the workers

IDLE_SOCKETS = 50
HALF_HEADS = 20  # requests whose head stops half-way
HALF_BODIES = 20  # small JSON bodies that stop half-way (read by the event loop, never by a thread)
HEAD_TIMEOUT = 3.0  # FFV_WEB_HEADER_TIMEOUT of the test server (default 10)
BODY_TIMEOUT = 5.0  # FFV_WEB_BODY_TIMEOUT (default 60)
UPLOAD_LIMIT = 8 * 1024 * 1024  # FFV_MAX_UPLOAD_SIZE
QUICK = 2.0  # seconds: what "answers at once" means here


def tokens(server_env: dict[str, str], count: int) -> list[str]:
    return json.loads(manage(server_env, "shell", "-c", _TOKENS.format(count=count)).split("TOKENS")[-1])


def connect(port: int, data: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if data:
        sock.sendall(data)
    return sock


def read_until_closed(sock: socket.socket, deadline: float) -> bytes | None:
    """Everything the server sends until it closes the connection; None if it is still open at `deadline`."""
    received = b""
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return None
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def head(method: str, path: str, token: str | None, length: int, content_type: str = "application/json") -> bytes:
    auth = f"Authorization: Token {token}\r\n" if token else ""
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: {content_type}\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


def json_of(reply: bytes) -> dict:
    return json.loads(reply.split(b"\r\n\r\n", 1)[1])


class TricklingUpload(threading.Thread):
    """An upload bigger than the loop buffers (so a view reads it in a thread) that sends a byte every 0.2 s until
    told to stall, then waits for the server's answer."""

    def __init__(self, port: int, token: str, archive_id: int, length: int) -> None:
        super().__init__(daemon=True, name="trickling-upload")
        self.sock = connect(port, head("PUT", f"/videos/{archive_id}/upload/source_file/", token, length,
                                       "video/mp4"))
        self.stall = threading.Event()
        self.sent = 0
        self.reply: bytes | None = None

    def run(self) -> None:
        while not self.stall.wait(0.2):
            self.sock.sendall(b"\0")
            self.sent += 1
        self.reply = read_until_closed(self.sock, time.monotonic() + BODY_TIMEOUT + 20)


def test_idle_and_slow_clients_do_not_starve_the_api(server_env, tmp_path, record_property):
    """Ninety stalled connections against 2 workers x 8 threads (`./dev serve`'s defaults): the API still answers
    at once; the stalled ones are dropped after their timeouts; uploads, big and small, still work."""
    token, = tokens(server_env, 1)
    small = make_video(tmp_path / "small.mp4", frames=10, width=160, height=120).read_bytes()
    # Bigger than FFV_WEB_BODY_BUFFER (256 KiB): streamed to the view rather than read whole by the loop.
    big = make_video(tmp_path / "big.avi", frames=80, width=640, height=480, codec="mjpeg").read_bytes()
    assert len(big) > 256 * 1024
    with serve(server_env, tmp_path, FFV_WEB_HEADER_TIMEOUT=str(HEAD_TIMEOUT), FFV_WEB_BODY_TIMEOUT=str(BODY_TIMEOUT),
               FFV_MAX_UPLOAD_SIZE=str(UPLOAD_LIMIT)) as server:
        client = Client(server.port, token)
        archive_ids = []
        for name in ("trickled", "small", "big"):
            status, data = client.request("POST", "/videos/", "POST /videos/",
                                          json.dumps({"camera_group": 1, "name": name}).encode())
            assert status == 201, data
            archive_ids.append(json.loads(data)["id"])
        trickled_id, small_id, big_id = archive_ids

        idle = [connect(server.port) for _ in range(IDLE_SOCKETS)]
        half_heads = [connect(server.port, b"GET /videos/count/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthoriz")
                      for _ in range(HALF_HEADS)]
        body = json.dumps({"camera_group": 1, "name": "never finished"}).encode()
        half_bodies = [connect(server.port, head("POST", "/videos/", token, len(body)) + body[:10])
                       for _ in range(HALF_BODIES)]
        stalled_at = time.monotonic()
        upload = TricklingUpload(server.port, token, trickled_id, 1024 * 1024)
        upload.start()
        try:
            time.sleep(0.5)  # every connection accepted and sitting in a worker

            # The API answers at once, on new connections (each taken by either worker).
            latencies = []
            for _ in range(10):
                began = time.monotonic()
                status, data = client.request("GET", "/videos/count/", "GET /videos/count/")
                latencies.append(time.monotonic() - began)
                assert (status, json.loads(data)["count"]) == (200, 3)
            figures = {"stalled_connections": IDLE_SOCKETS + HALF_HEADS + HALF_BODIES + 1,
                       "count_p50_ms": round(sorted(latencies)[len(latencies) // 2] * 1000, 1),
                       "count_max_ms": round(max(latencies) * 1000, 1)}
            record_property("slow_clients", figures)
            print("FIGURES", figures)
            assert max(latencies) < QUICK, latencies

            # A normal upload on the same server meanwhile, small (read by the loop) and big (streamed).
            assert client.request("PUT", f"/videos/{small_id}/upload/source_file/", "PUT small", small,
                                  "video/mp4")[0] == 201
            assert client.request("PUT", f"/videos/{big_id}/upload/source_file/", "PUT big", big,
                                  "video/x-msvideo")[0] == 201

            # Idle connections and half-sent heads are closed after the head timeout, without an answer.
            deadline = stalled_at + HEAD_TIMEOUT + 5
            assert [read_until_closed(sock, deadline) for sock in idle + half_heads] == [b""] * (
                IDLE_SOCKETS + HALF_HEADS)
            # Half-sent bodies get a 408 in the API's error format after the body timeout, then are closed.
            replies = [read_until_closed(sock, stalled_at + BODY_TIMEOUT + 5) for sock in half_bodies]
            assert all(reply is not None and status_of(reply) == 408 for reply in replies), replies[:3]
            assert json_of(replies[0])["code"] == "BAD_PARAM"

            # The trickling upload is not cut while bytes keep coming, however slowly...
            assert upload.is_alive() and upload.reply is None
            assert upload.sent > (time.monotonic() - stalled_at) / 0.2 / 2
            # ...and once it stalls, the view reads a truncated body after the body timeout.
            upload.stall.set()
            upload.join(timeout=BODY_TIMEOUT + 30)
            assert upload.reply is not None and status_of(upload.reply) == 400, upload.reply
            assert json_of(upload.reply)["code"] == "BAD_PARAM"
        finally:
            upload.stall.set()
            for sock in [*idle, *half_heads, *half_bodies, upload.sock]:
                sock.close()

        # A client that shuts down its sending side half-way through a big upload still gets its answer.
        with connect(server.port, head("PUT", f"/videos/{small_id}/upload/source_file/", token, len(big),
                                       "video/x-msvideo") + big[: len(big) // 2]) as sock:
            sock.shutdown(socket.SHUT_WR)
            reply = read_until_closed(sock, time.monotonic() + 30)
        assert reply is not None and status_of(reply) == 400, reply
        assert json_of(reply)["code"] == "BAD_PARAM"

        status, data = client.request("GET", "/videos/?limit=10", "GET /videos/")
        sizes = {archive["id"]: archive["file_size"] for archive in json.loads(data)["results"]}
        assert sizes == {trickled_id: 0, small_id: len(small), big_id: len(big)}

        # Upload limits still answer from the headers alone, in the error format: too big (413), and a big body
        # from an anonymous client (401), before the client sends a byte of the body.
        for token_sent, length, expected, code in ((token, UPLOAD_LIMIT + 1, 413, "PAYLOAD_TOO_LARGE"),
                                                   (None, UPLOAD_LIMIT, 401, "UNAUTHORIZED")):
            began = time.monotonic()
            with connect(server.port, head("PUT", f"/videos/{small_id}/upload/source_file/", token_sent, length,
                                           "video/mp4")) as sock:
                reply = read_until_closed(sock, began + QUICK)
            assert reply is not None and status_of(reply) == expected, reply
            assert json_of(reply)["code"] == code
        assert server.process.poll() is None, "the server died"
