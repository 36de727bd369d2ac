"""Webhook deliveries by a real Celery worker (with its beat) against Redis, to a real receiver on loopback: a job's
status changes in order, retries after 500s, and a worker SIGKILLed mid-delivery loses nothing."""

from __future__ import annotations

import time

import pytest

from tests.conftest import WorkerProcess, upload, wait_for
from tests.webhook_receiver import HOLD, webhook_receiver
from videos.models import DeliveryStatus, JobState, VideoArchive, Webhook, WebhookDelivery
from videos.webhooks import notify_archive_status

SECRET = "worker-test-secret-0123"
TIMEOUT = 3  # FFV_WEBHOOK_TIMEOUT_SECONDS: an attempt's claim runs out after 2 x 3 + 5 s


def worker_env() -> dict[str, str]:
    return {
        "FFV_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
        "FFV_WEBHOOK_TIMEOUT_SECONDS": str(TIMEOUT),
        "FFV_WEBHOOK_RETRY_BASE_SECONDS": "0.5",
        "FFV_WEBHOOK_SWEEP_INTERVAL": "1",
        "FFV_SWEEP_INTERVAL": "30",
    }


@pytest.fixture
def hook_worker(transactional_db, processing_queue, media_root, tmp_path):
    process = WorkerProcess(processing_queue, media_root, tmp_path / "worker.log", worker_env(), beat=True)
    yield process
    process.stop()


def make_webhook(url: str) -> Webhook:
    return Webhook.objects.create(url=url, secret=SECRET, event_types=["archive.status", "cluster.created"])


def all_delivered() -> bool:
    statuses = set(WebhookDelivery.objects.values_list("status", flat=True))
    return bool(statuses) and statuses == {DeliveryStatus.DELIVERED}


def test_a_jobs_status_changes_arrive_in_order_and_after_500s(hook_worker, api, default_group, video_factory):
    with webhook_receiver(SECRET) as receiver:
        receiver.script = lambda delivery, seen: 500 if seen == 1 else 200  # every delivery fails once first
        make_webhook(receiver.url)
        hook_worker.start()
        archive_id = api.post("/videos/", {"camera_group": default_group.pk, "name": "hooked"},
                              format="json").json()["id"]
        assert upload(api, archive_id, video_factory(frames=30)).status_code == 201
        assert api.post(f"/videos/{archive_id}/process/").status_code == 200
        assert wait_for(lambda: VideoArchive.objects.get(pk=archive_id).job_state == JobState.COMPLETED,
                        timeout=120), hook_worker.log()
        assert wait_for(lambda: WebhookDelivery.objects.filter(event_type="archive.status").count() == 3
                        and all_delivered(), timeout=60), (hook_worker.log()[-3000:],
                                                           list(WebhookDelivery.objects.values()))
        kept = list(receiver.unique().values())
        requests = list(receiver.requests)
    states = [item.payload["events"][0]["data"]["job_state"] for item in kept
              if item.payload["type"] == "archive.status"]
    assert states == ["queued", "starting", "completed"]
    assert all(item.signature_ok for item in requests)
    assert [item.status for item in requests].count(500) == len(kept)  # each one was refused once, then accepted
    assert set(WebhookDelivery.objects.values_list("attempts", flat=True)) == {2}


def test_a_worker_killed_mid_delivery_loses_nothing_and_sends_each_delivery_id_once_kept(
        hook_worker, default_group, tmp_path):
    first = VideoArchive.objects.create(camera_group=default_group, name="one")
    second = VideoArchive.objects.create(camera_group=default_group, name="two")
    with webhook_receiver(SECRET) as receiver:
        held: list[str] = []

        def script(delivery: str, seen: int) -> int:
            if not held:
                held.append(delivery)
                return HOLD  # the worker waits for an answer that never comes: it is killed meanwhile
            return 200

        receiver.script = script
        make_webhook(receiver.url)
        for state in (JobState.QUEUED, JobState.STARTING, JobState.COMPLETED):
            notify_archive_status(first.pk, state)  # each commits at once, and sends its message
        notify_archive_status(second.pk, JobState.QUEUED)
        hook_worker.start()
        assert wait_for(lambda: receiver.count() >= 1, timeout=60), hook_worker.log()
        in_flight = WebhookDelivery.objects.get(uuid=held[0])
        assert in_flight.claim and in_flight.status == DeliveryStatus.PENDING
        hook_worker.kill(9)
        time.sleep(0.5)
        restarted = WorkerProcess(hook_worker.queue, hook_worker.env["MEDIA_ROOT"], tmp_path / "worker2.log",
                                  worker_env(), beat=True).start()
        try:
            assert wait_for(lambda: WebhookDelivery.objects.count() == 4 and all_delivered(), timeout=90), \
                (restarted.log()[-3000:], list(WebhookDelivery.objects.values()))
        finally:
            restarted.stop()
        kept = receiver.unique()
        requests = list(receiver.requests)
    deliveries = {str(row.uuid): row for row in WebhookDelivery.objects.all()}
    assert set(kept) == set(deliveries)  # every delivery id arrived (and was kept once)
    event_ids = [event["id"] for item in kept.values() for event in item.payload["events"]]
    assert len(event_ids) == 4 and len(set(event_ids)) == 4  # each event in exactly one delivery
    # The held delivery came again under the same id after the kill; a receiver that drops repeats keeps it once.
    assert [item.delivery for item in requests].count(held[0]) == 2
    assert deliveries[held[0]].attempts == 2
    first_states = [item.payload["events"][0]["data"]["job_state"] for item in kept.values()
                    if item.payload["events"][0]["data"]["video_archive"] == first.pk]
    assert first_states == ["queued", "starting", "completed"]
    assert all(item.signature_ok for item in requests)
