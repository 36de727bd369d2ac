"""`run_pipeline`: the stages put together. No Django here.

source (decoder thread, watchdog) -> sampler (resume skip, pacing, stride or rate, duplicates, motion) ->
detection (frames in flight on a thread pool) -> tracking (per kind: track, post; checkpoints), with the progress
reporter ticking after every frame and while the decoder keeps the loop waiting.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator

from processing.config import PipelineSettings
from processing.decoding import DecodedFrame, DecodeStats
from processing.media import CropOutsideFrame
from processing.pipeline.detection import (
    BatchedDetection,
    Detectors,
    FrameDetection,
    ThreadedDetection,
    resolve_detect_batch,
)
from processing.pipeline.errors import PipelineError, out_of_memory
from processing.pipeline.progress import PipelineResult, Progress, ProgressReporter
from processing.pipeline.sampler import FrameSampler
from processing.pipeline.source import FrameSource, buffer_depth
from processing.pipeline.tracking import OnTracked, Tracking, load_embedders
from processing.posting import PostedObject


def run_pipeline(
    settings: PipelineSettings,
    *,
    on_progress: Callable[[Progress], None],
    should_stop: Callable[[], bool],
    on_event: Callable[[PostedObject], bool],
    on_tracked: OnTracked | None = None,
) -> PipelineResult:
    """Process the source; `on_event` stores one posted object and says whether that worked.

    `on_progress` is called about every `progress_interval` seconds and at the end, and `should_stop` is asked
    at the same rate, also while the decoder is slow; when it says yes the run ends early with `stopped=True`.
    Raises processing.media.MediaError when the source cannot be read at all and PipelineError when the
    settings cannot be honoured or the source stalls (`decode_stall_seconds`).
    """
    stats = DecodeStats()
    progress = Progress()
    resume = settings.resume_from or {}
    resume_frame = int(resume.get("frame_index", -1))
    if resume_frame >= 0:
        progress.restore(resume.get("progress") or {})
        progress.resumed_from_frame = resume_frame
        progress.checkpoint = dict(resume)
    reporter = ProgressReporter(progress, stats, interval=settings.progress_interval, on_progress=on_progress,
                                should_stop=should_stop, end_time=settings.span[1] if settings.span else None)
    source = FrameSource.open(settings, stats, first_index=max(0, resume_frame))
    try:
        frames = iter(source)
        first, stopped = _first_frame(frames, reporter, stats)
        if not stopped:
            if settings.detect_batch <= 0:  # "auto": by the provider the detectors' sessions got
                settings = dataclasses.replace(settings,
                                               detect_batch=resolve_detect_batch(settings.detect_batch, settings))
            source.release(buffer_depth(settings, stats))
            detectors = Detectors(settings, settings.detect_batch)
            embedders = load_embedders(settings)
            started = time.monotonic()
            reporter.start(started)
            sampler = FrameSampler(settings, stats, progress, started=started, resume_frame=resume_frame,
                                   analyse=bool(settings.detectors))
            detection: FrameDetection = (
                BatchedDetection(detectors, settings.detect_batch, settings.detect_workers)
                if settings.detect_batch > 1 else ThreadedDetection(detectors, settings.detect_workers))
            tracking: Tracking | None = None
            try:
                if first is not None:
                    tracking = Tracking(settings, progress, fps=stats.fps or 25.0, embedders=embedders,
                                        on_event=on_event, resume=resume)
                    tracking.on_tracked = on_tracked
                    reporter.counts = tracking
                    stopped = _run_frames(_chain(first, frames), sampler, detection, tracking, reporter)
            except CropOutsideFrame as exc:
                raise PipelineError("bad_crop", crop=str(exc.crop), frame_width=exc.frame_width,
                                    frame_height=exc.frame_height) from exc
            except ValueError as exc:
                raise PipelineError("frame_not_analysed", reason=str(exc)) from exc
            except MemoryError as exc:
                raise out_of_memory(stats) from exc.with_traceback(None)  # (its frames hold the decoder)
            finally:
                detection.close()
                source.close()
            if not stopped:
                if tracking is not None:
                    offset = 0.0
                    if settings.use_stream_timestamp:
                        offset = (progress.last_stream_timestamp - settings.start_stream_timestamp
                                  - progress.processed_duration)
                    tracking.finish(offset)
                if stats.duration:
                    progress.processed_duration = max(progress.processed_duration, stats.duration)
    finally:
        source.close()
    reporter.final()
    return PipelineResult(progress=progress, stopped=stopped)


def _first_frame(frames: Iterator[DecodedFrame | None], reporter: ProgressReporter, stats: DecodeStats
                 ) -> tuple[DecodedFrame | None, bool]:
    """(the first frame, or None for a video without frames; whether a stop was asked while waiting for it).

    It is decoded before the others so that its size is known before buffering starts.
    """
    try:
        for frame in frames:
            if frame is not None:
                return frame, False
            if reporter.tick():
                return None, True
    except MemoryError as exc:
        raise out_of_memory(stats) from exc.with_traceback(None)  # (its frames hold the decoder)
    return None, False


def _chain(first: DecodedFrame, rest: Iterator[DecodedFrame | None]) -> Iterator[DecodedFrame | None]:
    yield first
    yield from rest


def _run_frames(frames: Iterator[DecodedFrame | None], sampler: FrameSampler, detection: FrameDetection,
                tracking: Tracking, reporter: ProgressReporter) -> bool:
    """The frame loop; returns whether a stop was asked. Frames are detected several at once (see detection),
    then tracked and posted one by one in frame order."""
    for frame in frames:
        if frame is not None:
            sampled = sampler.sample(frame)
            if sampled is not None:
                for detected in detection.push(sampled):
                    tracking.conclude(detected)
        if reporter.tick():
            return True
    for detected in detection.drain():
        tracking.conclude(detected)
    return False
