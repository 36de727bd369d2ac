# ruff: noqa: F811  (the fixtures imported from test_pipeline are parameters here)
"""Detection in batches (GPU hosts, issue 15) gives what detection one frame at a time gives, on real footage.

On a CPU runner the CUDA path cannot run, so each piece of it is forced on here: batches of several frames,
a partial last batch padded with blank inputs, ORT I/O binding (bound on the CPU device), static-shape models,
frames of different sizes in one call, the pipeline's batched stage and the process-wide shared batcher.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from processing.batching import SharedBatches
from processing.config import ModelPaths, PipelineSettings
from processing.detections import Detections
from processing.detectors import RetinaFaceDetector, YoloDetector
from processing.pipeline import run_pipeline
from processing.pipeline.detection import Detectors
from processing.posting import PostedObject
from tests.footage import trim
from tests.processing.conftest import opencv_data_file, skip_or_fail
from tests.processing.test_pipeline import DETECTOR_DEFAULTS, event_keys, models  # noqa: F401  (a fixture)

CPU = ["CPUExecutionProvider"]


@pytest.fixture(scope="module")
def vtest_short(data_tmp_dir: Path) -> Path:
    return trim(opencv_data_file("vtest.avi", data_tmp_dir), data_tmp_dir / "vtest-62.mp4", 62)


@pytest.fixture(scope="module")
def megamind_short(data_tmp_dir: Path) -> Path:
    """Megamind's first 50 frames with a second of black after frame 30: face tracks end there (a checkpoint)."""
    return trim(opencv_data_file("Megamind.avi", data_tmp_dir), data_tmp_dir / "megamind-50-pause.mp4", 50,
                blank_at=30, blank_frames=24)


def read_frames(path: Path, indices: list[int]) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    try:
        for index in range(max(indices) + 1):
            ok, frame = capture.read()
            if not ok:
                skip_or_fail(f"cannot decode frame {index} of {path}")
            if index in indices:
                frames.append(frame)
    finally:
        capture.release()
    return frames


@pytest.fixture(scope="module")
def vtest_frames(data_tmp_dir: Path) -> list[np.ndarray]:
    return read_frames(opencv_data_file("vtest.avi", data_tmp_dir), [100, 250, 400, 550, 700])


@pytest.fixture(scope="module")
def megamind_frames(data_tmp_dir: Path) -> list[np.ndarray]:
    return read_frames(opencv_data_file("Megamind.avi", data_tmp_dir), [10, 40, 90, 150, 200])


def assert_same(batched: list[Detections], single: list[Detections]) -> None:
    assert len(batched) == len(single)
    for one, other in zip(batched, single, strict=True):
        assert len(one) == len(other)
        np.testing.assert_allclose(one.xyxy, other.xyxy, atol=0.05)
        np.testing.assert_allclose(one.confidence, other.confidence, atol=1e-4)
        np.testing.assert_array_equal(one.class_id, other.class_id)
        if "landmarks" in other.data:
            np.testing.assert_allclose(one.data["landmarks"], other.data["landmarks"], atol=0.05)


def one_by_one(detector: YoloDetector | RetinaFaceDetector, frames: list[np.ndarray]) -> list[Detections]:
    return [detector.detect(frame) for frame in frames]


@pytest.mark.parametrize("pad, io_binding", [(False, False), (True, False), (True, True)])
def test_yolo_in_batches_finds_what_it_finds_frame_by_frame(models: ModelPaths, vtest_frames, megamind_frames,
                                                            pad, io_binding):
    frames = vtest_frames + megamind_frames  # two frame sizes: two input shapes once the padding is trimmed
    single = one_by_one(YoloDetector(models.objects, providers=CPU, intra_op_num_threads=1), frames)
    assert sum(len(found) for found in single[:5]) >= 30, "vtest's crowd gives boxes to compare"
    batched = YoloDetector(models.objects, providers=CPU, intra_op_num_threads=1, max_batch_size=4,
                           pad_batches=pad, io_binding=io_binding).detect_batch(frames)
    assert_same(batched, single)


@pytest.mark.parametrize("pad, io_binding", [(False, False), (True, True)])
def test_retinaface_in_batches_finds_what_it_finds_frame_by_frame(models: ModelPaths, megamind_frames, vtest_frames,
                                                                  pad, io_binding):
    frames = megamind_frames + vtest_frames[:2]  # mixed sizes letterboxed to one input: one batch
    detector = RetinaFaceDetector(models.face, input_size=(320, 320), providers=CPU, intra_op_num_threads=1)
    single = one_by_one(detector, frames)
    assert sum(len(found) for found in single) >= 3, "Megamind's faces give boxes to compare"
    batched = RetinaFaceDetector(models.face, input_size=(320, 320), providers=CPU, intra_op_num_threads=1,
                                 max_batch_size=3, pad_batches=pad, io_binding=io_binding).detect_batch(frames)
    assert_same(batched, single)


def test_a_partial_batch_is_padded_to_a_power_of_two(models: ModelPaths, vtest_frames, monkeypatch):
    import processing.detectors._batches as batches

    shapes: list[int] = []
    real = batches.run_batch

    def recording(session, input_name, output_names, batch, *, io_binding):
        shapes.append(batch.shape[0])
        return real(session, input_name, output_names, batch, io_binding=io_binding)

    monkeypatch.setattr(batches, "run_batch", recording)
    detector = YoloDetector(models.objects, providers=CPU, intra_op_num_threads=1, max_batch_size=8, pad_batches=True)
    found = detector.detect_batch(vtest_frames)  # 5 frames: one call of 8
    assert shapes == [8]
    shapes.clear()
    assert_same(detector.detect_batch(vtest_frames[:3]), found[:3])  # 3 frames: 4
    assert shapes == [4]
    shapes.clear()
    six = YoloDetector(models.objects, providers=CPU, intra_op_num_threads=1, max_batch_size=6, pad_batches=True)
    assert_same(six.detect_batch(vtest_frames + vtest_frames[:4]), found + found[:4])  # 9 frames: 6, then 3 as 4
    assert shapes == [6, 4]
    monkeypatch.setattr(batches, "run_batch", real)
    assert_same(found, one_by_one(detector, vtest_frames))
    assert batches.padded_size(1, 8) == 1 and batches.padded_size(5, 6) == 6 and batches.padded_size(9, 32) == 16


@pytest.mark.parametrize("static_batch", [1, 3])
def test_a_static_shape_model_gets_its_own_batch_size(models: ModelPaths, vtest_frames, tmp_path: Path, static_batch):
    """A model exported with a fixed batch dimension: one frame a call for 1, padded batches of its size else."""
    import onnx

    model = onnx.load(str(models.objects))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = static_batch
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_value = static_batch
    static = tmp_path / f"yolo-static-{static_batch}.onnx"
    onnx.save(model, str(static))

    single = one_by_one(YoloDetector(models.objects, providers=CPU, intra_op_num_threads=1), vtest_frames)
    detector = YoloDetector(static, providers=CPU, intra_op_num_threads=1, max_batch_size=4)
    assert_same(detector.detect_batch(vtest_frames), single)


# --- the process-wide shared batcher


def test_shared_batches_merge_what_concurrent_pipelines_submit():
    calls: list[list[str]] = []
    batcher: SharedBatches[str, str] = SharedBatches(lambda items: calls.append(list(items)) or
                                                     [item.upper() for item in items], max_batch=8, max_wait=2.0)
    batcher.join()
    batcher.join()
    results: dict[str, list[str]] = {}

    def pipeline(name: str, items: list[str]) -> None:
        results[name] = batcher.submit(items)

    first = threading.Thread(target=pipeline, args=("a", ["a1", "a2", "a3"]))
    first.start()
    time.sleep(0.2)  # the first one waits for the second pipeline, which has not submitted yet
    pipeline("b", ["b1", "b2"])
    first.join()
    assert results == {"a": ["A1", "A2", "A3"], "b": ["B1", "B2"]}
    assert calls == [["a1", "a2", "a3", "b1", "b2"]]
    assert batcher.stats.merged_calls == 1


def test_a_lone_pipeline_never_waits_and_a_batch_is_capped():
    batcher: SharedBatches[int, int] = SharedBatches(lambda items: [item * 2 for item in items], max_batch=4,
                                                     max_wait=5.0)
    batcher.join()
    started = time.monotonic()
    assert batcher.submit([1, 2, 3]) == [2, 4, 6]
    assert time.monotonic() - started < 1.0
    batcher.leave()
    assert batcher.submit(list(range(10))) == [item * 2 for item in range(10)]  # one request: one call, however big


def test_an_error_of_a_batch_reaches_every_submitter_and_the_batcher_goes_on():
    failing = {"on": True}

    def run(items: list[int]) -> list[int]:
        if failing["on"]:
            raise RuntimeError("cuda out of memory")
        return items

    batcher: SharedBatches[int, int] = SharedBatches(run, max_batch=4, max_wait=0.0)
    with pytest.raises(RuntimeError, match="cuda out of memory"):
        batcher.submit([1])
    failing["on"] = False
    assert batcher.submit([1, 2]) == [1, 2]


# --- the pipeline's batched stage


EVERYTHING = {"detectors": {kind: {**DETECTOR_DEFAULTS[kind], "filter_min_quality": 0, "filter_min_size": 0}
                            for kind in ("face", "body", "car")}}


def run_collecting(settings: PipelineSettings) -> tuple[set[tuple], set[str], dict]:
    events: list[PostedObject] = []
    checkpoints: set[str] = set()
    result = run_pipeline(settings, on_progress=lambda p: checkpoints.add(repr(p.checkpoint)),
                          should_stop=lambda: False, on_event=lambda posted: events.append(posted) or True)
    return event_keys(events), checkpoints - {"None"}, result.progress.counters()


def run_collecting(settings: PipelineSettings) -> tuple[set[tuple], list[dict], dict]:
    events: list[PostedObject] = []
    checkpoints: list[dict] = []
    result = run_pipeline(settings, on_progress=lambda p: p.checkpoint and checkpoints.append(dict(p.checkpoint)),
                          should_stop=lambda: False, on_event=lambda posted: events.append(posted) or True)
    return event_keys(events), checkpoints, result.progress.counters()


def assert_same_run(batched: tuple[set[tuple], list[dict], dict], one: tuple[set[tuple], list[dict], dict]) -> None:
    assert one[0], "the clip gives events to compare"
    assert batched[0] == one[0]
    assert batched[2] == one[2]
    # Progress is reported between pushes, and a batch concludes several frames in one push: the batched run
    # reports fewer of the checkpoints, but each one it reports is one the frame-by-frame run took, the last too.
    assert all(checkpoint in one[1] for checkpoint in batched[1])
    if one[1]:  # (vtest's crowd never leaves every track closed: no checkpoint at all)
        assert batched[1] and batched[1][-1] == one[1][-1]


@pytest.mark.parametrize("clip, face_search", [("vtest_short", "bodies"), ("megamind_short", "frame")])
def test_a_pipeline_in_batches_posts_what_frame_by_frame_posts(request, models: ModelPaths, clip, face_search):
    """detect_batch > 1 (the CUDA default) changes how frames are detected, never what is tracked or posted.

    On vtest the faces are searched in the crops of the batch's persons, all in one call; on Megamind in whole
    frames. 4 frames a batch, 2 batches in flight: the last batch of the clip is a partial one.
    """
    settings = PipelineSettings.from_stream_settings(EVERYTHING, source=request.getfixturevalue(clip), models=models,
                                                     max_pixels=8192 * 8192, progress_interval=0.0,
                                                     face_search=face_search, ort_threads=1)
    one = run_collecting(settings)
    batched = run_collecting(dataclasses.replace(settings, detect_batch=4, detect_workers=2))
    assert batched[2]["frames_processed"] % 4, "the clip ends on a partial batch"
    assert_same_run(batched, one)
    if clip == "megamind_short":
        assert one[1], "the pause gives checkpoints to compare"


def test_two_pipelines_of_one_process_share_batches_and_post_their_own_events(vtest_short: Path,
                                                                              megamind_short: Path,
                                                                              models: ModelPaths):
    """Two runs side by side (a GPU host's chunks in one worker process) detect in common batches."""
    settings = {source: PipelineSettings.from_stream_settings(EVERYTHING, source=source, models=models,
                                                              max_pixels=8192 * 8192, progress_interval=0.0,
                                                              ort_threads=1)
                for source in (vtest_short, megamind_short)}
    alone = {source: run_collecting(each) for source, each in settings.items()}
    together: dict[Path, tuple] = {}
    errors: list[BaseException] = []

    def run(source: Path) -> None:
        try:
            together[source] = run_collecting(dataclasses.replace(settings[source], detect_batch=3,
                                                                  detect_batch_wait=0.05))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(source,)) for source in settings]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for source in settings:
        assert_same_run(together[source], alone[source])
    shared = Detectors(dataclasses.replace(settings[vtest_short], detect_batch=3, detect_batch_wait=0.05), 3)
    objects = shared.objects.batches
    assert objects.stats.merged_calls > 0, "frames of both videos went through one YOLO call"
    assert max(objects.stats.sizes) > 3


# --- settings


def test_auto_batch_is_one_on_a_cpu_and_the_gpu_default_on_cuda():
    from processing.onnx_runtime import CPU_PROVIDER, CUDA_PROVIDER, DEFAULT_GPU_BATCH, auto_batch_size
    from processing.pipeline.detection import resolve_detect_batch

    assert auto_batch_size([CPU_PROVIDER]) == 1
    assert auto_batch_size([CUDA_PROVIDER, CPU_PROVIDER]) == DEFAULT_GPU_BATCH > 1
    assert resolve_detect_batch(5) == 5
    import onnxruntime

    on_this_host = DEFAULT_GPU_BATCH if CUDA_PROVIDER in onnxruntime.get_available_providers() else 1
    assert resolve_detect_batch(0) == on_this_host


def test_auto_batch_follows_the_provider_the_session_got(models: ModelPaths, tmp_path: Path):
    from processing.onnx_runtime import DEFAULT_GPU_BATCH, get_session, on_cuda
    from processing.pipeline.detection import resolve_detect_batch

    settings = PipelineSettings.from_stream_settings(EVERYTHING, source=tmp_path / "none.mp4", models=models,
                                                     max_pixels=8192 * 8192, ort_threads=1)
    expected = DEFAULT_GPU_BATCH if on_cuda(get_session(models.objects, intra_op_num_threads=1)) else 1
    assert resolve_detect_batch(0, settings) == expected
    assert resolve_detect_batch(3, settings) == 3


def test_frames_held_by_batches_count_against_the_memory_limit(models: ModelPaths, tmp_path: Path):
    from processing.decoding import DecodeStats
    from processing.pipeline import FRAME_COPIES, PipelineError
    from processing.pipeline.source import buffer_depth

    stats = DecodeStats(width=1920, height=1080)
    frame = 1920 * 1080 * 3
    settings = PipelineSettings(source=tmp_path / "none.mp4", models=models, max_pixels=8192 * 8192,
                                detect_workers=1, memory_limit_bytes=frame * FRAME_COPIES * 4)
    assert buffer_depth(settings, stats) >= 1  # one frame at a time fits
    with pytest.raises(PipelineError) as raised:
        buffer_depth(dataclasses.replace(settings, detect_batch=8), stats)  # 8 x 2 frames held: they do not
    assert raised.value.code == "frame_too_large_for_memory"
