"""An int8 YOLOv8n for CPUs with fast int8 dot products (AVX512-VNNI, AVX-VNNI, ARM dotprod), made once.

:func:`quantize_yolo` turns the float ``yolov8n.onnx`` that :mod:`.yolo_export` writes into a static QDQ model
(``onnxruntime.quantization``): weights int8 per output channel, activations uint8 per tensor with ranges
calibrated on real frames.  What stays in float:

* the box and class decoding after the head (DFL softmax, anchors, sigmoid, the ``output0`` concat of pixel
  coordinates and 0..1 scores): only the network's operators are quantised, never ``model.22``'s decoding;
* the head's last convolutions (``model.22.cv2.*.2`` box logits and ``model.22.cv3.*.2`` class logits): one
  uint8 scale for all 80 class logits of an anchor loses the low scores near the 0.25 threshold.

Calibration frames come from files, not from the network (:func:`calibration_frames`): frames of the given
videos, evenly spread, and the given stills, each letterboxed into the service's 16:9 input (640x384) the way the
detector letterboxes it.  The default set is opencv-doc's ``Megamind.avi`` and its photographs of people and
streets, which ``./dev`` unpacks into ``var/data/opencv-doc`` (tests and the bench's ``vtest.avi`` are
deliberately not in it: the bench's recall of the int8 model is measured on footage it was not calibrated on).

Run once by ``manage.py prepare_models --int8`` (``./dev`` does, after the footage is there) or
``python -m processing.models_prep.prepare DIR --int8 --calibration-dir DATA``; never at run time.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

# The service's input for 16:9 footage at 640 (trimmed letterbox): calibration frames are letterboxed into it.
CALIBRATION_INPUT_HW = (384, 640)
# opencv-doc sample data: a video of faces and people (frames spread over it) and photographs of people, streets
# and cars.  vtest.avi (the bench's street footage) is left out on purpose.
DEFAULT_CALIBRATION_VIDEOS: tuple[str, ...] = ("Megamind.avi",)
DEFAULT_CALIBRATION_IMAGES: tuple[str, ...] = (
    "basketball1.png", "basketball2.png", "messi5.jpg", "home.jpg", "building.jpg", "licenseplate_motion.jpg",
    "lena.jpg", "stuff.jpg", "fruits.jpg", "baboon.jpg", "starry_night.jpg", "aero3.jpg",
)  # fmt: skip
DEFAULT_VIDEO_FRAMES = 48
# Head convolutions kept in float (see the module docstring).
FLOAT_HEAD_CONVS: tuple[str, ...] = tuple(
    f"model.22.{branch}.{level}.2/Conv_node" for branch in ("cv2", "cv3") for level in range(3)
)
# Operators quantised: the network body.  model.22's decoding uses none of these except its convs (see
# FLOAT_HEAD_CONVS) and Concat/Split/Mul/Sigmoid/Add nodes, which are excluded by name prefix below.
QUANTIZED_OPS: tuple[str, ...] = ("Conv", "Mul", "Sigmoid", "Add", "Concat", "Split", "MaxPool", "Resize")
DECODE_PREFIXES: tuple[str, ...] = ("model.22/", "model.22.dfl", "model.22.anchors", "model.22.strides",
                                    "model.22.0/", "model.22.1/", "model.22.2/")

__all__ = [
    "DEFAULT_CALIBRATION_IMAGES",
    "DEFAULT_CALIBRATION_VIDEOS",
    "CalibrationError",
    "calibration_frames",
    "calibration_sources",
    "quantize_yolo",
]


class CalibrationError(FileNotFoundError):
    """No calibration footage where it was looked for."""


def calibration_sources(
    data_dir: Path,
    videos: Sequence[str] = DEFAULT_CALIBRATION_VIDEOS,
    images: Sequence[str] = DEFAULT_CALIBRATION_IMAGES,
) -> list[Path]:
    """The calibration files found in ``data_dir``, videos first; every video must be there, stills are optional.
    A file Debian ships gzipped (``NAME.gz``) counts as ``NAME``.

    Raises:
        CalibrationError: ``data_dir`` lacks a video (or holds none of the files at all).
    """
    data_dir = Path(data_dir)

    def find(name: str) -> Path | None:
        for candidate in (data_dir / name, data_dir / f"{name}.gz"):
            if candidate.is_file():
                return candidate
        return None

    missing = [name for name in videos if find(name) is None]
    found = [path for path in map(find, (*videos, *images)) if path is not None]
    if missing or not found:
        raise CalibrationError(
            f"calibration footage missing in {data_dir}: {', '.join(missing) or 'no file'} (opencv-doc's sample data; "
            f"./dev unpacks it into var/data/opencv-doc, or set OPENCV_DOC_DATA_DIR)"
        )
    return found


def calibration_frames(sources: Sequence[Path], video_frames: int = DEFAULT_VIDEO_FRAMES) -> list[npt.NDArray[Any]]:
    """BGR frames: ``video_frames`` spread evenly over the videos among ``sources``, then every still."""
    import cv2

    frames: list[npt.NDArray[Any]] = []
    videos = [path for path in sources if _plain_name(path).suffix.lower() in (".avi", ".mp4", ".mkv", ".mov")]
    stills = [path for path in sources if path not in videos]
    per_video = max(1, video_frames // max(1, len(videos)))
    for path in videos:
        decoded = _video_frames(path)
        if not decoded:
            raise CalibrationError(f"{path}: no frame could be decoded")
        step = max(1, len(decoded) // per_video)
        frames.extend(decoded[::step][:per_video])
    for path in stills:
        data = np.frombuffer(_read(path), np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if image is not None:
            frames.append(image)
    return frames


def _plain_name(path: Path) -> Path:
    return path.with_suffix("") if path.suffix == ".gz" else path


def _read(path: Path) -> bytes:
    import gzip

    return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()


def _video_frames(path: Path) -> list[npt.NDArray[Any]]:
    import io

    import av

    with av.open(io.BytesIO(_read(path)), mode="r") as container:
        return [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over letterboxed frames."""

    def __init__(self, frames: Sequence[npt.NDArray[Any]]) -> None:
        from processing.detectors._letterbox import letterbox

        self._inputs: Iterator[dict[str, npt.NDArray[np.float32]]] = iter(
            [{"images": letterbox(frame, CALIBRATION_INPUT_HW)[0]} for frame in frames]
        )

    def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
        return next(self._inputs, None)


def quantize_yolo(float_model: Path, output: Path, frames: Sequence[npt.NDArray[Any]]) -> None:
    """Write the static int8 QDQ model of ``float_model`` to ``output``, calibrated on ``frames`` (BGR).

    Raises:
        ValueError: no frames.
    """
    if not frames:
        raise ValueError("quantize_yolo needs calibration frames")
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    model = onnx.load(str(float_model))
    nodes = [node for node in model.graph.node]
    excluded = [
        node.name
        for node in nodes
        if node.name in FLOAT_HEAD_CONVS or node.name.startswith(DECODE_PREFIXES)
    ]
    with tempfile.TemporaryDirectory(prefix="ffv-quantize-") as work:
        # The calibrator writes an augmented copy of the model next to itself; keep it out of the models dir.
        source = Path(work) / "float.onnx"
        onnx.save(model, str(source))
        quantize_static(
            str(source),
            str(output),
            _Reader(frames),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS),
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"CalibTensorRangeSymmetric": False, "CalibMovingAverage": False},
        )
    logger.info(
        "quantised %s into %s: %d frames, %d of %d nodes kept in float",
        float_model, output, len(frames), len(excluded), len(nodes),
    )
    os.chmod(output, 0o644)
