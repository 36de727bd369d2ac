"""The worker's side of a processing job: claim it, report progress, finish it. Called by videos.tasks.

Every write is a conditional UPDATE on (archive id, task id, running state), so a stale or duplicate delivery
of the task can neither start a second run nor overwrite the state of the run that owns the job.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from processing.media import MediaError
from processing.pipeline import PipelineSettings, Progress, run_pipeline
from videos.health import empty_statistic
from videos.models import RUNNING_STATES, JobState, VideoArchive
from videos.storage import local_path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClaimedJob:
    archive_id: int
    task_id: str
    source_name: str
    url: str | None
    stream_settings: dict[str, Any]
    checkpoint: dict[str, Any] = field(default_factory=dict)
    resumed: bool = False


def _owned(archive_id: int, task_id: str):
    return VideoArchive.objects.filter(pk=archive_id, job_task_id=task_id, job_state__in=RUNNING_STATES)


def job_claim(*, archive_id: int, task_id: str, worker: str) -> ClaimedJob | None:
    """Take a queued job, or one whose worker stopped sending heartbeats (it died); None if not ours to run."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.FFV_JOB_LEASE_SECONDS)
    claimable = Q(job_state=JobState.QUEUED) | Q(job_state__in=RUNNING_STATES, job_heartbeat__lt=stale)
    claimed = VideoArchive.objects.filter(claimable, pk=archive_id, job_task_id=task_id).update(
        job_state=JobState.STARTING,
        job_starts=F("job_starts") + 1,
        job_worker=worker,
        job_heartbeat=now,
        processing_start_date=now,
        processing_finish_date=None,
        job_msg="",
    )
    if not claimed:
        return None
    archive = VideoArchive.objects.get(pk=archive_id)
    resumed = archive.job_starts > 1
    if not resumed:
        # A new job: the results of an earlier run of this archive go first.
        VideoArchive.objects.filter(pk=archive_id).update(
            statistic=empty_statistic(), face_count=0, body_count=0, car_count=0, job_checkpoint={}
        )
        archive.job_checkpoint = {}
    return ClaimedJob(
        archive_id=archive_id,
        task_id=task_id,
        source_name=archive.source_file.name,
        url=archive.url,
        stream_settings=archive.stream_settings,
        checkpoint=archive.job_checkpoint or {},
        resumed=resumed,
    )


def job_report(job: ClaimedJob, progress: Progress) -> bool:
    """Write statistic and heartbeat; True while the job should go on (not stopped, not deleted, still ours)."""
    statistic = {**empty_statistic(), **progress.as_statistic()}
    updated = _owned(job.archive_id, job.task_id).update(
        job_state=JobState.IN_PROGRESS,
        job_heartbeat=timezone.now(),
        statistic=statistic,
        source_len=F("source_len") if progress.source_len is None else round(progress.source_len, 3),
        job_checkpoint={"last_stream_timestamp": progress.last_stream_timestamp,
                        "frames_processed": progress.frames_processed},
    )
    if not updated:
        return False
    return not VideoArchive.objects.filter(pk=job.archive_id, stop_requested=True).exists()


def job_finish(job: ClaimedJob, state: JobState, msg: str = "") -> None:
    _owned(job.archive_id, job.task_id).update(
        job_state=state, job_msg=msg[:4000], processing_finish_date=timezone.now(), stop_requested=False
    )


def run_job(*, archive_id: int, task_id: str, worker: str) -> None:
    job = job_claim(archive_id=archive_id, task_id=task_id, worker=worker)
    if job is None:
        logger.info("video archive %s task %s: nothing to do (not queued for this task)", archive_id, task_id)
        return
    logger.info("video archive %s task %s: %s on %s", archive_id, task_id,
                "resuming" if job.resumed else "starting", worker)
    state = {"go_on": True}

    def on_progress(progress: Progress) -> None:
        state["go_on"] = job_report(job, progress)

    try:
        if job.source_name:
            with local_path(job.source_name) as path:
                result = run_pipeline(_pipeline_settings(job, path), on_progress=on_progress,
                                      should_stop=lambda: not state["go_on"])
        else:
            raise MediaError("the archive has no source file")
    except MediaError as exc:
        logger.warning("video archive %s task %s: failed: %s", archive_id, task_id, exc)
        job_finish(job, JobState.FAILED, str(exc))
        return
    except Exception as exc:
        logger.exception("video archive %s task %s: unexpected failure", archive_id, task_id)
        job_finish(job, JobState.FAILED, f"internal error: {exc}")
        raise
    job_finish(job, JobState.INTERRUPTED if result.stopped else JobState.COMPLETED)
    logger.info("video archive %s task %s: %s after %d frames", archive_id, task_id,
                "interrupted" if result.stopped else "completed", result.progress.frames_processed)


def _pipeline_settings(job: ClaimedJob, path: str) -> PipelineSettings:
    return PipelineSettings(
        source=path,
        max_pixels=settings.FFV_MAX_FRAME_PIXELS,
        start_at=float(job.checkpoint.get("last_stream_timestamp", 0.0)) if job.resumed else 0.0,
        progress_interval=settings.FFV_PROGRESS_INTERVAL,
        stream_settings=job.stream_settings,
    )
