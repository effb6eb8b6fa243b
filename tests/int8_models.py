"""Small models for the int8 tests: random and quickly trained MLPs and Mark I machine files.

Trained models are cached per test run (``lru_cache``), so every int8 test file shares them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from export.contract.package import Dense, Package
from export.int8.quantize import quantize_multiplier
from export.onnx.checkpoint import MLPCheckpoint
from mark1.stimuli import make_task


def random_checkpoint(rng: np.random.Generator, sizes: list[int]) -> MLPCheckpoint:
    """An MLP with random weights (scaled so activations stay in a useful range)."""
    weights = [
        rng.normal(0.0, 1.5 / np.sqrt(n_in), (n_out, n_in)).astype(np.float32)
        for n_in, n_out in zip(sizes[:-1], sizes[1:])
    ]
    biases = [rng.normal(0.0, 0.1, n).astype(np.float32) for n in sizes[1:]]
    classes = [f"c{k}" for k in range(sizes[-1])]
    return MLPCheckpoint(list(sizes), weights, biases, classes, "digits", 0)


def random_machine(
    rng: np.random.Generator, n_a: int = 48, n_r: int = 6, n_classes: int = 4
) -> dict[str, np.ndarray]:
    """Arrays of a contract-conforming Mark I machine file with random wiring and weights."""
    cell_threshold = rng.uniform(0.1, 0.7, 400)
    cell_threshold[:3] = [np.inf, -np.inf, 0.5]  # a dead cell, a cell always lit, a tie value
    plugboard = np.zeros((n_a, 400), dtype=np.int8)
    for j in range(n_a):
        for sign in (1, -1):
            cells = rng.integers(0, 400, size=6)  # repeats make +-2 connections
            np.add.at(plugboard[j], cells, sign)
    codebook = np.where(rng.random((n_classes, n_r)) < 0.5, -1, 1).astype(np.int8)
    codebook[:, 0] = np.where(np.arange(n_classes) % 2 == 0, 1, -1)
    return machine_arrays(
        cell_threshold, plugboard, rng.integers(-1, 3, n_a).astype(np.float64),
        rng.normal(0.0, 1.0, (n_r, n_a)), rng.normal(0.0, 0.5, n_r), codebook,
        [f"k{k}" for k in range(n_classes)],
    )


def machine_arrays(cell_threshold, plugboard, a_threshold, weights, r_bias, codebook, classes,
                   task: str = "digits", seed: int = 0) -> dict[str, np.ndarray]:
    return {
        "format": np.array("mark1-kit/markI"), "format_version": np.array(1),
        "cell_threshold": np.asarray(cell_threshold, np.float64),
        "plugboard": np.asarray(plugboard, np.int8),
        "a_threshold": np.asarray(a_threshold, np.float64),
        "weights": np.asarray(weights, np.float64), "r_bias": np.asarray(r_bias, np.float64),
        "codebook": np.asarray(codebook, np.int8), "classes": np.array(classes),
        "task": np.array(task), "preset": np.array("ideal"), "seed": np.array(seed),
    }


def save_machine(arrays: dict[str, np.ndarray], path: Path) -> Path:
    np.savez(path, **arrays)
    return path


@lru_cache(maxsize=4)
def task_data(name: str) -> tuple:
    t = make_task(name, seed=0)
    return (t.X_train.reshape(t.n_train, -1), t.y_train, t.X_test.reshape(t.n_test, -1),
            t.y_test, t.classes)


@lru_cache(maxsize=4)
def trained_checkpoint(name: str, hidden: int = 64, epochs: int = 150) -> MLPCheckpoint:
    """A small torch MLP trained full-batch on a task (seconds on one core)."""
    import torch

    X, y, _, _, classes = task_data(name)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(400, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, len(classes))
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
    xt, yt = torch.from_numpy(X.astype(np.float32)), torch.from_numpy(y)
    for _ in range(epochs):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xt), yt)
        loss.backward()
        opt.step()
    w = [m.weight.detach().numpy().copy() for m in model if isinstance(m, torch.nn.Linear)]
    b = [m.bias.detach().numpy().copy() for m in model if isinstance(m, torch.nn.Linear)]
    return MLPCheckpoint([400, hidden, len(classes)], w, b, list(classes), name, 0)


@lru_cache(maxsize=4)
def trained_machine(name: str, n_a: int = 512, n_r: int = 8) -> dict[str, np.ndarray]:
    """A Mark I machine whose R-layer is fitted (ridge regression) to the class codes of a task."""
    rng = np.random.default_rng(1)
    X, y, _, _, classes = task_data(name)
    base = random_machine(rng, n_a=n_a, n_r=n_r, n_classes=len(classes))
    base["cell_threshold"] = np.full(400, 0.3)
    codes = np.array([[1 if (k >> b) & 1 else -1 for b in range(n_r)]
                      for k in range(len(classes))], dtype=np.int8)
    s = X > base["cell_threshold"]
    a = (s @ base["plugboard"].T.astype(np.float64) >= base["a_threshold"]).astype(np.float64)
    design = np.hstack([a, np.ones((len(a), 1))])
    gram = design.T @ design + 3.0 * np.eye(design.shape[1])  # ridge: bounded, like pots
    sol = np.linalg.solve(gram, design.T @ codes[y].astype(np.float64))
    return machine_arrays(base["cell_threshold"], base["plugboard"], base["a_threshold"],
                          sol[:-1].T, sol[-1], codes, list(classes), task=name)


def tiny_package() -> Package:
    """One dense layer 3 -> 2 on a 3-value input: the worked example of docs/PACKAGE.md."""
    weight_scale = np.array([0.5 / 127, 0.25 / 127], dtype=np.float32)
    in_scale, out_scale = float(np.float32(1 / 255)), float(np.float32(0.01))
    pairs = [quantize_multiplier(in_scale * float(s) / out_scale) for s in weight_scale]
    layer = Dense(
        weights=np.array([[127, -64, 0], [-1, 2, 127]], dtype=np.int8),
        bias=np.array([1000, -2000], dtype=np.int32),
        multiplier=np.array([m for m, _ in pairs], dtype=np.int32),
        shift=np.array([s for _, s in pairs], dtype=np.int32),
        weight_scale=weight_scale, input_scale=in_scale, input_zero_point=-128,
        output_scale=out_scale, output_zero_point=3, relu=False,
    )
    return Package((layer,), (3,), ("yes", "no"), in_scale, -128, "mlp")
