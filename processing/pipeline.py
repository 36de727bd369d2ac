"""The video pipeline's driver: decode, (detect, track, post: see the pipeline issue), report progress.

It takes plain settings and callbacks and returns plain results; `videos.tasks` glues it to the database.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from processing.decoding import DecodeStats, decode_frames


@dataclass(frozen=True)
class PipelineSettings:
    source: str | Path
    max_pixels: int
    start_at: float = 0.0
    progress_interval: float = 1.0
    stream_settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class Progress:
    frames_processed: int = 0
    processed_duration: float = 0.0
    last_stream_timestamp: float = 0.0
    processing_fps: float = 0.0
    decoding_soft_errors: int = 0
    frame_width: int = 0
    frame_height: int = 0
    source_len: float | None = None

    def as_statistic(self) -> dict[str, Any]:
        return {
            "frames_processed": self.frames_processed,
            "processed_duration": round(self.processed_duration, 3),
            "last_stream_timestamp": round(self.last_stream_timestamp, 3),
            "processing_fps": round(self.processing_fps, 2),
            "decoding_soft_errors": self.decoding_soft_errors,
            "frame_width": self.frame_width,
            "frame_height": self.frame_height,
        }


@dataclass(frozen=True)
class PipelineResult:
    progress: Progress
    stopped: bool


def run_pipeline(
    settings: PipelineSettings,
    *,
    on_progress: Callable[[Progress], None],
    should_stop: Callable[[], bool],
) -> PipelineResult:
    """Process the source; `on_progress` is called about every `progress_interval` seconds and at the end.

    `should_stop` is asked at the same rate; when it says yes the run ends early with `stopped=True`.
    Raises processing.media.MediaError when the source cannot be read at all.
    """
    stats = DecodeStats()
    progress = Progress()
    started = time.monotonic()
    last_report = started
    frames_this_run = 0
    for frame in decode_frames(settings.source, stats, start_at=settings.start_at, max_pixels=settings.max_pixels):
        frames_this_run += 1
        progress.frames_processed += 1
        progress.last_stream_timestamp = frame.timestamp
        progress.processed_duration = frame.timestamp
        now = time.monotonic()
        if now - last_report >= settings.progress_interval:
            _fill(progress, stats, frames_this_run, now - started)
            on_progress(progress)
            last_report = now
            if should_stop():
                return PipelineResult(progress=progress, stopped=True)
    _fill(progress, stats, frames_this_run, time.monotonic() - started)
    if stats.duration:
        progress.processed_duration = stats.duration
    on_progress(progress)
    return PipelineResult(progress=progress, stopped=False)


def _fill(progress: Progress, stats: DecodeStats, frames: int, elapsed: float) -> None:
    progress.decoding_soft_errors = stats.soft_errors
    progress.frame_width, progress.frame_height = stats.width, stats.height
    progress.source_len = stats.duration
    progress.processing_fps = frames / elapsed if elapsed > 0 else 0.0
