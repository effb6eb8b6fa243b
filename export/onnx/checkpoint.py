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
``activations``     optional: the clamp ``[lo, hi]`` after each layer (see
                    :attr:`MLPCheckpoint.activations`); absent means ReLU after every layer but
                    the last
==================  =============================================================================

The same class describes models made elsewhere (an ONNX graph, a torch module, a state_dict:
:mod:`export.sources`): their input is the model's own feature vector (:data:`FEATURES`) rather
than the retina image, and ``task`` names no built-in task.
"""

from __future__ import annotations

import math
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
"""The input contract of every MLP the kit trains: the image the retina sees, flattened."""

Clamp = tuple[float, float]
"""What follows a layer: its outputs clamped to ``[lo, hi]``."""
RELU: Clamp = (0.0, math.inf)
"""ReLU: ``max(x, 0)``."""
LINEAR: Clamp = (-math.inf, math.inf)
"""No activation."""


def is_exact_clamp(clamp: Clamp) -> bool:
    """Whether the int8 engine computes ``clamp`` exactly: none, ReLU, or ReLU-n (``[0, n]``,
    whose upper end becomes the top of the layer's int8 range)."""
    lo, hi = float(clamp[0]), float(clamp[1])
    return (lo, hi) == LINEAR or (lo == 0.0 and hi > 0.0)


def features(shape: tuple[int, ...] | list[int]) -> dict[str, Any]:
    """The input contract of a model made elsewhere: its own feature vector, of ``shape``."""
    return {
        "input": "features",
        "shape": [int(d) for d in shape],
        "layout": f"row-major, flattened to {math.prod(int(d) for d in shape)} values",
        "meaning": "the model's own input features, as it was trained on them",
    }


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
    activations: list[Clamp] | None = None
    """The clamp after each layer, ``(lo, hi)``: ``(0, inf)`` is ReLU, ``(0, 6)`` ReLU6,
    ``(-inf, inf)`` no activation (:func:`is_exact_clamp`). ``None``: ReLU after every layer but
    the last (the kit's MLPs)."""

    @property
    def clamps(self) -> list[Clamp]:
        """The clamp after each layer (:attr:`activations`, or the kit's default)."""
        if self.activations is not None:
            return [(float(lo), float(hi)) for lo, hi in self.activations]
        n = len(self.weights)
        return [RELU] * (n - 1) + [LINEAR] if n else []

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input: the preprocessing's, where it holds ``layer_sizes[0]`` values,
        else the flat vector."""
        shape = tuple(int(d) for d in self.preprocessing.get("shape", ()))
        n_in = int(self.layer_sizes[0])
        return shape if shape and math.prod(shape) == n_in else (n_in,)

    @property
    def takes_retina(self) -> bool:
        """Whether the input is the 20 x 20 retina image (else the model's own features)."""
        from mark1.images import N_CELLS

        return self.preprocessing.get("input") == "retina" and int(self.layer_sizes[0]) == N_CELLS

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Float64 logits for inputs (n, n_in), in numpy (reference for parity checks)."""
        h = np.asarray(x, dtype=np.float64)
        for (w, b), (lo, hi) in zip(zip(self.weights, self.biases), self.clamps, strict=True):
            h = h @ w.astype(np.float64).T + b.astype(np.float64)
            if lo > -math.inf or hi < math.inf:
                h = np.clip(h, lo, hi)
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
        if self.activations is not None:
            if len(self.activations) != len(sizes) - 1:
                raise ValueError(f"{len(self.activations)} activations for {len(sizes) - 1} "
                                 "layers")
            for i, clamp in enumerate(self.clamps):
                if not is_exact_clamp(clamp):
                    raise ValueError(
                        f"layer {i}: clamp [{clamp[0]:g}, {clamp[1]:g}] is not one the int8 "
                        "engine runs exactly (none, ReLU [0, inf] or ReLU-n [0, n])"
                    )

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint as the plain dict ``torch.save`` writes (see the module docstring)."""
        extra: dict[str, Any] = {}
        n = len(self.weights)
        if self.clamps != [RELU] * (n - 1) + [LINEAR]:  # the default is not written
            extra["activations"] = [[float(lo), float(hi)] for lo, hi in self.clamps]
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
            **extra,
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


def clean_message(exc: BaseException, limit: int = 160) -> str:
    """The first sentence of an exception's text on one line: terminal colour codes removed,
    white space collapsed, cut at a word boundary near ``limit`` characters."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(exc))
    text = " ".join(text.split()) or type(exc).__name__
    end = re.search(r"[.:;](\s|$)", text)
    if end and end.start() > 20:
        text = text[: end.start()]
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " ..."
    return text


def is_torchscript(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a TorchScript archive (``torch.jit.save``): its zip holds compiled
    code and a ``constants.pkl`` beside the data."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    return any(n.endswith("constants.pkl") or "/code/__torch__/" in n for n in names)


def read_torch_file(path: str | os.PathLike[str], allowed: tuple[type, ...] = ()) -> Any:
    """What ``torch.save`` wrote to ``path``, read without running any of the file's code.

    ``torch.load(weights_only=True)`` rebuilds tensors and plain containers only; the classes
    in ``allowed`` (e.g. ``torch.nn.Linear``) are rebuilt too, as torch's own
    ``safe_globals`` allows. A file that pickles any other class is refused naming it, before
    anything is unpickled. ``ValueError`` names what is wrong with the file in one line.
    """
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "checkpoint not found", str(path))
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise ValueError(f"{path} is not a torch checkpoint (not a zip archive, or a truncated "
                         "one)")
    if is_torchscript(path):
        raise ValueError(f"{path} is a TorchScript archive (torch.jit.save), not a torch.save "
                         "checkpoint")
    serialization: Any = torch.serialization
    names = {f"{c.__module__}.{c.__qualname__}" for c in allowed}
    try:
        found = set(serialization.get_unsafe_globals_in_checkpoint(path))
    except AttributeError:  # torch < 2.5: torch.load below names what it refuses
        found = set()
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError,
            OSError) as exc:
        raise ValueError(f"{path} is not a readable torch checkpoint ({clean_message(exc)})"
                         ) from exc
    refused = sorted(found - names)
    if refused:
        more = f" and {len(refused) - 1} more" if len(refused) > 1 else ""
        raise ValueError(
            f"{path} pickles Python objects of class {refused[0]}{more}, which are not loaded "
            "(unpickling them could run any code): save model.state_dict(), or a "
            "torch.nn.Sequential of Linear/ReLU layers, or export to ONNX"
        )
    try:
        if allowed and hasattr(serialization, "safe_globals"):  # torch >= 2.5
            with serialization.safe_globals(list(allowed)):
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError,
            OSError, AttributeError) as exc:
        raise ValueError(f"{path} is not a readable torch checkpoint ({clean_message(exc)})"
                         ) from exc


def is_checkpoint_dict(raw: object) -> bool:
    """Whether a loaded object is the dict of a mark1-kit MLP checkpoint."""
    return isinstance(raw, dict) and raw.get("format") == FORMAT


def load_checkpoint(path: str | os.PathLike[str]) -> MLPCheckpoint:
    """Read and validate an MLP checkpoint; ``ValueError`` names what is wrong with the file."""
    raw = read_torch_file(path)
    if not is_checkpoint_dict(raw):
        found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise ValueError(
            f"{path} is not a mark1-kit MLP checkpoint (format {found!r}, expected {FORMAT!r})"
        )
    return checkpoint_from_dict(raw, path)


def checkpoint_from_dict(raw: dict[str, Any], path: str | os.PathLike[str]) -> MLPCheckpoint:
    """The checkpoint held by ``raw`` (what :func:`read_torch_file` returned), validated."""
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
            activations=[(float(lo), float(hi)) for lo, hi in raw["activations"]]
            if "activations" in raw else None,
        )
    except (KeyError, AttributeError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: checkpoint is missing or has a malformed field ({exc})") from exc
    try:
        ckpt.validate()
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    return ckpt
