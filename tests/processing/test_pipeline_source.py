"""The source stage's watchdog against a real stuck demuxer: a named pipe that stops sending mid-video."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from processing.config import ModelPaths, PipelineSettings
from processing.pipeline import PipelineResult, Progress, SourceStalled, run_pipeline
from tests.conftest import make_video

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")


class StalledPipe:
    """A FIFO fed the first half of a real MPEG-TS video, then held open without a byte more."""

    def __init__(self, tmp_path: Path) -> None:
        video = make_video(tmp_path / "clip.ts", frames=150)
        self.data = video.read_bytes()
        self.path = tmp_path / "live.ts"
        os.mkfifo(self.path)
        self.written = threading.Event()  # the part is written: from now on the pipe is silent
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._write, daemon=True)
        self.thread.start()

    def _write(self) -> None:
        with open(self.path, "wb") as pipe:
            pipe.write(self.data[: len(self.data) // 2])
            pipe.flush()
            self.written.set()
            self.release.wait(timeout=60)

    def close(self) -> None:
        self.release.set()
        self.thread.join(timeout=10)


@pytest.fixture
def stalled_pipe(tmp_path: Path) -> Iterator[StalledPipe]:
    pipe = StalledPipe(tmp_path)
    yield pipe
    pipe.close()


def settings_for(source: Path, **kwargs) -> PipelineSettings:
    unused = Path("unused.onnx")  # no detector: the run only decodes
    return PipelineSettings(source=source, models=ModelPaths(face=unused, objects=unused), max_pixels=8192 * 8192,
                            ffmpeg_format="mpegts", ffmpeg_options={"probesize": "32768", "analyzeduration": "0"},
                            progress_interval=0.2, **kwargs)


def test_a_source_that_stops_sending_ends_the_run_with_the_stall_error(stalled_pipe: StalledPipe) -> None:
    reports: list[tuple[float, int]] = []

    def on_progress(progress: Progress) -> None:
        reports.append((time.monotonic(), progress.frames_processed))

    started = time.monotonic()
    with pytest.raises(SourceStalled) as caught:
        run_pipeline(settings_for(stalled_pipe.path, decode_stall_seconds=2), on_progress=on_progress,
                     should_stop=lambda: False, on_event=lambda posted: True)
    assert time.monotonic() - started < 30
    assert stalled_pipe.thread.is_alive()  # the pipe was still open: the run did not wait for its end
    assert caught.value.code == "source_stalled" and caught.value.params == {"seconds": 2}
    assert str(stalled_pipe.path.parent) not in str(caught.value)
    # Frames came before the stall, and the heartbeat went on while the decoder was stuck.
    decoded = max(frames for _, frames in reports)
    assert 0 < decoded < 150
    during_stall = [at for at, frames in reports if frames == decoded]
    assert len(during_stall) >= 3 and during_stall[-1] - during_stall[0] >= 1.0


def test_a_stop_asked_while_the_source_is_stalled_is_honoured(stalled_pipe: StalledPipe) -> None:
    asked: list[float] = []

    def should_stop() -> bool:
        if stalled_pipe.written.is_set():
            asked.append(time.monotonic())
            return asked[-1] - asked[0] >= 1.0  # a while into the silence
        return False

    started = time.monotonic()
    result = run_pipeline(settings_for(stalled_pipe.path, decode_stall_seconds=600), on_progress=lambda p: None,
                          should_stop=should_stop, on_event=lambda posted: True)
    assert isinstance(result, PipelineResult) and result.stopped is True
    assert 0 < result.progress.frames_processed < 150
    assert time.monotonic() - started < 30
    assert stalled_pipe.thread.is_alive()


def test_the_whole_video_through_a_pipe_is_not_a_stall(tmp_path: Path) -> None:
    video = make_video(tmp_path / "clip.ts", frames=60)
    pipe = tmp_path / "feed.ts"
    os.mkfifo(pipe)

    def write() -> None:
        with open(pipe, "wb") as out:
            out.write(video.read_bytes())

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    result = run_pipeline(replace(settings_for(pipe), decode_stall_seconds=5), on_progress=lambda p: None,
                          should_stop=lambda: False, on_event=lambda posted: True)
    writer.join(timeout=10)
    assert result.stopped is False and result.progress.frames_processed == 60
