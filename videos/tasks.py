"""Celery tasks: thin wrappers that take ids and call services."""

from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import worker_ready

from videos import jobs
from videos.services import enqueue_processing

logger = logging.getLogger(__name__)


@shared_task(name="videos.process_archive", bind=True, acks_late=True, reject_on_worker_lost=True)
def process_archive(self, archive_id: int) -> None:
    jobs.run_job(archive_id=archive_id, task_id=self.request.id, worker=self.request.hostname or "")


@shared_task(name="videos.sweep_jobs", acks_late=False, ignore_result=True)
def sweep_jobs() -> list[int]:
    """Periodic (celery beat): re-send jobs whose worker died or whose message was lost."""
    return jobs.jobs_sweep(enqueue=enqueue_processing)


@worker_ready.connect
def _sweep_when_a_worker_starts(sender=None, **kwargs) -> None:
    # A worker that starts after a crash picks the orphaned jobs up without waiting for the next beat.
    try:
        jobs.jobs_sweep(enqueue=enqueue_processing)
    except Exception:
        logger.exception("job sweep at worker start failed")
