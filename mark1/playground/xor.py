"""The XOR race: one layer of weights, the Mark I with its A-units, and an MLP, side by side.

The ``xor`` task lights the left half of the retina or not, the right half or not; the class
is whether exactly one half is lit. No single layer of weights on the cells can separate it
(the four corners of the square are not linearly separable). Three learners take a pass over
the same cards in the same order at each step:

* ``single layer``: the machine with its S-units wired straight to the R-units (``raw``): the
  perceptron rule on the cells; it never settles;
* ``Mark I``: the same machine with its random plugboard and A-units: on the A-units' outputs
  the classes are separable, and the rule settles;
* ``MLP``: a hidden layer learned by backpropagation (:class:`~mark1.playground.mlp.TinyMLP`).

After each pass, each learner's *decision map*: its answer on cards whose left and right
halves are lit at every pair of levels on a grid (the XOR square, with everything between).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mark1.machine import MarkI
from mark1.playground.mlp import TinyMLP
from mark1.stimuli import Task

LEARNERS = ("single layer", "Mark I", "MLP")
"""The learners, in the page's order."""

MAP_SIZE = 11
"""Levels per half on the decision maps' grid (0 to 1)."""

MAX_PASSES = 60
"""Passes after which the race stops by itself."""


def half_cards(n: int = MAP_SIZE) -> np.ndarray:
    """Cards (n * n, 400) with the left half at level ``i / (n-1)`` and the right half at
    ``j / (n-1)``, row ``i * n + j``."""
    level = np.linspace(0.0, 1.0, n)
    cards = np.empty((n, n, 20, 20))
    cards[:, :, :, :10] = level[:, None, None, None]
    cards[:, :, :, 10:] = level[None, :, None, None]
    return cards.reshape(n * n, 400)


@dataclass
class XorRace:
    """The three learners on one XOR task, pass by pass."""

    task: Task
    """The ``xor`` task."""
    machine: dict[str, Any]
    """Keyword arguments of the two machines (preset, rule, overrides, ``random_state``)."""
    seed: int
    """Seeds the MLP and the order of the cards."""
    passes: int = 0
    """Passes run."""
    mistakes: dict[str, list[int]] = field(default_factory=dict)
    """Mistakes of each learner in each pass."""
    accuracy: dict[str, float] = field(default_factory=dict)
    """Each learner's accuracy on the task's test cards after the last pass."""
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    """Each learner's decision map after the last pass: the probability-like score of class 1
    (0 to 1) on :func:`half_cards`."""

    def __post_init__(self) -> None:
        self.raw = MarkI(raw=True, shuffle=False, **self.machine)
        self.mark1 = MarkI(shuffle=False, **self.machine)
        self.mlp = TinyMLP(400, rng=np.random.default_rng(self.seed))
        self._order = np.random.default_rng([self.seed, 1])
        self._grid = half_cards()
        self.mistakes = {name: [] for name in LEARNERS}

    def step(self) -> None:
        """One pass of every learner over the training cards (the same order for all three)."""
        task = self.task
        order = self._order.permutation(task.n_train)
        X, y = task.X_train.reshape(task.n_train, -1)[order], task.y_train[order]
        for name, model in (("single layer", self.raw), ("Mark I", self.mark1)):
            model.partial_fit(X, y, classes=np.arange(len(task.classes)))
            self.mistakes[name].append(int(model.mistakes_per_epoch_[-1]))
            self.accuracy[name] = float(model.score(task.X_test, task.y_test))
            score = model.decision_function(self._grid)
            self.maps[name] = 1.0 / (1.0 + np.exp(-np.clip(score * 4.0 / (np.abs(score).max()
                                                                            or 1.0), -30, 30)))
        self.mistakes["MLP"].append(self.mlp.train_pass(X, y, np.arange(len(y))))
        X_test = task.X_test.reshape(task.n_test, -1)
        self.accuracy["MLP"] = float((self.mlp.predict(X_test) == task.y_test).mean())
        self.maps["MLP"] = self.mlp.probability(self._grid)
        self.passes += 1

    @property
    def done(self) -> bool:
        """The race has run :data:`MAX_PASSES` passes."""
        return self.passes >= MAX_PASSES
