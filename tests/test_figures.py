"""Figures are drawn by matplotlib's object interface: the caller's plotting is left alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CODE = """
import json, sys, matplotlib
import numpy as np
matplotlib.use("svg")  # a caller's own backend, as a notebook has one
from export.onnx.figures import parity_figure, training_figure
from mark1 import figures
out = sys.argv[1]
report = {"loss_curve": [1.0, 0.5, 0.25], "train_accuracy_curve": [0.5, 0.8, 0.9],
          "test_accuracy_curve": [0.5, 0.7, 0.85], "hidden": [8], "task": "digits", "seed": 0}
training_figure(report, out + "/training.png")
parity_figure(np.arange(10.0), np.arange(10.0) + 1e-6, "parity", out + "/parity.png")
figures.sweep_heatmap(out + "/heatmap.png", "a", "b", ["0", "1"], ["x", "y"],
                      np.array([[0.5, 0.6], [0.7, 0.8]]), "test_accuracy", "2 seeds", "e-f")
print(json.dumps([matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules]))
"""


def test_figures_leave_the_callers_backend_and_pyplot_alone(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("MPLBACKEND", None)
    res = subprocess.run([sys.executable, "-c", CODE, str(tmp_path)], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True)
    assert json.loads(res.stdout) == ["svg", False]
    for name in ("training.png", "parity.png", "heatmap.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
