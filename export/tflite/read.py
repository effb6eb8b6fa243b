"""An int8 ``.tflite`` MLP read as a weight package: its integers, scales and zero points as
they are, no re-quantization.

What is read (anything else is refused, naming the operator and its index):

* ``FULLY_CONNECTED`` with int8 input and output, int8 weights symmetric per tensor or per
  output channel (zero point 0), an int32 bias (or none), fused ``RELU``, ``RELU6`` or none;
* ``RESHAPE`` before the first layer (Keras' ``Flatten``, a ``Reshape`` to one row);
* ``QUANTIZE`` float32 -> int8 at the input and ``DEQUANTIZE`` int8 -> float32 at the output
  (a float interface), or an int8 interface;
* ``SOFTMAX`` or ``LOGISTIC`` after the last layer: dropped, since the class is the argmax of
  the logits either way (the quantized softmax can only add ties).

Each layer's requantization multiplier and shift are derived from the scales as TFLite's
kernels derive them (``QuantizeMultiplier`` of ``double(s_in) * double(s_w) / double(s_out)``),
so the package holds the integers TFLite Micro and LiteRT compute with.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tflite

from export.contract.package import MAX_DIM, MAX_LAYERS, Dense, Package, quantize_multiplier
from export.tflite.schema import (
    ACTIVATION_NAMES,
    TFLITE_IDENTIFIER,
    operator_code,
    operator_name,
    tensor_type_name,
)

_OP = tflite.BuiltinOperator
_T = tflite.TensorType
_ACT = tflite.ActivationFunctionType
_HEADS = {_OP.SOFTMAX: "SOFTMAX", _OP.LOGISTIC: "LOGISTIC"}
_SHAPE_MATH = frozenset({_OP.SHAPE, _OP.STRIDED_SLICE, _OP.PACK, _OP.CONCATENATION, _OP.GATHER,
                         _OP.SLICE, _OP.CAST, _OP.SQUEEZE, _OP.EXPAND_DIMS, _OP.REDUCE_PROD,
                         _OP.MUL})
"""Operators that may compute the target shape of a RESHAPE (Keras' Flatten on a batch of any
size: SHAPE, STRIDED_SLICE, PACK)."""
_FLOAT_CONVERT = ("convert it with full-integer quantization (TFLiteConverter with a "
                  "representative_dataset and target_spec.supported_ops = "
                  "[tf.lite.OpsSet.TFLITE_BUILTINS_INT8])")


class UnsupportedTFLite(ValueError):
    """A ``.tflite`` the int8 engine cannot run as it is (the message names the part)."""


@dataclass
class TFLiteMLP:
    """What :func:`read_tflite` found: the package and how the file was laid out."""

    package: Package
    """The layers, with the package's default rounding (``single``); the caller sets it."""
    interface: str
    """``"int8"`` (int8 input and output tensors) or ``"float32"`` (QUANTIZE / DEQUANTIZE)."""
    producer: str
    """The model's description field (``"MLIR Converted."`` from TFLiteConverter)."""
    operators: list[str]
    """Every operator of the graph, in order."""
    notes: list[str] = field(default_factory=list)
    """What was dropped or assumed."""
    logit_columns: tuple[int, ...] = ()
    """Which package outputs are the model's last layer outputs, in order (all of them but a
    binary classifier's added constant column)."""


@dataclass
class _Tensor:
    index: int
    name: str
    type: int
    shape: tuple[int, ...]
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int
    data: bytes


def _tensor(model: tflite.Model, graph: tflite.SubGraph, index: int, buf: bytes) -> _Tensor:
    t = graph.Tensors(index)
    q = t.Quantization()
    scale = np.zeros(0, np.float32) if q is None or q.ScaleIsNone() else \
        q.ScaleAsNumpy().astype(np.float32)
    zp = np.zeros(0, np.int64) if q is None or q.ZeroPointIsNone() else \
        q.ZeroPointAsNumpy().astype(np.int64)
    axis = 0 if q is None else int(q.QuantizedDimension())
    data = b""
    if t.Buffer() > 0:
        b = model.Buffers(t.Buffer())
        if b.Offset() > 1:  # stored after the flatbuffer (models over 2 GB)
            data = buf[b.Offset(): b.Offset() + b.Size()]
            if len(data) != b.Size():
                raise UnsupportedTFLite(f"tensor {index}: its data runs past the end of the file")
        elif not b.DataIsNone():
            data = b.DataAsNumpy().tobytes()
    name = (t.Name() or b"").decode("utf-8", "replace")
    shape = tuple(int(d) for d in t.ShapeAsNumpy()) if not t.ShapeIsNone() else ()
    return _Tensor(index, name, int(t.Type()), shape, scale, zp, axis, data)


def _describe(t: _Tensor) -> str:
    return f"tensor {t.index} {t.name!r}" if t.name else f"tensor {t.index}"


def _named(t: _Tensor, role: str) -> str:
    """``weights tensor 5 'dense/MatMul'``: the tensor by its role, index and name."""
    return f"{role} {_describe(t)}"


def _check_type(t: _Tensor, want: int, where: str, role: str) -> None:
    if t.type == want:
        return
    got = tensor_type_name(t.type)
    if t.type == _T.UINT8:
        raise UnsupportedTFLite(
            f"{where}: {_named(t, role)} is uint8: the kit imports int8 quantization (convert "
            "with inference_input_type and inference_output_type tf.int8)")
    if t.type == _T.FLOAT32 and want in (_T.INT8, _T.INT32):
        raise UnsupportedTFLite(
            f"{where}: {_named(t, role)} is float32: this is a float (or dynamic-range) model; "
            f"{_FLOAT_CONVERT}")
    raise UnsupportedTFLite(f"{where}: {_named(t, role)} is {got}; "
                            f"expected {tensor_type_name(want)}")


def _per_tensor(t: _Tensor, where: str, role: str) -> tuple[float, int]:
    if t.scale.size != 1 or t.zero_point.size != 1:
        raise UnsupportedTFLite(f"{where}: {_named(t, role)} has {t.scale.size} scales; an "
                                "activation has one scale and one zero point")
    scale, zp = float(t.scale[0]), int(t.zero_point[0])
    if not (math.isfinite(scale) and scale > 0) or not -128 <= zp <= 127:
        raise UnsupportedTFLite(f"{where}: {_named(t, role)} has scale {scale!r} and zero "
                                f"point {zp}; expected a positive scale, zero point in "
                                "[-128, 127]")
    return scale, zp


def _array(t: _Tensor, dtype: str, count: int, where: str, role: str) -> np.ndarray:
    size = np.dtype(dtype).itemsize * count
    if len(t.data) != size:
        raise UnsupportedTFLite(f"{where}: {_named(t, role)} holds {len(t.data)} bytes of "
                                f"data; its shape {t.shape} needs {size}")
    return np.frombuffer(t.data, dtype=dtype).copy()


def _activation_range(code: int, scale: float, zp: int, where: str) -> bool:
    """Whether the fused activation ``code`` is a ReLU (True) or none (False), as a clamp the
    package expresses; TFLite clamps RELU6 at ``zp + round(6 / scale)``."""
    if code == _ACT.NONE:
        return False
    if code == _ACT.RELU:
        return True
    if code == _ACT.RELU6:
        top = zp + math.floor(float(np.float32(6.0) / np.float32(scale)) + 0.5)
        if top < 127:
            raise UnsupportedTFLite(
                f"{where}: RELU6 clamps at int8 code {top} (output scale {scale:g}, zero point "
                f"{zp}); the engine clamps a dense layer at 127")
        return True
    raise UnsupportedTFLite(f"{where}: fused activation {ACTIVATION_NAMES.get(code, code)} is "
                            "not supported (NONE, RELU, RELU6)")


def _dense(model: tflite.Model, graph: tflite.SubGraph, op: tflite.Operator, buf: bytes,
           x: _Tensor, where: str) -> tuple[Dense, _Tensor]:
    inputs = [int(i) for i in op.InputsAsNumpy()]
    if len(inputs) not in (2, 3) or op.OutputsLength() != 1:
        raise UnsupportedTFLite(f"{where}: {len(inputs)} inputs and {op.OutputsLength()} outputs;"
                                " expected input, weights, bias and one output")
    w = _tensor(model, graph, inputs[1], buf)
    y = _tensor(model, graph, int(op.Outputs(0)), buf)
    opts = tflite.FullyConnectedOptions()
    table = op.BuiltinOptions()
    if table is not None:
        opts.Init(table.Bytes, table.Pos)
        if opts.WeightsFormat() != tflite.FullyConnectedOptionsWeightsFormat.DEFAULT:
            raise UnsupportedTFLite(f"{where}: shuffled weights are not supported")
    _check_type(w, _T.INT8, where, "weights")
    _check_type(x, _T.INT8, where, "input")
    _check_type(y, _T.INT8, where, "output")
    s_in, zp_in = _per_tensor(x, where, "input")
    s_out, zp_out = _per_tensor(y, where, "output")
    if len(w.shape) != 2:
        raise UnsupportedTFLite(f"{where}: weights of shape {w.shape}; expected (outputs, inputs)")
    n_out, n_in = w.shape
    width = math.prod(x.shape[1:]) if len(x.shape) > 1 else math.prod(x.shape)
    if n_in != width:
        raise UnsupportedTFLite(f"{where}: weights take {n_in} inputs; the layer receives "
                                f"{width} (shape {x.shape})")
    if w.scale.size not in (1, n_out) or w.zero_point.size != w.scale.size or (
            w.scale.size > 1 and w.axis != 0):
        raise UnsupportedTFLite(f"{where}: weights quantized with {w.scale.size} scales along "
                                f"axis {w.axis}; expected one, or one per output channel")
    if (w.zero_point != 0).any():
        zp = int(w.zero_point[w.zero_point != 0][0])
        raise UnsupportedTFLite(f"{where}: weight zero point {zp}; int8 weights are symmetric "
                                "(zero point 0)")
    weight_scale = np.broadcast_to(w.scale, (n_out,)).astype(np.float32)
    if not (np.isfinite(weight_scale).all() and (weight_scale > 0).all()):
        raise UnsupportedTFLite(f"{where}: a weight scale is not positive and finite")
    weights = _array(w, "<i1", n_out * n_in, where, "weights").reshape(n_out, n_in)
    if (weights == -128).any():
        raise UnsupportedTFLite(f"{where}: weights hold -128; int8 weights are symmetric in "
                                "[-127, 127]")
    bias = np.zeros(n_out, np.int32)
    if len(inputs) == 3 and inputs[2] >= 0:
        b = _tensor(model, graph, inputs[2], buf)
        _check_type(b, _T.INT32, where, "bias")
        bias = _array(b, "<i4", n_out, where, "bias")
    relu = False
    if table is not None:
        relu = _activation_range(int(opts.FusedActivationFunction()), s_out, zp_out, where)
    pairs = []
    for o in range(n_out):
        try:  # TFLite: QuantizeMultiplier(double(s_in) * double(s_w) / double(s_out))
            pairs.append(quantize_multiplier(s_in * float(weight_scale[o]) / s_out))
        except ValueError as exc:
            raise UnsupportedTFLite(f"{where}, output channel {o}: {exc}") from None
    layer = Dense(
        weights=weights, bias=bias.astype(np.int32),
        multiplier=np.array([m for m, _ in pairs], np.int32),
        shift=np.array([s for _, s in pairs], np.int32),
        weight_scale=weight_scale, input_scale=s_in, input_zero_point=zp_in,
        output_scale=s_out, output_zero_point=zp_out, relu=relu,
    )
    return layer, y


def _binary(layer: Dense) -> Dense:
    """A one-output layer as two outputs: a constant 0 (zero weights and bias), then the logit."""
    def two(a: np.ndarray, first: object) -> np.ndarray:
        return np.concatenate([np.asarray([first], a.dtype), a])

    return Dense(
        weights=np.vstack([np.zeros_like(layer.weights), layer.weights]),
        bias=two(layer.bias, 0), multiplier=two(layer.multiplier, layer.multiplier[0]),
        shift=two(layer.shift, layer.shift[0]),
        weight_scale=two(layer.weight_scale, layer.weight_scale[0]),
        input_scale=layer.input_scale, input_zero_point=layer.input_zero_point,
        output_scale=layer.output_scale, output_zero_point=layer.output_zero_point,
        relu=layer.relu,
    )


def _shape_math(model: tflite.Model, graph: tflite.SubGraph, path: str) -> dict[int, int]:
    """The operators that only compute a RESHAPE's target shape, each with that RESHAPE's
    index."""
    producer: dict[int, int] = {}
    for i in range(graph.OperatorsLength()):
        for t in graph.Operators(i).OutputsAsNumpy():
            producer[int(t)] = i
    found: dict[int, int] = {}
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        if operator_code(model, op.OpcodeIndex()) != _OP.RESHAPE or op.InputsLength() < 2:
            continue
        todo = [int(op.Inputs(1))]
        while todo:
            j = producer.get(todo.pop())
            if j is None or j in found:
                continue
            shape_op = graph.Operators(j)
            if operator_code(model, shape_op.OpcodeIndex()) not in _SHAPE_MATH:
                name = operator_name(model, shape_op.OpcodeIndex())
                raise UnsupportedTFLite(f"{path}: operator {j} {name} computes the target shape "
                                        f"of RESHAPE {i}, which is not supported")
            found[j] = i
            if operator_code(model, shape_op.OpcodeIndex()) != _OP.SHAPE:  # SHAPE reads data
                todo += [int(t) for t in shape_op.InputsAsNumpy() if t >= 0]
    return found


def _model(buf: bytes) -> tflite.Model:
    if len(buf) < 8 or buf[4:8] != TFLITE_IDENTIFIER:
        raise UnsupportedTFLite(f"not a TensorFlow Lite flatbuffer (identifier {buf[4:8]!r}, "
                                f"expected {TFLITE_IDENTIFIER!r})")
    return tflite.Model.GetRootAs(buf, 0)


def parse_tflite(buf: bytes, path: str = "model") -> TFLiteMLP:
    """Read an int8 MLP from the bytes of a ``.tflite``; :class:`UnsupportedTFLite` names
    what is not supported, or says that the file is damaged."""
    try:
        return _parse(buf, path)
    except UnsupportedTFLite:
        raise
    except (IndexError, struct.error, ValueError, TypeError, AttributeError,
            UnicodeDecodeError, OverflowError, MemoryError) as exc:
        raise UnsupportedTFLite(
            f"{path}: not a readable TensorFlow Lite flatbuffer ({len(buf)} bytes, damaged or "
            f"truncated: {type(exc).__name__})") from None


def _parse(buf: bytes, path: str) -> TFLiteMLP:
    model = _model(buf)
    if model.SubgraphsLength() != 1:
        raise UnsupportedTFLite(f"{path}: {model.SubgraphsLength()} subgraphs; the kit imports a "
                                "model of one subgraph (no control flow)")
    graph = model.Subgraphs(0)
    names = [operator_name(model, graph.Operators(i).OpcodeIndex())
             for i in range(graph.OperatorsLength())]
    if graph.InputsLength() != 1 or graph.OutputsLength() != 1:
        raise UnsupportedTFLite(f"{path}: {graph.InputsLength()} inputs and "
                                f"{graph.OutputsLength()} outputs; an MLP has one of each")
    first = _tensor(model, graph, int(graph.Inputs(0)), buf)
    out_index = int(graph.Outputs(0))
    notes: list[str] = []
    x = first
    layers: list[Dense] = []
    head: str | None = None
    end: str | None = None
    shape_math = _shape_math(model, graph, path)
    for reshape in sorted(set(shape_math.values())):
        ops = [j for j, r in shape_math.items() if r == reshape]
        notes.append(f"operators {', '.join(f'{j} {names[j]}' for j in sorted(ops))} compute the "
                     f"target shape of RESHAPE {reshape} from the batch size (Keras' Flatten)")
    for i, name in enumerate(names):
        op = graph.Operators(i)
        code = operator_code(model, op.OpcodeIndex())
        where = f"operator {i} {name}"
        if i in shape_math and not layers:
            continue
        if end is not None:
            raise UnsupportedTFLite(f"{path}: {where} after {end}: the kit imports an MLP, which "
                                    "ends there")
        if op.InputsLength() < 1 or int(op.Inputs(0)) != x.index:
            raise UnsupportedTFLite(
                f"{path}: {where} does not read the output of the operator before it: the graph "
                "is not a chain of layers")
        if code == _OP.QUANTIZE and not layers and x.type != _T.INT8:
            y = _tensor(model, graph, int(op.Outputs(0)), buf)
            _check_type(x, _T.FLOAT32, f"{path}: {where}", "input")
            _check_type(y, _T.INT8, f"{path}: {where}", "output")
            x = y
        elif code == _OP.RESHAPE and not layers:
            y = _tensor(model, graph, int(op.Outputs(0)), buf)
            if math.prod(y.shape[1:]) != math.prod(first.shape[1:]) or (
                    x.type == _T.INT8 and (y.scale.tolist(), y.zero_point.tolist()) !=
                    (x.scale.tolist(), x.zero_point.tolist())):
                raise UnsupportedTFLite(f"{path}: {where} changes more than the layout of its "
                                        f"input ({x.shape} -> {y.shape})")
            x = y
        elif code == _OP.FULLY_CONNECTED and head is None:
            if len(layers) == MAX_LAYERS:
                raise UnsupportedTFLite(f"{path}: more than {MAX_LAYERS} layers; a weight "
                                        "package holds at most that many")
            layer, x = _dense(model, graph, op, buf, x, f"{path}: {where}")
            layers.append(layer)
        elif code in _HEADS and layers and head is None:
            head = _HEADS[code]
            notes.append(f"{where} at the output dropped: the class is the argmax of the "
                         "logits either way (its int8 output can only add ties)")
            x = _tensor(model, graph, int(op.Outputs(0)), buf)
        elif code == _OP.DEQUANTIZE and layers:
            _check_type(x, _T.INT8, f"{path}: {where}", "input")
            end = where
            x = _tensor(model, graph, int(op.Outputs(0)), buf)
        else:
            why = "is not supported" if code not in (
                _OP.QUANTIZE, _OP.RESHAPE, _OP.FULLY_CONNECTED, _OP.DEQUANTIZE, *_HEADS) \
                else "is not supported at this place"
            raise UnsupportedTFLite(
                f"{path}: {where} {why} (the kit imports FULLY_CONNECTED layers, RESHAPE at the "
                "input, QUANTIZE / DEQUANTIZE at the ends, SOFTMAX / LOGISTIC at the output)")
    if not layers:
        raise UnsupportedTFLite(f"{path}: no FULLY_CONNECTED layer found")
    if x.index != out_index:
        raise UnsupportedTFLite(f"{path}: the graph's output is not the last operator's")
    ends = [tensor_type_name(t.type).lower() for t in (first, x)]
    interface = ends[0] if ends[0] == ends[1] else f"{ends[0]} in, {ends[1]} out"
    shape = tuple(first.shape[1:]) if len(first.shape) > 1 and first.shape[0] == 1 else \
        tuple(first.shape)
    if not 1 <= len(shape) <= 3 or math.prod(shape) > MAX_DIM:
        raise UnsupportedTFLite(f"{path}: input shape {first.shape}; a weight package takes up "
                                f"to {MAX_DIM} values in 1 to 3 dimensions")
    columns = tuple(range(layers[-1].n_out))
    if layers[-1].n_out == 1:
        layers[-1] = _binary(layers[-1])
        columns = (1,)
        notes.append("one output: a binary classifier, class 1 where the logit is above 0 "
                     "(outputs become (0, logit))")
    s_in, zp_in = layers[0].input_scale, layers[0].input_zero_point
    n_out = layers[-1].n_out
    pkg = Package(tuple(layers), shape, tuple(str(k) for k in range(n_out)), s_in, zp_in, "mlp")
    producer = (model.Description() or b"").decode("utf-8", "replace")
    return TFLiteMLP(pkg, interface, producer, names, notes, columns)


def read_tflite(path: str | Path) -> TFLiteMLP:
    """:func:`parse_tflite` of the file at ``path``."""
    path = Path(path)
    return parse_tflite(path.read_bytes(), str(path))
