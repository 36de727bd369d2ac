"""process/ and stop/ against a real Redis broker, with no worker: what the API shows while a job waits.

These tests commit (transactional_db): process/ sends its task only once the queued state is committed, and
that is the behaviour under test.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis

from findface_videos.celery import app as celery_app
from tests.conftest import redis_url, upload
from tests.errors import assert_error
from videos.models import JobState, VideoArchive

pytestmark = pytest.mark.django_db(transaction=True)

CLOSED_BROKER = "redis://127.0.0.1:1/0"



def create(api, default_group, name: str = "clip") -> int:
    response = api.post("/videos/", {"camera_group": default_group.pk, "name": name}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


@pytest.fixture
def archive_with_source(api, default_group, video_factory) -> int:
    archive_id = create(api, default_group)
    assert upload(api, archive_id, video_factory()).status_code == 201
    return archive_id


@pytest.fixture
def queue_messages(processing_queue) -> Iterator:
    """How many messages wait in this test's Redis queue (kombu keeps a queue as a Redis list of its name)."""
    client = redis.Redis.from_url(redis_url())
    yield lambda: client.llen(processing_queue)
    client.delete(processing_queue)
    client.close()


@contextmanager
def broker_at(url: str) -> Iterator[None]:
    """Point the Celery app at another broker URL for a while.

    The app keeps a connection pool and a producer pool bound to the URL it first saw; they are set aside (not
    closed: kombu caches pools per URL, and a closed one would be handed out again) and put back afterwards.
    """
    conf = celery_app.conf
    saved = conf.broker_url, conf.broker_write_url, celery_app._pool, celery_app.amqp._producer_pool
    # broker_write_url (what the producer uses) was copied from broker_url when the app was configured.
    conf.broker_url, conf.broker_write_url, celery_app._pool, celery_app.amqp._producer_pool = url, url, None, None
    try:
        yield
    finally:
        conf.broker_url, conf.broker_write_url, celery_app._pool, celery_app.amqp._producer_pool = saved


@pytest.fixture
def broker_down(settings) -> Iterator[None]:
    """The Celery app's broker is a port where nothing listens."""
    settings.FFV_PROCESSING_QUEUE = f"test-down-{uuid.uuid4().hex[:12]}"
    with broker_at(CLOSED_BROKER):
        yield


def test_process_without_a_source_is_a_conflict(api, default_group, processing_queue, queue_messages):
    archive_id = create(api, default_group)

    assert_error(api.post(f"/videos/{archive_id}/process/"), 409, "CONFLICT")

    body = api.get(f"/videos/{archive_id}/").json()
    assert body["queued"] is False
    assert body["health_status"]["status"] == "WAITING_FOR_SYNC"
    assert queue_messages() == 0


def test_process_queues_the_archive_and_sends_one_task(api, archive_with_source, processing_queue, queue_messages):
    before = api.get(f"/videos/{archive_with_source}/").json()
    assert before["health_status"]["status"] == "DISABLED"
    assert before["queued"] is False

    response = api.post(f"/videos/{archive_with_source}/process/")

    assert response.status_code == 200
    assert response.content == b""
    body = api.get(f"/videos/{archive_with_source}/").json()
    assert body["queued"] is True
    assert body["active"] is False
    assert body["finished"] is False
    health = body["health_status"]
    assert (health["status"], health["code"], health["enabled"]) == ("AWAITING", "gray", True)
    assert queue_messages() == 1


def test_process_again_while_queued_is_a_conflict(api, archive_with_source, processing_queue, queue_messages):
    assert api.post(f"/videos/{archive_with_source}/process/").status_code == 200

    assert_error(api.post(f"/videos/{archive_with_source}/process/"), 409, "CONFLICT")

    assert api.get(f"/videos/{archive_with_source}/").json()["queued"] is True
    assert queue_messages() == 1


def test_stop_while_queued_interrupts_at_once(api, archive_with_source, processing_queue, queue_messages):
    assert api.post(f"/videos/{archive_with_source}/process/").status_code == 200

    response = api.post(f"/videos/{archive_with_source}/stop/")

    assert response.status_code == 200
    assert response.content == b""
    body = api.get(f"/videos/{archive_with_source}/").json()
    assert body["queued"] is False
    assert body["active"] is False
    health = body["health_status"]
    assert (health["status"], health["code"], health["enabled"]) == ("INTERRUPTED", "gray", False)


def test_an_interrupted_archive_can_be_processed_again(api, archive_with_source, processing_queue, queue_messages):
    assert api.post(f"/videos/{archive_with_source}/process/").status_code == 200
    assert api.post(f"/videos/{archive_with_source}/stop/").status_code == 200

    assert api.post(f"/videos/{archive_with_source}/process/").status_code == 200

    assert api.get(f"/videos/{archive_with_source}/").json()["health_status"]["status"] == "AWAITING"
    assert queue_messages() == 2


def test_stop_of_an_idle_archive_changes_nothing(api, archive_with_source, processing_queue):
    assert api.post(f"/videos/{archive_with_source}/stop/").status_code == 200

    assert api.get(f"/videos/{archive_with_source}/").json()["health_status"]["status"] == "DISABLED"


@pytest.mark.parametrize("action", ["process", "stop"])
def test_unknown_archive_is_not_found(api, default_group, processing_queue, action):
    assert_error(api.post(f"/videos/987654/{action}/"), 404, "NOT_FOUND")


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_process_takes_only_post(api, archive_with_source, processing_queue, method):
    response = getattr(api, method)(f"/videos/{archive_with_source}/process/")
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert api.get(f"/videos/{archive_with_source}/").json()["queued"] is False


def test_broker_down_is_service_unavailable_and_the_archive_is_not_left_queued(api, archive_with_source, broker_down):
    response = api.post(f"/videos/{archive_with_source}/process/")

    body = assert_error(response, 503, "SERVICE_UNAVAILABLE")
    assert body["traceback"] == ""
    archive = api.get(f"/videos/{archive_with_source}/").json()
    assert archive["queued"] is False
    assert archive["health_status"]["status"] == "DISABLED"
    assert VideoArchive.objects.get(pk=archive_with_source).job_state == JobState.IDLE


@pytest.mark.parametrize("state, status", [(JobState.INTERRUPTED, "INTERRUPTED"), (JobState.COMPLETED, "COMPLETED"),
                                           (JobState.FAILED, "MISCONFIGURED")])
def test_broker_down_leaves_a_processed_archive_as_it_was(api, archive_with_source, broker_down, state, status):
    VideoArchive.objects.filter(pk=archive_with_source).update(job_state=state, job_starts=1, job_task_id="old-task")
    before = api.get(f"/videos/{archive_with_source}/").json()

    assert_error(api.post(f"/videos/{archive_with_source}/process/"), 503, "SERVICE_UNAVAILABLE")

    after = api.get(f"/videos/{archive_with_source}/").json()
    assert after["health_status"]["status"] == status
    assert after["health_status"]["statistic"]["job_starts"] == 1
    assert after["health_status"] == before["health_status"]
    assert (after["queued"], after["finished"]) == (before["queued"], before["finished"])
    assert VideoArchive.objects.get(pk=archive_with_source).job_task_id == "old-task"


def test_broker_back_after_an_outage_accepts_the_job(api, archive_with_source, processing_queue, queue_messages):
    with broker_at(CLOSED_BROKER):
        assert_error(api.post(f"/videos/{archive_with_source}/process/"), 503, "SERVICE_UNAVAILABLE")
    assert api.get(f"/videos/{archive_with_source}/").json()["queued"] is False

    assert api.post(f"/videos/{archive_with_source}/process/").status_code == 200
    assert api.get(f"/videos/{archive_with_source}/").json()["queued"] is True
    assert queue_messages() == 1
