"""What webhooks are told, and the outbox rows that carry it.

Each `notify_*` function runs inside the transaction that made the change it reports (a job's state, new clusters,
matches): it writes one WebhookDelivery row per subscription that wants the events (filters applied), one archive
and at most FFV_WEBHOOK_BATCH_SIZE events per row, in that same transaction. So a delivery exists exactly when its
change was committed (a rolled-back change sends nothing, a committed one is never lost), and its message is sent
once the transaction has committed; whatever the broker loses, the sweeper finds in the table.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from kombu.exceptions import KombuError
from kombu.exceptions import OperationalError as BrokerError

from videos import broker
from videos.models import (
    EVENT_MODELS,
    DeliveryStatus,
    Event,
    JobState,
    VideoArchive,
    Webhook,
    WebhookDelivery,
    WebhookEventType,
)

logger = logging.getLogger(__name__)

# The FindFace health status an archive shows in each job state that is reported (README "Webhooks").
HEALTH_STATUS = {
    JobState.IDLE: "DISABLED",
    JobState.QUEUED: "AWAITING",
    JobState.STARTING: "STARTING",
    JobState.IN_PROGRESS: "INPROGRESS",
    JobState.COMPLETED: "COMPLETED",
    JobState.FAILED: "MISCONFIGURED",
    JobState.INTERRUPTED: "INTERRUPTED",
}


@dataclass(frozen=True)
class Emitted:
    """One event for the subscriptions: what it says (`data`) and what their filters look at."""

    ordering_key: str  # deliveries with one key go out in order: "archive:<id>"
    camera_group_id: int | None
    data: dict[str, Any]
    watch_lists: tuple[int, ...] = ()  # matched events only
    confidence: float | None = None  # matched events only


@dataclass(frozen=True)
class MatchedEvent:
    """An event that matched a card of one or more watch lists (what matching found), for notify_matched_events."""

    event: Event
    card_id: int | None
    watch_lists: Sequence[int] = field(default_factory=tuple)
    confidence: float = 0.0


def archive_key(archive_id: int) -> str:
    return f"archive:{archive_id}"


def emit(event_type: str, items: Sequence[Emitted]) -> list[int]:
    """Outbox rows for every active webhook of `event_type` whose filters let an item through; returns their ids.

    Call inside the transaction of the change reported; the delivery messages are sent once it commits.
    """
    if not items:
        return []
    hooks = [hook for hook in Webhook.objects.filter(active=True).prefetch_related("camera_groups")
             if isinstance(hook.event_types, list) and event_type in hook.event_types]
    if not hooks:
        return []
    now = timezone.now()
    envelopes = [{"id": uuid.uuid4().hex, "type": event_type, "occurred_at": now.isoformat().replace("+00:00", "Z"),
                  "data": item.data} for item in items]
    rows: list[WebhookDelivery] = []
    size = settings.FFV_WEBHOOK_BATCH_SIZE
    for hook in hooks:
        groups = {group.pk for group in hook.camera_groups.all()}
        by_key: dict[str, list[dict[str, Any]]] = {}
        for item, envelope in zip(items, envelopes, strict=True):
            if _passes(hook, groups, event_type, item):
                by_key.setdefault(item.ordering_key, []).append(envelope)
        for key, events in by_key.items():
            for start in range(0, len(events), size):
                batch = events[start:start + size]
                rows.append(WebhookDelivery(
                    webhook=hook, uuid=uuid.uuid4(), event_type=event_type, ordering_key=key, events=batch,
                    event_count=len(batch), status=DeliveryStatus.PENDING, next_attempt_date=now))
    if not rows:
        return []
    created = WebhookDelivery.objects.bulk_create(rows)
    ids = [row.pk for row in created]
    transaction.on_commit(lambda: send_deliveries(ids))
    return ids


def _passes(hook: Webhook, groups: set[int], event_type: str, item: Emitted) -> bool:
    if groups and item.camera_group_id not in groups:
        return False
    if event_type != WebhookEventType.EVENT_MATCHED:
        return True
    lists = hook.watch_lists if isinstance(hook.watch_lists, list) else []
    if lists and not set(lists) & set(item.watch_lists):
        return False
    return hook.min_confidence is None or (item.confidence is not None and item.confidence >= hook.min_confidence)


def send_deliveries(ids: Iterable[int], countdown: float | None = None) -> None:
    """Send the delivery messages; one the broker cannot take now is left to the sweeper (never lost)."""
    for delivery_id in ids:
        try:
            broker.send_webhook_delivery(delivery_id, countdown=countdown)
        except (BrokerError, KombuError, OSError) as exc:
            logger.warning("webhook delivery %s: cannot enqueue (%s); the sweeper will send it", delivery_id, exc)
            return


# --- the events


def notify_archive_status(archive_id: int, state: str, *, code: str = "", attempt: int | None = None) -> list[int]:
    """An archive's job changed state (queued, starting, completed, failed, interrupted): call in that
    transaction."""
    archive = VideoArchive.objects.filter(pk=archive_id).values("camera_group_id", "name", "job_task_id").first()
    if archive is None:
        return []
    data: dict[str, Any] = {
        "video_archive": archive_id,
        "name": archive["name"],
        "camera_group": archive["camera_group_id"],
        "job_state": str(state),
        "status": HEALTH_STATUS.get(JobState(state), ""),
        "msg_code": code,
        "task_id": archive["job_task_id"],
    }
    if attempt is not None:
        data["attempt"] = attempt
    return emit(WebhookEventType.ARCHIVE_STATUS, [Emitted(archive_key(archive_id), archive["camera_group_id"], data)])


def notify_new_clusters(kind: str, archive_id: int, clusters: Sequence[Any]) -> list[int]:
    """Clusters opened by clustering an archive's events (rows with pk, event_count, best_event_id)."""
    if not clusters:
        return []
    group_id = VideoArchive.objects.filter(pk=archive_id).values_list("camera_group_id", flat=True).first()
    items = [
        Emitted(archive_key(archive_id), group_id, {
            "kind": kind, "cluster": cluster.pk, "event_count": cluster.event_count,
            "best_event": cluster.best_event_id, "video_archive": archive_id, "camera_group": group_id,
            "url": reverse(f"{kind}cluster-detail", args=[cluster.pk]),
        })
        for cluster in clusters
    ]
    return emit(WebhookEventType.CLUSTER_CREATED, items)


def notify_matched_events(matches: Iterable[MatchedEvent]) -> list[int]:
    """Events that matched watch lists (called by matching, in its transaction): one `event.matched` each, batched
    per archive; filtered by each webhook's camera groups, watch lists and minimum confidence."""
    kinds = {model: kind for kind, model in EVENT_MODELS.items()}
    items = []
    for match in matches:
        event = match.event
        kind = kinds[type(event)]
        lists = tuple(int(value) for value in match.watch_lists)
        items.append(Emitted(archive_key(event.video_archive_id), event.camera_group_id, {
            "kind": kind,
            "event": event.pk,
            "video_archive": event.video_archive_id,
            "camera_group": event.camera_group_id,
            "frame_timestamp": event.frame_timestamp,
            "quality": event.quality,
            "matched_card": match.card_id,
            "matched_lists": list(lists),
            "confidence": float(match.confidence),
            "thumbnail": reverse(f"{kind}event-thumbnail", args=[event.pk]),
        }, watch_lists=lists, confidence=float(match.confidence)))
    return emit(WebhookEventType.EVENT_MATCHED, items)
