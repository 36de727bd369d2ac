"""Prometheus metrics: what the fleet did (counters every web and worker process adds to) and what it is doing
now (read from the database and the broker at scrape time).

Counters and histograms follow prometheus-client's documented multiprocess mode: with PROMETHEUS_MULTIPROC_DIR
in the environment of the processes that share it (gunicorn workers, Celery pool processes), each process writes
its values into files there and `/metrics` adds them up, so whichever process answers the scrape shows the whole
host. Files of processes that ended are kept (a counter must not go back) and the folder is wiped when the
processes sharing it start. Without that variable a process exports only its own values.

States (jobs by state, queue depth, processing fps) are gauges computed when scraped, never kept in a process:
they are then true however many processes there are, and whatever died.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count
from django.urls import ResolverMatch
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from processing.pipeline import Progress
from videos import broker
from videos.models import JobState, VideoArchive

logger = logging.getLogger(__name__)

FRAMES = Counter("ffv_video_frames_processed", "Video frames processed by workers (decoded and counted).")
SECONDS = Counter("ffv_video_seconds_processed", "Seconds of video processed by workers.")
ATTEMPTS = Counter("ffv_job_attempts", "Job attempts workers started: first, or resume (after a worker died).",
                   ["kind"])
FINISHED = Counter("ffv_jobs_finished", "Jobs that ended, by state (completed, failed, interrupted).", ["state"])
FAILURES = Counter("ffv_job_failures", "Jobs that ended failed (MISCONFIGURED), by the code of their msg.", ["code"])
REQUESTS = Histogram(
    "ffv_http_request_duration_seconds",
    "Time from request to response, by method, URL pattern (route) and status code.",
    ["method", "route", "status"],
    # Up to uploads of large files.
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)

_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
# Job message codes are a fixed set (processing.errors, videos.jobs); anything else is not a label value.
_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")


# --- counters written by workers


class JobMeter:
    """Adds one attempt's work to the frame and second counters as its progress reports come in.

    A resumed attempt starts from its checkpoint's counters: the frames and seconds of video it replays up to
    there were counted by the attempt before (or lost with it), so they are not counted again.
    """

    def __init__(self, checkpoint: dict[str, Any] | None = None) -> None:
        restored = (checkpoint or {}).get("progress") or {}
        self.frames = int(restored.get("frames_processed", 0) or 0)
        self.seconds = float(restored.get("processed_duration", 0.0) or 0.0)

    def observe(self, progress: Progress) -> None:
        if progress.frames_processed > self.frames:
            FRAMES.inc(progress.frames_processed - self.frames)
            self.frames = progress.frames_processed
        if progress.processed_duration > self.seconds:
            SECONDS.inc(progress.processed_duration - self.seconds)
            self.seconds = progress.processed_duration


def attempt_started(*, resumed: bool) -> None:
    ATTEMPTS.labels(kind="resume" if resumed else "first").inc()


def job_ended(state: JobState, code: str = "") -> None:
    FINISHED.labels(state=state.value).inc()
    if state == JobState.FAILED:
        FAILURES.labels(code=code if _CODE.fullmatch(code or "") else "other").inc()


# --- request latency (videos.middleware)


def route_label(path: str, match: ResolverMatch | None) -> str:
    """The URL pattern a request matched (`videos/{pk}/process/`), never its path: a bounded set of values."""
    if match is None:
        return "static" if path.startswith("/" + settings.STATIC_URL.lstrip("/")) else "unmatched"
    return readable_route(match.route)


_ROUTES: dict[str, str] = {}


def readable_route(route: str) -> str:
    """`^videos/(?P<pk>[^/.]+)/$` and `admin/<path:object_id>/` as `videos/{pk}/` and `admin/{object_id}/`."""
    if route not in _ROUTES:
        readable = route.replace("^", "").replace("$", "").replace("\\", "")
        readable = re.sub(r"\(\?P<(\w+)>[^()]*\)", r"{\1}", readable)
        readable = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", readable)
        _ROUTES[route] = readable or "/"
    return _ROUTES[route]


def request_observed(method: str, path: str, match: ResolverMatch | None, status: int, seconds: float) -> None:
    REQUESTS.labels(method=method if method in _METHODS else "other", route=route_label(path, match),
                    status=str(status)).observe(seconds)


# --- the scrape


class LiveCollector:
    """Gauges read when scraped: jobs by state, processing fps of running jobs, queue depth; and whether the
    database and the broker could be read (`ffv_metrics_source_up`), so a scrape never fails for them."""

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("ffv_metrics_source_up", "Whether this scrape could read the source (1) or not (0).",
                               labels=["source"])
        try:
            yield from self._jobs()
            up.add_metric(["database"], 1)
        except DatabaseError:
            logger.exception("metrics: the database cannot be read")
            up.add_metric(["database"], 0)
        try:
            depths = broker.queue_depths([settings.FFV_PROCESSING_QUEUE, settings.FFV_CONTROL_QUEUE])
        except Exception:  # noqa: BLE001 - any broker failure is a 0 here, never a failed scrape
            logger.warning("metrics: the broker cannot be read", exc_info=True)
            up.add_metric(["broker"], 0)
        else:
            if depths is not None:
                queue = GaugeMetricFamily("ffv_queue_depth", "Messages waiting in the broker's queue.",
                                          labels=["queue"])
                for name, depth in depths.items():
                    queue.add_metric([name], depth)
                yield queue
                up.add_metric(["broker"], 1)
        yield up

    def _jobs(self) -> Iterator[Metric]:
        counts = dict(VideoArchive.objects.order_by().values_list("job_state").annotate(n=Count("pk")))
        jobs = GaugeMetricFamily("ffv_jobs", "Video archives by job state.", labels=["state"])
        for state in JobState:
            jobs.add_metric([state.value], counts.get(state.value, 0))
        fps = 0.0
        for statistic in VideoArchive.objects.filter(job_state=JobState.IN_PROGRESS).values_list("statistic",
                                                                                                flat=True):
            value = (statistic or {}).get("processing_fps")
            if isinstance(value, (int, float)):
                fps += value
        yield jobs
        yield GaugeMetricFamily("ffv_processing_fps", "Frames per second of all running jobs together, as their "
                                "workers last reported.", value=fps)


class _ThisProcess:
    """This process's own counters, where no multiprocess folder adds up all of them."""

    def collect(self) -> Iterator[Metric]:
        return REGISTRY.collect()


def scrape_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    if settings.FFV_METRICS_MULTIPROC_DIR:
        MultiProcessCollector(registry, path=settings.FFV_METRICS_MULTIPROC_DIR)
    else:
        registry.register(_ThisProcess())
    registry.register(LiveCollector())
    return registry
