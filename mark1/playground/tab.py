"""One browser tab's machine: a Mark I, its task, its schedule of cards, its curves.

:class:`Tab` is everything the page shows, without the web server: the server turns the page's
commands into calls here and sends :meth:`Tab.frame` back. The machine learns trial by trial
(:func:`mark1.playground.trial.one_trial`), the cards of the task's training set in a fresh
order each pass; its test accuracy is measured on the task's test cards by the machine's own
static path (:class:`HeldOut`, equal to :meth:`MarkI.score`).
"""

from __future__ import annotations

import functools
import inspect
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mark1.machine import MarkI
from mark1.playground import protocol
from mark1.playground.trial import Trial, look, one_trial, read_pots
from mark1.playground.xor import XorRace
from mark1.presets import get_preset
from mark1.r_units import decode
from mark1.stimuli import Task, make_task

TASK_SEED = 0
"""Every tab's cards come from this seed: a classroom sees the same cards."""


@functools.lru_cache(maxsize=16)
def task_cards(name: str) -> Task:
    """The task ``name`` (seed :data:`TASK_SEED`), made once per server."""
    return make_task(name, seed=TASK_SEED)


class HeldOut:
    """The test cards of a task as the machine's static path sees them, for a fast accuracy.

    The S-units of the rested retina and the A-units they fire do not change while the machine
    learns: they are computed once, and each accuracy is one product with the pots as read
    (the machine file's decision rule, :func:`mark1.machine.static_sums`).
    """

    def __init__(self, machine: MarkI, task: Task) -> None:
        x = task.X_test.reshape(task.n_test, -1)
        self.a = machine.plugboard_.respond(machine.retina_.respond_static(x)).astype(np.float64)
        self.y = np.array(task.classes)[task.y_test]

    def accuracy(self, machine: MarkI) -> float:
        """Share of the test cards the machine classifies right (as :meth:`MarkI.score`)."""
        r = self.a @ machine.coef_.T + machine.intercept_
        return float((machine.classes_[decode(machine.codebook_, r)] == self.y).mean())


class Curve:
    """Learning-curve points ``(trial, mistakes so far, machine time s, test accuracy)``, at
    most :attr:`SIZE`: when full, every other point is dropped and points are kept half as
    often (the curve keeps its shape, the memory stays bounded)."""

    SIZE = 2048

    def __init__(self) -> None:
        self.points: list[tuple[int, int, float, float]] = []
        self.every = 1
        self._due = 0

    def add(self, trial: int, mistakes: int, time_s: float, accuracy: float,
            force: bool = False) -> None:
        if trial < self._due and not force:
            return
        self.points.append((trial, mistakes, time_s, accuracy))
        if len(self.points) >= self.SIZE:
            self.points = self.points[::2]
            self.every *= 2
        self._due = trial + self.every

    def arrays(self) -> dict[str, np.ndarray]:
        pts = np.array(self.points, dtype=np.float64).reshape(-1, 4)
        return {"trial": pts[:, 0], "mistakes": pts[:, 1], "machine_time_s": pts[:, 2],
                "test_accuracy": pts[:, 3]}


CONSTRUCTOR = frozenset(inspect.signature(MarkI).parameters)
""":class:`MarkI`'s constructor parameters: a slider of one of them (``n_a``) is passed by name,
every other slider is a physical parameter of the preset, passed in ``machine=``."""


@dataclass
class Settings:
    """What the tab's machine is: task, preset, rule, parameter overrides and seed."""

    task: str = "e-f"
    preset: str = "cds-1960"
    rule: str = "error-correction"
    seed: int = 1
    overrides: dict[str, float] | None = None

    def machine_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`MarkI` for this machine."""
        kwargs: dict[str, Any] = {"preset": self.preset, "rule": self.rule,
                                  "random_state": self.seed}
        machine: dict[str, Any] = {}
        for name, value in (self.overrides or {}).items():
            value = int(value) if protocol.SLIDERS[name].whole else value
            if name in CONSTRUCTOR:
                kwargs[name] = value
            else:  # a physical parameter of the preset
                machine[name] = value
        if machine:
            kwargs["machine"] = machine
        return kwargs


class Tab:
    """One tab's machine and what the page shows of it."""

    def __init__(self, settings: Settings | None = None, task: Task | None = None) -> None:
        self.settings = settings or Settings()
        self.task = task or task_cards(self.settings.task)
        self.drawing = np.zeros(protocol.N_CELLS)
        """The card on the page's retina (drawn, or picked from the task)."""
        self.card_index: int | None = None
        """The task card the drawing was picked from (``None``: drawn)."""
        self.xor: XorRace | None = None
        self.rebuild()

    # ------------------------------------------------------------------ the machine
    def rebuild(self) -> None:
        """A new machine for the settings (wired at its first trial), with empty curves."""
        self.machine = MarkI(**self.settings.machine_kwargs())
        self._order = np.random.default_rng([self.settings.seed, 2])
        self.pass_order = self._order.permutation(self.task.n_train)
        self.pass_pos = 0
        self.passes = 0
        self.trials = 0
        self.mistakes = 0
        self.pass_mistakes: list[int] = []
        self.mistakes_this_pass = 0
        self.last: Trial | None = None
        """The last trial (or look)."""
        self.last_correction: Trial | None = None
        """The last trial on which pots were turned."""
        self.test_accuracy = math.nan
        self.tested_at = -1
        self._test_cards: HeldOut | None = None
        self.curve = Curve()

    @property
    def names(self) -> np.ndarray:
        """The task's class names, in the task's order (the machine is taught names)."""
        return np.array(self.task.classes)

    def class_index(self, machine_index: int | None) -> int | None:
        """The task's index of a class given as an index into the machine's ``classes_``."""
        if machine_index is None:
            return None
        return self.task.classes.index(str(self.machine.classes_[machine_index]))

    @property
    def wired(self) -> bool:
        """The machine has been built (at its first trial)."""
        return hasattr(self.machine, "classes_")

    def configure(self, **changes: Any) -> None:
        """Change settings (``task``, ``preset``, ``rule``, ``seed``, or a slider by name) and
        rebuild. The task must be given as a :class:`Task` (made beforehand: it can be slow)."""
        settings = Settings(**{**vars(self.settings),
                               "overrides": dict(self.settings.overrides or {})})
        task = changes.pop("task", None)
        for key, value in changes.items():
            if key in protocol.SLIDERS:
                _check_slider(key, value)
                assert settings.overrides is not None
                settings.overrides[key] = value
            elif key in ("preset", "rule", "seed"):
                setattr(settings, key, value)
                if key == "preset":
                    settings.overrides = {}
            else:
                raise ValueError(f"unknown setting {key!r}")
        if task is not None:
            settings.task = task.name
        MarkI(**settings.machine_kwargs()).machine_preset()  # refuse a bad machine here
        self.settings = settings
        if task is not None:
            self.task = task
            self.card_index = None
        self.xor = None
        self.rebuild()

    def parameters(self) -> dict[str, float]:
        """The sliders' values for this machine (the preset's, or as overridden)."""
        preset = get_preset(self.settings.preset).parameters()
        preset["n_a"] = MarkI().n_a
        values = {name: float(preset[name]) for name in protocol.SLIDERS}
        values.update(self.settings.overrides or {})
        return values

    # ------------------------------------------------------------------ trials
    def step(self, n: int = 1) -> int:
        """Run ``n`` trials (the next cards of the pass, a new order each pass); return the
        trials run."""
        names = self.names
        for _ in range(n):
            i = int(self.pass_order[self.pass_pos])
            trial = one_trial(self.machine, self.task.X_train[i], names[self.task.y_train[i]],
                              names)
            self._record(trial, i)
            self.pass_pos += 1
            if self.pass_pos == len(self.pass_order):
                self._end_pass()
        return n

    def trials_left_in_pass(self) -> int:
        """Trials until the end of the current pass."""
        return len(self.pass_order) - self.pass_pos

    def _record(self, trial: Trial, index: int | None) -> None:
        self.trials += 1
        self.mistakes += trial.mistake
        self.mistakes_this_pass += trial.mistake
        self.last = trial
        self.card_index = index
        if trial.motors.any():
            self.last_correction = trial
        self.curve.add(self.trials, self.mistakes, trial.machine_time_s, self.test_accuracy)

    def _end_pass(self) -> None:
        self.passes += 1
        self.pass_mistakes.append(self.mistakes_this_pass)
        self.mistakes_this_pass = 0
        self.pass_pos = 0
        self.pass_order = self._order.permutation(self.task.n_train)
        self.test()

    def test(self) -> float:
        """Measure the test accuracy now (NaN before the machine is wired)."""
        if not self.wired:
            return math.nan
        if self._test_cards is None:
            self._test_cards = HeldOut(self.machine, self.task)
        if self.tested_at != self.trials:
            self.test_accuracy = self._test_cards.accuracy(self.machine)
            self.tested_at = self.trials
            self.curve.add(self.trials, self.mistakes, self.machine.machine_time_s,
                           self.test_accuracy, force=True)
        return self.test_accuracy

    # ------------------------------------------------------------------ the page's card
    def pick(self, index: int | str, rng: np.random.Generator | None = None) -> None:
        """Put a training card on the page's retina: by number, ``next`` or ``random``."""
        n = self.task.n_train
        if index == "random":
            k = int((rng or np.random.default_rng()).integers(n))
        elif index == "next":
            k = 0 if self.card_index is None else (self.card_index + 1) % n
        else:
            if not isinstance(index, int) or not 0 <= index < n:
                raise ValueError(f"card: index must be in [0, {n}) for task "
                                 f"{self.task.name!r}; got {index!r}")
            k = index
        self.drawing = self.task.X_train[k].reshape(-1).copy()
        self.card_index = k

    def draw(self, cells: np.ndarray) -> None:
        """Put a drawing (400 cells of relative light) on the page's retina."""
        self.drawing = np.asarray(cells, dtype=np.float64).reshape(protocol.N_CELLS).copy()
        self.card_index = None

    def teach(self, label: int) -> Trial:
        """Train the machine once on the page's card as class ``label`` (one trial)."""
        if not 0 <= label < len(self.task.classes):
            raise ValueError(f"teach: label must be a class of task {self.task.name!r}, "
                             f"0 to {len(self.task.classes) - 1}; got {label}")
        trial = one_trial(self.machine, self.drawing, self.names[label], self.names)
        self._record(trial, self.card_index)
        return trial

    def look(self) -> Trial:
        """Show the page's card to the machine without teaching it; its answer."""
        if not self.wired:
            raise ValueError("look: the machine is wired at its first trial; run a trial "
                             "(or teach it a card) first")
        self.last = look(self.machine, self.drawing)
        return self.last

    # ------------------------------------------------------------------ XOR
    def xor_race(self) -> XorRace:
        """The tab's XOR race (made on first use, with the tab's machine settings)."""
        if self.xor is None:
            self.xor = XorRace(task_cards("xor"), self.settings.machine_kwargs(),
                               self.settings.seed)
        return self.xor

    # ------------------------------------------------------------------ what the page shows
    def frame(self) -> dict[str, Any]:
        """The machine as it is now, for the page (JSON-ready; arrays in base64)."""
        task = self.task
        out: dict[str, Any] = {
            "type": "frame", "wired": self.wired, "task": task.name,
            "classes": list(task.classes), "n_train": task.n_train,
            "settings": {"preset": self.settings.preset, "rule": self.settings.rule,
                         "seed": self.settings.seed, "parameters": self.parameters()},
            "trial": self.trials, "pass": self.passes, "pass_pos": self.pass_pos,
            "mistakes": self.mistakes, "pass_mistakes": self.pass_mistakes[-50:],
            "mistakes_this_pass": self.mistakes_this_pass,
            "test_accuracy": None if math.isnan(self.test_accuracy) else self.test_accuracy,
            "tested_at": self.tested_at,
            "machine_time_s": self.machine.machine_time_s if self.wired else 0.0,
            "motor_steps": self.machine.motor_steps if self.wired else 0,
            "drawing": protocol.levels(self.drawing, 0.0, 1.0), "card_index": self.card_index,
        }
        if self.last is not None:
            out["last"] = self._trial(self.last)
        if self.wired:
            pots = read_pots(self.machine)
            lo, hi = _pot_range(self.machine, pots)
            out["pots"] = {"shape": list(pots.shape), "lo": lo, "hi": hi,
                           "values": protocol.levels(pots, lo, hi),
                           "trained": self.machine.units_.tolist()}
            fix = self.last_correction
            if fix is not None and fix.motors.shape == pots.shape:
                out["pots"]["motors"] = protocol.bits(fix.motors)
                out["pots"]["moved"] = protocol.bits(fix.moved)
                out["pots"]["correction_trial"] = self.trials if fix is self.last else None
        return out

    def _trial(self, trial: Trial) -> dict[str, Any]:
        codebook = self.machine.codebook_
        return {
            "label": self.class_index(trial.label), "answer": self.class_index(trial.answer),
            "mistake": trial.mistake,
            "light": protocol.levels(trial.card, 0.0, 1.0),
            "cells": protocol.levels(np.log2(np.clip(trial.cells, 1 / 16, 16)), -4.0, 4.0),
            "s": protocol.bits(trial.s), "a": protocol.bits(trial.a), "n_a": int(len(trial.a)),
            "sums_before": [None if math.isnan(v) else round(float(v), 4)
                            for v in trial.sums_before],
            "sums_after": [round(float(v), 4) for v in trial.sums_after],
            "answer_after": self.class_index(int(decode(codebook, trial.sums_after[None, :])[0])),
            "target": None if trial.label is None else codebook[trial.label].tolist(),
            "motor_steps": trial.motor_steps, "learned": trial.label is not None,
            "turned": np.flatnonzero(trial.motors.any(axis=1)).tolist(),
            "n_motors": int(trial.motors.sum()), "n_moved": int(trial.moved.sum()),
        }

    # ------------------------------------------------------------------ saving
    def save_machine(self, path: str | os.PathLike[str]) -> Path:
        """Write the machine file (``machine.npz``, :meth:`MarkI.save`)."""
        if not self.wired:
            raise ValueError("the machine is wired at its first trial: run a trial first")
        return self.machine.save(path, task=self.task.name)

    def figure_data(self) -> dict[str, Any]:
        """A copy of what the figures are drawn from (safe to draw in another thread)."""
        data: dict[str, Any] = {"curve": self.curve.arrays(), "task": self.task.name,
                                "preset": self.settings.preset, "trials": self.trials,
                                "pass_mistakes": list(self.pass_mistakes), "n_train":
                                self.task.n_train}
        if self.wired:
            data["pots"] = read_pots(self.machine)
            data["trained"] = self.machine.units_.copy()
            data["machine_time_s"] = self.machine.machine_time_s
        return data


def _check_slider(name: str, value: float) -> None:
    slider = protocol.SLIDERS[name]
    if not slider.low <= value <= slider.high or (slider.whole and value != int(value)):
        kind = "a whole number" if slider.whole else "a number"
        raise ValueError(f"param: {name} must be {kind} in [{slider.low:g}, {slider.high:g}] "
                         f"({slider.unit}); got {value!r}")


def _pot_range(machine: MarkI, pots: np.ndarray) -> tuple[float, float]:
    """The panel's scale: the end stops, or (exact pots) the largest weight either way."""
    spec = machine.pots_.spec
    if math.isfinite(spec.w_min) and math.isfinite(spec.w_max):
        return float(spec.w_min), float(spec.w_max)
    top = float(np.abs(pots).max(initial=0.0)) or 1.0
    return -top, top
