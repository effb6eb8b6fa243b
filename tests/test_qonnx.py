"""The quantized ONNX model: valid opset-13 QDQ that onnxruntime runs, in agreement with golden."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from export.contract.golden import golden_forward, quantize_input
from export.int8.qonnx import (
    AGREEMENT_GOAL,
    IR_VERSION,
    OPSET,
    agreement,
    onnx_bytes,
    ort_forward,
    ort_session,
    package_to_onnx,
)
from export.int8.quantize import quantize_machine, quantize_mlp
from tests.int8_models import (
    random_checkpoint,
    random_machine,
    task_data,
    tiny_package,
    trained_checkpoint,
    trained_machine,
)

ALLOWED_OPS = {"QuantizeLinear", "DequantizeLinear", "MatMul", "Add", "Relu", "Cast",
               "GreaterOrEqual"}


@pytest.fixture(scope="module")
def random_packages():
    rng = np.random.default_rng(21)
    return [
        quantize_mlp(random_checkpoint(rng, [400, 24, 12, 4]), rng.uniform(size=(30, 400))),
        quantize_machine(random_machine(rng), rng.uniform(size=(30, 400))),
        tiny_package(),
    ]


def test_models_are_valid_opset_13_qdq(random_packages):
    for pkg in random_packages:
        model = package_to_onnx(pkg)
        onnx.checker.check_model(model, full_check=True)
        assert model.opset_import[0].version == OPSET == 13 and model.ir_version == IR_VERSION
        assert {n.op_type for n in model.graph.node} <= ALLOWED_OPS
        props = {p.key: p.value for p in model.metadata_props}
        assert props["model_id"] == pkg.model_id.hex()
        assert props["classes"].split("\n") == list(pkg.classes)
        out = model.graph.output[0].type.tensor_type
        assert out.elem_type == TensorProto.INT8


def test_onnxruntime_matches_golden_on_random_inputs(random_packages):
    rng = np.random.default_rng(22)
    for pkg in random_packages:
        x = rng.uniform(0, 1, (100, pkg.n_inputs))
        y = ort_forward(ort_session(onnx_bytes(pkg)), x)
        diff = np.abs(y.astype(int) - golden_forward(pkg, quantize_input(pkg, x)))
        assert y.dtype == np.int8 and diff.max() <= 1


@pytest.mark.parametrize("task", ["digits", "letters"])
def test_agreement_goals_on_the_test_split(task):
    X, _, X_test, _, _ = task_data(task)
    for pkg in (quantize_mlp(trained_checkpoint(task), X[:256]),
                quantize_machine(trained_machine(task), X[:256])):
        figures = agreement(pkg, onnx_bytes(pkg), X_test)
        assert figures["n_inputs"] == len(X_test)
        assert figures["max_abs_diff_lsb"] <= AGREEMENT_GOAL["max_abs_diff_lsb"], figures
        assert figures["outputs_within_1_lsb"] == 1.0
        assert figures["decision_agreement"] >= AGREEMENT_GOAL["decision_agreement"], figures
        assert figures["goal_met"] is True
        assert set(figures["fused"]) == {"max_abs_diff_lsb", "outputs_equal",
                                         "outputs_within_1_lsb", "decision_agreement"}


def test_host_input_quantization_is_onnx_quantize_linear():
    pkg = tiny_package()
    rng = np.random.default_rng(23)
    steps = rng.integers(-10, 300, 4000) + rng.choice([0.0, 0.5, 0.4999999, 0.5000001], 4000)
    x = np.concatenate([steps * pkg.input_scale, rng.uniform(-0.5, 1.5, 2000)])
    x = x.astype(np.float32).reshape(-1, 3)
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"])], "q",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("q", TensorProto.INT8, ["n", 3])],
        [helper.make_tensor("s", TensorProto.FLOAT, [], [pkg.input_scale]),
         helper.make_tensor("zp", TensorProto.INT8, [], [pkg.input_zero_point])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    session = ort_session(model.SerializeToString())
    np.testing.assert_array_equal(session.run(["q"], {"x": x})[0], quantize_input(pkg, x))
