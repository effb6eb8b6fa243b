"""The MLP checkpoint (``mlp.pt``): weights plus everything needed to rebuild and use them.

A checkpoint is a ``torch.save`` of a plain dict (loadable with ``weights_only=True``):

==================  =============================================================================
key                 meaning
==================  =============================================================================
``format``          ``"mark1-kit/mlp"`` -- tells an MLP checkpoint from anything else
``format_version``  ``1``
``layer_sizes``     ``[n_in, h1, ..., n_classes]``; ReLU after every layer but the last
``weights``         float32 tensors, layer ``i`` shaped ``(layer_sizes[i+1], layer_sizes[i])``
``biases``          float32 tensors, layer ``i`` shaped ``(layer_sizes[i+1],)``
``classes``         class names; output ``k`` is the logit of ``classes[k]``
``task``            retina task the model was trained on (``mark1.stimuli.TASKS``)
``seed``            training seed
``preprocessing``   dict: how an image becomes the input vector (see :data:`PREPROCESSING`)
``metrics``         dict of training figures (accuracies, loss curve), informational
``task_options``    dict of ``mark1.stimuli.make_task`` arguments that rebuild the training and
                    test sets with ``task`` and ``seed`` (optional; ``{}`` when absent)
==================  =============================================================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported when a checkpoint is saved or loaded
    import torch

FORMAT = "mark1-kit/mlp"
FORMAT_VERSION = 1

PREPROCESSING: dict[str, Any] = {
    "input": "retina",
    "shape": [20, 20],
    "layout": "row-major, flattened to 400 values",
    "range": [0.0, 1.0],
    "resample": "area average onto the 20x20 grid (mark1.images.to_retina)",
    "meaning": "relative illuminance of each photocell: 0 dark, 1 full lamp level",
}
"""The input contract of every MLP: the image the retina sees, flattened."""


@dataclass
class MLPCheckpoint:
    """An MLP in numpy form: what training produces and what export and quantization read."""

    layer_sizes: list[int]
    """Units per layer, input first, classes last."""
    weights: list[np.ndarray]
    """Float32 weight matrices, layer ``i`` shaped (out, in)."""
    biases: list[np.ndarray]
    """Float32 bias vectors, layer ``i`` shaped (out,)."""
    classes: list[str]
    """Class names, in output order."""
    task: str
    """Retina task the model was trained on."""
    seed: int
    """Training seed."""
    preprocessing: dict[str, Any] = field(default_factory=lambda: dict(PREPROCESSING))
    """How an image becomes the input vector."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Training figures (informational)."""
    task_options: dict[str, Any] = field(default_factory=dict)
    """``make_task`` arguments (``n_train``, ``n_test``, ``noise``, ...) of the training data."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Float64 logits for inputs (n, n_in), in numpy (reference for parity checks)."""
        h = np.asarray(x, dtype=np.float64)
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w.astype(np.float64).T + b.astype(np.float64)
            if i < len(self.weights) - 1:
                h = np.maximum(h, 0.0)
        return h

    def validate(self) -> None:
        """Raise ``ValueError`` if shapes and sizes do not agree."""
        sizes = self.layer_sizes
        if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
            raise ValueError(f"layer_sizes must list at least two positive sizes; got {sizes}")
        if len(self.weights) != len(sizes) - 1 or len(self.biases) != len(sizes) - 1:
            raise ValueError(
                f"checkpoint has {len(self.weights)} weight and {len(self.biases)} bias arrays "
                f"for {len(sizes) - 1} layers"
            )
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            if w.shape != (sizes[i + 1], sizes[i]) or b.shape != (sizes[i + 1],):
                raise ValueError(
                    f"layer {i}: weight {w.shape} / bias {b.shape} do not match sizes "
                    f"{sizes[i]} -> {sizes[i + 1]}"
                )
            if not (np.isfinite(w).all() and np.isfinite(b).all()):
                raise ValueError(f"layer {i} has NaN or infinite parameters")
        if len(self.classes) != sizes[-1]:
            raise ValueError(f"{len(self.classes)} class names for {sizes[-1]} outputs")

    def to_dict(self) -> dict[str, Any]:

        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "layer_sizes": [int(s) for s in self.layer_sizes],
            "weights": [_tensor(w) for w in self.weights],
            "biases": [_tensor(b) for b in self.biases],
            "classes": [str(c) for c in self.classes],
            "task": self.task,
            "seed": int(self.seed),
            "preprocessing": dict(self.preprocessing),
            "metrics": dict(self.metrics),
            "task_options": dict(self.task_options),
        }


def _tensor(a: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(np.ascontiguousarray(a, np.float32))


def save_checkpoint(ckpt: MLPCheckpoint, path: str | os.PathLike[str]) -> Path:
    """Write ``ckpt`` to ``path`` atomically."""
    import io

    import torch

    from mark1.io import atomic_write_bytes

    ckpt.validate()
    buf = io.BytesIO()
    torch.save(ckpt.to_dict(), buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike[str]) -> MLPCheckpoint:
    """Read and validate an MLP checkpoint; ``ValueError`` names what is wrong with the file."""
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "checkpoint not found", str(path))
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise ValueError(f"{path} is not a torch checkpoint (not a zip archive, or a truncated "
                         "one)")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError,
            OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{path} is not a readable torch checkpoint ({first[:120]})") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise ValueError(
            f"{path} is not a mark1-kit MLP checkpoint (format {found!r}, expected {FORMAT!r})"
        )
    if raw.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: checkpoint format version {raw.get('format_version')!r} is not supported "
            f"(this mark1-kit reads version {FORMAT_VERSION})"
        )
    try:
        ckpt = MLPCheckpoint(
            layer_sizes=[int(s) for s in raw["layer_sizes"]],
            weights=[t.detach().cpu().numpy().astype(np.float32) for t in raw["weights"]],
            biases=[t.detach().cpu().numpy().astype(np.float32) for t in raw["biases"]],
            classes=[str(c) for c in raw["classes"]],
            task=str(raw["task"]),
            seed=int(raw["seed"]),
            preprocessing=dict(raw.get("preprocessing", PREPROCESSING)),
            metrics=dict(raw.get("metrics", {})),
            task_options=dict(raw.get("task_options", {})),
        )
    except (KeyError, AttributeError, TypeError) as exc:
        raise ValueError(f"{path}: checkpoint is missing or has a malformed field ({exc})") from exc
    try:
        ckpt.validate()
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    return ckpt
