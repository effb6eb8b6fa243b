"""How a package's outputs depend on its rounding: the golden outputs under both modes, compared.

A package records how its dense layers requantize (``single`` or ``double``, docs/PACKAGE.md);
a runtime that rounds the other way computes other bits on some outputs. :func:`compare_roundings`
measures how many, by how much, and how many classes change, on the inputs given.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from export.contract.golden import decide, golden_forward
from export.contract.package import Package

RUNTIMES: dict[str, str] = {
    "single": "LiteRT (ai-edge-litert: its default XNNPACK kernels and its reference kernels), "
              "CMSIS-NN built with CMSIS_NN_USE_SINGLE_ROUNDING",
    "double": "TensorFlow Lite Micro's reference kernels, CMSIS-NN's default build",
}
"""Which runtimes compute each rounding's bits (measured: docs/TFLITE.md)."""
BITS = {"single": "LiteRT's bits", "double": "TFLite Micro's bits"}
"""Each mode in a few words, for one-line summaries."""
OPTION = {"single": "single", "double": "tflite"}
"""The ``--rounding`` choice that gives each mode."""


def other(rounding: str) -> str:
    """The other rounding mode."""
    return "double" if rounding == "single" else "single"


def compare_roundings(pkg: Package, x_q: np.ndarray) -> dict[str, Any]:
    """The package's golden outputs on int8 inputs ``x_q`` beside those of the same integers
    rounded the other way: outputs that differ, the largest difference in LSB, the histogram of
    differences, the inputs whose class changes."""
    mine = golden_forward(pkg, x_q).astype(np.int64)
    theirs = golden_forward(replace(pkg, rounding=other(pkg.rounding)), x_q).astype(np.int64)
    diff = np.abs(mine - theirs)
    sizes, counts = np.unique(diff[diff > 0], return_counts=True)
    return {
        "rounding": pkg.rounding, "runtimes": RUNTIMES[pkg.rounding],
        "other": other(pkg.rounding), "other_runtimes": RUNTIMES[other(pkg.rounding)],
        "inputs": int(len(x_q)), "outputs": int(diff.size),
        "outputs_differ": int((diff > 0).sum()),
        "max_diff_lsb": int(diff.max()) if diff.size else 0,
        "diff_lsb_counts": {str(int(s)): int(c) for s, c in zip(sizes, counts)},
        "class_changes": int((decide(pkg, mine) != decide(pkg, theirs)).sum()),
    }


def summary(figures: dict[str, Any]) -> str:
    """One line: the package's rounding, and what the other would change."""
    mine, theirs = figures["rounding"], figures["other"]
    share = figures["outputs_differ"] / max(figures["outputs"], 1)
    lsb = ", ".join(f"{c} by {s} LSB" for s, c in figures["diff_lsb_counts"].items())
    return (f"{mine} ({BITS[mine]}); {theirs} ({BITS[theirs]}, --rounding {OPTION[theirs]}) "
            f"would change {figures['outputs_differ']} of {figures['outputs']} outputs "
            f"({100 * share:.2f} %{': ' + lsb if lsb else ''}) and {figures['class_changes']} of "
            f"{figures['inputs']} classes")


def runtime_line(figures: dict[str, Any], measured: str) -> str:
    """One line for an exported model: the runtime that computes the package's bits, and what
    the other computes on the inputs ``measured`` (in words)."""
    mine = figures["rounding"]
    runtime = {"single": "LiteRT", "double": "TFLite Micro"}[mine]
    other_runtime = {"single": "TFLite Micro's reference kernels round twice",
                     "double": "LiteRT rounds once"}[mine]
    lsb = ", ".join(f"{c} by {s} LSB" for s, c in figures["diff_lsb_counts"].items())
    share = figures["outputs_differ"] / max(figures["outputs"], 1)
    advice = "; for TFLite Micro's bits, quantize with --rounding tflite" if mine == "single" \
        else ""
    return (f"bit-exact in {runtime} ({mine} rounding); {other_runtime}: on {measured} other "
            f"outputs on {figures['outputs_differ']} of {figures['outputs']} ({100 * share:.2f} %"
            f"{': ' + lsb if lsb else ''}), another class on {figures['class_changes']} of "
            f"{figures['inputs']}{advice}")
