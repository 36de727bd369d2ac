"""Exports of events (`/exports/`): writes and the build that a Celery task runs.

An export is the events of one kind that the event list (`/events/<kind>/`) selects with the same query
parameters, in the same order, as CSV, or as a ZIP of that CSV and the events' thumbnails. `export_create`
validates the filters with the list's own FilterSet and sends the build on commit; `export_build` claims the row
with a compare-and-set (a redelivered or re-sent message finds nothing to claim), reads the events in keyset
batches of EXPORT_BATCH rows (memory bounded whatever the export's size), writes to a local temporary file and
then to the default storage (local or S3), writing `progress` as it goes. The sweeper (`exports_sweep`) re-sends
builds whose message was lost or whose worker died, and deletes the files of exports past `expires_at`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, Any

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.http import QueryDict
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from kombu.exceptions import KombuError
from kombu.exceptions import OperationalError as BrokerError

from videos import broker, event_filters
from videos.cleanup import upload_temp_dir
from videos.errors import BadParam, Conflict, Gone, NotFound, ServiceUnavailable
from videos.event_selectors import event_list
from videos.models import Event, Export, ExportFormat, ExportStatus
from videos.serializers.events import EventSerializer, FaceEventSerializer
from videos.storage import StorageUnavailable

logger = logging.getLogger(__name__)

# Rows read per query while building; each batch is a keyset range read like a list page.
EXPORT_BATCH = 500
# What a client may send as filters: at most this many parameters, values per parameter and characters per value.
MAX_FILTER_KEYS = 32
MAX_FILTER_VALUES = 1000
MAX_FILTER_VALUE_LENGTH = 2048
CSV_NAME = "events.csv"
FILTERSETS = {
    "face": event_filters.FaceEventFilterSet,
    "body": event_filters.BodyEventFilterSet,
    "car": event_filters.CarEventFilterSet,
}
SERIALIZERS = {"face": FaceEventSerializer, "body": EventSerializer, "car": EventSerializer}
# List fields that mean nothing outside a search request.
_SKIPPED_COLUMNS = {"looks_like_confidence"}
# The list's orderings (videos.event_views.EventViewSet.ordering_fields); every one is non-null.
ORDERING_FIELDS = ("id", "created_date", "quality")
DEFAULT_ORDERING = "-id"
MESSAGES = {
    "export_failed": gettext_lazy("The export could not be written; try again."),
    "storage_unavailable": gettext_lazy("The file storage was unavailable; try again."),
    "too_many_attempts": gettext_lazy("The export's worker stopped too many times; try again."),
}


# --- input


@dataclass(frozen=True)
class ExportQuery:
    kind: str
    filters: dict[str, list[str]]
    ordering: list[tuple[str, bool]]  # (field, descending); `id` last as the tie-breaker


def normalize_filters(raw: Any) -> dict[str, list[str]]:
    """The client's `filters` object as {name: [values]}: a value may be a string, a number or a list of them."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadParam(_("Must be an object of query parameters."), param="filters")
    if len(raw) > MAX_FILTER_KEYS:
        raise BadParam(_("Too many filters."), param="filters")
    result: dict[str, list[str]] = {}
    for name, value in raw.items():
        values = value if isinstance(value, list) else [value]
        if len(values) > MAX_FILTER_VALUES:
            raise BadParam(_("Too many values."), param=f"filters.{name}")
        texts = []
        for item in values:
            if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                raise BadParam(_("Must be a string, a number or a list of them."), param=f"filters.{name}")
            text = str(item)
            if len(text) > MAX_FILTER_VALUE_LENGTH or "\x00" in text:
                raise BadParam(_("The value is too long or malformed."), param=f"filters.{name}")
            texts.append(text)
        result[str(name)] = texts
    return result


def export_query(*, kind: str, filters: dict[str, list[str]]) -> ExportQuery:
    """Check `filters` as the event list checks its query parameters (same FilterSet); BadParam names the one
    at fault as `filters.<name>`. Pagination parameters (`limit`, `page`) and searches are not filters here."""
    filterset_class = FILTERSETS[kind]
    for name in filters:
        if name not in filterset_class.base_filters:
            raise BadParam(_("Unknown filter."), param=f"filters.{name}")
    ordering = _ordering(filters.get("ordering"))
    filterset = filterset_class(data=_query_dict(filters), queryset=event_list(kind=kind))
    if not filterset.is_valid():
        name, errors = next(iter(filterset.errors.items()))
        raise BadParam(str(errors[0]), param=f"filters.{name}")
    try:
        filterset.qs  # noqa: B018 - methods (week numbers) validate while filtering
    except BadParam as exc:
        raise BadParam(exc.desc, param=f"filters.{exc.param}" if exc.param else "filters") from None
    return ExportQuery(kind=kind, filters=filters, ordering=ordering)


def _query_dict(filters: dict[str, list[str]]) -> QueryDict:
    data = QueryDict(mutable=True)
    for name, values in filters.items():
        data.setlist(name, values)
    return data


def _ordering(values: list[str] | None) -> list[tuple[str, bool]]:
    """The list's `ordering` rule (videos.pagination): comma-separated fields, `-` for descending, then `id`."""
    raw = (values[-1] if values else "") or DEFAULT_ORDERING
    keys: list[tuple[str, bool]] = []
    for part in raw.split(","):
        part = part.strip()
        name = part.lstrip("-")
        if name not in ORDERING_FIELDS:
            raise BadParam(_("Unknown ordering field."), param="filters.ordering")
        if all(key != name for key, _descending in keys):
            keys.append((name, part.startswith("-")))
    if all(key != "id" for key, _descending in keys):
        keys.append(("id", keys[0][1]))
    return keys


def export_queryset(query: ExportQuery) -> QuerySet[Event]:
    """The rows of the export, filtered as the list filters them (ordering is applied by the batches)."""
    filterset = FILTERSETS[query.kind](data=_query_dict(query.filters), queryset=event_list(kind=query.kind))
    if not filterset.is_valid():  # validated at creation; a filter whose rules changed since fails the build
        raise ValueError(f"filters no longer valid: {dict(filterset.errors)}")
    return filterset.qs.order_by()


# --- reads


def export_list(*, user: Any) -> QuerySet[Export]:
    """The exports `user` may see: their own, or everyone's for staff (no user: none)."""
    if user is None or not getattr(user, "is_authenticated", False):
        return Export.objects.none()
    if user.is_staff:
        return Export.objects.all()
    return Export.objects.filter(created_by=user)


# --- writes


def export_create(*, user: Any, kind: str, format: str, filters: dict[str, list[str]], limit: int | None,
                  base_url: str, send: Callable[[int, str], None] = broker.send_export) -> Export:
    """A new export, queued; the build is sent once committed (503, and no export, when the broker refuses)."""
    export_query(kind=kind, filters=filters)
    task_id = uuid.uuid4().hex
    with transaction.atomic():
        export = Export.objects.create(
            created_by=user, kind=kind, format=format, filters=filters, limit=limit or settings.FFV_EXPORT_MAX_ROWS,
            base_url=base_url[:2048], task_id=task_id, heartbeat=timezone.now(),
        )

        def send_on_commit() -> None:
            try:
                send(export.pk, task_id)
            except (BrokerError, KombuError, OSError) as exc:
                logger.error("export %s: cannot enqueue task %s: %s", export.pk, task_id, exc)
                Export.objects.filter(pk=export.pk).delete()
                raise ServiceUnavailable(_("The task queue is unavailable, try again later.")) from exc

        transaction.on_commit(send_on_commit)
    return export


def export_delete(*, export: Export) -> None:
    """Delete the export and its file; a build still running notices (its claim is gone) and stops."""
    name = export.file.name
    Export.objects.filter(pk=export.pk).delete()
    if name:
        transaction.on_commit(lambda: _delete_file(name))


def export_download(*, export: Export) -> tuple[IO[bytes], str, str]:
    """(open file, content type, file name) of a completed export; 409 before that, 410 once expired."""
    if export.status == ExportStatus.EXPIRED or (
            export.status == ExportStatus.COMPLETED and export.expires_at is not None and
            export.expires_at <= timezone.now()):
        raise Gone(_("The export has expired and its file was deleted; make a new one."))
    if export.status != ExportStatus.COMPLETED or not export.file.name:
        raise Conflict(_("The export is not ready: its status is %(status)s.") % {"status": export.status})
    try:
        handle = default_storage.open(export.file.name, "rb")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise NotFound(_("The export's file is missing.")) from None
    content_type = "application/zip" if export.format == ExportFormat.ZIP else "text/csv; charset=utf-8"
    return handle, content_type, f"{export.kind}-events-{export.pk}.{export.format}"


def export_message(export: Export) -> str:
    message = MESSAGES.get(export.msg_code)
    return str(message) if message is not None else ""


# --- the build (a Celery task's body)


class _Abandoned(Exception):
    """The export was deleted, or another worker took its claim over: stop without writing anything more."""


class _Build:
    def __init__(self, export_id: int, claim: str) -> None:
        self.export_id = export_id
        self.claim = claim
        self.last_write = 0.0

    def update(self, **fields: Any) -> None:
        if not Export.objects.filter(pk=self.export_id, claim=self.claim).update(heartbeat=timezone.now(), **fields):
            raise _Abandoned

    def progress(self, done: int, total: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last_write >= settings.FFV_PROGRESS_INTERVAL:
            self.last_write = now
            self.update(progress=min(1.0, done / total) if total else 1.0, row_count=done)


def export_claim(export_id: int) -> str | None:
    """Take the export for this attempt: a queued one, or a running one whose worker's heartbeat ran out."""
    claim = uuid.uuid4().hex
    now = timezone.now()
    stale = now - timedelta(seconds=settings.FFV_JOB_LEASE_SECONDS)
    claimable = Q(status=ExportStatus.QUEUED) | Q(status=ExportStatus.IN_PROGRESS, heartbeat__lt=stale)
    taken = Export.objects.filter(claimable, pk=export_id).update(
        status=ExportStatus.IN_PROGRESS, claim=claim, heartbeat=now, attempts=F("attempts") + 1, progress=0.0,
        row_count=0)
    return claim if taken else None


def export_build(*, export_id: int) -> None:
    """Build the export (idempotent: only the attempt holding the claim writes; a finished one is left alone)."""
    claim = export_claim(export_id)
    if claim is None:
        logger.info("export %s: nothing to do (gone, finished or held by a live worker)", export_id)
        return
    export = Export.objects.get(pk=export_id)
    build = _Build(export_id, claim)
    if export.attempts > settings.FFV_JOB_MAX_ATTEMPTS:
        _fail(build, "too_many_attempts")
        return
    temp_path = ""
    try:
        ordering = _ordering(export.filters.get("ordering"))
        query = ExportQuery(kind=export.kind, filters=export.filters, ordering=ordering)
        queryset = export_queryset(query)
        matched = queryset.count()
        total = min(matched, export.limit)
        build.update(total=total, truncated=matched > export.limit)
        handle, temp_path = _temp_file()
        with handle:
            if export.format == ExportFormat.ZIP:
                written = _write_zip(handle, export, query, queryset, total, build)
            else:
                text = io.TextIOWrapper(getattr(handle, "file", handle), encoding="utf-8", newline="")
                written = _write_csv(text, export, query, queryset, total, build, thumbnails=None)
                text.detach()
            handle.flush()
            size = handle.tell()
            handle.seek(0)
            name = default_storage.save(f"exports/{export_id}/{export.kind}-events-{export_id}.{export.format}",
                                        File(handle))
        now = timezone.now()
        try:
            build.update(status=ExportStatus.COMPLETED, progress=1.0, row_count=written, file=name, file_size=size,
                         finish_date=now, expires_at=now + timedelta(seconds=settings.FFV_EXPORT_TTL_SECONDS))
        except _Abandoned:
            _delete_file(name)
            raise
        logger.info("export %s: %d %s events, %d bytes", export_id, written, export.kind, size)
    except _Abandoned:
        logger.info("export %s: deleted or taken over while being built; stopped", export_id)
    except StorageUnavailable as exc:
        _fail(build, "storage_unavailable")
        raise RuntimeError(f"export {export_id}: storage unavailable") from exc
    except Exception as exc:
        _fail(build, "export_failed")
        raise RuntimeError(f"export {export_id} failed") from exc
    finally:
        if temp_path:
            _unlink(temp_path)


def _fail(build: _Build, code: str) -> None:
    logger.error("export %s: failed (%s)", build.export_id, code)
    try:
        build.update(status=ExportStatus.FAILED, msg_code=code, finish_date=timezone.now())
    except _Abandoned:
        pass
    except Exception:  # the database itself may be what failed: the sweeper fails it once its lease runs out
        logger.exception("export %s: the failure could not be recorded", build.export_id)


def _temp_file() -> tuple[IO[bytes], str]:
    # Named like a worker's source copies' sweep pattern (videos.cleanup): a killed worker's leftover is removed.
    handle = tempfile.NamedTemporaryFile(prefix="export-", dir=upload_temp_dir(), delete=False)  # noqa: SIM115
    return handle, handle.name


def _batches(queryset: QuerySet[Event], ordering: list[tuple[str, bool]], limit: int) -> Iterator[list[Event]]:
    """The rows in the list's order, EXPORT_BATCH at a time, each batch a keyset range read; at most `limit`."""
    order = [F(name).desc() if descending else F(name).asc() for name, descending in ordering]
    ordered = queryset.order_by(*order)
    last: list[Any] | None = None
    left = limit
    while left > 0:
        page = ordered if last is None else ordered.filter(_after(ordering, last))
        rows = list(page[: min(EXPORT_BATCH, left)])
        if not rows:
            return
        yield rows
        left -= len(rows)
        last = [getattr(rows[-1], name) for name, _descending in ordering]


def _after(ordering: list[tuple[str, bool]], values: list[Any]) -> Q:
    condition = Q()
    equal_so_far = Q()
    for (name, descending), value in zip(ordering, values, strict=True):
        condition |= equal_so_far & Q(**{f"{name}__{'lt' if descending else 'gt'}": value})
        equal_so_far &= Q(**{name: value})
    first, first_descending = ordering[0]
    return Q(**{f"{first}__{'lte' if first_descending else 'gte'}": values[0]}) & condition


class _BaseUrlRequest:
    """What EventSerializer's picture URLs need of a request: the API root the export was asked through."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def build_absolute_uri(self, path: str) -> str:
        return f"{self.base_url}{path}"


def columns(kind: str) -> list[str]:
    """The CSV's columns: the event list's fields, in its order."""
    return [name for name in SERIALIZERS[kind]().fields if name not in _SKIPPED_COLUMNS]


def csv_value(value: Any) -> str:
    """One list field as CSV text: objects as compact JSON, null as empty, the rest as JSON shows it."""
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _write_csv(text: IO[str], export: Export, query: ExportQuery, queryset: QuerySet[Event], total: int,
               build: _Build, *, thumbnails: Callable[[Event], str] | None) -> int:
    names = columns(export.kind)
    writer = csv.writer(text)
    writer.writerow([*names, *(["thumbnail_file"] if thumbnails else [])])
    serializer_class = SERIALIZERS[export.kind]
    context: dict[str, Any] = {"request": _BaseUrlRequest(export.base_url)} if export.base_url else {}
    done = 0
    for rows in _batches(queryset, query.ordering, total):
        for data, event in zip(serializer_class(rows, many=True, context=context).data, rows, strict=True):
            writer.writerow([*(csv_value(data[name]) for name in names),
                             *([thumbnails(event)] if thumbnails else [])])
        done += len(rows)
        text.flush()
        build.progress(done, total)
    build.progress(done, total, force=True)
    return done


def _write_zip(handle: IO[bytes], export: Export, query: ExportQuery, queryset: QuerySet[Event], total: int,
               build: _Build) -> int:
    """The CSV (with a `thumbnail_file` column) and `thumbnails/<event id>.<ext>`, streamed into the archive."""
    with zipfile.ZipFile(handle, "w", allowZip64=True) as archive:

        def add_thumbnail(event: Event) -> str:
            name = event.thumbnail.name
            if not name:
                return ""
            member = f"thumbnails/{event.pk}{os.path.splitext(name)[1].lower() or '.jpg'}"
            try:
                with default_storage.open(name, "rb") as source, \
                        archive.open(zipfile.ZipInfo(member, date_time=_zip_time(event.created_date)), "w") as target:
                    shutil.copyfileobj(source, target, 1024 * 1024)
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                logger.warning("export %s: thumbnail %s of event %s is missing", export.pk, name, event.pk)
                return ""
            return member

        # JPEGs are stored as they are (compressed already); the CSV is deflated. The CSV goes into a temporary
        # file first: a ZIP member is written whole, and thumbnails are being added meanwhile.
        with tempfile.TemporaryFile(dir=upload_temp_dir()) as csv_file:
            text = io.TextIOWrapper(csv_file, encoding="utf-8", newline="")
            written = _write_csv(text, export, query, queryset, total, build, thumbnails=add_thumbnail)
            text.flush()
            text.detach()
            csv_file.seek(0)
            info = zipfile.ZipInfo(CSV_NAME, date_time=_zip_time(timezone.now()))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as target:  # (a CSV may pass 2 GiB)
                shutil.copyfileobj(csv_file, target, 1024 * 1024)
    return written


def _zip_time(moment: datetime) -> tuple[int, int, int, int, int, int]:
    local = timezone.localtime(moment)
    return (max(local.year, 1980), local.month, local.day, local.hour, local.minute, local.second)


# --- housekeeping (the sweeper)


@dataclass(frozen=True)
class ExportSweep:
    expired: list[int]
    resent: list[int]
    failed: list[int]


def exports_sweep(*, send: Callable[[int, str], None] = broker.send_export) -> ExportSweep:
    """Delete the files of exports past `expires_at` (status `expired`, download 410); re-send builds whose message
    was lost (queued longer than FFV_QUEUE_STALE_SECONDS) or whose worker died (heartbeat older than the lease),
    failing those that used up FFV_JOB_MAX_ATTEMPTS. A re-sent build that is still in the queue is claimed once."""
    now = timezone.now()
    expired = []
    for export_id, name in Export.objects.filter(status=ExportStatus.COMPLETED, expires_at__lte=now).values_list(
            "pk", "file")[:1000]:
        if Export.objects.filter(pk=export_id, status=ExportStatus.COMPLETED, file=name).update(
                status=ExportStatus.EXPIRED, file="", file_size=0):
            if name:
                _delete_file(name)
            expired.append(export_id)
    resent, failed = [], []
    long_queued = Q(status=ExportStatus.QUEUED,
                    heartbeat__lt=now - timedelta(seconds=settings.FFV_QUEUE_STALE_SECONDS))
    dead = Q(status=ExportStatus.IN_PROGRESS, heartbeat__lt=now - timedelta(seconds=settings.FFV_JOB_LEASE_SECONDS))
    for export_id, attempts, task_id in Export.objects.filter(long_queued | dead).values_list(
            "pk", "attempts", "task_id")[:1000]:
        if attempts >= settings.FFV_JOB_MAX_ATTEMPTS:
            if Export.objects.filter(dead, pk=export_id).update(status=ExportStatus.FAILED,
                                                                msg_code="too_many_attempts", finish_date=now):
                failed.append(export_id)
            continue
        Export.objects.filter(long_queued, pk=export_id).update(heartbeat=now)
        try:
            send(export_id, task_id)
        except (BrokerError, KombuError, OSError) as exc:
            logger.warning("export %s: cannot re-send: %s", export_id, exc)
            break
        resent.append(export_id)
    if expired or resent or failed:
        logger.info("exports: %d expired, %d re-sent, %d failed", len(expired), len(resent), len(failed))
    return ExportSweep(expired=expired, resent=resent, failed=failed)


def _delete_file(name: str) -> None:
    try:
        default_storage.delete(name)
    except OSError:
        logger.warning("could not delete export file %s", name)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
