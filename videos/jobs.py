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

from processing.chunks import OverlapRecorder, Span, first_track_id, keyframes, plan_spans
from processing.config import OBJECT_KINDS, ModelPaths, PipelineSettings
from processing.fetch import FetchError, FetchPolicy
from processing.media import MediaError
from processing.pipeline import PipelineError, Progress, run_pipeline
from processing.posting import PostedObject
from processing.sources import SourceNotAllowed
from processing.stream_settings import complete_stream_settings
from videos import broker, metrics
from videos.chunks import aggregate_statistic, stitch_events
from videos.clusters import enqueue_clustering, lock_clusters, uncluster_archive
from videos.errors import Conflict, NotFound, ServiceUnavailable
from videos.events import event_counts, event_store, events_purge
from videos.health import KIND_PLURALS, empty_statistic
from videos.job_messages import safe_params
from videos.models import BUSY_STATES, RUNNING_STATES, ArchiveChunk, JobState, VideoArchive
from videos.storage import media_source
from videos.webhooks import notify_archive_status

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
        notify_archive_status(archive_id, JobState.QUEUED)
        if send is not None:
            def send_on_commit() -> None:
                try:
                    send(archive_id, task_id)
                except (BrokerError, KombuError, OSError) as exc:
                    logger.error("video archive %s: cannot enqueue task %s: %s", archive_id, task_id, exc)
                    with transaction.atomic():
                        if VideoArchive.objects.filter(pk=archive_id, job_task_id=task_id,
                                                       job_state=JobState.QUEUED).update(**restore):
                            notify_archive_status(archive_id, restore["job_state"])  # webhooks saw it queued
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
    # A chunk of a long archive's job (see "chunks" below): its row, what it decodes, its shared stretches.
    chunk_id: int | None = None
    span: tuple[float, float | None] | None = None
    overlap: OverlapRecorder | None = None


def _owned(archive_id: int, claim: str):
    return VideoArchive.objects.filter(pk=archive_id, job_claim=claim, job_state__in=RUNNING_STATES)


def _owned_by(job: ClaimedJob):
    """The row the attempt's claim is on: the archive's, or its chunk's."""
    if job.chunk_id is None:
        return _owned(job.archive_id, job.claim)
    return ArchiveChunk.objects.filter(pk=job.chunk_id, claim=job.claim, state__in=RUNNING_STATES)


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
            ArchiveChunk.objects.filter(video_archive_id=archive_id).delete()  # the previous job's chunks
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
        if purge:  # a resume is no change a webhook is told of (README "Webhooks")
            notify_archive_status(archive_id, JobState.STARTING, attempt=archive.job_starts)
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
        notify_archive_status(archive.pk, JobState.FAILED, code="attempts_exhausted")
        transaction.on_commit(lambda: metrics.job_ended(JobState.FAILED, "attempts_exhausted"))
        logger.error("video archive %s task %s: %d attempts ended with their worker gone; the job failed",
                     archive.pk, archive.job_task_id, archive.job_starts)
        transaction.on_commit(lambda: enqueue_clustering(archive.pk))


@_survives_dropped_connections
def job_report(job: ClaimedJob, progress: Progress) -> bool:
    """Write statistic and heartbeat; True while the job should go on (not stopped, not deleted, still ours)."""
    if job.chunk_id is not None:
        return _chunk_report(job, progress)
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
    if job.chunk_id is not None:
        return _chunk_finish(job, state, code, params, progress)
    counts = event_counts(job.archive_id)
    fields: dict[str, Any] = {"face_count": counts["face"], "body_count": counts["body"], "car_count": counts["car"]}
    if progress is not None:
        statistic = {**empty_statistic(), **progress.as_statistic()}
        for kind, count in counts.items():
            statistic[f"{KIND_PLURALS[kind]}_posted"] = count
            statistic["objects"][kind]["posted"] = count
        fields["statistic"] = statistic
    with transaction.atomic():  # the end of the job and its webhook deliveries (outbox rows) commit together
        finished = _owned(job.archive_id, job.claim).update(
            job_state=state, job_msg_code=code, job_msg_params=safe_params(params),
            processing_finish_date=timezone.now(), stop_requested=False, **fields,
        )
        if finished:  # its events go into clusters (videos.clusters), sent once the end of the job is committed
            notify_archive_status(job.archive_id, state, code=code)
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
    *, archive_id: int, task_id: str, worker: str, watch: Callable[[Progress], None] | None = None,
    chunked: bool = True,
) -> JobState | None:
    """Claim and run an attempt of the job; returns its final state, or None when it was not ours to run.

    With `chunked` (a Celery worker) a long source is cut into chunks for the fleet (FFV_CHUNK_SECONDS); `manage.py
    process_video` runs the whole job itself."""
    job = job_claim(archive_id=archive_id, task_id=task_id, worker=worker)
    if job is None:
        logger.info("video archive %s task %s: nothing to do (not queued for this task)", archive_id, task_id)
        return None
    logger.info("video archive %s task %s: %s attempt %d on %s", archive_id, task_id,
                "resuming" if job.resumed else "starting", job.attempt, worker)
    if chunked and settings.FFV_CHUNK_SECONDS > 0 and job.source_name and _fan_out(job):
        return JobState.IN_PROGRESS  # its chunks go on as tasks of their own
    return _run_attempt(job, watch)


def run_chunk(*, chunk_id: int, task_id: str, worker: str,
              watch: Callable[[Progress], None] | None = None) -> JobState | None:
    """Claim and run an attempt of one chunk of a long archive's job; None when it was not ours to run."""
    job = chunk_claim(chunk_id=chunk_id, task_id=task_id, worker=worker)
    if job is None:
        logger.info("chunk %s task %s: nothing to do", chunk_id, task_id)
        return None
    assert job.span is not None
    logger.info("video archive %s chunk %s (%.1f-%s s): %s attempt %d on %s", job.archive_id, chunk_id,
                job.span[0], job.span[1], "resuming" if job.resumed else "starting", job.attempt, worker)
    return _run_attempt(job, watch)


def _run_attempt(job: ClaimedJob, watch: Callable[[Progress], None] | None) -> JobState | None:
    archive_id, task_id = job.archive_id, job.task_id
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
                                      should_stop=lambda: not state["go_on"], on_event=on_event,
                                      on_tracked=job.overlap.record if job.overlap is not None else None)
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
    elif job.chunk_id is not None:
        # A chunk decodes part of the video: whether most of the video was decoded is judged over all chunks.
        decoded = result.progress.frames_processed + result.progress.frames_dropped
        final, code, params = (JobState.COMPLETED, "", {}) if decoded else (JobState.FAILED, "no_frames", {})
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
                if not _owned_by(job).select_for_update().exists():
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
        span=job.span,
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
        detect_batch=settings.FFV_DETECT_BATCH,
        detect_batch_wait=settings.FFV_DETECT_BATCH_WAIT_MS / 1000,
        decode_threads=settings.FFV_DECODE_THREADS,
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



# --- chunks: one long archive across many workers
#
# A job whose uploaded source is longer than FFV_CHUNK_SECONDS is cut at keyframes (processing.chunks) by its
# first attempt, which writes one ArchiveChunk row per piece and sends each as a task of its own
# (`process_chunk`), then ends. Each chunk has the job machinery of an archive: a claim token on its row, its
# heartbeat, attempts and checkpoint; a chunk whose worker died is re-sent alone by the sweeper and resumes
# from its own checkpoint. The archive's row stays IN_PROGRESS (the purge happened once, in the first attempt's
# claim), its statistic summed from the chunks' at every chunk report; a stop request ends every chunk. The
# chunk that ends last ends the job: tracks are stitched across the cuts, the archive's state is derived from
# the chunks' (any stopped: INTERRUPTED, else any failed: FAILED, else COMPLETED), and clustering is sent once.
# Chunk paths lock the archive's row FOR NO KEY UPDATE: it serializes them with each other, and does not block
# the FOR KEY SHARE an event insert takes on its archive through the foreign key (other chunks' events).

CHUNK_ENDED = (JobState.COMPLETED, JobState.FAILED, JobState.INTERRUPTED)


def _fan_out(job: ClaimedJob) -> bool:
    """Cut the job's source into chunks and send them; False when it is short enough to run as one (or cannot
    be read: the plain run reports why)."""
    if ArchiveChunk.objects.filter(video_archive_id=job.archive_id, job_task_id=job.task_id).exists():
        return True  # cut already (a duplicate delivery): the chunks carry on, the sweeper watches them
    if job.resumed:
        return False  # an attempt of a job that ran uncut goes on from its checkpoint, uncut
    overlap = settings.FFV_CHUNK_OVERLAP_SECONDS
    try:
        if not default_storage.exists(job.source_name):
            return False
        with media_source(job.source_name) as source:
            times, duration = keyframes(source)
    except Exception as exc:  # a damaged packet, a storage error...: the plain run decodes what it can, or says why
        logger.info("video archive %s: not cut into chunks (%r)", job.archive_id, exc)
        return False
    spans = plan_spans(times, duration, settings.FFV_CHUNK_SECONDS, overlap)
    if len(spans) < 2:
        return False
    now = timezone.now()
    with transaction.atomic():
        if not _owned(job.archive_id, job.claim).select_for_update().exists():
            return True  # stopped or taken over meanwhile: nothing to cut
        chunks = ArchiveChunk.objects.bulk_create([
            ArchiveChunk(video_archive_id=job.archive_id, job_task_id=job.task_id, index=span.index,
                         start=span.start, end=span.end, task_id=uuid.uuid4().hex, queued_date=now)
            for span in spans
        ])
        _owned(job.archive_id, job.claim).update(
            job_state=JobState.IN_PROGRESS, job_heartbeat=now, source_len=round(duration or 0, 3) or None,
            job_checkpoint={"chunks": len(spans), "chunk_overlap": overlap},
            statistic=aggregate_statistic(chunks, duration),
        )
        sends = [(chunk.pk, chunk.task_id) for chunk in ArchiveChunk.objects.filter(
            video_archive_id=job.archive_id, job_task_id=job.task_id)]

        def send_all() -> None:
            for chunk_id, task_id in sends:
                try:
                    broker.send_chunk(chunk_id, task_id)
                except (BrokerError, KombuError, OSError) as exc:  # re-sent by the sweeper once found missing
                    logger.error("video archive %s: cannot enqueue chunk %s: %s", job.archive_id, chunk_id, exc)

        transaction.on_commit(send_all)
    logger.info("video archive %s task %s: %.1f s cut into %d chunks at keyframes %s", job.archive_id,
                job.task_id, duration or 0, len(spans), [round(span.start, 2) for span in spans])
    return True


def chunk_claim(*, chunk_id: int, task_id: str, worker: str) -> ClaimedJob | None:
    """Start an attempt of one chunk (as job_claim does for an archive); None when it is not ours to run."""
    peek = ArchiveChunk.objects.filter(pk=chunk_id, task_id=task_id).values("video_archive_id").first()
    if peek is None:
        return None
    claim = uuid.uuid4().hex
    now = timezone.now()
    with transaction.atomic():
        # The archive's row first, then the chunk's: the order every chunk write takes them in.
        archive = VideoArchive.objects.select_for_update(no_key=True).filter(pk=peek["video_archive_id"]).first()
        chunk = ArchiveChunk.objects.select_for_update().filter(pk=chunk_id, task_id=task_id).first()
        if archive is None or chunk is None or chunk.job_task_id != archive.job_task_id:
            return None
        if archive.job_state not in RUNNING_STATES:
            return None
        claimable = chunk.state == JobState.QUEUED or (
            chunk.state in RUNNING_STATES and (chunk.heartbeat is None or chunk.heartbeat < _lease_expired()))
        if not claimable:
            return None
        if archive.stop_requested:
            ArchiveChunk.objects.filter(pk=chunk.pk).update(state=JobState.INTERRUPTED, claim="", finish_date=now)
            _settle_chunked(archive)
            return None
        if chunk.starts >= settings.FFV_JOB_MAX_ATTEMPTS:
            ArchiveChunk.objects.filter(pk=chunk.pk).update(
                state=JobState.FAILED, claim="", finish_date=now, msg_code="attempts_exhausted",
                msg_params={"attempts": chunk.starts})
            _settle_chunked(archive)
            return None
        chunk.state, chunk.claim, chunk.starts = JobState.STARTING, claim, chunk.starts + 1
        chunk.worker, chunk.heartbeat = worker[:256], now
        chunk.save(update_fields=["state", "claim", "starts", "worker", "heartbeat"])
    overlap = float((archive.job_checkpoint or {}).get("chunk_overlap") or settings.FFV_CHUNK_OVERLAP_SECONDS)
    span = Span(chunk.index, chunk.start, chunk.end)
    # Without a checkpoint of its own the chunk starts at its first frame with its own track numbering.
    resume = (chunk.checkpoint or {}).get("resume") or {
        "next_track_ids": {kind: first_track_id(chunk.index) for kind in OBJECT_KINDS},
        "progress": {"processed_duration": chunk.start},  # (for the metrics: its seconds start there)
    }
    return ClaimedJob(
        archive_id=archive.pk, task_id=archive.job_task_id, claim=claim, camera_group_id=archive.camera_group_id,
        source_name=archive.source_file.name, url=archive.url, stream_settings=archive.stream_settings,
        stream_settings_version=archive.stream_settings_version, attempt=chunk.starts, resumed=chunk.starts > 1,
        checkpoint=resume, chunk_id=chunk.pk, span=(span.start, span.decode_end(overlap)),
        overlap=OverlapRecorder(span.windows(overlap), chunk.overlap),
    )


def _chunk_fields(job: ClaimedJob, progress: Progress | None) -> dict[str, Any]:
    fields: dict[str, Any] = {"overlap": job.overlap.tracks if job.overlap is not None else {}}
    if progress is not None:
        fields["statistic"] = {**empty_statistic(), **progress.as_statistic()}
        fields["checkpoint"] = {"last_stream_timestamp": progress.last_stream_timestamp,
                                "frames_processed": progress.frames_processed, "resume": progress.checkpoint}
    return fields


@_survives_dropped_connections
def _chunk_report(job: ClaimedJob, progress: Progress) -> bool:
    with transaction.atomic():
        archive = VideoArchive.objects.select_for_update(no_key=True).filter(pk=job.archive_id).first()
        updated = archive is not None and _owned_by(job).update(
            state=JobState.IN_PROGRESS, heartbeat=timezone.now(), **_chunk_fields(job, progress))
        if not updated:
            logger.warning("video archive %s chunk %s: claim %s lost (stopped, deleted or taken over); stopping",
                           job.archive_id, job.chunk_id, job.claim)
            return False
        assert archive is not None
        _settle_chunked(archive)
        return not archive.stop_requested


@_survives_dropped_connections
def _chunk_finish(job: ClaimedJob, state: JobState, code: str = "", params: dict[str, Any] | None = None,
                  progress: Progress | None = None) -> bool:
    with transaction.atomic():
        archive = VideoArchive.objects.select_for_update(no_key=True).filter(pk=job.archive_id).first()
        finished = archive is not None and _owned_by(job).update(
            state=state, claim="", msg_code=code, msg_params=safe_params(params), finish_date=timezone.now(),
            **_chunk_fields(job, progress))
        if not finished:
            return False
        assert archive is not None
        _settle_chunked(archive)
    return True


def _settle_chunked(archive: VideoArchive) -> None:
    """The archive's statistic from its chunks' (its row locked by the caller); when every chunk has ended, the
    end of the job: stitching, the archive's final state, clustering."""
    now = timezone.now()
    chunks_of_job = ArchiveChunk.objects.filter(video_archive_id=archive.pk, job_task_id=archive.job_task_id)
    if archive.stop_requested:  # chunks still waiting in line end at once
        chunks_of_job.filter(state=JobState.QUEUED).update(state=JobState.INTERRUPTED, finish_date=now)
    chunks = list(chunks_of_job.order_by("index"))
    statistic = aggregate_statistic(chunks, archive.source_len)
    counts = event_counts(archive.pk)
    current = VideoArchive.objects.filter(pk=archive.pk, job_task_id=archive.job_task_id,
                                          job_state__in=RUNNING_STATES)
    if any(chunk.state not in CHUNK_ENDED for chunk in chunks):
        current.update(job_state=JobState.IN_PROGRESS, job_heartbeat=now, statistic=statistic,
                       face_count=counts["face"], body_count=counts["body"], car_count=counts["car"])
        return
    overlap = float((archive.job_checkpoint or {}).get("chunk_overlap") or settings.FFV_CHUNK_OVERLAP_SECONDS)
    stitch_events(archive_id=archive.pk, chunks=chunks, overlap=overlap)
    counts = event_counts(archive.pk)
    for kind, count in counts.items():
        statistic[f"{KIND_PLURALS[kind]}_posted"] = count
        statistic["objects"][kind]["posted"] = count
    states = {chunk.state for chunk in chunks}
    failed = next((chunk for chunk in chunks if chunk.state == JobState.FAILED), None)
    code, params = "", {}
    if JobState.INTERRUPTED in states:
        final = JobState.INTERRUPTED
    elif failed is not None:
        final, code, params = JobState.FAILED, failed.msg_code, {**failed.msg_params}
    else:
        final = JobState.COMPLETED
        if statistic["frames_processed"] + statistic["frames_dropped"] == 0:
            final, code = JobState.FAILED, "no_frames"
    ended = current.update(
        job_state=final, job_msg_code=code, job_msg_params=safe_params(params), job_claim="",
        processing_finish_date=now, stop_requested=False, statistic=statistic, job_heartbeat=now,
        face_count=counts["face"], body_count=counts["body"], car_count=counts["car"],
    )
    if ended:
        logger.info("video archive %s task %s: %d chunks ended; the job %s", archive.pk, archive.job_task_id,
                    len(chunks), final.value)
        notify_archive_status(archive.pk, final, code=code)
        transaction.on_commit(lambda: metrics.job_ended(final, code))
        transaction.on_commit(lambda: enqueue_clustering(archive.pk))


def _sweep_chunks(now: Any, stale: Any) -> list[int]:
    """Chunks whose worker died go back in line alone (the other chunks are left running); queued chunks whose
    message the broker lost are sent again. Returns the chunks re-sent."""
    resent: list[int] = []
    dead = ArchiveChunk.objects.filter(state__in=RUNNING_STATES, heartbeat__lt=stale)
    for chunk_id, archive_id, task_id, claim, starts in dead.values_list(
        "pk", "video_archive_id", "task_id", "claim", "starts"
    ):
        if starts >= settings.FFV_JOB_MAX_ATTEMPTS:
            with transaction.atomic():
                archive = VideoArchive.objects.select_for_update(no_key=True).filter(pk=archive_id).first()
                if archive is not None and ArchiveChunk.objects.filter(pk=chunk_id, claim=claim).update(
                        state=JobState.FAILED, claim="", finish_date=now, msg_code="attempts_exhausted",
                        msg_params={"attempts": starts}):
                    _settle_chunked(archive)
            continue
        if ArchiveChunk.objects.filter(pk=chunk_id, claim=claim, state__in=RUNNING_STATES,
                                       heartbeat__lt=stale).update(state=JobState.QUEUED, claim="", queued_date=now):
            logger.warning("video archive %s chunk %s: worker gone; chunk re-sent", archive_id, chunk_id)
            if _send_chunk_again(chunk_id, task_id):
                resent.append(chunk_id)
    long_queued = now - timedelta(seconds=settings.FFV_QUEUE_STALE_SECONDS)
    for chunk_id, task_id in ArchiveChunk.objects.filter(state=JobState.QUEUED, queued_date__lt=long_queued
                                                         ).values_list("pk", "task_id"):
        try:
            held = broker.broker_holds(task_id, settings.FFV_PROCESSING_QUEUE)
        except (BrokerError, KombuError, OSError) as exc:
            logger.warning("sweep: cannot ask the broker about chunk task %s: %s", task_id, exc)
            break
        if held is False and ArchiveChunk.objects.filter(pk=chunk_id, state=JobState.QUEUED).update(queued_date=now):
            if _send_chunk_again(chunk_id, task_id):
                resent.append(chunk_id)
    return resent


def _send_chunk_again(chunk_id: int, task_id: str) -> bool:
    """Send a queued chunk's message; a broker that cannot take it now leaves the chunk queued, and a later
    sweep's long-queued pass sends it (the rest of this sweep goes on)."""
    try:
        broker.send_chunk(chunk_id, task_id)
    except (BrokerError, KombuError, OSError) as exc:
        logger.warning("sweep: cannot re-send chunk %s (task %s): %s", chunk_id, task_id, exc)
        return False
    return True


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
    # A job cut into chunks is watched chunk by chunk (_sweep_chunks), never re-sent whole.
    dead = VideoArchive.objects.filter(job_state__in=RUNNING_STATES, job_heartbeat__lt=stale).exclude(
        job_checkpoint__has_key="chunks")
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
    _sweep_chunks(now, stale)
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
