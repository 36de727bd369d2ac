"""Reads of the events and clusters API: list querysets, event pictures, where clusters come from, face search."""

from __future__ import annotations

import mimetypes
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Literal

from django.core.files.storage import default_storage
from django.db.models import QuerySet
from django.utils.translation import gettext as _

from videos.errors import BadParam, NotFound, ServiceUnavailable
from videos.models import CLUSTER_MODELS, EVENT_MODELS, Cluster, Event, FaceEvent

# looks_like asks the search engine for this many best matches at most, before the other filters apply.
SEARCH_CANDIDATES_MAX = 10_000
# Ids per `IN (...)` query (SQLite's bound-parameter limit is far above; this keeps the statements small).
_IN_CHUNK = 1000

PictureName = Literal["thumbnail", "fullframe"]


def event_list(*, kind: str) -> QuerySet[Event]:
    # The embedding is never shown and is the largest column.
    return EVENT_MODELS[kind].objects.defer("embedding")


def cluster_list(*, kind: str) -> QuerySet[Cluster]:
    return CLUSTER_MODELS[kind].objects.defer("centroid")


@dataclass(frozen=True)
class Picture:
    file: IO[bytes]
    content_type: str
    name: str


def event_picture(*, event: Event, which: PictureName) -> Picture:
    """The event's thumbnail or full frame, opened from storage; NotFound when it has none or the file is gone."""
    name = getattr(event, which).name
    if not name:
        raise NotFound(_("The event has no such picture."))
    try:
        handle = default_storage.open(name, "rb")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise NotFound(_("The picture file is missing.")) from None
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return Picture(file=handle, content_type=content_type, name=name.rsplit("/", 1)[-1])


@dataclass(frozen=True)
class ClusterSources:
    """Sorted ids of the archives and camera groups a cluster's events come from."""

    video_archives: list[int] = field(default_factory=list)
    camera_groups: list[int] = field(default_factory=list)


def cluster_sources(*, kind: str, cluster_ids: Iterable[int]) -> dict[int, ClusterSources]:
    """Where each cluster's events come from, for a whole page of clusters in one query per 1000 clusters."""
    ids = list(cluster_ids)
    archives: dict[int, set[int]] = {cluster_id: set() for cluster_id in ids}
    groups: dict[int, set[int]] = {cluster_id: set() for cluster_id in ids}
    events = EVENT_MODELS[kind].objects.order_by()  # no default ordering: it would defeat DISTINCT
    for start in range(0, len(ids), _IN_CHUNK):
        rows = (events.filter(cluster_id__in=ids[start:start + _IN_CHUNK])
                .values_list("cluster_id", "video_archive_id", "camera_group_id").distinct())
        for cluster_id, archive_id, group_id in rows:
            archives[cluster_id].add(archive_id)
            groups[cluster_id].add(group_id)
    return {cluster_id: ClusterSources(sorted(archives[cluster_id]), sorted(groups[cluster_id])) for cluster_id in ids}


def face_event_search(
    *, queryset: QuerySet[FaceEvent], looks_like: str, threshold: float, limit: int, user
) -> list[FaceEvent]:
    """The face events of `queryset` most similar to the probe, best first, at most `limit`, similarity at least
    `threshold`; each carries its similarity as `looks_like_confidence`.

    The engine ranks the whole index; the other filters of `queryset` apply to its answer, so the engine is asked
    for more matches (4x each round, up to SEARCH_CANDIDATES_MAX) until `limit` of them pass the filters or it has
    no more above the threshold.
    """
    try:
        # Imported here: the search engine (and its index) loads only when a search is made.
        from videos.search import SearchError, probe_vector, search_faces
    except ModuleNotFoundError as exc:
        if exc.name != "videos.search":
            raise
        raise ServiceUnavailable(_("Face search is not available on this server.")) from exc
    if not looks_like.strip():
        raise BadParam(_("Give detection:<id> or faceevent:<id>."), param="looks_like")
    try:
        vector = probe_vector(looks_like, user)
    except SearchError as exc:
        raise BadParam(str(exc) or _("Invalid looks_like value."), param="looks_like") from exc
    wanted = limit
    while True:
        hits = search_faces(vector, threshold=threshold, limit=wanted)
        rows = _in_chunks(queryset, [event_id for event_id, _similarity in hits])
        matched: list[FaceEvent] = []
        for event_id, similarity in hits:
            row = rows.get(event_id)
            if row is not None and similarity >= threshold:
                row.looks_like_confidence = float(similarity)
                matched.append(row)
        if len(matched) >= limit or len(hits) < wanted or wanted >= SEARCH_CANDIDATES_MAX:
            return matched[:limit]
        wanted = min(wanted * 4, SEARCH_CANDIDATES_MAX)


def _in_chunks(queryset: QuerySet[FaceEvent], ids: list[int]) -> dict[int, FaceEvent]:
    found: dict[int, FaceEvent] = {}
    unordered = queryset.order_by()
    for start in range(0, len(ids), _IN_CHUNK):
        found.update((row.pk, row) for row in unordered.filter(pk__in=ids[start:start + _IN_CHUNK]))
    return found
