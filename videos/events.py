"""Writes of events: storing what the pipeline posted, and purging an archive's events with their files."""

from __future__ import annotations

import logging

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import DatabaseError, transaction

from processing.posting import PostedObject
from videos.models import EVENT_MODELS, VideoArchive

logger = logging.getLogger(__name__)


def event_store(*, archive_id: int, camera_group_id: int, posted: PostedObject) -> bool:
    """Store one posted object with its pictures; False (and logged) when storage or database failed.

    File names are derived from the event's identity and overwrite, and the row insert ignores a conflict on
    the uniqueness rule, so storing the same object twice (a replay after a crash) leaves one event.
    """
    model = EVENT_MODELS[posted.kind]
    base = f"events/{archive_id}/{posted.kind}/{posted.track_id:07d}-{posted.policy}-{posted.frame_index:07d}"
    try:
        thumbnail = default_storage.save(f"{base}-thumb.jpg", ContentFile(posted.thumbnail))
        fullframe = default_storage.save(f"{base}-full.{posted.fullframe_format}", ContentFile(posted.fullframe))
        normalized = ""
        if posted.normalized is not None:
            normalized = default_storage.save(f"{base}-norm.jpg", ContentFile(posted.normalized))
        left, top, right, bottom = posted.box
        model.objects.bulk_create(
            [
                model(
                    video_archive_id=archive_id,
                    camera_group_id=camera_group_id,
                    frame_timestamp=round(posted.timestamp, 3),
                    frame_index=posted.frame_index,
                    frame_coords_left=left,
                    frame_coords_top=top,
                    frame_coords_right=right,
                    frame_coords_bottom=bottom,
                    quality=round(posted.quality, 4),
                    confidence=round(posted.confidence, 4),
                    track_id=posted.track_id,
                    post_policy=posted.policy,
                    thumbnail=thumbnail,
                    fullframe=fullframe,
                    normalized=normalized,
                    detector_params=posted.detector_params,
                    embedding=None if posted.embedding is None else posted.embedding.astype("<f4").tobytes(),
                )
            ],
            ignore_conflicts=True,
        )
        return True
    except (OSError, DatabaseError):
        logger.exception("video archive %s: cannot store a %s event of track %s", archive_id, posted.kind,
                         posted.track_id)
        return False


def events_purge(*, archive_id: int) -> None:
    """Delete the archive's events and their pictures (before a new run, or with the archive)."""
    names: list[str] = []
    for model in EVENT_MODELS.values():
        events = model.objects.filter(video_archive_id=archive_id)
        for row in events.values_list("thumbnail", "fullframe", "normalized").iterator():
            names.extend(name for name in row if name)
        events.delete()
    for name in names:
        try:
            default_storage.delete(name)
        except OSError:
            logger.warning("video archive %s: could not delete %s", archive_id, name)


def event_counts(archive_id: int) -> dict[str, int]:
    return {kind: model.objects.filter(video_archive_id=archive_id).count() for kind, model in EVENT_MODELS.items()}


def archive_recount(archive_id: int) -> None:
    counts = event_counts(archive_id)
    with transaction.atomic():
        VideoArchive.objects.filter(pk=archive_id).update(
            face_count=counts["face"], body_count=counts["body"], car_count=counts["car"]
        )
