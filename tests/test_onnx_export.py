"""ONNX export of the MLP, checked against the target profiles, and parity with torch."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.onnx.bundle import export_bundle
from export.onnx.mlp import train_mlp
from export.onnx.onnx_export import ProfileError, check_model, export_mlp
from export.onnx.parity import ParityError, mlp_parity, task_test_inputs
from export.onnx.profiles import DESKTOP, JETSON_TX2, PROFILES, get_profile


@pytest.fixture(scope="module")
def ckpt():
    return train_mlp("digits", hidden=(32, 16), epochs=6, seed=1, progress=False)


@pytest.fixture(scope="module")
def test_inputs(ckpt):
    return task_test_inputs(ckpt.task, ckpt.seed, ckpt.task_options)


def _model(op: str = "Relu", opset: int = 13, ir: int = 7, batch: object = "batch",
           extra_init: list | None = None, domain: str = "") -> onnx.ModelProto:
    """A one-node model built by hand, to break one profile rule at a time."""
    node = helper.make_node(op, ["image"], ["out"], domain=domain)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 400])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [batch, 400])],
        initializer=extra_init or [],
    )
    imports = [helper.make_opsetid("", opset)]
    if domain:
        imports.append(helper.make_opsetid(domain, 1))
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = ir
    return model


def _check(tmp_path, model: onnx.ModelProto, profile=JETSON_TX2):
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return check_model(path, profile)


def test_profiles_are_data_with_sources():
    assert set(PROFILES) == {"jetson-tx2", "desktop"}
    tx2 = get_profile("jetson-tx2")
    assert (tx2.max_opset, tx2.max_ir_version, tx2.python, tx2.tensorrt) == (13, 8, "3.6", "8.2.1")
    assert tx2.forbid_int64_initializers and "fp16" in tx2.precisions and tx2.sources
    assert {"Gemm", "MatMul", "Relu", "Cast", "ArgMax", "Where", "Equal"} <= tx2.operators
    with pytest.raises(ValueError, match="unknown target 'jetson-nano'; allowed: jetson-tx2"):
        get_profile("jetson-nano")


def test_a_valid_hand_built_model_passes(tmp_path):
    facts = _check(tmp_path, _model())
    assert (facts.opset, facts.ir_version, facts.operators) == (13, 7, ["Relu"])


@pytest.mark.parametrize(
    "model, message",
    [
        (_model(opset=18, ir=8), "opset 18 > 13"),
        (_model(ir=10), "IR version 10 > 8"),
        (_model("Mod"), "operators not supported by the target: Mod"),
        (_model(batch=1), "no dynamic batch dimension"),
        (_model(extra_init=[numpy_helper.from_array(np.arange(3, dtype=np.int64), "shape")]),
         "initializer 'shape' is int64"),
        (_model(extra_init=[numpy_helper.from_array(np.zeros(3), "w")]),
         "initializer 'w' is float64"),
        (_model("Gelu", domain="com.microsoft"), "operator domain 'com.microsoft'"),
    ],
)
def test_tx2_profile_refuses_each_violation(tmp_path, model, message):
    with pytest.raises(ProfileError, match="does not fit target 'jetson-tx2'") as info:
        _check(tmp_path, model)
    assert message in str(info.value)
    assert info.value.exit_code == 2


def test_desktop_accepts_opset_18_ir_10_but_not_unknown_operators(tmp_path):
    assert _check(tmp_path, _model(opset=18, ir=10), DESKTOP).opset == 18
    with pytest.raises(ProfileError, match="onnx.checker"):
        _check(tmp_path, _model("NoSuchOp"), DESKTOP)


def test_not_an_onnx_file_is_refused(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\xff\x00 definitely not protobuf \x12\x34" * 3)
    with pytest.raises(ProfileError):
        check_model(path, JETSON_TX2)


def test_default_exporter_keeps_opset_18_and_the_check_catches_it(ckpt, tmp_path):
    """Asked for opset 13, the dynamo exporter writes 18 / IR 10: the file is what counts."""
    path = export_mlp(ckpt, tmp_path / "dynamo.onnx", opset=13, dynamo=True)
    with pytest.raises(ProfileError) as info:
        check_model(path, JETSON_TX2)
    assert "opset 18 > 13" in str(info.value) and "IR version 10 > 8" in str(info.value)


def test_torchscript_export_fits_tx2_with_dynamic_batch(ckpt, tmp_path):
    path = export_mlp(ckpt, tmp_path / "m.onnx", opset=13)
    facts = check_model(path, JETSON_TX2)
    assert facts.opset == 13 and facts.ir_version == 7
    assert facts.operators == ["Gemm", "Relu"]
    assert facts.inputs == [{"name": "image", "shape": ["batch", 400], "dtype": "float32"}]
    assert facts.outputs[0]["shape"] == ["batch", 10]
    model = onnx.load(path)
    assert all(t.data_type == TensorProto.FLOAT for t in model.graph.initializer)


def test_fp32_parity_on_the_test_set_and_any_batch(ckpt, test_inputs, tmp_path):
    X, data = test_inputs
    path = export_mlp(ckpt, tmp_path / "m.onnx")
    result, ref, got = mlp_parity(ckpt, path, X, data=data)
    assert result.passed and result.n_samples == len(X) == 449
    assert result.max_abs_diff <= 1e-5 and result.argmax_agreement == 1.0
    np.testing.assert_array_equal(ref.argmax(1), got.argmax(1))
    for n in (1, 7):  # the batch dimension is dynamic
        assert mlp_parity(ckpt, path, X[:n])[0].passed
    # the numpy reference of the checkpoint agrees too
    np.testing.assert_allclose(got, ckpt.forward(X), atol=1e-4)


def test_fp16_casts_at_the_boundaries_and_parity(ckpt, test_inputs, tmp_path):
    X, data = test_inputs
    path = export_mlp(ckpt, tmp_path / "m16.onnx", fp16=True)
    facts = check_model(path, JETSON_TX2)
    model = onnx.load(path)
    assert {t.data_type for t in model.graph.initializer} == {TensorProto.FLOAT16}
    assert model.graph.node[0].op_type == "Cast" and model.graph.node[-1].op_type == "Cast"
    assert facts.inputs[0]["dtype"] == facts.outputs[0]["dtype"] == "float32"
    result, _, _ = mlp_parity(ckpt, path, X, fp16=True, data=data)
    assert result.passed and result.max_abs_diff <= 1e-2 and result.argmax_agreement >= 0.995
    assert result.max_abs_diff > 1e-5  # it really is float16 arithmetic
    assert path.stat().st_size < 0.6 * export_mlp(ckpt, tmp_path / "m32.onnx").stat().st_size


@pytest.mark.parametrize("fp16", [False, True])
def test_without_the_torchscript_exporter_the_helper_graph_is_written(
    ckpt, test_inputs, tmp_path, monkeypatch, fp16
):
    """A torch that has dropped the TorchScript exporter still gets an opset-13 model."""
    import torch

    X, data = test_inputs
    reference = export_mlp(ckpt, tmp_path / "torch.onnx", fp16=fp16)

    def removed(*args, dynamo=True, **kwargs):
        raise RuntimeError("the TorchScript-based ONNX exporter has been removed")

    monkeypatch.setattr(torch.onnx, "export", removed)
    path = export_mlp(ckpt, tmp_path / "helper.onnx", fp16=fp16)
    facts = check_model(path, JETSON_TX2)
    assert (facts.opset, facts.ir_version) == (13, 7)
    assert facts.inputs == check_model(reference, JETSON_TX2).inputs
    assert onnx.load(path).producer_name == "mark1-kit"
    result, _, got = mlp_parity(ckpt, path, X, fp16=fp16, data=data)
    assert result.passed and result.argmax_agreement == 1.0
    _, _, got_torch = mlp_parity(ckpt, reference, X, fp16=fp16, data=data)
    np.testing.assert_allclose(got, got_torch, atol=1e-5 if not fp16 else 4e-3)
    with pytest.raises(RuntimeError, match="removed"):  # dynamo=True never falls back
        export_mlp(ckpt, tmp_path / "d.onnx", dynamo=True)


def test_parity_catches_a_model_that_computes_something_else(ckpt, test_inputs, tmp_path):
    X, _ = test_inputs
    path = export_mlp(ckpt, tmp_path / "m.onnx")
    model = onnx.load(path)
    bias = model.graph.initializer[-1]
    values = numpy_helper.to_array(bias).copy()
    values[0] += 1e-3
    bias.CopyFrom(numpy_helper.from_array(values, bias.name))
    path.write_bytes(model.SerializeToString())
    result, _, _ = mlp_parity(ckpt, path, X)
    assert not result.passed and result.max_abs_diff > 1e-5
    with pytest.raises(ParityError, match="parity failed") as info:
        result.require()
    assert info.value.exit_code == 3


def test_bundle_is_refused_whole_when_the_written_file_breaks_the_profile(
    ckpt, tmp_path, monkeypatch
):
    """A profile asking the exporter for opset 18 gets a file that breaks opset <= 13."""
    from export.onnx import bundle
    from export.onnx.checkpoint import save_checkpoint

    src = save_checkpoint(ckpt, tmp_path / "mlp.pt")
    out = tmp_path / "bundle"
    wrong = dataclasses.replace(JETSON_TX2, export_opset=17)
    monkeypatch.setattr(bundle, "get_profile", lambda name: wrong)
    with pytest.raises(ProfileError, match="opset 17 > 13"):
        export_bundle(src, "jetson-tx2", out)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.pt"]  # no scratch left either


def test_fp16_refusal_names_the_float16_resolution(ckpt, test_inputs, tmp_path):
    """Logits of +-hundreds cannot stay within 1e-2 in float16: refused, with the reason."""
    X, _ = test_inputs
    loud = dataclasses.replace(ckpt, weights=[*ckpt.weights[:-1], ckpt.weights[-1] * 40],
                               biases=[*ckpt.biases[:-1], ckpt.biases[-1] * 40])
    path = export_mlp(loud, tmp_path / "loud16.onnx", fp16=True)
    result, _, _ = mlp_parity(loud, path, X, fp16=True)
    assert not result.passed and result.max_abs_reference > 100
    with pytest.raises(ParityError, match="where float16 steps are .*: export in fp32"):
        result.require()


def test_fp32_parity_bound_is_relative_to_the_logits(tmp_path):
    """Logits near 34 that differ by 3 float32 steps (1.1e-5) pass: the bound is
    1e-5 + 2**-18 * max|logit| per input. An absolute 1e-5 refused such a model (exit 3)."""
    from export.onnx.checkpoint import MLPCheckpoint, features
    from export.onnx.onnx_export import mlp_graph

    rng = np.random.default_rng(0)
    w = rng.normal(0, 1, (3, 4)).astype(np.float32)
    b = np.array([34.0, 33.0, -2.0], np.float32)
    ckpt = MLPCheckpoint([4, 3], [w], [b], ["a", "b", "c"], "", 0, features([4]))
    model = mlp_graph(ckpt)
    bias = model.graph.initializer[1]
    nudged = numpy_helper.to_array(bias).copy()
    for _ in range(3):
        nudged[0] = np.nextafter(nudged[0], np.float32(np.inf))
    bias.CopyFrom(numpy_helper.from_array(nudged, bias.name))
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    X = rng.uniform(-0.1, 0.1, (64, 4)).astype(np.float32)
    result, _, _ = mlp_parity(ckpt, path, X)
    assert 1e-5 < result.max_abs_diff < 1.2e-5
    assert result.passed and result.worst_diff_to_bound < 0.2
    assert result.bound == "atol 1e-05 + rtol 3.81e-06 x max|logit|"
    nudged[2] += 1e-3  # a real difference where the logits are small is still caught
    bias.CopyFrom(numpy_helper.from_array(nudged, bias.name))
    path.write_bytes(model.SerializeToString())
    result, _, _ = mlp_parity(ckpt, path, X)
    assert not result.passed
