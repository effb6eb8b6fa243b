"""``mark1 quantize`` of a model quantized already (an int8 ``.tflite``): imported as it is.

Nothing is calibrated or rounded again: the package holds the file's integers, scales and zero
points (:mod:`export.tflite.read`), with the rounding the user asks for (TFLite's double
rounding by default, as TFLite Micro computes it). The run writes what a quantization writes --
the package, the same model as QDQ ONNX, a report -- and measures it on the user's inputs
(``--eval-data``) or on seeded random int8 inputs: accuracy where labels are given, what the
other rounding would change, onnxruntime's agreement, the device's bit-exactness and cycles.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import numpy as np

from export.int8.quantize import DeviceModel, PlannedRun, finish_run, plan_run
from mark1.limits import SEED

PROBE_INPUTS = 256
"""Random int8 inputs the report measures on when no ``--eval-data`` is given."""


def _inputs(pkg: Any, eval_data: tuple[str | os.PathLike[str], ...] | None, seed: int
            ) -> tuple[np.ndarray, np.ndarray | None, str]:
    """int8 inputs, their class indices (or None) and where they came from."""
    from export.contract.golden import quantize_input
    from export.sources.user_data import class_indices, feature_rows, read_array

    if not eval_data:
        rng = np.random.default_rng(seed)
        x_q = rng.integers(-128, 128, (PROBE_INPUTS, pkg.n_inputs)).astype(np.int8)
        return x_q, None, f"{PROBE_INPUTS} random int8 inputs (seed {seed})"
    x = feature_rows(read_array(eval_data[0], "evaluation data"), tuple(pkg.input_shape),
                     f"evaluation data {eval_data[0]}")
    y = None
    if len(eval_data) > 1:
        y = class_indices(read_array(eval_data[1], "evaluation labels"), list(pkg.classes),
                          len(x), f"evaluation labels {eval_data[1]}")
    return quantize_input(pkg, x), y, str(eval_data[0])


def import_file(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    rounding: str = "double",
    seed: int = 0,
    eval_data: tuple[str | os.PathLike[str], ...] | None = None,
    onnx_path: str | os.PathLike[str] | None = None,
    report_path: str | os.PathLike[str] | None = None,
    device: DeviceModel | None = None,
) -> dict[str, Any]:
    """Import a quantized model file as a weight package; write it, its ONNX and a report.

    ``rounding``: ``"double"`` (TFLite's, what TFLite Micro computes) or ``"single"`` (what
    LiteRT computes on x86). Measures on ``eval_data`` (inputs, optionally labels) or on
    :data:`PROBE_INPUTS` random int8 inputs drawn with ``seed``. The files are planned before
    any work (:func:`export.int8.quantize.plan_run`); nothing is written unless all of it
    succeeds, and then every file whole. Returns the report.
    """
    from export.contract.package import ROUNDINGS

    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding {rounding!r} is not one of {', '.join(ROUNDINGS)}")
    SEED.check("seed", seed)
    files = plan_run(path, out, eval_data=eval_data, onnx_path=onnx_path,
                     report_path=report_path)
    with files.plan:
        return _import(files, rounding, seed, device)


def _import(files: PlannedRun, rounding: str, seed: int,
            device: DeviceModel | None) -> dict[str, Any]:
    """The work of :func:`import_file`, written into the plan's staging files."""
    from export.contract.golden import decide, dequantize_output, golden_forward
    from export.contract.package import encode_package
    from export.int8.qonnx import AGREEMENT_GOAL, IR_VERSION, OPSET, agreement, onnx_bytes
    from export.int8.rounding import compare_roundings
    from export.sources.dispatch import load_package

    path, out, eval_data = files.model, files.out, files.eval_data
    onnx_path, report_path = files.onnx, files.report
    model = load_package(path)
    pkg = replace(model.package, rounding=rounding)
    blob = encode_package(pkg)
    x_q, y_eval, measured_on = _inputs(pkg, eval_data, seed)
    y_q = golden_forward(pkg, x_q)
    classes = decide(pkg, y_q)
    accuracy: dict[str, Any] = {"from": measured_on, "images": len(x_q), "int8": None}
    if y_eval is not None:
        accuracy["int8"] = float(np.mean(classes == y_eval))
    x_real = pkg.input_scale * (x_q.astype(np.float64) - pkg.input_zero_point)
    onnx_model = onnx_bytes(pkg)
    report: dict[str, Any] = {
        "source": {"path": str(path), "kind": model.kind, "task": None,
                   "model": model.describe()},
        "imported": True,
        "package": {"path": str(out), "bytes": len(blob), **pkg.describe()},
        "model_bytes": len(blob),
        "ram_bytes": pkg.ram_bytes,
        "accuracy": accuracy,
        "rounding": compare_roundings(pkg, x_q),
        "outputs_real_range": [float(dequantize_output(pkg, y_q).min()),
                               float(dequantize_output(pkg, y_q).max())],
        "onnx": {"path": str(onnx_path), "bytes": len(onnx_model), "opset": OPSET,
                 "ir_version": IR_VERSION, "goal": AGREEMENT_GOAL,
                 **agreement(pkg, onnx_model, x_real)},
    }
    return finish_run(report, pkg, x_q, y_q, device, files.plan,
                      {out: blob, onnx_path: onnx_model, report_path: report})
