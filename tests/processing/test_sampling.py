"""Which frames the sampler hands to the detectors: time-based sampling and duplicate skipping (issue 17).

On real footage: vtest (10 fps street scene) re-encoded at other frame rates, once with every frame shown three
times (a 30 fps film made of repeated frames) and once as it is (every frame shows people moving).
"""

from __future__ import annotations

import math
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from processing.config import DetectorConfig, ModelPaths, PipelineSettings
from processing.decoding import DecodeStats, decode_frames
from processing.pipeline.progress import Progress
from processing.pipeline.sampler import FrameSampler, detect_gap_frames
from tests.processing.conftest import opencv_data_file

FRAMES = 60  # source frames of vtest used


def clip(source: Path, target: Path, *, fps: int, repeat: int = 1, size: tuple[int, int] = (640, 360)) -> Path:
    """The first FRAMES frames of `source` scaled to `size` (16:9, middle rows), each written `repeat` times, as
    an MPEG-4 stream of `fps` frames a second."""
    width, height = size
    with av.open(str(source)) as inp, av.open(str(target), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt, stream.bit_rate = width, height, "yuv420p", 8_000_000
        written = 0
        for index, frame in enumerate(inp.decode(inp.streams.video[0])):
            if index >= FRAMES:
                break
            image = frame.to_ndarray(format="bgr24")
            scaled = cv2.resize(image, (width, round(image.shape[0] * width / image.shape[1])),
                                interpolation=cv2.INTER_AREA)
            top = (scaled.shape[0] - height) // 2
            picture = np.ascontiguousarray(scaled[top:top + height])
            for _ in range(repeat):
                video_frame = av.VideoFrame.from_ndarray(picture, format="bgr24")
                video_frame.pts = written
                written += 1
                for packet in stream.encode(video_frame):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return target


@pytest.fixture(scope="module")
def vtest(data_tmp_dir: Path) -> Path:
    return opencv_data_file("vtest.avi", data_tmp_dir)


def settings_for(source: Path, *, rate: float = 0.0, skip_duplicates: bool = False, stride: int = 1,
                 miss_seconds: float = 1.0) -> PipelineSettings:
    return PipelineSettings(
        source=source, models=ModelPaths(face=Path("unused"), objects=Path("unused")), max_pixels=8192 * 8192,
        detectors={"body": DetectorConfig(kind="body", track_miss_interval=miss_seconds)},
        detect_rate=rate, skip_duplicate_frames=skip_duplicates, detect_stride=stride,
    )


def analysed(source: Path, settings: PipelineSettings, *, resume_frame: int = -1) -> list[int]:
    """The indexes of the frames the sampler hands on, decoding `source` as the pipeline does."""
    stats = DecodeStats()
    # The sampler starts once the first frame is decoded (and the frame rate known), as in run_pipeline.
    sampler = FrameSampler(settings, stats, Progress(), started=0.0, resume_frame=resume_frame, analyse=True)
    frames = decode_frames(source, stats, max_pixels=settings.max_pixels, first_index=max(0, resume_frame))
    return [frame.index for frame in frames if sampler.sample(frame) is not None]


@pytest.mark.parametrize(
    "fps, expected",
    [
        (10, list(range(FRAMES))),  # vtest's own rate: every frame, as before
        (25, [i for i in range(FRAMES) if i % 5 in (0, 3)]),  # 0, 3, 5, 8, 10...: ten a second
        (30, list(range(0, FRAMES, 3))),
        (60, list(range(0, FRAMES, 6))),
    ],
)
def test_time_sampling_detects_ten_frames_a_second_whatever_the_frame_rate(vtest, tmp_path, fps, expected):
    source = clip(vtest, tmp_path / f"vtest-{fps}.avi", fps=fps)

    assert analysed(source, settings_for(source, rate=10)) == expected
    assert analysed(source, settings_for(source)) == list(range(FRAMES))  # rate 0: every frame, as before
    # The trackers are told how far apart detections are (their shortest miss interval).
    assert detect_gap_frames(settings_for(source, rate=10), fps) == math.ceil(fps / 10)


def test_the_stride_still_applies_on_top_of_the_rate(vtest, tmp_path):
    source = clip(vtest, tmp_path / "vtest-30.avi", fps=30)

    assert analysed(source, settings_for(source, rate=10, stride=2)) == list(range(0, FRAMES, 6))


def test_repeated_frames_are_passed_over_and_moving_ones_are_not(vtest, tmp_path):
    repeated = clip(vtest, tmp_path / "vtest-30-repeated.avi", fps=30, repeat=3)
    moving = clip(vtest, tmp_path / "vtest-10.avi", fps=10)

    # Every frame is due (no rate): of each three copies only the first is analysed...
    assert analysed(repeated, settings_for(repeated, skip_duplicates=True)) == list(range(0, 3 * FRAMES, 3))
    # ...while in vtest itself, where people walk between any two frames, none is taken for a repeat.
    assert analysed(moving, settings_for(moving, skip_duplicates=True)) == list(range(FRAMES))


def test_a_still_scene_is_still_detected_twice_per_miss_interval(vtest, tmp_path):
    """A frozen picture is all duplicates, but a track must see a detection before its miss interval ends."""
    frozen = tmp_path / "frozen.avi"
    with av.open(str(vtest)) as inp:
        first = next(inp.decode(inp.streams.video[0])).to_ndarray(format="bgr24")
    with av.open(str(frozen), "w") as out:
        stream = out.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt, stream.bit_rate = 768, 576, "yuv420p", 8_000_000
        for index in range(90):
            video_frame = av.VideoFrame.from_ndarray(first, format="bgr24")
            video_frame.pts = index
            for packet in stream.encode(video_frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)

    # Half of the 1 s miss interval: frames 0, 15, 30, ... (0.5 s apart), not 30 a second, not never.
    assert analysed(frozen, settings_for(frozen, skip_duplicates=True)) == list(range(0, 90, 15))
    assert analysed(frozen, settings_for(frozen, skip_duplicates=True, miss_seconds=2)) == [0, 30, 60]


@pytest.mark.parametrize("repeat", [1, 3])
def test_a_resumed_run_analyses_the_frames_an_uninterrupted_one_does(vtest, tmp_path, repeat):
    source = clip(vtest, tmp_path / f"vtest-25-{repeat}.avi", fps=25, repeat=repeat)
    settings = settings_for(source, rate=10, skip_duplicates=True)
    whole = analysed(source, settings)
    assert len(whole) > 20

    for checkpoint in whole[5:20:4]:  # a checkpoint is always an analysed frame
        assert analysed(source, settings, resume_frame=checkpoint) == [i for i in whole if i > checkpoint]
