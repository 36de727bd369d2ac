"""Errors a job can end with: a stable code and parameters, which the Django side renders for the user.

Every code is in `MESSAGES` with its English template (``%(name)s`` parameters); `str(exc)` is that template
filled in, for logs. Parameters are numbers and short words, never a server path: the message is shown to users,
and a file appears by its name only (`file_label`). No Django here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

Param = str | int | float

MESSAGES: dict[str, str] = {
    # The source (processing.media.MediaError)
    "source_missing": "the archive has no source",
    "source_file_missing": "the archive's source file is no longer in storage",
    "source_unreadable": "the video cannot be opened: %(reason)s",
    "unsupported_container": "not a readable video in a supported container "
                             "(mp4, mov, avi, mkv, webm, flv, ts, mpg, wmv, ogv)",
    "still_image": "the file is a still image, not a video",
    "no_video_stream": "the file has no video stream",
    "no_frame_size": "the video stream has no frame size",
    "no_decodable_frame": "no frame of the video could be decoded",
    "frame_too_large": "frame size %(width)dx%(height)d exceeds the limit of %(max_pixels)d pixels",
    "too_many_decoding_errors": "too many decoding errors (%(count)d), last: %(reason)s",
    "jpeg_encoding_failed": "the frame could not be encoded as JPEG",
    # Fetching a url source (processing.fetch.FetchError): never a network detail (see processing.fetch)
    "source_not_allowed": "the source redirected to an address that is not allowed",
    "source_unreachable": "the source could not be fetched",
    "source_too_many_redirects": "the source redirected more than %(limit)d times, or in a loop",
    "source_too_large": "the source is larger than the limit of %(limit)d bytes",
    # The run (processing.pipeline.PipelineError)
    "source_stalled": "the source stalled: no frame came from the decoder for %(seconds)s seconds",
    "out_of_memory": "the job needs more memory than this worker may use",
    "frame_too_large_for_memory": "the video's frames of %(width)dx%(height)d need more memory than this worker "
                                  "may use; lower FFV_MAX_FRAME_PIXELS to refuse such videos at upload, or give "
                                  "workers more memory",
    "tracker_unavailable": "tracker %(tracker)s of the %(kind)s detector is not available on this worker "
                           "(available: %(available)s)",
    "embedder_required": "the deep_sort tracker of the %(kind)s detector needs an embedder model",
    "bad_crop": "the region %(crop)s lies outside the %(frame_width)dx%(frame_height)d frame",
    "frame_not_analysed": "a frame cannot be analysed: %(reason)s",
    # The worker's models (ModelMissing, also a FileNotFoundError)
    "model_missing": "model file %(file)s not found on this worker",
    "embedder_missing": "embedder model %(file)s not found on this worker",
    "model_obsolete": "%(file)s is the TensorFlow graph: FaceNet runs as ONNX now; "
                      "`manage.py prepare_models` writes facenet.onnx from it",
}


class CodedError(Exception):
    """An error with a stable `code` (a key of `MESSAGES`) and its `params`; `str()` is the English message."""

    def __init__(self, code: str, /, **params: Param) -> None:
        if code not in MESSAGES:
            raise ValueError(f"unknown error code {code!r}")
        for name, value in params.items():
            if isinstance(value, str) and os.path.isabs(value):
                raise ValueError(f"parameter {name} of {code} is an absolute path; pass file_label(path)")
        self.code = code
        self.params: dict[str, Param] = dict(params)
        super().__init__(MESSAGES[code] % self.params)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.code, self.params))


def _rebuild(cls: type[CodedError], code: str, params: dict[str, Param]) -> CodedError:
    return cls(code, **params)


class ModelMissing(CodedError, FileNotFoundError):
    """A model file this worker needs is not there (`manage.py prepare_models` writes it)."""


def file_label(path: str | os.PathLike[str]) -> str:
    """How a message names a file: its name without the directory (server paths are not for users)."""
    return Path(path).name


def reason_of(exc: BaseException) -> str:
    """A short reason from an FFmpeg/OS error without the file name it carries (which is a server path)."""
    strerror = getattr(exc, "strerror", None)
    if isinstance(strerror, str) and strerror:
        return strerror
    text = str(exc)
    filename = getattr(exc, "filename", None)
    if filename:
        text = text.replace(str(filename), file_label(str(filename)))
    return text or type(exc).__name__
