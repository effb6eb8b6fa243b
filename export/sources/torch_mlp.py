"""MLPs from torch files: a whole ``nn.Sequential``, a TorchScript archive, a state_dict.

**A whole module** (``torch.save(model)``) is a pickle, and unpickling an arbitrary class runs
its code. It is read with ``torch.load(weights_only=True)`` -- torch's own restricted
unpickler, which rebuilds tensors and plain containers only -- with the module classes of
:data:`MODULES` added through torch's ``safe_globals``: ``nn.Sequential``, ``Linear``, the
activations the int8 engine runs, ``Flatten``, ``Dropout``, ``Identity``, ``BatchNorm1d`` and
the output functions. A file that pickles any other class (a user's own ``nn.Module``
subclass) is refused before anything is unpickled, naming the class (torch's
``get_unsafe_globals_in_checkpoint`` lists them). Only torch's own classes are rebuilt, so
running the module to check the reading is safe.

**A TorchScript archive** (``torch.jit.save``) is loaded with ``torch.jit.load`` (TorchScript
code, not Python; its deprecation warning is silenced). Its submodules are read by their
``original_name``, the same list as above; the module is then run, child by child, to check
the reading (:attr:`ImportedTorch.reference`).

**A state_dict** (``torch.save(model.state_dict())``, or a dict holding one under
``state_dict`` / ``model_state_dict``) names its tensors only: it is read as ``Linear`` layers in
key order (``<name>.weight`` 2-D, ``<name>.bias``) with a ReLU between consecutive layers -- the
layout of ``nn.Sequential(Linear, ReLU, ..., Linear)``; the input is the first layer's
``in_features``. Any other key is refused, naming it.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from export.onnx.checkpoint import MLPCheckpoint
from export.sources.steps import (
    Activation,
    Dense,
    Head,
    Step,
    UnsupportedModel,
    assemble,
    batch_norm,
)

SUPPORTED = ("Linear, ReLU, ReLU6, Hardtanh(0, n), BatchNorm1d after a layer, Flatten at the "
             "input, Dropout, Identity, Softmax/LogSoftmax/Sigmoid at the output")
"""What the readers take, for messages."""
STATE_DICT_KEYS = ("state_dict", "model_state_dict")
"""Keys under which a training checkpoint dict holds its model's state_dict."""


def module_classes() -> tuple[type, ...]:
    """The ``torch.nn`` classes a whole-module file may pickle (rebuilt, nothing else)."""
    from torch import nn

    return (nn.Sequential, nn.Linear, nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Flatten, nn.Identity,
            nn.Dropout, nn.BatchNorm1d, nn.Softmax, nn.LogSoftmax, nn.Sigmoid)


@dataclass
class ImportedTorch:
    """What a torch reader found."""

    mlp: MLPCheckpoint
    kind: str
    """``"torch module"``, ``"TorchScript"`` or ``"state_dict"``."""
    notes: list[str] = field(default_factory=list)
    reference: Callable[[np.ndarray], np.ndarray] | None = None
    """The module's logits (the output function left out) for inputs (n, n_in), computed by
    torch itself; ``None`` for a state_dict, which has no code."""
    producer: str = ""


def _leaves(module: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """The modules of a (nested) Sequential in order, with their dotted names."""
    kind = _kind(module)
    if kind == "Sequential":
        out: list[tuple[str, Any]] = []
        for name, child in module.named_children():
            out += _leaves(child, f"{prefix}.{name}" if prefix else name)
        return out
    return [(prefix or kind, module)]


def _kind(module: Any) -> str:
    """The torch class name of a module (TorchScript keeps it as ``original_name``)."""
    return str(getattr(module, "original_name", None) or type(module).__name__)


def _tensor(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy().astype(np.float64)


def _module_steps(root: Any) -> tuple[list[Step], list[Any]]:
    """The steps of a module tree, and the modules that compute the logits (the output
    function left out), in order."""
    steps: list[Step] = []
    body: list[Any] = []
    layers = 0
    for name, m in _leaves(root):
        kind = _kind(m)
        at = f"module {name!r} ({kind})"
        if kind == "Linear":
            w = _tensor(m.weight)
            b = _tensor(m.bias) if getattr(m, "bias", None) is not None else np.zeros(len(w))
            steps.append(Dense(w, b, at))
            layers += 1
        elif kind in ("ReLU", "ReLU6", "Hardtanh"):
            lo, hi = (0.0, math.inf) if kind == "ReLU" else (0.0, 6.0)
            if kind == "Hardtanh":
                if not (hasattr(m, "min_val") and hasattr(m, "max_val")):
                    raise UnsupportedModel(f"{at}: a traced Hardtanh keeps no limits; script "
                                           "the model (torch.jit.script) or save a state_dict")
                lo, hi = float(m.min_val), float(m.max_val)
            steps.append(Activation(lo, hi, at))
        elif kind == "BatchNorm1d":
            if getattr(m, "running_mean", None) is None:
                raise UnsupportedModel(f"{at}: keeps no running statistics")
            mean, var = _tensor(m.running_mean), _tensor(m.running_var)
            scale = _tensor(m.weight) if getattr(m, "weight", None) is not None else \
                np.ones_like(mean)
            shift = _tensor(m.bias) if getattr(m, "bias", None) is not None else \
                np.zeros_like(mean)
            steps.append(batch_norm(scale, shift, mean, var, float(m.eps), at))
        elif kind == "Flatten":
            if layers or (getattr(m, "start_dim", 1), getattr(m, "end_dim", -1)) != (1, -1):
                raise UnsupportedModel(f"{at}: only a Flatten of each input, before the first "
                                       "layer, is part of an MLP")
        elif kind in ("Dropout", "Identity"):
            pass
        elif kind in ("Softmax", "LogSoftmax", "Sigmoid"):
            steps.append(Head(kind, at))
            continue
        else:
            raise UnsupportedModel(f"{at} is not part of an MLP the int8 engine runs "
                                   f"({SUPPORTED})")
        body.append(m)
    return steps, body


def _runner(body: list[Any], n_out: int) -> Callable[[np.ndarray], np.ndarray]:
    """Logits of the modules in ``body`` run in turn (a single logit z becomes (0, z))."""
    import torch

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            h = torch.from_numpy(np.ascontiguousarray(x, np.float32).reshape(len(x), -1))
            for m in body:
                h = m(h)
            out = h.numpy().astype(np.float64)
        return np.hstack([np.zeros((len(out), 1)), out]) if n_out == 1 else out

    return run


def _from_module(root: Any, path: Path, kind: str) -> ImportedTorch:
    try:
        steps, body = _module_steps(root)
        mlp, notes = assemble(steps, _input_shape(steps), None)
    except UnsupportedModel as exc:
        raise exc.at(path) from exc
    n_out = next(s.weight.shape[0] for s in reversed(steps) if isinstance(s, Dense))
    return ImportedTorch(mlp, kind, notes, _runner(body, n_out), _torch_version())


def _input_shape(steps: list[Step]) -> tuple[int, ...]:
    first = next((s for s in steps if isinstance(s, Dense)), None)
    if first is None:
        raise UnsupportedModel("no Linear layer found")
    return (int(first.weight.shape[1]),)


def _torch_version() -> str:
    import torch

    return f"torch {torch.__version__}"


def _state_dict(raw: dict[str, Any]) -> ImportedTorch:
    import torch

    groups: dict[str, dict[str, Any]] = {}
    for key, value in raw.items():
        prefix, _, leaf = str(key).rpartition(".")
        if not isinstance(value, torch.Tensor):
            raise UnsupportedModel(f"state_dict key {key!r} holds a "
                                   f"{type(value).__name__}, not a tensor")
        if leaf not in ("weight", "bias") or (leaf == "weight" and value.ndim != 2) or (
                leaf == "bias" and value.ndim != 1):
            raise UnsupportedModel(
                f"state_dict key {key!r} (shape {tuple(value.shape)}) is not a Linear "
                "layer's weight or bias; a state_dict is read as Linear layers with ReLU "
                "between them")
        groups.setdefault(prefix, {})[leaf] = value
    steps: list[Step] = []
    for prefix, tensors in groups.items():
        if "weight" not in tensors:
            raise UnsupportedModel(f"state_dict has {prefix}.bias without {prefix}.weight")
        if steps:
            steps.append(Activation(0.0, math.inf, f"the ReLU before {prefix!r}"))
        w = _tensor(tensors["weight"])
        b = _tensor(tensors["bias"]) if "bias" in tensors else np.zeros(len(w))
        steps.append(Dense(w, b, f"layer {prefix!r}"))
    mlp, notes = assemble(steps, _input_shape(steps), None)
    notes.insert(0, "a state_dict holds no activations: ReLU assumed between its "
                 f"{len(groups)} Linear layers, none after the last")
    return ImportedTorch(mlp, "state_dict", notes, None, _torch_version())


def read_torch_mlp(path: str | os.PathLike[str], raw: Any) -> ImportedTorch:
    """The MLP in what :func:`export.onnx.checkpoint.read_torch_file` read from ``path``: a
    module or a state_dict."""
    from torch import nn

    path = Path(path)
    if isinstance(raw, nn.Module):
        return _from_module(raw.eval(), path, "torch module")
    if isinstance(raw, dict):
        inner = [raw[k] for k in STATE_DICT_KEYS if isinstance(raw.get(k), dict)]
        try:
            return _state_dict(inner[0] if inner else raw)
        except UnsupportedModel as exc:
            raise exc.at(path) from exc
    raise UnsupportedModel(f"{path} holds a {type(raw).__name__}, not a model")


def read_torchscript_mlp(path: str | os.PathLike[str]) -> ImportedTorch:
    """The MLP in a TorchScript archive, read from its submodules."""
    import torch

    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError, OSError) as exc:
            from export.onnx.checkpoint import clean_message

            raise ValueError(f"{path} is not a readable TorchScript archive "
                             f"({clean_message(exc)})") from exc
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _from_module(module, path, "TorchScript")
