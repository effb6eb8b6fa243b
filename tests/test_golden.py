"""The golden integer reference against closed forms: rounding, ties, shifts, saturation."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from math import floor

import numpy as np
import pytest

from export.contract.golden import (
    decide,
    dequantize_output,
    golden_activations,
    golden_forward,
    multiply_by_quantized_multiplier,
    predict,
    quantize_input,
    requantize,
    wrap_int32,
)
from export.int8.quantize import quantize_dense, quantize_machine
from tests.int8_models import random_machine, tiny_package

I32_MIN, I32_MAX = -(2**31), 2**31 - 1


def exact(acc: int, m: int, shift: int) -> int:
    """floor(acc * m / 2^(31 - shift) + 1/2), saturated to int32: the documented definition."""
    v = floor(Fraction(acc * m, 2 ** (31 - shift)) + Fraction(1, 2))
    return max(I32_MIN, min(I32_MAX, v))


def test_requantization_is_the_exact_product_rounded_once():
    rng = np.random.default_rng(0)
    acc = np.concatenate([
        rng.integers(I32_MIN, I32_MAX, 3000, endpoint=True), rng.integers(-5000, 5000, 3000),
        [I32_MIN, I32_MIN + 1, -1, 0, 1, I32_MAX - 1, I32_MAX],
    ])
    m = rng.integers(2**30, 2**31, acc.size)
    m[-7:] = [2**31 - 1, 2**30, 2**31 - 1, 0, 2**30, 2**31 - 1, 2**31 - 1]
    shift = rng.integers(-31, 31, acc.size)
    shift[-7:] = [30, -31, 0, 0, -1, 30, -31]
    got = multiply_by_quantized_multiplier(acc, m, shift)
    want = [exact(int(a), int(b), int(s)) for a, b, s in zip(acc, m, shift)]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "acc, m, shift, want",
    [
        (5, 2**30, 0, 3),      # 2.5 -> 3: ties toward +infinity
        (-5, 2**30, 0, -2),    # -2.5 -> -2
        (3, 2**30, 0, 2),      # 1.5 -> 2
        (-3, 2**30, 0, -1),    # -1.5 -> -1
        (-1, 2**30, 0, 0),     # -0.5 -> 0
        (6, 2**30, -1, 2),     # 6 * 0.5 / 2 = 1.5 -> 2
        (5, 2**30, -1, 1),     # 1.25 -> 1
        (-6, 2**30, -1, -1),   # -1.5 -> -1
        (1000, 2**30, -3, 63),     # 62.5 -> 63: a negative shift is a rounding right shift
        (-1000, 2**30, -3, -62),   # -62.5 -> -62
        (-1001, 2**30, -3, -63),   # -62.5625 -> -63
        (I32_MAX, 2**31 - 1, -31, 1),   # (2^31-1)^2 / 2^62 = 0.99999999953 -> 1
        (I32_MIN, 2**31 - 1, -31, -1),  # -0.99999999977 -> -1
        (I32_MIN, 2**31 - 1, 0, I32_MIN + 1),  # -2^31 * (1 - 2^-31) = -2^31 + 1, exactly
        (2**30, 2**31 - 1, 30, I32_MAX),  # a positive shift saturates at the int32 limits
        (-(2**30), 2**31 - 1, 30, I32_MIN),
        (7, 2**30, 1, 7),      # shift +1 with m = 0.5: times one
        (123456, 0, 0, 0),     # a zero multiplier gives zero
    ],
)
def test_requantization_edge_cases(acc, m, shift, want):
    assert int(multiply_by_quantized_multiplier(acc, m, shift)) == want == exact(acc, m, shift)


def test_requantize_adds_zero_point_and_clamps_to_the_activation_range():
    acc = np.array([-(10**6), -40, 0, 40, 10**6])
    m = np.full(5, 2**30)  # times 0.5
    y = requantize(acc, m, np.zeros(5), zero_point=10)
    np.testing.assert_array_equal(y, [-128, -10, 10, 30, 127])
    relu = requantize(acc, m, np.zeros(5), zero_point=-100, act_min=-100)
    np.testing.assert_array_equal(relu, [-100, -100, -100, -80, 127])
    assert y.dtype == np.int8
    with pytest.raises(ValueError, match="shift"):
        multiply_by_quantized_multiplier(1, 2**30, 31)


def test_wrap_int32_is_twos_complement():
    np.testing.assert_array_equal(
        wrap_int32([2**31, -(2**31) - 1, 2**32 + 5, -7, I32_MAX]),
        [I32_MIN, I32_MAX, 5, -7, I32_MAX],
    )


def test_dense_output_is_the_real_result_rounded():
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.2, (7, 30))
    b = rng.normal(0, 0.5, 7)
    layer = quantize_dense(w, b, float(np.float32(1 / 255)), -128, (-3.0, 3.0), relu=False)
    pkg = replace(tiny_package(), layers=(layer,), input_shape=(30,),
                  classes=tuple("abcdefg"))
    x_q = rng.integers(-128, 128, (200, 30))
    acc = (x_q - layer.input_zero_point) @ layer.weights.astype(np.int64).T + layer.bias
    real = layer.multiplier * np.ldexp(1.0, layer.shift - 31)  # the multiplier's exact value
    ideal = acc * real + layer.output_zero_point
    y = golden_forward(pkg, x_q).astype(np.int64)
    inside = (ideal > -128) & (ideal < 127)
    assert inside.mean() > 0.9
    assert np.abs(y - ideal)[inside].max() <= 0.5 + 1e-9
    np.testing.assert_array_equal(y[~inside], np.clip(np.round(ideal[~inside]), -128, 127))


def test_quantize_input_rounds_half_to_even_and_saturates():
    pkg = replace(tiny_package(), input_scale=0.5, input_zero_point=0)
    x = np.array([[0.25, 0.75, 1.25], [-0.25, 100.0, -100.0]])  # 0.5, 1.5, 2.5 steps ...
    np.testing.assert_array_equal(quantize_input(pkg, x), [[0, 2, 2], [0, 127, -128]])
    real = tiny_package()
    assert quantize_input(real, np.array([[0.0, 1.0, 0.5]])).tolist() == [[-128, 127, -1]]
    with pytest.raises(ValueError, match="NaN"):
        quantize_input(real, np.array([[0.0, np.nan, 0.0]]))
    with pytest.raises(ValueError, match="shape"):
        quantize_input(real, np.zeros((2, 4)))
    with pytest.raises(TypeError):
        quantize_input(real, np.array([["a", "b", "c"]]))


def test_forward_checks_its_int8_input():
    pkg = tiny_package()
    with pytest.raises(TypeError, match="integers"):
        golden_forward(pkg, np.zeros((1, 3)))
    with pytest.raises(ValueError, match="\\[-128, 127\\]"):
        golden_forward(pkg, np.array([[0, 128, 0]]))
    with pytest.raises(ValueError, match="shape"):
        golden_forward(pkg, np.zeros((1, 4), np.int8))
    assert golden_forward(pkg, np.zeros((2, 3), np.int8)).shape == (2, 2)


def test_the_worked_example_of_the_spec():
    pkg = tiny_package()
    x_q = quantize_input(pkg, np.array([[1.0, 0.5, 0.0]]))
    assert x_q.tolist() == [[127, -1, -128]]
    y = golden_forward(pkg, x_q)
    assert y.tolist() == [[42, 1]]
    np.testing.assert_allclose(dequantize_output(pkg, y), [[0.39, -0.02]], atol=1e-7)
    assert decide(pkg, y).tolist() == [0] == predict(pkg, np.array([[1.0, 0.5, 0.0]])).tolist()


def test_argmax_ties_go_to_the_lowest_index():
    assert decide(tiny_package(), np.array([[5, 5], [4, 9]])).tolist() == [0, 1]


def test_codebook_head_follows_the_mark_I_rule():
    # output zero point 3: r = y - 3
    pkg = replace(tiny_package(), codebook=np.array([[1, -1], [-1, 1], [1, 1]], np.int8),
                  classes=("a", "b", "c"))
    cases = {
        (3 + 2, 3 + 1): 2,    # both on: class c agrees on 2 units
        (3 + 2, 3 - 1): 0,    # on, off: class a
        (3 - 2, 3 + 1): 1,    # off, on: class b
        (3 + 0, 3 + 0): 0,    # both off (r = 0 is off): a and b agree on 1 -- score 0 tie -> a
        (3 - 1, 3 - 4): 0,    # both off: a scores -1 + 4 = 3, b scores 1 - 4 = -3
        (3 - 4, 3 - 1): 1,    # both off: b scores 4 - 1 = 3
    }
    y = np.array(list(cases), dtype=np.int8)
    assert decide(pkg, y).tolist() == list(cases.values())


def test_mark_I_layers_follow_their_closed_forms():
    rng = np.random.default_rng(2)
    machine = random_machine(rng, n_a=40)
    pkg = quantize_machine(machine, rng.uniform(size=(30, 400)))
    x_q = rng.integers(-128, 128, (50, 400)).astype(np.int8)
    x_q[:, 0] = 127  # the dead cell never fires even at full light
    x_q[:, 1] = -128  # the always-lit cell fires in darkness
    acts = golden_activations(pkg, x_q)
    s_layer, a_layer, _ = pkg.layers
    s = acts[1].astype(np.int64)
    np.testing.assert_array_equal(s, x_q >= s_layer.threshold)
    assert s[:, 0].max() == 0 and s[:, 1].min() == 1
    board = machine["plugboard"].astype(np.int64)
    np.testing.assert_array_equal(acts[2], s @ board.T >= machine["a_threshold"])


# --------------------------------------------------------------------------- double rounding


def high_mul(a: int, b: int) -> int:
    """gemmlowp's SaturatingRoundingDoublingHighMul as its source defines it: the 64-bit product
    nudged by 2^30 away from zero, divided by 2^31 truncating toward zero; MIN * MIN saturates."""
    if a == b == I32_MIN:
        return I32_MAX
    ab = a * b
    nudged = ab + (2**30 if ab >= 0 else 1 - 2**30)
    q = abs(nudged) // 2**31
    return q if nudged >= 0 else -q


def divide_by_pot(x: int, exponent: int) -> int:
    """gemmlowp's RoundingDivideByPOT: x / 2^exponent to nearest, ties away from zero."""
    q = floor(Fraction(abs(x), 2**exponent) + Fraction(1, 2))
    return q if x >= 0 else -q


def tflite(acc: int, m: int, shift: int) -> int:
    """TFLite's MultiplyByQuantizedMultiplier (double rounding) on Python integers."""
    shifted = (acc << max(shift, 0)) & 0xFFFFFFFF
    shifted -= (shifted >> 31) << 32  # back to int32, as C's int32 multiplication wraps
    return divide_by_pot(high_mul(shifted, m), max(-shift, 0))


def test_double_rounding_is_tflites_two_roundings():
    rng = np.random.default_rng(1)
    acc = np.concatenate([rng.integers(I32_MIN, I32_MAX, 3000, endpoint=True),
                          rng.integers(-5000, 5000, 3000), [I32_MIN, -1, 0, 1, I32_MAX]])
    m = rng.integers(2**30, 2**31, acc.size)
    m[-5:] = [I32_MAX, 2**30, 0, 2**30, I32_MAX]
    shift = rng.integers(-31, 31, acc.size)
    got = multiply_by_quantized_multiplier(acc, m, shift, "double")
    want = [tflite(int(a), int(b), int(s)) for a, b, s in zip(acc, m, shift)]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "acc, m, shift, single, double",
    [
        (5, 2**30, 0, 3, 3),      # 2.5: the high multiply's tie goes up, as single's
        (-5, 2**30, 0, -2, -2),   # -2.5: the high multiply's tie goes toward +infinity too
        (5, 2**30, -1, 1, 2),     # 1.25: the high multiply gives 2.5 -> 3, the divide 1.5 -> 2
        (-5, 2**30, -1, -1, -1),  # -1.25: -2.5 -> -2, then -1 exactly
        (1, 2**30, -1, 0, 1),     # 0.25: 0.5 -> 1, then 0.5 -> 1: double rounding's error
        (3, 3 * 2**29, -1, 1, 1),  # 1.125: 2.25 -> 2, then 1
        (1, 2**30, 0, 1, 1),      # 0.5 -> 1
        (-1, 2**30, 0, 0, 0),     # -0.5 -> 0 (ties toward +infinity in the high multiply)
        (-2, 2**30, -1, 0, -1),   # -0.5: -1 exactly from the multiply, the divide's tie away
        (I32_MIN, 0, 0, 0, 0),    # a zero multiplier gives zero
        (2**30, 2**31 - 1, 1, I32_MAX, I32_MIN + 1),  # 2^30 << 1 wraps to -2^31 in TFLite
    ],
)
def test_single_and_double_rounding_on_hand_worked_values(acc, m, shift, single, double):
    assert int(multiply_by_quantized_multiplier(acc, m, shift, "single")) == single
    assert int(multiply_by_quantized_multiplier(acc, m, shift, "double")) == double
    assert tflite(acc, m, shift) == double


def test_an_unknown_rounding_is_refused():
    with pytest.raises(ValueError, match="rounding 'even'"):
        multiply_by_quantized_multiplier(1, 2**30, 0, "even")


def test_the_package_rounding_decides_the_forward_pass():
    pkg = tiny_package()
    x = np.random.default_rng(3).integers(-128, 128, (20_000, 3)).astype(np.int8)
    double = replace(pkg, rounding="double")
    layer = pkg.layers[0]
    acc = wrap_int32((x.astype(np.int64) - layer.input_zero_point) @ layer.weights.T.astype(
        np.int64) + layer.bias)
    for p in (pkg, double):
        want = requantize(acc, layer.multiplier, layer.shift, layer.output_zero_point,
                          rounding=p.rounding)
        np.testing.assert_array_equal(golden_forward(p, x), want)
    assert (golden_forward(pkg, x) != golden_forward(double, x)).any()
