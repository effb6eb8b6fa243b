"""The steps every model reader produces, and the one place they become an MLP.

A reader (ONNX, torch) walks its model from the input to the output and emits, in order,
:class:`Dense` layers, the :class:`Clamp` after a layer (ReLU, ReLU-n), per-feature
:class:`Affine` maps (an input normalisation before the first layer, a BatchNormalization
after a layer) and at most one :class:`Head` (Softmax, LogSoftmax, Sigmoid: dropped, since the
class is the argmax of the logits either way). :func:`assemble` folds the affine maps into the
neighbouring layer, checks that the int8 engine computes every step exactly, and returns an
:class:`~export.onnx.checkpoint.MLPCheckpoint` whose input is the model's own features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from export.onnx.checkpoint import LINEAR, RELU, Clamp, MLPCheckpoint, features, is_exact_clamp

MAX_LAYERS = 16
"""Most dense layers a weight package holds (``export.contract.package.MAX_LAYERS``)."""


class UnsupportedModel(ValueError):
    """A model with a part the int8 engine cannot run exactly (named in the message)."""

    def at(self, path: object) -> UnsupportedModel:
        """The same error, its message starting with the file it is about."""
        return UnsupportedModel(f"{path}: {self}")


@dataclass(frozen=True)
class Dense:
    """``y = weight @ x + bias``."""

    weight: np.ndarray
    """float64 (n_out, n_in)."""
    bias: np.ndarray
    """float64 (n_out,)."""
    where: str
    """The part of the model it came from (a node or module name), for messages."""


@dataclass(frozen=True)
class Activation:
    """``y = clip(x, lo, hi)`` after a layer: (0, inf) ReLU, (0, 6) ReLU6."""

    lo: float
    hi: float
    where: str


@dataclass(frozen=True)
class Affine:
    """``y = scale * x + shift`` per feature (scalars broadcast)."""

    scale: np.ndarray
    shift: np.ndarray
    where: str


@dataclass(frozen=True)
class Head:
    """An output function that keeps the argmax (Softmax, LogSoftmax, Sigmoid): dropped."""

    op: str
    where: str


Step = Dense | Activation | Affine | Head


def batch_norm(scale: np.ndarray, bias: np.ndarray, mean: np.ndarray, var: np.ndarray,
               eps: float, where: str) -> Affine:
    """BatchNormalization in inference, ``scale * (x - mean) / sqrt(var + eps) + bias``, as an
    affine map."""
    s = np.asarray(scale, np.float64) / np.sqrt(np.asarray(var, np.float64) + float(eps))
    return Affine(s, np.asarray(bias, np.float64) - s * np.asarray(mean, np.float64), where)


def _per_feature(values: np.ndarray, n: int, what: str, where: str) -> np.ndarray:
    v = np.asarray(values, np.float64).ravel()
    if v.size == 1:
        return np.full(n, float(v[0]))
    if v.size != n:
        raise UnsupportedModel(f"{where}: {what} has {v.size} values for {n} features")
    return v


def assemble(steps: list[Step], input_shape: tuple[int, ...], classes: list[str] | None
             ) -> tuple[MLPCheckpoint, list[str]]:
    """The MLP the steps compute, and notes on what was folded or dropped.

    ``classes``: the model's class labels (``None``: ``"0"``, ``"1"``, ...). A model with a
    single output is a binary classifier (class 1 where the logit is above 0, as a Sigmoid
    above 0.5): it becomes two outputs, the logit and a constant 0. Raises
    :class:`UnsupportedModel` naming the step the int8 engine cannot run exactly.
    """
    notes: list[str] = []
    n_in = math.prod(input_shape)
    weights: list[np.ndarray] = []
    biases: list[np.ndarray] = []
    clamps: list[Clamp] = []
    pending: Affine | None = None  # an affine map waiting for the next layer (input side)
    head: Head | None = None
    width = n_in
    for step in steps:
        if head is not None:
            raise UnsupportedModel(f"{step.where}: a step after the output function {head.op}")
        if isinstance(step, Dense):
            w, b = np.asarray(step.weight, np.float64), np.asarray(step.bias, np.float64)
            if w.ndim != 2 or w.shape[1] != width or b.shape != (w.shape[0],):
                raise UnsupportedModel(
                    f"{step.where}: a layer of weight {w.shape} and bias {b.shape} on "
                    f"{width} inputs")
            if pending is not None:  # W (s x + c) + b = (W s) x + (W c + b)
                s = _per_feature(pending.scale, width, "the scale", pending.where)
                c = _per_feature(pending.shift, width, "the shift", pending.where)
                w, b = w * s[None, :], b + w @ c
                notes.append(f"{pending.where}: the per-feature affine map at the input is "
                             "folded into the first layer")
                pending = None
            weights.append(w)
            biases.append(b)
            clamps.append(LINEAR)
            width = w.shape[0]
        elif isinstance(step, Affine):
            if not weights:
                if pending is None:
                    pending = step
                else:  # two maps in a row: s2 (s1 x + c1) + c2
                    s1 = _per_feature(pending.scale, width, "the scale", pending.where)
                    c1 = _per_feature(pending.shift, width, "the shift", pending.where)
                    s2 = _per_feature(step.scale, width, "the scale", step.where)
                    c2 = _per_feature(step.shift, width, "the shift", step.where)
                    pending = Affine(s1 * s2, s2 * c1 + c2, pending.where)
                continue
            if clamps[-1] != LINEAR:
                raise UnsupportedModel(
                    f"{step.where}: a per-feature affine map (e.g. BatchNormalization) after an "
                    "activation cannot be folded into the layer before it")
            s = _per_feature(step.scale, width, "the scale", step.where)
            c = _per_feature(step.shift, width, "the shift", step.where)
            weights[-1] = weights[-1] * s[:, None]
            biases[-1] = biases[-1] * s + c
            if (s != 1.0).any():  # a bias added after a MatMul is no news
                notes.append(f"{step.where}: folded into the layer before it")
        elif isinstance(step, Activation):
            if not weights:
                raise UnsupportedModel(f"{step.where}: an activation before the first layer")
            lo, hi = clamps[-1]
            clamps[-1] = (max(lo, step.lo), min(hi, step.hi))
            if not is_exact_clamp(clamps[-1]):
                raise UnsupportedModel(
                    f"{step.where}: clip to [{step.lo:g}, {step.hi:g}] is not exact in int8 "
                    "(the engine clamps at 0 (ReLU) and at the top of a layer's range (ReLU-n))")
        else:
            head = step
    if not weights:
        raise UnsupportedModel("no Gemm, MatMul or Linear layer found")
    if pending is not None:
        raise UnsupportedModel(f"{pending.where}: an affine map after the last layer")
    if len(weights) > MAX_LAYERS:
        raise UnsupportedModel(f"{len(weights)} layers; a weight package holds at most "
                               f"{MAX_LAYERS}")
    if head is not None:
        notes.append(f"{head.where}: {head.op} at the output dropped: the class is the argmax of "
                     "the logits either way")
    if weights[-1].shape[0] == 1:
        if clamps[-1] != LINEAR:
            raise UnsupportedModel("a single output with an activation after it")
        weights[-1] = np.vstack([np.zeros_like(weights[-1]), weights[-1]])
        biases[-1] = np.concatenate([[0.0], biases[-1]])
        notes.append("one output: a binary classifier, class 1 where the logit is above 0 "
                     "(outputs become (0, logit))")
    n_out = weights[-1].shape[0]
    names = [str(c) for c in classes] if classes is not None else [str(k) for k in range(n_out)]
    if len(names) != n_out:
        raise UnsupportedModel(f"{len(names)} class labels for {n_out} outputs")
    sizes = [n_in] + [w.shape[0] for w in weights]
    ckpt = MLPCheckpoint(
        layer_sizes=sizes,
        weights=[w.astype(np.float32) for w in weights],
        biases=[b.astype(np.float32) for b in biases],
        classes=names, task="", seed=0, preprocessing=features(input_shape),
        activations=None if clamps == [RELU] * (len(clamps) - 1) + [LINEAR] else clamps,
    )
    try:
        ckpt.validate()
    except ValueError as exc:
        raise UnsupportedModel(str(exc)) from exc
    return ckpt, notes
