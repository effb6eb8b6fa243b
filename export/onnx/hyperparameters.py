"""How an MLP is trained unless told otherwise, the range of every number and the checks of a
run: one definition, read by ``train_mlp`` and by ``mark1 train-mlp`` (no torch here, so the CLI
shows the defaults and checks a run without it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mark1.images import N_CELLS
from mark1.limits import SEED, check_fields, check_memory, check_table, limit
from mark1.stimuli import TASK_LIMITS, TASKS, task_classes, task_sizes

MAX_HIDDEN_LAYERS = 16
"""Most hidden layers a network may have."""


@dataclass(frozen=True)
class MLPTraining:
    """Hyperparameters of an MLP training run (Adam on the cross-entropy)."""

    task: str = "digits"
    """Retina task to train on (``mark1.stimuli.TASKS``)."""
    hidden: tuple[int, ...] = field(default=(64, 32), metadata=limit(
        1, 65536, "units per layer", integer=True))
    """Units of each hidden layer (ReLU); empty for a single layer."""
    epochs: int = field(default=30, metadata=limit(1, 1_000_000, "passes", integer=True))
    """Passes over the training images."""
    lr: float = field(default=3e-3, metadata=limit(0, 10, open_lo=True))
    """Adam learning rate."""
    batch_size: int = field(default=32, metadata=limit(1, 1_000_000, "images", integer=True))
    """Images per minibatch."""
    label_smoothing: float = field(default=0.1, metadata=limit(0, 1, open_hi=True))
    """Label smoothing of the cross-entropy, in [0, 1): keeps the logits small enough for an
    fp16 export."""

    def __post_init__(self) -> None:
        if not isinstance(self.hidden, tuple):
            raise TypeError(f"hidden must be a tuple of layer sizes; got {self.hidden!r}")
        if len(self.hidden) > MAX_HIDDEN_LAYERS:
            raise ValueError(f"{len(self.hidden)} hidden layers; allowed at most "
                             f"{MAX_HIDDEN_LAYERS}")
        check_fields(self)


DEFAULT_TRAINING = MLPTraining()

TASK_DEFAULTS: dict[str, dict[str, Any]] = {"xor": {"n_train": 4, "noise": 0.0}}
"""``make_task`` arguments a task trains with unless the caller overrides them."""
TRAINING_FILES = ("mlp.pt", "report.json", "training.png")
"""What a training run writes into its folder."""


def layer_sizes(hidden: tuple[int, ...], n_classes: int) -> list[int]:
    """Widths of every layer, the retina's inputs first."""
    return [N_CELLS, *hidden, n_classes]


def training_memory_bytes(sizes: list[int], n_images: int) -> int:
    """Upper estimate of the memory training a network of ``sizes`` on ``n_images`` images
    takes, in bytes: per parameter its float32 value, gradient and two Adam moments plus the
    copies of the checkpoint; per image its inputs and every layer's activations when the
    accuracy is measured over the whole set."""
    params = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))
    return 32 * params + int(n_images) * (12 * sizes[0] + 8 * sum(sizes[1:]))


def check_training(task: str, hidden: tuple[int, ...], epochs: int, seed: int, lr: float,
                   batch_size: int, n_train: int | None, n_test: int | None,
                   label_smoothing: float, **task_options: Any) -> None:
    """Every check of a training run's arguments, the memory it needs included, made before
    any work and without torch (``ValueError``/``TypeError`` naming the value and what is
    allowed)."""
    MLPTraining(task, tuple(hidden), epochs, lr, batch_size, label_smoothing)
    SEED.check("seed", seed)
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; allowed: {', '.join(TASKS)}")
    given = {"n_train": n_train, "n_test": n_test, **task_options}
    merged = {**TASK_DEFAULTS.get(task, {}), **{k: v for k, v in given.items() if v is not None}}
    check_table(TASK_LIMITS, {"n_train": merged.get("n_train"), "n_test": merged.get("n_test")})
    n_tr, n_te = task_sizes(task, merged.get("n_train"), merged.get("n_test"))
    sizes = layer_sizes(tuple(hidden), len(task_classes(task)))
    check_memory(f"train-mlp of layers {'-'.join(map(str, sizes))} on {n_tr + n_te:,} images",
                 training_memory_bytes(sizes, n_tr + n_te),
                 "use narrower layers (--hidden) or fewer images")
