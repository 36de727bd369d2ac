"""Writes on video archives, camera groups and cameras. Views call these; they never touch the ORM directly."""

from __future__ import annotations

import logging
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from django.conf import settings
from django.core.cache import cache
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils.translation import gettext as _

from processing.media import Crop, MediaError, MediaInfo, grab_frame, probe, render_jpeg
from processing.stream_settings import current_version, default_stream_settings
from videos import broker
from videos.clusters import uncluster_archive
from videos.errors import BadParam, Conflict, NotFound, PayloadTooLarge, UnsupportedMediaType
from videos.events import events_purge
from videos.jobs import job_queue
from videos.models import BUSY_STATES, RUNNING_STATES, CameraGroup, JobState, VideoArchive, WatchList, Webhook
from videos.storage import StorageUnavailable, media_source, streams_uploads
from videos.webhooks import notify_archive_status

logger = logging.getLogger(__name__)

UPLOAD_CONTENT_TYPES = ("application/octet-stream", "multipart/form-data")
# File extensions by the demuxer PyAV recognised, so stored names say what they hold.
EXTENSIONS = {"mov": "mp4", "mp4": "mp4", "avi": "avi", "matroska": "mkv", "flv": "flv", "mpegts": "ts",
              "mpeg": "mpg", "asf": "wmv", "ogg": "ogv", "h264": "h264", "hevc": "hevc", "mjpeg": "mjpeg"}


def _get_archive(archive_id: int, *, lock: bool = False) -> VideoArchive:
    queryset = VideoArchive.objects.select_for_update() if lock else VideoArchive.objects
    try:
        return queryset.get(pk=archive_id)
    except VideoArchive.DoesNotExist:
        raise NotFound(_("Video archive %(id)s not found.") % {"id": archive_id}) from None


def archive_create(*, data: dict[str, Any]) -> VideoArchive:
    data = dict(data)
    data.setdefault("stream_settings", default_stream_settings())
    data["stream_settings_version"] = current_version()
    return VideoArchive.objects.create(**data)


# What a job runs from: these may not change while one is queued or running, or its attempts (a resume after a
# worker crash) would mix two configurations. The source file is guarded by upload and delete the same way.
JOB_INPUT_FIELDS = ("url", "stream_settings", "camera_group")


def archive_update(*, archive: VideoArchive, data: dict[str, Any]) -> VideoArchive:
    """Write the fields given; 409 when it would change what a queued or running job runs from."""
    if "stream_settings" in data:
        # Settings written now are complete (every key validated or defaulted): they are of the current version.
        data = {**data, "stream_settings_version": current_version()}
    with transaction.atomic():
        current = _get_archive(archive.pk, lock=True)
        changed = [name for name in JOB_INPUT_FIELDS if name in data and data[name] != getattr(current, name)]
        if changed and current.job_state in BUSY_STATES:
            raise Conflict(
                _("The video archive is queued or being processed: %(fields)s cannot change until its job ends "
                  "(stop it first).") % {"fields": ", ".join(changed)},
                param=changed[0],
            )
        for key, value in data.items():
            setattr(archive, key, value)
        archive.save(update_fields=[*data.keys(), "modified_date"])
    return archive


def _forget_source(name: str, archive_id: int) -> None:
    """Remove a stored source file and its cached screenshots, after the row no longer points at it."""
    if name:
        try:
            default_storage.delete(name)
        except OSError:
            logger.exception("could not delete %s of video archive %s", name, archive_id)
    cache.delete(_screenshot_version_key(archive_id))


def archive_delete(*, archive_id: int) -> None:
    with transaction.atomic():
        # Its events leave their clusters before they go. The clusters lock comes before the archive's row lock,
        # the order clustering takes them in (videos.clusters), so the two cannot deadlock.
        uncluster_archive(archive_id=archive_id)
        archive = _get_archive(archive_id, lock=True)
        name = archive.source_file.name
        events_purge(archive_id=archive_id)
        archive.delete()
        # A running worker notices the row is gone at its next progress write and stops.
        transaction.on_commit(lambda: _forget_source(name, archive_id))


def archive_delete_source(*, archive_id: int) -> VideoArchive:
    with transaction.atomic():
        archive = _get_archive(archive_id, lock=True)
        if archive.job_state in BUSY_STATES:
            raise Conflict(_("The video is being processed; stop it first."))
        name = archive.source_file.name
        if not name:
            raise NotFound(_("The video archive has no source file."))
        archive.source_file = ""
        archive.file_size = 0
        archive.source_len = None
        archive.save(update_fields=["source_file", "file_size", "source_len", "modified_date"])
        transaction.on_commit(lambda: _forget_source(name, archive_id))
    return archive


def check_upload_headers(*, content_type: str, content_length: int | None) -> None:
    """Refuse an upload before reading a byte of it: wrong type (415), no or too large length (400/413)."""
    media_type = content_type.split(";")[0].strip().lower()
    if not (media_type.startswith("video/") or media_type in UPLOAD_CONTENT_TYPES):
        raise UnsupportedMediaType(
            _("Upload the video as the raw body with Content-Type video/* or application/octet-stream, "
              "or as multipart/form-data with a 'file' field; got %(type)r.") % {"type": media_type or "none"}
        )
    if content_length is None:
        raise BadParam(_("The Content-Length header is required."), param="Content-Length")
    if content_length > settings.FFV_MAX_UPLOAD_SIZE:
        raise PayloadTooLarge(
            _("The file is %(size)d bytes; the limit is %(limit)d bytes.")
            % {"size": content_length, "limit": settings.FFV_MAX_UPLOAD_SIZE}
        )
    if content_length == 0:
        raise BadParam(_("The file is empty."), param="source_file")


def check_upload_target(*, archive_id: int) -> None:
    """Refuse an upload to an unknown archive (404) or one being processed (409) before its body is read."""
    archive = _get_archive(archive_id)
    if archive.job_state in BUSY_STATES:
        raise Conflict(_("The video is being processed; stop it before uploading a new source."))


def archive_upload_source(*, archive_id: int, reader: BinaryIO, size: int) -> VideoArchive:
    """Stream `size` bytes from `reader` to a temporary file, check it is a video, then store it.

    The archive row changes only once the file is complete and readable, so a failed or truncated upload
    leaves the archive and its previous source as they were.
    """
    if size > settings.FFV_MAX_UPLOAD_SIZE:
        raise PayloadTooLarge(_("The file is larger than the limit of %(limit)d bytes.")
                              % {"limit": settings.FFV_MAX_UPLOAD_SIZE})
    check_upload_target(archive_id=archive_id)
    if streams_uploads():
        stored_name, received, info = _upload_to_bucket(archive_id, reader, size)
    else:
        stored_name, received, info = _upload_to_files(archive_id, reader, size)
    try:
        with transaction.atomic():
            archive = _get_archive(archive_id, lock=True)
            if archive.job_state in BUSY_STATES:
                raise Conflict(_("The video is being processed; stop it before uploading a new source."))
            old_name = archive.source_file.name
            archive.source_file.name = stored_name
            archive.file_size = received
            archive.source_len = round(info.duration, 3) if info.duration is not None else None
            archive.save(update_fields=["source_file", "file_size", "source_len", "modified_date"])
            transaction.on_commit(lambda: _forget_source(old_name, archive_id))
    except BaseException:
        default_storage.delete(stored_name)
        raise
    return archive


def source_check(*, source: str | BinaryIO, size: int) -> MediaInfo:
    """What archive_upload_source refuses, for a file already received (the admin's upload form checks it before
    the archive is written): over the size limit (413), empty (400), not a readable video (415)."""
    if size > settings.FFV_MAX_UPLOAD_SIZE:
        raise PayloadTooLarge(_("The file is larger than the limit of %(limit)d bytes.")
                              % {"limit": settings.FFV_MAX_UPLOAD_SIZE})
    _check_received(size, size)
    return _probe(source)


def _check_received(received: int, size: int) -> None:
    if received == 0:
        raise BadParam(_("The file is empty."), param="source_file")
    if received < size:
        raise BadParam(
            _("The upload was truncated: %(received)d of %(size)d bytes arrived.")
            % {"received": received, "size": size},
            param="source_file",
        )


def _probe(source: str | BinaryIO) -> MediaInfo:
    try:
        return probe(source, max_pixels=settings.FFV_MAX_FRAME_PIXELS)
    except MediaError as exc:
        raise UnsupportedMediaType(_("The file is not a supported video: %(reason)s") % {"reason": exc}) from exc


def _upload_to_bucket(archive_id: int, reader: BinaryIO, size: int) -> tuple[str, int, MediaInfo]:
    """Stream the body into the bucket as a multipart upload (one part in memory), then probe it there.

    No local disk is involved. The object's name has no format extension: the format is known only once the
    whole file is in the bucket, and FFmpeg reads it from the content anyway.
    """
    name = f"videos/{archive_id}/source-{uuid.uuid4().hex}"
    with default_storage.multipart_writer(name) as writer:
        received = _copy_stream(reader, writer, size)
        _check_received(received, size)  # raised in the block: the multipart upload is aborted
        writer.complete()
    try:
        with media_source(name) as source:
            info = _probe(source)
    except BaseException:
        default_storage.delete(name)
        raise
    return name, received, info


def _upload_to_files(archive_id: int, reader: BinaryIO, size: int) -> tuple[str, int, MediaInfo]:
    """Stream the body to a temporary file, probe it, then move it into the storage under a name with its format."""
    with tempfile.NamedTemporaryFile(dir=settings.FILE_UPLOAD_TEMP_DIR, prefix="upload-") as temp:
        received = _copy_stream(reader, temp, size)
        _check_received(received, size)
        temp.flush()
        info = _probe(temp.name)
        extension = EXTENSIONS.get(info.format_name.split(",")[0], "video")
        temp.seek(0)
        stored_name = default_storage.save(f"videos/{archive_id}/source-{uuid.uuid4().hex}.{extension}", File(temp))
    return stored_name, received, info


def _copy_stream(reader: BinaryIO, target: BinaryIO, size: int) -> int:
    received = 0
    chunk_size = settings.FFV_UPLOAD_CHUNK_SIZE
    while received < size:
        try:
            chunk = reader.read(min(chunk_size, size - received))
        except OSError:
            break  # the client went away; reported as a truncated upload
        if not chunk:
            break
        received += len(chunk)
        target.write(chunk)
    return received


# --- processing


def archive_process(*, archive_id: int, send: Callable[[int, str], None] = broker.send_processing) -> VideoArchive:
    """Queue a new job for the archive (videos.jobs.job_queue); 503 when the broker cannot take it."""
    job_queue(archive_id=archive_id, send=send)
    return _get_archive(archive_id)


def archive_stop(*, archive_id: int) -> VideoArchive:
    """A queued job is cancelled at once; a running one is flagged and its worker stops within a second or so."""
    with transaction.atomic():
        archive = _get_archive(archive_id, lock=True)
        if archive.job_state == JobState.QUEUED:
            archive.job_state = JobState.INTERRUPTED
            archive.save(update_fields=["job_state", "modified_date"])
            notify_archive_status(archive.pk, JobState.INTERRUPTED)
        elif archive.job_state in RUNNING_STATES:
            archive.stop_requested = True
            archive.save(update_fields=["stop_requested", "modified_date"])
    return archive


# --- screenshots


@dataclass(frozen=True)
class ScreenshotParams:
    width: int | None = None
    height: int | None = None
    quality: int = 95
    rot: str = ""


def _screenshot_version_key(archive_id: int) -> str:
    return f"screenshot-version:{archive_id}"


def archive_screenshot(*, archive_id: int, params: ScreenshotParams, fresh: bool) -> bytes:
    """A JPEG frame of the source; cached per source file and parameters, `fresh` renders it anew."""
    archive = _get_archive(archive_id)
    if not archive.source_file:
        raise NotFound(_("The video archive has no source file to take a screenshot from."))
    version = cache.get_or_set(_screenshot_version_key(archive_id), lambda: uuid.uuid4().hex, timeout=None)
    key = f"screenshot:{archive_id}:{version}:{archive.source_file.name}:{params.width}:{params.height}:" \
          f"{params.quality}:{params.rot}"
    if not fresh:
        cached = cache.get(key)
        if cached is not None:
            return cached
    try:
        with media_source(archive.source_file.name) as source:
            frame = grab_frame(source)
    except FileNotFoundError:
        raise NotFound(_("The archive's source file is no longer in storage: upload it again.")) from None
    except StorageUnavailable:
        raise  # 503 (videos.errors)
    except (MediaError, OSError) as exc:
        raise Conflict(_("A frame cannot be read from the source: %(reason)s") % {"reason": exc}) from exc
    try:
        jpeg, _w, _h = render_jpeg(
            frame, crop=Crop.parse(params.rot), width=params.width, height=params.height, quality=params.quality
        )
    except ValueError as exc:
        raise BadParam(str(exc), param="rot") from exc
    cache.set(key, jpeg)
    return jpeg


@transaction.atomic
def camera_group_delete(*, group: CameraGroup) -> None:
    """Delete a camera group. Refused (409) while a watch list or a webhook names it: without it, one naming only
    this group would name none, which means every group, and would match and send the events of all of them."""
    if (WatchList.camera_groups.through.objects.filter(cameragroup_id=group.pk).exists()
            or Webhook.camera_groups.through.objects.filter(cameragroup_id=group.pk).exists()):
        raise Conflict(_("The camera group is named by a watch list or a webhook; take it out of them first."))
    group.delete()
