"""What a job's `msg` says: a code with parameters on the archive row, rendered in the request's language.

Workers store codes (`job_msg_code`, `job_msg_params`), never prose: the API renders them in English or Russian
when it is read, and no parameter may carry a server path (`safe_params` keeps only a file's own name).
The pipeline's own failures come with a code of processing.errors; the job's are listed here.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from django.utils.translation import gettext_lazy as _

logger = logging.getLogger(__name__)

MESSAGES: dict[str, Any] = {
    # The job's own (videos.jobs).
    "attempts_exhausted": _(
        "The job was started %(attempts)s times and each attempt ended with its worker gone (a crash or a kill); "
        "it is not tried again. Process the video again once the cause is fixed."
    ),
    "no_frames": _(
        "No frame of the video could be decoded; check the file, ffmpeg_format and ffmpeg_params."
    ),
    "few_frames": _(
        "Only %(decoded)s of about %(expected)s frames of the video could be decoded; the rest of it was not "
        "analysed."
    ),
    "internal_error": _("Internal error (%(error)s); the worker's log has the details."),
    "failed_before_upgrade": _("The job failed before the service was upgraded; process the video again to see why."),
    # The url policy (processing.sources.SourceNotAllowed reasons), as the worker applies it.
    "url_invalid": _("The url cannot be opened: it is not a valid URL."),
    "url_scheme": _("The url cannot be opened: only http and https URLs with a host are allowed."),
    "url_host": _("The url cannot be opened: host %(host)s is not in the allowed list."),
    "url_private": _("The url cannot be opened: private, loopback and link-local hosts are not allowed."),
    "url_unresolvable": _("The url cannot be opened: host %(host)s cannot be resolved."),
    # Fetching the url (processing.fetch): what answered, or did not, on an address is never said.
    "source_not_allowed": _("The url cannot be opened: it redirected to an address that is not allowed."),
    "source_unreachable": _("The video could not be fetched from its url."),
    "source_too_many_redirects": _("The url redirected more than %(limit)s times, or in a loop."),
    "source_too_large": _("The video at the url is larger than the limit of %(limit)s bytes (FFV_FETCH_MAX_BYTES)."),
    # The pipeline's (processing.errors.MESSAGES has each in English for logs; these are what users read).
    "source_missing": _("The video archive has no source: upload a file or set its url."),
    "source_file_missing": _("The archive's source file is no longer in storage: upload it again."),
    "source_unreadable": _("The video cannot be opened: %(reason)s."),
    "unsupported_container": _(
        "The file is not a readable video in a supported container (mp4, mov, avi, mkv, webm, flv, ts, mpg, wmv, ogv)."
    ),
    "still_image": _("The file is a still image, not a video."),
    "no_video_stream": _("The file has no video stream."),
    "no_frame_size": _("The video stream has no frame size."),
    "no_decodable_frame": _("No frame of the video could be decoded."),
    "frame_too_large": _("The frame size %(width)sx%(height)s exceeds the limit of %(max_pixels)s pixels."),
    "too_many_decoding_errors": _("Too many decoding errors (%(count)s); the last: %(reason)s."),
    "jpeg_encoding_failed": _("A frame could not be encoded as JPEG."),
    "source_stalled": _("The source stalled: no frame came from the decoder for %(seconds)s seconds."),
    "out_of_memory": _("The video needs more memory than this worker may use (FFV_WORKER_MEMORY_LIMIT_MB)."),
    "frame_too_large_for_memory": _(
        "The video's frames of %(width)sx%(height)s need more memory than this worker may use; lower "
        "FFV_MAX_FRAME_PIXELS to refuse such videos at upload, or give workers more memory."
    ),
    "tracker_unavailable": _(
        "Tracker %(tracker)s of the %(kind)s detector is not available on this worker (available: %(available)s)."
    ),
    "embedder_required": _("The deep_sort tracker of the %(kind)s detector needs an embedder model."),
    "bad_crop": _("The region %(crop)s lies outside the %(frame_width)sx%(frame_height)s frame."),
    "frame_not_analysed": _("A frame cannot be analysed: %(reason)s."),
    "model_missing": _("The model file %(file)s is missing on this worker; run `manage.py prepare_models` there."),
    "embedder_missing": _(
        "The embedder model %(file)s is missing on this worker; run `manage.py prepare_models` there."
    ),
    "model_obsolete": _(
        "%(file)s is FaceNet's TensorFlow graph, but FaceNet runs as ONNX now; run `manage.py prepare_models` to "
        "write facenet.onnx."
    ),
}


def safe_params(params: dict[str, Any] | None) -> dict[str, str | int | float | bool | None]:
    """Plain values only, and no directories: an absolute or relative path keeps just its file name."""
    clean: dict[str, str | int | float | bool | None] = {}
    for key, value in (params or {}).items():
        if isinstance(value, bool | int | float) or value is None:
            clean[str(key)] = value
            continue
        text = str(value)
        if os.sep in text or "/" in text:
            text = os.path.basename(text.rstrip("/\\")) if "://" not in text else text
        clean[str(key)] = text[:500]
    return clean


def render_job_message(code: str, params: dict[str, Any] | None) -> str:
    """The message of `code` in the active language; an unknown code reads as the processing catalog's English,
    or names itself, so a newer worker's code never breaks an older web process."""
    if not code:
        return ""
    template = MESSAGES.get(code)
    if template is None:
        from processing.errors import MESSAGES as PROCESSING_MESSAGES

        template = PROCESSING_MESSAGES.get(code)
    if template is None:
        return str(code)
    text = str(template)
    try:
        return text % (params or {}) if "%(" in text else text
    except (KeyError, TypeError, ValueError):
        logger.warning("job message %s: parameters %r do not fit its text", code, params)
        return text
