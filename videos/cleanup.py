"""Housekeeping run by the periodic sweeper (videos.tasks.sweep_jobs): upload temporaries left behind by a killed
web worker, source copies left behind by a killed Celery worker, and `/detect/` results past their age.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from videos.models import FaceDetection

logger = logging.getLogger(__name__)

# The temporaries an upload spools to, by name: ours (services.archive_upload_source, `upload-` + tempfile's 8
# random characters), Django's multipart parts (`tmp` + 8 + `.upload` + the client's extension) and local copies
# of a stored source (videos.storage). Nothing else in the folder (the system's /tmp by default) is touched.
_UPLOAD_TEMP_NAME = re.compile(r"upload-[a-z0-9_]{8}|tmp[a-z0-9_]{8}\.upload(\.[^/]{0,64})?")
# A worker's copies of a source: a local copy of a stored source (videos.storage, in the upload temp folder) and
# a downloaded url source (processing.fetch, in FFV_FETCH_DIR). A job reads its copy, without writing it, for as
# long as it runs: only one older than the longest job (and its redelivery margin) is a killed worker's.
# An export's temporary file (videos.exports) is a worker's copy too.
_WORKER_COPY_NAME = re.compile(r"source-[a-z0-9_]{8}|ffv-fetch-[a-z0-9_]{8}\.video|export-[a-z0-9_]{8}")
# The Redis visibility timeout is the longest job + 1 h (findface_videos.celery): no attempt outlives that.
_WORKER_COPY_MARGIN = 3600

_last_web_sweep = 0.0
_web_sweep_lock = threading.Lock()


def upload_temp_dir() -> Path:
    return Path(settings.FILE_UPLOAD_TEMP_DIR or tempfile.gettempdir())


def upload_temps_sweep() -> list[str]:
    """Delete upload temporaries not written to for FFV_UPLOAD_TEMP_MAX_AGE seconds; returns their names.

    An upload in progress writes its file at every chunk, so its modification time stays fresh; one whose process
    was killed (OOM, a worker timeout, kill -9) never closes and deletes its file, and this is what removes it.
    """
    return _sweep(upload_temp_dir(), _UPLOAD_TEMP_NAME, settings.FFV_UPLOAD_TEMP_MAX_AGE, "upload temporaries")


def worker_copies_sweep() -> list[str]:
    """Delete the source copies of killed workers (local copies of stored sources, downloaded url sources) on this
    host; returns their names. Run by the sweeper and by each worker as it starts (its host's own folders)."""
    age = settings.FFV_LONGEST_JOB_SECONDS + _WORKER_COPY_MARGIN
    folders = dict.fromkeys([upload_temp_dir(), Path(settings.FFV_FETCH_DIR or tempfile.gettempdir())])
    return [name for folder in folders for name in _sweep(folder, _WORKER_COPY_NAME, age, "source copies")]


def _sweep(folder: Path, pattern: re.Pattern[str], max_age: float, what: str) -> list[str]:
    """Delete the plain files of `folder` named by `pattern` and not modified for `max_age` seconds."""
    cutoff = time.time() - max_age
    removed: list[str] = []
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        logger.warning("%s sweep: cannot list %s: %s", what, folder, exc)
        return removed
    for entry in entries:
        if not pattern.fullmatch(entry.name):
            continue
        try:
            if not entry.is_file(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                continue
            os.unlink(entry.path)
        except OSError:
            continue  # gone meanwhile, or another user's
        removed.append(entry.name)
    if removed:
        logger.warning("removed %d stale %s from %s: %s", len(removed), what, folder, ", ".join(sorted(removed)))
    return removed


def upload_temps_sweep_now_and_then() -> None:
    """The sweep from a web process, at most once a minute: where the web tier runs on other hosts or containers
    than the sweeper (docker-compose), its temporary folder is only seen from here."""
    global _last_web_sweep
    with _web_sweep_lock:
        if time.monotonic() - _last_web_sweep < 60 and _last_web_sweep:
            return
        _last_web_sweep = time.monotonic()
    upload_temps_sweep()


def detections_expire() -> int:
    """Delete `/detect/` results older than FFV_DETECTION_MAX_AGE seconds; returns how many.

    A detection is a search probe (`looks_like=detection:<id>`); its row holds the box and the embedding, no files.
    """
    cutoff = timezone.now() - timedelta(seconds=settings.FFV_DETECTION_MAX_AGE)
    deleted, _by_model = FaceDetection.objects.filter(created_date__lt=cutoff).delete()
    return deleted
