"""What the test run leaves in Redis: each test's own queues are purged at its end, and the session fails if any
of them still holds something at its end (a pytest plugin, loaded by tests/conftest.py).

Only the queues this run named are ever touched, never the whole database: CI runs against the machine's shared
Redis database 0, where other things may live. What kombu's Redis transport keeps for a queue `q` (exchange `q`,
Celery's default for a queue of that name):

- the list `q` (and `q\\x06\\x16<priority>` lists) holding the waiting messages;
- the sets `_kombu.binding.q` and `_kombu.binding_permanent.q` (the exchange's bindings);
- entries of the hash `unacked` and the sorted set `unacked_index` for messages a worker took and has not acked
  (a worker killed mid-job leaves them; Redis would deliver them again after the visibility timeout);
- the member of `_kombu.binding.celery.pidbox` for each worker node (named `<q>-<hex>@host` by the tests), and
  `celery.pidbox` in `_kombu.binding_deadlines`, stale once that set is gone.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

# Every queue name a test of this run used (per-test fixture below); the session check looks at all of them.
SESSION_TAG = uuid.uuid4().hex[:8]
_QUEUES_USED: set[str] = set()
_SEP = "\x06\x16"  # kombu's separator in binding members and priority queue names
_PRIORITY_STEPS = (3, 6, 9)  # kombu's default priority_steps besides 0
_PIDBOX = "celery.pidbox"
_DROP_STALE_DEADLINE = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) == 0 then return redis.call('ZREM', KEYS[3], ARGV[1]) end
return 0
"""


def _broker_url() -> str:
    return os.environ.get("CELERY_BROKER_URL", "")


def _client():
    """A Redis client for the test broker, or None when the tests run without a reachable Redis."""
    from tests.conftest import redis_reachable  # conftest is loaded by then (this module is its plugin)

    url = _broker_url()
    if not redis_reachable(url):
        return None
    import redis

    return redis.Redis.from_url(url, socket_timeout=5)


def register_test_queues(*names: str) -> None:
    """Queues a test used besides its processing queue (e.g. a worker's control queue): purged at the end of the
    running test (`own_queues`), and checked at the end of the session."""
    _QUEUES_USED.update(name for name in names if name)


def _queue_keys(queue: str) -> list[str]:
    return [queue, *(f"{queue}{_SEP}{step}" for step in _PRIORITY_STEPS),
            f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}"]


def _unacked_of(client, queues: set[str]) -> list[str]:
    """Delivery tags of unacked messages sent to one of `queues` (by routing key or exchange)."""
    tags = []
    for tag, raw in client.hscan_iter("unacked"):
        try:
            _message, exchange, routing_key = json.loads(raw)[:3]
        except (ValueError, TypeError):
            continue
        if routing_key in queues or exchange in queues:
            tags.append(tag)
    return tags


def _pidbox_members_of(client, queues: set[str]) -> list[bytes]:
    """Pidbox bindings of worker nodes named after one of `queues` (`<queue>-<hex>@host`)."""
    members = []
    for member in client.sscan_iter(f"_kombu.binding.{_PIDBOX}"):
        node_queue = member.decode(errors="replace").split(_SEP)[-1]
        if any(node_queue.startswith(f"{queue}-") for queue in queues):
            members.append(member)
    return members


def purge_queues(names: Iterable[str]) -> int:
    """Delete everything kombu keeps in Redis for these queues (their messages, bindings, unacked messages and
    their workers' pidbox bindings); only these names, never anything else. Returns the number of keys/entries
    removed. Call it once no worker consumes them any more."""
    queues = {name for name in names if name}
    client = _client() if queues else None
    if client is None:
        return 0
    try:
        removed = 0
        keys = [key for queue in sorted(queues) for key in _queue_keys(queue)]
        removed += client.delete(*keys)
        tags = _unacked_of(client, queues)
        if tags:
            with client.pipeline() as pipe:
                pipe.hdel("unacked", *tags).zrem("unacked_index", *tags)
                removed += sum(pipe.execute())
        members = _pidbox_members_of(client, queues)
        if members:
            removed += client.srem(f"_kombu.binding.{_PIDBOX}", *members)
            removed += client.srem(f"_kombu.binding_permanent.{_PIDBOX}", *members)
        # A worker's pidbox binding table has a deadline entry, which stays when the table is gone (the worker
        # removed its member on shutdown, or we did): dropped then, in one step with the check, so that a worker
        # binding at that moment keeps its entry.
        removed += client.eval(_DROP_STALE_DEADLINE, 3, f"_kombu.binding.{_PIDBOX}",
                               f"_kombu.binding_permanent.{_PIDBOX}", "_kombu.binding_deadlines", _PIDBOX)
        return removed
    finally:
        client.close()


def leftovers(names: Iterable[str], *, default_queues: Iterable[str] = (), origin: str = "") -> list[str]:
    """What Redis still holds for these queues (one line each); empty when nothing is left. Messages in
    `default_queues` (shared queues such as `cpu`, which the run must not purge) count only when this process
    sent them (`origin`: Celery's `origin` header, `gen<pid>@host`)."""
    queues = {name for name in names if name}
    client = _client()
    if client is None:
        return []
    try:
        found: dict[str, str] = {}
        keys = [key for queue in sorted(queues) for key in _queue_keys(queue)]
        keys += [key.decode(errors="replace") for key in client.scan_iter(match=f"*test-{SESSION_TAG}-*", count=1000)]
        for key in keys:
            kind = client.type(key).decode()
            if kind != "none" and key not in found:
                size = client.llen(key) if kind == "list" else client.scard(key) if kind == "set" else "?"
                found[key] = f"{key} ({kind}, {size})"
        lines = list(found.values())
        lines += [f"unacked message {tag.decode()}" for tag in _unacked_of(client, queues)]
        lines += [f"pidbox binding {member.decode(errors='replace').split(_SEP)[-1]}"
                  for member in _pidbox_members_of(client, queues)]
        if origin:
            for queue in sorted(set(default_queues) - queues):
                for raw in client.lrange(queue, 0, 9999):
                    try:
                        headers = json.loads(raw).get("headers") or {}
                    except (ValueError, AttributeError):
                        continue
                    if headers.get("origin") == origin:
                        lines.append(f"{queue}: {headers.get('task')} {headers.get('argsrepr')} sent by this run")
        return lines
    finally:
        client.close()


def control_queue_of(queue: str) -> str:
    """The control queue (sweeper, clustering) that goes with a test's processing queue."""
    return f"{queue}-control"


@pytest.fixture(autouse=True)
def own_queues(settings, monkeypatch) -> Iterator[list[str]]:
    """Every test gets a processing queue of its own, so that nothing it sends (a `cluster_archive` on a job's
    end, a `process_archive`) lands in the shared default queue; subprocesses it starts inherit it. At its end
    that queue, whatever queue the test switched to (`settings.FFV_PROCESSING_QUEUE`, e.g. `processing_queue`'s)
    and the names the test appends to the list or registers meanwhile (`register_test_queues`, e.g. from a worker's
    start) are purged."""
    name = f"test-{SESSION_TAG}-{uuid.uuid4().hex[:8]}"
    settings.FFV_PROCESSING_QUEUE = name
    settings.FFV_CONTROL_QUEUE = control_queue_of(name)
    monkeypatch.setenv("FFV_PROCESSING_QUEUE", name)
    monkeypatch.setenv("FFV_CONTROL_QUEUE", settings.FFV_CONTROL_QUEUE)
    names = [name, settings.FFV_CONTROL_QUEUE]
    registered_before = set(_QUEUES_USED)
    yield names
    used = {*names, str(settings.FFV_PROCESSING_QUEUE), str(settings.FFV_CONTROL_QUEUE),
            *(_QUEUES_USED - registered_before)}
    register_test_queues(*used)
    purge_queues(used)


@pytest.fixture(autouse=True)
def subprocess_tmpdir(tmp_path, monkeypatch) -> Path:
    """TMPDIR of the processes a test starts (workers, servers), and of onnxruntime in this one: in the test's own
    folder, which goes with it, so that what they leave there does not stay in /tmp (a worker killed mid-job leaves
    billiard's `pymp-*` folder; onnxruntime writes a `.ses` file)."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    return folder


@pytest.fixture(autouse=True)
def search_index_dir(settings, tmp_path, monkeypatch) -> Path:
    """The face search index of every test (and of the workers and servers it starts) in its own folder, not in
    the checkout's var/index, which a developer's server reads."""
    settings.FFV_SEARCH_INDEX_DIR = tmp_path / "index"
    monkeypatch.setenv("FFV_SEARCH_INDEX_DIR", str(settings.FFV_SEARCH_INDEX_DIR))
    return settings.FFV_SEARCH_INDEX_DIR


@pytest.fixture(scope="session", autouse=True)
def redis_left_clean() -> Iterator[None]:
    """Fails the run (an error at the teardown of its last test) when Redis still holds something for a queue
    that one of its tests used, or a message this process sent to a shared default queue."""
    from django.conf import settings

    defaults = {os.environ.get("FFV_PROCESSING_QUEUE") or "cpu", os.environ.get("FFV_CONTROL_QUEUE") or "control",
                settings.CELERY_TASK_DEFAULT_QUEUE}
    yield
    from celery.utils.nodenames import anon_nodename  # the `origin` of the messages this process sends

    found = leftovers(_QUEUES_USED, default_queues=defaults, origin=anon_nodename())
    if found:
        pytest.fail("the tests left this in Redis (purge the queues a test uses, see tests/hygiene.py):\n  "
                    + "\n  ".join(found[:50]), pytrace=False)


def pytest_sessionfinish(session) -> None:
    """pytest-django drops the test database at the end; a SQLite one of a run that died (or files SQLite left
    next to it) would stay in var/: this run's own (named after its pid) goes in any case, unless --reuse-db."""
    from django.conf import settings

    if session.config.getoption("reuse_db", default=False):
        return
    database = settings.DATABASES.get("default", {})
    name = (database.get("TEST") or {}).get("NAME")
    if database.get("ENGINE") != "django.db.backends.sqlite3" or not name or str(name).startswith(":memory:"):
        return
    if f"-{os.getpid()}." not in Path(name).name:
        return  # a name of the developer's choosing: not ours to delete
    for suffix in ("", "-journal", "-wal", "-shm"):
        Path(f"{name}{suffix}").unlink(missing_ok=True)
