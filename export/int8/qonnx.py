"""The quantized model as ONNX (QDQ form, opset 13) and its agreement with the golden reference.

:func:`package_to_onnx` writes a weight package as an ONNX graph that onnxruntime runs:

* input ``x``: float32 (batch, n_inputs), the real inputs (relative illuminance);
  ``QuantizeLinear`` with the package's input scale and zero point gives the int8 input;
* dense layer: ``DequantizeLinear`` of the activations, of the int8 weights (per output channel,
  ``axis=1`` of the transposed matrix) and of the int32 bias (scale ``s_in * s_w``), ``MatMul``,
  ``Add``, ``Relu`` when fused, ``QuantizeLinear`` to the layer's output scale and zero point;
* threshold layer: ``Cast`` to int32, ``GreaterOrEqual`` the thresholds, ``Cast`` to int8;
* step layer: the sparse connections as a dense int8 matrix, dequantized with scale 1 (small
  integers, exact in float32), ``MatMul``, ``GreaterOrEqual`` the thresholds, ``Cast`` to int8;
* output ``y_q``: int8 (batch, n_outputs), the same codes the device returns.

onnxruntime requantizes in float and rounds half to even, the golden reference in fixed point
with its own ties, so the two may differ by one step; :func:`agreement` measures by how much.
It runs onnxruntime with its basic graph optimizations, which keep the QDQ arithmetic as
written. At the extended level onnxruntime fuses the pattern into its own int8 kernels
(``QGemm`` on uint8 activations); on x86 CPUs without VNNI these multiply with ``vpmaddubsw``,
which saturates the sum of two uint8 x int8 products at 16 bits, and outputs then drift by many
steps. :func:`agreement` measures that configuration too, for information (``fused``).
Opset 13 and IR version 7 keep the file loadable by older runtimes (onnxruntime 1.11 on a
Jetson TX2 included).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from export.contract.package import Dense, Package, Step, Threshold

if TYPE_CHECKING:  # onnx and onnxruntime are imported when used
    from onnx import ModelProto, NodeProto, TensorProto
    from onnxruntime import InferenceSession

OPSET = 13
IR_VERSION = 7
AGREEMENT_GOAL = {"max_abs_diff_lsb": 1, "decision_agreement": 0.995}
"""What onnxruntime must achieve against the golden reference: every output within 1 LSB and
the same class on at least 99.5 % of the inputs."""


def package_to_onnx(pkg: Package) -> ModelProto:
    """An ``onnx.ModelProto`` computing the package's int8 outputs from real inputs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[NodeProto] = []
    inits: list[TensorProto] = []

    def const(name: str, value: npt.ArrayLike) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    const("in_scale", np.float32(pkg.input_scale))
    const("in_zp", np.int8(pkg.input_zero_point))
    nodes.append(helper.make_node("QuantizeLinear", ["x", "in_scale", "in_zp"], ["a0"]))
    act = "a0"
    for i, layer in enumerate(pkg.layers):
        p = f"l{i}_"
        out = "y_q" if i == len(pkg.layers) - 1 else f"a{i + 1}"
        if isinstance(layer, Dense):
            _dense_nodes(layer, p, act, out, nodes, const)
        elif isinstance(layer, Threshold):
            const(p + "t", layer.threshold.astype(np.int32))
            nodes += [
                helper.make_node("Cast", [act], [p + "x32"], to=TensorProto.INT32),
                helper.make_node("GreaterOrEqual", [p + "x32", p + "t"], [p + "fire"]),
                helper.make_node("Cast", [p + "fire"], [out], to=TensorProto.INT8),
            ]
        else:
            _step_nodes(layer, p, act, out, nodes, const)
        act = out
    graph = helper.make_graph(
        nodes, "mark1_int8",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", pkg.n_inputs])],
        [helper.make_tensor_value_info("y_q", TensorProto.INT8, ["batch", pkg.n_outputs])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="mark1-kit",
        doc_string=f"int8 {pkg.source} model {pkg.model_id.hex()[:16]}; classes: "
        + ", ".join(pkg.classes),
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(model, {"model_id": pkg.model_id.hex(), "source": pkg.source,
                                   "classes": "\n".join(pkg.classes)})
    onnx.checker.check_model(model, full_check=True)
    return model


Constant = Callable[[str, npt.ArrayLike], str]
"""Adds a named initializer to the graph; returns its name."""


def _dense_nodes(layer: Dense, p: str, act: str, out: str, nodes: list[NodeProto],
                 const: Constant) -> None:
    from onnx import helper

    const(p + "s_in", np.float32(layer.input_scale))
    const(p + "zp_in", np.int8(layer.input_zero_point))
    const(p + "w", np.ascontiguousarray(layer.weights.T))  # (n_in, n_out) int8
    const(p + "s_w", layer.weight_scale.astype(np.float32))
    const(p + "zp_w", np.zeros(layer.n_out, np.int8))
    const(p + "b", layer.bias.astype(np.int32))
    bias_scale = (np.float32(layer.input_scale) * layer.weight_scale).astype(np.float32)
    const(p + "s_b", bias_scale)
    const(p + "s_out", np.float32(layer.output_scale))
    const(p + "zp_out", np.int8(layer.output_zero_point))
    pre = p + ("pre" if layer.relu else "sum")
    nodes += [
        helper.make_node("DequantizeLinear", [act, p + "s_in", p + "zp_in"], [p + "xf"]),
        helper.make_node("DequantizeLinear", [p + "w", p + "s_w", p + "zp_w"], [p + "wf"], axis=1),
        helper.make_node("DequantizeLinear", [p + "b", p + "s_b"], [p + "bf"], axis=0),
        helper.make_node("MatMul", [p + "xf", p + "wf"], [p + "mm"]),
        helper.make_node("Add", [p + "mm", p + "bf"], [pre]),
    ]
    if layer.relu:
        nodes.append(helper.make_node("Relu", [pre], [p + "sum"]))
    nodes.append(helper.make_node("QuantizeLinear", [p + "sum", p + "s_out", p + "zp_out"], [out]))


def _step_nodes(layer: Step, p: str, act: str, out: str, nodes: list[NodeProto],
                const: Constant) -> None:
    from onnx import TensorProto, helper

    board = np.zeros((layer.n_in, layer.n_out), np.int8)
    per_row: np.ndarray = np.diff(layer.row_ptr.astype(np.int64))  # connections of each row
    rows = np.repeat(np.arange(layer.n_out), per_row)
    board[layer.cols.astype(np.int64), rows] = layer.values
    const(p + "one", np.float32(1.0))
    const(p + "zp_in", np.int8(layer.input_zero_point))
    const(p + "zero", np.int8(0))
    const(p + "board", board)
    const(p + "t", layer.threshold.astype(np.float32))
    nodes += [
        helper.make_node("DequantizeLinear", [act, p + "one", p + "zp_in"], [p + "xf"]),
        helper.make_node("DequantizeLinear", [p + "board", p + "one", p + "zero"], [p + "bf"]),
        helper.make_node("MatMul", [p + "xf", p + "bf"], [p + "sum"]),
        helper.make_node("GreaterOrEqual", [p + "sum", p + "t"], [p + "fire"]),
        helper.make_node("Cast", [p + "fire"], [out], to=TensorProto.INT8),
    ]


def onnx_bytes(pkg: Package) -> bytes:
    """The ONNX model of :func:`package_to_onnx`, serialized."""
    return package_to_onnx(pkg).SerializeToString()


def ort_session(model: bytes, fused: bool = False) -> InferenceSession:
    """An onnxruntime CPU session for a serialized model: basic graph optimizations, or with
    ``fused`` all of them (onnxruntime's own int8 kernels)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if fused
        else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    )
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def ort_forward(session: InferenceSession, x: np.ndarray) -> np.ndarray:
    """int8 outputs of the ONNX model for real inputs (n, n_inputs)."""
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(len(x), -1))
    return session.run(["y_q"], {"x": x})[0]


def _compare(pkg: Package, golden: np.ndarray, other: np.ndarray) -> dict[str, Any]:
    from export.contract.golden import decide

    diff = np.abs(golden.astype(np.int64) - other.astype(np.int64))
    return {
        "max_abs_diff_lsb": int(diff.max()),
        "outputs_equal": float(np.mean(diff == 0)),
        "outputs_within_1_lsb": float(np.mean(diff <= 1)),
        "decision_agreement": float(np.mean(decide(pkg, golden) == decide(pkg, other))),
    }


def agreement(pkg: Package, model: bytes, X: np.ndarray) -> dict[str, Any]:
    """Compare onnxruntime with the golden reference on real inputs ``X`` (n, n_inputs).

    Returns the largest difference in output steps (LSB), the share of outputs that are equal
    and within 1 LSB, the share of inputs given the same class, whether the goal
    (:data:`AGREEMENT_GOAL`) is met, and under ``fused`` the same figures with all of
    onnxruntime's graph optimizations (informational).
    """
    from export.contract.golden import golden_forward, quantize_input

    x = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    golden = golden_forward(pkg, quantize_input(pkg, x))
    result: dict[str, Any] = {"n_inputs": int(len(x))}
    result.update(_compare(pkg, golden, ort_forward(ort_session(model), x)))
    result["goal_met"] = bool(
        result["max_abs_diff_lsb"] <= AGREEMENT_GOAL["max_abs_diff_lsb"]
        and result["decision_agreement"] >= AGREEMENT_GOAL["decision_agreement"]
    )
    result["fused"] = _compare(pkg, golden, ort_forward(ort_session(model, fused=True), x))
    return result
