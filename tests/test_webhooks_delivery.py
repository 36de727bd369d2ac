"""videos.webhooks: what is emitted (outbox rows in the change's transaction), signed POSTs to a real receiver on
loopback, retries with backoff, order within one archive, batching, filters and the url policy at delivery time.

Attempts run in this process (`delivery_attempt`, what the task calls); tests/test_worker_webhooks.py runs them
in a real worker.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from ipaddress import ip_network

import numpy as np
import pytest
from django.db import transaction
from django.utils import timezone

from processing.webhooks import signature, verify_signature
from tests.conftest import _user, token_client
from tests.test_clusters_service import make_event, shot, unit
from tests.webhook_receiver import webhook_receiver
from videos import broker, clusters, services
from videos.models import CameraGroup, DeliveryStatus, JobState, VideoArchive, Webhook, WebhookDelivery
from videos.webhooks import MatchedEvent, notify_archive_status, notify_matched_events
from videos.webhooks.delivery import backoff_seconds, deliveries_sweep, delivery_attempt

SECRET = "s3cret-s3cret-s3cret"
ALL_TYPES = ["archive.status", "event.matched", "cluster.created"]


@pytest.fixture(autouse=True)
def loopback_allowed(settings):
    """Receivers run on loopback: allowed for webhooks only, through the operator's setting."""
    settings.FFV_WEBHOOK_ALLOWED_NETWORKS = [ip_network("127.0.0.0/8")]
    settings.FFV_WEBHOOK_TIMEOUT_SECONDS = 3.0
    settings.FFV_WEBHOOK_RETRY_BASE_SECONDS = 0.0
    settings.FFV_WEBHOOK_MAX_ATTEMPTS = 5


@pytest.fixture
def group(db) -> CameraGroup:
    return CameraGroup.objects.create(name="entrance")


def make_webhook(url: str, *, types=None, groups=(), watch_lists=(), min_confidence=None, active=True) -> Webhook:
    webhook = Webhook.objects.create(url=url, secret=SECRET, event_types=list(types or ALL_TYPES),
                                     watch_lists=list(watch_lists), min_confidence=min_confidence, active=active)
    webhook.camera_groups.set(groups)
    return webhook


def make_archive(group: CameraGroup, **fields) -> VideoArchive:
    return VideoArchive.objects.create(camera_group=group, name="clip", url="http://example.com/clip.mp4", **fields)


def run_due(limit: int = 50) -> int:
    """Attempt every pending delivery in id order, as workers would, until none is sent; returns attempts made."""
    made = 0
    for _ in range(limit):
        sent = [delivery_attempt(delivery_id=pk) for pk in
                WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING).order_by("pk").values_list("pk",
                                                                                                     flat=True)]
        sent = [result for result in sent if result is not None]
        made += len(sent)
        if not sent:
            return made
    return made


def test_a_status_change_is_posted_signed_over_timestamp_and_body(group):
    archive = make_archive(group)
    with webhook_receiver(SECRET) as receiver:
        webhook = make_webhook(receiver.url)
        services.archive_process(archive_id=archive.pk, send=lambda archive_id, task_id: None)
        services.archive_stop(archive_id=archive.pk)
        assert run_due() == 2
        received = list(receiver.unique().values())
    assert [item.payload["events"][0]["data"]["job_state"] for item in received] == ["queued", "interrupted"]
    first = received[0]
    assert first.signature_ok
    headers = {key.lower(): value for key, value in first.headers.items()}
    timestamp = headers["x-ffv-timestamp"]
    # What the README tells a receiver to compute: HMAC-SHA256(secret, "<timestamp>.<raw body>").
    assert headers["x-ffv-signature"] == signature(SECRET, int(timestamp), first.body)
    assert not verify_signature("another-secret-value", timestamp, headers["x-ffv-signature"], first.body)
    assert not verify_signature(SECRET, str(int(time.time()) - 3600), headers["x-ffv-signature"], first.body)
    assert not verify_signature(SECRET, timestamp, headers["x-ffv-signature"], first.body + b" ")
    assert headers["content-type"] == "application/json"
    assert headers["x-ffv-event"] == "archive.status"
    body = first.payload
    assert body["delivery"] == headers["x-ffv-delivery"]
    assert body["webhook"] == webhook.pk and body["type"] == "archive.status"
    data = body["events"][0]["data"]
    assert data["video_archive"] == archive.pk and data["camera_group"] == group.pk
    assert data["status"] == "AWAITING"
    assert received[1].payload["events"][0]["data"]["status"] == "INTERRUPTED"
    rows = list(WebhookDelivery.objects.order_by("pk"))
    assert [row.status for row in rows] == ["delivered", "delivered"]
    assert all(row.attempts == 1 and row.last_status_code == 200 for row in rows)


def test_nothing_is_emitted_when_the_change_rolls_back(group):
    archive = make_archive(group)
    make_webhook("http://127.0.0.1:9/hook")
    with pytest.raises(RuntimeError), transaction.atomic():
        notify_archive_status(archive.pk, JobState.COMPLETED)
        raise RuntimeError
    assert not WebhookDelivery.objects.exists()


def test_a_receiver_answering_500_gets_the_delivery_again_with_backoff(group, settings):
    archive = make_archive(group)
    with webhook_receiver(SECRET) as receiver:
        receiver.script = lambda delivery, seen: 500 if seen <= 2 else 204
        make_webhook(receiver.url)
        notify_archive_status(archive.pk, JobState.COMPLETED)
        delivery = WebhookDelivery.objects.get()
        settings.FFV_WEBHOOK_RETRY_BASE_SECONDS = 30.0
        before = timezone.now()
        assert delivery_attempt(delivery_id=delivery.pk).status == 500
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts, delivery.last_status_code, delivery.last_error) == \
            ("pending", 1, 500, "HTTP 500")
        assert delivery.next_attempt_date >= before + timedelta(seconds=30)
        assert delivery_attempt(delivery_id=delivery.pk) is None  # not due yet
        assert receiver.count() == 1
        WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_date=timezone.now())
        assert delivery_attempt(delivery_id=delivery.pk).status == 500
        delivery.refresh_from_db()
        assert delivery.next_attempt_date >= timezone.now() + timedelta(seconds=50)  # 30 x 2
        WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_date=timezone.now())
        assert delivery_attempt(delivery_id=delivery.pk).status == 204
        delivery.refresh_from_db()
        ids = {item.delivery for item in receiver.requests}
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("delivered", 3, "")
    assert ids == {str(delivery.uuid)}  # every attempt carries the same delivery id
    assert all(item.signature_ok for item in receiver.requests)


def test_backoff_doubles_up_to_the_cap(settings):
    settings.FFV_WEBHOOK_RETRY_BASE_SECONDS = 10.0
    settings.FFV_WEBHOOK_RETRY_MAX_SECONDS = 100.0
    assert [backoff_seconds(attempt) for attempt in range(1, 7)] == [10, 20, 40, 80, 100, 100]
    assert backoff_seconds(10_000) == 100


def test_order_within_an_archive_is_kept_and_other_archives_do_not_wait(group):
    first, second = make_archive(group), make_archive(group)
    with webhook_receiver(SECRET) as receiver:
        failing = set()
        receiver.script = lambda delivery, seen: 500 if delivery in failing and seen == 1 else 200
        make_webhook(receiver.url)
        notify_archive_status(first.pk, JobState.QUEUED)
        notify_archive_status(first.pk, JobState.STARTING)
        notify_archive_status(second.pk, JobState.QUEUED)
        notify_archive_status(first.pk, JobState.COMPLETED)
        rows = list(WebhookDelivery.objects.order_by("pk"))
        failing.add(str(rows[0].uuid))
        assert delivery_attempt(delivery_id=rows[0].pk).status == 500
        # The first archive's later deliveries wait for its first; the second archive's goes out.
        assert delivery_attempt(delivery_id=rows[1].pk) is None
        assert delivery_attempt(delivery_id=rows[3].pk) is None
        assert delivery_attempt(delivery_id=rows[2].pk).ok
        run_due()
        kept = receiver.unique()
    order = [item.payload["events"][0]["data"] for item in kept.values()]
    first_states = [data["job_state"] for data in order if data["video_archive"] == first.pk]
    assert first_states == ["queued", "starting", "completed"]
    assert [data["video_archive"] for data in order][0] == second.pk  # it did not wait behind the failure
    assert set(WebhookDelivery.objects.values_list("status", flat=True)) == {"delivered"}


def test_a_delivery_that_keeps_failing_ends_failed_and_its_line_moves_on(group, settings):
    settings.FFV_WEBHOOK_MAX_ATTEMPTS = 2
    archive = make_archive(group)
    with webhook_receiver(SECRET) as receiver:
        doomed = set()
        receiver.script = lambda delivery, seen: 503 if delivery in doomed else 200
        webhook = make_webhook(receiver.url)
        notify_archive_status(archive.pk, JobState.QUEUED)
        notify_archive_status(archive.pk, JobState.COMPLETED)
        rows = list(WebhookDelivery.objects.order_by("pk"))
        doomed.add(str(rows[0].uuid))
        run_due()
    rows = list(WebhookDelivery.objects.order_by("pk"))
    assert [(row.status, row.attempts) for row in rows] == [("failed", 2), ("delivered", 1)]
    # What an operator sees.
    api = token_client(_user("hooks-viewer", ["view_webhook"]))
    response = api.get(f"/webhooks/{webhook.pk}/deliveries/?status=failed")
    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert [(item["delivery"], item["status"], item["attempts"], item["last_status_code"], item["last_error"])
            for item in results] == [(str(rows[0].uuid), "failed", 2, 503, "HTTP 503")]
    assert results[0]["events"][0]["data"]["job_state"] == "queued"


def test_many_matched_events_at_once_are_batched_per_archive(group, settings):
    settings.FFV_WEBHOOK_BATCH_SIZE = 100
    first, second = make_archive(group), make_archive(group)
    events = [make_event(first, None) for _ in range(230)] + [make_event(second, None) for _ in range(3)]
    with webhook_receiver(SECRET) as receiver:
        make_webhook(receiver.url, types=["event.matched"])
        notify_matched_events([MatchedEvent(event=event, card_id=7, watch_lists=[3], confidence=0.8)
                               for event in events])
        assert WebhookDelivery.objects.count() == 4
        run_due()
        kept = receiver.unique()
    sizes = sorted(len(item.payload["events"]) for item in kept.values())
    assert sizes == [3, 30, 100, 100]
    posted = [event["data"] for item in kept.values() for event in item.payload["events"]]
    assert sorted(data["event"] for data in posted) == sorted(event.pk for event in events)
    sample = next(data for data in posted if data["event"] == events[0].pk)
    assert sample == {
        "kind": "face", "event": events[0].pk, "video_archive": first.pk, "camera_group": group.pk,
        "frame_timestamp": events[0].frame_timestamp, "quality": events[0].quality, "matched_card": 7,
        "matched_lists": [3], "confidence": 0.8, "thumbnail": f"/events/faces/{events[0].pk}/thumbnail/",
    }
    # Within one archive, the batches are in event order.
    first_batches = [item.payload["events"] for item in kept.values()
                     if item.payload["events"][0]["data"]["video_archive"] == first.pk]
    ids = [event["data"]["event"] for batch in first_batches for event in batch]
    assert ids == [event.pk for event in events[:230]]


def test_filters_by_type_camera_group_watch_list_and_confidence(group):
    other_group = CameraGroup.objects.create(name="yard")
    archive, elsewhere = make_archive(group), make_archive(other_group)
    event, far_event = make_event(archive, None), make_event(elsewhere, None)
    status_only = make_webhook("http://127.0.0.1:9/a", types=["archive.status"])
    this_group = make_webhook("http://127.0.0.1:9/b", groups=[group])
    list_five = make_webhook("http://127.0.0.1:9/c", types=["event.matched"], watch_lists=[5])
    confident = make_webhook("http://127.0.0.1:9/d", types=["event.matched"], min_confidence=0.9)
    make_webhook("http://127.0.0.1:9/e", active=False)

    notify_archive_status(elsewhere.pk, JobState.COMPLETED)
    notify_matched_events([MatchedEvent(event, 1, [5], 0.95), MatchedEvent(far_event, 1, [6], 0.85)])

    def carried(webhook: Webhook) -> list[tuple[str, int]]:
        return sorted((row.event_type, data["data"].get("event", data["data"]["video_archive"]))
                      for row in WebhookDelivery.objects.filter(webhook=webhook) for data in row.events)

    assert carried(status_only) == [("archive.status", elsewhere.pk)]
    assert carried(this_group) == [("event.matched", event.pk)]
    assert carried(list_five) == [("event.matched", event.pk)]
    assert carried(confident) == [("event.matched", event.pk)]
    assert WebhookDelivery.objects.count() == 4  # none for the inactive webhook


def test_new_clusters_are_posted_from_clustering(group):
    rng = np.random.default_rng(3)
    person = unit(rng.normal(size=512))
    archive = make_archive(group, job_state=JobState.COMPLETED)
    for frame in range(3):
        make_event(archive, shot(person), frame=frame)
    with webhook_receiver(SECRET) as receiver:
        make_webhook(receiver.url, types=["cluster.created"])
        clusters.cluster_archive(archive_id=archive.pk)
        run_due()
        kept = list(receiver.unique().values())
    assert len(kept) == 1
    (event,) = kept[0].payload["events"]
    cluster = clusters.CLUSTER_MODELS["face"].objects.get()
    assert event["type"] == "cluster.created"
    assert event["data"] == {"kind": "face", "cluster": cluster.pk, "event_count": 3,
                             "best_event": cluster.best_event_id, "video_archive": archive.pk,
                             "camera_group": group.pk, "url": f"/clusters/faces/{cluster.pk}/"}
    clusters.cluster_archive(archive_id=archive.pk)  # nothing new: no new cluster, nothing posted
    assert WebhookDelivery.objects.count() == 1


def test_the_url_policy_is_checked_again_at_delivery_and_redirects_are_not_followed(group, settings):
    archive = make_archive(group)
    with webhook_receiver(SECRET) as receiver:
        receiver.script = lambda delivery, seen: 302
        make_webhook(receiver.url)
        notify_archive_status(archive.pk, JobState.COMPLETED)
        delivery = WebhookDelivery.objects.get()
        result = delivery_attempt(delivery_id=delivery.pk)
        assert (result.ok, result.status, result.error) == (False, 302, "HTTP 302: redirects are not followed")
        assert receiver.count() == 1
        settings.FFV_WEBHOOK_ALLOWED_NETWORKS = []  # the operator closes loopback again
        result = delivery_attempt(delivery_id=delivery.pk)
        assert (result.ok, result.error) == (False, "host not allowed by the url policy")
        assert receiver.count() == 1  # nothing reached loopback


def test_the_sweeper_sends_deliveries_whose_attempt_died(group, monkeypatch):
    archive = make_archive(group)
    make_webhook("http://127.0.0.1:9/hook")
    notify_archive_status(archive.pk, JobState.COMPLETED)
    notify_archive_status(archive.pk, JobState.QUEUED)
    first, second = WebhookDelivery.objects.order_by("pk")
    past = timezone.now() - timedelta(minutes=5)
    WebhookDelivery.objects.filter(pk=first.pk).update(claim="dead", claimed_until=past, attempts=1,
                                                       next_attempt_date=past)
    WebhookDelivery.objects.filter(pk=second.pk).update(next_attempt_date=past)
    sent: list[int] = []
    monkeypatch.setattr(broker, "send_webhook_delivery", lambda delivery_id, countdown=None: sent.append(delivery_id))
    assert deliveries_sweep() == [first.pk]  # the first of its line only
    WebhookDelivery.objects.filter(pk=first.pk).update(claimed_until=timezone.now() + timedelta(minutes=1))
    assert deliveries_sweep() == []  # a live claim is left alone
    assert sent == [first.pk]


def test_the_body_is_the_same_bytes_on_every_attempt(group):
    archive = make_archive(group)
    with webhook_receiver(SECRET) as receiver:
        receiver.script = lambda delivery, seen: 500 if seen == 1 else 200
        make_webhook(receiver.url)
        notify_archive_status(archive.pk, JobState.COMPLETED)
        run_due()
        bodies = [item.body for item in receiver.requests]
    assert len(bodies) == 2 and bodies[0] == bodies[1]
    assert json.loads(bodies[0])["events"][0]["data"]["job_state"] == "completed"


def test_a_deactivated_webhooks_deliveries_wait_and_go_once_it_is_active(group):
    archive = make_archive(group)
    with webhook_receiver(SECRET) as receiver:
        webhook = make_webhook(receiver.url)
        notify_archive_status(archive.pk, JobState.COMPLETED)
        Webhook.objects.filter(pk=webhook.pk).update(active=False)
        notify_archive_status(archive.pk, JobState.QUEUED)  # an inactive webhook gets no new deliveries
        delivery = WebhookDelivery.objects.get()
        assert delivery_attempt(delivery_id=delivery.pk) is None
        assert receiver.count() == 0
        Webhook.objects.filter(pk=webhook.pk).update(active=True)
        assert delivery_attempt(delivery_id=delivery.pk).ok
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("delivered", 1)
