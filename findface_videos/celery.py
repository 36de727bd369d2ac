"""The Celery application: configured from Django settings (CELERY_* names)."""

import os
import resource
from pathlib import Path

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown, worker_ready

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


@worker_process_shutdown.connect
def _metrics_process_dead(pid=None, **kwargs) -> None:
    # prometheus-client's multiprocess bookkeeping for a pool process that ends (its counters stay).
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())


@worker_ready.connect
def _serve_worker_metrics(**kwargs) -> None:
    # A worker host that shares no multiprocess folder with a web process serves its pool's counters itself.
    from django.conf import settings

    if not settings.FFV_WORKER_METRICS_BIND:
        return
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    host, _, port = settings.FFV_WORKER_METRICS_BIND.rpartition(":")
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=settings.FFV_METRICS_MULTIPROC_DIR)
    start_http_server(int(port), addr=host.strip("[]") or "0.0.0.0", registry=registry)
