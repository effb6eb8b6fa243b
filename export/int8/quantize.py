"""Post-training static int8 quantization (the TFLite / CMSIS-NN scheme) into a weight package.

* Inputs: relative illuminance in [0, 1] -> int8 with scale 1/255 and zero point -128 (the range
  is fixed by the retina's input contract, so no calibration is needed for it). A model made
  elsewhere takes its own features: their range over the calibration inputs sets the input's
  scale and zero point as for an activation.
* Weights: symmetric per output channel, ``w_q = round(w / s_w[o])`` in [-127, 127] with
  ``s_w[o] = max|w[o, :]| / 127``; rounding half away from zero, as TFLite's quantizer.
* Bias: int32 at scale ``s_in * s_w[o]``.
* Activations: asymmetric int8; each layer's output range [min, max] (widened to hold 0) is
  measured by running the float model on calibration images; ``scale = (max - min) / 255``,
  ``zero_point = round(-128 - min / scale)``. ReLU is fused: a ReLU layer's range starts at 0, so
  its zero point is -128 and its outputs are clamped there. ReLU-n (ReLU6, ``Clip(0, n)``) is
  fused the same way: the range ends at n where the calibration reaches it, so the int8 clamp at
  127 is the clip.
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from export.contract.package import (
    INT32_MAX,
    INT32_MIN,
    MAX_DIM,
    Dense,
    Package,
    Step,
    Threshold,
    quantize_multiplier,
)
from export.onnx.checkpoint import LINEAR, MLPCheckpoint
from mark1.io import OutputPlan
from mark1.limits import SEED, Limit

if TYPE_CHECKING:  # the model readers are imported when a file is read
    from export.sources.dispatch import ImportedMLP

INPUT_SCALE = float(np.float32(1.0 / 255.0))
"""Scale of the int8 input: the [0, 1] illuminance range spread over 255 steps."""
INPUT_ZERO_POINT = -128
"""int8 code of darkness (illuminance 0)."""


def round_half_away(x: npt.ArrayLike) -> np.ndarray:
    """Round to the nearest integer, ties away from zero (C ``round``, TFLite's quantizer)."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


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


def _calibration_images(X: np.ndarray, what: str = "calibration images") -> np.ndarray:
    from mark1.images import N_CELLS, to_retina

    return to_retina(X, name=what).reshape(-1, N_CELLS)


def input_grid(ckpt: MLPCheckpoint, x: np.ndarray) -> tuple[float, int]:
    """Scale and zero point of the int8 input: the retina's fixed [0, 1] grid, or for a model's
    own features the range of the calibration inputs ``x`` (rows, widened to hold 0)."""
    if ckpt.takes_retina:
        return INPUT_SCALE, INPUT_ZERO_POINT
    return choose_qparams(float(x.min()), float(x.max()))


def quantize_mlp(ckpt: MLPCheckpoint, X_calib: np.ndarray) -> Package:
    """Quantize an :class:`~export.onnx.checkpoint.MLPCheckpoint`, calibrating on ``X_calib``:
    retina images for a model on the retina, else the model's own inputs (rows of
    ``layer_sizes[0]`` values, or any layout holding as many)."""
    from export.sources.user_data import feature_rows

    ckpt.validate()
    shape: tuple[int, ...]
    if ckpt.takes_retina:
        x, shape = _calibration_images(X_calib), (20, 20)
    else:
        x = feature_rows(X_calib, ckpt.input_shape, "calibration inputs")
        shape = ckpt.input_shape
    if len(shape) > 3 or max(shape) > MAX_DIM or math.prod(shape) > MAX_DIM:
        raise ValueError(f"the model takes {math.prod(shape)} inputs (shape {shape}); a weight "
                         f"package holds at most {MAX_DIM} in at most 3 dimensions")
    layers: list[Dense] = []
    scale, zp = input_grid(ckpt, x)
    first_scale, first_zp = scale, zp
    h = x
    for w, b, (lo, hi) in zip(ckpt.weights, ckpt.biases, ckpt.clamps):
        mean_in = h.mean(axis=0)
        h = h @ np.asarray(w, np.float64).T + np.asarray(b, np.float64)
        if (lo, hi) != LINEAR:  # ReLU, or ReLU-n: the range then ends at n (its clamp)
            h = np.clip(h, lo, hi)
        layer = quantize_dense(
            w, b, scale, zp, (float(h.min()), float(h.max())), lo == 0.0, input_mean=mean_in
        )
        layers.append(layer)
        scale, zp = layer.output_scale, layer.output_zero_point
    return Package(
        tuple(layers), tuple(shape), tuple(ckpt.classes), first_scale, first_zp, "mlp"
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
"""What is quantized: an MLP, or the arrays of a Mark I machine file."""


def load_model(path: str | os.PathLike[str]) -> ImportedMLP | dict[str, Any]:
    """Read what to quantize: any MLP the kit reads (:func:`export.sources.dispatch.load_mlp`:
    ``mlp.pt``, ONNX, torch) or a Mark I machine (its arrays).

    The kind is told by content. Raises ``FileNotFoundError`` for a missing file and
    ``ValueError`` for anything else.
    """
    from export.sources.dispatch import load_mlp, sniff

    if sniff(path).name == "markI":
        from mark1.machine import load_machine

        return load_machine(path)
    return load_mlp(path)


def load_source(path: str | os.PathLike[str]) -> Source:
    """The float model in ``path``: an :class:`MLPCheckpoint` or a Mark I machine (dict)."""
    model = load_model(path)
    return model if isinstance(model, dict) else model.mlp


def source_task(source: Source) -> tuple[str, int, dict[str, Any]]:
    """``(task, seed, make_task options)`` the source was trained on."""
    if isinstance(source, dict):
        return str(source.get("task", "")), max(int(source.get("seed", 0)), 0), {}
    return source.task, max(int(source.seed), 0), dict(getattr(source, "task_options", {}) or {})


def quantize_source(source: Source, X_calib: np.ndarray) -> Package:
    """Quantize whatever :func:`load_source` returned."""
    if isinstance(source, dict):
        return quantize_machine(source, X_calib)
    return quantize_mlp(source, X_calib)


def float_predict(source: Source, X: np.ndarray) -> np.ndarray:
    """Class indices from the float model (the reference the int8 model is measured against);
    ``X`` as :func:`model_rows` takes it."""
    x = model_rows(source, X, "inputs")
    if isinstance(source, dict):
        from mark1.machine import static_predict

        return static_predict(source, x)
    return np.argmax(source.forward(x), axis=1)


def model_rows(source: Source, X: np.ndarray, what: str) -> np.ndarray:
    """``X`` as the model's real inputs, float64 rows (n, n_in): retina images projected onto
    the grid (a Mark I, an MLP on the retina), else the model's own features."""
    from export.sources.user_data import model_inputs

    if isinstance(source, dict):
        return _calibration_images(X, what)
    return model_inputs(X, source, what)


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
CALIB_LIMIT = Limit(1, 10_000_000, "images", integer=True)
"""Allowed number of calibration images (``"all"``: the whole training split); never more
than the training split holds."""
ACCURACY_GOAL_POINTS = 1.0
"""Largest acceptable drop from float to int8 accuracy on the test split, percentage points."""


def default_paths(out: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The quantized ONNX and the report beside a package: ``model.int8.onnx``,
    ``model.m1w.json`` for ``model.m1w``."""
    out = Path(out)
    return out.with_suffix(".int8.onnx"), out.with_name(out.name + ".json")


@dataclass
class RunData:
    """The inputs a quantization run calibrates and measures on, and where they came from."""

    calib: np.ndarray
    """Calibration inputs, the model's real input rows (n, n_in)."""
    calib_from: str
    x_eval: np.ndarray
    """Inputs the int8 model is measured on (rows)."""
    y_eval: np.ndarray | None
    """Their class indices (``None``: no labels, so no accuracy)."""
    eval_from: str
    task: str | None
    """The built-in task the data came from, if any."""
    task_seed: int


def _task_misfit(task: str, source: Source, classes: tuple[str, ...]) -> str:
    """Why the images of ``task`` do not fit the model ("" when they do)."""
    if not isinstance(source, dict) and not source.takes_retina:
        return (f"task {task!r} gives 20x20 retina images but the model takes "
                f"{source.layer_sizes[0]} inputs (shape {source.input_shape})")
    model_classes = tuple(str(c) for c in (source["classes"] if isinstance(source, dict)
                                           else source.classes))
    if model_classes != classes:
        def show(names: tuple[str, ...]) -> str:
            return ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")

        return (f"task {task!r} has {len(classes)} classes ({show(classes)}) but the model has "
                f"{len(model_classes)} ({show(model_classes)})")
    return ""


def plan_data(
    path: str | os.PathLike[str], source: Source, *, calib: int | str | None, seed: int,
    task: str | None, calib_data: str | os.PathLike[str] | None,
    eval_data: tuple[str | os.PathLike[str], ...] | None,
) -> RunData:
    """Calibration and evaluation inputs: the user's files where given, else the splits of a
    built-in task (``task``, or the one the source names) whose images and classes fit the
    model. ``ValueError`` says what is missing or does not fit."""
    from export.sources.user_data import class_indices, read_array
    from mark1.stimuli import TASKS, make_task

    own, task_seed, options = source_task(source)
    if task is not None and task not in TASKS:
        raise ValueError(f"{path}: task {task!r} is not a mark1-kit task, so there are no images "
                         f"to calibrate on; pass --task (allowed: {', '.join(TASKS)})")
    chosen = task or (own if own in TASKS else None)
    need_task = calib_data is None or not eval_data
    data = None
    if chosen is not None and (need_task or task is not None):
        data = make_task(chosen, seed=task_seed, **options)
        misfit = _task_misfit(chosen, source, tuple(data.classes))
        if misfit:
            named = "" if task else " (named by the model file)"
            raise ValueError(f"{path}: {misfit}{named}: give --calib-data X.npy and "
                             "--eval-data X.npy y.npy with the model's own inputs")
    if calib_data is None and data is None:
        shape = "(n, 400) or (n, h, w) images" if isinstance(source, dict) or \
            source.takes_retina else f"(n, {source.layer_sizes[0]})"
        why = f"names task {own!r}, which is not built in" if own else "names no built-in task"
        raise ValueError(f"{path} {why}: give --calib-data X.npy (inputs shaped {shape}) to "
                         "calibrate on, and --eval-data X.npy y.npy for the accuracy report")
    if calib_data is not None:
        pool = model_rows(source, read_array(calib_data, "calibration data"),
                          f"calibration data {calib_data}")
        calib_from = str(calib_data)
    else:
        assert data is not None
        pool = model_rows(source, data.X_train, "training images")
        calib_from = f"the training split of task {data.name!r}"
    n_calib = (min(DEFAULT_CALIB, len(pool)) if calib is None
               else len(pool) if calib == "all" else int(calib))
    if n_calib > len(pool):
        have = f"the {len(pool)} inputs of {calib_data}" if calib_data is not None else \
            f"the {len(pool)} training images of {data.name!r}" if data is not None else ""
        raise ValueError(f"--calib {n_calib} is more than {have}")
    pick = np.sort(np.random.default_rng(seed).choice(len(pool), n_calib, replace=False))
    if eval_data:
        x_eval = model_rows(source, read_array(eval_data[0], "evaluation data"),
                            f"evaluation data {eval_data[0]}")
        y_eval = None
        if len(eval_data) > 1:
            classes = source["classes"] if isinstance(source, dict) else source.classes
            y_eval = class_indices(read_array(eval_data[1], "evaluation labels"),
                                   [str(c) for c in classes], len(x_eval),
                                   f"evaluation labels {eval_data[1]}")
        eval_from = str(eval_data[0])
    elif data is not None:
        x_eval, y_eval = model_rows(source, data.X_test, "test images"), data.y_test
        eval_from = f"the test split of task {data.name!r}"
    else:
        x_eval, y_eval, eval_from = pool[pick], None, f"the calibration inputs ({calib_from})"
    return RunData(pool[pick], calib_from, x_eval, y_eval, eval_from,
                   data.name if data is not None else None, task_seed)


def import_check(model: ImportedMLP, x: np.ndarray) -> dict[str, Any] | None:
    """Compare the MLP as read with the model run by its own runtime (onnxruntime, torch) on
    inputs ``x``: the fp32 parity bound of :mod:`export.onnx.parity` on the logits, and the same
    class on every input it decides. ``None`` where the file has no runtime (a state_dict).
    ``ValueError`` when they disagree: the file holds something the reader missed."""
    from export.onnx.parity import logit_bounds, near_ties

    if model.reference is None:
        return None
    ref = model.reference(x.astype(np.float32))
    got = model.mlp.forward(x.astype(np.float32))
    bounds = logit_bounds(ref, "fp32")
    diff = np.abs(got - ref).max(axis=1)
    moved = (np.argmax(got, axis=1) != np.argmax(ref, axis=1)) & ~near_ties(ref, bounds)
    worst = int(np.argmax(diff / bounds))
    result = {"reference": model.reference_name, "inputs": len(x),
              "max_abs_diff": float(diff.max()), "bound_where_closest": float(bounds[worst]),
              "class_changes": int(moved.sum()),
              "passed": bool((diff <= bounds).all() and not moved.any())}
    if not result["passed"]:
        raise ValueError(
            f"{model.path}: read as an MLP, it computes logits up to {diff.max():.3g} away from "
            f"{model.reference_name} (allowed {bounds[worst]:.3g}) and changes the class of "
            f"{int(moved.sum())} of {len(x)} inputs: the file holds something the reader missed")
    return result


def quantize_file(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    calib: int | str | None = None,
    seed: int = 0,
    task: str | None = None,
    calib_data: str | os.PathLike[str] | None = None,
    eval_data: tuple[str | os.PathLike[str], ...] | None = None,
    onnx_path: str | os.PathLike[str] | None = None,
    report_path: str | os.PathLike[str] | None = None,
    device: DeviceModel | None = None,
    rounding: str | None = None,
) -> dict[str, Any]:
    """Quantize a model file; write the package, its ONNX and a report.

    ``path``: any MLP the kit reads (``mlp.pt``, an ONNX graph, a torch module, TorchScript
    archive or state_dict: :mod:`export.sources`) or a Mark I machine file. Calibrates on
    ``calib`` inputs (drawn with ``seed``; ``"all"``: every one) of ``calib_data`` (a ``.npy``
    of the model's inputs) or of the training split of a built-in task (``task``, or the one
    the file names) that fits the model; measures float and int8 accuracy on ``eval_data``
    (inputs, labels) or the task's test split, and onnxruntime's agreement with the golden
    reference; with a ``device`` model (``mark1 quantize`` passes the simulated
    microcontroller's engine), also the device's cycles and its bit-exactness (the report's
    ``device`` section). A model made elsewhere is first run by its own runtime beside the MLP
    as read (``import_check``). The files are planned before any work
    (:func:`plan_run`); nothing is written unless all of it succeeds, and then every file
    whole. Returns the report.

    ``rounding``: how the package requantizes, ``"single"`` (the default) or ``"double"``
    (TFLite's, for TFLite Micro). A model quantized already (an int8 ``.tflite``) is imported
    by :func:`export.int8.imported.import_file` instead.
    """
    from export.contract.package import ROUNDINGS
    from mark1.stimuli import TASKS

    if rounding is not None and rounding not in ROUNDINGS:
        raise ValueError(f"rounding {rounding!r} is not one of {', '.join(ROUNDINGS)}")
    if calib is not None and calib != "all":
        CALIB_LIMIT.check("calib", calib)
    SEED.check("seed", seed)
    if task is not None and task not in TASKS:
        raise ValueError(f"{path}: task {task!r} is not a mark1-kit task, so there are no images "
                         f"to calibrate on; pass --task (allowed: {', '.join(TASKS)})")
    run = plan_run(path, out, calib_data=calib_data, eval_data=eval_data, onnx_path=onnx_path,
                   report_path=report_path)
    with run.plan:
        return _quantize(run, calib=calib, seed=seed, task=task, device=device,
                         rounding=rounding)


@dataclass
class PlannedRun:
    """The files of a quantization run, checked (:func:`plan_run`); write through ``plan``."""

    plan: OutputPlan
    model: Path
    calib_data: Path | None
    eval_data: tuple[Path, ...] | None
    out: Path
    onnx: Path
    report: Path


def plan_run(path: str | os.PathLike[str], out: str | os.PathLike[str], *,
             calib_data: str | os.PathLike[str] | None = None,
             eval_data: tuple[str | os.PathLike[str], ...] | None = None,
             onnx_path: str | os.PathLike[str] | None = None,
             report_path: str | os.PathLike[str] | None = None) -> PlannedRun:
    """The plan (:class:`mark1.io.OutputPlan`) of a run that reads a model (and data files) and
    writes a package, its ONNX and a report: no output may be an input or another output, and
    each must be creatable; checked when the plan is entered, before any work."""
    if eval_data is not None and not 1 <= len(eval_data) <= 2:
        raise ValueError(f"--eval-data takes the inputs and optionally their labels (1 or 2 "
                         f".npy files); got {len(eval_data)}")
    plan = OutputPlan()
    model = plan.read("MODEL", path, what="checkpoint")
    calib = None if calib_data is None else plan.read("--calib-data", calib_data,
                                                      what="data file")
    given = None if eval_data is None else tuple(
        plan.read("--eval-data", each, what="data file") for each in eval_data)
    package = plan.write_file("--out", out)
    default_onnx, default_report = default_paths(package)
    onnx = plan.write_file("--onnx", onnx_path if onnx_path is not None else default_onnx)
    report = plan.write_file("--report", report_path if report_path is not None
                             else default_report)
    return PlannedRun(plan, model, calib, given, package, onnx, report)


def _quantize(run_files: PlannedRun, *, calib: int | str | None, seed: int, task: str | None,
              device: DeviceModel | None, rounding: str | None) -> dict[str, Any]:
    """The work of :func:`quantize_file`: the package, its ONNX and the report, written into
    the plan's staging files."""
    from export.contract.golden import decide, golden_forward, quantize_input
    from export.contract.package import encode_package
    from export.int8.qonnx import AGREEMENT_GOAL, IR_VERSION, OPSET, agreement, onnx_bytes
    from export.int8.rounding import compare_roundings

    path, out = run_files.model, run_files.out
    onnx_path, report_path = run_files.onnx, run_files.report
    calib_data, eval_data = run_files.calib_data, run_files.eval_data

    model = load_model(path)
    source: Source = model if isinstance(model, dict) else model.mlp
    if not isinstance(source, dict) and source.layer_sizes[0] > MAX_DIM:
        raise ValueError(f"{path}: the model takes {source.layer_sizes[0]} inputs; a weight "
                         f"package holds at most {MAX_DIM} (16-bit indices on the device)")
    run = plan_data(path, source, calib=calib, seed=seed, task=task, calib_data=calib_data,
                    eval_data=eval_data)
    checked = None if isinstance(model, dict) else import_check(
        model, np.concatenate([run.calib, run.x_eval])[:1024])
    pkg = replace(quantize_source(source, run.calib), rounding=rounding or "single")
    blob = encode_package(pkg)

    x_test = run.x_eval
    y_float = float_predict(source, x_test)
    x_q = quantize_input(pkg, x_test)
    y_q = golden_forward(pkg, x_q)
    y_int8 = decide(pkg, y_q)
    accuracy: dict[str, Any] = {
        "split": "test" if run.task else "given", "from": run.eval_from, "images": len(x_test),
        "same_class_float_int8": float(np.mean(y_float == y_int8)),
        "goal_drop_points": ACCURACY_GOAL_POINTS,
    }
    if run.y_eval is not None:
        right_float, right_int8 = int(np.sum(y_float == run.y_eval)), int(np.sum(
            y_int8 == run.y_eval))
        acc_float, acc_int8 = right_float / len(x_test), right_int8 / len(x_test)
        drop = 100.0 * (right_float - right_int8) / len(x_test)  # exact at whole inputs
        accuracy.update(float=acc_float, int8=acc_int8, drop_points=drop,
                        goal_met=drop <= ACCURACY_GOAL_POINTS)
    else:
        accuracy.update(float=None, int8=None, drop_points=None, goal_met=None)
    onnx_model = onnx_bytes(pkg)
    kind = "markI" if isinstance(model, dict) else (
        "mlp" if model.kind == "mark1-kit checkpoint" else model.kind)
    report: dict[str, Any] = {
        "source": {"path": str(path), "kind": kind, "task": run.task, "seed": run.task_seed,
                   **({} if isinstance(model, dict) else {"model": model.describe()})},
        "package": {"path": str(out), "bytes": len(blob), **pkg.describe()},
        "calibration": {"images": len(run.calib), "from": run.calib_from,
                        "split": "train" if run.task and "training" in run.calib_from
                        else "given", "seed": seed},
        "model_bytes": len(blob),
        "ram_bytes": pkg.ram_bytes,
        "accuracy": accuracy,
        "import_check": checked,
        "rounding": compare_roundings(pkg, x_q),
        "onnx": {"path": str(onnx_path), "bytes": len(onnx_model), "opset": OPSET,
                 "ir_version": IR_VERSION, "goal": AGREEMENT_GOAL,
                 **agreement(pkg, onnx_model, x_test)},
    }
    return finish_run(report, pkg, x_q, y_q, device, run_files.plan,
                      {out: blob, onnx_path: onnx_model, report_path: report})


def finish_run(report: dict[str, Any], pkg: Package, x_q: np.ndarray, y_q: np.ndarray,
               device: DeviceModel | None, plan: OutputPlan,
               outputs: dict[Path, bytes | dict[str, Any]]) -> dict[str, Any]:
    """The end of a run: the device's figures on the int8 inputs ``x_q`` (bit-exact with the
    golden outputs ``y_q``?) into the report, then every output written into its staging file
    of ``plan`` (bytes, or the report as JSON): in place, whole, when the plan ends. Returns the
    report with its path."""

    if device is not None:
        engine = device(pkg)
        engine_y = np.stack([engine.infer(x)[0] for x in x_q])
        report["device"] = {**engine.describe(), "inputs_checked": len(x_q),
                            "bit_exact_with_golden": bool(np.array_equal(engine_y, y_q))}
    for path, content in outputs.items():
        if isinstance(content, dict):
            plan.write_json(path, content)
            report["report_path"] = str(path)
        else:
            plan.write_bytes(path, content)
    return report
