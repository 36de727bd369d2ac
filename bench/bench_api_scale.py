"""Benchmark: the list and count endpoints at 100,000 archives and 100,000 face events, on PostgreSQL, over HTTP.

For each code tree given (e.g. `before` = a git ref checked out into a temporary worktree, `after` = this
checkout), the bench:

1. creates a dedicated PostgreSQL database (`<db-prefix>_<label>`, dropped first), migrates it with that tree's
   code, and fills it with COPY: 100,000 archives (full default stream_settings, 5% NULL names, duplicate names,
   10 camera groups, created over a year), 100,000 face events with 2 KiB embeddings on the first 1,000 archives,
   20,000 body and 20,000 car events, 5,000 face / 1,000 body / 1,000 car clusters; then VACUUM ANALYZE;
2. runs every case in-process (Django test client, token auth as over HTTP) to count the SQL queries of the
   request, to take its CPU time in this process (median of 7, or 2 at limit 1000) and to EXPLAIN ANALYZE its
   slowest query other than the token lookup; then (`--cpu-rounds`) the CPU time again, in turns between the
   trees, request by request, as the machine's load also stretches a process's own CPU time;
3. serves that tree as `./dev serve` does (`gunicorn -c findface_videos/gunicorn_conf.py`, FFV_WEB_WORKERS=N;
   a tree without that file: `gunicorn findface_videos.wsgi:application --workers N`) and times each case sequentially
   over real HTTP (http.client, keep-alive): p50/p95 of `--repeat` requests (after 2 warm-ups) at limit 20 and
   of `--repeat-large` at limit 1000;
4. runs `--clients` concurrent clients (threads, one keep-alive connection each) for `--seconds` on a mix of the
   limit-20 cases: throughput and p50/p95.

Prints a table per tree and the ratios, and writes everything (plans included) as JSON. Run from the repository
root, with PostgreSQL reachable as `--pg` (minutes: most of it is the `before` tree's slow requests)::

    git worktree add /tmp/ffv-before <ref>
    .venv/bin/python bench/bench_api_scale.py --tree before=/tmp/ffv-before --tree after=. \\
        --json-out bench/results-api-scale.json
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ARCHIVES = 100_000
GROUPS = 10
PROCESSED = 1_000  # archives that carry events
FACE_EVENTS = 100_000
OTHER_EVENTS = 20_000  # bodies and cars each
CLUSTERS = {"face": 5_000, "body": 1_000, "car": 1_000}
EVENTS = {"face": FACE_EVENTS, "body": OTHER_EVENTS, "car": OTHER_EVENTS}
PLURAL = {"face": "faces", "body": "bodies", "car": "cars"}
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ADMIN = ("bench", "bench-password-1")


def cursor(values: list[Any], reverse: bool = False) -> str:
    """A page cursor as videos.pagination encodes it (to start a page deep in the table)."""
    raw = json.dumps({"v": values, "r": reverse}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def cases() -> list[tuple[str, str, bool]]:
    """(name, path without limit, also at limit 1000). The first archive is id 1 of group 2; see `load`."""
    mid_name = f"archive {25_001:05d}.mp4"
    out: list[tuple[str, str, bool]] = [
        ("videos", "/videos/?", True),
        ("videos ordering=id", "/videos/?ordering=id&", False),
        ("videos ordering=name", "/videos/?ordering=name&", True),
        ("videos ordering=-name", "/videos/?ordering=-name&", False),
        ("videos ordering=created_date", "/videos/?ordering=created_date&", True),
        ("videos ordering=-created_date", "/videos/?ordering=-created_date&", False),
        ("videos deep page (-id)", f"/videos/?page={cursor([50_000])}&", False),
        ("videos deep page (name)", f"/videos/?ordering=name&page={cursor([mid_name, 50_000])}&", False),
        ("videos camera_groups=3", "/videos/?camera_groups=3&", True),
        ("videos camera_groups=3 ordering=name", "/videos/?camera_groups=3&ordering=name&", False),
        ("videos name_contains", "/videos/?name_contains=archive%2012&", False),
        ("videos name=", f"/videos/?name={mid_name.replace(' ', '%20')}&", False),
        ("videos case_in=2", "/videos/?case_in=2&", False),
        ("videos save_to", "/videos/?save_to=http%3A%2F%2Fsink.example%2F&", False),
        ("videos id_in", "/videos/?id_in=5,500,5000,50000&", False),
        ("videos created_date_last_n_days=30", "/videos/?created_date_last_n_days=30&", False),
        ("videos created_date_nth_full_week=3", "/videos/?created_date_nth_full_week=3&", False),
        ("videos created_date_gte ordering=name",
         "/videos/?created_date_gte=2026-06-01T00:00:00Z&ordering=name&", False),
        ("videos count", "/videos/count/?", False),
        ("videos count camera_groups=3", "/videos/count/?camera_groups=3&", False),
        ("videos count name_contains", "/videos/count/?name_contains=archive%2012&", False),
        ("videos count created_date_last_n_days=30", "/videos/count/?created_date_last_n_days=30&", False),
    ]
    for kind in ("face", "body", "car"):
        base = f"/events/{PLURAL[kind]}/"
        out += [
            (f"events {kind}", f"{base}?", True),
            (f"events {kind} count", f"{base}count/?", False),
        ]
    out += [
        ("events face ordering=-quality", "/events/faces/?ordering=-quality&", True),
        ("events face ordering=created_date", "/events/faces/?ordering=created_date&", False),
        ("events face video_archive=7", "/events/faces/?video_archive=7&", False),
        ("events face camera_groups=3", "/events/faces/?camera_groups=3&", False),
        ("events face cluster_in=9", "/events/faces/?cluster_in=9&", False),
        ("events face quality_gte=0.9", "/events/faces/?quality_gte=0.9&", False),
        ("events face quality_gte=0.9 ordering=-quality", "/events/faces/?quality_gte=0.9&ordering=-quality&",
         False),
        ("events face count video_archive=7", "/events/faces/count/?video_archive=7&", False),
        ("events face count quality_gte=0.9", "/events/faces/count/?quality_gte=0.9&", False),
    ]
    for kind in ("face", "body", "car"):
        base = f"/clusters/{PLURAL[kind]}/"
        out += [
            (f"clusters {kind}", f"{base}?", kind == "face"),
            (f"clusters {kind} count", f"{base}count/?", False),
        ]
    out += [
        ("clusters face ordering=-event_count", "/clusters/faces/?ordering=-event_count&", False),
        ("clusters face video_archive=7", "/clusters/faces/?video_archive=7&", False),
        ("clusters face count video_archive=7", "/clusters/faces/count/?video_archive=7&", False),
    ]
    return out


def requests_of(all_cases: list[tuple[str, str, bool]]) -> list[tuple[str, str, int]]:
    """(case name, full path, limit): every case at limit 20, the marked ones at 1000 too (count/ has no limit)."""
    out = []
    for name, path, large in all_cases:
        if "/count/" in path:
            out.append((name, path.rstrip("&?"), 0))
            continue
        out.append((name, f"{path}limit=20", 20))
        if large:
            out.append((name, f"{path}limit=1000", 1000))
    return out


# --- database


def pg_connect(pg: str, dbname: str):
    import psycopg

    parts = urlsplit(pg)
    return psycopg.connect(host=parts.hostname, port=parts.port or 5432, user=parts.username or "postgres",
                           password=parts.password, dbname=dbname, autocommit=True)


def database_url(pg: str, dbname: str) -> str:
    return f"{pg.rstrip('/')}/{dbname}"


def tree_env(tree: Path, url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(DATABASE_URL=url, PYTHONPATH=str(tree), DJANGO_SETTINGS_MODULE="findface_videos.settings",
               DJANGO_DEBUG="false", LOG_LEVEL="WARNING", FFV_VAR_DIR=f"/tmp/bench-api-var-{tree.name}")
    Path(env["FFV_VAR_DIR"], "static").mkdir(parents=True, exist_ok=True)
    # Trees that fail closed without a key (settings.py) get one; older trees ignore it.
    env.setdefault("DJANGO_SECRET_KEY", "bench-api-scale-not-a-secret")
    env.pop("CELERY_BROKER_URL", None)  # nothing is queued; the default file-system broker needs no server
    return env


def create_database(pg: str, dbname: str, tree: Path) -> None:
    with pg_connect(pg, "postgres") as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{dbname}"')
    env = tree_env(tree, database_url(pg, dbname))
    subprocess.run([sys.executable, "manage.py", "migrate", "--verbosity", "0"], cwd=tree, env=env, check=True)
    subprocess.run([sys.executable, "manage.py", "shell", "-c",
                    "from django.contrib.auth.models import User; "
                    f"User.objects.create_superuser(username={ADMIN[0]!r}, password={ADMIN[1]!r}, email='')"],
                   cwd=tree, env=env, check=True)


def _columns(conn, table: str) -> list[str]:
    rows = conn.execute("SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                        "ORDER BY ordinal_position", (table,)).fetchall()
    return [row[0] for row in rows if row[0] != "id"]


def _copy(conn, table: str, rows) -> None:
    columns = _columns(conn, table)
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([row.get(column) for column in columns])


def load(pg: str, dbname: str, stream_settings: dict[str, Any]) -> dict[str, float]:
    """Fill the migrated database with COPY; the same rows for every tree (seeded)."""
    from psycopg.types.json import Jsonb

    rng = random.Random(14)
    timings = {}
    conn = pg_connect(pg, dbname)
    start = time.perf_counter()
    group_ids = []
    for index in range(GROUPS):
        row = conn.execute("INSERT INTO videos_cameragroup (name, comment, created_date, modified_date) "
                           "VALUES (%s, '', %s, %s) RETURNING id", (f"bench group {index}", NOW, NOW)).fetchone()
        group_ids.append(row[0])
    case_ids = [conn.execute("INSERT INTO videos_case (name, created_date) VALUES (%s, %s) RETURNING id",
                             (f"case {index}", NOW)).fetchone()[0] for index in range(5)]
    settings_json = Jsonb(stream_settings)
    statistic = Jsonb({"processed_duration": 60.0, "faces_posted": 100, "faces_failed": 0, "faces_not_posted": 3,
                       "bodies_posted": 20, "bodies_failed": 0, "bodies_not_posted": 1, "cars_posted": 20,
                       "cars_failed": 0, "cars_not_posted": 0, "processing_fps": 41.5, "frames_dropped": 0,
                       "frames_processed": 1500, "frames_imotion_skipped": 0, "decoding_soft_errors": 0,
                       "frame_width": 1280, "frame_height": 720, "last_stream_timestamp": 60.0,
                       "objects": {"face": {"posted": 100, "failed": 0, "not_posted": 3},
                                   "body": {"posted": 20, "failed": 0, "not_posted": 1},
                                   "car": {"posted": 20, "failed": 0, "not_posted": 0}}})
    empty = Jsonb({})

    def archives():
        for number in range(1, ARCHIVES + 1):
            processed = number <= PROCESSED
            created = NOW - timedelta(seconds=(ARCHIVES - number) * 315)  # a year, in id order
            yield {
                "camera_group_id": group_ids[number % GROUPS],
                "case_id": case_ids[number // 10 % 5] if number % 10 == 0 else None,
                "name": None if number % 20 == 0 else f"archive {number % 50_000:05d}.mp4",
                "url": None, "save_to": "http://sink.example/" if number % 100 == 0 else None,
                "stream_settings": settings_json, "stream_settings_version": 1,
                "created_date": created, "modified_date": created,
                "source_file": f"videos/{number}/source.mp4" if processed else "",
                "file_size": 50_000_000 if processed else 0, "source_len": 60.0 if processed else None,
                "job_state": "completed" if processed else "idle", "stop_requested": False,
                "job_starts": 1 if processed else 0, "job_task_id": "", "job_claim": "", "job_purge_pending": False,
                "job_worker": "", "job_heartbeat": None, "job_msg_code": "", "job_msg_params": empty,
                "job_checkpoint": empty, "queued_date": created if processed else None,
                "processing_start_date": created if processed else None,
                "processing_finish_date": created if processed else None,
                "statistic": statistic if processed else empty,
                "face_count": 100 if processed else 0, "body_count": 20 if processed else 0,
                "car_count": 20 if processed else 0, "face_cluster_count": 0, "body_cluster_count": 0,
                "car_cluster_count": 0, "camera_id": None,
            }

    _copy(conn, "videos_videoarchive", archives())
    timings["archives_s"] = time.perf_counter() - start
    for kind in ("face", "body", "car"):
        start = time.perf_counter()
        size = 2048 if kind == "face" else 512
        _copy(conn, f"videos_{kind}cluster", ({
            "created_date": NOW, "modified_date": NOW, "event_count": EVENTS[kind] // 2 // CLUSTERS[kind],
            "centroid": rng.randbytes(size), "best_event_id": None} for _ in range(CLUSTERS[kind])))

        def events(kind=kind, size=size):
            for number in range(EVENTS[kind]):
                archive = number % PROCESSED + 1
                created = NOW - timedelta(seconds=(EVENTS[kind] - number) * 30)
                yield {
                    "video_archive_id": archive, "camera_group_id": group_ids[archive % GROUPS],
                    "created_date": created, "frame_timestamp": number / 25, "frame_index": number,
                    "frame_coords_left": 10, "frame_coords_top": 20, "frame_coords_right": 90,
                    "frame_coords_bottom": 120, "quality": round(rng.random(), 4), "confidence": 0.9,
                    "track_id": number, "post_policy": "best",
                    "thumbnail": f"events/{archive}/{kind}/{number:07d}-thumb.jpg",
                    "fullframe": f"events/{archive}/{kind}/{number:07d}-full.jpg",
                    "normalized": f"events/{archive}/{kind}/{number:07d}-norm.jpg" if kind == "face" else "",
                    "detector_params": Jsonb({"track_frames": 12, "model": kind}),
                    "embedding": rng.randbytes(size),
                    "cluster_id": number // 2 % CLUSTERS[kind] + 1 if number % 2 == 0 else None,
                }

        _copy(conn, f"videos_{kind}event", events())
        conn.execute(f"UPDATE videos_{kind}cluster SET best_event_id = 2 * (id - 1) + 1")
        timings[f"{kind}_events_s"] = time.perf_counter() - start
    start = time.perf_counter()
    conn.execute("VACUUM ANALYZE")
    timings["vacuum_analyze_s"] = time.perf_counter() - start
    timings["archive_table_mb"] = conn.execute(
        "SELECT pg_total_relation_size('videos_videoarchive') / 1e6").fetchone()[0]
    timings["archive_heap_mb"] = conn.execute("SELECT pg_relation_size('videos_videoarchive') / 1e6").fetchone()[0]
    conn.close()
    return {key: float(value) for key, value in timings.items()}


# --- in-process probe: queries per request, EXPLAIN ANALYZE of the slowest


def probe(out: Path) -> None:
    """Runs inside the tree's environment (a subprocess with cwd and PYTHONPATH set to it)."""
    import django

    django.setup()
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from rest_framework.test import APIClient

    client = APIClient()
    login = client.post("/auth/login/", {"uuid": "bench-probe"}, format="json",
                        HTTP_AUTHORIZATION="Basic " + base64.b64encode(":".join(ADMIN).encode()).decode())
    assert login.status_code == 200, login.content[:300]
    client.credentials(HTTP_AUTHORIZATION=f"Token {login.json()['token']}")
    results = {}
    for name, path, limit in requests_of(cases()):
        client.get(path)  # warm-up (caches, the connection)
        # CPU time of this process (Django, DRF, psycopg) per request: unlike wall time, it hardly depends on what
        # else the machine runs. The database's own time is in the EXPLAIN ANALYZE below.
        cpu = []
        for _ in range(2 if limit == 1000 else 7):
            start = time.process_time()
            client.get(path)
            cpu.append(1000 * (time.process_time() - start))
        with CaptureQueriesContext(connection) as captured:
            response = client.get(path)
        assert response.status_code == 200, (path, response.status_code, response.content[:300])
        body = response.json()
        rows = body["count"] if "count" in body else len(body["results"])
        # The request's own queries: the token lookup of the authentication is the same everywhere.
        own = [query for query in captured.captured_queries if '"videos_authtoken"' not in query["sql"]]
        slowest = max(own, key=lambda query: float(query["time"]))
        with connection.cursor() as cur:
            cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + slowest["sql"])
            plan = "\n".join(row[0] for row in cur.fetchall())
        results[f"{name} @{limit}"] = {"path": path, "limit": limit, "queries": len(captured.captured_queries),
                                       "cpu_ms": statistics.median(cpu),
                                       "rows": rows, "slowest_sql": slowest["sql"], "plan": plan}
    out.write_text(json.dumps(results, indent=2))


def cpu_server() -> None:
    """Runs inside the tree's environment: reads `path<TAB>repeat` lines, answers each with the CPU ms of every
    timed request (after one warm-up) as a JSON list. The parent alternates the trees request by request."""
    import django

    django.setup()
    from rest_framework.test import APIClient

    client = APIClient()
    login = client.post("/auth/login/", {"uuid": "bench-cpu"}, format="json",
                        HTTP_AUTHORIZATION="Basic " + base64.b64encode(":".join(ADMIN).encode()).decode())
    assert login.status_code == 200, login.content[:300]
    client.credentials(HTTP_AUTHORIZATION=f"Token {login.json()['token']}")
    for line in sys.stdin:
        path, repeat = line.rstrip("\n").split("\t")
        client.get(path)
        cpu = []
        for _ in range(int(repeat)):
            start = time.process_time()
            response = client.get(path)
            cpu.append(1000 * (time.process_time() - start))
        assert response.status_code == 200, (path, response.status_code)
        print(json.dumps(cpu), flush=True)


def cpu_interleaved(trees: dict[str, Path], urls: dict[str, str], rounds: int) -> dict[str, dict[str, float]]:
    """CPU ms per request of every tree, measured in turns (before, after, before, ...: `rounds` turns of 3
    requests, 1 at limit 1000), so that the machine's load, which also slows a process's own CPU time on shared
    cores, weighs on every tree alike. Median of all turns."""
    servers = {label: subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "_cpu_server"], cwd=tree,
                                       env=tree_env(tree, urls[label]), stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True)
               for label, tree in trees.items()}
    results: dict[str, dict[str, float]] = {label: {} for label in trees}
    try:
        for name, path, limit in requests_of(cases()):
            samples: dict[str, list[float]] = {label: [] for label in trees}
            for _ in range(rounds):
                for label, server in servers.items():
                    server.stdin.write(f"{path}\t{1 if limit == 1000 else 3}\n")
                    server.stdin.flush()
                    samples[label] += json.loads(server.stdout.readline())
            for label in trees:
                results[label][f"{name} @{limit}"] = statistics.median(samples[label])
    finally:
        for server in servers.values():
            server.stdin.close()
            server.wait(60)
    return results


# --- HTTP


class Client:
    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.headers = {"Authorization": f"Token {token}", "Connection": "keep-alive"}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def get(self, path: str) -> float:
        start = time.perf_counter()
        try:
            self.conn.request("GET", path, headers=self.headers)
            response = self.conn.getresponse()
            body = response.read()
        except (http.client.HTTPException, OSError):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            raise
        if response.status != 200:
            raise RuntimeError(f"{path}: {response.status} {body[:300]!r}")
        if response.getheader("Connection", "").lower() == "close":
            self.conn.close()
        return time.perf_counter() - start


def login(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    auth = base64.b64encode(":".join(ADMIN).encode()).decode()
    conn.request("POST", "/auth/login/", body=json.dumps({"uuid": "bench"}),
                 headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"})
    response = conn.getresponse()
    body = response.read()
    assert response.status == 200, body[:300]
    return json.loads(body)["token"]


def serve(tree: Path, url: str, port: int, workers: int) -> subprocess.Popen:
    """The tree served as `./dev serve` serves it: gunicorn with its config file (findface_videos/gunicorn_conf.py,
    event-loop workers with a thread pool), or the plain WSGI app for a tree that has no such file."""
    env = tree_env(tree, url)
    if (tree / "findface_videos" / "gunicorn_conf.py").exists():
        # Keep-alive long enough for the sequential clients, which wait for the other tree between requests.
        env.update(FFV_BIND=f"127.0.0.1:{port}", FFV_WEB_WORKERS=str(workers), FFV_WEB_KEEPALIVE="300")
        command = [sys.executable, "-m", "gunicorn", "-c", "findface_videos/gunicorn_conf.py",
                   "--log-level", "warning"]
    else:
        command = [sys.executable, "-m", "gunicorn", "findface_videos.wsgi:application", "--bind",
                   f"127.0.0.1:{port}", "--workers", str(workers), "--timeout", "600", "--log-level", "warning"]
    # The access log (one line a request) would drown the bench's own output.
    server = subprocess.Popen(command, cwd=tree, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            http.client.HTTPConnection("127.0.0.1", port, timeout=2).request("GET", "/")
            return server
        except OSError:
            time.sleep(0.3)
    server.kill()
    raise RuntimeError("gunicorn did not start")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def time_sequential(clients: dict[str, Client], repeat: int, repeat_large: int) -> dict[str, dict[str, Any]]:
    """Each request timed on every tree in turn (before, after, before, ...), so that the other work on the
    machine weighs on all trees alike."""
    results: dict[str, dict[str, Any]] = {label: {} for label in clients}
    print(f"  {'request':<56}" + "".join(f"{'p50 ' + label:>14}{'p95 ' + label:>14}" for label in clients))
    for name, path, limit in requests_of(cases()):
        count = repeat_large if limit == 1000 else repeat
        for client in clients.values():
            client.get(path)
            client.get(path)
        seconds: dict[str, list[float]] = {label: [] for label in clients}
        for _ in range(count):
            for label, client in clients.items():
                seconds[label].append(client.get(path))
        line = f"  {name + ' @' + str(limit):<56}"
        for label in clients:
            timing = {"p50_ms": 1000 * statistics.median(seconds[label]),
                      "p95_ms": 1000 * percentile(seconds[label], 0.95), "n": count}
            results[label][f"{name} @{limit}"] = timing
            line += f"{timing['p50_ms']:>14.1f}{timing['p95_ms']:>14.1f}"
        print(line, flush=True)
    return results


def time_concurrent(port: int, token: str, clients: int, seconds: float) -> dict[str, float]:
    """`clients` threads, each with its own keep-alive connection, cycling through the limit-20 requests."""
    paths = [path for _name, path, limit in requests_of(cases()) if limit != 1000]
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def run(index: int) -> None:
        client = Client(port, token)
        step = index
        while time.monotonic() < stop_at:
            try:
                elapsed = client.get(paths[step % len(paths)])
            except Exception:  # noqa: BLE001 - counted, the run goes on
                with lock:
                    errors[0] += 1
                continue
            finally:
                step += 1
            with lock:
                latencies.append(elapsed)

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(run, range(clients)))
    wall = time.perf_counter() - start
    return {"clients": clients, "seconds": wall, "requests": len(latencies), "errors": errors[0],
            "throughput_rps": len(latencies) / wall, "p50_ms": 1000 * statistics.median(latencies),
            "p95_ms": 1000 * percentile(latencies, 0.95)}


def prepare_tree(label: str, tree: Path, args: argparse.Namespace, stream_settings: dict[str, Any]) -> dict[str, Any]:
    """Database, data and the in-process probe of one tree."""
    dbname = f"{args.db_prefix}_{label}"
    url = database_url(args.pg, dbname)
    print(f"== {label}: {tree}, db {dbname}", flush=True)
    if args.reuse_db:
        loaded = {}
    else:
        create_database(args.pg, dbname, tree)
        loaded = load(args.pg, dbname, stream_settings)
    print(f"  loaded: {json.dumps({k: round(v, 1) for k, v in loaded.items()})}", flush=True)
    probe_out = Path(f"/tmp/bench-api-probe-{label}.json")
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "_probe", str(probe_out)], cwd=tree,
                   env=tree_env(tree, url), check=True)
    return {"tree": str(tree), "db": dbname, "url": url, "load": loaded,
            "probe": json.loads(probe_out.read_text())}


def run_trees(trees: dict[str, Path], args: argparse.Namespace, stream_settings: dict[str, Any]) -> dict[str, Any]:
    prepared = {label: prepare_tree(label, tree, args, stream_settings) for label, tree in trees.items()}
    if args.cpu_rounds:
        # The probe's CPU times were taken one tree after the other; these alternate between the trees.
        cpu = cpu_interleaved(trees, {label: prepared[label]["url"] for label in trees}, args.cpu_rounds)
        for label in trees:
            for key, value in cpu[label].items():
                prepared[label]["probe"][key]["cpu_ms"] = value
    servers = {label: serve(trees[label], prepared[label]["url"], args.port + index, args.workers)
               for index, label in enumerate(trees)}
    try:
        tokens = {label: login(args.port + index) for index, label in enumerate(trees)}
        clients = {label: Client(args.port + index, tokens[label]) for index, label in enumerate(trees)}
        timed = time_sequential(clients, args.repeat, args.repeat_large)
        concurrent_results = {}
        for index, label in enumerate(trees):
            concurrent_results[label] = time_concurrent(args.port + index, tokens[label], args.clients, args.seconds)
            concurrent_results[label]["load_average"] = os.getloadavg()
            shown = {k: round(v, 1) for k, v in concurrent_results[label].items() if k != "load_average"}
            print(f"  {label}, {args.clients} clients: {json.dumps(shown)}", flush=True)
    finally:
        for server in servers.values():
            server.terminate()
            server.wait(30)
    out = {}
    for label, result in prepared.items():
        probed = result.pop("probe")
        for key, value in timed[label].items():
            value.update({k: probed[key][k] for k in ("queries", "rows", "cpu_ms")})
        result.pop("url")
        out[label] = {**result, "requests": timed[label], "concurrent": concurrent_results[label],
                      "plans": {key: {"sql": value["slowest_sql"], "plan": value["plan"]}
                                for key, value in probed.items()}}
    return out


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "_probe":
        sys.path.insert(0, os.getcwd())
        probe(Path(sys.argv[2]))
        return
    if len(sys.argv) == 2 and sys.argv[1] == "_cpu_server":
        sys.path.insert(0, os.getcwd())
        cpu_server()
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True, help="LABEL=PATH of a checkout to measure")
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432", help="PostgreSQL server URL")
    parser.add_argument("--db-prefix", default="h_apispeed_bench")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (the same for every tree)")
    parser.add_argument("--repeat", type=int, default=30, help="timed requests per case at limit 20 and count/")
    parser.add_argument("--repeat-large", type=int, default=5, help="timed requests per case at limit 1000")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the concurrent run")
    parser.add_argument("--cpu-rounds", type=int, default=6,
                        help="turns of the interleaved CPU probe per request (0: the probe's own, one tree after "
                             "the other)")
    parser.add_argument("--reuse-db", action="store_true",
                        help="measure the databases a previous run loaded (same --db-prefix) instead of reloading")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from processing.stream_settings import default_stream_settings

    stream_settings = default_stream_settings()
    trees = dict(item.split("=", 1) for item in args.tree)
    results: dict[str, Any] = {"archives": ARCHIVES, "face_events": FACE_EVENTS, "workers": args.workers,
                               "load_average_start": os.getloadavg(), "cpus": os.cpu_count(), "trees": {}}
    results["trees"] = run_trees({label: Path(path).resolve() for label, path in trees.items()}, args,
                                 stream_settings)
    results["load_average_end"] = os.getloadavg()
    if len(trees) == 2:
        first, second = (results["trees"][label] for label in trees)
        print(f"\n{'request':<52}{'p95 ' + list(trees)[0]:>14}{'p95 ' + list(trees)[1]:>14}{'ratio':>8}{'queries':>10}")
        for key, before in first["requests"].items():
            after = second["requests"][key]
            print(f"{key:<52}{before['p95_ms']:>14.1f}{after['p95_ms']:>14.1f}"
                  f"{before['p95_ms'] / after['p95_ms']:>8.1f}{before['queries']:>5}->{after['queries']:<4}")
        for label in trees:
            result = results["trees"][label]["concurrent"]
            print(f"{label}: {result['clients']} clients {result['throughput_rps']:.1f} req/s, "
                  f"p95 {result['p95_ms']:.0f} ms, errors {result['errors']}")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
