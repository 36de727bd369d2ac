"""Celery tasks: thin wrappers that take ids and call services."""

from __future__ import annotations

import dataclasses
import logging
import os

from celery import shared_task
from celery.signals import worker_ready
from django.db import InterfaceError, OperationalError

from videos import cleanup, clusters, exports, jobs, matching, retention
from videos.webhooks import delivery as webhook_delivery

logger = logging.getLogger(__name__)


# Sent by name from videos.broker (no module imports this one). The job's state and its attempts live on the
# archive row (videos.jobs); a redelivered message finds nothing to claim.
@shared_task(name="videos.process_archive", bind=True, acks_late=True, reject_on_worker_lost=True)
def process_archive(self, archive_id: int) -> None:
    # The pool process's pid too: which process of a host runs the job, for operators (admin) and for kill -9.
    jobs.run_job(archive_id=archive_id, task_id=self.request.id,
                 worker=f"{self.request.hostname or ''} pid {os.getpid()}")


@shared_task(name="videos.process_chunk", bind=True, acks_late=True, reject_on_worker_lost=True)
def process_chunk(self, chunk_id: int) -> None:
    """One time chunk of a long archive (videos.chunks), claimed like a job."""
    jobs.run_chunk(chunk_id=chunk_id, task_id=self.request.id,
                   worker=f"{self.request.hostname or ''} pid {os.getpid()}")


@shared_task(name="videos.sweep_jobs", acks_late=False, ignore_result=True)
def sweep_jobs() -> list[int]:
    """Periodic (celery beat): re-send jobs whose worker died or whose message was lost."""
    resent = jobs.jobs_sweep()
    try:
        clusters.clustering_sweep()  # and clustering that never ran (its message lost)
    except (OperationalError, InterfaceError):
        logger.exception("clustering sweep failed")
    # Housekeeping: upload temporaries of killed web workers (on this host), expired /detect/ results.
    try:
        cleanup.upload_temps_sweep()
        cleanup.worker_copies_sweep()
    except Exception:  # housekeeping never stops the sweeper
        logger.exception("temporary files sweep failed")
    try:
        matching.matching_sweep()  # face events still waiting for watch list matching
    except (OperationalError, InterfaceError):
        logger.exception("matching sweep failed")
    try:
        cleanup.detections_expire()
    except (OperationalError, InterfaceError):
        logger.exception("detection expiry failed")
    try:
        exports.exports_sweep()  # expired export files; export builds lost or abandoned
    except Exception:
        logger.exception("export sweep failed")
    return resent


@shared_task(name="videos.build_export", bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def build_export(self, export_id: int) -> None:
    """Build one export (videos.exports); a redelivered message finds nothing to claim."""
    exports.export_build(export_id=export_id)


@shared_task(name="videos.apply_retention", acks_late=False, ignore_result=True)
def apply_retention() -> dict:
    """Periodic (celery beat, FFV_RETENTION_INTERVAL): delete events and full frames past their retention."""
    return dataclasses.asdict(retention.retention_apply())


@shared_task(name="videos.cluster_archive", acks_late=True, ignore_result=True,
             autoretry_for=(OperationalError, InterfaceError), retry_backoff=2, retry_backoff_max=60, max_retries=5)
def cluster_archive(archive_id: int) -> None:
    """Cluster a finished archive's events (idempotent); sent by videos.jobs.job_finish."""
    if clusters.cluster_archive(archive_id=archive_id) is not None:
        matching.enqueue_matching()  # its face events against the watch lists


@shared_task(name="videos.match_faces", acks_late=True, ignore_result=True,
             autoretry_for=(OperationalError, InterfaceError), retry_backoff=2, retry_backoff_max=60, max_retries=5)
def match_faces(card_ids: list[int] | None = None, list_ids: list[int] | None = None) -> None:
    """Match pending face events against the watch lists' cards (idempotent); sent by videos.matching."""
    matching.match_faces(card_ids=card_ids or (), list_ids=list_ids or ())


# Sent by name from videos.broker on the control queue, once the outbox row is committed (videos.webhooks.emit).
# The delivery's claim lives on its row: a duplicate or redelivered message sends nothing twice at once.
@shared_task(name="videos.deliver_webhook", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def deliver_webhook(delivery_id: int) -> None:
    """One attempt of a webhook delivery, if it is its turn (videos.webhooks.delivery)."""
    webhook_delivery.delivery_attempt(delivery_id=delivery_id)


@shared_task(name="videos.sweep_webhooks", acks_late=False, ignore_result=True)
def sweep_webhooks() -> list[int]:
    """Periodic (celery beat): webhook deliveries that are due (retries, dead claims, lost messages)."""
    return webhook_delivery.deliveries_sweep()


@worker_ready.connect
def _sweep_when_a_worker_starts(sender=None, **kwargs) -> None:
    # A worker that starts after a crash picks the orphaned jobs up without waiting for the next beat.
    try:
        jobs.jobs_sweep()
    except Exception:
        logger.exception("job sweep at worker start failed")
    try:
        cleanup.worker_copies_sweep()  # this host's folders, which the beat's host may not see
    except Exception:
        logger.exception("source copies sweep at worker start failed")
    try:
        webhook_delivery.deliveries_sweep()
    except Exception:
        logger.exception("webhook sweep at worker start failed")
