"""The playground's figures as PNG bytes: the learning curves and the pot panel of a tab.

Drawn from a copy of the tab's data (:meth:`mark1.playground.tab.Tab.figure_data`) with
matplotlib's object interface (no pyplot state), so a server can draw them in a worker thread
while the tab's machine goes on learning.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np


def machine_time_text(seconds: float) -> str:
    """Machine time as a person reads it: ``2 h 14 min``, ``3 min 20 s``, ``12.4 s``."""
    if not math.isfinite(seconds) or seconds < 0:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min {int(seconds % 60)} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{hours // 24} d {hours % 24} h"


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def curves_png(data: dict[str, Any]) -> bytes:
    """Mistakes so far and test accuracy, against trials and against the machine's clock."""
    from matplotlib.figure import Figure

    curve = data["curve"]
    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2)
    hours = curve["machine_time_s"] / 3600
    for ax, x, label in ((axes[0], curve["trial"], "trials"),
                         (axes[1], hours, "machine time (hours)")):
        ax.plot(x, curve["mistakes"], color="tab:red", lw=1.5, label="mistakes so far")
        ax.set_xlabel(label)
        ax.set_ylabel("mistakes so far", color="tab:red")
        ax.grid(alpha=0.3)
        twin = ax.twinx()
        tested = np.isfinite(curve["test_accuracy"])
        twin.plot(x[tested], curve["test_accuracy"][tested], "o-", ms=3, color="tab:blue",
                  label="test accuracy")
        twin.set_ylim(0, 1.02)
        twin.set_ylabel("test accuracy", color="tab:blue")
    spent = machine_time_text(float(data.get("machine_time_s", 0.0)))
    fig.suptitle(f"{data['task']} on {data['preset']}: {data['trials']} trials; the 1960 "
                 f"machine would have needed {spent}", fontsize=10)
    return _png(fig)


def pots_png(data: dict[str, Any]) -> bytes:
    """The potentiometer panel: every pot's weight as read (R-units x A-units, bias last)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.4))
    ax = fig.subplots()
    if "pots" not in data:
        ax.text(0.5, 0.5, "the machine is wired at its first trial", ha="center")
        ax.set_axis_off()
        return _png(fig)
    w = data["pots"]
    lim = float(np.abs(w).max(initial=0.0)) or 1.0
    im = ax.imshow(w, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim,
                   interpolation="nearest")
    trained = set(np.asarray(data["trained"]).tolist())
    ax.set_yticks(range(w.shape[0]))
    ax.set_yticklabels([f"{r}{'' if r in trained else ' (unused)'}" for r in range(w.shape[0])],
                       fontsize=8)
    ax.set_xlabel("A-unit (bias pot last)")
    ax.set_ylabel("R-unit")
    fig.colorbar(im, ax=ax, label="weight (R-unit sum units)")
    ax.set_title(f"Potentiometer panel after {data['trials']} trials ({data['preset']})",
                 fontsize=10)
    return _png(fig)


FIGURES = {"curves": curves_png, "pots": pots_png}
"""The figures a tab offers, by name (``/tab/<id>/<name>.png``)."""
