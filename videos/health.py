"""How an archive's job state reads as the API's `health_status`.

Rules (api-notes.md "health_status"): gray = not running, green = running or done well, yellow = running with
soft errors, red = failed. An archive with no source yet waits for one (WAITING_FOR_SYNC, as the page's create
example shows); with a source and no job it is DISABLED.
"""

from __future__ import annotations

from typing import Any, TypedDict

from django.utils.translation import gettext_lazy as _

from processing.pipeline.progress import progress_fraction
from videos.job_messages import render_job_message
from videos.models import JobState, VideoArchive

OBJECT_KINDS = ("face", "body", "car")
# Statistic key prefixes per object kind, as FindFace names them.
KIND_PLURALS = {"face": "faces", "body": "bodies", "car": "cars"}
COUNTER_KEYS = ("posted", "failed", "not_posted")


class HealthStatus(TypedDict):
    enabled: bool
    status: str
    msg: str
    statistic: dict[str, Any]
    code: str
    code_desc: str


CODE_DESCRIPTIONS = {
    "WAITING_FOR_SYNC": _("No job in the video manager. Wait for synchronization."),
    "DISABLED": _("Video processing is not started"),
    "AWAITING": _("Video is waiting in the processing queue"),
    "STARTING": _("Video processing is starting"),
    "INPROGRESS": _("Video is being processed"),
    "INPROGRESS_SOFT_ERRORS": _("Video is being processed, with decoding errors"),
    "COMPLETED": _("Video processing is completed"),
    "COMPLETED_WITH_WARNING": _("Video processing is completed, but part of the video could not be analysed"),
    "MISCONFIGURED": _("Video processing failed"),
    "INTERRUPTED": _("Video processing was interrupted"),
}


def _empty_statistic() -> dict[str, Any]:
    statistic: dict[str, Any] = {"processed_duration": 0}
    for kind in OBJECT_KINDS:
        plural = KIND_PLURALS[kind]
        statistic.update({f"{plural}_posted": 0, f"{plural}_failed": 0, f"{plural}_not_posted": 0})
    statistic.update(
        {
            "processing_fps": 0,
            "frames_dropped": 0,
            "frames_processed": 0,
            "frames_imotion_skipped": 0,
            "decoding_soft_errors": 0,
            "frame_width": 0,
            "frame_height": 0,
            "last_stream_timestamp": 0,
            "objects": None,
            "job_starts": 0,
            # Ours, after the page's keys (see _progress_and_eta).
            "progress": 0,
            "eta_seconds": None,
        }
    )
    return statistic


# Built once: its values are immutable, so a shallow copy per archive is a fresh statistic.
_EMPTY_STATISTIC = _empty_statistic()


def empty_statistic() -> dict[str, Any]:
    """Every statistic key of api-notes.md, zeroed, in the order of the page's example."""
    return _EMPTY_STATISTIC.copy()


def code_descriptions() -> dict[str, str]:
    """Every code's description in the active language (a list serializer takes them once, not per row)."""
    return {key: str(text) for key, text in CODE_DESCRIPTIONS.items()}


def _ordered(value: dict[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    return {key: value[key] for key in order if key in value} | {k: v for k, v in value.items() if k not in order}


def _ordered_objects(objects: Any) -> Any:
    """`objects` in api-notes' order (face, body, car; posted, failed, not_posted): jsonb keeps no key order."""
    if not isinstance(objects, dict):
        return objects
    return {
        kind: _ordered(counters, COUNTER_KEYS) if isinstance(counters, dict) else counters
        for kind, counters in _ordered(objects, OBJECT_KINDS).items()
    }


def archive_statistic(archive: VideoArchive) -> dict[str, Any]:
    statistic = empty_statistic()
    statistic.update({key: value for key, value in archive.statistic.items() if key in statistic})
    statistic["objects"] = _ordered_objects(statistic["objects"])
    statistic["job_starts"] = archive.job_starts
    statistic["progress"], statistic["eta_seconds"] = _progress_and_eta(archive, statistic)
    return statistic


def _progress_and_eta(archive: VideoArchive, statistic: dict[str, Any]) -> tuple[float, float | None]:
    """`progress` (0..1) and `eta_seconds` by the job's state, from what the worker last wrote.

    - completed: 1 and 0;
    - running: the share of the video processed (0 while its length is unknown) and the worker's estimate,
      null until it has measured a rate (a few seconds after the first frames) or without a known length;
    - queued: 0 for a new job (its first attempt replaces the previous results), where it stopped for a job
      waiting to be resumed; null;
    - failed or interrupted: where it ended; null (it is not going to finish);
    - no job yet: 0 and null.
    """
    state = archive.job_state
    if state == JobState.COMPLETED:
        return 1.0, 0.0
    if state == JobState.IDLE or (state == JobState.QUEUED and archive.job_purge_pending):
        return 0.0, None
    try:
        done = float(statistic.get("processed_duration") or 0)
    except (TypeError, ValueError):
        done = 0.0
    fraction = round(progress_fraction(done, archive.source_len), 4)
    eta = statistic.get("eta_seconds") if state == JobState.IN_PROGRESS else None
    if not isinstance(eta, (int, float)) or eta < 0 or not archive.source_len:
        eta = None
    return fraction, eta


def _describe(key: str, descriptions: dict[str, str] | None) -> str:
    return descriptions[key] if descriptions is not None else str(CODE_DESCRIPTIONS[key])


def health_status(archive: VideoArchive, descriptions: dict[str, str] | None = None) -> HealthStatus:
    """`descriptions`: code_descriptions() of the active language, when the caller has them already."""
    state = archive.job_state
    statistic = archive_statistic(archive)
    soft_errors = bool(statistic.get("decoding_soft_errors"))
    if state == JobState.QUEUED:
        status, code, desc_key = "AWAITING", "gray", "AWAITING"
    elif state == JobState.STARTING:
        status, code, desc_key = "STARTING", "green", "STARTING"
    elif state == JobState.IN_PROGRESS:
        status = "INPROGRESS"
        code, desc_key = ("yellow", "INPROGRESS_SOFT_ERRORS") if soft_errors else ("green", "INPROGRESS")
    elif state == JobState.COMPLETED:
        # A completed job with a message (most of the video undecodable) is yellow: done, but not done well.
        status = "COMPLETED"
        code, desc_key = ("yellow", "COMPLETED_WITH_WARNING") if archive.job_msg_code else ("green", "COMPLETED")
    elif state == JobState.FAILED:
        status, code, desc_key = "MISCONFIGURED", "red", "MISCONFIGURED"
    elif state == JobState.INTERRUPTED:
        status, code, desc_key = "INTERRUPTED", "gray", "INTERRUPTED"
    elif archive.has_source:
        status, code, desc_key = "DISABLED", "gray", "DISABLED"
    else:
        return HealthStatus(
            enabled=False,
            status="WAITING_FOR_SYNC",
            msg="",
            statistic={},
            code="red",
            code_desc=_describe("WAITING_FOR_SYNC", descriptions),
        )
    return HealthStatus(
        enabled=state in (JobState.QUEUED, JobState.STARTING, JobState.IN_PROGRESS),
        status=status,
        msg=render_job_message(archive.job_msg_code, archive.job_msg_params),
        statistic=statistic,
        code=code,
        code_desc=_describe(desc_key, descriptions),
    )
