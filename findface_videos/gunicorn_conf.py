"""gunicorn's settings for `./dev serve` and the Docker image: `gunicorn -c findface_videos/gunicorn_conf.py`.

Each worker process is an event loop with a thread pool (findface_videos.serving), so an idle or slow client holds
a socket, not a worker. Every value comes from the environment and fails loudly when it is nonsense; the
FFV_WEB_THREADS and FFV_WEB_*_TIMEOUT / _BUFFER settings are read by findface_videos.serving itself.
"""

import os

from findface_videos.env import env_int, env_str
from findface_videos.serving import web_settings

wsgi_app = "findface_videos.asgi:application"
worker_class = "findface_videos.serving.Worker"
bind = [env_str("FFV_BIND", "127.0.0.1:8000")]
workers = env_int("FFV_WEB_WORKERS", 2, minimum=1)
# Seconds a kept-alive connection may stay silent after an answer (uvicorn's timeout_keep_alive).
keepalive = env_int("FFV_WEB_KEEPALIVE", 5, minimum=1)
# The arbiter's heartbeat: the event loop answers it, requests run in threads, so a long upload does not count.
timeout = 30
graceful_timeout = 30
accesslog = "-"
# gunicorn >= 25 opens a control socket at $HOME/.gunicorn/gunicorn.ctl, one path for every server of the user (the
# tests start several): nothing here uses it.
control_socket_disable = True

web_settings()  # a bad FFV_WEB_* value stops the arbiter at start-up, not each worker at its first request


def child_exit(server, worker) -> None:
    """prometheus-client's multiprocess bookkeeping: a dead worker's live gauges go (its counters stay).

    The multiprocess folder itself is wiped by whoever starts the processes that share it (./dev serve,
    docker-compose's `migrate`), not here: a web server that restarts alone must not delete a worker's files.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
