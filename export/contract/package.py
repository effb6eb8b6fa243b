"""The int8 weight package (``.m1w``): one definition, written by the host, read by the device.

A package is a little-endian binary: an 80-byte header (magic, format version, sizes, model id,
input shape and quantization, how requantization rounds), a table of 32-byte layer entries, the
class names, the payload (each layer's integer arrays, then the optional codebook) and a CRC-32
over everything before it.
``docs/PACKAGE.md`` specifies it byte by byte with a worked example.

Layers (the device's integer arithmetic for each is defined by
:mod:`export.contract.golden`):

* :class:`Dense` -- ``y = requantize(bias + sum(w * (x - zp_in)))``, int8 weights symmetric per
  output channel, int32 bias, a Q31 multiplier and shift per channel, ReLU optionally fused;
  requantization rounds once or, as TensorFlow Lite's kernels, twice (the package's
  :attr:`Package.rounding`, format version 2).
* :class:`Threshold` -- ``y = 1 if x >= t else 0`` per input (the Mark I's S-units).
* :class:`Step` -- ``y = 1 if sum(v * (x - zp_in)) >= t else 0`` over sparse int8 connections
  (the Mark I's A-units on their plugboard).

:func:`decode_package` checks every field and raises :class:`PackageError` (a ``ValueError``)
naming the field, its value and what is allowed.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
import zlib
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property

import numpy as np

MAGIC = b"M1WP"
"""First four bytes of every package."""
FORMAT_VERSION = 2
"""Newest package format version this module writes and reads."""
FORMAT_VERSIONS = (1, 2)
"""Versions this module reads. Version 2 adds the ``rounding`` byte (version 1's first reserved
byte, always 0 there: single rounding). A package is written as the lowest version that holds
it: version 1 for single rounding, which every version-1 reader takes; version 2 for double."""
ROUNDINGS: tuple[str, ...] = ("single", "double")
"""Requantization rounding modes, by their header code (:mod:`export.contract.golden`):
``single`` rounds the exact product once (CMSIS-NN's single rounding, LiteRT on x86);
``double`` is TensorFlow Lite's two roundings (a saturating rounding doubling high multiply,
then a rounding divide by a power of two: TFLite Micro's reference kernels, gemmlowp)."""

HEADER_LAYOUT: tuple[tuple[str, str], ...] = (
    ("magic", "4s"), ("format_version", "H"), ("header_size", "H"), ("total_size", "I"),
    ("model_id", "32s"), ("source", "B"), ("head", "B"), ("n_layers", "B"),
    ("input_rank", "B"), ("input_shape", "3H"), ("n_classes", "H"), ("input_scale", "f"),
    ("input_zero_point", "b"), ("rounding", "B"), ("reserved", "2s"), ("n_inputs", "I"),
    ("n_outputs", "I"),
    ("ram_bytes", "I"), ("payload_size", "I"),
)
"""Header fields in order, with their ``struct`` codes (little-endian, no implicit padding)."""
LAYER_LAYOUT: tuple[tuple[str, str], ...] = (
    ("type", "B"), ("flags", "B"), ("input_zero_point", "b"), ("output_zero_point", "b"),
    ("n_in", "I"), ("n_out", "I"), ("input_scale", "f"), ("output_scale", "f"),
    ("act_min", "b"), ("act_max", "b"), ("reserved", "H"), ("data_offset", "I"),
    ("data_size", "I"),
)
"""Layer table entry fields in order."""


def _offsets(layout: tuple[tuple[str, str], ...]) -> dict[str, int]:
    return {
        name: struct.calcsize("<" + "".join(code for _, code in layout[:i]))
        for i, (name, _) in enumerate(layout)
    }


HEADER = struct.Struct("<" + "".join(code for _, code in HEADER_LAYOUT))
"""Header layout (80 bytes); see ``docs/PACKAGE.md``."""
HEADER_OFFSETS = _offsets(HEADER_LAYOUT)
"""Byte offset of each header field."""
LAYER_ENTRY = struct.Struct("<" + "".join(code for _, code in LAYER_LAYOUT))
"""Layer table entry layout (32 bytes)."""
LAYER_OFFSETS = _offsets(LAYER_LAYOUT)
"""Byte offset of each field within a layer table entry."""
CRC = struct.Struct("<I")
MAX_PACKAGE_BYTES = 64 * 2**20
"""Largest package file the host reads: more than the flash of any part the kit serves (a file
larger than this is refused before it is read)."""
ID_OFFSET = HEADER_OFFSETS["model_id"]
"""Byte offset of the 32-byte model id in the header."""
HASHED_FROM = HEADER_OFFSETS["source"]
"""The model id is the SHA-256 of the bytes from here up to the CRC."""

MAX_LAYERS = 16
MAX_DIM = 65535
"""Largest input shape dimension, layer width and class count (16-bit indices on the device)."""
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
Q31_MIN = 2**30
"""Smallest nonzero requantization multiplier (a Q31 mantissa in [0.5, 1))."""
SHIFT_MIN, SHIFT_MAX = -31, 30

LAYER_DENSE, LAYER_THRESHOLD, LAYER_STEP = 1, 2, 3
FLAG_RELU = 0x01
HEAD_ARGMAX, HEAD_CODEBOOK = 0, 1
SOURCES: tuple[str, ...] = ("mlp", "markI")
"""Source kinds, by their header code: an MLP checkpoint or a Mark I machine file."""


class PackageError(ValueError):
    """A weight package that is malformed, corrupted or inconsistent."""


def align4(n: int) -> int:
    """``n`` rounded up to a multiple of 4 (every section and array starts 4-byte aligned)."""
    return (n + 3) & ~3


def quantize_multiplier(real: float) -> tuple[int, int]:
    """``real`` as ``(m0, shift)`` with ``real ~= m0 * 2**(shift - 31)``, ``m0`` in [2^30, 2^31).

    TFLite's ``QuantizeMultiplier``: the mantissa is rounded to 31 bits; a value below 2^-32
    becomes ``(0, 0)`` (the layer output is then the zero point). Raises ``ValueError`` for a
    value that is not positive and finite or needs a left shift above 30.
    """
    if not (math.isfinite(real) and real > 0.0):
        raise ValueError(f"requantization multiplier {real!r} must be positive and finite")
    mantissa, shift = math.frexp(real)
    m0 = int(math.floor(mantissa * 2**31 + 0.5))
    if m0 == 2**31:
        m0, shift = m0 // 2, shift + 1
    if shift < -31:
        return 0, 0
    if shift > SHIFT_MAX:
        raise ValueError(f"requantization multiplier {real:g} is too large (at most 2^{SHIFT_MAX})")
    return m0, shift


# --------------------------------------------------------------------------- layers


@dataclass(frozen=True, eq=False)
class Dense:
    """Fully connected int8 layer with per-output-channel weight scales."""

    weights: np.ndarray
    """int8 (n_out, n_in), symmetric, in [-127, 127]."""
    bias: np.ndarray
    """int32 (n_out,), at scale ``input_scale * weight_scale[o]``."""
    multiplier: np.ndarray
    """int32 (n_out,): Q31 mantissa of ``input_scale * weight_scale / output_scale``."""
    shift: np.ndarray
    """int32 (n_out,): power-of-two exponent of the same (positive = left shift)."""
    weight_scale: np.ndarray
    """float32 (n_out,): real value of one weight step, per output channel."""
    input_scale: float
    input_zero_point: int
    output_scale: float
    output_zero_point: int
    relu: bool
    """ReLU fused: outputs are clamped at the zero point instead of -128."""

    kind = "dense"

    @property
    def n_in(self) -> int:
        return int(self.weights.shape[1])

    @property
    def n_out(self) -> int:
        return int(self.weights.shape[0])

    @property
    def act_min(self) -> int:
        return int(self.output_zero_point) if self.relu else -128

    @property
    def act_max(self) -> int:
        return 127

    @property
    def macs(self) -> int:
        return self.n_in * self.n_out


@dataclass(frozen=True, eq=False)
class Threshold:
    """Per-input comparison: output 1 where ``x_q >= threshold``, else 0 (S-units)."""

    threshold: np.ndarray
    """int16 (n,) in [-128, 128]: -128 always fires, 128 never fires."""
    input_scale: float
    input_zero_point: int

    kind = "threshold"
    relu = False
    output_scale = 1.0
    output_zero_point = 0
    act_min, act_max = 0, 1
    macs = 0

    @property
    def n_in(self) -> int:
        return int(self.threshold.shape[0])

    @property
    def n_out(self) -> int:
        return self.n_in


@dataclass(frozen=True, eq=False)
class Step:
    """Sparse integer sums compared with a threshold: output 1 where the sum reaches it (A-units).

    Connections are stored row by row (compressed sparse rows): row ``j`` uses
    ``cols[row_ptr[j]:row_ptr[j+1]]`` with counts ``values[...]``.
    """

    n_inputs: int
    """Number of inputs (the previous layer's width)."""
    row_ptr: np.ndarray
    """uint32 (n_out + 1,): start of each row's connections; ``row_ptr[-1]`` = connection count."""
    cols: np.ndarray
    """uint16 (nnz,): input index of each connection, increasing within a row."""
    values: np.ndarray
    """int8 (nnz,): nonzero signed count of each connection, in [-127, 127]."""
    threshold: np.ndarray
    """int32 (n_out,): the unit fires iff ``sum(values * (x_q[cols] - zp_in)) >= threshold``."""
    input_scale: float
    input_zero_point: int

    kind = "step"
    relu = False
    output_scale = 1.0
    output_zero_point = 0
    act_min, act_max = 0, 1

    @property
    def n_in(self) -> int:
        return int(self.n_inputs)

    @property
    def n_out(self) -> int:
        return int(self.threshold.shape[0])

    @property
    def macs(self) -> int:
        return int(self.values.shape[0])


Layer = Dense | Threshold | Step
_TYPE_CODES: dict[type, int] = {Dense: LAYER_DENSE, Threshold: LAYER_THRESHOLD, Step: LAYER_STEP}


def arena_bytes(widths: list[int]) -> int:
    """RAM for activations: two ping-pong int8 buffers, each 4-byte aligned.

    ``widths`` are the input width then each layer's output width; layer ``i`` reads buffer
    ``i % 2`` and writes buffer ``(i + 1) % 2``, so each buffer holds the largest activation
    vector that lands in it.
    """
    even = max(widths[0::2])
    odd = max(widths[1::2], default=0)
    return align4(even) + align4(odd)


# --------------------------------------------------------------------------- package


@dataclass(frozen=True, eq=False)
class Package:
    """A quantized model: what the host pushes and the device runs."""

    layers: tuple[Layer, ...]
    """Layers in execution order."""
    input_shape: tuple[int, ...]
    """Shape of one input (e.g. ``(20, 20)`` for a retina image), row-major."""
    classes: tuple[str, ...]
    """Class names."""
    input_scale: float
    """Real value of one input step: ``x = input_scale * (x_q - input_zero_point)``."""
    input_zero_point: int
    """int8 code of the real value 0 at the input."""
    source: str = "mlp"
    """What was quantized: ``"mlp"`` (a checkpoint) or ``"markI"`` (a Mark I machine file)."""
    codebook: np.ndarray | None = None
    """int8 (n_classes, n_outputs) in {-1, +1}: decide by codebook (Mark I); None: argmax."""
    rounding: str = "single"
    """How dense layers requantize: ``"single"`` or ``"double"`` (see :data:`ROUNDINGS`)."""

    @property
    def format_version(self) -> int:
        """The format version the package is written as: the lowest that holds it."""
        return 1 if self.rounding == "single" else 2

    @property
    def n_inputs(self) -> int:
        return math.prod(self.input_shape)

    @property
    def n_outputs(self) -> int:
        return self.layers[-1].n_out

    @property
    def output_scale(self) -> float:
        return float(self.layers[-1].output_scale)

    @property
    def output_zero_point(self) -> int:
        return int(self.layers[-1].output_zero_point)

    @property
    def head(self) -> int:
        return HEAD_ARGMAX if self.codebook is None else HEAD_CODEBOOK

    @property
    def ram_bytes(self) -> int:
        """Activation arena the device needs (see :func:`arena_bytes`)."""
        return arena_bytes([self.n_inputs] + [layer.n_out for layer in self.layers])

    @property
    def macs(self) -> int:
        """Multiply-accumulates per inference (connections, for sparse layers)."""
        return sum(layer.macs for layer in self.layers)

    @cached_property
    def model_id(self) -> bytes:
        """SHA-256 of the model's content (header from the source field on, table, payload)."""
        return encode_package(self)[ID_OFFSET:HASHED_FROM]

    def describe(self) -> dict:
        """A JSON-ready summary of the package's layers and sizes."""
        return {
            "source": self.source,
            "model_id": self.model_id.hex(),
            "input_shape": list(self.input_shape),
            "input_scale": self.input_scale,
            "input_zero_point": self.input_zero_point,
            "classes": list(self.classes),
            "head": "codebook" if self.codebook is not None else "argmax",
            "rounding": self.rounding,
            "format_version": self.format_version,
            "ram_bytes": self.ram_bytes,
            "macs": self.macs,
            "layers": [
                {
                    "type": layer.kind, "n_in": layer.n_in, "n_out": layer.n_out,
                    "relu": bool(layer.relu), "macs": layer.macs,
                    "output_scale": float(layer.output_scale),
                    "output_zero_point": int(layer.output_zero_point),
                }
                for layer in self.layers
            ],
        }


# --------------------------------------------------------------------------- validation


def _fail(msg: str) -> PackageError:
    return PackageError(msg)


def float32_bits(value: float) -> str:
    """A finite float32's bits in hex (``0x3f800000`` for 1.0): how the refusals name a scale,
    so that the firmware, which prints no floats, words them alike."""
    return f"0x{struct.unpack('<I', struct.pack('<f', float(value)))[0]:08x}"


def _check_scale(value: float, what: str) -> None:
    v = float(value)
    if math.isfinite(v) and float(np.float32(v)) != v:  # only from a Package built in memory
        raise _fail(f"{what} = {value!r}: not a float32")
    if not (math.isfinite(v) and v > 0.0):
        kind = ("NaN" if math.isnan(v) else "infinite" if math.isinf(v) else
                "zero" if v == 0.0 else "negative")
        raise _fail(f"{what} is {kind}: must be a positive finite float32")


def _check_zp(value: int, what: str) -> None:
    if not isinstance(value, (int, np.integer)) or not -128 <= int(value) <= 127:
        raise _fail(f"{what} = {value!r}: must be an integer in [-128, 127]")


def _check_ints(arr: object, shape: tuple[int, ...], lo: int, hi: int, what: str) -> np.ndarray:
    a = np.asarray(arr)
    if not np.issubdtype(a.dtype, np.integer):
        raise _fail(f"{what} must hold integers; got dtype {a.dtype}")
    if a.shape != shape:
        raise _fail(f"{what} has shape {a.shape}; expected {shape}")
    if a.size and (int(a.min()) < lo or int(a.max()) > hi):
        bad = int(a.min()) if int(a.min()) < lo else int(a.max())
        raise _fail(f"{what} holds {bad}; allowed range [{lo}, {hi}]")
    return a.astype(np.int64)


def _check_dim(value: int, what: str) -> None:
    if not isinstance(value, (int, np.integer)) or not 1 <= int(value) <= MAX_DIM:
        raise _fail(f"{what} = {value!r}: must be a whole number in [1, {MAX_DIM}]")


def _check_acc_bound(max_abs: int, what: str) -> None:
    if max_abs > INT32_MAX:
        raise _fail(
            f"{what}: worst-case accumulator {max_abs} exceeds int32 ({INT32_MAX}); "
            "the device accumulates in int32"
        )


def _check_dense(layer: Dense, where: str) -> None:
    if np.ndim(layer.weights) != 2:
        raise _fail(f"{where} weights must be 2-D (n_out, n_in); got shape "
                    f"{np.shape(layer.weights)}")
    n_out, n_in = np.shape(layer.weights)
    _check_dim(n_out, f"{where} n_out")
    _check_dim(n_in, f"{where} n_in")
    w = _check_ints(layer.weights, (n_out, n_in), -127, 127, f"{where} weights")
    bias = _check_ints(layer.bias, (n_out,), INT32_MIN, INT32_MAX, f"{where} bias")
    mult = _check_ints(layer.multiplier, (n_out,), 0, INT32_MAX, f"{where} multiplier")
    shift = _check_ints(layer.shift, (n_out,), SHIFT_MIN, SHIFT_MAX, f"{where} shift")
    small = (mult != 0) & (mult < Q31_MIN)
    if small.any():
        o = int(np.argmax(small))
        raise _fail(f"{where} multiplier[{o}] = {mult[o]}: must be 0 or in [2^30, 2^31-1]")
    if ((mult == 0) & (shift != 0)).any():
        o = int(np.argmax((mult == 0) & (shift != 0)))
        raise _fail(f"{where} shift[{o}] = {shift[o]}: must be 0 where the multiplier is 0")
    ws = np.asarray(layer.weight_scale)
    if ws.shape != (n_out,) or ws.dtype != np.float32:
        raise _fail(f"{where} weight_scale must be float32 ({n_out},); got {ws.dtype} {ws.shape}")
    if not (np.isfinite(ws).all() and (ws > 0).all()):
        raise _fail(f"{where} weight_scale holds a value that is not positive and finite")
    for name in ("input", "output"):
        _check_scale(getattr(layer, f"{name}_scale"), f"{where} {name}_scale")
        _check_zp(getattr(layer, f"{name}_zero_point"), f"{where} {name}_zero_point")
    for o in range(n_out):
        if not scales_encoded(int(mult[o]), int(shift[o]), layer.input_scale, ws[o],
                              layer.output_scale):
            raise _fail(
                f"{where} multiplier[{o}]/shift[{o}] = {mult[o]}/{shift[o]} do not encode "
                "input_scale * weight_scale / output_scale within 2^-28"
            )
    _check_acc_bound(int((np.abs(bias) + 255 * np.abs(w).sum(axis=1)).max()), where)


def scales_encoded(multiplier: int, shift: int, input_scale: float, weight_scale: float,
                   output_scale: float) -> bool:
    """Whether ``multiplier * 2**(shift - 31)`` is the real multiplier ``r = input_scale *
    weight_scale / output_scale`` (float32 values) to within ``2**-28 * r``, or, for a zero
    multiplier, ``r < 2**-31``: in exact rational arithmetic, so that the firmware's integer
    version of the check (``firmware_sim/c/src/package.c``) gives the same verdict to the last
    bit."""
    real = Fraction(float(input_scale)) * Fraction(float(weight_scale)) / Fraction(
        float(output_scale))
    if multiplier == 0:
        return real < Fraction(1, 2**31)
    approx = multiplier * Fraction(2) ** (shift - 31)
    return abs(approx - real) * 2**28 <= real


def _check_threshold(layer: Threshold, where: str) -> None:
    t = np.asarray(layer.threshold)
    if t.ndim != 1:
        raise _fail(f"{where} threshold must be 1-D; got shape {t.shape}")
    _check_dim(t.shape[0], f"{where} width")
    _check_ints(t, t.shape, -128, 128, f"{where} threshold")
    _check_scale(layer.input_scale, f"{where} input_scale")
    _check_zp(layer.input_zero_point, f"{where} input_zero_point")


def _check_step(layer: Step, where: str) -> None:
    _check_dim(layer.n_inputs, f"{where} n_in")
    t = np.asarray(layer.threshold)
    if t.ndim != 1:
        raise _fail(f"{where} threshold must be 1-D; got shape {t.shape}")
    n_out = t.shape[0]
    _check_dim(n_out, f"{where} n_out")
    _check_ints(t, (n_out,), INT32_MIN, INT32_MAX, f"{where} threshold")
    ptr = _check_ints(layer.row_ptr, (n_out + 1,), 0, 2**32 - 1, f"{where} row_ptr")
    if ptr[0] != 0 or (np.diff(ptr) < 0).any():
        j = 0 if ptr[0] != 0 else 1 + int(np.argmax(np.diff(ptr) < 0))
        raise _fail(f"{where} row_ptr must start at 0 and never decrease; row_ptr[{j}] = "
                    f"{ptr[j]}")
    nnz = int(ptr[-1])
    cols = _check_ints(layer.cols, (nnz,), 0, layer.n_inputs - 1, f"{where} cols")
    vals = _check_ints(layer.values, (nnz,), -127, 127, f"{where} values")
    if (vals == 0).any():
        raise _fail(f"{where} values[{int(np.argmax(vals == 0))}] is 0: store only connections")
    rows = np.repeat(np.arange(n_out), np.diff(ptr))
    same_row = rows[1:] == rows[:-1]
    if (same_row & (cols[1:] <= cols[:-1])).any():
        j = int(rows[1:][same_row & (cols[1:] <= cols[:-1])][0])
        raise _fail(f"{where} row {j}: input indices must be strictly increasing")
    _check_scale(layer.input_scale, f"{where} input_scale")
    _check_zp(layer.input_zero_point, f"{where} input_zero_point")
    per_row = np.zeros(n_out, dtype=np.int64)
    np.add.at(per_row, rows, np.abs(vals))
    _check_acc_bound(int(255 * per_row.max()), where)


def _check_layer(layer: object, where: str) -> None:
    if isinstance(layer, Dense):
        _check_dense(layer, where)
    elif isinstance(layer, Threshold):
        _check_threshold(layer, where)
    elif isinstance(layer, Step):
        _check_step(layer, where)
    else:
        raise _fail(f"{where} is a {type(layer).__name__}; allowed: Dense, Threshold, Step")


def validate_package(pkg: Package) -> None:
    """Raise :class:`PackageError` unless every field of ``pkg`` is in range and consistent."""
    if not isinstance(pkg, Package):
        raise TypeError(f"expected a Package; got {type(pkg).__name__}")
    if pkg.source not in SOURCES:
        raise _fail(f"source {pkg.source!r} is not one of {', '.join(SOURCES)}")
    if pkg.rounding not in ROUNDINGS:
        raise _fail(f"rounding {pkg.rounding!r} is not one of {', '.join(ROUNDINGS)}")
    shape = tuple(pkg.input_shape)
    if not 1 <= len(shape) <= 3:
        raise _fail(f"input_shape {shape}: rank must be 1 to 3")
    for d in shape:
        _check_dim(d, f"input_shape {shape} dimension")
    _check_dim(pkg.n_inputs, f"input size {pkg.n_inputs} (product of input_shape {shape})")
    _check_scale(pkg.input_scale, "input_scale")
    _check_zp(pkg.input_zero_point, "input_zero_point")
    if not 1 <= len(pkg.layers) <= MAX_LAYERS:
        raise _fail(f"{len(pkg.layers)} layers: allowed 1 to {MAX_LAYERS}")
    width, scale, zp = pkg.n_inputs, float(pkg.input_scale), int(pkg.input_zero_point)
    for i, layer in enumerate(pkg.layers):
        where = f"layer {i}"
        _check_layer(layer, where)
        if layer.n_in != width:
            raise _fail(f"{where} takes {layer.n_in} inputs but receives {width}")
        if float(layer.input_scale) != scale or int(layer.input_zero_point) != zp:
            raise _fail(
                f"{where} input quantization (scale {float32_bits(layer.input_scale)}, zero "
                f"point {layer.input_zero_point}) differs from what it receives (scale "
                f"{float32_bits(scale)}, zero point {zp})"
            )
        width, scale, zp = layer.n_out, float(layer.output_scale), int(layer.output_zero_point)
    _check_classes(pkg)


def _check_classes(pkg: Package) -> None:
    names = pkg.classes
    _check_dim(len(names), f"number of classes {len(names)}")
    for k, name in enumerate(names):
        if not isinstance(name, str) or not name:
            raise _fail(f"class {k} name {name!r}: must be a non-empty string")
        if len(name.encode("utf-8")) > 255:
            raise _fail(f"class {k} name is {len(name.encode('utf-8'))} bytes; at most 255")
    if len(set(names)) != len(names):
        first: dict[str, int] = {}
        for k, name in enumerate(names):
            if name in first:
                raise _fail(f"class name {k} repeats class name {first[name]}")
            first[name] = k
    if pkg.codebook is None:
        if len(names) != pkg.n_outputs:
            raise _fail(f"{len(names)} class names for {pkg.n_outputs} outputs (argmax head)")
        return
    _check_ints(pkg.codebook, (len(names), pkg.n_outputs), -1, 1, "codebook")
    if (np.asarray(pkg.codebook) == 0).any():
        raise _fail("codebook entries must be -1 or +1; found 0")


# --------------------------------------------------------------------------- encoding


def _layer_blob(layer: Layer) -> bytes:
    parts: list[bytes]
    if isinstance(layer, Dense):
        parts = [
            layer.weights.astype("<i1").tobytes(), layer.bias.astype("<i4").tobytes(),
            layer.multiplier.astype("<i4").tobytes(), layer.shift.astype("<i4").tobytes(),
            layer.weight_scale.astype("<f4").tobytes(),
        ]
    elif isinstance(layer, Threshold):
        parts = [layer.threshold.astype("<i2").tobytes()]
    else:
        parts = [
            layer.row_ptr.astype("<u4").tobytes(), layer.threshold.astype("<i4").tobytes(),
            layer.cols.astype("<u2").tobytes(), layer.values.astype("<i1").tobytes(),
        ]
    return b"".join(p.ljust(align4(len(p)), b"\0") for p in parts)


def _names_blob(classes: tuple[str, ...]) -> bytes:
    raw = b"".join(bytes([len(b)]) + b for b in (c.encode("utf-8") for c in classes))
    return raw.ljust(align4(len(raw)), b"\0")


def encode_package(pkg: Package) -> bytes:
    """The package as bytes (validated first; raises :class:`PackageError` if invalid)."""
    validate_package(pkg)
    blobs = [_layer_blob(layer) for layer in pkg.layers]
    if pkg.codebook is not None:
        cb = np.asarray(pkg.codebook).astype("<i1").tobytes()
        blobs.append(cb.ljust(align4(len(cb)), b"\0"))
    names = _names_blob(tuple(pkg.classes))
    table = bytearray()
    offset = 0
    for layer, blob in zip(pkg.layers, blobs):
        table += LAYER_ENTRY.pack(
            _TYPE_CODES[type(layer)], FLAG_RELU if layer.relu else 0,
            int(layer.input_zero_point), int(layer.output_zero_point), layer.n_in, layer.n_out,
            float(layer.input_scale), float(layer.output_scale), layer.act_min, layer.act_max,
            0, offset, len(blob),
        )
        offset += len(blob)
    payload = b"".join(blobs)
    total = HEADER.size + len(table) + len(names) + len(payload) + CRC.size
    shape = list(pkg.input_shape) + [0] * (3 - len(pkg.input_shape))
    header = HEADER.pack(
        MAGIC, pkg.format_version, HEADER.size, total, bytes(32), SOURCES.index(pkg.source),
        pkg.head, len(pkg.layers), len(pkg.input_shape), *shape, len(pkg.classes),
        float(pkg.input_scale), int(pkg.input_zero_point), ROUNDINGS.index(pkg.rounding),
        bytes(2), pkg.n_inputs,
        pkg.n_outputs, pkg.ram_bytes, len(payload),
    )
    body = bytearray(header + table + names + payload)
    body[ID_OFFSET:HASHED_FROM] = hashlib.sha256(body[HASHED_FROM:]).digest()
    return bytes(body) + CRC.pack(zlib.crc32(body))


# --------------------------------------------------------------------------- decoding


@dataclass(frozen=True)
class PackageHeader:
    """The fixed header alone: enough for a device to refuse a model before receiving it."""

    format_version: int
    total_size: int
    model_id: bytes
    n_inputs: int
    n_outputs: int
    ram_bytes: int
    rounding: str = "single"
    """How its dense layers requantize (:data:`ROUNDINGS`); a code this reader does not know
    is shown as ``"code N"`` (:func:`decode_package` refuses it)."""


def peek_header(data: bytes | bytearray | memoryview) -> PackageHeader:
    """Read the first 80 bytes of a package (magic, version and header size are checked).

    The rest of the package is not checked: use :func:`decode_package` once all of it is there.
    """
    fields = _unpack_header(bytes(data[: HEADER.size]))
    code = fields[15]
    rounding = ROUNDINGS[code] if code < len(ROUNDINGS) else f"code {code}"
    return PackageHeader(fields[1], fields[3], fields[4], fields[17], fields[18], fields[19],
                         rounding)


def _unpack_header(head: bytes) -> tuple:
    if head[:4] != MAGIC[: len(head[:4])]:  # short or not, another kind of file says so first
        raise _fail(f"not a weight package: magic {head[:4].hex()}, expected {MAGIC.hex()} "
                    f"({MAGIC.decode()})")
    if len(head) < HEADER.size:
        raise _fail(f"package truncated: {len(head)} bytes, the header alone is {HEADER.size}")
    fields = HEADER.unpack(head)
    if fields[0] != MAGIC:  # not reached: the first check saw the same four bytes
        raise _fail(f"not a weight package: magic {fields[0].hex()}, expected {MAGIC.hex()}")
    if fields[1] not in FORMAT_VERSIONS:
        raise _fail(
            f"package format version {fields[1]} is not supported (this reads "
            f"{' and '.join(map(str, FORMAT_VERSIONS))})"
        )
    if fields[2] != HEADER.size:
        raise _fail(f"header size {fields[2]}: format version {fields[1]} has {HEADER.size}")
    return fields


class _Reader:
    """Sequential little-endian array reads from one layer's blob, checking zero padding."""

    def __init__(self, blob: bytes, where: str) -> None:
        self.blob, self.pos, self.where = blob, 0, where

    def take(self, dtype: str, count: int) -> np.ndarray:
        n = np.dtype(dtype).itemsize * count
        end = self.pos + align4(n)
        if end > len(self.blob):
            raise _fail(f"{self.where}: data size {len(self.blob)} is too small for its arrays")
        arr = np.frombuffer(self.blob, dtype=dtype, count=count, offset=self.pos)
        if any(self.blob[self.pos + n : end]):
            raise _fail(f"{self.where}: padding bytes after an array are not zero")
        self.pos = end
        return arr.astype(dtype[1:], copy=True)

    def done(self) -> None:
        if self.pos != len(self.blob):
            raise _fail(f"{self.where}: data size {len(self.blob)}, its arrays use {self.pos}")


def _decode_layer(entry: tuple, blob: bytes, i: int) -> Layer:
    (code, flags, zp_in, zp_out, n_in, n_out, s_in, s_out, act_min, act_max,
     reserved, _offset, _size) = entry
    where = f"layer {i}"
    if reserved:
        raise _fail(f"{where}: reserved field is {reserved}, must be 0")
    if code not in (LAYER_DENSE, LAYER_THRESHOLD, LAYER_STEP):
        raise _fail(f"{where}: layer type {code} unknown (1 dense, 2 threshold, 3 step)")
    if flags & ~FLAG_RELU or (flags and code != LAYER_DENSE):
        raise _fail(f"{where}: flags 0x{flags:02x} not allowed for layer type {code}")
    _check_dim(n_in, f"{where} n_in")
    _check_dim(n_out, f"{where} n_out")
    r = _Reader(blob, where)
    layer: Layer
    if code == LAYER_DENSE:
        layer = Dense(
            r.take("<i1", n_out * n_in).reshape(n_out, n_in), r.take("<i4", n_out),
            r.take("<i4", n_out), r.take("<i4", n_out), r.take("<f4", n_out),
            s_in, zp_in, s_out, zp_out, bool(flags & FLAG_RELU),
        )
    elif code == LAYER_THRESHOLD:
        if n_out != n_in:
            raise _fail(f"{where}: a threshold layer has as many outputs as inputs; "
                        f"got {n_in} -> {n_out}")
        layer = Threshold(r.take("<i2", n_in), s_in, zp_in)
    else:
        ptr = r.take("<u4", n_out + 1)
        thr = r.take("<i4", n_out)
        nnz = int(ptr[-1])
        layer = Step(n_in, ptr, r.take("<u2", nnz), r.take("<i1", nnz), thr, s_in, zp_in)
    r.done()
    if code == LAYER_DENSE and math.isnan(s_out):
        raise _fail(f"{where}: output_scale is NaN")
    if code != LAYER_DENSE and s_out != 1.0:
        raise _fail(f"{where}: output_scale of a threshold or step layer must be 1")
    if (zp_out, act_min, act_max) != (layer.output_zero_point, layer.act_min, layer.act_max):
        raise _fail(
            f"{where}: output quantization (zero point {zp_out}, range [{act_min}, {act_max}]) "
            "is inconsistent with its type and flags"
        )
    return layer


def _decode_names(data: bytes, start: int, count: int) -> tuple[tuple[str, ...], int]:
    pos, names = start, []
    for k in range(count):
        if pos >= len(data):
            raise _fail(f"class name {k} runs past the end of the package")
        n = data[pos]
        raw = data[pos + 1 : pos + 1 + n]
        if len(raw) != n:
            raise _fail(f"class name {k} ({n} bytes) runs past the end of the package")
        try:
            names.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise _fail(f"class name {k} is not valid UTF-8 ({exc.reason})") from exc
        pos += 1 + n
    end = start + align4(pos - start)
    if any(data[pos:end]):
        raise _fail("padding after the class names is not zero")
    return tuple(names), end


def decode_package(data: bytes | bytearray | memoryview) -> Package:
    """Parse and check a package; raises :class:`PackageError` naming the first bad field."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"a package is bytes; got {type(data).__name__}")
    data = bytes(data)
    fields = _unpack_header(data[: HEADER.size])
    (_, version, _, total, model_id, source, head, n_layers, rank, d0, d1, d2, n_classes,
     in_scale, in_zp, rounding, reserved, n_inputs, n_outputs, ram, payload_size) = fields
    if len(data) < total:
        raise _fail(f"package truncated: header says {total} bytes, got {len(data)}")
    if len(data) > total:
        raise _fail(f"{len(data) - total} trailing bytes after the {total}-byte package")
    if total < HEADER.size + CRC.size:
        raise _fail(f"total size {total} is smaller than header and CRC")
    (crc,) = CRC.unpack(data[-CRC.size :])
    if zlib.crc32(data[: -CRC.size]) != crc:
        raise _fail(
            f"CRC-32 mismatch: stored 0x{crc:08x}, computed 0x{zlib.crc32(data[:-4]):08x}"
        )
    if hashlib.sha256(data[HASHED_FROM : -CRC.size]).digest() != model_id:
        raise _fail("model id does not match the SHA-256 of the package content")
    if version == 1 and (rounding, reserved) != (0, bytes(2)):  # all three were reserved
        raise _fail(f"header reserved bytes are {bytes([rounding]).hex()}{reserved.hex()}, "
                    "must be zero")
    if rounding >= len(ROUNDINGS):
        raise _fail(f"rounding code {rounding} unknown (0 single, 1 double)")
    if reserved != bytes(2):
        raise _fail(f"header reserved bytes are {reserved.hex()}, must be zero")
    if source >= len(SOURCES):
        raise _fail(f"source code {source} unknown (0 mlp, 1 markI)")
    if head not in (HEAD_ARGMAX, HEAD_CODEBOOK):
        raise _fail(f"head code {head} unknown (0 argmax, 1 codebook)")
    if not 1 <= n_layers <= MAX_LAYERS:
        raise _fail(f"{n_layers} layers: allowed 1 to {MAX_LAYERS}")
    dims = (d0, d1, d2)
    if not 1 <= rank <= 3 or any(dims[rank:]) or not all(dims[:rank]):
        raise _fail(f"input rank {rank} with dimensions {dims}: rank 1-3, unused dims 0")
    table_end = HEADER.size + n_layers * LAYER_ENTRY.size
    if table_end > total - CRC.size:
        raise _fail(f"layer table of {n_layers} entries runs past the end of the package")
    entries = [
        LAYER_ENTRY.unpack_from(data, HEADER.size + i * LAYER_ENTRY.size) for i in range(n_layers)
    ]
    classes, payload_start = _decode_names(data[: total - CRC.size], table_end, n_classes)
    if payload_start + payload_size != total - CRC.size:
        raise _fail(
            f"payload size {payload_size} does not fill the package: payload starts at "
            f"{payload_start}, CRC at {total - CRC.size}"
        )
    payload = data[payload_start : total - CRC.size]
    layers, offset = [], 0
    for i, entry in enumerate(entries):
        start, size = entry[11], entry[12]
        if start != offset or size % 4 or start + size > len(payload):
            raise _fail(
                f"layer {i}: data at offset {start}, size {size}; expected offset {offset}, "
                f"a multiple of 4, within the {len(payload)}-byte payload"
            )
        layers.append(_decode_layer(entry, payload[start : start + size], i))
        offset += size
    codebook = None
    if head == HEAD_CODEBOOK:
        n_out = layers[-1].n_out
        r = _Reader(payload[offset:], "codebook")
        codebook = r.take("<i1", n_classes * n_out).reshape(n_classes, n_out)
        r.done()
    elif offset != len(payload):
        raise _fail(f"{len(payload) - offset} unused bytes at the end of the payload")
    pkg = Package(
        tuple(layers), tuple(int(d) for d in dims[:rank]), classes, float(in_scale), int(in_zp),
        SOURCES[source], codebook, ROUNDINGS[rounding],
    )
    validate_package(pkg)
    for name, stored, derived in (
        ("n_inputs", n_inputs, pkg.n_inputs), ("n_outputs", n_outputs, pkg.n_outputs),
        ("ram_bytes", ram, pkg.ram_bytes),
    ):
        if stored != derived:
            raise _fail(f"header {name} = {stored}, but the layer table gives {derived}")
    pkg.__dict__["model_id"] = model_id
    return pkg


def read_package(path: str | os.PathLike[str]) -> tuple[bytes, Package]:
    """The bytes and the decoded package of the file ``path``: refused unread (``ValueError``)
    if larger than any package, and with a message naming the file if it is not a valid one."""
    size = os.stat(path).st_size
    if size > MAX_PACKAGE_BYTES:
        raise ValueError(f"{os.fspath(path)} is {size:,} bytes; a weight package is at most "
                         f"{MAX_PACKAGE_BYTES:,} bytes")
    with open(path, "rb") as fh:
        image = fh.read()
    try:
        return image, decode_package(image)
    except ValueError as exc:
        raise ValueError(f"{os.fspath(path)} is not a valid weight package: {exc}") from exc
