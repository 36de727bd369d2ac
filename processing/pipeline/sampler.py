"""The frame sampler: which decoded frames are analysed, and the picture the detectors get. No Django here.

In order: frames up to a resumed run's checkpoint are skipped (the run before handled them); with `play_speed`
the loop is paced and frames it is late for are dropped (unless `disable_drops`); every `detect_stride`-th
processed frame is analysed, unless it is too still (`imotion_threshold`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from processing.config import PipelineSettings
from processing.decoding import DecodedFrame, DecodeStats
from processing.frames import MotionMeter, apply_transform
from processing.pipeline.progress import Progress


@dataclass(frozen=True)
class SampledFrame:
    """A frame to detect in, with what tracking and posting need of it later."""

    frame: DecodedFrame
    stream_offset: float  # stream timestamp - file position (nonzero with use_stream_timestamp)
    image: np.ndarray  # what the detectors see (transformed, then cropped to `rot`)
    full: np.ndarray  # the whole transformed frame
    offset: tuple[int, int]  # where `image` lies in `full`
    # The frame counters once this frame was counted: what a checkpoint at this frame restores.
    frame_counters: dict[str, int]


class FrameSampler:
    """Counts every decoded frame in `progress` and returns the ones to analyse.

    `started` is the moment the run's clock starts (pacing compares stream time with it); `resume_frame` is the
    checkpoint's frame index (-1: not resumed); `analyse` False (no detector) counts frames without analysing.
    """

    def __init__(self, settings: PipelineSettings, stats: DecodeStats, progress: Progress, *, started: float,
                 resume_frame: int, analyse: bool) -> None:
        self.settings = settings
        self.stats = stats
        self.progress = progress
        self.started = started
        self.resume_frame = resume_frame
        self.analyse = analyse
        self.stride = max(1, settings.detect_stride)
        self.motion = MotionMeter()
        self.pace_origin: float | None = None  # stream position of the first frame this run analyses

    def sample(self, frame: DecodedFrame) -> SampledFrame | None:
        settings, progress = self.settings, self.progress
        # With use_stream_timestamp, times follow the container's clock (its pts), else the file's position.
        stream_offset = frame.stream_time - frame.timestamp if settings.use_stream_timestamp else 0.0
        progress.last_stream_timestamp = settings.start_stream_timestamp + frame.timestamp + stream_offset
        progress.processed_duration = frame.timestamp
        if frame.index <= self.resume_frame:
            # Frames up to a resumed run's checkpoint were handled by the run before; they only keep the
            # heartbeat going while the decoder reaches the checkpoint.
            if frame.index == self.resume_frame and settings.imotion_threshold > 0 and frame.image is not None:
                # The checkpoint's frame was analysed: it is what the motion of the next frames compares with.
                self.motion.measure(analysed_image(frame.image, settings)[0])
                self.motion.accept()
            return None
        if self.pace_origin is None:
            self.pace_origin = frame.timestamp
        if settings.play_speed > 0 and self._too_late(frame.timestamp - self.pace_origin):
            progress.frames_dropped += 1
            return None
        progress.frames_processed += 1
        if not self.analyse or frame.index % self.stride != 0:
            return None
        assert frame.image is not None
        image, full, offset = analysed_image(frame.image, settings)
        if settings.imotion_threshold > 0:
            if self.motion.measure(image) < settings.imotion_threshold:
                progress.frames_imotion_skipped += 1
                return None
            self.motion.accept()
        return SampledFrame(frame, stream_offset, image, full, offset, progress.frame_counters())

    def _too_late(self, stream_seconds: float) -> bool:
        """Pace to `play_speed`; True when the frame is over a frame interval late and drops are allowed."""
        settings = self.settings
        late = pace(stream_seconds, settings.play_speed, self.started)
        return not settings.disable_drops and late > 1.0 / ((self.stats.fps or 25.0) * settings.play_speed)


def analysed_image(image: np.ndarray, settings: PipelineSettings) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """(what the detectors see, the full transformed frame, where the first lies in the second)."""
    full = apply_transform(image, settings.video_transform)
    if settings.rot is None:
        return full, full, (0, 0)
    return settings.rot.apply(full), full, (settings.rot.x, settings.rot.y)


def pace(stream_seconds: float, play_speed: float, started: float) -> float:
    """Hold the loop back to `play_speed` times real time; returns how many seconds late the frame is (>= 0)."""
    delay = stream_seconds / play_speed - (time.monotonic() - started)
    if delay > 0:
        time.sleep(delay)
        return 0.0
    return -delay
