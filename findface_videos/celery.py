"""The Celery application: configured from Django settings (CELERY_* names)."""

import os
import resource
from pathlib import Path

from celery import Celery
from celery.signals import worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "findface_videos.settings")

app = Celery("findface_videos")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def _make_filesystem_broker_folders(sender: Celery, **kwargs) -> None:
    # The server-less file-system broker expects its folders to exist.
    options = sender.conf.broker_transport_options or {}
    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        if options.get(key):
            Path(options[key]).mkdir(parents=True, exist_ok=True)


@worker_process_init.connect
def _limit_memory(**kwargs) -> None:
    # Each pool process may allocate at most FFV_WORKER_MEMORY_LIMIT_MB of data: a decompression-bomb video then
    # ends its job FAILED with a message (MemoryError) instead of the kernel's OOM killer taking the host's workers.
    from django.conf import settings

    limit_mb = settings.FFV_WORKER_MEMORY_LIMIT_MB
    if limit_mb > 0:
        limit = limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
