"""Face search: which face events look like a probe (`looks_like=detection:<id>` / `faceevent:<id>`).

Each process keeps an index of the face events' embeddings (processing.ann.VectorIndex: exact brute force below
FFV_SEARCH_EXACT_LIMIT vectors, HNSW above) and keeps it in step with the event table, which stays the truth:

- **Start**: the index is read from FFV_SEARCH_INDEX_DIR (`faces.index.npz` and `faces.meta.npz`, written by
  `manage.py rebuild_search_index` and refreshed by the processes themselves), or built from the table when
  there is no usable file (another database, another format, a torn pair).
- **New events**, before every query: the rows above the high-water mark (the largest indexed id), looking back
  LOOKBACK ids for rows whose insert committed late; only ids and creation times are read, embeddings only for
  the rows the index lacks. An index lookup, not a scan.
- **Deleted events** (an archive deleted or processed again): every hit is checked against the table before it is
  returned, so a query never answers a deleted event; a hit that is gone, a high-water row that is gone or
  changed, or a row count that differs from the index's (checked every FFV_SEARCH_RECONCILE_SECONDS) makes the
  process reconcile: it reads every row's (id, created_date), drops what is gone and adds what is missing.
- Every indexed row is known by (id, created_date), so a reused id (SQLite reuses ids after a rollback) is seen
  as another row.

Similarity is the cosine of the two FaceNet embeddings clipped at 0 (processing.ann): 1 the same picture, about
0.6-0.7 and up the same person in other pictures, near 0 a stranger.
"""

from __future__ import annotations

import fcntl
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import connection
from django.utils.translation import gettext as _

from processing.ann import VectorIndex
from videos.models import FaceDetection, FaceEvent

logger = logging.getLogger(__name__)

LOOKBACK = 1000  # ids below the high-water mark re-read on each refresh, for inserts that committed late
SAVE_EVERY = 5000  # write the file again after this many new vectors (or a fifth of the index, if more)
INDEX_FILE = "faces.index.npz"
META_FILE = "faces.meta.npz"
META_VERSION = 1
_CHUNK = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class SearchError(ValueError):
    """A probe that cannot be used: bad syntax, an unknown id, no embedding."""


# --- probes


_PROBE = re.compile(r"(detection|faceevent):([A-Za-z0-9_-]{1,64})")


def probe_vector(value: str, user: Any) -> np.ndarray:
    """The unit embedding of `detection:<FaceDetection id>` or `faceevent:<FaceEvent id>` (float32, 1-D).

    A detection made by another user counts as unknown (superusers see every detection).
    """
    match = _PROBE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise SearchError(_("A probe is detection:<id> or faceevent:<id>, got %(value)r.") % {"value": value})
    kind, ref = match.groups()
    if kind == "detection":
        detections = FaceDetection.objects.filter(pk=ref)
        if not getattr(user, "is_superuser", False):
            detections = detections.filter(created_by_id=getattr(user, "pk", None))
        raw = detections.values_list("embedding", flat=True).first()
        if raw is None:
            raise SearchError(_("Detection %(id)s not found.") % {"id": ref})
    else:
        if not ref.isdigit() or len(ref) > 18:
            raise SearchError(_("A face event id is a number, got %(id)r.") % {"id": ref})
        row = FaceEvent.objects.filter(pk=int(ref)).values_list("pk", "embedding").first()
        if row is None:
            raise SearchError(_("Face event %(id)s not found.") % {"id": ref})
        raw = row[1]
        if raw is None:
            raise SearchError(_("Face event %(id)s has no embedding to search with.") % {"id": ref})
    vector = np.frombuffer(bytes(raw), dtype="<f4").astype(np.float32)
    norm = float(np.linalg.norm(vector)) if vector.size else 0.0
    if not np.isfinite(norm) or norm < 1e-6:
        raise SearchError(_("The probe %(value)s has no usable embedding.") % {"value": value})
    return vector / norm


# --- searching


def search_faces(vector: np.ndarray, *, threshold: float, limit: int) -> list[tuple[int, float]]:
    """Face events most similar to `vector`: `(face event id, similarity 0..1)`, best first, at most `limit`,
    each at least `threshold`."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    probe = np.asarray(vector, dtype=np.float32).reshape(-1)
    with _lock:
        return _engine().search(probe, threshold=threshold, limit=limit)


def rebuild_search_index() -> int:
    """Build this process's index anew from the event table and write its file; returns the number indexed."""
    with _lock:
        engine = _engine()
        engine.rebuild()
        engine.save()
        return len(engine)


def reset_search_index() -> None:
    """Forget this process's index (the next query loads the file or rebuilds)."""
    global _current
    with _lock:
        _current = None


_lock = threading.RLock()
_current: FaceSearchIndex | None = None


def _engine() -> FaceSearchIndex:
    global _current
    identity = _database_identity()
    directory = Path(settings.FFV_SEARCH_INDEX_DIR)
    if _current is None or _current.database != identity or _current.directory != directory:
        _current = FaceSearchIndex(identity, directory)
        _current.start()
    return _current


def _database_identity() -> str:
    cfg = connection.settings_dict
    return f"{connection.vendor}:{cfg.get('HOST') or ''}:{cfg.get('PORT') or ''}:{cfg.get('NAME')}"


def _stamp(created: datetime) -> int:
    return (created - _EPOCH) // timedelta(microseconds=1)


def _vector(raw: bytes | memoryview) -> np.ndarray:
    return np.frombuffer(bytes(raw), dtype="<f4")


class FaceSearchIndex:
    """One process's face index and what it knows of the table: `stamps` (id -> created_date in microseconds)."""

    def __init__(self, database: str, directory: Path) -> None:
        self.database = database
        self.directory = directory
        self.index: VectorIndex | None = None
        self.stamps: dict[int, int] = {}
        self.unusable: dict[int, int] = {}  # rows whose embedding cannot be indexed (another length): not re-read
        self.high_water = 0
        self.checked_at = 0.0  # time.monotonic() of the last row-count check
        self.unsaved = 0

    def __len__(self) -> int:
        return len(self.stamps)

    # --- life cycle

    def start(self) -> None:
        if not self.load():
            self.rebuild()
            self.save()

    def rebuild(self) -> None:
        started = time.monotonic()
        self.index, self.stamps, self.unusable, self.high_water = None, {}, {}, 0
        rows = FaceEvent.objects.filter(embedding__isnull=False).order_by("pk").values_list(
            "pk", "created_date", "embedding")
        batch: list[tuple[int, int, Any]] = []
        for pk, created, raw in rows.iterator(chunk_size=_CHUNK):
            batch.append((pk, _stamp(created), raw))
            if len(batch) >= _CHUNK:
                self._add(batch)
                batch = []
        self._add(batch)
        self.checked_at = time.monotonic()
        self.unsaved = 0
        logger.info("face search index built from the table: %d faces in %.1f s", len(self),
                    time.monotonic() - started)

    # --- keeping up with the table

    def refresh(self) -> None:
        if self.high_water in self.stamps:
            anchor = FaceEvent.objects.filter(pk=self.high_water).values_list("created_date", flat=True).first()
            if anchor is None or _stamp(anchor) != self.stamps[self.high_water]:
                self.reconcile()  # the newest indexed row went (or is another row now)
        recent = FaceEvent.objects.filter(pk__gt=max(0, self.high_water - LOOKBACK), embedding__isnull=False)
        missing = [(pk, _stamp(created)) for pk, created in recent.values_list("pk", "created_date")
                   if self.stamps.get(pk, self.unusable.get(pk)) != _stamp(created)]
        if missing:
            self._fetch_and_add(missing)
        if time.monotonic() - self.checked_at >= settings.FFV_SEARCH_RECONCILE_SECONDS:
            self.checked_at = time.monotonic()
            if FaceEvent.objects.filter(embedding__isnull=False).count() != len(self) + len(self.unusable):
                self.reconcile()
        if self.unsaved >= max(SAVE_EVERY, len(self) // 5):
            self.save()

    def reconcile(self) -> None:
        """Compare every row's (id, created_date) with the index: drop what is gone, add what is missing."""
        started = time.monotonic()
        table: dict[int, int] = {}
        rows = FaceEvent.objects.filter(embedding__isnull=False).values_list("pk", "created_date")
        for pk, created in rows.iterator(chunk_size=10 * _CHUNK):
            table[pk] = _stamp(created)
        gone = [pk for pk, stamp in self.stamps.items() if table.get(pk) != stamp]
        if gone and self.index is not None:
            self.index.remove(gone)
        for pk in gone:
            del self.stamps[pk]
        self.unusable = {pk: stamp for pk, stamp in self.unusable.items() if table.get(pk) == stamp}
        missing = [(pk, stamp) for pk, stamp in table.items() if self.stamps.get(pk, self.unusable.get(pk)) != stamp]
        self._fetch_and_add(missing)
        self.high_water = max(self.stamps, default=0)
        self.checked_at = time.monotonic()
        if gone or missing:
            self.unsaved += len(gone) + len(missing)
            logger.info("face search index reconciled: %d gone, %d added, %d faces (%.2f s)", len(gone),
                        len(missing), len(self), time.monotonic() - started)

    def _fetch_and_add(self, wanted: list[tuple[int, int]]) -> None:
        for start in range(0, len(wanted), _CHUNK):
            ids = [pk for pk, _stamp_value in wanted[start : start + _CHUNK]]
            rows = FaceEvent.objects.filter(pk__in=ids, embedding__isnull=False).values_list(
                "pk", "created_date", "embedding")
            self._add([(pk, _stamp(created), raw) for pk, created, raw in rows])

    def _add(self, rows: list[tuple[int, int, Any]]) -> None:
        if not rows:
            return
        vectors, keys, stamps = [], [], []
        for pk, stamp, raw in rows:
            vector = _vector(raw)
            if self.index is None and vector.size:
                self.index = VectorIndex(vector.size, exact_limit=settings.FFV_SEARCH_EXACT_LIMIT)
            norm = float(np.linalg.norm(vector)) if vector.size else 0.0
            if self.index is None or vector.size != self.index.dim or not np.isfinite(norm) or norm < 1e-6:
                logger.warning("face event %s: embedding of length %d not indexed", pk, vector.size)
                self.unusable[pk] = stamp
                continue
            vectors.append(vector)
            keys.append(pk)
            stamps.append(stamp)
        if not keys or self.index is None:
            return
        self.index.add(np.asarray(keys, dtype=np.int64), np.vstack(vectors))
        self.stamps.update(zip(keys, stamps, strict=True))
        self.high_water = max(self.high_water, max(keys))
        self.unsaved += len(keys)

    # --- queries

    def search(self, probe: np.ndarray, *, threshold: float, limit: int) -> list[tuple[int, float]]:
        self.refresh()
        for attempt in range(2):
            if self.index is None:
                return []
            if probe.size != self.index.dim:
                raise SearchError(_("The probe has %(got)d dimensions, the indexed faces %(want)d.")
                                  % {"got": probe.size, "want": self.index.dim})
            hits = self.index.search(probe, limit, threshold=threshold)
            if attempt or self._all_current([pk for pk, _similarity in hits]):
                return hits
            self.reconcile()  # a hit is gone or changed: deletions happened; catch up with all of them
        return []

    def _all_current(self, ids: list[int]) -> bool:
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            rows = dict(FaceEvent.objects.filter(pk__in=chunk).values_list("pk", "created_date"))
            if any(pk not in rows or _stamp(rows[pk]) != self.stamps.get(pk) for pk in chunk):
                return False
        return True

    # --- the files

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / "faces.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def save(self) -> None:
        """Write the index and what it knows (ids, stamps, database) as a pair, under a file lock."""
        try:
            with self._file_lock():
                meta = {"version": META_VERSION, "database": self.database, "high_water": self.high_water,
                        "empty": self.index is None}
                if self.index is not None:
                    self.index.save(self.directory / INDEX_FILE)
                ids = np.fromiter(self.stamps.keys(), dtype=np.int64, count=len(self.stamps))
                stamps = np.fromiter(self.stamps.values(), dtype=np.int64, count=len(self.stamps))
                temp = self.directory / f".{META_FILE}.tmp"
                with temp.open("wb") as handle:
                    np.savez(handle, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), ids=ids, stamps=stamps)
                temp.replace(self.directory / META_FILE)
            self.unsaved = 0
        except OSError:
            logger.exception("face search index: cannot write %s", self.directory)

    def load(self) -> bool:
        """Read the files if they are this database's and agree with each other; then catch up with the table."""
        meta_path, index_path = self.directory / META_FILE, self.directory / INDEX_FILE
        if not meta_path.exists():
            return False
        try:
            with self._file_lock(), np.load(meta_path, allow_pickle=False) as data:
                meta = json.loads(bytes(data["meta"]).decode())
                if meta.get("version") != META_VERSION or meta.get("database") != self.database:
                    logger.info("face search index in %s is not this database's: rebuilding", self.directory)
                    return False
                ids, stamps = data["ids"], data["stamps"]
                index = None if meta.get("empty") else VectorIndex.load(index_path)
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("face search index in %s cannot be read (%s): rebuilding", self.directory, exc)
            return False
        indexed = np.sort(index.keys()) if index is not None else np.zeros(0, np.int64)
        if not np.array_equal(indexed, np.sort(ids)):
            logger.warning("face search index in %s does not match its id list: rebuilding", self.directory)
            return False
        if index is not None:
            index.exact_limit = settings.FFV_SEARCH_EXACT_LIMIT
        self.index = index
        self.stamps = dict(zip(ids.tolist(), stamps.tolist(), strict=True))
        self.high_water = int(meta.get("high_water") or 0)
        self.checked_at = 0.0  # count check (and reconcile if needed) at the first refresh
        self.unsaved = 0
        logger.info("face search index read from %s: %d faces", self.directory, len(self))
        return True
