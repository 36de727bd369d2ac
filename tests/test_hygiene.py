"""The run leaves nothing in Redis: each test's processing queue is its own, and purging a test's queues removes
all kombu keeps for them, and nothing of any other queue."""

from __future__ import annotations

import json
import uuid

import redis

from tests import hygiene
from tests.conftest import redis_reachable, redis_url, requires
from videos.clusters import enqueue_clustering


def _client() -> redis.Redis:
    requires(redis_reachable(redis_url()), "CELERY_BROKER_URL must point at a reachable Redis")
    return redis.Redis.from_url(redis_url())


def test_every_test_sends_to_a_queue_of_its_own(settings, own_queues):
    assert settings.FFV_PROCESSING_QUEUE == own_queues[0]
    assert settings.FFV_CONTROL_QUEUE == own_queues[1] == hygiene.control_queue_of(own_queues[0])
    assert own_queues[0].startswith(f"test-{hygiene.SESSION_TAG}-")


def _unacked(client: redis.Redis, tag: str, queue: str) -> None:
    """An unacked message as kombu keeps it (a worker killed mid-job leaves one)."""
    message = {"body": "", "headers": {"task": "videos.process_archive"}, "properties": {"delivery_tag": tag}}
    client.hset("unacked", tag, json.dumps([message, "", queue]))
    client.zadd("unacked_index", {tag: 1e12})


def test_purge_removes_a_queue_its_bindings_and_unacked_messages_and_nothing_else(settings, own_queues):
    client = _client()
    mine, other = settings.FFV_CONTROL_QUEUE, f"test-other-{uuid.uuid4().hex[:8]}"
    own_queues.append(other)  # purged at the end of this test too, whatever happens here
    enqueue_clustering(12345)  # sent on a job's end; to the control queue
    settings.FFV_CONTROL_QUEUE = other
    enqueue_clustering(12346)
    _unacked(client, f"tag-{mine}", mine)
    _unacked(client, f"tag-{other}", other)
    assert client.llen(mine) == 1 and client.exists(f"_kombu.binding.{mine}")
    assert any(mine in line for line in hygiene.leftovers([mine]))

    assert hygiene.purge_queues([mine]) > 0

    assert hygiene.leftovers([mine]) == []
    assert not client.exists(mine, f"_kombu.binding.{mine}", f"_kombu.binding_permanent.{mine}")
    assert client.hget("unacked", f"tag-{mine}") is None and client.zscore("unacked_index", f"tag-{mine}") is None
    # The other queue is untouched.
    assert client.llen(other) == 1 and client.hget("unacked", f"tag-{other}") is not None
    left = hygiene.leftovers([other])
    assert f"{other} (list, 1)" in left and f"unacked message tag-{other}" in left
    hygiene.purge_queues([other])
    assert hygiene.leftovers([other]) == []


def test_a_message_this_process_sent_to_a_shared_queue_is_found(settings):
    from celery.utils.nodenames import anon_nodename

    _client()  # skips without Redis
    shared = f"shared-{uuid.uuid4().hex[:8]}"  # stands for `cpu`, which the tests must never purge
    settings.FFV_CONTROL_QUEUE = shared
    try:
        enqueue_clustering(777)
        found = hygiene.leftovers([], default_queues=[shared], origin=anon_nodename())
        assert found == [f"{shared}: videos.cluster_archive [777] sent by this run"]
        assert hygiene.leftovers([], default_queues=[shared], origin="gen1@elsewhere") == []
    finally:
        hygiene.purge_queues([shared])


def test_a_queue_registered_during_a_test_is_purged_at_its_end(own_queues):
    """(`register_test_queues` is how a worker's further queues get purged; the session check sees it done.)"""
    client = _client()
    extra = f"test-{hygiene.SESSION_TAG}-control-{uuid.uuid4().hex[:6]}"
    hygiene.register_test_queues(extra)
    client.rpush(extra, "{}")
