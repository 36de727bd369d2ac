"""Reads: the querysets the API lists from."""

from __future__ import annotations

from django.db.models import ExpressionWrapper, F, QuerySet, Sum, TextField

from videos.models import Camera, CameraGroup, RowCount, VideoArchive
from videos.row_counts import COUNTED_TABLES


def archive_list() -> QuerySet[VideoArchive]:
    # The job's checkpoint is never shown (and is JSON to decode for every row).
    return VideoArchive.objects.defer("job_checkpoint")


# Columns of an archive the API never shows: a page of up to 1,000 rows skips reading and converting them.
# (Not job_purge_pending: health_status reads it for a queued archive, and a deferred column is a query per row.)
_ARCHIVE_HIDDEN = ("save_to", "modified_date", "stop_requested", "job_task_id", "job_claim",
                   "job_worker", "job_heartbeat", "job_checkpoint", "queued_date", "processing_finish_date")


# The stored stream_settings as the database's JSON text: a page's archives mostly share a few settings, and the
# serializer completes each distinct text once (StreamSettingsField) instead of decoding and completing every row.
STREAM_SETTINGS_TEXT = "stream_settings_text"


def archive_page_list() -> QuerySet[VideoArchive]:
    """The archives of a list page: only what the API shows (the rows are read, never saved)."""
    return VideoArchive.objects.defer(*_ARCHIVE_HIDDEN, "stream_settings").annotate(
        # The column itself, not a cast: both drivers already hand jsonb over as text, and a cast in SQL would
        # detoast every matching row's settings before a sort (measured: 4x the buffers for `save_to`).
        **{STREAM_SETTINGS_TEXT: ExpressionWrapper(F("stream_settings"), output_field=TextField())})


def camera_group_list() -> QuerySet[CameraGroup]:
    return CameraGroup.objects.all()


def camera_list() -> QuerySet[Camera]:
    return Camera.objects.all()


def row_count(queryset: QuerySet) -> int:
    """The exact number of rows `queryset` selects: for a whole counted table, the sum of its counter rows
    (videos.row_counts, kept by triggers) instead of a scan; otherwise `COUNT(*)` with the filters."""
    query = queryset.query
    table = queryset.model._meta.db_table
    if table in COUNTED_TABLES and not query.where and not query.distinct and not query.combinator and \
            query.low_mark == 0 and query.high_mark is None:
        total = RowCount.objects.filter(table_name=table).aggregate(total=Sum("rows"))["total"]
        return int(total or 0)
    return queryset.count()
