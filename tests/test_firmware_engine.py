"""The C firmware's int8 engine (``firmware_sim/c/src/engine*.c``) against the golden reference:
every int8 test model on random and task inputs, through both paths -- the C99 reference and
the DSP path (SXTB16/SXTAB16/SMLAD, emulated in portable C on this host; the instructions
themselves run under QEMU) -- with the heads and the cycle estimate; and the two
requantization roundings against a Python reference of each."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from export.contract.golden import (
    decide,
    golden_forward,
    multiply_by_quantized_multiplier,
    quantize_input,
    wrap_int32,
)
from export.contract.package import Dense, Package, decode_package, encode_package
from export.int8.quantize import quantize_dense, quantize_machine, quantize_mlp
from firmware_sim.engine import Engine
from tests import firmware_lib as fw
from tests.device_helpers import image
from tests.int8_models import (
    random_checkpoint,
    random_machine,
    task_data,
    tiny_package,
    trained_checkpoint,
    trained_machine,
)
from tests.test_engine import _saturating_package

I32_MIN, I32_MAX = -(2**31), 2**31 - 1


@pytest.fixture(scope="module", autouse=True)
def _library():
    fw.require_host_build()
    fw.lib()


def _odd_widths(rng: np.random.Generator) -> Package:
    """37 -> 9 (ReLU) -> 3: rows of 4 inputs and a tail of 1, an odd last row in each layer."""
    s_in = float(np.float32(1 / 255))
    first = quantize_dense(rng.normal(0, 0.3, (9, 37)), rng.normal(0, 0.5, 9), s_in, -128,
                           (0.0, 4.0), relu=True)
    second = quantize_dense(rng.normal(0, 0.5, (3, 9)), rng.normal(0, 0.1, 3), first.output_scale,
                            first.output_zero_point, (-3.0, 3.0), relu=False)
    return replace(tiny_package(), layers=(first, second), input_shape=(37,), classes=tuple("abc"))


@pytest.fixture(scope="module")
def packages() -> dict[str, bytes]:
    """Every kind of int8 test model, as the bytes the device receives."""
    rng = np.random.default_rng(11)
    X = task_data("digits")[0][:128]
    pkgs = {
        "mlp": quantize_mlp(random_checkpoint(rng, [400, 32, 16, 5]),
                            rng.uniform(size=(30, 400))),
        "odd widths": _odd_widths(rng),
        "markI": quantize_machine(random_machine(rng), rng.uniform(size=(30, 400))),
        "saturating": _saturating_package(),
        "tiny": tiny_package(),
        "digits mlp": quantize_mlp(trained_checkpoint("digits"), X),
        "digits markI": quantize_machine(trained_machine("digits"), X),
    }
    out = {name: encode_package(pkg) for name, pkg in pkgs.items()}
    out["push image"] = image()
    return out


MODELS = ["mlp", "odd widths", "markI", "saturating", "tiny", "digits mlp", "digits markI",
          "push image"]


@pytest.mark.parametrize("path", list(fw.PATHS))
@pytest.mark.parametrize("name", MODELS)
def test_bit_exact_with_golden_on_random_inputs(packages, name, path):
    data = packages[name]
    pkg = decode_package(data)
    rng = np.random.default_rng(7)
    x_q = rng.integers(-128, 128, (300, pkg.n_inputs)).astype(np.int8)
    x_q[0], x_q[1] = -128, 127  # the extremes
    y, classes, cycles = fw.run(data, x_q, path=path)
    want = golden_forward(pkg, x_q)
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(classes, decide(pkg, want))
    assert cycles == Engine(pkg).cycles  # the simulator's cycle model, to the cycle


@pytest.mark.parametrize("task", ["digits", "letters"])
def test_bit_exact_with_golden_on_task_inputs(task):
    X, _, X_test, _, _ = task_data(task)
    for pkg in (quantize_mlp(trained_checkpoint(task), X[:128]),
                quantize_machine(trained_machine(task), X[:128])):
        x_q = quantize_input(pkg, X_test)
        want = golden_forward(pkg, x_q)
        for path in fw.PATHS:
            y, classes, _ = fw.run(encode_package(pkg), x_q, path=path)
            np.testing.assert_array_equal(y, want)
            np.testing.assert_array_equal(classes, decide(pkg, want))


# --------------------------------------------------------------------------- requantization


def double_rounding(acc: int, multiplier: int, shift: int) -> int:
    """TFLite's ``MultiplyByQuantizedMultiplier`` without ``TFLITE_SINGLE_ROUNDING`` (gemmlowp),
    in Python integers: ``acc`` shifted left by ``max(shift, 0)`` (wrapping to int32),
    ``SaturatingRoundingDoublingHighMul`` by the multiplier (the high word of the doubled
    product, rounded to nearest, ties up), then ``RoundingDivideByPOT`` by ``max(-shift, 0)``
    (rounded to nearest, ties away from zero)."""
    left, right = max(shift, 0), max(-shift, 0)
    x = int(wrap_int32(acc << left))
    if x == multiplier == I32_MIN:
        high = I32_MAX
    else:
        ab = x * multiplier
        nudged = ab + (2**30 if ab >= 0 else 1 - 2**30)
        high = abs(nudged) // 2**31 * (1 if nudged >= 0 else -1)  # C division: toward zero
    mask = (1 << right) - 1
    threshold = (mask >> 1) + (1 if high < 0 else 0)
    return (high >> right) + (1 if (high & mask) > threshold else 0)


def _grid() -> np.ndarray:
    accs = [I32_MIN, I32_MIN + 1, -(2**30), -65537, -5, -3, -2, -1, 0, 1, 2, 3, 5, 65537, 2**30,
            I32_MAX]
    mults = [0, 1, 2**30, 2**30 + 1, 3 * 2**29, 2**31 - 2, 2**31 - 1]
    grid = [(a, m, s) for a in accs for m in mults for s in range(-31, 31)]
    rng = np.random.default_rng(5)
    grid += [(int(a), int(m), int(s)) for a, m, s in zip(
        rng.integers(I32_MIN, I32_MAX, 20000, endpoint=True), rng.integers(0, 2**31, 20000),
        rng.integers(-31, 31, 20000))]
    return np.array(grid, np.int64)


def test_single_rounding_is_the_golden_requantization():
    grid = _grid()
    want = multiply_by_quantized_multiplier(grid[:, 0], grid[:, 1], grid[:, 2])
    got = [fw.lib().mk_requantize_single(int(a), int(m), int(s)) for a, m, s in grid]
    np.testing.assert_array_equal(got, want)


def test_double_rounding_is_tflites():
    lib = fw.lib()
    # the two halves on hand-made values: 2^30 * 2^30 doubled is 2^61, its high word 2^29
    assert lib.mk_saturating_rounding_doubling_high_mul(2**30, 2**30) == 2**29
    assert lib.mk_saturating_rounding_doubling_high_mul(I32_MIN, I32_MIN) == I32_MAX
    # -1.5 and 1.5: the nudge makes ties go up (the C division then truncates toward zero)
    assert lib.mk_saturating_rounding_doubling_high_mul(-(2**30), 3) == -1
    assert lib.mk_saturating_rounding_doubling_high_mul(2**30, 3) == 2
    assert [lib.mk_rounding_divide_by_pot(v, 1) for v in (-3, -1, 1, 3)] == [-2, -1, 1, 2]
    assert lib.mk_rounding_divide_by_pot(-5, 2) == -1 and lib.mk_rounding_divide_by_pot(6, 2) == 2
    grid = _grid()
    got = [lib.mk_requantize_double(int(a), int(m), int(s)) for a, m, s in grid]
    want = [double_rounding(int(a), int(m), int(s)) for a, m, s in grid]
    assert got == want
    single = multiply_by_quantized_multiplier(grid[:, 0], grid[:, 1], grid[:, 2])
    differ = np.mean(np.array(got) != single)
    assert 0 < differ < 0.5  # two roundings miss the nearest value now and then, not usually


def _double_rounding_forward(data: bytes, x_q: np.ndarray) -> np.ndarray:
    """An MLP package run with double rounding: golden's accumulation, ``double_rounding``."""
    x = x_q.astype(np.int64)
    for layer in decode_package(data).layers:
        assert isinstance(layer, Dense)
        acc = wrap_int32((x - layer.input_zero_point) @ layer.weights.astype(np.int64).T
                         + layer.bias)
        v = np.array([[double_rounding(int(a), int(m), int(s))
                       for a, m, s in zip(row, layer.multiplier, layer.shift)] for row in acc])
        x = np.clip(v + layer.output_zero_point, layer.act_min, layer.act_max)
    return x.astype(np.int8)


@pytest.mark.parametrize("path", list(fw.PATHS))
def test_a_layer_flagged_for_double_rounding_runs_tflites_arithmetic(packages, path):
    rng = np.random.default_rng(3)
    for name in ("mlp", "odd widths", "saturating", "tiny"):
        data = packages[name]
        x_q = rng.integers(-128, 128, (60, decode_package(data).n_inputs)).astype(np.int8)
        y, _, _ = fw.run(data, x_q, path=path, rounding=1)
        np.testing.assert_array_equal(y, _double_rounding_forward(data, x_q))
