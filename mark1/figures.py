"""Figures of a Mark I run: what the cells see, the pot panel, learning, motor activity.

Each function writes one PNG (matplotlib's object interface: no pyplot, no global backend, so
the caller's own plotting is left as it was) through an atomic rename and returns its path.
matplotlib is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mark1.io import atomic_write_bytes

if TYPE_CHECKING:  # (annotations only: figures are drawn from a trained machine)
    from mark1.machine import MarkI


def subplots(*grid: int, figsize: tuple[float, float], **kwargs: Any) -> tuple[Any, Any]:
    """A new figure and its axes, by matplotlib's object interface: no pyplot and no global
    backend, so drawing here leaves the caller's own plotting (a notebook's, say) as it was,
    and any thread may draw."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid, **kwargs)


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")  # Agg, for a PNG
    return atomic_write_bytes(path, buf.getvalue())


def warm_up() -> None:
    """Draw and encode a small figure, and discard it: matplotlib loads its backend and
    fonts on a process's first figure (a sweep has this done while its workers start,
    rather than after its last run)."""
    fig, ax = subplots(figsize=(2, 2))
    ax.plot([0.0, 1.0], [0.0, 1.0], marker="o", label="warm")
    ax.fill_between([0.0, 1.0], [0.0, 0.5], [0.5, 1.0], alpha=0.2)
    ax.set_title("warm")
    ax.legend()
    fig.savefig(io.BytesIO(), format="png", dpi=110, bbox_inches="tight")


def stimuli(path: str | os.PathLike[str], model: MarkI, X: np.ndarray, y: np.ndarray,
            classes: tuple[str, ...] | list[str], per_class: int = 2, max_images: int = 8) -> Path:
    """Sample stimuli: the light on the retina, and which S-units fire (dead cells in red)."""
    picks: list[int] = []
    for k in range(len(classes)):
        picks.extend(np.flatnonzero(y == k)[:per_class].tolist())
        if len(picks) >= max_images:
            break
    picks = picks[:max_images]
    x = np.asarray(X, dtype=np.float64).reshape(len(X), -1)[picks]
    s = model.retina_.respond_static(x)
    dead = model.retina_.dead.reshape(20, 20)
    fig, axes = subplots(2, len(picks), figsize=(1.6 * len(picks), 3.6), squeeze=False)
    for col, idx in enumerate(picks):
        axes[0, col].imshow(x[col].reshape(20, 20), cmap="gray", vmin=0, vmax=1)
        axes[0, col].set_title(str(classes[int(y[idx])]), fontsize=9)
        fired = np.dstack([s[col].reshape(20, 20)] * 3).astype(float)
        fired[dead] = (0.8, 0.1, 0.1)
        axes[1, col].imshow(fired, interpolation="nearest")
        for ax in axes[:, col]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("light", fontsize=9)
    axes[1, 0].set_ylabel("S-units", fontsize=9)
    fig.suptitle("Stimuli as the photocells see them", fontsize=10)
    return _save(fig, path)


def pots(path: str | os.PathLike[str], model: MarkI) -> Path:
    """The potentiometer panel: weight of every A->R pot (R-units x A-units)."""
    w = model.coef_
    lim = float(np.max(np.abs(w))) or 1.0
    fig, ax = subplots(figsize=(10, 0.45 * w.shape[0] + 1.4))
    im = ax.imshow(w, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    ax.set_xlabel("A-unit")
    ax.set_ylabel("R-unit")
    trained = set(model.units_.tolist())
    ax.set_yticks(range(w.shape[0]))
    ax.set_yticklabels([f"{r}{'' if r in trained else ' (unused)'}" for r in range(w.shape[0])],
                       fontsize=8)
    fig.colorbar(im, ax=ax, label="weight (R-unit sum units)")
    ax.set_title(f"Potentiometer panel, {model.preset_.name}: weights as read")
    return _save(fig, path)


def learning(path: str | os.PathLike[str], curve: list[dict[str, float]], n_train: int) -> Path:
    """Learning curve against machine time: mistakes per pass, train and test accuracy."""
    hours = np.array([c["machine_time_s"] for c in curve]) / 3600
    fig, ax = subplots(figsize=(6.5, 3.8))
    ax.plot(hours, [c["train_accuracy"] for c in curve], "o-", label="train accuracy")
    ax.plot(hours, [c["test_accuracy"] for c in curve], "s-", label="test accuracy")
    ax.plot(hours, [1 - c["mistakes"] / n_train for c in curve], "^:",
            label="1 - mistakes / trials (during the pass)")
    ax.set_xlabel("machine time (hours)")
    ax.set_ylabel("fraction")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title("Learning against the machine's own time")
    return _save(fig, path)


def motors(path: str | os.PathLike[str], model: MarkI) -> Path:
    """Motor activity: steps against machine time, and how far each pot has travelled."""
    fig, (ax1, ax2) = subplots(1, 2, figsize=(10, 3.6))
    if model.epoch_logs_:
        t = np.concatenate([log.time_us for log in model.epoch_logs_]) / 3.6e9
        steps = np.concatenate([log.motor_steps for log in model.epoch_logs_])
        ax1.plot(t, np.cumsum(steps), lw=1.2)
    ax1.set_xlabel("machine time (hours)")
    ax1.set_ylabel("motor steps so far")
    ax1.set_title("Motor steps")
    ax1.grid(alpha=0.3)
    travel = model.pots_.travel[model.units_].ravel()
    ax2.hist(travel, bins=40, color="tab:orange")
    ax2.set_xlabel("wiper travel per pot (R-unit sum units)")
    ax2.set_ylabel("pots")
    ax2.set_title("Wear: travel of the trained R-units' pots")
    return _save(fig, path)


def position_sweep(path: str | os.PathLike[str], results: list[dict[str, Any]]) -> Path:
    """Test accuracy against how far the figure may move, one panel per experiment."""
    fig, axes = subplots(1, len(results), figsize=(4.2 * len(results), 3.4), squeeze=False)
    for ax, r in zip(axes[0], results):
        shifts = r["shifts"]
        finite = [s for s in shifts if s is not None]
        anywhere = (max(finite) + 2.0) if finite else 1.0
        xs = [anywhere if s is None else s for s in shifts]
        for preset, accs in r["ours"].items():
            ax.plot(xs, [100 * a for a in accs], marker="o", label=preset)
        ax.axhline(100 * r["reported"], color="grey", linestyle="--", label="reported")
        ax.set_xticks(xs, ["anywhere" if s is None else f"±{s:g}" for s in shifts])
        ax.set_ylim(40, 102)
        ax.set_title(f"{r['experiment']}: {r['n_train']:,} images, {r['n_a']} A-units",
                     fontsize=9)
        ax.set_xlabel("largest shift of the figure from the centre (cells)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="lower left")
    fig.suptitle("How far the reported figures depend on the figure staying in place",
                 fontsize=10)
    return _save(fig, path)


def sweep_accuracy(path: str | os.PathLike[str], factor: str,
                   lines: dict[str, list[dict[str, Any]]], measure: str, runs_note: str,
                   context: str = "", log_x: bool = False) -> Path:
    """A measure against one swept factor: a line per group (its summary from
    :func:`mark1.sweeps.table.summary`: ``value``, ``label``, ``mean``, ``ci95``) with its 95 %
    confidence band; text factors as points with error bars."""
    fig, ax = subplots(figsize=(6.0, 4.0))
    first = next(iter(lines.values()))
    text = not all(isinstance(p["value"], (int, float)) and not isinstance(p["value"], bool)
                   for p in first)
    for name, points in lines.items():
        mean = np.array([100 * p["mean"] for p in points])
        half = np.array([100 * p["ci95"] for p in points])
        if text:
            xs = np.arange(len(points))
            ax.errorbar(xs, mean, yerr=half, marker="o", capsize=4, linestyle="-",
                        label=name or None)
            ax.set_xticks(xs, [p["label"] for p in points])
        else:
            xs = np.array([p["value"] for p in points], dtype=np.float64)
            line = ax.plot(xs, mean, marker="o", markersize=4, label=name or None)[0]
            ax.fill_between(xs, mean - half, mean + half, color=line.get_color(), alpha=0.2,
                            linewidth=0)
    if log_x and not text:
        ax.set_xscale("log")
    ax.set_xlabel(factor)
    ax.set_ylabel(f"{measure.replace('_', ' ')} (%)")
    ax.set_title(f"{context}\n" * bool(context) + f"{measure.replace('_', ' ')} against "
                 f"{factor}: mean and 95 % band over {runs_note}", fontsize=9)
    ax.grid(alpha=0.3)
    if any(lines):
        ax.legend(fontsize=8)
    return _save(fig, path)


def sweep_heatmap(path: str | os.PathLike[str], x_factor: str, y_factor: str,
                  x_labels: list[str], y_labels: list[str], mean: np.ndarray, measure: str,
                  runs_note: str, context: str = "") -> Path:
    """Mean of a measure over two swept factors (``mean`` is (len(y), len(x)); NaN: no run)."""
    fig, ax = subplots(figsize=(1.0 + 0.55 * max(len(x_labels), 4),
                                    1.6 + 0.4 * max(len(y_labels), 4)))
    image = ax.imshow(100 * mean, origin="lower", aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(x_labels)), x_labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(y_labels)), y_labels, fontsize=8)
    if mean.size <= 300:
        digits = 1 if np.nanmax(mean) - np.nanmin(mean) < 0.05 else 0
        for (i, j), v in np.ndenumerate(mean):
            if np.isfinite(v):
                ax.text(j, i, f"{100 * v:.{digits}f}", ha="center", va="center", fontsize=7,
                        color="white" if v < np.nanmean(mean) else "black")
    ax.set_xlabel(x_factor)
    ax.set_ylabel(y_factor)
    fig.colorbar(image, ax=ax, label=f"{measure.replace('_', ' ')} (%)")
    ax.set_title(f"{context}\n" * bool(context) + f"mean {measure.replace('_', ' ')} over "
                 f"{runs_note}", fontsize=9)
    return _save(fig, path)
