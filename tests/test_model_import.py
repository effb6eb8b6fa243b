"""Models made elsewhere, through real converters: scikit-learn via skl2onnx, torch via both ONNX
exporters, a whole nn.Sequential, TorchScript and a state_dict -- each quantized on the user's
data, run on the simulated device and in onnxruntime, and exported for the Jetson as its own
graph; and the bugs of those paths, each pinned by a test."""

from __future__ import annotations

import json
import math
import subprocess
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from export.contract.golden import golden_forward, quantize_input
from export.contract.package import decode_package, encode_package
from export.int8.quantize import quantize_file, quantize_mlp
from export.onnx.bundle import export_bundle
from export.sources.dispatch import load_mlp, sniff
from export.sources.steps import UnsupportedModel
from firmware_sim.engine import Engine
from tests.conftest import run_cli
from tests.test_bad_input import run_in_process

# --------------------------------------------------------------------------- the user's data


@lru_cache(maxsize=1)
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 8 x 8 digits scaled to [0, 1], split 1,200 / 597 (seeded)."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(X))
    X, y = (X[order] / 16.0).astype(np.float32), y[order]
    return X[:1200], y[:1200], X[1200:], y[1200:]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """The digits as .npy files, the inputs flat (n, 64) and as images (n, 1, 8, 8)."""
    folder = tmp_path_factory.mktemp("data")
    X_train, y_train, X_test, y_test = digits()
    files = {"X_train": X_train, "y_train": y_train, "X_test": X_test, "y_test": y_test,
             "X_test_images": X_test.reshape(-1, 1, 8, 8)}
    for name, arr in files.items():
        np.save(folder / f"{name}.npy", arr)
    return {name: folder / f"{name}.npy" for name in files}


# --------------------------------------------------------------------------- the models


@lru_cache(maxsize=1)
def sklearn_mlp():
    from sklearn.neural_network import MLPClassifier

    X_train, y_train, _, _ = digits()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: 300 iterations are enough here
        return MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, random_state=0).fit(
            X_train, y_train)


@lru_cache(maxsize=1)
def torch_mlp():
    """nn.Sequential(Flatten, Linear, ReLU, Dropout, Linear) on (n, 1, 8, 8) digits."""
    import torch
    from torch import nn

    X_train, y_train, _, _ = digits()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.1),
                          nn.Linear(32, 10))
    x = torch.from_numpy(X_train.reshape(-1, 1, 8, 8))
    y = torch.from_numpy(y_train)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(150):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def torch_accuracy(model) -> float:
    import torch

    _, _, X_test, y_test = digits()
    with torch.inference_mode():
        return float((model(torch.from_numpy(X_test.reshape(-1, 1, 8, 8))).argmax(1).numpy()
                      == y_test).mean())


def _onnx_export(model, path: Path, dynamo: bool) -> Path:
    import torch

    example = (torch.zeros(2, 1, 8, 8),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:  # the default exporter: opset 18+, IR 10, weights in path.data
            torch.onnx.export(model, example, str(path), dynamo=True, verbose=False,
                              dynamic_shapes=({0: torch.export.Dim("batch")},))
        else:
            torch.onnx.export(model, example, str(path), dynamo=False, input_names=["x"],
                              output_names=["logits"], dynamic_axes={"x": {0: "n"}})
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """The same two networks saved every way a user might."""
    import torch
    from skl2onnx import to_onnx

    folder = tmp_path_factory.mktemp("models")
    X_train = digits()[0]
    paths = {"skl2onnx": folder / "sklearn.onnx"}
    paths["skl2onnx"].write_bytes(to_onnx(sklearn_mlp(), X_train[:1]).SerializeToString())
    net = torch_mlp()
    paths["torch.onnx (TorchScript exporter)"] = _onnx_export(net, folder / "ts.onnx", False)
    paths["torch.onnx (dynamo exporter)"] = _onnx_export(net, folder / "dynamo.onnx", True)
    paths["whole nn.Sequential"] = folder / "whole.pt"
    torch.save(net, paths["whole nn.Sequential"])
    paths["TorchScript"] = folder / "scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated in 2.13
        torch.jit.save(torch.jit.script(net), str(paths["TorchScript"]))
    paths["state_dict"] = folder / "state.pt"
    torch.save(net.state_dict(), paths["state_dict"])
    return paths


SOURCES = ("skl2onnx", "torch.onnx (TorchScript exporter)", "torch.onnx (dynamo exporter)",
           "whole nn.Sequential", "TorchScript", "state_dict")
ONNX_SOURCES = SOURCES[:3]


def float_accuracy(source: str) -> float:
    """What the framework that made the model says of it on the held-out digits."""
    _, _, X_test, y_test = digits()
    if source == "skl2onnx":
        return float(sklearn_mlp().score(X_test, y_test))
    return torch_accuracy(torch_mlp())


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("source", SOURCES)
def test_int8_package_of_each_imported_model_keeps_its_accuracy(source, models, data,
                                                                tmp_path):
    """Float vs int8 on held-out data within 1 point; the device bit-exact with the golden
    reference; onnxruntime in agreement; the float model as read is the framework's own."""
    out = tmp_path / "model.m1w"
    report = quantize_file(models[source], out, calib_data=data["X_train"],
                           eval_data=(data["X_test"], data["y_test"]), device=Engine)
    acc = report["accuracy"]
    assert acc["images"] == 597 and acc["float"] == pytest.approx(float_accuracy(source))
    assert acc["float"] > 0.9 and acc["drop_points"] <= 1.0 and acc["goal_met"]
    assert report["device"]["bit_exact_with_golden"] is True
    assert report["onnx"]["goal_met"] and report["onnx"]["max_abs_diff_lsb"] <= 1
    if source != "state_dict":  # the file's own runtime agrees with the MLP as read
        assert report["import_check"]["passed"] and report["import_check"]["class_changes"] == 0
    pkg = decode_package(out.read_bytes())
    expected_shape = (1, 8, 8) if source in ONNX_SOURCES[1:] else (64,)
    assert pkg.input_shape == expected_shape and pkg.classes == tuple(str(d) for d in range(10))
    assert report["calibration"]["images"] == 256 and report["calibration"]["from"] == str(
        data["X_train"])


def test_the_cli_reports_a_converters_model_with_its_notes(models, data, tmp_path):
    out = tmp_path / "sk.m1w"
    done = run_cli("quantize", str(models["skl2onnx"]), "--calib-data", str(data["X_train"]),
                   "--eval-data", str(data["X_test_images"]), str(data["y_test"]),
                   "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "Softmax at the output dropped" in done.stdout
    assert "'output_label', 'output_probability'" in done.stdout
    assert "bit-exact with the golden reference: yes" in done.stdout
    report = json.loads(out.with_name("sk.m1w.json").read_text())
    assert report["source"]["kind"] == "ONNX"
    assert report["source"]["model"]["producer"].startswith("skl2onnx")


@pytest.mark.parametrize("source", ONNX_SOURCES)
def test_an_onnx_model_is_exported_for_the_tx2_as_its_own_graph(source, models, data,
                                                                tmp_path):
    """Opset down to 13 and IR to 8, skl2onnx's ZipMap and label left out, a Reshape written
    as Flatten; parity with the original graph on the user's data."""
    meta = export_bundle(models[source], "jetson-tx2", tmp_path / "b",
                         eval_data=(str(data["X_test"]), str(data["y_test"])))
    assert meta["kind"] == "onnx" and meta["opset"] == 13 and meta["ir_version"] <= 8
    assert meta["parity"]["passed"] and meta["parity"]["n_samples"] == 597
    assert meta["accuracy"]["exported"] == pytest.approx(float_accuracy(source))
    assert meta["inputs"][0]["shape"][0] == "batch" or isinstance(meta["inputs"][0]["shape"][0],
                                                                  str)
    assert meta["preprocessing"]["input"] == "features"
    model = onnx.load(tmp_path / "b" / "model.onnx")
    assert {o.domain for o in model.opset_import} == {""}  # no ai.onnx.ml left
    assert "Reshape" not in {n.op_type for n in model.graph.node}
    assert not [t for t in model.graph.initializer if t.data_type == TensorProto.INT64]


def test_a_flatten_computed_from_the_inputs_shape_is_read(data, tmp_path):
    """`x.view(x.size(0), -1)` in a forward of one's own exports as Shape, Gather, Unsqueeze,
    Concat and Reshape (TorchScript exporter): read as a flatten, shipped as Flatten."""
    import torch
    from torch import nn

    net = torch_mlp()

    class ViewNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = net[1], net[4]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.relu(self.a(x.view(x.size(0), -1))))

    path = _onnx_export(ViewNet().eval(), tmp_path / "view.onnx", dynamo=False)
    assert "Shape" in {n.op_type for n in onnx.load(path).graph.node}
    got = load_mlp(path)
    X = digits()[2]
    assert np.abs(got.reference(X) - got.mlp.forward(X)).max() < 1e-5
    meta = export_bundle(path, "jetson-tx2", tmp_path / "b",
                         eval_data=(str(data["X_test"]), str(data["y_test"])))
    ops = {n.op_type for n in onnx.load(tmp_path / "b" / "model.onnx").graph.node}
    assert ops == {"Flatten", "Gemm", "Relu"} and meta["parity"]["passed"]
    assert meta["accuracy"]["exported"] == pytest.approx(torch_accuracy(net))


def test_the_bundle_runner_classifies_feature_vectors(models, data, tmp_path):
    from tests.test_bundle import printed_classes, run_runner

    export_bundle(models["skl2onnx"], "jetson-tx2", tmp_path / "b")
    done = run_runner(tmp_path / "b", str(data["X_test"]))
    assert done.returncode == 0, done.stderr
    _, _, X_test, _ = digits()
    assert printed_classes(done.stdout) == [str(k) for k in sklearn_mlp().predict(X_test)]
    images = run_runner(tmp_path / "b", str(data["X_test_images"]))  # (n, 1, 8, 8): 64 each
    assert printed_classes(images.stdout) == printed_classes(done.stdout)
    png = tmp_path / "card.png"
    from tests.test_bad_input import png_bytes

    png.write_bytes(png_bytes())
    refused = run_runner(tmp_path / "b", str(png))
    assert refused.returncode == 2 and "feature vectors in .npy files" in refused.stderr


def test_what_the_target_cannot_take_is_refused_by_name(data, tmp_path):
    """skl2onnx converts float64 data into a float64 graph: the TX2 (TensorRT 8 casts doubles
    down) refuses it, naming each initializer, and nothing is written; the desktop takes it,
    and the bundle's runner feeds it doubles."""
    from skl2onnx import to_onnx

    from export.onnx.onnx_export import ProfileError
    from tests.test_bundle import printed_classes, run_runner

    path = _save(to_onnx(sklearn_mlp(), digits()[0][:1].astype(np.float64)), tmp_path / "d.onnx")
    with pytest.raises(ProfileError, match="initializer 'coefficient' is float64; initializer "
                       "'intercepts' is float64"):
        export_bundle(path, "jetson-tx2", tmp_path / "tx2")
    assert not (tmp_path / "tx2").exists()
    meta = export_bundle(path, "desktop", tmp_path / "pc")
    assert meta["inputs"][0]["dtype"] == "float64" and meta["parity"]["passed"]
    done = run_runner(tmp_path / "pc", str(data["X_test"]))
    assert done.returncode == 0, done.stderr
    assert printed_classes(done.stdout) == [str(k) for k in sklearn_mlp().predict(
        digits()[2].astype(np.float64))]


@pytest.mark.parametrize("source", SOURCES[3:])
def test_torch_files_export_through_the_kits_own_graph(source, models, data, tmp_path):
    meta = export_bundle(models[source], "jetson-tx2", tmp_path / "b",
                         eval_data=(str(data["X_test"]), str(data["y_test"])))
    assert meta["kind"] == "mlp" and meta["opset"] == 13 and meta["parity"]["passed"]
    assert meta["accuracy"]["exported"] == pytest.approx(float_accuracy(source))
    assert meta["inputs"][0]["shape"] == ["batch", 64]


def test_the_simulated_device_runs_an_imported_model_over_a_pty(models, data, tmp_path):
    """Push the skl2onnx model's package to the simulated device and run `mark1 infer` with a
    .npy of the model's own inputs: no resampling to the retina, outputs bit-exact."""
    from export.serial.link import connect
    from export.serial.push import push
    from firmware_sim.device import Device, DeviceConfig
    from firmware_sim.serve import PtyServer

    out = tmp_path / "sk.m1w"
    quantize_file(models["skl2onnx"], out, calib_data=data["X_train"])
    X = digits()[2][:40]
    np.save(tmp_path / "some.npy", X.reshape(-1, 8, 8))
    with PtyServer(Device(DeviceConfig())) as server:
        push(server.url, out.read_bytes())
        done = run_cli("infer", str(tmp_path / "some.npy"), "--port", server.url,
                       "--model", str(out))
        with connect(server.url) as link:
            assert link.status().n_inputs == 64
    assert done.returncode == 0, done.stderr
    assert "bit-exact 40/40" in done.stdout
    pkg = decode_package(out.read_bytes())
    want = golden_forward(pkg, quantize_input(pkg, X)).argmax(axis=1)
    assert [line.split()[1] for line in done.stdout.splitlines()[:40]] == [str(k) for k in want]


def test_the_device_runs_any_input_size_within_its_limits():
    """A 64-input, a 1,000-input and a 3-input model load where RAM and frames allow; a part
    whose frames are too small for 1,000 inputs refuses that one, saying why."""
    from export.contract import protocol as P
    from firmware_sim.device import Device, DeviceConfig
    from tests.device_helpers import upload

    rng = np.random.default_rng(3)
    for n_in in (3, 64, 1000):
        pkg = _random_package(rng, n_in)
        big, small = Device(DeviceConfig()), Device(DeviceConfig(
            flash_bytes=64 * 1024, page_bytes=1024, ram_bytes=8 * 1024, max_payload=512))
        assert isinstance(upload(big, encode_package(pkg)), P.Ack)
        assert big.engine is not None and big.engine.n_inputs == n_in
        x_q = quantize_input(pkg, rng.uniform(-1, 1, (5, n_in)))
        assert np.array_equal(np.stack([big.engine.infer(x)[0] for x in x_q]),
                              golden_forward(pkg, x_q))
        reply = upload(small, encode_package(pkg))
        if n_in <= 500:
            assert isinstance(reply, P.Ack), reply
        else:
            assert isinstance(reply, P.Nak) and "one frame carries at most" in reply.text


def _random_package(rng: np.random.Generator, n_in: int):
    from tests.int8_models import random_checkpoint

    ckpt = random_checkpoint(rng, [n_in, 8, 3])
    ckpt.preprocessing = {"input": "features", "shape": [n_in]}
    return quantize_mlp(ckpt, rng.uniform(-1, 1, (30, n_in)))


# --------------------------------------------------------------------------- what the engine runs


def _graph(nodes, inits, n_in: int, n_out: int, opset: int = 13, shape=None):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                   shape or ["n", n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", n_out])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _save(model, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def test_relu6_clip_is_fused_exactly(tmp_path):
    """Clip(0, 6) after a layer: the layer's int8 range ends at 6 when the calibration reaches
    it, so code 127 is 6 and the int8 clamp is the clip."""
    rng = np.random.default_rng(1)
    w1, w2 = rng.normal(0, 3, (16, 8)), rng.normal(0, 1, (4, 16))
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
             helper.make_node("Clip", ["h", "lo", "hi"], ["r"]),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1)]
    path = _save(_graph(nodes, {"w1": w1, "b1": np.zeros(16), "lo": 0.0, "hi": 6.0, "w2": w2,
                                "b2": np.zeros(4)}, 8, 4), tmp_path / "relu6.onnx")
    got = load_mlp(path)
    assert got.mlp.clamps == [(0.0, 6.0), (-math.inf, math.inf)]
    X = rng.uniform(-1, 1, (400, 8))
    assert np.abs(got.reference(X) - got.mlp.forward(X)).max() < 1e-5
    hidden = quantize_mlp(got.mlp, X).layers[0]
    assert hidden.relu and hidden.output_zero_point == -128
    assert float(np.float32(hidden.output_scale)) * 255 == pytest.approx(6.0, rel=1e-6)


def test_batch_norm_and_input_normalisation_are_folded(tmp_path):
    """(x - mean) / std at the input and a BatchNormalization after a layer become weights:
    the MLP as read computes what onnxruntime computes on the graph."""
    rng = np.random.default_rng(2)
    inits = {"mean": rng.uniform(0, 1, 6), "std": rng.uniform(0.5, 2, 6),
             "w1": rng.normal(0, 1, (6, 5)), "bn_s": rng.uniform(0.5, 2, 5),
             "bn_b": rng.normal(0, 1, 5), "bn_m": rng.normal(0, 1, 5),
             "bn_v": rng.uniform(0.5, 2, 5), "w2": rng.normal(0, 1, (5, 3)), "b2": np.ones(3)}
    nodes = [helper.make_node("Sub", ["x", "mean"], ["c"]),
             helper.make_node("Div", ["c", "std"], ["z"]),
             helper.make_node("MatMul", ["z", "w1"], ["h"]),
             helper.make_node("BatchNormalization", ["h", "bn_s", "bn_b", "bn_m", "bn_v"],
                              ["n"], epsilon=1e-3),
             helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["m"]),
             helper.make_node("Add", ["m", "b2"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["y"], axis=-1)]
    path = _save(_graph(nodes, inits, 6, 3), tmp_path / "norm.onnx")
    got = load_mlp(path)
    assert got.mlp.layer_sizes == [6, 5, 3]
    X = rng.uniform(-2, 2, (300, 6))
    assert np.abs(got.reference(X) - got.mlp.forward(X)).max() < 1e-4
    assert any("folded" in n for n in got.notes) and any("Softmax" in n for n in got.notes)


@pytest.mark.parametrize("op, nodes, says", [
    ("Conv", [helper.make_node("Conv", ["x", "k"], ["c"], name="conv1"),
              helper.make_node("Flatten", ["c"], ["f"]),
              helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1)],
     r"node 'conv1' \(Conv\) is not part of an MLP"),
    ("Tanh", [helper.make_node("Gemm", ["x", "w0", "b0"], ["h"], transB=1),
              helper.make_node("Tanh", ["h"], ["t"], name="squash"),
              helper.make_node("Gemm", ["t", "w", "b"], ["y"], transB=1)],
     r"node 'squash' \(Tanh\)"),
    ("Clip(-1, 1)", [helper.make_node("Gemm", ["x", "w0", "b0"], ["h"], transB=1),
                     helper.make_node("Clip", ["h", "m1", "p1"], ["t"], name="hardtanh"),
                     helper.make_node("Gemm", ["t", "w", "b"], ["y"], transB=1)],
     r"node 'hardtanh' \(Clip\): clip to \[-1, 1\] is not exact in int8"),
    ("Neg after Softmax", [helper.make_node("Gemm", ["x", "w0", "b0"], ["h"], transB=1),
                           helper.make_node("Softmax", ["h"], ["p"]),
                           helper.make_node("Neg", ["p"], ["y"], name="flip")],
     r"node 'flip' \(Neg\) follows the last layer \('h'\) and changes which class wins"),
])
def test_an_unsupported_graph_is_refused_naming_the_operator_and_node(op, nodes, says, tmp_path):
    rng = np.random.default_rng(0)
    inits = {"k": rng.normal(size=(2, 1, 3, 3)), "w": rng.normal(size=(3, 72 if op == "Conv"
                                                                       else 4)),
             "b": np.zeros(3), "w0": rng.normal(size=(4, 64)), "b0": np.zeros(4),
             "m1": -1.0, "p1": 1.0}
    shape = ["n", 1, 8, 8] if op == "Conv" else None
    n_out = 4 if op == "Neg after Softmax" else 3
    path = _save(_graph(nodes, {k: v for k, v in inits.items()
                                if any(k in n.input for n in nodes)}, 64, n_out, shape=shape),
                 tmp_path / "m.onnx")
    with pytest.raises(UnsupportedModel, match=says) as info:
        load_mlp(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_a_binary_classifier_with_string_labels(tmp_path):
    """scikit-learn's binary MLP has one logistic output: two classes, (0, logit), labelled
    with the model's own class names; labels given as those names."""
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(4)
    X = rng.normal(size=(2000, 5)).astype(np.float32)
    y = np.where(X[:, 0] + 0.5 * X[:, 1] > 0, "yes", "no")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=400, random_state=0).fit(
            X[:1000], y[:1000])
    path = _save(to_onnx(clf, X[:1], options={"zipmap": False}), tmp_path / "bin.onnx")
    np.save(tmp_path / "X.npy", X[1000:])
    np.save(tmp_path / "y.npy", y[1000:])
    np.save(tmp_path / "Xc.npy", X[:1000])
    report = quantize_file(path, tmp_path / "bin.m1w", calib_data=tmp_path / "Xc.npy",
                           eval_data=(tmp_path / "X.npy", tmp_path / "y.npy"))
    assert report["package"]["classes"] == ["no", "yes"]
    assert report["accuracy"]["float"] == pytest.approx(clf.score(X[1000:], y[1000:]))
    assert report["accuracy"]["drop_points"] <= 1.0
    meta = export_bundle(path, "jetson-tx2", tmp_path / "b")
    assert meta["class_output"] == "probabilities" and meta["decision"] == {"rule": "argmax"}


def test_a_state_dict_is_read_as_linear_layers_with_relu_between(models):
    got = load_mlp(models["state_dict"])
    assert got.kind == "state_dict" and got.mlp.layer_sizes == [64, 32, 10]
    assert got.reference is None and "ReLU assumed" in got.notes[0]
    assert sniff(models["TorchScript"]).name == "torchscript"


# --------------------------------------------------------------------------- the bugs


def mark1(*args: str) -> subprocess.CompletedProcess:
    """``mark1 ARGS`` in this interpreter, the console script's code path (warnings count as
    lines on stderr)."""
    answer = run_in_process(list(args))
    return subprocess.CompletedProcess(args, answer.code, answer.stdout, answer.stderr)


class OwnNet(torch.nn.Module):
    """A user's own module class."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(64, 10)


def test_a_checkpoint_with_64_inputs_quantizes_and_exports(data, tmp_path):
    """It named a built-in task but takes 64 inputs: refused without the user's data (exit 2,
    saying what to give), done with it -- where export and quantize crashed (exit 1)."""
    from export.onnx.checkpoint import save_checkpoint
    from tests.int8_models import random_checkpoint

    ckpt = random_checkpoint(np.random.default_rng(0), [64, 16, 10])
    ckpt.classes = [str(d) for d in range(10)]
    src = save_checkpoint(ckpt, tmp_path / "c64.pt")
    done = mark1("quantize", str(src), "--out", str(tmp_path / "q.m1w"))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "takes 64 inputs" in done.stderr and "--calib-data" in done.stderr
    done = mark1("quantize", str(src), "--calib-data", str(data["X_train"]), "--eval-data",
                   str(data["X_test"]), str(data["y_test"]), "--out", str(tmp_path / "q.m1w"))
    assert done.returncode == 0, done.stderr
    done = mark1("export", "onnx", str(src), "--out", str(tmp_path / "b"))
    assert done.returncode == 0, done.stderr
    assert "seeded random inputs" in done.stdout
    assert json.loads((tmp_path / "b" / "model.json").read_text())["inputs"][0]["shape"] == [
        "batch", 64]


def test_quantize_refuses_a_task_whose_classes_do_not_fit(tmp_path):
    """A 10-class digits model on `letters` exited 0 at 3 % and said "goal met"."""
    from export.onnx.checkpoint import save_checkpoint
    from tests.int8_models import trained_checkpoint

    src = save_checkpoint(trained_checkpoint("digits"), tmp_path / "digits.pt")
    done = mark1("quantize", str(src), "--task", "letters", "--out", str(tmp_path / "q.m1w"))
    assert done.returncode == 2, done.stdout
    assert "task 'letters' has 26 classes (A, B, C, D, E, ...) but the model has 10" in \
        done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits.pt"]


def test_a_checkpoint_of_a_task_not_built_in_exports_on_probe_inputs(tmp_path):
    """Its parity ran on random probe images against an absolute 1e-5 and failed (exit 3)."""
    import dataclasses

    from export.onnx.checkpoint import save_checkpoint
    from tests.int8_models import trained_checkpoint

    ckpt = dataclasses.replace(trained_checkpoint("digits"), task="my-digits")
    src = save_checkpoint(ckpt, tmp_path / "mine.pt")
    done = mark1("export", "onnx", str(src), "--out", str(tmp_path / "b"))
    assert done.returncode == 0, done.stderr
    parity = json.loads((tmp_path / "b" / "model.json").read_text())["parity"]
    assert parity["passed"] and "seeded random inputs" in parity["data"]
    assert parity["worst_diff_to_bound"] <= 1.0


def test_a_pickled_module_of_the_users_own_class_is_refused_in_one_clean_line(tmp_path):
    """The message was cut mid-sentence with a raw ANSI escape in it."""
    torch.save(OwnNet(), tmp_path / "net.pt")
    done = mark1("quantize", str(tmp_path / "net.pt"), "--out", str(tmp_path / "q.m1w"))
    assert done.returncode == 2
    line = done.stderr.strip()
    assert len(line.splitlines()) == 1 and "\x1b" not in line and "Traceback" not in line
    assert f"pickles Python objects of class {OwnNet.__module__}.OwnNet," in line
    assert line.endswith("or export to ONNX")


def test_a_torchscript_file_is_read_without_a_warning(models, data, tmp_path):
    """torch.load printed a UserWarning before refusing it."""
    done = mark1("quantize", str(models["TorchScript"]), "--calib-data",
                   str(data["X_train"]), "--out", str(tmp_path / "ts.m1w"))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "TorchScript" in done.stdout


def test_user_data_reaches_the_mark_I_too(tmp_path):
    """A machine file on the user's images (any size, projected onto the retina) and labels:
    export and quantize report the accuracy of the simulator's own decision rule."""
    from mark1.images import to_retina
    from mark1.machine import static_predict
    from tests.int8_models import random_machine, save_machine

    rng = np.random.default_rng(5)
    machine = random_machine(rng, n_a=16, n_r=4, n_classes=3)
    path = save_machine(machine, tmp_path / "m.npz")
    images = rng.uniform(size=(60, 8, 8))
    labels = np.array(["k0", "k1", "k2"] * 20)
    np.save(tmp_path / "X.npy", images)
    np.save(tmp_path / "y.npy", labels)
    want = float(np.mean(static_predict(machine, to_retina(images).reshape(60, -1))
                         == np.tile([0, 1, 2], 20)))
    meta = export_bundle(path, "jetson-tx2", tmp_path / "b",
                         eval_data=(str(tmp_path / "X.npy"), str(tmp_path / "y.npy")))
    assert meta["accuracy"]["reference"] == meta["accuracy"]["exported"] == pytest.approx(want)
    report = quantize_file(path, tmp_path / "m.m1w", calib_data=tmp_path / "X.npy",
                           eval_data=(tmp_path / "X.npy", tmp_path / "y.npy"))
    assert report["accuracy"]["float"] == pytest.approx(want)
