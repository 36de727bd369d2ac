"""Giving PyAV a local path for a file in Django storage, whatever the storage backend."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.core.files.storage import default_storage


@contextmanager
def local_path(name: str) -> Iterator[str]:
    """The file's own path on a file-system storage; otherwise a temporary local copy, removed afterwards."""
    try:
        path = default_storage.path(name)
    except NotImplementedError:
        path = None
    if path is not None:
        yield path
        return
    with default_storage.open(name, "rb") as source, tempfile.NamedTemporaryFile(
        dir=settings.FILE_UPLOAD_TEMP_DIR, prefix="source-"
    ) as copy:
        shutil.copyfileobj(source, copy, length=1024 * 1024)
        copy.flush()
        yield copy.name
