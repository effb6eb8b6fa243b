"""A weight package written as a ``.tflite``: the same integers, for TFLite Micro and LiteRT.

One ``FULLY_CONNECTED`` per dense layer (int8 weights quantized per tensor where every output
channel has the same scale, else per channel; int32 bias at ``s_in * s_w``; fused ``RELU`` or
none), a ``RESHAPE`` first for an input of more than one dimension, and with a float interface
``QUANTIZE`` and ``DEQUANTIZE`` at the ends. Written with the ``flatbuffers`` builder and the
``tflite`` package's schema code; no TensorFlow.

A TFLite runtime derives each layer's multiplier and shift from the scales
(``QuantizeMultiplier(double(s_in) * double(s_w) / double(s_out))``); :func:`tflite_bytes`
refuses a package whose stored multipliers differ from those, since the runtime would compute
other bits. How the runtime rounds is its own: TFLite Micro's reference kernels round twice
(the package's ``double``), LiteRT once (``single``) -- see ``docs/TFLITE.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import flatbuffers
import numpy as np
import tflite

from export.contract.package import Dense, Package, quantize_multiplier
from export.tflite.schema import SCHEMA_VERSION, TFLITE_IDENTIFIER

_OP = tflite.BuiltinOperator
_T = tflite.TensorType
_VERSIONS = {_OP.FULLY_CONNECTED: 4, _OP.RESHAPE: 1, _OP.QUANTIZE: 1, _OP.DEQUANTIZE: 2}
"""Operator versions written: int8 FULLY_CONNECTED (version 4, as TFLiteConverter writes it),
float32 -> int8 QUANTIZE, int8 -> float32 DEQUANTIZE."""
_PLACEHOLDER = 127
"""``deprecated_builtin_code`` of operators numbered above 127 (schema v3a)."""


@dataclass
class _Tensor:
    name: str
    type: int
    shape: tuple[int, ...]
    data: bytes = b""
    scale: list[float] = field(default_factory=list)
    zero_point: list[int] = field(default_factory=list)


@dataclass
class _Operator:
    code: int
    inputs: list[int]
    outputs: list[int]
    relu: bool = False
    new_shape: tuple[int, ...] = ()


@dataclass
class _Graph:
    tensors: list[_Tensor] = field(default_factory=list)
    operators: list[_Operator] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)

    def add(self, tensor: _Tensor) -> int:
        self.tensors.append(tensor)
        return len(self.tensors) - 1


def check_exportable(pkg: Package) -> None:
    """``ValueError`` naming what of ``pkg`` TFLite's builtin operators cannot compute as the
    package does."""
    if pkg.codebook is not None or any(not isinstance(layer, Dense) for layer in pkg.layers):
        kinds = sorted({layer.kind for layer in pkg.layers if not isinstance(layer, Dense)})
        raise ValueError(
            f"the package holds {', '.join(kinds) or 'a codebook head'} layers (a Mark I): "
            "TensorFlow Lite has no operator for them; export tflite takes MLP packages")
    for i, layer in enumerate(pkg.layers):
        assert isinstance(layer, Dense)
        for o in range(layer.n_out):
            derived = quantize_multiplier(float(layer.input_scale) * float(layer.weight_scale[o])
                                          / float(layer.output_scale))
            stored = (int(layer.multiplier[o]), int(layer.shift[o]))
            if derived != stored:
                raise ValueError(
                    f"layer {i} output channel {o}: the package's multiplier/shift {stored[0]}/"
                    f"{stored[1]} differ from {derived[0]}/{derived[1]}, which a TFLite runtime "
                    "derives from the scales: it would compute other bits")


def _graph(pkg: Package, float_io: bool) -> _Graph:
    g = _Graph()
    s_in, zp_in = [float(pkg.input_scale)], [int(pkg.input_zero_point)]
    shape = (1, *pkg.input_shape)
    if float_io:
        raw = g.add(_Tensor("input", _T.FLOAT32, shape))
        x = g.add(_Tensor("input_int8", _T.INT8, shape, scale=s_in, zero_point=zp_in))
        g.operators.append(_Operator(_OP.QUANTIZE, [raw], [x]))
        first = raw
    else:
        x = first = g.add(_Tensor("input", _T.INT8, shape, scale=s_in, zero_point=zp_in))
    if len(pkg.input_shape) > 1:
        flat = (1, pkg.n_inputs)
        target = g.add(_Tensor("flatten/shape", _T.INT32, (2,),
                               np.array(flat, "<i4").tobytes()))
        y = g.add(_Tensor("flatten", _T.INT8, flat, scale=s_in, zero_point=zp_in))
        g.operators.append(_Operator(_OP.RESHAPE, [x, target], [y], new_shape=flat))
        x = y
    for i, layer in enumerate(pkg.layers):
        assert isinstance(layer, Dense)
        ws = np.asarray(layer.weight_scale, np.float32)
        scales = [float(ws[0])] if (ws == ws[0]).all() else [float(s) for s in ws]
        w = g.add(_Tensor(f"dense_{i}/weights", _T.INT8, (layer.n_out, layer.n_in),
                          np.asarray(layer.weights, "<i1").tobytes(), scales,
                          [0] * len(scales)))
        bias_scale = [float(np.float32(float(layer.input_scale) * s)) for s in scales]
        b = g.add(_Tensor(f"dense_{i}/bias", _T.INT32, (layer.n_out,),
                          np.asarray(layer.bias, "<i4").tobytes(), bias_scale,
                          [0] * len(scales)))
        y = g.add(_Tensor(f"dense_{i}", _T.INT8, (1, layer.n_out),
                          scale=[float(layer.output_scale)],
                          zero_point=[int(layer.output_zero_point)]))
        g.operators.append(_Operator(_OP.FULLY_CONNECTED, [x, w, b], [y], relu=layer.relu))
        x = y
    if float_io:
        y = g.add(_Tensor("output", _T.FLOAT32, (1, pkg.n_outputs)))
        g.operators.append(_Operator(_OP.DEQUANTIZE, [x], [y]))
        x = y
    g.inputs, g.outputs = [first], [x]
    return g


def _vector(b: flatbuffers.Builder, start: object, values: list, prepend: str) -> int:
    start(b, len(values))  # type: ignore[operator]
    for v in reversed(values):
        getattr(b, prepend)(v)
    return int(b.EndVector())


def _data(b: flatbuffers.Builder, data: bytes) -> int:
    """A byte vector aligned to 16 bytes (TFLite Micro reads tensor data in place)."""
    b.StartVector(1, len(data), 16)
    b.head = b.head - len(data)
    b.Bytes[b.head: b.head + len(data)] = data
    b.vectorNumElems = len(data)
    return int(b.EndVector())


def _serialise(g: _Graph, description: str) -> bytes:
    b = flatbuffers.Builder(4096)
    codes = sorted({op.code for op in g.operators})
    # buffers: 0 is the empty sentinel; each constant tensor has its own
    buffer_of: dict[int, int] = {}
    buffers: list[int] = []
    for t_index, t in enumerate(g.tensors):
        if t.data:
            buffer_of[t_index] = len(buffers) + 1
            buffers.append(_data(b, t.data))
    tflite.BufferStart(b)
    empty = tflite.BufferEnd(b)
    buffer_offsets = [empty]
    for data in buffers:
        tflite.BufferStart(b)
        tflite.BufferAddData(b, data)
        buffer_offsets.append(tflite.BufferEnd(b))
    tensors = []
    for t_index, t in enumerate(g.tensors):
        name = b.CreateString(t.name)
        shape = _vector(b, tflite.TensorStartShapeVector, list(t.shape), "PrependInt32")
        quant = None
        if t.scale:
            scale = _vector(b, tflite.QuantizationParametersStartScaleVector, t.scale,
                            "PrependFloat32")
            zp = _vector(b, tflite.QuantizationParametersStartZeroPointVector, t.zero_point,
                         "PrependInt64")
            tflite.QuantizationParametersStart(b)
            tflite.QuantizationParametersAddScale(b, scale)
            tflite.QuantizationParametersAddZeroPoint(b, zp)
            tflite.QuantizationParametersAddQuantizedDimension(b, 0)
            quant = tflite.QuantizationParametersEnd(b)
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, shape)
        tflite.TensorAddType(b, t.type)
        tflite.TensorAddBuffer(b, buffer_of.get(t_index, 0))
        tflite.TensorAddName(b, name)
        if quant is not None:
            tflite.TensorAddQuantization(b, quant)
        tensors.append(tflite.TensorEnd(b))
    operators = []
    for op in g.operators:
        inputs = _vector(b, tflite.OperatorStartInputsVector, op.inputs, "PrependInt32")
        outputs = _vector(b, tflite.OperatorStartOutputsVector, op.outputs, "PrependInt32")
        options, options_type = None, tflite.BuiltinOptions.NONE
        if op.code == _OP.FULLY_CONNECTED:
            tflite.FullyConnectedOptionsStart(b)
            tflite.FullyConnectedOptionsAddFusedActivationFunction(
                b, tflite.ActivationFunctionType.RELU if op.relu else
                tflite.ActivationFunctionType.NONE)
            options = tflite.FullyConnectedOptionsEnd(b)
            options_type = tflite.BuiltinOptions.FullyConnectedOptions
        elif op.code == _OP.RESHAPE:
            new_shape = _vector(b, tflite.ReshapeOptionsStartNewShapeVector, list(op.new_shape),
                                "PrependInt32")
            tflite.ReshapeOptionsStart(b)
            tflite.ReshapeOptionsAddNewShape(b, new_shape)
            options = tflite.ReshapeOptionsEnd(b)
            options_type = tflite.BuiltinOptions.ReshapeOptions
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, codes.index(op.code))
        tflite.OperatorAddInputs(b, inputs)
        tflite.OperatorAddOutputs(b, outputs)
        if options is not None:
            tflite.OperatorAddBuiltinOptionsType(b, options_type)
            tflite.OperatorAddBuiltinOptions(b, options)
        operators.append(tflite.OperatorEnd(b))
    tensor_vec = _vector(b, tflite.SubGraphStartTensorsVector, tensors, "PrependUOffsetTRelative")
    op_vec = _vector(b, tflite.SubGraphStartOperatorsVector, operators, "PrependUOffsetTRelative")
    in_vec = _vector(b, tflite.SubGraphStartInputsVector, g.inputs, "PrependInt32")
    out_vec = _vector(b, tflite.SubGraphStartOutputsVector, g.outputs, "PrependInt32")
    graph_name = b.CreateString("main")
    tflite.SubGraphStart(b)
    tflite.SubGraphAddTensors(b, tensor_vec)
    tflite.SubGraphAddInputs(b, in_vec)
    tflite.SubGraphAddOutputs(b, out_vec)
    tflite.SubGraphAddOperators(b, op_vec)
    tflite.SubGraphAddName(b, graph_name)
    subgraph = tflite.SubGraphEnd(b)
    code_offsets = []
    for code in codes:
        tflite.OperatorCodeStart(b)
        tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, _PLACEHOLDER))
        tflite.OperatorCodeAddBuiltinCode(b, code)
        tflite.OperatorCodeAddVersion(b, _VERSIONS[code])
        code_offsets.append(tflite.OperatorCodeEnd(b))
    codes_vec = _vector(b, tflite.ModelStartOperatorCodesVector, code_offsets,
                        "PrependUOffsetTRelative")
    graphs_vec = _vector(b, tflite.ModelStartSubgraphsVector, [subgraph],
                         "PrependUOffsetTRelative")
    buffers_vec = _vector(b, tflite.ModelStartBuffersVector, buffer_offsets,
                          "PrependUOffsetTRelative")
    text = b.CreateString(description)
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, SCHEMA_VERSION)
    tflite.ModelAddOperatorCodes(b, codes_vec)
    tflite.ModelAddSubgraphs(b, graphs_vec)
    tflite.ModelAddDescription(b, text)
    tflite.ModelAddBuffers(b, buffers_vec)
    b.Finish(tflite.ModelEnd(b), file_identifier=TFLITE_IDENTIFIER)
    return bytes(b.Output())


def tflite_bytes(pkg: Package, *, float_io: bool = False, description: str = "") -> bytes:
    """The package as a ``.tflite``: int8 input and output (``float_io``: float32, through
    QUANTIZE and DEQUANTIZE). ``ValueError`` for a package TFLite cannot compute as it is."""
    check_exportable(pkg)
    from mark1.version import __version__

    return _serialise(_graph(pkg, float_io), description or f"mark1-kit {__version__}")
