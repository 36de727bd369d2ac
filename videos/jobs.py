"""The worker's side of a processing job: claim it, report progress, finish it. Called by videos.tasks.

Every write is a conditional UPDATE on (archive id, task id, running state), so a stale or duplicate delivery
of the task can neither start a second run nor overwrite the state of the run that owns the job.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from processing.config import ModelPaths, PipelineSettings
from processing.media import MediaError
from processing.pipeline import PipelineError, Progress, run_pipeline
from processing.posting import PostedObject
from processing.sources import SourceNotAllowed, check_source_url
from videos.clusters import enqueue_clustering, uncluster_archive
from videos.events import event_counts, event_store, events_purge
from videos.health import KIND_PLURALS, empty_statistic
from videos.models import RUNNING_STATES, JobState, VideoArchive
from videos.serializers.stream_settings import complete_stream_settings
from videos.storage import local_path

logger = logging.getLogger(__name__)

# Pauses (seconds) between attempts of a job's database write after its connection dropped (a database restart or
# failover, a killed backend): about 16 s in all, then the job fails as before and the sweeper resends it later.
DB_RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0)

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _reconnect(what: str, archive_id: int, delay: float, exc: BaseException | str) -> None:
    logger.warning("video archive %s: database connection lost during %s (%s); reconnecting in %.1f s",
                   archive_id, what, exc, delay)
    try:
        connection.close()  # the next query opens a new one
    except DatabaseError:
        pass
    time.sleep(delay)


def _survives_dropped_connections(write: Callable[_P, _T]) -> Callable[_P, _T]:
    """Retry a job's write on a new connection after OperationalError/InterfaceError, bounded by DB_RETRY_DELAYS.

    Only for writes that are safe to repeat: conditional UPDATEs of the job's own row, inserts that ignore
    conflicts. Inside a transaction the error goes up instead, since the transaction is lost anyway.
    """

    @functools.wraps(write)
    def retrying(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        for delay in DB_RETRY_DELAYS:
            try:
                return write(*args, **kwargs)
            except (OperationalError, InterfaceError) as exc:
                if connection.in_atomic_block:
                    raise
                job = args[0] if args else None
                _reconnect(write.__name__, getattr(job, "archive_id", 0), delay, exc)
        return write(*args, **kwargs)

    return retrying


@dataclass(frozen=True)
class ClaimedJob:
    archive_id: int
    task_id: str
    camera_group_id: int
    source_name: str
    url: str | None
    stream_settings: dict[str, Any]
    resumed: bool = False
    checkpoint: dict[str, Any] | None = None  # where a resumed run starts (Progress.checkpoint)


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
        uncluster_archive(archive_id=archive_id)  # out of their clusters first: centroids must lose them
        events_purge(archive_id=archive_id)
        VideoArchive.objects.filter(pk=archive_id).update(
            statistic=empty_statistic(), face_count=0, body_count=0, car_count=0, job_checkpoint={}
        )
    return ClaimedJob(
        archive_id=archive_id,
        task_id=task_id,
        camera_group_id=archive.camera_group_id,
        source_name=archive.source_file.name,
        url=archive.url,
        stream_settings=archive.stream_settings,
        resumed=resumed,
        checkpoint=(archive.job_checkpoint or {}).get("resume") if resumed else None,
    )


@_survives_dropped_connections
def job_report(job: ClaimedJob, progress: Progress) -> bool:
    """Write statistic and heartbeat; True while the job should go on (not stopped, not deleted, still ours)."""
    statistic = {**empty_statistic(), **progress.as_statistic()}
    counts = event_counts(job.archive_id)
    updated = _owned(job.archive_id, job.task_id).update(
        job_state=JobState.IN_PROGRESS,
        face_count=counts["face"],
        body_count=counts["body"],
        car_count=counts["car"],
        job_heartbeat=timezone.now(),
        statistic=statistic,
        source_len=F("source_len") if progress.source_len is None else round(progress.source_len, 3),
        # Where the run is, for operators (admin), and the last quiet point a resumed run starts from.
        job_checkpoint={"last_stream_timestamp": progress.last_stream_timestamp,
                        "frames_processed": progress.frames_processed,
                        "resumed_from_frame": progress.resumed_from_frame,
                        "resume": progress.checkpoint},
    )
    if not updated:
        return False
    return not VideoArchive.objects.filter(pk=job.archive_id, stop_requested=True).exists()


@_survives_dropped_connections
def job_finish(job: ClaimedJob, state: JobState, msg: str = "", progress: Progress | None = None) -> None:
    """End the job; counts and `*_posted` come from the event rows, which a replay cannot inflate."""
    counts = event_counts(job.archive_id)
    fields: dict[str, Any] = {"face_count": counts["face"], "body_count": counts["body"], "car_count": counts["car"]}
    if progress is not None:
        statistic = {**empty_statistic(), **progress.as_statistic()}
        for kind, count in counts.items():
            statistic[f"{KIND_PLURALS[kind]}_posted"] = count
            statistic["objects"][kind]["posted"] = count
        fields["statistic"] = statistic
    finished = _owned(job.archive_id, job.task_id).update(
        job_state=state, job_msg=msg[:4000], processing_finish_date=timezone.now(), stop_requested=False, **fields
    )
    if finished:  # its events go into clusters (videos.clusters), sent once the end of the job is committed
        transaction.on_commit(lambda: enqueue_clustering(job.archive_id))


def run_job(
    *, archive_id: int, task_id: str, worker: str, watch: Callable[[Progress], None] | None = None
) -> JobState | None:
    """Claim and run the job; returns its final state, or None when it was not ours to run."""
    job = job_claim(archive_id=archive_id, task_id=task_id, worker=worker)
    if job is None:
        logger.info("video archive %s task %s: nothing to do (not queued for this task)", archive_id, task_id)
        return None
    logger.info("video archive %s task %s: %s on %s", archive_id, task_id,
                "resuming" if job.resumed else "starting", worker)
    state = {"go_on": True}

    def on_progress(progress: Progress) -> None:
        state["go_on"] = job_report(job, progress)
        if watch is not None:
            watch(progress)

    def on_event(posted: PostedObject) -> bool:
        return _event_store(job, posted)

    try:
        if job.source_name:
            with local_path(job.source_name) as path:
                result = run_pipeline(_pipeline_settings(job, path), on_progress=on_progress,
                                      should_stop=lambda: not state["go_on"], on_event=on_event)
        elif job.url:
            # Checked again here, with the host resolved: the API could only check the name as written.
            check_source_url(job.url, allowed_hosts=settings.FFV_URL_ALLOWED_HOSTS,
                             allow_private=settings.FFV_URL_ALLOW_PRIVATE, resolve=True)
            result = run_pipeline(_pipeline_settings(job, job.url), on_progress=on_progress,
                                  should_stop=lambda: not state["go_on"], on_event=on_event)
        else:
            raise MediaError("source_missing")
    except SourceNotAllowed as exc:
        logger.warning("video archive %s task %s: source refused: %s", archive_id, task_id, exc)
        job_finish(job, JobState.FAILED, f"the url cannot be opened: {exc}")
        return JobState.FAILED
    except (MediaError, PipelineError) as exc:
        logger.warning("video archive %s task %s: failed: %s", archive_id, task_id, exc)
        job_finish(job, JobState.FAILED, str(exc))
        return JobState.FAILED
    except FileNotFoundError as exc:
        logger.error("video archive %s task %s: %s", archive_id, task_id, exc)
        job_finish(job, JobState.FAILED, f"{exc} (run `manage.py prepare_models` on this worker)")
        return JobState.FAILED
    except MemoryError:
        logger.error("video archive %s task %s: out of memory", archive_id, task_id)
        job_finish(job, JobState.FAILED, "the job needs more memory than this worker may use "
                                         "(FFV_WORKER_MEMORY_LIMIT_MB)")
        return JobState.FAILED
    except Exception as exc:
        logger.exception("video archive %s task %s: unexpected failure", archive_id, task_id)
        job_finish(job, JobState.FAILED, f"internal error: {exc}")
        raise
    final = JobState.INTERRUPTED if result.stopped else JobState.COMPLETED
    job_finish(job, final, progress=result.progress)
    logger.info("video archive %s task %s: %s after %d frames", archive_id, task_id,
                final.value, result.progress.frames_processed)
    return final


def _event_store(job: ClaimedJob, posted: PostedObject) -> bool:
    """videos.events.event_store, tried again when its connection dropped under it.

    event_store logs and swallows database errors; a dropped connection shows as the connection having been
    replaced (Django reconnects when the insert's transaction ends) or being unusable.
    """
    for delay in (*DB_RETRY_DELAYS, None):
        before = connection.connection
        if event_store(archive_id=job.archive_id, camera_group_id=job.camera_group_id, posted=posted):
            return True
        dropped = before is not None and (connection.connection is not before or not connection.is_usable())
        if delay is None or not dropped or connection.in_atomic_block:
            return False  # not the connection (storage, data): counted as failed by the pipeline
        _reconnect("event store", job.archive_id, delay, "connection dropped")
    return False


def _pipeline_settings(job: ClaimedJob, path: str) -> PipelineSettings:
    # A resumed job starts at its checkpoint: the last analysed frame after which no track was open, with the
    # track numbering and counters of that moment. From there tracking is deterministic, so the frames between
    # the checkpoint and the crash post the same events again and the uniqueness rule drops them (see
    # videos.events.event_store). Without a checkpoint (a track was open all along) it replays from the start.
    return PipelineSettings.from_stream_settings(
        complete_stream_settings(job.stream_settings),
        source=path,
        models=ModelPaths(
            face=Path(settings.FFV_FACE_MODEL),
            objects=Path(settings.FFV_OBJECT_MODEL),
            face_embedder=Path(settings.FFV_FACE_EMBEDDER_MODEL),
            object_embedder=Path(settings.FFV_OBJECT_EMBEDDER_MODEL),
        ),
        resume_from=job.checkpoint,
        max_pixels=settings.FFV_MAX_FRAME_PIXELS,
        progress_interval=settings.FFV_PROGRESS_INTERVAL,
        detect_stride=settings.FFV_DETECT_STRIDE,
        face_search=settings.FFV_FACE_SEARCH,
        face_crop_size=settings.FFV_FACE_CROP_SIZE,
        face_input_size=settings.FFV_FACE_INPUT_SIZE,
        object_input_size=settings.FFV_OBJECT_INPUT_SIZE,
        ort_threads=settings.FFV_ORT_THREADS,
        detect_workers=settings.FFV_DETECT_WORKERS,
        decode_buffer_bytes=settings.FFV_DECODE_BUFFER_MB * 1024 * 1024,
        memory_limit_bytes=settings.FFV_WORKER_MEMORY_LIMIT_MB * 1024 * 1024,
    )


def jobs_sweep(*, enqueue: Callable[[int, str], None]) -> list[int]:
    """Re-send jobs whose task went missing: running ones whose worker died (no heartbeat within the lease),
    and queued ones whose message the broker lost. Claiming is a compare-and-set, so a job re-sent while its
    first message still exists runs once; the second delivery finds nothing to do.
    """
    now = timezone.now()
    stale = now - timedelta(seconds=settings.FFV_JOB_LEASE_SECONDS)
    long_queued = now - timedelta(seconds=settings.FFV_QUEUE_STALE_SECONDS)
    resent: list[int] = []
    dead = VideoArchive.objects.filter(job_state__in=RUNNING_STATES, job_heartbeat__lt=stale)
    lost = VideoArchive.objects.filter(job_state=JobState.QUEUED, queued_date__lt=long_queued)
    for archive_id, task_id, state in [*dead.values_list("pk", "job_task_id", "job_state"),
                                       *lost.values_list("pk", "job_task_id", "job_state")]:
        # Back to QUEUED (same task id) only if nobody touched the row meanwhile.
        moved = VideoArchive.objects.filter(pk=archive_id, job_task_id=task_id, job_state=state).filter(
            Q(job_heartbeat__lt=stale) | Q(job_state=JobState.QUEUED)
        ).update(job_state=JobState.QUEUED, queued_date=now)
        if moved:
            logger.warning("video archive %s task %s: %s job re-sent", archive_id, task_id,
                           "orphaned" if state in RUNNING_STATES else "long-queued")
            enqueue(archive_id, task_id)
            resent.append(archive_id)
    return resent
