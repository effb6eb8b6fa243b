"""The user's own inputs and labels (``--calib-data X.npy``, ``--eval-data X.npy y.npy``).

Arrays are read with ``numpy.load(allow_pickle=False)``. Inputs are checked against the model:

* a model on the retina takes light images as everywhere in the kit: (n, 400) rows or
  (n, h, w) images of relative illuminance in [0, 1], projected onto the 20 x 20 grid;
* any other model takes its own features: ``n`` inputs of ``n_in`` values each, shaped
  (n, n_in), (n, *input_shape) or any (n, ...) holding ``n_in`` values per input (flattened row
  by row, as a Flatten at the model's input does); a single input may drop the first axis.

Labels are a 1-D array, one per input: the model's class labels (``"7"``, ``"cat"``) or class
indices 0 .. n_classes - 1.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from export.onnx.checkpoint import MLPCheckpoint


def read_array(path: str | os.PathLike[str], what: str) -> np.ndarray:
    """The array in a ``.npy`` file; ``ValueError`` naming the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, f"{what} not found", str(path))
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{what} {path} is not a readable .npy array ({first})") from exc
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{what} {path} is an archive of several arrays; give one .npy array")
    return arr


def model_inputs(X: np.ndarray, mlp: MLPCheckpoint, what: str) -> np.ndarray:
    """``X`` as the model's float64 inputs (n, n_in); ``ValueError``/``TypeError`` naming the
    shape or values that do not fit."""
    from mark1.images import N_CELLS, to_retina

    if mlp.takes_retina:
        return to_retina(X, what).reshape(-1, N_CELLS)
    return feature_rows(X, mlp.input_shape, what)


def feature_rows(X: object, input_shape: tuple[int, ...], what: str) -> np.ndarray:
    """Inputs of ``input_shape`` (any layout holding as many values each) as float64 rows."""
    arr = np.asarray(X)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)
                                   or arr.dtype == np.bool_):
        raise TypeError(f"{what} must hold numbers; got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{what} must hold real numbers; got dtype {arr.dtype}")
    n_in = math.prod(input_shape)
    if arr.ndim >= 1 and arr.size == n_in and (arr.ndim == 1 or arr.shape == input_shape):
        arr = arr.reshape(1, n_in)  # one input without the batch axis
    per_item = math.prod(arr.shape[1:]) if arr.ndim >= 2 else 0
    if arr.ndim < 2 or per_item != n_in:
        shapes = f"(n, {n_in})" + (f" or (n, {', '.join(map(str, input_shape))})"
                                   if len(input_shape) > 1 else "")
        raise ValueError(f"{what} has shape {arr.shape}: the model takes {n_in} values per "
                         f"input; give {shapes}")
    if arr.shape[0] == 0:
        raise ValueError(f"{what} is empty: at least one input is needed")
    rows = arr.reshape(arr.shape[0], n_in).astype(np.float64)
    if not np.isfinite(rows).all():
        idx = int(np.argwhere(~np.isfinite(rows))[0][0])
        raise ValueError(f"{what} contains NaN or infinity (first in input {idx})")
    return rows


def class_indices(y: np.ndarray, classes: list[str] | tuple[str, ...], n: int, what: str
                  ) -> np.ndarray:
    """Labels ``y`` as class indices: each must be a class label of the model or an index
    0 .. n_classes - 1; ``n`` labels, one per input."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"{what} has shape {y.shape}; expected ({n},): one label per input")
    names = {str(c): k for k, c in enumerate(classes)}
    as_text = [str(v.item() if isinstance(v, np.generic) else v) for v in y]
    if all(t in names for t in as_text):
        return np.array([names[t] for t in as_text], dtype=np.int64)
    if np.issubdtype(y.dtype, np.integer) and y.size and 0 <= y.min() and y.max() < len(classes):
        return y.astype(np.int64)
    bad = next(t for t in as_text if t not in names)
    shown = ", ".join(list(names)[:8]) + (", ..." if len(names) > 8 else "")
    raise ValueError(f"{what} holds the label {bad!r}, which is not a class of the model "
                     f"({shown}) nor a class index 0..{len(classes) - 1}")
