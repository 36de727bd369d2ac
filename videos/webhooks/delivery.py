"""Sending webhook deliveries: claim, POST, record; the sweeper re-sends what is due.

- `delivery_attempt` (the `videos.deliver_webhook` task) claims a delivery with a compare-and-set (pending, due,
  not claimed by a live attempt, and first in its line: no earlier pending delivery of the same webhook and
  ordering key), counts the attempt, POSTs outside any transaction (processing.webhooks: signed, url policy,
  one deadline), then records the outcome under its claim token. A delivered or finally failed delivery sends
  the next one of its line; a failed attempt is tried again after an exponential backoff (capped), until
  FFV_WEBHOOK_MAX_ATTEMPTS.
- A worker killed mid-delivery leaves a claim that runs out after `lease_seconds()`; the sweeper (beat, and every
  worker at its start) then sends the delivery again, with the same `X-FFV-Delivery` id: receivers drop repeats by
  that id. Every message may arrive twice or never: the claim makes a duplicate a no-op, the sweeper a loss.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Min, Q
from django.utils import timezone

from processing.webhooks import PostResult, WebhookPolicy, post, signature
from videos.models import DeliveryStatus, Webhook, WebhookDelivery
from videos.webhooks.emit import send_deliveries

logger = logging.getLogger(__name__)


def webhook_policy() -> WebhookPolicy:
    return WebhookPolicy(
        allowed_hosts=tuple(settings.FFV_URL_ALLOWED_HOSTS),
        allow_private=settings.FFV_URL_ALLOW_PRIVATE,
        allowed_networks=tuple(settings.FFV_WEBHOOK_ALLOWED_NETWORKS),
        timeout=settings.FFV_WEBHOOK_TIMEOUT_SECONDS,
    )


def lease_seconds() -> float:
    """How long an attempt's claim holds: past its deadline with room for the database writes around it."""
    return 2 * settings.FFV_WEBHOOK_TIMEOUT_SECONDS + 5


def backoff_seconds(attempts: int) -> float:
    """The pause after the `attempts`-th failed attempt: base x 2^(attempts-1), at most the cap."""
    exponent = min(max(attempts - 1, 0), 32)
    return min(settings.FFV_WEBHOOK_RETRY_BASE_SECONDS * 2**exponent, settings.FFV_WEBHOOK_RETRY_MAX_SECONDS)


@dataclass(frozen=True)
class ClaimedDelivery:
    delivery_id: int
    webhook_id: int
    ordering_key: str
    uuid: str
    event_type: str
    url: str
    secret: str
    body: bytes
    claim: str
    attempt: int


def delivery_body(delivery: WebhookDelivery) -> bytes:
    """The JSON body: the same bytes on every attempt."""
    return json.dumps({"delivery": str(delivery.uuid), "webhook": delivery.webhook_id, "type": delivery.event_type,
                       "events": delivery.events}, separators=(",", ":"), sort_keys=True).encode()


def _pending_line(webhook_id: int, ordering_key: str):
    return WebhookDelivery.objects.filter(webhook_id=webhook_id, ordering_key=ordering_key,
                                          status=DeliveryStatus.PENDING)


def _claim(delivery_id: int) -> ClaimedDelivery | None:
    now = timezone.now()
    with transaction.atomic():
        delivery = (WebhookDelivery.objects.select_for_update()
                    .filter(pk=delivery_id, status=DeliveryStatus.PENDING, next_attempt_date__lte=now)
                    .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)).first())
        if delivery is None:
            return None  # delivered, failed, not yet due, or in flight elsewhere
        if _pending_line(delivery.webhook_id, delivery.ordering_key).filter(pk__lt=delivery.pk).exists():
            return None  # an earlier one of its line goes first; its end sends this one
        webhook = Webhook.objects.filter(pk=delivery.webhook_id, active=True).first()
        if webhook is None:
            return None  # deactivated: it waits, and goes out when the webhook is active again
        if delivery.attempts >= settings.FFV_WEBHOOK_MAX_ATTEMPTS:
            # The last attempts ended with their worker gone: give up, and let the line move on.
            WebhookDelivery.objects.filter(pk=delivery.pk).update(
                status=DeliveryStatus.FAILED, claim="", claimed_until=None,
                last_error=(delivery.last_error or "attempts used up")[:512])
            transaction.on_commit(lambda: _send_next(delivery.webhook_id, delivery.ordering_key))
            return None
        claim = uuid.uuid4().hex
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            claim=claim, claimed_until=now + timedelta(seconds=lease_seconds()), attempts=delivery.attempts + 1)
    return ClaimedDelivery(
        delivery_id=delivery.pk, webhook_id=webhook.pk, ordering_key=delivery.ordering_key,
        uuid=str(delivery.uuid), event_type=delivery.event_type, url=webhook.url, secret=webhook.secret,
        body=delivery_body(delivery), claim=claim, attempt=delivery.attempts + 1,
    )


def delivery_attempt(*, delivery_id: int) -> PostResult | None:
    """One attempt of the delivery, if it is its turn; returns how the POST went (None: not sent now)."""
    claimed = _claim(delivery_id)
    if claimed is None:
        return None
    timestamp = int(time.time())
    headers = {
        "X-FFV-Delivery": claimed.uuid,
        "X-FFV-Event": claimed.event_type,
        "X-FFV-Timestamp": str(timestamp),
        "X-FFV-Signature": signature(claimed.secret, timestamp, claimed.body),
        "X-FFV-Attempt": str(claimed.attempt),
    }
    result = post(claimed.url, claimed.body, headers, webhook_policy())
    _record(claimed, result)
    return result


def _record(claimed: ClaimedDelivery, result: PostResult) -> None:
    now = timezone.now()
    mine = WebhookDelivery.objects.filter(pk=claimed.delivery_id, claim=claimed.claim, status=DeliveryStatus.PENDING)
    with transaction.atomic():
        if result.ok:
            done = mine.update(status=DeliveryStatus.DELIVERED, delivered_date=now, claim="", claimed_until=None,
                               last_status_code=result.status, last_error="")
            if done:
                transaction.on_commit(lambda: _send_next(claimed.webhook_id, claimed.ordering_key))
            return
        final = claimed.attempt >= settings.FFV_WEBHOOK_MAX_ATTEMPTS
        delay = backoff_seconds(claimed.attempt)
        done = mine.update(
            status=DeliveryStatus.FAILED if final else DeliveryStatus.PENDING, claim="", claimed_until=None,
            last_status_code=result.status, last_error=result.error[:512],
            next_attempt_date=now + timedelta(seconds=delay))
        if not done:
            return  # the claim ran out and another attempt took over: it records its own outcome
        logger.warning("webhook %s delivery %s: attempt %d failed (%s)%s", claimed.webhook_id, claimed.uuid,
                       claimed.attempt, result.error, "; giving up" if final else f"; again in {delay:.0f} s")
        if final:
            transaction.on_commit(lambda: _send_next(claimed.webhook_id, claimed.ordering_key))
        else:
            transaction.on_commit(lambda: send_deliveries([claimed.delivery_id], countdown=delay))


def _send_next(webhook_id: int, ordering_key: str) -> None:
    """Send the first pending delivery of a line (the one that waited for the delivery that just ended)."""
    first = _pending_line(webhook_id, ordering_key).order_by("pk").values_list("pk", flat=True).first()
    if first is not None:
        send_deliveries([first])


def deliveries_sweep(*, limit: int = 1000) -> list[int]:
    """Send the deliveries that are due and first in their line: retries whose time has come, claims whose
    worker died, messages the broker lost. Returns their ids (a duplicate message is harmless)."""
    now = timezone.now()
    firsts = (WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING, webhook__active=True)
              .order_by().values("webhook_id", "ordering_key").annotate(first=Min("pk")).values("first"))
    # A delivery never claimed is left alone for a sweep interval: its own message is most likely still in line.
    grace = now - timedelta(seconds=settings.FFV_WEBHOOK_SWEEP_INTERVAL)
    due = list(
        WebhookDelivery.objects.filter(pk__in=firsts, next_attempt_date__lte=now)
        .filter(Q(claimed_until__isnull=True, next_attempt_date__lte=grace) | Q(claimed_until__lt=now))
        .order_by("pk").values_list("pk", flat=True)[:limit]
    )
    if due:
        send_deliveries(due)
    return due
