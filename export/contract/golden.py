"""The golden integer reference: the definition of the device's arithmetic, in numpy.

Everything from the int8 input to the int8 output is integer arithmetic (numpy int64 holding the
values a C implementation holds in int32 / int64). The rules, which every engine must follow bit
for bit (``docs/PACKAGE.md`` has them with examples):

* **Accumulation** -- ``acc = bias + sum(w * (x - zp_in))`` in int32 with two's-complement
  wrap-around. A valid package can never wrap: the loader refuses any layer whose worst-case
  accumulator leaves int32.
* **Requantization** -- as the package's ``rounding`` says. **Single** rounding (version 1's only
  mode), as TFLite's ``MultiplyByQuantizedMultiplier`` built with ``TFLITE_SINGLE_ROUNDING`` and
  CMSIS-NN's ``arm_nn_requantize`` built with ``CMSIS_NN_USE_SINGLE_ROUNDING``::

      n = 31 - shift                                     # 1 .. 62
      v = (acc * multiplier + 2**(n - 1)) >> n           # 64-bit product, arithmetic shift
      v = saturate_int32(v)
      y = clamp(v + zp_out, act_min, act_max)

  that is ``floor(acc * multiplier / 2**n + 1/2)``: the exact product rounded once, to
  nearest, **ties toward +infinity** (-2.5 -> -2, 2.5 -> 3). Nothing overflows 64 bits
  (``|acc * multiplier| < 2**62``). ReLU is fused as ``act_min = zp_out``. **Double** rounding,
  TensorFlow Lite's ``MultiplyByQuantizedMultiplier`` as TFLite Micro's reference kernels and
  gemmlowp compute it::

      left, right = max(shift, 0), max(-shift, 0)
      h = saturating_rounding_doubling_high_mul(wrap_int32(acc * 2**left), multiplier)
      v = rounding_divide_by_pot(h, right)
      y = clamp(v + zp_out, act_min, act_max)

  The high multiply rounds ``acc * multiplier / 2**31`` to nearest, ties toward +infinity;
  the divide rounds again, to nearest, ties away from zero. Where ``s_in * s_w / s_out`` is
  close to 1 (the Mark I R-layer on binary inputs) the two roundings miss the nearest value on
  about one output in ten; on a typical MLP layer, on one or two in a hundred.
* **Threshold** -- ``y = 1 if x >= t else 0``. **Step** -- ``y = 1 if acc >= t else 0``, with
  ``acc = sum(v * (x - zp_in))`` over the row's connections in wrapping int32.

Host-side functions (float): :func:`quantize_input` follows ONNX ``QuantizeLinear`` (float32
division, round half to even, saturate), so host, onnxruntime and device see the same int8 input;
:func:`dequantize_output` maps outputs back to real values.
"""

from __future__ import annotations

import numpy as np

from export.contract import codebook
from export.contract.package import (
    INT32_MAX,
    INT32_MIN,
    ROUNDINGS,
    Dense,
    Layer,
    Package,
    Step,
    Threshold,
)

_I64 = np.int64


def wrap_int32(x: np.ndarray) -> np.ndarray:
    """Two's-complement wrap of integers into int32 (as int64 values)."""
    x = np.asarray(x, dtype=_I64)
    return ((x - INT32_MIN) & 0xFFFFFFFF) + INT32_MIN


def saturate_int32(x: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(x, dtype=_I64), INT32_MIN, INT32_MAX)


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp's ``SaturatingRoundingDoublingHighMul``: ``a * b / 2**31`` rounded to nearest,
    ties toward +infinity (a nudge of 2**30 away from zero, then a division truncating toward
    zero), for int32 ``a`` and ``b`` (int64 values); the one overflow,
    ``INT32_MIN * INT32_MIN``, saturates to ``INT32_MAX``."""
    a, b = np.asarray(a, dtype=_I64), np.asarray(b, dtype=_I64)
    ab = a * b  # |ab| <= 2**62
    nudged = ab + np.where(ab >= 0, _I64(1) << 30, _I64(1) - (_I64(1) << 30))
    high = np.sign(nudged) * (np.abs(nudged) >> 31)  # C division truncates toward zero
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, high).astype(_I64)


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """gemmlowp's ``RoundingDivideByPOT``: ``x / 2**exponent`` rounded to nearest, ties away
    from zero, for int32 ``x`` and ``exponent`` in [0, 31] (int64 values)."""
    x, exponent = np.asarray(x, dtype=_I64), np.asarray(exponent, dtype=_I64)
    mask = (_I64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(
    acc: np.ndarray, multiplier: np.ndarray, shift: np.ndarray, rounding: str = "single"
) -> np.ndarray:
    """``acc * multiplier * 2**(shift - 31)`` rounded to int32 (int64 values): once, ties toward
    +infinity, saturated (``rounding="single"``); or as TFLite does, twice (``"double"``).
    ``shift`` must lie in [-31, 30], ``multiplier`` in [0, 2**31)."""
    shift = np.asarray(shift, dtype=_I64)
    if np.any((shift < -31) | (shift > 30)):
        raise ValueError(f"shift must lie in [-31, 30]; got {shift}")
    if rounding == "double":
        left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
        shifted = wrap_int32(np.asarray(acc, dtype=_I64) << left)  # int32 x * 2**left wraps
        return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, multiplier),
                                      right)
    if rounding != "single":
        raise ValueError(f"rounding {rounding!r} is not one of {', '.join(ROUNDINGS)}")
    n = 31 - shift
    v = np.asarray(acc, dtype=_I64) * np.asarray(multiplier, dtype=_I64)
    return saturate_int32((v + (_I64(1) << (n - 1))) >> n)


def requantize(
    acc: np.ndarray,
    multiplier: np.ndarray,
    shift: np.ndarray,
    zero_point: int,
    act_min: int = -128,
    act_max: int = 127,
    rounding: str = "single",
) -> np.ndarray:
    """int32 accumulators to int8 outputs: scale (rounding as ``rounding`` says), add the zero
    point, clamp."""
    y = multiply_by_quantized_multiplier(acc, multiplier, shift, rounding) + zero_point
    return np.clip(y, act_min, act_max).astype(np.int8)


# --------------------------------------------------------------------------- layers


def _int32_sums(x: np.ndarray, zero_point: int, weights: np.ndarray) -> np.ndarray:
    """``(x - zp) @ weights.T`` accumulated in int32: numpy's int32 products and sums wrap
    modulo 2**32 exactly as the int32 accumulator does (as int64 values)."""
    xs = x.astype(np.int32) - np.int32(zero_point)
    return (xs @ weights.astype(np.int32).T).astype(_I64)


def _dense(layer: Dense, x: np.ndarray, rounding: str) -> np.ndarray:
    acc = wrap_int32(_int32_sums(x, layer.input_zero_point, layer.weights)
                     + layer.bias.astype(_I64))
    return requantize(
        acc, layer.multiplier.astype(_I64), layer.shift.astype(_I64),
        layer.output_zero_point, layer.act_min, layer.act_max, rounding,
    )


def _threshold(layer: Threshold, x: np.ndarray) -> np.ndarray:
    return (x.astype(_I64) >= layer.threshold.astype(_I64)).astype(np.int8)


def _step(layer: Step, x: np.ndarray) -> np.ndarray:
    board = np.zeros((layer.n_out, layer.n_in), dtype=np.int32)
    per_row: np.ndarray = np.diff(layer.row_ptr.astype(np.int64))  # connections of each row
    rows = np.repeat(np.arange(layer.n_out), per_row)
    board[rows, layer.cols.astype(_I64)] = layer.values
    acc = _int32_sums(x, layer.input_zero_point, board)
    return (acc >= layer.threshold.astype(_I64)).astype(np.int8)


def _forward(layer: Layer, x: np.ndarray, rounding: str) -> np.ndarray:
    """One layer's int8 outputs for its int8 inputs."""
    if isinstance(layer, Dense):
        return _dense(layer, x, rounding)
    if isinstance(layer, Threshold):
        return _threshold(layer, x)
    return _step(layer, x)


def _check_x_q(pkg: Package, x_q: np.ndarray) -> np.ndarray:
    x = np.asarray(x_q)
    if not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"x_q must hold integers (int8 codes); got dtype {x.dtype}")
    if x.ndim == 1 + len(pkg.input_shape) and x.shape[1:] == tuple(pkg.input_shape):
        x = x.reshape(x.shape[0], pkg.n_inputs)
    if x.ndim != 2 or x.shape[1] != pkg.n_inputs:
        raise ValueError(
            f"x_q has shape {x.shape}; expected (n, {pkg.n_inputs}) or (n, *{pkg.input_shape})"
        )
    if x.size and (int(x.min()) < -128 or int(x.max()) > 127):
        raise ValueError(f"x_q values must lie in [-128, 127]; got [{x.min()}, {x.max()}]")
    return x.astype(np.int8)


def golden_activations(pkg: Package, x_q: np.ndarray) -> list[np.ndarray]:
    """int8 input and every layer's int8 output, for inputs shaped (n, n_inputs)."""
    acts = [_check_x_q(pkg, x_q)]
    for layer in pkg.layers:
        acts.append(_forward(layer, acts[-1], pkg.rounding))
    return acts


def golden_forward(pkg: Package, x_q: np.ndarray) -> np.ndarray:
    """int8 outputs (n, n_outputs) of the package for int8 inputs (n, n_inputs)."""
    return golden_activations(pkg, x_q)[-1]


# --------------------------------------------------------------------------- host side


def quantize_input(pkg: Package, x: np.ndarray) -> np.ndarray:
    """Real inputs (n, n_inputs) or (n, *input_shape) to int8, as ONNX ``QuantizeLinear``."""
    x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise TypeError(f"inputs must be real numbers; got dtype {x.dtype}")
    shape = tuple(pkg.input_shape)
    if x.ndim == 1 + len(shape) and x.shape[1:] == shape:
        x = x.reshape(x.shape[0], pkg.n_inputs)
    if x.ndim != 2 or x.shape[1] != pkg.n_inputs:
        raise ValueError(f"inputs have shape {x.shape}; expected (n, {pkg.n_inputs}) or "
                         f"(n, *{shape})")
    if not np.isfinite(x).all():
        raise ValueError("inputs contain NaN or infinity")
    q = np.rint(x.astype(np.float32) / np.float32(pkg.input_scale))
    return np.clip(q + pkg.input_zero_point, -128, 127).astype(np.int8)


def dequantize_output(pkg: Package, y_q: np.ndarray) -> np.ndarray:
    """int8 outputs to real values (float64): ``output_scale * (y_q - zero_point)``."""
    return pkg.output_scale * (np.asarray(y_q, dtype=np.float64) - pkg.output_zero_point)


def decide(pkg: Package, y_q: np.ndarray) -> np.ndarray:
    """Class indices from int8 outputs (n, n_outputs): argmax (lowest index on ties) or the
    Mark I codebook rule on ``y_q - zero_point``."""
    y = np.asarray(y_q, dtype=np.int64).reshape(-1, pkg.n_outputs)
    if pkg.codebook is None:
        return np.argmax(y, axis=1)
    return codebook.decode(pkg.codebook, y - pkg.output_zero_point)


def predict(pkg: Package, x: np.ndarray) -> np.ndarray:
    """Class indices for real inputs: quantize, run the golden reference, decide."""
    return decide(pkg, golden_forward(pkg, quantize_input(pkg, x)))
