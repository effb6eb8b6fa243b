"""TensorFlow Lite both ways, measured against TensorFlow Lite's own runtimes.

Keras MLPs converted by ``TFLiteConverter`` with full-integer quantization
(:mod:`tests.tflite_fixtures`) are imported as weight packages and run on the simulated device
and the C firmware, bit-exact with TFLite Micro's interpreter when the package rounds twice and
with LiteRT when it rounds once; the kit's own packages exported as ``.tflite`` run in TFLite
Micro bit-exact with the golden reference when quantized with TFLite's rounding, and the
difference of a single-rounding package is measured. The figures are printed (``-s``) and are
those of ``docs/TFLITE.md``.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace

import numpy as np
import pytest

from export.contract.golden import decide, golden_forward, quantize_input
from export.contract.package import decode_package, encode_package
from export.int8.quantize import quantize_mlp
from export.tflite.read import UnsupportedTFLite, parse_tflite, read_tflite
from export.tflite.write import tflite_bytes
from firmware_sim.engine import Engine
from tests.conftest import run_cli
from tests.int8_models import task_data, trained_checkpoint
from tests.tflite_fixtures import fixture_dir, tensorflow_missing


@pytest.fixture(scope="module")
def fx():
    why = tensorflow_missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the TFLite tests: {why}")
        pytest.skip(why)
    return fixture_dir()


def tflm(model: bytes, x: np.ndarray) -> np.ndarray:
    """TFLite Micro's Python interpreter (its reference kernels), one input at a time."""
    from tflite_micro.python.tflite_micro import runtime

    interp = runtime.Interpreter.from_bytes(model)
    shape = interp.get_input_details(0)["shape"]
    out = []
    for row in x:
        interp.set_input(row.reshape(shape).astype(interp.get_input_details(0)["dtype"]), 0)
        interp.invoke()
        out.append(interp.get_output(0).reshape(-1).copy())
    return np.stack(out)


def litert(model: bytes, x: np.ndarray, kernels: str = "AUTO") -> np.ndarray:
    """LiteRT's interpreter: its default kernels (XNNPACK where it applies), or another
    ``OpResolverType`` (``BUILTIN_REF``: the reference kernels; ``BUILTIN_WITHOUT_DEFAULT_
    DELEGATES``: the optimized builtin kernels alone)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=model,
                         experimental_op_resolver_type=OpResolverType[kernels])
    interp.allocate_tensors()
    i, o = interp.get_input_details()[0], interp.get_output_details()[0]
    out = []
    for row in x:
        interp.set_tensor(i["index"], row.reshape(i["shape"]).astype(i["dtype"]))
        interp.invoke()
        out.append(interp.get_tensor(o["index"]).reshape(-1).copy())
    return np.stack(out)


def imported(fx, name: str, rounding: str):
    got = read_tflite(fx / f"{name}.tflite")
    return got, replace(got.package, rounding=rounding)


def inputs(fx, pkg) -> np.ndarray:
    """The held-out rows as the package's int8 inputs, and the two extremes."""
    x_q = quantize_input(pkg, np.load(fx / "X_test.npy").reshape(-1, pkg.n_inputs))
    return np.concatenate([x_q, np.full((1, pkg.n_inputs), -128, np.int8),
                           np.full((1, pkg.n_inputs), 127, np.int8)])


@pytest.mark.parametrize("name", ["per_tensor", "per_channel"])
def test_keras_mlps_run_bit_exact_with_tflm_when_double_and_with_litert_when_single(fx, name):
    model = (fx / f"{name}.tflite").read_bytes()
    got, double = imported(fx, name, "double")
    single = replace(double, rounding="single")
    x_q = inputs(fx, double)
    by_tflm, by_litert = tflm(model, x_q), litert(model, x_q)
    for pkg, runtime in ((double, by_tflm), (single, by_litert)):
        loaded = decode_package(encode_package(pkg))  # as the device loads it
        engine = Engine(loaded)
        np.testing.assert_array_equal(golden_forward(loaded, x_q), runtime)
        np.testing.assert_array_equal(np.stack([engine.infer(x)[0] for x in x_q]), runtime)
    np.testing.assert_array_equal(litert(model, x_q, "BUILTIN_REF"), by_litert)
    differ = by_tflm != by_litert
    optimized = litert(model, x_q, "BUILTIN_WITHOUT_DEFAULT_DELEGATES")
    print(f"\n{name}: {x_q.shape[0]} inputs, {differ.size} outputs; TFLite Micro and LiteRT "
          f"differ on {int(differ.sum())} ({100 * differ.mean():.2f} %), by at most "
          f"{int(np.abs(by_tflm.astype(int) - by_litert).max())} LSB; LiteRT's optimized "
          f"kernels without XNNPACK differ from TFLite Micro on {int((optimized != by_tflm).sum())}"
          f" and from LiteRT's default on {int((optimized != by_litert).sum())}")
    assert differ.any()  # the two runtimes really round differently: the check can tell them apart
    weights = [lay.weight_scale for lay in got.package.layers]
    per_channel = any(len(set(ws.tolist())) > 1 for ws in weights)
    assert per_channel == (name == "per_channel")


def test_the_c_firmware_runs_imported_packages_as_the_runtimes_do(fx):
    from tests import firmware_lib as fw

    fw.require_host_build()
    model = (fx / "per_channel.tflite").read_bytes()
    _, double = imported(fx, "per_channel", "double")
    x_q = inputs(fx, double)
    for pkg, runtime in ((double, tflm(model, x_q)),
                         (replace(double, rounding="single"), litert(model, x_q))):
        for path in fw.PATHS:
            y, _, _ = fw.run(encode_package(pkg), x_q, path=path)
            np.testing.assert_array_equal(y, runtime)


@pytest.fixture(scope="module")
def quantized(fx, tmp_path_factory):
    """`mark1 quantize` of the per-channel .tflite, in a fresh process: the package's path."""
    out = tmp_path_factory.mktemp("imported") / "pc.m1w"
    done = run_cli("quantize", str(fx / "per_channel.tflite"), "--out", str(out),
                   "--eval-data", str(fx / "X_test.npy"), str(fx / "y_test.npy"))
    assert done.returncode == 0, done.stderr
    assert "imported as it is" in done.stdout and "format version 2" in done.stdout
    report = json.loads(out.with_name("pc.m1w.json").read_text())
    assert report["package"]["rounding"] == "double" and report["device"]["bit_exact_with_golden"]
    assert report["accuracy"]["int8"] > 0.8
    return out


@pytest.mark.parametrize("kind", ["sim", "host"])
def test_an_imported_model_pushed_to_a_device_gives_tflms_bits(fx, quantized, kind, tmp_path):
    """`mark1 push` the imported package over a pty to the simulated device and to the C
    firmware's host port, `mark1 infer --json` the held-out rows: the device's raw int8 outputs
    are TFLite Micro's."""
    from firmware_sim.device import DeviceConfig
    from tests.device_helpers import serve

    if kind == "host":
        from tests import firmware_lib as fw

        fw.require_host_build()
    pkg = decode_package(quantized.read_bytes())
    with serve(kind, DeviceConfig(), pty=True) as device:
        pushed = run_cli("push", str(quantized), "--port", device.url, "-q")
        assert pushed.returncode == 0, pushed.stderr
        ran = run_cli("infer", str(fx / "X_test.npy"), "--port", device.url, "--json",
                      str(tmp_path / "infer.json"))
    assert ran.returncode == 0, ran.stderr
    record = json.loads((tmp_path / "infer.json").read_text())
    outputs = np.array(record["outputs_device"], np.int8)
    x_q = quantize_input(pkg, np.load(fx / "X_test.npy"))
    np.testing.assert_array_equal(outputs, tflm((fx / "per_channel.tflite").read_bytes(), x_q))
    assert record["classes_device"] == [pkg.classes[k] for k in outputs.argmax(axis=1)]
    assert record["rounding"] == "double"


def test_a_float_interface_with_flatten_and_softmax_keeps_tflms_classes(fx):
    """The 8x8 model: QUANTIZE, Keras' Flatten (SHAPE, STRIDED_SLICE, PACK, RESHAPE), three
    layers, SOFTMAX, DEQUANTIZE. The softmax is dropped: the class is TFLite Micro's wherever
    its int8 softmax has a single largest output."""
    got, pkg = imported(fx, "softmax_float_io", "double")
    assert got.interface == "float32" and pkg.input_shape == (8, 8)
    assert any("SOFTMAX at the output dropped" in n for n in got.notes)
    assert any("Flatten" in n for n in got.notes)
    X = np.load(fx / "X_test.npy").reshape(-1, 8, 8)
    probs = tflm((fx / "softmax_float_io.tflite").read_bytes(), X)
    top = np.sort(probs, axis=1)
    clear = top[:, -1] > top[:, -2]
    ours = decide(pkg, golden_forward(pkg, quantize_input(pkg, X)))
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(ours[clear], probs.argmax(axis=1)[clear])


def test_a_binary_classifier_with_a_sigmoid_gets_a_constant_column(fx):
    got, pkg = imported(fx, "binary", "double")
    assert pkg.n_outputs == 2 and got.logit_columns == (1,)
    model = (fx / "binary.tflite").read_bytes()
    x_q = inputs(fx, pkg)
    y = golden_forward(pkg, x_q)
    assert (y[:, 0] == pkg.output_zero_point).all()
    sigmoid = tflm(model, x_q)[:, 0].astype(int)  # int8 of scale 1/256, zero point -128
    decided = sigmoid != 0  # 0.5 exactly: the logit's code is its zero point either way
    np.testing.assert_array_equal(decide(pkg, y)[decided], (sigmoid > 0)[decided])


@pytest.mark.parametrize("task", ["digits", "letters"])
def test_the_kits_packages_exported_run_in_tflm_bit_exact_when_rounded_as_tflite(fx, task):
    """A 400-64-n MLP trained on a retina task, quantized by the kit both ways, exported: TFLite
    Micro computes the double-rounding package's bits on every output, LiteRT the single one's;
    the single-rounding package in TFLite Micro is measured."""
    X, _, X_test, y_test, _ = task_data(task)
    single = quantize_mlp(trained_checkpoint(task), X[:256])
    double = replace(single, rounding="double")
    x_q = quantize_input(single, X_test)
    y_single, y_double = golden_forward(single, x_q), golden_forward(double, x_q)
    by_tflm = tflm(tflite_bytes(double), x_q)
    np.testing.assert_array_equal(by_tflm, y_double)
    np.testing.assert_array_equal(tflm(tflite_bytes(single), x_q), y_double)  # TFLM's own rounding
    np.testing.assert_array_equal(litert(tflite_bytes(single), x_q), y_single)
    x_real = single.input_scale * (x_q.astype(np.float64) - single.input_zero_point)
    real_out = tflm(tflite_bytes(double, float_io=True), x_real)  # through QUANTIZE, DEQUANTIZE
    codes = np.rint(real_out / np.float32(double.output_scale)) + double.output_zero_point
    np.testing.assert_array_equal(codes, y_double)
    diff = np.abs(y_single.astype(int) - y_double)
    classes = (decide(single, y_single) != decide(single, y_double)).sum()
    print(f"\n{task} 400-64-{single.n_outputs}, {len(x_q)} test images: a single-rounding "
          f"package in TFLite "
          f"Micro: {int((diff > 0).sum())} of {diff.size} outputs differ "
          f"({100 * (diff > 0).mean():.2f} %), max {int(diff.max())} LSB, {int(classes)} classes; "
          f"accuracy {100 * (decide(single, y_single) == y_test).mean():.2f} % (single), "
          f"{100 * (decide(single, y_double) == y_test).mean():.2f} % (double)")
    assert diff.any()


def test_an_export_reads_back_as_the_same_package(fx):
    _, pkg = imported(fx, "softmax_float_io", "double")
    for float_io in (False, True):
        back = parse_tflite(tflite_bytes(pkg, float_io=float_io)).package
        assert encode_package(replace(back, rounding="double")) == encode_package(pkg)


def test_export_tflite_from_the_command_line(fx, tmp_path):
    from tests.test_bad_input import run_in_process

    out = tmp_path / "pc.m1w"
    assert run_in_process(["quantize", str(fx / "per_tensor.tflite"), "--out", str(out),
                           "--rounding", "single"]).code == 0
    assert decode_package(out.read_bytes()).rounding == "single"
    answer = run_in_process(["export", "tflite", str(out), "--out", str(tmp_path / "m.tflite")])
    assert answer.code == 0, answer.stderr
    assert "bit-exact in LiteRT (single rounding)" in answer.stdout
    assert "quantize with --rounding tflite" in answer.stdout
    x_q = inputs(fx, decode_package(out.read_bytes()))
    np.testing.assert_array_equal(litert((tmp_path / "m.tflite").read_bytes(), x_q),
                                  litert((fx / "per_tensor.tflite").read_bytes(), x_q))


@pytest.mark.parametrize("name, says", [
    ("float", "float32: this is a float"),
    ("dynamic_range", "input .* is float32"),
    ("conv2d", "operator 0 CONV_2D is not supported"),
    ("uint8_io", "is uint8"),
])
def test_models_the_engine_cannot_run_are_refused_naming_the_part(fx, name, says):
    with pytest.raises(UnsupportedTFLite, match=says):
        read_tflite(fx / f"{name}.tflite")


def test_damaged_files_are_refused_as_damaged(fx):
    whole = (fx / "per_channel.tflite").read_bytes()
    for cut in (12, 100, len(whole) // 2, len(whole) - 8):
        with pytest.raises(UnsupportedTFLite, match="not a readable TensorFlow Lite flatbuffer|"
                           "runs past|holds .* bytes of data"):
            parse_tflite(whole[:cut])
    with pytest.raises(UnsupportedTFLite, match="not a TensorFlow Lite flatbuffer"):
        parse_tflite(b"\0" * 64)


def test_a_mark_I_package_is_not_exported():
    from export.int8.quantize import quantize_machine
    from tests.int8_models import random_machine

    rng = np.random.default_rng(2)
    pkg = quantize_machine(random_machine(rng), rng.uniform(size=(20, 400)))
    with pytest.raises(ValueError, match="step, threshold layers \\(a Mark I\\)"):
        tflite_bytes(pkg)
