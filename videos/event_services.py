"""Writes of the events API: deleting one event, with its pictures and its cluster's bookkeeping."""

from __future__ import annotations

import logging

import numpy as np
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from videos.clusters import (
    archive_cluster_count,
    embedding_from_bytes,
    embedding_to_bytes,
    last_direction,
    lock_clusters,
    unit_or_none,
)
from videos.models import CLUSTER_MODELS, EVENT_MODELS, Event, VideoArchive

logger = logging.getLogger(__name__)

KIND_OF_MODEL: dict[type[Event], str] = {model: kind for kind, model in EVENT_MODELS.items()}


def event_kind(event: Event) -> str:
    """The event's kind: face, body or car."""
    return KIND_OF_MODEL[type(event)]


def event_delete(*, event: Event) -> None:
    """Delete one event; its pictures go once the transaction commits.

    If it was in a cluster, under the clusters lock that clustering takes too (videos.clusters): the cluster's
    `event_count` becomes the number of members left (one less), its `centroid` (the sum of the members' unit
    embeddings) loses this one's, `best_event` is re-picked by quality if it was this one, and a cluster left
    empty is deleted (a curated one stays, empty, see videos.clusters). The archive's `<kind>_count` is
    recounted, and its `<kind>_cluster_count` too unless it is null (clustering has not run for the archive yet).
    """
    kind = event_kind(event)
    model = EVENT_MODELS[kind]
    names = [name for name in (event.thumbnail.name, event.fullframe.name, event.normalized.name) if name]
    with transaction.atomic():
        # Always: clustering may put the event into a cluster between this instance's read and the delete.
        lock_clusters()
        row = model.objects.filter(pk=event.pk).values_list("cluster_id", "embedding").first()
        if row is None:
            return  # deleted meanwhile by someone else, who did the bookkeeping
        cluster_id, embedding = row
        model.objects.filter(pk=event.pk).delete()
        if cluster_id is not None:
            cluster_remove_members(kind, cluster_id, event_ids={event.pk}, embeddings=[embedding])
        _archive_recount(kind, event.video_archive_id)
    transaction.on_commit(lambda: _delete_files(names))


def cluster_remove_members(kind: str, cluster_id: int, *, event_ids: set[int],
                           embeddings: list[bytes | None]) -> None:
    """Take deleted members (`event_ids`, their `embeddings`) out of their cluster's bookkeeping (clusters lock
    held): count, centroid and best event follow; a cluster left empty is deleted, but a curated one (a person's,
    videos.persons) stays, empty, by its last direction (videos.clusters). Event deletion and retention share it."""
    cluster_model = CLUSTER_MODELS[kind]
    found = cluster_model.objects.filter(pk=cluster_id).values_list("centroid", "best_event_id", "curated").first()
    if found is None:
        return
    raw_centroid, best_id, curated = found
    members = EVENT_MODELS[kind].objects.filter(cluster_id=cluster_id)
    count = members.count()
    centroid = embedding_from_bytes(raw_centroid)
    if count == 0 and curated:
        cluster_model.objects.filter(pk=cluster_id).update(
            event_count=0, centroid=embedding_to_bytes(last_direction(centroid)), best_event_id=None,
            modified_date=timezone.now())
        return
    if count == 0:
        cluster_model.objects.filter(pk=cluster_id).delete()
        return
    vectors = [None if raw is None else unit_or_none(embedding_from_bytes(raw)) for raw in embeddings]
    if any(vector is None or vector.shape != centroid.shape for vector in vectors):
        centroid = _sum_of(members)  # nothing to subtract exactly: the sum again, from the members left
    else:
        centroid = centroid - np.sum(vectors, axis=0)
    if best_id is None or best_id in event_ids:  # (a delete has already set it to null: on_delete=SET_NULL)
        best_id = members.order_by("-quality", "id").values_list("id", flat=True).first()
    cluster_model.objects.filter(pk=cluster_id).update(
        event_count=count, centroid=embedding_to_bytes(centroid), best_event_id=best_id, modified_date=timezone.now()
    )


def _sum_of(members: QuerySet[Event]) -> np.ndarray:
    total = None
    for raw in members.filter(embedding__isnull=False).values_list("embedding", flat=True).iterator(chunk_size=2000):
        vector = unit_or_none(embedding_from_bytes(raw))
        if vector is not None and (total is None or total.shape == vector.shape):
            total = vector if total is None else total + vector
    return np.zeros(0) if total is None else total


def _archive_recount(kind: str, archive_id: int) -> None:
    archives = VideoArchive.objects.filter(pk=archive_id)
    archives.update(**{f"{kind}_count": EVENT_MODELS[kind].objects.filter(video_archive_id=archive_id).count()})
    archives.filter(**{f"{kind}_cluster_count__isnull": False}).update(
        **{f"{kind}_cluster_count": archive_cluster_count(kind, archive_id)}
    )


def _delete_files(names: list[str]) -> None:
    for name in names:
        try:
            default_storage.delete(name)
        except OSError:
            logger.warning("could not delete event picture %s", name)
