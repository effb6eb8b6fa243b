"""Multi-layer perceptrons on the retina tasks, trained by backpropagation with torch.

The input is what the Mark I's retina sees: the 20 x 20 photocell image (relative illuminance in
[0, 1]), flattened row by row to 400 values. Hidden layers use ReLU; the outputs are logits over
the task's classes. Training is deterministic for a seed on CPU: initial weights and batch order
come from a ``numpy.random.Generator`` seeded by the caller, no torch random number is drawn, and
training runs on one CPU thread (these networks are too small to gain from more, and one thread
keeps the floating-point sums, hence the weights, independent of the machine's core count).

``xor`` trains on the four noise-free XOR points (see :data:`TASK_DEFAULTS`): a network with a
hidden layer fits them all, a single layer (``hidden=()``) cannot.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from export.onnx.checkpoint import (
    LINEAR,
    PREPROCESSING,
    RELU,
    MLPCheckpoint,
    save_checkpoint,
)
from export.onnx.hyperparameters import (
    DEFAULT_TRAINING,
    TASK_DEFAULTS,
    TRAINING_FILES,
    check_training,
)
from mark1.images import N_CELLS, to_retina
from mark1.stimuli import Task, make_task


def retina_inputs(images: object, name: str = "images") -> np.ndarray:
    """The MLP input for light images: the retina image flattened, float32 (n, 400)."""
    return to_retina(images, name).reshape(-1, N_CELLS).astype(np.float32)


class Fp16Boundary(nn.Module):
    """Runs a float16 module between float32 inputs and outputs (a cast at each end)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.to(torch.float16)).to(torch.float32)


def build_module(ckpt: MLPCheckpoint, fp16: bool = False) -> nn.Module:
    """A torch module computing the checkpoint's logits, in eval mode.

    ``fp16=True``: float16 weights and arithmetic inside, float32 input and output.
    """
    if fp16:
        return Fp16Boundary(build_module(ckpt).half()).eval()
    layers: list[nn.Module] = []
    for w, b, (lo, hi) in zip(ckpt.weights, ckpt.biases, ckpt.clamps):
        lin = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.asarray(w, np.float32)))
            lin.bias.copy_(torch.from_numpy(np.asarray(b, np.float32)))
        layers.append(lin)
        if (lo, hi) == RELU:
            layers.append(nn.ReLU())
        elif (lo, hi) != LINEAR:  # ReLU-n (checked by MLPCheckpoint.validate)
            layers.append(nn.Hardtanh(lo, hi))
    return nn.Sequential(*layers).eval()


def _initial_parameters(
    sizes: list[int], rng: np.random.Generator
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """torch's default Linear initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), from ``rng``."""
    weights, biases = [], []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        bound = 1.0 / math.sqrt(n_in)
        weights.append(rng.uniform(-bound, bound, size=(n_out, n_in)).astype(np.float32))
        biases.append(rng.uniform(-bound, bound, size=n_out).astype(np.float32))
    return weights, biases


def load_task(name: str, seed: int, **options: Any) -> Task:
    """The task's data as the MLP trains on it (task defaults, then ``options``)."""
    merged = {**TASK_DEFAULTS.get(name, {}), **{k: v for k, v in options.items() if v is not None}}
    return make_task(name, seed=seed, **merged)


@contextmanager
def _one_cpu_thread() -> Iterator[None]:
    """Run torch on one CPU thread inside the block (see the module docstring)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _accuracy(module: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((module(X).argmax(dim=1) == y).double().mean())


def train_mlp(
    task: str = DEFAULT_TRAINING.task,
    hidden: tuple[int, ...] | list[int] = DEFAULT_TRAINING.hidden,
    epochs: int = DEFAULT_TRAINING.epochs,
    seed: int = 0,
    lr: float = DEFAULT_TRAINING.lr,
    batch_size: int = DEFAULT_TRAINING.batch_size,
    n_train: int | None = None,
    n_test: int | None = None,
    progress: bool = True,
    label_smoothing: float = DEFAULT_TRAINING.label_smoothing,
    **task_options: Any,
) -> MLPCheckpoint:
    """Train an MLP on a retina task with Adam and cross-entropy; return its checkpoint.

    ``label_smoothing`` (in [0, 1)) keeps the logits within a few units: without it they grow
    without bound on separable data (beyond 100 on ``letters``), where float16 resolves only
    0.06 and the fp16 export could not meet its parity bound.

    ``metrics`` of the result holds train/test accuracy, the per-epoch loss and accuracy
    curves and the wall time. Same arguments, same weights (on CPU).
    """
    from mark1.progress import progress_bar

    hidden = tuple(hidden)
    check_training(task, hidden, epochs, seed, lr, batch_size, n_train, n_test, label_smoothing,
                   **task_options)
    options = {"n_train": n_train, "n_test": n_test, **task_options}
    data = load_task(task, seed, **options)
    used_options = {**TASK_DEFAULTS.get(task, {}),
                    **{k: v for k, v in options.items() if v is not None}}
    X_train = torch.from_numpy(retina_inputs(data.X_train, "training images"))
    X_test = torch.from_numpy(retina_inputs(data.X_test, "test images"))
    y_train = torch.from_numpy(data.y_train)
    y_test = torch.from_numpy(data.y_test)
    sizes = [N_CELLS, *hidden, len(data.classes)]

    rng = np.random.default_rng([int(seed), 0x4D4C50])  # the MLP's own stream of the seed
    weights, biases = _initial_parameters(sizes, rng)
    start = MLPCheckpoint(sizes, weights, biases, list(data.classes), task, int(seed))
    module = build_module(start).train()
    optimizer = torch.optim.Adam(module.parameters(), lr=float(lr))

    losses: list[float] = []
    train_curve: list[float] = []
    test_curve: list[float] = []
    bar = progress_bar(range(int(epochs)), desc=f"train-mlp {task}", unit="epoch",
                       enabled=None if progress else False)
    t0 = time.perf_counter()
    with _one_cpu_thread():
        for _ in bar:
            order = torch.from_numpy(rng.permutation(data.n_train))
            total = 0.0
            for lo in range(0, data.n_train, int(batch_size)):
                idx = order[lo : lo + int(batch_size)]
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(module(X_train[idx]), y_train[idx],
                                                   label_smoothing=float(label_smoothing))
                loss.backward()
                optimizer.step()
                total += loss.item() * len(idx)
            module.eval()
            losses.append(total / data.n_train)
            train_curve.append(_accuracy(module, X_train, y_train))
            test_curve.append(_accuracy(module, X_test, y_test))
            module.train()
            bar.set_postfix(loss=f"{losses[-1]:.4f}", train=f"{train_curve[-1]:.3f}",
                            test=f"{test_curve[-1]:.3f}")
    wall = time.perf_counter() - t0

    linears = [m for m in module.children() if isinstance(m, nn.Linear)]
    metrics = {
        "train_accuracy": train_curve[-1],
        "test_accuracy": test_curve[-1],
        "loss_curve": losses,
        "train_accuracy_curve": train_curve,
        "test_accuracy_curve": test_curve,
        "epochs": int(epochs),
        "wall_time_s": wall,
        "n_train": data.n_train,
        "n_test": data.n_test,
        "lr": float(lr),
        "batch_size": int(batch_size),
        "label_smoothing": float(label_smoothing),
    }
    return MLPCheckpoint(
        layer_sizes=sizes,
        weights=[m.weight.detach().numpy().copy() for m in linears],
        biases=[m.bias.detach().numpy().copy() for m in linears],
        classes=list(data.classes),
        task=task,
        seed=int(seed),
        preprocessing=dict(PREPROCESSING),
        metrics=metrics,
        task_options=used_options,
    )


def training_report(ckpt: MLPCheckpoint) -> dict[str, Any]:
    """The ``report.json`` of a training run."""
    n_params = sum(int(w.size) + int(b.size) for w, b in zip(ckpt.weights, ckpt.biases))
    return {
        "task": ckpt.task,
        "seed": ckpt.seed,
        "layer_sizes": ckpt.layer_sizes,
        "hidden": ckpt.layer_sizes[1:-1],
        "classes": ckpt.classes,
        "n_parameters": n_params,
        "task_options": ckpt.task_options,
        **ckpt.metrics,
    }


def train_mlp_to_dir(out: str | os.PathLike[str], **kwargs: Any) -> dict[str, Any]:
    """Train (see :func:`train_mlp`) and write ``mlp.pt``, ``report.json``, ``training.png``.

    Every argument and the folder are checked before training (:class:`mark1.io.OutputPlan`);
    the files are written together or not at all. Returns the report.
    """
    import inspect

    from mark1.io import OutputPlan

    bound = inspect.signature(train_mlp).bind(**kwargs)
    bound.apply_defaults()
    args = dict(bound.arguments)
    task_options = args.pop("task_options", {})
    args.pop("progress", None)
    check_training(**args, **task_options)
    plan = OutputPlan()
    folder = plan.write_folder("--out", out, files=TRAINING_FILES)
    with plan:
        return train_into(plan.staged(folder), folder, **kwargs)


def train_into(stage: Path, out: Path, **kwargs: Any) -> dict[str, Any]:
    """Train (see :func:`train_mlp`) and write the run's files into the staging folder
    ``stage`` of the output folder ``out``; returns the report."""
    from export.onnx.figures import training_figure
    from mark1.io import write_json

    ckpt = train_mlp(**kwargs)
    report = training_report(ckpt)
    save_checkpoint(ckpt, stage / "mlp.pt")
    write_json(stage / "report.json", report)
    training_figure(report, stage / "training.png")
    report["files"] = {name: str(out / name) for name in TRAINING_FILES}
    return report
