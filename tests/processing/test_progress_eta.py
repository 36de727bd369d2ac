"""ProgressReporter's eta_seconds on a fake clock: none until a rate is measured, then what is left at it."""

from __future__ import annotations

from processing.decoding import DecodeStats
from processing.pipeline.progress import ETA_MIN_SPAN, ETA_WINDOW, Progress, ProgressReporter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def reporter_at(clock: Clock, progress: Progress, duration: float | None = 60.0) -> ProgressReporter:
    stats = DecodeStats()
    stats.duration = duration
    return ProgressReporter(progress, stats, interval=0.5, on_progress=lambda p: None, should_stop=lambda: False,
                            clock=clock)


def run(clock: Clock, progress: Progress, reporter: ProgressReporter, seconds: float, speed: float) -> list:
    """Process `seconds` of wall time at `speed` seconds of video per second; the ETA of each report."""
    etas = []
    for _ in range(int(seconds / 0.5)):
        clock.now += 0.5
        progress.processed_duration += 0.5 * speed
        progress.frames_processed += 1
        reporter.tick()
        etas.append(progress.eta_seconds)
    return etas


def test_no_eta_until_the_rate_is_measured_then_the_time_left_at_that_rate():
    clock, progress = Clock(), Progress()
    reporter = reporter_at(clock, progress)
    etas = run(clock, progress, reporter, seconds=6, speed=2.0)  # 12 s of a 60 s video in 6 s
    measured_from = next(i for i, eta in enumerate(etas) if eta is not None)
    # Measured over ETA_MIN_SPAN from the first report with processed frames (the first, at index 0).
    assert measured_from * 0.5 == ETA_MIN_SPAN
    assert etas[-1] == (60 - 12) / 2.0
    assert progress.as_statistic()["progress"] == 0.2
    assert list(progress.as_statistic())[-2:] == ["progress", "eta_seconds"]


def test_the_eta_follows_a_change_of_pace_within_the_window():
    clock, progress = Clock(), Progress()
    reporter = reporter_at(clock, progress, duration=1000.0)
    run(clock, progress, reporter, seconds=20, speed=4.0)
    etas = run(clock, progress, reporter, seconds=ETA_WINDOW + 5, speed=1.0)
    assert etas[-1] == 1000 - progress.processed_duration  # at 1x once the fast part left the window


def test_no_eta_without_a_known_length_nor_for_frames_a_resume_skips():
    clock, progress = Clock(), Progress()
    reporter = reporter_at(clock, progress, duration=None)
    assert run(clock, progress, reporter, seconds=5, speed=1.0)[-1] is None

    resumed = Progress()
    resumed.restore({"frames_processed": 500})
    clock = Clock()
    reporter = reporter_at(clock, resumed)
    for _ in range(10):  # decoding up to the checkpoint: video flies by, no frame is processed
        clock.now += 0.5
        resumed.processed_duration += 10
        reporter.tick()
        assert resumed.eta_seconds is None


def test_a_chunks_eta_is_the_time_to_its_own_end_not_the_videos():
    """A chunk of [20, 40) s of a 60 s video, analysed at 2x: its time left is to 40 s, so the archive's ETA
    (the slowest running chunk's, videos.chunks) is not the whole video's remainder."""
    clock, progress = Clock(), Progress()
    stats = DecodeStats()
    stats.duration = 60.0
    reporter = ProgressReporter(progress, stats, interval=0.5, on_progress=lambda p: None, should_stop=lambda: False,
                                clock=clock, end_time=40.0)
    progress.processed_duration = 20.0  # decoding starts at the chunk's keyframe
    etas = run(clock, progress, reporter, seconds=5, speed=2.0)
    assert progress.processed_duration == 30.0
    assert etas[-1] == (40 - 30) / 2.0
