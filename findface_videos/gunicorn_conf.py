"""Gunicorn hooks for prometheus-client's multiprocess mode: `gunicorn -c python:findface_videos.gunicorn_conf`.

Only the bookkeeping lives here; every other option stays on the command line. The multiprocess folder itself is
wiped by whoever starts the processes that share it (./dev serve, docker-compose's `migrate`), not here: a web
server that restarts alone must not delete the files a worker on the same folder is writing.
"""

import os


def child_exit(server, worker) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
