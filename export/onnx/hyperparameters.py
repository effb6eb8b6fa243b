"""How an MLP is trained unless told otherwise: one definition, read by ``train_mlp`` and by
``mark1 train-mlp`` (standard library only, so the CLI shows the defaults without torch)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MLPTraining:
    """Hyperparameters of an MLP training run (Adam on the cross-entropy)."""

    task: str = "digits"
    """Retina task to train on (``mark1.stimuli.TASKS``)."""
    hidden: tuple[int, ...] = (64, 32)
    """Units of each hidden layer (ReLU); empty for a single layer."""
    epochs: int = 30
    """Passes over the training images."""
    lr: float = 3e-3
    """Adam learning rate."""
    batch_size: int = 32
    """Images per minibatch."""
    label_smoothing: float = 0.1
    """Label smoothing of the cross-entropy, in [0, 1): keeps the logits small enough for an
    fp16 export."""


DEFAULT_TRAINING = MLPTraining()
