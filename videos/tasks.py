"""Celery tasks: thin wrappers that take ids and call services."""

from __future__ import annotations

from celery import shared_task

from videos import jobs


@shared_task(name="videos.process_archive", bind=True, acks_late=True, reject_on_worker_lost=True)
def process_archive(self, archive_id: int) -> None:
    jobs.run_job(archive_id=archive_id, task_id=self.request.id, worker=self.request.hostname or "")
