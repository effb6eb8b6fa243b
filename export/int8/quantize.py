"""Post-training static int8 quantization (the TFLite / CMSIS-NN scheme) into a weight package.

* Inputs: relative illuminance in [0, 1] -> int8 with scale 1/255 and zero point -128 (the range
  is fixed by the input contract, so no calibration is needed for it).
* Weights: symmetric per output channel, ``w_q = round(w / s_w[o])`` in [-127, 127] with
  ``s_w[o] = max|w[o, :]| / 127``; rounding half away from zero, as TFLite's quantizer.
* Bias: int32 at scale ``s_in * s_w[o]``.
* Activations: asymmetric int8; each layer's output range [min, max] (widened to hold 0) is
  measured by running the float model on calibration images; ``scale = (max - min) / 255``,
  ``zero_point = round(-128 - min / scale)``. ReLU is fused: a ReLU layer's range starts at 0, so
  its zero point is -128 and its outputs are clamped there.
* Requantization: ``s_in * s_w[o] / s_out`` as a Q31 multiplier and a shift per channel
  (:func:`quantize_multiplier`); the arithmetic is :mod:`export.contract.golden`'s.
* Bias correction: the mean error the rounded weights cause on the calibration images is folded
  into each layer's bias.

A Mark I machine file quantizes exactly except at the edges: the S-unit thresholds move to the
input grid (a cell fires iff its dequantized input exceeds its threshold), the A-units' integer
plugboard sums and thresholds are exact, and the R-layer is a dense int8 layer on binary inputs
(scale 1, zero point 0). The Mark I decision rule is the package's codebook head.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from export.contract.package import (
    INT32_MAX,
    INT32_MIN,
    SHIFT_MAX,
    Dense,
    Package,
    Step,
    Threshold,
)
from export.onnx.checkpoint import MLPCheckpoint

INPUT_SCALE = float(np.float32(1.0 / 255.0))
"""Scale of the int8 input: the [0, 1] illuminance range spread over 255 steps."""
INPUT_ZERO_POINT = -128
"""int8 code of darkness (illuminance 0)."""


def round_half_away(x: npt.ArrayLike) -> np.ndarray:
    """Round to the nearest integer, ties away from zero (C ``round``, TFLite's quantizer)."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


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


def choose_qparams(rmin: float, rmax: float) -> tuple[float, int]:
    """Asymmetric int8 scale (float32) and zero point for the real range [rmin, rmax] (+ 0)."""
    rmin, rmax = min(float(rmin), 0.0), max(float(rmax), 0.0)
    if not (math.isfinite(rmin) and math.isfinite(rmax)):
        raise ValueError(f"activation range [{rmin}, {rmax}] is not finite")
    if rmax - rmin < 1e-30:
        rmax = rmin + 1.0  # a layer that is always 0: any scale represents it exactly
    scale = float(np.float32((rmax - rmin) / 255.0))
    zero_point = int(np.clip(round_half_away(-128.0 - rmin / scale), -128, 127))
    return scale, zero_point


def quantize_dense(
    w: np.ndarray,
    b: np.ndarray,
    input_scale: float,
    input_zero_point: int,
    output_range: tuple[float, float],
    relu: bool,
    input_mean: np.ndarray | None = None,
) -> Dense:
    """One float layer ``y = w @ x + b`` (w shaped (out, in)) as an int8 :class:`Dense`.

    ``input_mean``, the layer's mean float input over the calibration images, enables bias
    correction: the mean output error of the rounded weights, ``(w - w_deq) @ input_mean``,
    is added to the bias (Nagel et al., "Data-Free Quantization", 2019).
    """
    w = np.asarray(w, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    peak = np.abs(w).max(axis=1)
    weight_scale = np.where(peak > 0, peak / 127.0, 1.0 / 127.0).astype(np.float32)
    ws = weight_scale.astype(np.float64)
    w_q = np.clip(round_half_away(w / ws[:, None]), -127, 127).astype(np.int8)
    if input_mean is not None:
        b = b + (w - w_q * ws[:, None]) @ np.asarray(input_mean, dtype=np.float64)
    # keep the worst-case accumulator inside int32 (the package refuses anything else)
    room = INT32_MAX - 255 * np.abs(w_q.astype(np.int64)).sum(axis=1)
    bias = np.clip(round_half_away(b / (float(input_scale) * ws)), -room, room).astype(np.int32)
    lo, hi = output_range
    out_scale, out_zp = choose_qparams(0.0 if relu else lo, hi)
    pairs = [quantize_multiplier(float(input_scale) * s / out_scale) for s in ws]
    return Dense(
        weights=w_q, bias=bias,
        multiplier=np.array([m for m, _ in pairs], dtype=np.int32),
        shift=np.array([s for _, s in pairs], dtype=np.int32),
        weight_scale=weight_scale, input_scale=float(input_scale),
        input_zero_point=int(input_zero_point), output_scale=out_scale,
        output_zero_point=out_zp, relu=bool(relu),
    )


def _calibration_images(X: np.ndarray) -> np.ndarray:
    from mark1.images import to_retina

    X = np.asarray(X)
    return to_retina(X, name="calibration images").reshape(X.shape[0], -1)


def quantize_mlp(ckpt: MLPCheckpoint, X_calib: np.ndarray) -> Package:
    """Quantize an :class:`~export.onnx.checkpoint.MLPCheckpoint`, calibrating on images
    ``X_calib``."""
    ckpt.validate()
    if ckpt.layer_sizes[0] != 400:
        raise ValueError(f"the MLP takes {ckpt.layer_sizes[0]} inputs; a retina model takes 400")
    x = _calibration_images(X_calib)
    layers: list[Dense] = []
    scale, zp = INPUT_SCALE, INPUT_ZERO_POINT
    h = x
    last = len(ckpt.weights) - 1
    for i, (w, b) in enumerate(zip(ckpt.weights, ckpt.biases)):
        mean_in = h.mean(axis=0)
        h = h @ np.asarray(w, np.float64).T + np.asarray(b, np.float64)
        if i < last:
            h = np.maximum(h, 0.0)
        layer = quantize_dense(
            w, b, scale, zp, (float(h.min()), float(h.max())), i < last, input_mean=mean_in
        )
        layers.append(layer)
        scale, zp = layer.output_scale, layer.output_zero_point
    return Package(
        tuple(layers), (20, 20), tuple(ckpt.classes), INPUT_SCALE, INPUT_ZERO_POINT, "mlp"
    )


# --------------------------------------------------------------------------- Mark I


def quantize_machine(machine: dict[str, Any], X_calib: np.ndarray) -> Package:
    """Quantize a Mark I machine's static path (S, A and R layers), calibrating on ``X_calib``.

    ``machine`` holds the arrays of a machine file (``mark1.machine.load_machine``).
    """
    try:
        cell_threshold = np.asarray(machine["cell_threshold"], dtype=np.float64)
        board = np.asarray(machine["plugboard"]).astype(np.int64)
        a_threshold = np.asarray(machine["a_threshold"], dtype=np.float64)
        weights = np.asarray(machine["weights"], dtype=np.float64)
        r_bias = np.asarray(machine["r_bias"], dtype=np.float64)
        codebook = np.asarray(machine["codebook"]).astype(np.int8)
        classes = tuple(str(c) for c in np.asarray(machine["classes"]).ravel())
    except KeyError as exc:
        raise ValueError(f"machine arrays lack {exc}") from exc
    if np.isnan(cell_threshold).any() or np.isnan(a_threshold).any():
        raise ValueError("machine thresholds contain NaN")
    if board.size and np.abs(board).max() > 127:
        raise ValueError(f"plugboard counts must lie in [-127, 127]; got {np.abs(board).max()}")
    x = _calibration_images(X_calib)
    with np.errstate(over="ignore", invalid="ignore"):
        t = np.floor(cell_threshold / INPUT_SCALE + INPUT_ZERO_POINT) + 1
    s_units = Threshold(np.clip(t, -128, 128).astype(np.int16), INPUT_SCALE, INPUT_ZERO_POINT)
    rows, cols = np.nonzero(board)
    a_units = Step(
        n_inputs=board.shape[1],
        row_ptr=np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(board)))]).astype(
            np.uint32
        ),
        cols=cols.astype(np.uint16), values=board[rows, cols].astype(np.int8),
        threshold=np.clip(np.ceil(a_threshold), INT32_MIN, INT32_MAX).astype(np.int32),
        input_scale=1.0, input_zero_point=0,
    )
    s = x > cell_threshold
    a = (s.astype(np.float64) @ board.T.astype(np.float64) >= a_threshold).astype(np.float64)
    r = a @ weights.T + r_bias
    r_units = quantize_dense(
        weights, r_bias, 1.0, 0, (float(r.min()), float(r.max())), relu=False,
        input_mean=a.mean(axis=0),
    )
    return Package(
        (s_units, a_units, r_units), (20, 20), classes, INPUT_SCALE, INPUT_ZERO_POINT, "markI",
        codebook,
    )


# --------------------------------------------------------------------------- sources


Source = MLPCheckpoint | dict[str, Any]
"""What is quantized: an MLP checkpoint, or the arrays of a Mark I machine file."""


def load_source(path: str | os.PathLike[str]) -> Source:
    """Read what to quantize: an MLP checkpoint (``MLPCheckpoint``) or a Mark I machine (dict).

    The kind is told by content. Raises ``FileNotFoundError`` for a missing file and
    ``ValueError`` for anything else.
    """
    from export.onnx.markI_onnx import sniff_kind

    if sniff_kind(path) == "markI":
        from mark1.machine import load_machine

        return load_machine(path)
    from export.onnx.checkpoint import load_checkpoint

    return load_checkpoint(path)


def source_task(source: Source) -> tuple[str, int, dict[str, Any]]:
    """``(task, seed, make_task options)`` the source was trained on."""
    if isinstance(source, dict):
        return str(source.get("task", "")), max(int(source.get("seed", 0)), 0), {}
    return source.task, int(source.seed), dict(getattr(source, "task_options", {}) or {})


def quantize_source(source: Source, X_calib: np.ndarray) -> Package:
    """Quantize whatever :func:`load_source` returned."""
    if isinstance(source, dict):
        return quantize_machine(source, X_calib)
    return quantize_mlp(source, X_calib)


def float_predict(source: Source, X: np.ndarray) -> np.ndarray:
    """Class indices from the float model (the reference the int8 model is measured against)."""
    x = _calibration_images(X)
    if isinstance(source, dict):
        from mark1.machine import static_predict

        return static_predict(source, x)
    return np.argmax(source.forward(x), axis=1)


# --------------------------------------------------------------------------- the whole run


class DeviceEngine(Protocol):
    """A device's integer engine loaded with one package (``firmware_sim.engine.Engine`` is
    one): the quantize report runs the test split on it for its device figures."""

    def infer(self, x_q: np.ndarray) -> tuple[np.ndarray, int]:
        """int8 outputs and the cycle estimate for one int8 input vector."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-ready figures: cycles, latency, RAM, the cost model."""
        ...


DeviceModel = Callable[[Package], DeviceEngine]
"""Loads a package onto a device engine."""

DEFAULT_CALIB = 256
"""Calibration images used when none are asked for (or all, for smaller training sets)."""
ACCURACY_GOAL_POINTS = 1.0
"""Largest acceptable drop from float to int8 accuracy on the test split, percentage points."""


def default_paths(out: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The quantized ONNX and the report beside a package: ``model.int8.onnx``,
    ``model.m1w.json`` for ``model.m1w``."""
    out = Path(out)
    return out.with_suffix(".int8.onnx"), out.with_name(out.name + ".json")


def quantize_file(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    calib: int | None = None,
    seed: int = 0,
    task: str | None = None,
    onnx_path: str | os.PathLike[str] | None = None,
    report_path: str | os.PathLike[str] | None = None,
    device: DeviceModel | None = None,
) -> dict[str, Any]:
    """Quantize a checkpoint or machine file; write the package, its ONNX and a report.

    Calibrates on ``calib`` training images of the source's task (drawn with ``seed``),
    measures float and int8 accuracy on the test split and onnxruntime's agreement with the
    golden reference; with a ``device`` model (``mark1 quantize`` passes the simulated
    microcontroller's engine), also the device's cycles and its bit-exactness on the test split
    (the report's ``device`` section). Nothing is written unless all of it succeeds; each file
    is written atomically. Returns the report.
    """
    from export.contract.golden import decide, golden_forward, quantize_input
    from export.contract.package import FORMAT_VERSION, encode_package
    from export.int8.qonnx import AGREEMENT_GOAL, IR_VERSION, OPSET, agreement, onnx_bytes
    from mark1.io import atomic_write_bytes, write_json
    from mark1.stimuli import TASKS, make_task

    if calib is not None and (isinstance(calib, bool) or not isinstance(calib, int) or calib < 1):
        raise ValueError(f"--calib must be a positive whole number of images; got {calib!r}")
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"output {str(out)!r} is a folder; give a file name such as model.m1w")
    default_onnx, default_report = default_paths(out)
    onnx_path = Path(onnx_path) if onnx_path else default_onnx
    report_path = Path(report_path) if report_path else default_report
    source = load_source(path)
    kind = "markI" if isinstance(source, dict) else "mlp"
    src_task, task_seed, options = source_task(source)
    task = task or src_task
    if task not in TASKS:
        raise ValueError(
            f"{path}: task {task!r} is not a mark1-kit task, so there are no images to "
            f"calibrate on; pass --task (allowed: {', '.join(TASKS)})"
        )
    data = make_task(task, seed=task_seed, **options)
    n_calib = min(DEFAULT_CALIB, data.n_train) if calib is None else calib
    if n_calib > data.n_train:
        raise ValueError(
            f"--calib {n_calib} is more than the {data.n_train} training images of {task!r}"
        )
    pick = np.random.default_rng(seed).choice(data.n_train, n_calib, replace=False)
    pkg = quantize_source(source, data.X_train[np.sort(pick)])
    blob = encode_package(pkg)

    x_test = data.X_test.reshape(data.n_test, -1)
    y_float = float_predict(source, x_test)
    x_q = quantize_input(pkg, x_test)
    y_q = golden_forward(pkg, x_q)
    y_int8 = decide(pkg, y_q)
    acc_float = float(np.mean(y_float == data.y_test))
    acc_int8 = float(np.mean(y_int8 == data.y_test))
    model = onnx_bytes(pkg)
    report: dict[str, Any] = {
        "source": {"path": str(path), "kind": kind, "task": task, "seed": task_seed},
        "package": {"path": str(out), "bytes": len(blob), "format_version": FORMAT_VERSION,
                    **pkg.describe()},
        "calibration": {"images": n_calib, "split": "train", "seed": seed},
        "model_bytes": len(blob),
        "ram_bytes": pkg.ram_bytes,
        "accuracy": {
            "split": "test", "images": data.n_test, "float": acc_float, "int8": acc_int8,
            "drop_points": 100.0 * (acc_float - acc_int8),
            "goal_drop_points": ACCURACY_GOAL_POINTS,
            "goal_met": 100.0 * (acc_float - acc_int8) <= ACCURACY_GOAL_POINTS,
            "same_class_float_int8": float(np.mean(y_float == y_int8)),
        },
        "onnx": {"path": str(onnx_path), "bytes": len(model), "opset": OPSET,
                 "ir_version": IR_VERSION, "goal": AGREEMENT_GOAL,
                 **agreement(pkg, model, x_test)},
    }
    if device is not None:
        engine = device(pkg)
        engine_y = np.stack([engine.infer(x)[0] for x in x_q])
        report["device"] = {**engine.describe(), "inputs_checked": data.n_test,
                            "bit_exact_with_golden": bool(np.array_equal(engine_y, y_q))}
    atomic_write_bytes(out, blob)
    atomic_write_bytes(onnx_path, model)
    write_json(report_path, report)
    report["report_path"] = str(report_path)
    return report
