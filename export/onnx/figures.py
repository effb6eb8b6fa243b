"""Figures of training and export runs (matplotlib's object interface, no pyplot), written
atomically as PNG."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # matplotlib is imported when a figure is drawn
    from matplotlib.figure import Figure


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    from mark1.io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)  # Agg, for a PNG
    return atomic_write_bytes(path, buf.getvalue())


def training_figure(report: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Loss and train/test accuracy per epoch of an MLP training run."""
    from mark1.figures import subplots

    epochs = np.arange(1, len(report["loss_curve"]) + 1)
    fig, (ax_loss, ax_acc) = subplots(1, 2, figsize=(9, 3.5))
    ax_loss.plot(epochs, report["loss_curve"], color="tab:red")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy loss (training)")
    ax_loss.set_yscale("log")
    ax_acc.plot(epochs, report["train_accuracy_curve"], label="train")
    ax_acc.plot(epochs, report["test_accuracy_curve"], label="test")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(-0.02, 1.02)
    ax_acc.legend(loc="lower right")
    hidden = ",".join(str(h) for h in report["hidden"]) or "none"
    fig.suptitle(f"MLP on {report['task']} (hidden {hidden}, seed {report['seed']})")
    fig.tight_layout()
    return _save(fig, path)


def parity_figure(
    reference: np.ndarray, onnx_out: np.ndarray, title: str, path: str | os.PathLike[str]
) -> Path:
    """ONNX outputs against the reference outputs, and the histogram of their differences."""
    from mark1.figures import subplots

    ref = np.asarray(reference, np.float64).ravel()
    got = np.asarray(onnx_out, np.float64).ravel()
    keep = np.isfinite(ref) & np.isfinite(got)
    ref, got = ref[keep], got[keep]
    diff = np.abs(got - ref)
    fig, (ax_sc, ax_hist) = subplots(1, 2, figsize=(9, 3.5))
    ax_sc.plot(ref, got, ".", markersize=2)
    ax_sc.set_xlabel("reference output")
    ax_sc.set_ylabel("onnxruntime output")
    positive = diff[diff > 0]
    if positive.size:
        bins = np.logspace(np.log10(positive.min()), np.log10(positive.max()) + 1e-9, 40)
        ax_hist.hist(positive, bins=bins)
        ax_hist.set_xscale("log")
    ax_hist.set_xlabel("|onnxruntime - reference|")
    ax_hist.set_ylabel("outputs")
    ax_hist.set_title(f"{int((diff == 0).sum())} of {diff.size} identical", fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)
