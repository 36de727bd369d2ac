"""Why a run cannot go on: `PipelineError` with a code of processing.errors.MESSAGES. No Django here."""

from __future__ import annotations

from processing.decoding import DecodeStats
from processing.errors import CodedError


class PipelineError(CodedError):
    """The run cannot go on for a reason the user can act on (`code` and `params` say which)."""


class SourceStalled(PipelineError):
    """The decoder handed over no frame for `decode_stall_seconds` (code ``source_stalled``)."""


def out_of_memory(stats: DecodeStats) -> PipelineError:
    """The error of a run whose frames do not fit the worker's memory (with their size, when known)."""
    if stats.width:
        return PipelineError("frame_too_large_for_memory", width=stats.width, height=stats.height)
    return PipelineError("out_of_memory")
