"""int8 quantization: parameters, accuracy goals, the Mark I layers, and ``mark1 quantize``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from export.contract.golden import golden_activations, predict, quantize_input
from export.contract.package import Dense, decode_package, encode_package
from export.int8.quantize import (
    INPUT_SCALE,
    INPUT_ZERO_POINT,
    choose_qparams,
    float_predict,
    load_source,
    quantize_dense,
    quantize_file,
    quantize_machine,
    quantize_mlp,
    quantize_multiplier,
)
from export.onnx.checkpoint import save_checkpoint
from firmware_sim.engine import Engine
from tests.conftest import run_cli
from tests.int8_models import (
    random_checkpoint,
    random_machine,
    save_machine,
    task_data,
    trained_checkpoint,
    trained_machine,
)

# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    "real, want",
    [
        (0.5, (2**30, 0)),
        (1.0, (2**30, 1)),
        (0.25, (2**30, -1)),
        (0.75, (3 * 2**29, 0)),
        ((2**31 - 0.25) / 2**31 / 8, (2**30, -2)),  # mantissa rounds up to 2^31: renormalised
        (2.0**-32, (2**30, -31)),
        (2.0**-33, (0, 0)),  # below 2^-32: zero multiplier
        (2.0**29, (2**30, 30)),
    ],
)
def test_quantize_multiplier_known_values(real, want):
    assert quantize_multiplier(real) == want


def test_quantize_multiplier_is_accurate_and_refuses_bad_values():
    rng = np.random.default_rng(0)
    for real in np.exp(rng.uniform(np.log(1e-9), np.log(1e8), 500)):
        m0, shift = quantize_multiplier(float(real))
        assert 2**30 <= m0 < 2**31 and -31 <= shift <= 30
        assert abs(m0 * 2.0 ** (shift - 31) / real - 1) <= 2.0**-31
    for bad in (0.0, -1.0, math.nan, math.inf, 2.0**31):
        with pytest.raises(ValueError):
            quantize_multiplier(bad)


@pytest.mark.parametrize("lo, hi", [(0.0, 6.0), (-1.0, 1.0), (-3.0, 0.5), (0.2, 0.9), (-4, -1)])
def test_activation_range_holds_zero_exactly_and_covers_the_range(lo, hi):
    scale, zp = choose_qparams(lo, hi)
    assert scale == float(np.float32(scale)) and -128 <= zp <= 127
    assert (-128 - zp) * scale <= min(lo, 0.0) + scale / 2
    assert (127 - zp) * scale >= max(hi, 0.0) - scale / 2
    if lo >= 0:
        assert zp == -128  # a ReLU range: zero is the lowest code
    assert choose_qparams(0.0, 0.0) == (float(np.float32(1 / 255)), -128)


def test_weights_are_symmetric_per_output_channel():
    rng = np.random.default_rng(1)
    w = rng.normal(0, 1, (5, 40)) * np.array([[0.01], [0.1], [1.0], [10.0], [0.0]])
    b = rng.normal(0, 0.1, 5)
    layer = quantize_dense(w, b, INPUT_SCALE, INPUT_ZERO_POINT, (-1.0, 1.0), relu=False)
    assert isinstance(layer, Dense) and layer.weights.dtype == np.int8
    np.testing.assert_array_equal(np.abs(layer.weights[:4]).max(axis=1), 127)
    assert not layer.weights[4].any()  # an all-zero channel stays zero ...
    assert layer.weight_scale.dtype == np.float32
    deq = layer.weights * layer.weight_scale[:, None].astype(np.float64)
    assert (np.abs(deq - w) <= layer.weight_scale[:, None] / 2 * (1 + 1e-6)).all()
    bias = layer.bias * INPUT_SCALE * layer.weight_scale.astype(np.float64)
    np.testing.assert_allclose(bias, b, atol=float(INPUT_SCALE * layer.weight_scale.max()))
    assert abs(bias[4] - b[4]) <= INPUT_SCALE * layer.weight_scale[4]  # ... its bias is exact


def test_bias_is_kept_inside_the_int32_accumulator():
    w = np.full((1, 400), 1.0)
    layer = quantize_dense(w, np.array([1e9]), INPUT_SCALE, INPUT_ZERO_POINT, (0, 1), relu=True)
    assert int(layer.bias[0]) + 255 * 127 * 400 <= 2**31 - 1


def test_bias_correction_removes_the_mean_error_of_rounding():
    rng = np.random.default_rng(2)
    w = rng.normal(0, 1, (8, 300))
    x = (rng.random((500, 300)) < 0.4).astype(np.float64)  # binary inputs, as A-units give
    mean = x.mean(axis=0)

    def mean_error(layer):
        deq = layer.weights * layer.weight_scale[:, None].astype(np.float64)
        return np.abs(((x @ deq.T + layer.bias * layer.weight_scale) - x @ w.T).mean(axis=0))

    plain = quantize_dense(w, np.zeros(8), 1.0, 0, (-30, 30), relu=False)
    fixed = quantize_dense(w, np.zeros(8), 1.0, 0, (-30, 30), relu=False, input_mean=mean)
    assert mean_error(fixed).mean() < 0.8 * mean_error(plain).mean()


# --------------------------------------------------------------------------- accuracy goals


@pytest.mark.parametrize("task", ["digits", "letters"])
def test_int8_accuracy_drop_is_within_one_point(task):
    X, _, X_test, y_test, _ = task_data(task)
    ckpt = trained_checkpoint(task)
    pkg = quantize_mlp(ckpt, X[:256])
    acc_float = np.mean(float_predict(ckpt, X_test) == y_test)
    acc_int8 = np.mean(predict(pkg, X_test) == y_test)
    assert acc_float > {"digits": 0.9, "letters": 0.5}[task]  # a model worth quantizing
    assert 100 * (acc_float - acc_int8) <= 1.0, (acc_float, acc_int8)


def test_mark_I_int8_keeps_its_decisions():
    X, _, X_test, y_test, _ = task_data("digits")
    machine = trained_machine("digits")
    pkg = quantize_machine(machine, X[:256])
    same = np.mean(predict(pkg, X_test) == float_predict(machine, X_test))
    acc_float = np.mean(float_predict(machine, X_test) == y_test)
    acc_int8 = np.mean(predict(pkg, X_test) == y_test)
    assert same >= 0.98 and 100 * (acc_float - acc_int8) <= 1.0, (same, acc_float, acc_int8)


def test_S_units_fire_where_the_dequantized_input_exceeds_their_threshold():
    rng = np.random.default_rng(3)
    machine = random_machine(rng, n_a=8)
    pkg = quantize_machine(machine, rng.uniform(size=(10, 400)))
    codes = np.arange(-128, 128)
    x_q = np.resize(codes, (4, 400)).astype(np.int8)  # every code at many cells
    real = INPUT_SCALE * (x_q.astype(np.float64) - INPUT_ZERO_POINT)
    s = golden_activations(pkg, x_q)[1]
    np.testing.assert_array_equal(s, real > machine["cell_threshold"])
    assert pkg.layers[0].threshold[0] == 128 and pkg.layers[0].threshold[1] == -128  # +-inf


def test_A_units_are_exact_on_any_S_pattern():
    rng = np.random.default_rng(4)
    machine = random_machine(rng, n_a=64)
    pkg = quantize_machine(machine, rng.uniform(size=(10, 400)))
    step = pkg.layers[1]
    s = (rng.random((300, 400)) < rng.uniform(0.05, 0.95, (300, 1))).astype(np.int8)
    from export.contract.golden import golden_forward
    from export.contract.package import Package

    only_a = Package((step,), (400,), tuple(f"a{j}" for j in range(64)), 1.0, 0)
    a = golden_forward(only_a, s)
    want = s.astype(np.int64) @ machine["plugboard"].T.astype(np.int64) >= machine["a_threshold"]
    np.testing.assert_array_equal(a, want)
    assert 0.05 < a.mean() < 0.95


def test_quantization_is_deterministic():
    rng = np.random.default_rng(5)
    ckpt = random_checkpoint(rng, [400, 12, 4])
    X = rng.uniform(size=(20, 400))
    assert encode_package(quantize_mlp(ckpt, X)) == encode_package(quantize_mlp(ckpt, X))


# --------------------------------------------------------------------------- files and CLI


@pytest.fixture(scope="module")
def small_sources(tmp_path_factory):
    """A small MLP checkpoint and a machine file on a quick task (few images)."""
    folder = tmp_path_factory.mktemp("sources")
    rng = np.random.default_rng(6)
    ckpt = random_checkpoint(rng, [400, 16, 2])
    ckpt.task, ckpt.task_options = "square-circle", {"n_train": 60, "n_test": 40}
    ckpt.classes = ["square", "circle"]  # the task's classes, in its order
    machine = random_machine(rng, n_a=32, n_r=4, n_classes=2)
    machine["task"] = np.array("left-right")  # 100 training and 200 test images
    machine["classes"] = np.array(["left", "right"])
    return save_checkpoint(ckpt, folder / "mlp.pt"), save_machine(machine, folder / "m.npz")


def test_load_source_tells_the_kinds_apart(small_sources, tmp_path):
    mlp, machine = small_sources
    assert load_source(mlp).layer_sizes == [400, 16, 2]
    assert load_source(machine)["plugboard"].shape == (32, 400)
    junk = tmp_path / "notes.txt"
    junk.write_text("hello")
    with pytest.raises(ValueError):
        load_source(junk)
    with pytest.raises(FileNotFoundError):
        load_source(tmp_path / "missing.pt")


def test_quantize_file_writes_package_onnx_and_report(small_sources, tmp_path):
    _, machine = small_sources
    out = tmp_path / "mk.m1w"
    report = quantize_file(machine, out, calib=20, seed=1, device=Engine)
    pkg = decode_package(out.read_bytes())
    assert pkg.source == "markI" and pkg.classes == ("left", "right")
    assert (tmp_path / "mk.int8.onnx").stat().st_size == report["onnx"]["bytes"]
    on_disk = json.loads((tmp_path / "mk.m1w.json").read_text())
    assert on_disk["model_bytes"] == out.stat().st_size == report["model_bytes"]
    assert on_disk["ram_bytes"] == pkg.ram_bytes
    assert on_disk["calibration"]["images"] == 20
    assert on_disk["device"]["bit_exact_with_golden"] is True
    assert on_disk["onnx"]["goal_met"] is True
    assert on_disk["accuracy"]["images"] == 200
    again = quantize_file(machine, tmp_path / "again.m1w", calib=20, seed=1)
    assert again["package"]["model_id"] == report["package"]["model_id"]
    assert "device" not in again  # without a device model: no device figures
    with pytest.raises(ValueError, match="more than the 100 training images"):
        quantize_file(machine, tmp_path / "big.m1w", calib=101)
    assert not (tmp_path / "big.m1w").exists()
    every = quantize_file(machine, tmp_path / "all.m1w", calib="all")
    assert every["calibration"]["images"] == 100  # the whole training split


def test_cli_calibrates_on_all_training_images_when_told_so(small_sources, tmp_path):
    """``--calib all``, which the help offers, was refused as not a number."""
    _, machine = small_sources
    done = run_cli("quantize", str(machine), "--calib", "all", "--out", str(tmp_path / "a.m1w"))
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "a.m1w.json").read_text())
    assert report["calibration"]["images"] == 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.int8.onnx", "a.m1w", "a.m1w.json"]


def test_cli_quantize_writes_the_three_files(small_sources, tmp_path):
    mlp, _ = small_sources
    out = tmp_path / "model.m1w"
    done = run_cli("quantize", str(mlp), "--calib", "30", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "accuracy on 40 test images" in done.stdout and "cycles" in done.stdout
    report = json.loads((tmp_path / "model.m1w.json").read_text())
    assert decode_package(out.read_bytes()).model_id.hex() == report["package"]["model_id"]
    assert (tmp_path / "model.int8.onnx").is_file()
    x_q = quantize_input(decode_package(out.read_bytes()), np.zeros((1, 400)))
    assert x_q.min() == -128


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda src, tmp: [str(tmp / "missing.pt")], "missing.pt"),
        (lambda src, tmp: [str(_write(tmp / "x.pt", b"not a checkpoint"))], "x.pt"),
        (lambda src, tmp: [str(_write(tmp / "p.png", b"\x89PNG\r\n\x1a\n"))], "p.png"),
        (lambda src, tmp: [str(src[0]), "--calib", "0"], "--calib"),
        (lambda src, tmp: [str(src[0]), "--calib", "many"], "--calib"),
        (lambda src, tmp: [str(src[1]), "--task", "chess"], "chess"),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(small_sources, tmp_path, make_args,
                                                      message):
    args = make_args(small_sources, tmp_path)
    before = set(tmp_path.iterdir())
    done = run_cli("quantize", *args, "--out", str(tmp_path / "model.m1w"))
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in done.stderr
    assert set(tmp_path.iterdir()) == before


def test_cli_keeps_what_the_user_had_when_it_fails(small_sources, tmp_path):
    out = tmp_path / "model.m1w"
    out.write_bytes(b"previous model")
    done = run_cli("quantize", str(tmp_path / "nope.pt"), "--out", str(out))
    assert done.returncode == 2 and out.read_bytes() == b"previous model"
    folder = tmp_path / "a-folder"
    folder.mkdir()
    done = run_cli("quantize", str(small_sources[0]), "--out", str(folder))
    assert done.returncode == 2 and "is a folder" in done.stderr and not any(folder.iterdir())


def _write(path, data: bytes):
    path.write_bytes(data)
    return path
