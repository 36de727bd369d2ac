"""A processing job's whole lifecycle, in one place: queue, claim, report, finish, sweep.

Used by the API (`archive_process`), the Celery tasks (`process_archive`, `sweep_jobs`) and `manage.py
process_video`. The job's state lives on the archive row:

- `job_queue` starts a job: a new task id, `job_purge_pending` set (a new job replaces the previous results).
- `job_claim` starts an attempt: a compare-and-set that takes a queued job, or a running one whose heartbeat ran
  out (its worker died), and writes a new claim token. The attempt that finds `job_purge_pending` purges the
  previous results in the same transaction; any later attempt resumes from the checkpoint. Past
  FFV_JOB_MAX_ATTEMPTS the job ends MISCONFIGURED instead.
- Every write of the attempt (`job_report`, events, `job_finish`) names its claim token, so a worker whose job
  was taken over writes nothing more and stops at its next report.
- `jobs_sweep` (beat, on the control queue) re-sends jobs whose heartbeat ran out, and queued jobs whose message
  the broker no longer holds; never a job merely waiting in line.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO, ParamSpec, TypeVar

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext as _
from kombu.exceptions import KombuError
from kombu.exceptions import OperationalError as BrokerError

from processing.config import ModelPaths, PipelineSettings
from processing.fetch import FetchError, FetchPolicy
from processing.media import MediaError
from processing.pipeline import PipelineError, Progress, run_pipeline
from processing.posting import PostedObject
from processing.sources import SourceNotAllowed
from processing.stream_settings import complete_stream_settings
from videos import broker, metrics
from videos.clusters import enqueue_clustering, lock_clusters, uncluster_archive
from videos.errors import Conflict, NotFound, ServiceUnavailable
from videos.events import event_counts, event_store, events_purge
from videos.health import KIND_PLURALS, empty_statistic
from videos.job_messages import safe_params
from videos.models import BUSY_STATES, RUNNING_STATES, JobState, VideoArchive
from videos.storage import media_source

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


CLUSTER_COUNTS = ("face_cluster_count", "body_cluster_count", "car_cluster_count")
# A share of the container's frames under which a completed job says that most of the video was not decoded.
FEW_FRAMES_SHARE = 0.5


# --- queueing


def job_queue(*, archive_id: int, send: Callable[[int, str], None] | None = broker.send_processing) -> str:
    """Queue a new job for the archive and return its task id; the message is sent once that is committed.

    A new job replaces the previous run's results: its first attempt purges them (`job_purge_pending`). With
    `send=None` nothing is sent (`manage.py process_video` runs the job itself). If the broker cannot take the
    message the archive goes back to exactly what it was and the caller gets ServiceUnavailable (503).
    """
    with transaction.atomic():
        archive = VideoArchive.objects.select_for_update().filter(pk=archive_id).first()
        if archive is None:
            raise NotFound(_("Video archive %(id)s not found.") % {"id": archive_id})
        if not archive.has_source:
            raise Conflict(_("The video archive has no source: upload a file or set its url first."))
        if archive.job_state in BUSY_STATES:
            raise Conflict(_("The video archive is already queued or being processed."))
        restore = {name: getattr(archive, name) for name in
                   ("job_state", "job_task_id", "job_starts", "job_claim", "job_purge_pending", "queued_date",
                    *CLUSTER_COUNTS)}
        task_id = uuid.uuid4().hex
        VideoArchive.objects.filter(pk=archive_id).update(
            job_state=JobState.QUEUED, job_task_id=task_id, job_starts=0, job_claim="", job_purge_pending=True,
            stop_requested=False, queued_date=timezone.now(), modified_date=timezone.now(),
            # Unknown until the new run's events are clustered.
            **{name: None for name in CLUSTER_COUNTS},
        )
        if send is not None:
            def send_on_commit() -> None:
                try:
                    send(archive_id, task_id)
                except (BrokerError, KombuError, OSError) as exc:
                    logger.error("video archive %s: cannot enqueue task %s: %s", archive_id, task_id, exc)
                    VideoArchive.objects.filter(pk=archive_id, job_task_id=task_id, job_state=JobState.QUEUED).update(
                        **restore
                    )
                    raise ServiceUnavailable(_("The task queue is unavailable, try again later.")) from exc

            transaction.on_commit(send_on_commit)
    return task_id


# --- one attempt


@dataclass(frozen=True)
class ClaimedJob:
    archive_id: int
    task_id: str
    claim: str  # this attempt's token; every write names it
    camera_group_id: int
    source_name: str
    url: str | None
    stream_settings: dict[str, Any]
    stream_settings_version: int = 1  # whose defaults complete them (processing.stream_settings)
    attempt: int = 1
    resumed: bool = False
    checkpoint: dict[str, Any] | None = None  # where a resumed run starts (Progress.checkpoint)


def _owned(archive_id: int, claim: str):
    return VideoArchive.objects.filter(pk=archive_id, job_claim=claim, job_state__in=RUNNING_STATES)


def _lease_expired() -> Any:
    return timezone.now() - timedelta(seconds=settings.FFV_JOB_LEASE_SECONDS)


def job_claim(*, archive_id: int, task_id: str, worker: str) -> ClaimedJob | None:
    """Start an attempt of the job `task_id`: None when it is not ours to run (finished, stopped, superseded by a
    newer job, or running with a live heartbeat elsewhere) or when its attempts are used up (then it failed)."""
    peek = VideoArchive.objects.filter(pk=archive_id, job_task_id=task_id).values("job_purge_pending").first()
    if peek is None:
        return None
    claim = uuid.uuid4().hex
    now = timezone.now()
    with transaction.atomic():
        if peek["job_purge_pending"]:
            # Purging takes archives out of clusters: the clusters lock comes before the archive's row lock, the
            # order clustering takes them in (videos.clusters), so the two cannot deadlock.
            lock_clusters()
        archive = VideoArchive.objects.select_for_update().filter(pk=archive_id, job_task_id=task_id).first()
        if archive is None:
            return None
        claimable = archive.job_state == JobState.QUEUED or (
            archive.job_state in RUNNING_STATES
            and (archive.job_heartbeat is None or archive.job_heartbeat < _lease_expired())
        )
        if not claimable:
            return None
        if archive.job_starts >= settings.FFV_JOB_MAX_ATTEMPTS:
            _end_exhausted(archive)
            return None
        purge = archive.job_purge_pending  # as peeked: only a new job (a new task id) sets it
        if purge:
            # A new job: the previous run's results go first, in the claim's transaction, so no attempt can
            # ever see half of them or take a re-run for a resume.
            uncluster_archive(archive_id=archive_id)
            events_purge(archive_id=archive_id)
            archive.statistic = empty_statistic()
            archive.face_count = archive.body_count = archive.car_count = 0
            archive.job_checkpoint = {}
            archive.job_purge_pending = False
            archive.processing_start_date = now  # when the job started; a resume keeps it
        archive.job_state = JobState.STARTING
        archive.job_starts += 1
        archive.job_claim = claim
        archive.job_worker = worker[:256]
        archive.job_heartbeat = now
        archive.processing_finish_date = None
        archive.job_msg_code, archive.job_msg_params = "", {}
        archive.save(update_fields=[
            "job_state", "job_starts", "job_claim", "job_worker", "job_heartbeat", "processing_start_date",
            "processing_finish_date", "job_msg_code", "job_msg_params", "statistic", "face_count", "body_count",
            "car_count", "job_checkpoint", "job_purge_pending",
        ])
    resumed = not purge
    return ClaimedJob(
        archive_id=archive_id,
        task_id=task_id,
        claim=claim,
        camera_group_id=archive.camera_group_id,
        source_name=archive.source_file.name,
        url=archive.url,
        stream_settings=archive.stream_settings,
        stream_settings_version=archive.stream_settings_version,
        attempt=archive.job_starts,
        resumed=resumed,
        checkpoint=(archive.job_checkpoint or {}).get("resume") if resumed else None,
    )


def _end_exhausted(archive: VideoArchive) -> None:
    """The job's attempts are used up (each ended with its worker gone): it fails, and is never sent again."""
    ended = VideoArchive.objects.filter(pk=archive.pk, job_task_id=archive.job_task_id,
                                        job_state=archive.job_state).update(
        job_state=JobState.FAILED, job_claim="", job_msg_code="attempts_exhausted",
        job_msg_params={"attempts": archive.job_starts}, processing_finish_date=timezone.now(), stop_requested=False,
    )
    if ended:
        transaction.on_commit(lambda: metrics.job_ended(JobState.FAILED, "attempts_exhausted"))
        logger.error("video archive %s task %s: %d attempts ended with their worker gone; the job failed",
                     archive.pk, archive.job_task_id, archive.job_starts)
        transaction.on_commit(lambda: enqueue_clustering(archive.pk))


@_survives_dropped_connections
def job_report(job: ClaimedJob, progress: Progress) -> bool:
    """Write statistic and heartbeat; True while the job should go on (not stopped, not deleted, still ours)."""
    statistic = {**empty_statistic(), **progress.as_statistic()}
    counts = event_counts(job.archive_id)
    updated = _owned(job.archive_id, job.claim).update(
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
        logger.warning("video archive %s task %s: claim %s lost (stopped, deleted or taken over); stopping",
                       job.archive_id, job.task_id, job.claim)
        return False
    return not VideoArchive.objects.filter(pk=job.archive_id, stop_requested=True).exists()


@_survives_dropped_connections
def job_finish(job: ClaimedJob, state: JobState, code: str = "", params: dict[str, Any] | None = None,
               progress: Progress | None = None) -> bool:
    """End the attempt (and the job); counts and `*_posted` come from the event rows, which a replay cannot
    inflate. False when the claim was lost meanwhile: then nothing is written."""
    counts = event_counts(job.archive_id)
    fields: dict[str, Any] = {"face_count": counts["face"], "body_count": counts["body"], "car_count": counts["car"]}
    if progress is not None:
        statistic = {**empty_statistic(), **progress.as_statistic()}
        for kind, count in counts.items():
            statistic[f"{KIND_PLURALS[kind]}_posted"] = count
            statistic["objects"][kind]["posted"] = count
        fields["statistic"] = statistic
    finished = _owned(job.archive_id, job.claim).update(
        job_state=state, job_msg_code=code, job_msg_params=safe_params(params),
        processing_finish_date=timezone.now(), stop_requested=False, **fields,
    )
    if finished:  # its events go into clusters (videos.clusters), sent once the end of the job is committed
        transaction.on_commit(lambda: metrics.job_ended(state, code))
        transaction.on_commit(lambda: enqueue_clustering(job.archive_id))
    return bool(finished)


def _completion(progress: Progress) -> tuple[JobState, str, dict[str, Any]]:
    """How a run that went to the end of its source ends: nothing decoded is a failure, a small part a warning."""
    decoded = progress.frames_processed + progress.frames_dropped
    if decoded == 0:
        return JobState.FAILED, "no_frames", {}
    expected = progress.frames_expected
    if expected and decoded < FEW_FRAMES_SHARE * expected:
        return JobState.COMPLETED, "few_frames", {"decoded": decoded, "expected": int(expected)}
    return JobState.COMPLETED, "", {}


def _failure(exc: BaseException) -> tuple[str, dict[str, Any]]:
    """The code and parameters of a failure the user can act on."""
    if isinstance(exc, SourceNotAllowed):
        return f"url_{exc.reason}", {"host": exc.host or ""}
    code = getattr(exc, "code", "")
    if code:
        return code, dict(getattr(exc, "params", {}) or {})
    if isinstance(exc, FileNotFoundError):
        # Models raise ModelMissing (it has a code): a plain one is the source's copy, gone from storage.
        return "source_file_missing", {}
    if isinstance(exc, MemoryError):
        return "out_of_memory", {}
    return "internal_error", {"error": type(exc).__name__}


def run_job(
    *, archive_id: int, task_id: str, worker: str, watch: Callable[[Progress], None] | None = None
) -> JobState | None:
    """Claim and run an attempt of the job; returns its final state, or None when it was not ours to run."""
    job = job_claim(archive_id=archive_id, task_id=task_id, worker=worker)
    if job is None:
        logger.info("video archive %s task %s: nothing to do (not queued for this task)", archive_id, task_id)
        return None
    logger.info("video archive %s task %s: %s attempt %d on %s", archive_id, task_id,
                "resuming" if job.resumed else "starting", job.attempt, worker)
    state = {"go_on": True}
    metrics.attempt_started(resumed=job.resumed)
    meter = metrics.JobMeter(job.checkpoint)

    def on_progress(progress: Progress) -> None:
        meter.observe(progress)
        state["go_on"] = job_report(job, progress)
        if watch is not None:
            watch(progress)

    def on_event(posted: PostedObject) -> bool:
        stored = _event_store(job, posted)
        if stored is None:
            state["go_on"] = False  # the claim is gone: stop at the next progress check
        return bool(stored)

    try:
        if job.source_name:
            if not default_storage.exists(job.source_name):  # gone from storage since the upload
                raise MediaError("source_file_missing")
            # A local path, or a reader of the bucket's object streamed by ranged GETs (videos.storage).
            with media_source(job.source_name) as source:
                result = run_pipeline(_pipeline_settings(job, source), on_progress=on_progress,
                                      should_stop=lambda: not state["go_on"], on_event=on_event)
        elif job.url:
            # Fetched by the pipeline (processing.fetch), which checks every hop with the host resolved: the API
            # could only check the name as written.
            result = run_pipeline(_pipeline_settings(job, job.url), on_progress=on_progress,
                                  should_stop=lambda: not state["go_on"], on_event=on_event)
        else:
            raise MediaError("source_missing")
    except (SourceNotAllowed, FetchError, MediaError, PipelineError, FileNotFoundError, MemoryError) as exc:
        code, params = _failure(exc)
        logger.warning("video archive %s task %s: failed (%s): %s", archive_id, task_id, code, exc)
        job_finish(job, JobState.FAILED, code, params)
        return JobState.FAILED
    except Exception as exc:
        logger.exception("video archive %s task %s: unexpected failure", archive_id, task_id)
        job_finish(job, JobState.FAILED, "internal_error", {"error": type(exc).__name__})
        raise
    if result.stopped:
        final, code, params = JobState.INTERRUPTED, "", {}
    else:
        final, code, params = _completion(result.progress)
    if not job_finish(job, final, code, params, progress=result.progress):
        logger.warning("video archive %s task %s: attempt %d ended without its claim", archive_id, task_id,
                       job.attempt)
        return None
    logger.info("video archive %s task %s: %s after %d frames%s", archive_id, task_id, final.value,
                result.progress.frames_processed, f" ({code})" if code else "")
    return final


class _ClaimLost(Exception):
    pass


class _NotStored(Exception):
    pass


def _event_store(job: ClaimedJob, posted: PostedObject) -> bool | None:
    """videos.events.event_store under the attempt's claim, tried again when its connection dropped under it.

    True when stored, False when it could not be (storage, data: counted as failed), None when the claim is
    gone (the job was stopped, re-queued or taken over): then nothing is written. The claim is checked with the
    archive's row locked, so a new job's purge cannot slip between the check and the insert.
    """
    for delay in (*DB_RETRY_DELAYS, None):
        try:
            connection.ensure_connection()
            before = connection.connection
            with transaction.atomic():
                if not _owned(job.archive_id, job.claim).select_for_update().exists():
                    raise _ClaimLost
                if not event_store(archive_id=job.archive_id, camera_group_id=job.camera_group_id, posted=posted):
                    raise _NotStored
            return True
        except _ClaimLost:
            return None
        except _NotStored:
            if delay is None or not _connection_dropped(before):
                return False  # not the connection (storage, data): counted as failed by the pipeline
            _reconnect("event store", job.archive_id, delay, "connection dropped")
        except (OperationalError, InterfaceError) as exc:
            if delay is None:
                return False
            _reconnect("event store", job.archive_id, delay, exc)
    return False


def _connection_dropped(before: Any) -> bool:
    """Whether the connection an insert failed on died: event_store logs and swallows database errors, and the
    transaction's rollback on a dead connection closes it and opens a new one at once, so a usable connection
    now says nothing; a different one does."""
    if connection.connection is None or connection.connection is not before:
        return True
    try:
        return not connection.is_usable()
    except DatabaseError:
        return True


def _pipeline_settings(job: ClaimedJob, path: str | BinaryIO) -> PipelineSettings:
    # A resumed job starts at its checkpoint: the last analysed frame after which no track was open, with the
    # track numbering and counters of that moment. From there tracking is deterministic, so the frames between
    # the checkpoint and the crash post the same events again and the uniqueness rule drops them (see
    # videos.events.event_store). Without a checkpoint (a track was open all along) it replays from the start.
    return PipelineSettings.from_stream_settings(
        complete_stream_settings(job.stream_settings, version=job.stream_settings_version),
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
        decode_stall_seconds=settings.FFV_DECODE_STALL_SECONDS,
        detect_stride=settings.FFV_DETECT_STRIDE,
        detect_rate=settings.FFV_DETECT_RATE,
        skip_duplicate_frames=settings.FFV_SKIP_DUPLICATE_FRAMES,
        face_search=settings.FFV_FACE_SEARCH,
        face_crop_size=settings.FFV_FACE_CROP_SIZE,
        face_input_size=settings.FFV_FACE_INPUT_SIZE,
        object_input_size=settings.FFV_OBJECT_INPUT_SIZE,
        ort_threads=settings.FFV_ORT_THREADS,
        detect_workers=settings.FFV_DETECT_WORKERS,
        decode_buffer_bytes=settings.FFV_DECODE_BUFFER_MB * 1024 * 1024,
        memory_limit_bytes=settings.FFV_WORKER_MEMORY_LIMIT_MB * 1024 * 1024,
        fetch=FetchPolicy(
            allowed_hosts=tuple(settings.FFV_URL_ALLOWED_HOSTS),
            allow_private=settings.FFV_URL_ALLOW_PRIVATE,
            max_bytes=settings.FFV_FETCH_MAX_BYTES,
            max_redirects=settings.FFV_FETCH_MAX_REDIRECTS,
            timeout=settings.FFV_FETCH_TIMEOUT_SECONDS,
            spool_dir=settings.FFV_FETCH_DIR,
        ),
    )



def jobs_sweep(*, enqueue: Callable[[int, str], None] = broker.send_processing,
               holds: Callable[[str, str], bool | None] = broker.broker_holds) -> list[int]:
    """Re-send jobs whose message went missing; returns the archives re-sent.

    - Running jobs whose heartbeat is older than the lease (their worker died): back to QUEUED with the same task
      id and re-sent; the next attempt resumes them, or fails them once FFV_JOB_MAX_ATTEMPTS are used up.
    - Queued jobs only when they have waited longer than FFV_QUEUE_STALE_SECONDS and the broker says their message
      is gone (lost in a broker restart without persistence). A job merely waiting in line is never re-sent, and
      where the broker cannot be asked, nothing is assumed lost.
    Claiming is a compare-and-set, so even a message sent twice runs the job once.
    """
    now = timezone.now()
    stale = _lease_expired()
    resent: list[int] = []
    dead = VideoArchive.objects.filter(job_state__in=RUNNING_STATES, job_heartbeat__lt=stale)
    for archive_id, task_id, state, claim, starts in dead.values_list(
        "pk", "job_task_id", "job_state", "job_claim", "job_starts"
    ):
        current = VideoArchive.objects.filter(pk=archive_id, job_task_id=task_id, job_state=state, job_claim=claim,
                                              job_heartbeat__lt=stale)
        if starts >= settings.FFV_JOB_MAX_ATTEMPTS:
            with transaction.atomic():
                archive = current.select_for_update().first()
                if archive is not None:
                    _end_exhausted(archive)
            continue
        # Back to QUEUED (same task id) only if nobody touched the row meanwhile.
        if current.update(job_state=JobState.QUEUED, job_claim="", queued_date=now):
            logger.warning("video archive %s task %s: worker gone (no heartbeat for %s s); job re-sent",
                           archive_id, task_id, settings.FFV_JOB_LEASE_SECONDS)
            enqueue(archive_id, task_id)
            resent.append(archive_id)
    long_queued = now - timedelta(seconds=settings.FFV_QUEUE_STALE_SECONDS)
    waiting = VideoArchive.objects.filter(job_state=JobState.QUEUED, queued_date__lt=long_queued)
    for archive_id, task_id in waiting.values_list("pk", "job_task_id"):
        try:
            held = holds(task_id, settings.FFV_PROCESSING_QUEUE)
        except (BrokerError, KombuError, OSError) as exc:
            logger.warning("sweep: cannot ask the broker about task %s: %s", task_id, exc)
            break
        if held is not False:
            continue  # waiting in line (or unknowable): never sent twice
        moved = VideoArchive.objects.filter(pk=archive_id, job_task_id=task_id, job_state=JobState.QUEUED).update(
            queued_date=now)
        if moved:
            logger.warning("video archive %s task %s: the broker lost the queued job's message; re-sent",
                           archive_id, task_id)
            enqueue(archive_id, task_id)
            resent.append(archive_id)
    return resent
