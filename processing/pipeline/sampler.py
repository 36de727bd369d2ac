"""The frame sampler: which decoded frames are analysed, and the picture the detectors get. No Django here.

In order: frames up to a resumed run's checkpoint are skipped (the run before handled them); with `play_speed`
the loop is paced and frames it is late for are dropped (unless `disable_drops`); a frame is analysed when it is
due, unless it is too still (`imotion_threshold`). Due: every `detect_stride`-th frame; with `detect_rate` > 0
instead the first frame in a new 1/`detect_rate`-second slot of video time (e.g. rate 10: every 3rd frame at
30 fps, every 6th at 60, frames 0, 3, 5, 8, 10... at 25), so the cost follows seconds of video, not frames; the
stride then divides the rate. With `skip_duplicate_frames` a due frame that shows what the last analysed one
showed (a repeated frame, a still scene) is passed over and the next frame is due instead, for at most half the
shortest `track_miss_interval` (so that no track ends for want of a detection). Slots count from the stream's
start and the last analysed frame is the checkpoint's frame, so a resumed run analyses the same frames as an
uninterrupted one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from processing.config import PipelineSettings
from processing.decoding import DecodedFrame, DecodeStats
from processing.frames import DuplicateMeter, MotionMeter, apply_transform
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
        self.rate = max(0.0, settings.detect_rate) / self.stride
        self.last_slot = -1  # the time slot of the last analysed frame
        self.last_analysed_time = -math.inf
        self.duplicates = DuplicateMeter() if settings.skip_duplicate_frames else None
        # Passing over duplicates may delay a detection by this much: under any track's miss interval.
        self.max_defer = 0.5 * min((config.track_miss_interval for config in settings.detectors.values()),
                                   default=0.0)

    def sample(self, frame: DecodedFrame) -> SampledFrame | None:
        settings, progress = self.settings, self.progress
        # With use_stream_timestamp, times follow the container's clock (its pts), else the file's position.
        stream_offset = frame.stream_time - frame.timestamp if settings.use_stream_timestamp else 0.0
        progress.last_stream_timestamp = settings.start_stream_timestamp + frame.timestamp + stream_offset
        progress.processed_duration = frame.timestamp
        if frame.index <= self.resume_frame:
            # Frames up to a resumed run's checkpoint were handled by the run before; they only keep the
            # heartbeat going while the decoder reaches the checkpoint.
            if frame.index == self.resume_frame and frame.image is not None:
                # The checkpoint's frame was analysed: it is what the next frames' slots, motion and duplicates
                # are measured from.
                image = analysed_image(frame.image, settings)[0]
                if settings.imotion_threshold > 0:
                    self.motion.measure(image)
                if self.duplicates is not None:
                    self.duplicates.changed_share(image)
                self._analysed(frame)
            return None
        if self.pace_origin is None:
            self.pace_origin = frame.timestamp
        if settings.play_speed > 0 and self._too_late(frame.timestamp - self.pace_origin):
            progress.frames_dropped += 1
            return None
        progress.frames_processed += 1
        if not self.analyse or not self.due(frame):
            return None
        assert frame.image is not None
        image, full, offset = analysed_image(frame.image, settings)
        if (self.duplicates is not None and self.duplicates.is_duplicate(image)
                and frame.timestamp - self.last_analysed_time < self.max_defer):
            return None  # still due: the next frame is looked at
        if settings.imotion_threshold > 0 and self.motion.measure(image) < settings.imotion_threshold:
            progress.frames_imotion_skipped += 1
            self.last_slot = self.slot(frame)  # the skipped frame takes its slot, as it takes its stride
            return None
        self._analysed(frame)
        return SampledFrame(frame, stream_offset, image, full, offset, progress.frame_counters())

    def slot(self, frame: DecodedFrame) -> int:
        """The 1/detect_rate-second slot of video time the frame falls in (its index without a rate).

        A quarter of a frame's duration is added so that a frame whose time is a slot's start up to rounding
        (frame 3 of a 30 fps video at 0.1 s) counts as in it.
        """
        if self.rate <= 0:
            return frame.index
        return math.floor((frame.timestamp + 0.25 / (self.stats.fps or 25.0)) * self.rate)

    def due(self, frame: DecodedFrame) -> bool:
        """The first frame of a new time slot since the last analysed frame (or time went back by more than a
        slot: a timestamp reset in the stream must not stop detection); without a rate, on the frame stride."""
        if self.rate <= 0:
            return frame.index % self.stride == 0
        slot = self.slot(frame)
        return slot > self.last_slot or slot < self.last_slot - 1

    def _analysed(self, frame: DecodedFrame) -> None:
        """`frame` (measured by the meters in use) is analysed: what the next frames are compared with."""
        self.last_slot = self.slot(frame)
        self.last_analysed_time = frame.timestamp
        self.motion.accept()
        if self.duplicates is not None:
            self.duplicates.accept()

    def _too_late(self, stream_seconds: float) -> bool:
        """Pace to `play_speed`; True when the frame is over a frame interval late and drops are allowed."""
        settings = self.settings
        late = pace(stream_seconds, settings.play_speed, self.started)
        return not settings.disable_drops and late > 1.0 / ((self.stats.fps or 25.0) * settings.play_speed)


def detect_gap_frames(settings: PipelineSettings, fps: float) -> int:
    """Frames between two detections by the stride and the rate (the trackers' shortest miss interval)."""
    stride = max(1, settings.detect_stride)
    if settings.detect_rate > 0:
        return max(1, math.ceil(fps * stride / settings.detect_rate - 1e-6))
    return stride


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
