"""Persons: clusters a person named, merged or split (writes of `/clusters/<kind>/`).

Every change here runs under the clusters lock that clustering takes (videos.clusters.lock_clusters), in one
transaction, and re-reads what it changes after taking it: two merges at once, or a merge while an archive is
clustered, are serialised, and a cluster that another request merged away meanwhile is NOT_FOUND (or a per-id
`not_found`), never a 500.

What a person did here is kept by later clustering:
- each cluster touched here becomes `curated`: it stays when its events go (an archive re-processed or deleted),
  with its last direction as centroid, so events of later runs and archives can join it again;
- when an archive is re-processed, its events in curated clusters leave pins (videos.models.ClusterPin), and the
  new run's events with the same keys go back to those clusters before similarity is asked (videos.clusters);
- clustering never merges two clusters, so a split stays split, and two events of one frame never share a
  cluster: a merge that would put them together is refused for that id (`same_frame`).

Counts stay consistent: `event_count`, `centroid` (the sum of the members' unit embeddings), `best_event` (the
highest quality, the oldest on a tie), the archives' `<kind>_cluster_count` (where clustering has run), and the
row counters (database triggers count the inserted and deleted cluster rows).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from videos.clusters import (
    COUNT_FIELDS,
    archive_cluster_count,
    embedding_from_bytes,
    embedding_to_bytes,
    lock_clusters,
    unit_or_none,
)
from videos.errors import BadParam, NotFound
from videos.models import CLUSTER_MODELS, EVENT_MODELS, Cluster, ClusterPin, VideoArchive

MergeError = Literal["duplicate", "not_found", "same_frame", "incompatible"]


@dataclass(frozen=True)
class MergeResult:
    """One id of a merge request: merged, or why not (immich's BulkIdResponseDto)."""

    id: int
    success: bool
    error: MergeError | None = None


def cluster_update(*, kind: str, cluster_id: int, name: str) -> Cluster:
    """Name a cluster ("" takes the name away); it becomes curated (kept by later clustering)."""
    cluster_model = CLUSTER_MODELS[kind]
    with transaction.atomic():
        lock_clusters()
        updated = cluster_model.objects.filter(pk=cluster_id).update(name=name, curated=True,
                                                                     modified_date=timezone.now())
        if not updated:
            raise NotFound(_("No such cluster."))
        # (read under the lock: a merge committed after it could have deleted the cluster)
        return cluster_model.objects.defer("centroid").get(pk=cluster_id)


def cluster_merge(*, kind: str, cluster_id: int, ids: Sequence[int]) -> list[MergeResult]:
    """Merge the clusters `ids` of `kind` into `cluster_id`: their events join it and they are deleted.

    Per id (in the order given): `duplicate` (given before), `not_found` (no such cluster of this kind),
    `same_frame` (it has an event of a frame the target already has one of: two faces seen at once are two
    people), `incompatible` (embeddings of another length: another embedder made them). The target keeps its
    name, or takes the first merged cluster's when it has none. Raises NotFound when the target is missing and
    BadParam when it is among `ids`.
    """
    if cluster_id in ids:
        raise BadParam(_("A cluster cannot be merged into itself."), param="ids")
    event_model, cluster_model = EVENT_MODELS[kind], CLUSTER_MODELS[kind]
    results: list[MergeResult] = []
    with transaction.atomic():
        lock_clusters()
        target = cluster_model.objects.filter(pk=cluster_id).first()
        if target is None:
            raise NotFound(_("No such cluster."))
        members = event_model.objects.filter(cluster_id=cluster_id)
        frames = set(members.values_list("video_archive_id", "frame_index"))
        centroid = embedding_from_bytes(target.centroid)
        total: np.ndarray | None = centroid if target.event_count > 0 else None
        name = target.name
        # A face cluster's watch-list card (watch lists): the target's, else the first merged one's.
        has_card = any(field.name == "card" for field in cluster_model._meta.get_fields())
        card_id = target.card_id if has_card else None
        cards = dict(cluster_model.objects.filter(pk__in=ids).values_list("pk", "card_id")) if has_card else {}
        seen: set[int] = set()
        merged: list[int] = []
        for other_id in ids:
            if other_id in seen:
                results.append(MergeResult(other_id, False, "duplicate"))
                continue
            seen.add(other_id)
            other = cluster_model.objects.filter(pk=other_id).values_list("centroid", "event_count", "name").first()
            if other is None:
                results.append(MergeResult(other_id, False, "not_found"))
                continue
            raw, count, other_name = other
            other_frames = set(event_model.objects.filter(cluster_id=other_id).values_list(
                "video_archive_id", "frame_index"))
            if frames & other_frames:
                results.append(MergeResult(other_id, False, "same_frame"))
                continue
            vector = embedding_from_bytes(raw)
            if count > 0 and total is not None and vector.shape != total.shape:
                results.append(MergeResult(other_id, False, "incompatible"))
                continue
            if count > 0:
                total = vector if total is None else total + vector
            frames |= other_frames
            name = name or other_name
            card_id = card_id or cards.get(other_id)
            merged.append(other_id)
            results.append(MergeResult(other_id, True))
        if merged:
            archives = _archives_of(kind, [cluster_id, *merged])
            event_model.objects.filter(cluster_id__in=merged).update(cluster_id=cluster_id)
            ClusterPin.objects.filter(kind=kind, cluster_id__in=merged).update(cluster_id=cluster_id)
            cluster_model.objects.filter(pk__in=merged).delete()
            if total is None:  # every one empty: the target keeps its last direction
                total = centroid
            _settle(kind, cluster_id, centroid=total, name=name)
            if has_card:
                cluster_model.objects.filter(pk=cluster_id).update(card_id=card_id)
            _recount_archives(kind, archives)
        else:
            cluster_model.objects.filter(pk=cluster_id).update(curated=True)
    return results


def cluster_split(*, kind: str, cluster_id: int, event_ids: Sequence[int], name: str = "") -> Cluster:
    """Move the events `event_ids` of cluster `cluster_id` into a new cluster (named `name`) and return it.

    Both clusters become curated: later clustering never merges them (it only ever adds events to clusters), and
    a re-processed archive's events go back to the side a person put them on. Raises NotFound when the cluster
    is missing and BadParam when an event is not one of its members or none would be left in it.
    """
    event_model, cluster_model = EVENT_MODELS[kind], CLUSTER_MODELS[kind]
    wanted = set(event_ids)
    with transaction.atomic():
        lock_clusters()
        source = cluster_model.objects.filter(pk=cluster_id).values_list("centroid", "event_count").first()
        if source is None:
            raise NotFound(_("No such cluster."))
        raw, _count = source
        moving = list(event_model.objects.filter(cluster_id=cluster_id, pk__in=wanted).values_list(
            "pk", "embedding"))
        strangers = sorted(wanted - {pk for pk, _raw in moving})
        if strangers:
            raise BadParam(_("Event %(id)s is not in this cluster.") % {"id": strangers[0]}, param="events")
        if len(moving) >= event_model.objects.filter(cluster_id=cluster_id).count():
            raise BadParam(_("A split must leave at least one event in the cluster."), param="events")
        moved_sum = _sum([embedding for _pk, embedding in moving])
        centroid = embedding_from_bytes(raw)
        archives = _archives_of(kind, [cluster_id])
        new = cluster_model.objects.create(name=name, curated=True, event_count=0,
                                           centroid=embedding_to_bytes(np.zeros(0)))
        event_model.objects.filter(pk__in=wanted).update(cluster_id=new.pk)
        if moved_sum is None or moved_sum.shape != centroid.shape:
            rest = _sum(event_model.objects.filter(cluster_id=cluster_id).values_list("embedding", flat=True))
        else:
            rest = centroid - moved_sum
        _settle(kind, cluster_id, centroid=rest)
        _settle(kind, new.pk, centroid=moved_sum)
        _recount_archives(kind, archives)
        return cluster_model.objects.defer("centroid").get(pk=new.pk)


def _sum(embeddings: Iterable[bytes | memoryview | None]) -> np.ndarray | None:
    """The sum of the unit embeddings (odd lengths and missing ones left out), None when there is none."""
    total: np.ndarray | None = None
    for raw in embeddings:
        vector = None if raw is None else unit_or_none(embedding_from_bytes(raw))
        if vector is not None and (total is None or total.shape == vector.shape):
            total = vector if total is None else total + vector
    return total


def _settle(kind: str, cluster_id: int, *, centroid: np.ndarray | None, name: str | None = None) -> None:
    """Write a curated cluster's count, centroid and best event from its members as they are now."""
    members = EVENT_MODELS[kind].objects.filter(cluster_id=cluster_id)
    best = members.order_by("-quality", "id").values_list("id", flat=True).first()
    fields = {"event_count": members.count(), "best_event_id": best, "curated": True, "modified_date": timezone.now(),
              "centroid": embedding_to_bytes(np.zeros(0) if centroid is None else centroid)}
    if name is not None:
        fields["name"] = name
    CLUSTER_MODELS[kind].objects.filter(pk=cluster_id).update(**fields)


def _archives_of(kind: str, cluster_ids: list[int]) -> list[int]:
    rows = EVENT_MODELS[kind].objects.order_by().filter(cluster_id__in=cluster_ids).values_list(
        "video_archive_id", flat=True).distinct()
    return sorted(rows)


def _recount_archives(kind: str, archive_ids: list[int]) -> None:
    """The archives' cluster counts of `kind`, where clustering has run (a null count stays null)."""
    field = COUNT_FIELDS[kind]
    for archive_id in archive_ids:
        VideoArchive.objects.filter(pk=archive_id, **{f"{field}__isnull": False}).update(
            **{field: archive_cluster_count(kind, archive_id)})
