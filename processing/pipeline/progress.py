"""The run's counters (`Progress`) and the stage that reports them, throttled. No Django here."""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from processing.config import OBJECT_KINDS
from processing.decoding import DecodeStats

KIND_PLURALS = {"face": "faces", "body": "bodies", "car": "cars"}
# eta_seconds comes from the rate (seconds of video per second of wall time) over about the last ETA_WINDOW
# seconds: long enough to smooth a busy scene, short enough to follow a change of pace; none is given before the
# rate has been measured over ETA_MIN_SPAN seconds (model loading and the first frames say nothing yet).
ETA_WINDOW = 30.0
ETA_MIN_SPAN = 2.0


def progress_fraction(processed_duration: float, source_len: float | None) -> float:
    """How far into the video a run is, 0..1; 0 while its length is unknown (e.g. a URL stream without one)."""
    if not source_len or source_len <= 0:
        return 0.0
    return min(1.0, max(0.0, processed_duration / source_len))


@dataclass
class KindCounters:
    posted: int = 0
    failed: int = 0
    not_posted: int = 0


@dataclass
class Progress:
    frames_processed: int = 0
    frames_dropped: int = 0
    frames_imotion_skipped: int = 0
    processed_duration: float = 0.0
    last_stream_timestamp: float = 0.0
    processing_fps: float = 0.0
    decoding_soft_errors: int = 0
    frame_width: int = 0
    frame_height: int = 0
    source_len: float | None = None
    # Frames the container says it holds (duration x frame rate), when it says: a run that decodes far fewer
    # (a truncated or damaged file) is told apart from one that saw the whole video.
    frames_expected: int | None = None
    objects: dict[str, KindCounters] = field(default_factory=lambda: {k: KindCounters() for k in OBJECT_KINDS})
    # The last quiet point (an analysed frame after which no track was open): where a resumed run starts.
    checkpoint: dict[str, Any] | None = None
    resumed_from_frame: int | None = None
    # Seconds of wall time left at the recent rate; None until that rate is measured (ProgressReporter).
    eta_seconds: float | None = None

    @property
    def fraction(self) -> float:
        return progress_fraction(self.processed_duration, self.source_len)

    def frame_counters(self) -> dict[str, int]:
        """How many frames were processed, dropped and skipped as still so far."""
        return {
            "frames_processed": self.frames_processed,
            "frames_dropped": self.frames_dropped,
            "frames_imotion_skipped": self.frames_imotion_skipped,
        }

    def counters(self) -> dict[str, Any]:
        """What a resumed run restores (see `checkpoint`); `processed_duration` is where the run was, so that
        the seconds a resumed run replays up to there are not counted again as work done (videos.metrics)."""
        return {
            **self.frame_counters(),
            "processed_duration": round(self.processed_duration, 3),
            "objects": {kind: dataclasses.asdict(c) for kind, c in self.objects.items()},
        }

    def restore(self, counters: Mapping[str, Any]) -> None:
        self.frames_processed = int(counters.get("frames_processed", 0))
        self.frames_dropped = int(counters.get("frames_dropped", 0))
        self.frames_imotion_skipped = int(counters.get("frames_imotion_skipped", 0))
        for kind, values in (counters.get("objects") or {}).items():
            if kind in self.objects:
                self.objects[kind] = KindCounters(**{k: int(v) for k, v in values.items()})

    def as_statistic(self) -> dict[str, Any]:
        statistic: dict[str, Any] = {"processed_duration": round(self.processed_duration, 3)}
        for kind, counters in self.objects.items():
            plural = KIND_PLURALS[kind]
            statistic[f"{plural}_posted"] = counters.posted
            statistic[f"{plural}_failed"] = counters.failed
            statistic[f"{plural}_not_posted"] = counters.not_posted
        statistic.update(
            {
                "processing_fps": round(self.processing_fps, 2),
                "frames_dropped": self.frames_dropped,
                "frames_processed": self.frames_processed,
                "frames_imotion_skipped": self.frames_imotion_skipped,
                "decoding_soft_errors": self.decoding_soft_errors,
                "frame_width": self.frame_width,
                "frame_height": self.frame_height,
                "last_stream_timestamp": round(self.last_stream_timestamp, 3),
                "objects": {
                    kind: {"posted": c.posted, "failed": c.failed, "not_posted": c.not_posted}
                    for kind, c in self.objects.items()
                },
                "progress": round(self.fraction, 4),
                "eta_seconds": self.eta_seconds,
            }
        )
        return statistic


@dataclass(frozen=True)
class PipelineResult:
    progress: Progress
    stopped: bool


class NotPostedCounts(Protocol):
    def not_posted(self) -> Mapping[str, int]:
        """Tracks of each kind that ended below their quality filter so far."""
        ...


class ProgressReporter:
    """Fills `progress` from the decoder's stats and hands it to `on_progress` about every `interval` seconds,
    asking `should_stop` each time (the job's heartbeat: a stop request is honoured, the lease renewed).

    `tick` is called after every decoded frame and whenever the decoder keeps the loop waiting, so reports go
    on while a slow source is waited for. `clock` is time.monotonic (a test's fake clock otherwise).
    """

    def __init__(self, progress: Progress, stats: DecodeStats, *, interval: float,
                 on_progress: Callable[[Progress], None], should_stop: Callable[[], bool],
                 clock: Callable[[], float] = time.monotonic, end_time: float | None = None) -> None:
        self.progress = progress
        # Where this run stops, in seconds of the video: a chunk's span end (the time left is to there, not to the
        # end of the whole video); None: the end of the video.
        self.end_time = end_time
        self.stats = stats
        self.interval = interval
        self.on_progress = on_progress
        self.should_stop = should_stop
        self.clock = clock
        self.counts: NotPostedCounts | None = None
        # (time, processed_duration) of recent reports, for eta_seconds. A resumed run counts from the frames
        # restored: the frames it decodes up to its checkpoint fly by and would make the rate look far too good.
        self.samples: deque[tuple[float, float]] = deque()
        self.frames_at_start = progress.frames_processed
        self.start(clock())

    def start(self, started: float) -> None:
        """Measure processing_fps, the rate behind eta_seconds (and the next report) from `started`: when the
        models are loaded."""
        self.started = self.last_report = started
        self.samples.clear()

    def tick(self) -> bool:
        """Report when `interval` has passed since the last report; True when the run is asked to stop."""
        now = self.clock()
        if now - self.last_report < self.interval:
            return False
        self._fill(now)
        self.on_progress(self.progress)
        self.last_report = now
        return self.should_stop()

    def final(self) -> None:
        self._fill(self.clock())
        self.on_progress(self.progress)

    def _fill(self, now: float) -> None:
        progress, stats = self.progress, self.stats
        elapsed = now - self.started
        progress.decoding_soft_errors = stats.soft_errors
        progress.frame_width, progress.frame_height = stats.width, stats.height
        progress.source_len = stats.duration
        if stats.frames:
            progress.frames_expected = stats.frames
        elif stats.duration and stats.fps:
            progress.frames_expected = round(stats.duration * stats.fps)
        progress.processing_fps = progress.frames_processed / elapsed if elapsed > 0 else 0.0
        progress.eta_seconds = self._eta(now)
        if self.counts is not None:
            for kind, count in self.counts.not_posted().items():
                progress.objects[kind].not_posted = count

    def _eta(self, now: float) -> float | None:
        """Seconds left at the rate of about the last ETA_WINDOW seconds; None until it can be measured."""
        progress = self.progress
        if progress.frames_processed <= self.frames_at_start:
            return None
        samples = self.samples
        samples.append((now, progress.processed_duration))
        while len(samples) > 2 and now - samples[1][0] >= ETA_WINDOW:
            samples.popleft()
        if not progress.source_len or progress.source_len <= 0:
            return None
        (then, done_then), done = samples[0], progress.processed_duration
        if now - then < ETA_MIN_SPAN or done <= done_then:
            return None
        rate = (done - done_then) / (now - then)
        end = progress.source_len if self.end_time is None else min(self.end_time, progress.source_len)
        return round(max(0.0, end - done) / rate, 1)
