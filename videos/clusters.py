"""Clusters of face, body and car events across archives and camera groups (writes).

An archive's events are clustered once its job has ended (`cluster_archive`, run by the `videos.cluster_archive`
task that `videos.jobs.job_finish` sends): every event with an embedding and no cluster yet joins the most similar
existing cluster of its kind (any archive, any camera group) or opens one; see processing.clustering for the rules
(best quality first, cosine to the cluster's mean direction >= FFV_CLUSTER_THRESHOLD_<KIND>, two events of one
frame never in one cluster). Before an archive's events are purged (a new run, or the archive's deletion),
`uncluster_archive` takes them out again: their embeddings come off the centroid sums, counts drop, best events
are re-picked and clusters left empty are deleted, except curated ones (named, merged or split by a person,
videos.persons): those stay with their last direction, and their events leave pins so that the archive's next
clustering puts its new events with the same keys back where the person had put them.

Locking: both run in one transaction that first takes the clusters lock, so two archives finishing at once cannot
read the same centroid and both write their sum over it. On PostgreSQL that is a transaction-level advisory lock
(`pg_advisory_xact_lock`), held until commit or rollback; on SQLite, which has one writer at a time anyway, a
no-op UPDATE at the start takes the database's write lock at once (waiting up to the connection timeout), so the
reads that follow see a state no other writer can change before commit.

Cluster counts of an archive are null from `process/` (and while unclustered) until clustering has run; a new
archive shows 0.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import timedelta

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Q
from django.utils import timezone
from kombu.exceptions import KombuError, OperationalError

from processing.clustering import ClusteringResult, ClusterState, Item, assign_clusters
from videos.broker import send_clustering
from videos.models import BUSY_STATES, CLUSTER_MODELS, EVENT_MODELS, ClusterPin, JobState, VideoArchive
from videos.webhooks import notify_new_clusters

logger = logging.getLogger(__name__)

KINDS = ("face", "body", "car")
COUNT_FIELDS = {kind: f"{kind}_cluster_count" for kind in KINDS}
FINISHED_STATES = (JobState.COMPLETED, JobState.INTERRUPTED, JobState.FAILED)
# Advisory lock key (PostgreSQL): any constant that no other code of this database uses; b"ffvclust" as an int.
CLUSTERS_LOCK_KEY = int.from_bytes(b"ffvclust", "big") - 2**63
# The sweep re-sends clustering for an archive whose job ended this long ago and whose counts are still null.
SWEEP_GRACE = timedelta(minutes=5)
_CHUNK = 500


def cluster_threshold(kind: str) -> float:
    return float(getattr(settings, f"FFV_CLUSTER_THRESHOLD_{kind.upper()}"))


def embedding_from_bytes(raw: bytes | memoryview) -> np.ndarray:
    """A stored float32 little-endian vector as a float64 array."""
    return np.frombuffer(bytes(raw), dtype="<f4").astype(np.float64)


def unit_or_none(vector: np.ndarray) -> np.ndarray | None:
    """The vector scaled to length 1 (stored embeddings should be already), None when it has no direction."""
    norm = float(np.linalg.norm(vector)) if vector.size else 0.0
    if not np.isfinite(norm) or norm < 1e-6:
        return None
    return vector / norm


def embedding_to_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def lock_clusters() -> None:
    """Serialise every change of clusters; held until the surrounding transaction ends (call inside atomic)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CLUSTERS_LOCK_KEY])
        else:
            table = CLUSTER_MODELS["face"]._meta.db_table
            cursor.execute(f"UPDATE {table} SET event_count = event_count WHERE 1 = 0")


def _chunks(values: Sequence[int], size: int = _CHUNK) -> Iterator[Sequence[int]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


# --- clustering an archive


def cluster_archive(*, archive_id: int) -> dict[str, int] | None:
    """Cluster the archive's unclustered events; returns its cluster count per kind, None when not its time.

    Idempotent: a second call finds nothing new and only recounts. Does nothing for an archive that is gone or
    queued/running again (that run will purge these events and be clustered when it ends).
    """
    with transaction.atomic():
        lock_clusters()
        state = VideoArchive.objects.filter(pk=archive_id).values_list("job_state", flat=True).first()
        if state is None or state in BUSY_STATES:
            logger.info("video archive %s: not clustered (%s)", archive_id, state or "deleted")
            return None
        counts: dict[str, int] = {}
        for kind in KINDS:
            added = _cluster_kind(kind, archive_id)
            counts[kind] = archive_cluster_count(kind, archive_id)
            if added:
                logger.info("video archive %s: %d %s events clustered, %d clusters", archive_id, added, kind,
                            counts[kind])
        # Not over a `process/` that came in meanwhile: its null counts stand until its own clustering.
        VideoArchive.objects.filter(pk=archive_id).exclude(job_state__in=BUSY_STATES).update(
            **{COUNT_FIELDS[kind]: counts[kind] for kind in KINDS}
        )
    return counts


def archive_cluster_count(kind: str, archive_id: int) -> int:
    """How many distinct clusters the archive's events of `kind` belong to."""
    return EVENT_MODELS[kind].objects.filter(video_archive_id=archive_id, cluster__isnull=False).aggregate(
        n=Count("cluster", distinct=True)
    )["n"]


def _cluster_kind(kind: str, archive_id: int) -> int:
    event_model, cluster_model = EVENT_MODELS[kind], CLUSTER_MODELS[kind]
    placed = _place_pinned(kind, archive_id)
    rows = list(
        event_model.objects.filter(video_archive_id=archive_id, cluster__isnull=True, embedding__isnull=False)
        .order_by("id")
        .values_list("id", "frame_index", "quality", "embedding")
    )
    if not rows:
        return placed
    items_by_dim: dict[int, list[Item]] = defaultdict(list)
    quality: dict[int, float] = {}
    for event_id, frame_index, event_quality, raw in rows:
        vector = unit_or_none(embedding_from_bytes(raw))
        if vector is None:
            logger.warning("%s event %s: unusable embedding, not clustered", kind, event_id)
            continue
        items_by_dim[vector.size].append(Item(event_id, vector, (archive_id, frame_index), event_quality))
        quality[event_id] = event_quality
    # The frames of this archive that each cluster already holds: the same-frame rule across runs of this task.
    frames: dict[int, set] = defaultdict(set)
    taken = event_model.objects.filter(video_archive_id=archive_id, cluster__isnull=False)
    for cluster_id, frame_index in taken.values_list("cluster_id", "frame_index").iterator(chunk_size=2000):
        frames[cluster_id].add((archive_id, frame_index))
    for dim, items in items_by_dim.items():
        states = list(_cluster_states(cluster_model, dim, frames))
        result = assign_clusters(states, items, threshold=cluster_threshold(kind))
        _write(kind, result, quality, archive_id=archive_id)
        placed += len(result.assignments)
    return placed


def _place_pinned(kind: str, archive_id: int) -> int:
    """Put the archive's unclustered events that have a pin (videos.models.ClusterPin) into the pinned clusters
    that still exist, then drop the archive's pins of `kind`; returns how many events were placed.

    A pin comes from a person's merge or split, so it wins over similarity; the same-frame rule still holds (an
    event whose frame the cluster already has stays for the similarity pass), and so does the embedder: an event
    whose embedding has another length than the cluster's stays too.
    """
    pins = ClusterPin.objects.filter(video_archive_id=archive_id, kind=kind)
    pinned = {(track, policy, frame): cluster_id for track, policy, frame, cluster_id in
              pins.values_list("track_id", "post_policy", "frame_index", "cluster_id")}
    if not pinned:
        return 0
    event_model, cluster_model = EVENT_MODELS[kind], CLUSTER_MODELS[kind]
    clusters = {pk: (embedding_from_bytes(raw), count) for pk, raw, count in
                cluster_model.objects.filter(pk__in=set(pinned.values())).values_list("pk", "centroid", "event_count")}
    frames: dict[int, set[int]] = defaultdict(set)
    taken = event_model.objects.filter(video_archive_id=archive_id, cluster_id__in=list(clusters))
    for cluster_id, frame_index in taken.values_list("cluster_id", "frame_index"):
        frames[cluster_id].add(frame_index)
    members: dict[int, list[int]] = defaultdict(list)
    sums: dict[int, np.ndarray] = {}
    quality: dict[int, float] = {}
    rows = event_model.objects.filter(video_archive_id=archive_id, cluster__isnull=True, embedding__isnull=False)
    for event_id, track, policy, frame, event_quality, raw in rows.order_by("id").values_list(
            "id", "track_id", "post_policy", "frame_index", "quality", "embedding"):
        cluster_id = pinned.get((track, policy, frame))
        if cluster_id not in clusters or frame in frames[cluster_id]:
            continue
        vector = unit_or_none(embedding_from_bytes(raw))
        centroid, count = clusters[cluster_id]
        if vector is None or (count > 0 and vector.shape != centroid.shape) or (
                cluster_id in sums and sums[cluster_id].shape != vector.shape):
            continue
        frames[cluster_id].add(frame)
        members[cluster_id].append(event_id)
        sums[cluster_id] = sums[cluster_id] + vector if cluster_id in sums else vector
        quality[event_id] = event_quality
    pins.delete()
    now = timezone.now()
    for cluster_id, event_ids in members.items():
        centroid, count = clusters[cluster_id]
        for chunk in _chunks(sorted(event_ids)):
            event_model.objects.filter(pk__in=chunk).update(cluster_id=cluster_id)
        total = sums[cluster_id] if count == 0 else centroid + sums[cluster_id]
        best = event_model.objects.filter(cluster_id=cluster_id).order_by("-quality", "id").values_list(
            "id", flat=True).first()
        cluster_model.objects.filter(pk=cluster_id).update(
            event_count=count + len(event_ids), centroid=embedding_to_bytes(total), best_event_id=best,
            modified_date=now)
    placed = sum(len(event_ids) for event_ids in members.values())
    if placed:
        logger.info("video archive %s: %d %s events back in the clusters a person put them in", archive_id, placed,
                    kind)
    return placed


def _cluster_states(cluster_model, dim: int, frames: dict[int, set]) -> Iterable[ClusterState]:
    # Empty clusters are only the curated ones kept by their last direction (processing.clustering.ClusterState).
    rows = cluster_model.objects.filter(Q(event_count__gt=0) | Q(curated=True)).values_list(
        "id", "centroid", "event_count")
    for cluster_id, raw, count in rows.iterator(chunk_size=2000):
        centroid = embedding_from_bytes(raw)
        if centroid.size == dim:  # a cluster of another embedder (model changed) is no candidate
            yield ClusterState(cluster_id, centroid, count, frames.get(cluster_id, set()))


def _rank(event_quality: float, event_id: int) -> tuple[float, int]:
    """Best event order: the highest quality, the oldest event on a tie."""
    return (event_quality, -event_id)


def _best_of(event_ids: Iterable[int], quality: dict[int, float]) -> int:
    return max(event_ids, key=lambda event_id: _rank(quality[event_id], event_id))


def _write(kind: str, result: ClusteringResult, quality: dict[int, float], *, archive_id: int) -> None:
    event_model, cluster_model = EVENT_MODELS[kind], CLUSTER_MODELS[kind]
    members = result.members()
    now = timezone.now()
    opened = [
        cluster_model(event_count=state.count, centroid=embedding_to_bytes(state.centroid),
                      best_event_id=_best_of(members[key], quality))
        for key, state in ((key, result.clusters[key]) for key in result.opened)
    ]
    created = cluster_model.objects.bulk_create(opened, batch_size=_CHUNK)
    cluster_id = {key: row.pk for key, row in zip(result.opened, created, strict=True)}
    existing = [key for key in result.clusters if key >= 0]
    current_best = {
        pk: (best_quality, best_id)
        for pk, best_id, best_quality in cluster_model.objects.filter(pk__in=existing).values_list(
            "pk", "best_event_id", "best_event__quality")
    }
    updated = []
    for key in existing:
        state = result.clusters[key]
        best = _best_of(members[key], quality)
        old_quality, old_id = current_best.get(key, (None, None))
        if old_id is not None and old_quality is not None and _rank(old_quality, old_id) > _rank(quality[best], best):
            best = old_id
        updated.append(cluster_model(pk=key, event_count=state.count, centroid=embedding_to_bytes(state.centroid),
                                     best_event_id=best, modified_date=now))
    cluster_model.objects.bulk_update(updated, ["event_count", "centroid", "best_event", "modified_date"],
                                      batch_size=_CHUNK)
    for key, event_ids in members.items():
        for chunk in _chunks(sorted(event_ids)):
            event_model.objects.filter(pk__in=chunk).update(cluster_id=cluster_id.get(key, key))
    notify_new_clusters(kind, archive_id, created)  # in clustering's transaction (webhooks' outbox)


# --- taking an archive out of its clusters


def uncluster_archive(*, archive_id: int) -> None:
    """Take the archive's events out of their clusters (before they are purged); its counts become null."""
    with transaction.atomic():
        lock_clusters()
        for kind in KINDS:
            _uncluster_kind(kind, archive_id)
        VideoArchive.objects.filter(pk=archive_id).update(**{field: None for field in COUNT_FIELDS.values()})


def _uncluster_kind(kind: str, archive_id: int) -> None:
    event_model, cluster_model = EVENT_MODELS[kind], CLUSTER_MODELS[kind]
    members = event_model.objects.filter(video_archive_id=archive_id, cluster__isnull=False)
    removed_sum: dict[int, np.ndarray] = {}
    removed_ids: set[int] = set()
    skewed: set[int] = set()  # clusters whose sum cannot be corrected by subtraction (no or odd embedding)
    for event_id, cluster_id, raw in members.values_list("id", "cluster_id", "embedding").iterator(chunk_size=2000):
        removed_ids.add(event_id)
        vector = None if raw is None else unit_or_none(embedding_from_bytes(raw))
        if vector is None:
            skewed.add(cluster_id)
            continue
        if cluster_id in removed_sum and removed_sum[cluster_id].shape != vector.shape:
            skewed.add(cluster_id)
            continue
        removed_sum[cluster_id] = removed_sum.get(cluster_id, 0.0) + vector
    if not removed_ids:
        return
    affected = sorted(set(removed_sum) | skewed)
    curated = set(cluster_model.objects.filter(pk__in=affected, curated=True).values_list("pk", flat=True))
    if curated:
        _pin(kind, archive_id, members.filter(cluster_id__in=curated))
    members.update(cluster=None)
    now = timezone.now()
    empty: list[int] = []
    updated = []
    for cluster_id, raw, best_id in cluster_model.objects.filter(pk__in=affected).values_list(
            "pk", "centroid", "best_event_id"):
        remaining = event_model.objects.filter(cluster_id=cluster_id)
        count = remaining.count()
        centroid = embedding_from_bytes(raw)
        if count == 0:
            if cluster_id in curated:  # kept, by its last direction, for the events of a later run
                updated.append(cluster_model(pk=cluster_id, event_count=0, centroid=embedding_to_bytes(
                    last_direction(centroid)), best_event_id=None, modified_date=now))
            else:
                empty.append(cluster_id)
            continue
        removed = removed_sum.get(cluster_id)
        if cluster_id in skewed or removed is None or removed.shape != centroid.shape:
            centroid = _sum_of(remaining)
        else:
            centroid = centroid - removed
        if best_id is None or best_id in removed_ids:
            best_id = remaining.order_by("-quality", "id").values_list("id", flat=True).first()
        updated.append(cluster_model(pk=cluster_id, event_count=count, centroid=embedding_to_bytes(centroid),
                                     best_event_id=best_id, modified_date=now))
    cluster_model.objects.bulk_update(updated, ["event_count", "centroid", "best_event", "modified_date"],
                                      batch_size=_CHUNK)
    for chunk in _chunks(empty):
        cluster_model.objects.filter(pk__in=chunk).delete()


def _pin(kind: str, archive_id: int, events) -> None:
    """Pins (videos.models.ClusterPin) for events of curated clusters that are about to leave them."""
    pins = [ClusterPin(video_archive_id=archive_id, kind=kind, cluster_id=cluster_id, track_id=track,
                       post_policy=policy, frame_index=frame)
            for cluster_id, track, policy, frame in events.values_list("cluster_id", "track_id", "post_policy",
                                                                      "frame_index").iterator(chunk_size=2000)]
    ClusterPin.objects.bulk_create(pins, batch_size=_CHUNK, ignore_conflicts=True)


def last_direction(centroid: np.ndarray) -> np.ndarray:
    """What an emptied curated cluster keeps as its centroid: the unit direction of its members' sum (an empty
    vector when the sum had none)."""
    unit = unit_or_none(centroid)
    return np.zeros(0) if unit is None else unit


def _sum_of(events) -> np.ndarray:
    total: np.ndarray | float = 0.0
    for raw in events.filter(embedding__isnull=False).values_list("embedding", flat=True).iterator(chunk_size=2000):
        vector = unit_or_none(embedding_from_bytes(raw))
        if vector is not None:
            total = total + vector
    return np.asarray(total, dtype=np.float64).reshape(-1)


# --- the task around it


def enqueue_clustering(archive_id: int) -> None:
    """Send the clustering task (control queue); a broker failure is logged and left to `clustering_sweep`."""
    try:
        send_clustering(archive_id)
    except (OperationalError, KombuError, OSError):
        logger.exception("video archive %s: cannot enqueue clustering; the sweep will send it again", archive_id)


def clustering_sweep(*, enqueue: Callable[[int], None] = enqueue_clustering, limit: int = 100) -> list[int]:
    """Send clustering again for archives whose job ended a while ago and whose counts are still null."""
    ended_before = timezone.now() - SWEEP_GRACE
    pending = (
        VideoArchive.objects.filter(job_state__in=FINISHED_STATES)
        .filter(Q(face_cluster_count__isnull=True) | Q(body_cluster_count__isnull=True)
                | Q(car_cluster_count__isnull=True))
        .filter(Q(processing_finish_date__lt=ended_before) | Q(processing_finish_date__isnull=True))
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )
    sent = list(pending)
    for archive_id in sent:
        logger.warning("video archive %s: clustering re-sent (counts still null)", archive_id)
        enqueue(archive_id)
    return sent
