"""The device's integer inference engine, computed as the C firmware computes it.

:class:`Engine` runs a decoded weight package on one int8 input at a time and returns the int8
outputs with a cycle estimate. Its arithmetic is the golden reference's
(``export/contract/golden.py``, ``docs/PACKAGE.md``) but its code is its own, shaped like the
firmware loops:

* dense layers add the input offset to the activations once (CMSIS-NN's ``SADD16`` step), then
  multiply-accumulate int8 x int16 products into int32 with wrap-around;
* requantization is scalar per output channel, in the rounding the package names: CMSIS-NN's
  single-rounding form (a 64-bit ``SMULL`` product shifted right by ``30 - shift``, then
  incremented and halved -- the rounding bit -- then saturated to int32), or TFLite's double
  rounding (a left shift, gemmlowp's saturating rounding doubling high multiply, then its
  rounding divide by a power of two, written as the C firmware writes them: without right
  shifts of negative numbers); then zero point, clamp;
* step layers (sparse) accumulate each row through an int32 running sum over the connections.

Both roundings are costed alike: double rounding's nudge, truncating divide and rounding divide
take about the instructions of single rounding's variable 64-bit shift.

**RAM**: two ping-pong int8 activation buffers, sized from the layer widths when the model is
loaded (``ram_bytes``). Weights stay in flash.

**Cycle model** (:class:`CortexM4Cost`): a fixed cost per inference and per layer plus
per-element costs of each inner loop, counted from the instructions the loops need on a
Cortex-M4 with the DSP extension (ARM Cortex-M4 TRM instruction timings: LDR 2 cycles, 1 when
pipelined; SXTB16, SADD16, SMLAD, SMULL, MLA 1 cycle; a taken branch 2-4). The estimate does not
depend on the input values: the loops have no data-dependent exits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from export.contract.package import Dense, Layer, Package, Step, Threshold

_MIN, _MAX = -(2**31), 2**31 - 1


@dataclass(frozen=True)
class CortexM4Cost:
    """Costs of the engine's loops on an Arm Cortex-M4 (DSP extension, FPU unused), in
    instructions of the C firmware's Cortex-M4 image (``firmware_sim/c``, DSP path), fitted to
    the counts QEMU measures under ``-icount`` (``benchmarks/bench_firmware.py --fit``: least
    relative squares over 13 models, MLPs and Mark I packages, all within 2.2 %). A cycle
    is taken as an instruction: on silicon, loads and taken branches cost a cycle or two more,
    so real cycles run somewhat higher (not measured here)."""

    name: str = "cortex-m4-80mhz"
    """Preset name."""
    clock_hz: float = 80e6
    """CPU clock, in hertz (e.g. an STM32L4 at its top speed)."""
    inference_cycles: int = 229
    """Per inference: the INFER handler around the engine (input checks, arena set-up, the
    argmax or codebook head, the reply's CRC), in cycles."""
    layer_cycles: int = 0
    """Per layer: dispatch on the layer type and its parameters (the fit finds it inside the
    per-row costs), in cycles."""
    dense_quad_cycles: int = 6
    """Dense, per output per 4 inputs, in cycles: four rows share each word of inputs (one LDR,
    SXTB16 twice); each row adds an LDR of 4 weights, 2 SXTB16 and 2 SMLAD."""
    dense_tail_cycles: int = 11
    """Dense, per output per leftover input (n_in mod 4 and the rows left over from blocks of
    four), in cycles."""
    dense_row_cycles: int = 60
    """Dense, per output: bias, multiplier and shift loads, the requantization (SMULL, a 64-bit
    shift and rounding), zero point, clamp, store, and the row-block loop, in cycles."""
    threshold_cycles: int = 12
    """Threshold, per element: load input and threshold, compare, store, loop."""
    step_row_cycles: int = 26
    """Step, per output: the row bounds and threshold, compare, store, loop."""
    step_connection_cycles: int = 7
    """Step, per connection: LDRH index, LDRSB input, LDRSB value, subtract offset, MLA, loop."""

    def __post_init__(self) -> None:
        if not (self.clock_hz > 0):
            raise ValueError(f"clock_hz must be positive; got {self.clock_hz!r}")
        for name, value in vars(self).items():
            if name not in ("name", "clock_hz") and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a non-negative whole number of cycles; "
                                 f"got {value!r}")


CORTEX_M4_80MHZ = CortexM4Cost()
"""A Cortex-M4 at 80 MHz with the DSP extension."""
COST_MODELS: dict[str, CortexM4Cost] = {CORTEX_M4_80MHZ.name: CORTEX_M4_80MHZ}


# --------------------------------------------------------------------------- C integer arithmetic


def _i32(v: int) -> int:
    """A C cast to int32 (two's complement, as the Cortex-M4 stores it)."""
    v &= 0xFFFFFFFF
    return v - 0x100000000 if v & 0x80000000 else v


def _requantize_scale(acc: int, multiplier: int, shift: int) -> int:
    """CMSIS-NN single rounding: ``((acc * m) >> (30 - shift)) + 1 >> 1``, saturated to int32."""
    total_shift = 31 - shift
    product = acc * multiplier  # SMULL: exact 64-bit product
    v = product >> (total_shift - 1)  # ASRL of the 64-bit pair: keeps one extra bit
    v = (v + 1) >> 1  # round on that bit: ties toward +infinity
    if v > _MAX:
        return _MAX
    if v < _MIN:
        return _MIN
    return v


def _high_mul(a: int, b: int) -> int:
    """gemmlowp's ``SaturatingRoundingDoublingHighMul`` as C computes it: a 64-bit product,
    nudged by 2^30 away from zero, divided by 2^31 truncating toward zero."""
    if a == _MIN and b == _MIN:
        return _MAX
    product = a * b
    nudged = product + ((1 << 30) if product >= 0 else 1 - (1 << 30))
    quotient = abs(nudged) // (1 << 31)  # C's `/` truncates toward zero
    return quotient if nudged >= 0 else -quotient


def _divide_by_pot(x: int, exponent: int) -> int:
    """gemmlowp's ``RoundingDivideByPOT`` on int32 bits: the floor quotient from ``x`` offset by
    2^31 (never negative, so a logical shift), plus one where the remainder passes half."""
    mask = (1 << exponent) - 1
    bits = x & 0xFFFFFFFF
    remainder = bits & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    floor_div = ((bits ^ 0x80000000) >> exponent) - (1 << (31 - exponent))
    return floor_div + (1 if remainder > threshold else 0)


def _requantize_double(acc: int, multiplier: int, shift: int) -> int:
    """TFLite's ``MultiplyByQuantizedMultiplier``: ``acc`` shifted left by ``max(shift, 0)``
    (wrapping, as int32), the high multiply, then the rounding divide by ``2^max(-shift, 0)``."""
    left, right = max(shift, 0), max(-shift, 0)
    return _divide_by_pot(_high_mul(_i32(acc << left), multiplier), right)


def requantize_one(acc: int, multiplier: int, shift: int, zero_point: int, lo: int, hi: int,
                   rounding: str = "single") -> int:
    """One int32 accumulator to one int8 output, as the firmware's per-channel epilogue."""
    scale = _requantize_double if rounding == "double" else _requantize_scale
    v = scale(acc, multiplier, shift) + zero_point
    return lo if v < lo else hi if v > hi else v


# --------------------------------------------------------------------------- layer kernels


class _DenseKernel:
    def __init__(self, layer: Dense, rounding: str) -> None:
        self.rounding = rounding
        self.n_in, self.n_out = layer.n_in, layer.n_out
        self.weights = np.ascontiguousarray(layer.weights, dtype=np.int32)  # int8 in flash
        self.bias = [int(v) for v in layer.bias]
        self.multiplier = [int(v) for v in layer.multiplier]
        self.shift = [int(v) for v in layer.shift]
        self.input_offset = -int(layer.input_zero_point)
        self.zero_point = int(layer.output_zero_point)
        self.lo, self.hi = int(layer.act_min), int(layer.act_max)

    def run(self, x: np.ndarray, out: np.ndarray) -> None:
        xo = x.astype(np.int32) + np.int32(self.input_offset)  # SADD16: int16 range
        sums = self.weights @ xo  # int8 x int16 products, int32 accumulation (wraps)
        for o in range(self.n_out):
            acc = _i32(self.bias[o] + int(sums[o]))
            out[o] = requantize_one(acc, self.multiplier[o], self.shift[o], self.zero_point,
                                    self.lo, self.hi, self.rounding)

    def cycles(self, cost: CortexM4Cost) -> int:
        quads, tail = divmod(self.n_in, 4)
        return cost.layer_cycles + self.n_out * (
            cost.dense_row_cycles + quads * cost.dense_quad_cycles + tail * cost.dense_tail_cycles
        )


class _ThresholdKernel:
    def __init__(self, layer: Threshold) -> None:
        self.n_in = self.n_out = layer.n_in
        self.threshold = np.asarray(layer.threshold, dtype=np.int16)

    def run(self, x: np.ndarray, out: np.ndarray) -> None:
        out[:] = x.astype(np.int16) >= self.threshold

    def cycles(self, cost: CortexM4Cost) -> int:
        return cost.layer_cycles + self.n_in * cost.threshold_cycles


class _StepKernel:
    def __init__(self, layer: Step) -> None:
        self.n_in, self.n_out = layer.n_in, layer.n_out
        self.row_ptr = np.asarray(layer.row_ptr, dtype=np.int64)
        self.cols = np.asarray(layer.cols, dtype=np.intp)
        self.values = np.asarray(layer.values, dtype=np.int32)
        self.threshold = np.asarray(layer.threshold, dtype=np.int64)
        self.input_offset = -int(layer.input_zero_point)

    def run(self, x: np.ndarray, out: np.ndarray) -> None:
        terms = (x[self.cols].astype(np.int32) + np.int32(self.input_offset)) * self.values
        running = np.concatenate([np.zeros(1, np.int32), np.cumsum(terms, dtype=np.int32)])
        # each row's sum is the difference of the running int32 sum at its two ends (mod 2^32)
        ends = running[self.row_ptr[1:]].astype(np.int64)
        starts = running[self.row_ptr[:-1]].astype(np.int64)
        sums = np.array([_i32(int(v)) for v in ends - starts], dtype=np.int64)
        out[:] = sums >= self.threshold

    def cycles(self, cost: CortexM4Cost) -> int:
        return (cost.layer_cycles + self.n_out * cost.step_row_cycles
                + int(self.row_ptr[-1]) * cost.step_connection_cycles)


_Kernel = _DenseKernel | _ThresholdKernel | _StepKernel


def _kernel(layer: Layer, rounding: str) -> _Kernel:
    if isinstance(layer, Dense):
        return _DenseKernel(layer, rounding)
    if isinstance(layer, Threshold):
        return _ThresholdKernel(layer)
    return _StepKernel(layer)


def _align4(n: int) -> int:
    return -(-n // 4) * 4


class Engine:
    """A loaded model on the simulated microcontroller.

    ``Engine(pkg).infer(x_q)`` takes one int8 input vector (``pkg.n_inputs`` values) and returns
    ``(y_q, cycles)``: the int8 outputs and the estimated cycles of the inference.
    """

    def __init__(self, pkg: Package, cost: CortexM4Cost = CORTEX_M4_80MHZ) -> None:
        self.cost = cost
        self.n_inputs = int(pkg.n_inputs)
        if pkg.rounding not in ("single", "double"):
            raise ValueError(f"rounding {pkg.rounding!r}: the engine rounds single or double")
        self.rounding = pkg.rounding
        self.kernels = [_kernel(layer, pkg.rounding) for layer in pkg.layers]
        self.n_outputs = self.kernels[-1].n_out
        widths = [self.n_inputs] + [k.n_out for k in self.kernels]
        sizes = [0, 0]
        for i, width in enumerate(widths):
            sizes[i % 2] = max(sizes[i % 2], _align4(width))
        self._arena = [np.zeros(sizes[0], np.int8), np.zeros(sizes[1], np.int8)]
        self.layer_cycles = [k.cycles(cost) for k in self.kernels]
        self.cycles = cost.inference_cycles + sum(self.layer_cycles)

    @property
    def ram_bytes(self) -> int:
        """Bytes of the activation arena (both ping-pong buffers)."""
        return sum(buf.size for buf in self._arena)

    @property
    def latency_s(self) -> float:
        """Estimated time of one inference at the cost model's clock, in seconds."""
        return self.cycles / self.cost.clock_hz

    def infer(self, x_q: np.ndarray) -> tuple[np.ndarray, int]:
        """Run one input; returns (int8 outputs, cycle estimate)."""
        x = np.asarray(x_q)
        if not np.issubdtype(x.dtype, np.integer):
            raise TypeError(f"input must be int8 codes; got dtype {x.dtype}")
        if x.shape != (self.n_inputs,):
            raise ValueError(f"input has shape {x.shape}; the model takes ({self.n_inputs},)")
        if x.size and (int(x.min()) < -128 or int(x.max()) > 127):
            raise ValueError(f"input values must lie in [-128, 127]; got [{x.min()}, {x.max()}]")
        src = self._arena[0]
        src[: self.n_inputs] = x
        width = self.n_inputs
        for i, kernel in enumerate(self.kernels):
            dst = self._arena[(i + 1) % 2]
            kernel.run(self._arena[i % 2][:width], dst[: kernel.n_out])
            width = kernel.n_out
        return self._arena[len(self.kernels) % 2][:width].copy(), self.cycles

    def describe(self) -> dict:
        """JSON-ready figures: cycles per layer and in all, latency, RAM, the cost model."""
        return {
            "cost_model": self.cost.name,
            "clock_hz": self.cost.clock_hz,
            "cycles": self.cycles,
            "layer_cycles": list(self.layer_cycles),
            "latency_ms": 1e3 * self.latency_s,
            "ram_bytes": self.ram_bytes,
        }
