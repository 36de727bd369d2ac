from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from processing import onnx_runtime
from processing.onnx_runtime import choose_providers, clear_session_cache, get_session

CPU = ["CPUExecutionProvider"]


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    clear_session_cache()


@pytest.mark.parametrize(
    ("available", "prefer_gpu", "expected"),
    [
        (["CPUExecutionProvider"], True, ["CPUExecutionProvider"]),
        (["AzureExecutionProvider", "CPUExecutionProvider"], True, ["CPUExecutionProvider"]),
        (
            ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
            True,
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
        ),
        (["CUDAExecutionProvider", "CPUExecutionProvider"], False, ["CPUExecutionProvider"]),
    ],
)
def test_choose_providers(
    onnxruntime_module: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    available: list[str],
    prefer_gpu: bool,
    expected: list[str],
) -> None:
    monkeypatch.setattr(onnxruntime_module, "get_available_providers", lambda: available)
    assert choose_providers(prefer_gpu=prefer_gpu) == expected


def test_sessions_are_cached_per_model_settings_and_process(
    retinaface_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = get_session(retinaface_model_path, providers=CPU, intra_op_num_threads=1)
    # Another spelling of the same file shares the session; other settings do not.
    relative = os.path.relpath(retinaface_model_path)
    assert get_session(relative, providers=CPU, intra_op_num_threads=1) is first
    assert get_session(retinaface_model_path, providers=CPU, intra_op_num_threads=2) is not first

    # What a forked worker sees: the inherited entry is ignored under its new pid.
    real_pid = os.getpid()
    monkeypatch.setattr(onnx_runtime.os, "getpid", lambda: real_pid + 1)
    assert get_session(retinaface_model_path, providers=CPU, intra_op_num_threads=1) is not first
    monkeypatch.undo()
    assert get_session(retinaface_model_path, providers=CPU, intra_op_num_threads=1) is first

    clear_session_cache()
    assert get_session(retinaface_model_path, providers=CPU, intra_op_num_threads=1) is not first


def test_missing_model(onnxruntime_module: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        get_session(tmp_path / "absent.onnx")


def _detect_in_child(model_path: str, frame: np.ndarray, results: multiprocessing.Queue) -> None:
    from processing.detectors import RetinaFaceDetector

    faces = RetinaFaceDetector(model_path, providers=CPU, intra_op_num_threads=1).detect(frame)
    results.put(faces.xyxy.tolist())


def test_detector_works_in_a_forked_worker(retinaface_model_path: Path, messi_image: np.ndarray) -> None:
    from processing.detectors import RetinaFaceDetector

    # The parent has used its session before forking, as a Celery prefork parent might.
    parent = RetinaFaceDetector(retinaface_model_path, providers=CPU, intra_op_num_threads=1).detect(messi_image)
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_detect_in_child, args=(str(retinaface_model_path), messi_image, results))
    child.start()
    try:
        boxes = results.get(timeout=120)
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0
    np.testing.assert_allclose(boxes, parent.xyxy, atol=1e-3)
