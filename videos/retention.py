"""Retention: events older than a number of days are deleted with their pictures, matched and unmatched events
each by their own setting, and full frames may go earlier than the events (their thumbnails stay).

Run by beat (`videos.apply_retention`, every FFV_RETENTION_INTERVAL seconds). Events are deleted in batches of
RETENTION_BATCH, each batch in one transaction under the clusters lock (videos.clusters), with the bookkeeping of
`event_delete` done once per batch: each touched cluster's `event_count`, `centroid` (the members' sum loses the
deleted embeddings) and `best_event` (re-picked by quality when it went), clusters left empty deleted; each touched
archive's `<kind>_count` and (unless null) `<kind>_cluster_count` recounted. The row counters (videos.row_counts)
follow the deletes by their triggers. Pictures are deleted once the batch has committed.

Age is the event's `created_date` (when it was stored).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from videos.clusters import lock_clusters
from videos.event_services import _archive_recount, _delete_files, cluster_remove_members
from videos.models import EVENT_MODELS, Event

logger = logging.getLogger(__name__)

RETENTION_BATCH = 500


def matched_events(model: type[Event]) -> Q:
    """The events of `model` that retention treats as matched (FFV_RETENTION_MATCHED_DAYS); every other event is
    unmatched (FFV_RETENTION_UNMATCHED_DAYS).

    An event is matched when watch-list matching gave it a card (`matched_card`); a kind without that field (or
    a project without matching) has no matched events, so every event is unmatched. Extend this one predicate if
    "matched" comes to mean more.
    """
    if any(f.name == "matched_card" for f in model._meta.get_fields()):
        return Q(matched_card__isnull=False)
    return Q(pk__in=[])


@dataclass
class RetentionResult:
    deleted: dict[str, int] = field(default_factory=dict)  # events deleted per kind
    fullframes: dict[str, int] = field(default_factory=dict)  # full frames deleted per kind


def _cutoff(days: float) -> datetime | None:
    return timezone.now() - timedelta(days=days) if days > 0 else None


def retention_apply() -> RetentionResult:
    """Apply the retention settings once: old full frames first, then old events, matched and unmatched."""
    result = RetentionResult()
    fullframe_cutoff = _cutoff(settings.FFV_RETENTION_FULLFRAME_DAYS)
    matched_cutoff = _cutoff(settings.FFV_RETENTION_MATCHED_DAYS)
    unmatched_cutoff = _cutoff(settings.FFV_RETENTION_UNMATCHED_DAYS)
    for kind, model in EVENT_MODELS.items():
        matched = matched_events(model)
        if fullframe_cutoff is not None:
            result.fullframes[kind] = fullframes_delete(kind, fullframe_cutoff)
        deleted = 0
        if matched_cutoff is not None:
            deleted += events_delete(kind, Q(created_date__lt=matched_cutoff) & matched)
        if unmatched_cutoff is not None:
            deleted += events_delete(kind, Q(created_date__lt=unmatched_cutoff) & ~matched)
        result.deleted[kind] = deleted
    if any(result.deleted.values()) or any(result.fullframes.values()):
        logger.info("retention: events deleted %s, full frames deleted %s", result.deleted, result.fullframes)
    return result


def fullframes_delete(kind: str, cutoff: datetime) -> int:
    """Delete the full frames of events created before `cutoff`; the events keep their thumbnails. Returns how many."""
    model = EVENT_MODELS[kind]
    total = 0
    while True:
        with transaction.atomic():
            rows = list(model.objects.filter(created_date__lt=cutoff).exclude(fullframe="")
                        .order_by("id").values_list("id", "fullframe")[:RETENTION_BATCH])
            if not rows:
                return total
            model.objects.filter(pk__in=[pk for pk, _name in rows]).update(fullframe="")
            names = [name for _pk, name in rows]
            transaction.on_commit(lambda names=names: _delete_files(names))
        total += len(rows)


def events_delete(kind: str, condition: Q) -> int:
    """Delete the events of `kind` that match `condition`, with pictures and cluster and archive bookkeeping."""
    total = 0
    while True:
        deleted = _delete_batch(kind, condition)
        if not deleted:
            return total
        total += deleted


def _delete_batch(kind: str, condition: Q) -> int:
    model = EVENT_MODELS[kind]
    with transaction.atomic():
        lock_clusters()  # clustering must not add these events to a cluster between the read and the delete
        rows = list(model.objects.filter(condition).order_by("id").values_list(
            "id", "video_archive_id", "cluster_id", "embedding", "thumbnail", "fullframe", "normalized",
        )[:RETENTION_BATCH])
        if not rows:
            return 0
        ids = [row[0] for row in rows]
        model.objects.filter(pk__in=ids).delete()
        removed: dict[int, list[bytes | None]] = defaultdict(list)
        for _pk, _archive, cluster_id, embedding, *_names in rows:
            if cluster_id is not None:
                removed[cluster_id].append(embedding)
        for cluster_id, embeddings in removed.items():
            cluster_remove_members(kind, cluster_id, event_ids=set(ids), embeddings=embeddings)
        for archive_id in sorted({row[1] for row in rows}):
            _archive_recount(kind, archive_id)
        names = [name for row in rows for name in row[4:] if name]
        transaction.on_commit(lambda: _delete_files(names))
    return len(rows)
