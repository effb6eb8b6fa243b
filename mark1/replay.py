"""Rosenblatt's reported experiments, rerun on the simulated machine beside his figures.

Each experiment names the reported figure and its source (some figures come from Rosenblatt's
IBM 704 simulations of the perceptron design rather than from the Mark I itself), how we
measure ours, and runs it on the ``ideal`` machine and on the ``cds-1960`` Mark I with the
stated number of A-units and training images. Everything is seeded.

``quick=True`` runs smaller versions (fewer images, fewer seeds) for tests and a first look.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from mark1.machine import MarkI
from mark1.stimuli import Task, make_task

PRESETS = ("ideal", "cds-1960")
"""The machines every experiment runs on."""


@dataclass(frozen=True)
class Experiment:
    """One reported result and how we measure ours."""

    name: str
    """Short name."""
    reported: str
    """The reported figure, as reported."""
    source: str
    """Where the figure comes from."""
    measure: str
    """What our figure is."""
    run: Callable[[str, int, bool], dict[str, Any]]
    """``run(preset, seed, quick)`` -> {"value": float, "text": str, ...details}."""


def _names(task: Task) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    names = np.array(task.classes)
    return names, names[task.y_train], names[task.y_test]


def _left_right(preset: str, seed: int, quick: bool) -> dict[str, Any]:
    """Fresh cards one at a time; trials until the last mistake (median over seeds)."""
    runs = []
    for s in range(3 if quick else 7):
        task = make_task("left-right", seed=seed + s, n_train=200, n_test=200)
        names, y_train, y_test = _names(task)
        m = MarkI(preset=preset, n_a=512, random_state=seed + s, shuffle=False)
        m.partial_fit(task.X_train, y_train, classes=names)
        wrong = np.flatnonzero(m.epoch_logs_[0].wrong)
        runs.append((int(wrong[-1]) + 1 if len(wrong) else 0, m.score(task.X_test, y_test)))
    trials = float(np.median([r[0] for r in runs]))
    acc = float(np.mean([r[1] for r in runs]))
    return {"value": trials, "text": f"{trials:.0f} trials (test {acc:.1%})",
            "trials_per_seed": [r[0] for r in runs], "test_accuracy": acc}


@lru_cache(maxsize=4)
def _task(name: str, seed: int, n_train: int, n_test: int,
          options: tuple[tuple[str, Any], ...]) -> Any:
    """The task's images, generated once for both machines."""
    return make_task(name, seed=seed, n_train=n_train, n_test=n_test, **dict(options))


def _train_until_clean(preset: str, name: str, n_a: int, n_train: int, n_test: int,
                       seed: int, max_iter: int, seeds: int = 1,
                       **options: Any) -> dict[str, Any]:
    """Train until an error-free pass (or ``max_iter``); mean test accuracy over ``seeds``."""
    runs = []
    for s in range(seed, seed + seeds):
        task = _task(name, s, n_train, n_test, tuple(sorted(options.items())))
        names, y_train, y_test = _names(task)
        m = MarkI(preset=preset, n_a=n_a, random_state=s, max_iter=max_iter)
        m.fit(task.X_train, y_train)
        runs.append((m.score(task.X_train, y_train), m.score(task.X_test, y_test), m.n_iter_,
                     m.machine_time_s))
    train, test, passes, machine = (np.array(v, dtype=float) for v in zip(*runs))
    spread = f" [{test.min():.0%}-{test.max():.0%}]" if seeds > 1 else ""
    n_passes = f"{passes.mean():.0f} pass" + ("es" if passes.mean() >= 1.5 else "")
    text = f"{test.mean():.1%}{spread} (train {train.mean():.1%}, {n_passes})"
    return {"value": float(test.mean()), "text": text,
            "train_accuracy": float(train.mean()), "test_accuracy": float(test.mean()),
            "test_accuracy_per_seed": test.tolist(), "passes": passes.tolist(),
            "n_train": n_train, "n_test": n_test, "n_a": n_a, "seeds": seeds,
            "machine_time_s": float(machine.mean())}


def _square_circle(preset: str, seed: int, quick: bool) -> dict[str, Any]:
    return _train_until_clean(preset, "square-circle", 500, 1000 if quick else 10000,
                              300 if quick else 1000, seed, max_iter=1)


def _square_diamond(preset: str, seed: int, quick: bool) -> dict[str, Any]:
    return _train_until_clean(preset, "square-diamond", 1000, 60, 200 if quick else 1000, seed,
                              max_iter=50, seeds=1 if quick else 5)


def _e_f(preset: str, seed: int, quick: bool) -> dict[str, Any]:
    return _train_until_clean(preset, "e-f", 1000, 60, 200 if quick else 1000, seed,
                              max_iter=50, seeds=1 if quick else 5)


def _letters(preset: str, seed: int, quick: bool) -> dict[str, Any]:
    """One typeface, then a second one added: test accuracy of each (shift up to 1 cell)."""
    per = 4 if quick else 8
    seeds = 1 if quick else 3
    one = _train_until_clean(preset, "letters", 512, 26 * per, 26 * 4, seed,
                             max_iter=15 if quick else 40, seeds=seeds, typefaces=("sans",),
                             shift=1.0)
    two = _train_until_clean(preset, "letters", 512, 26 * 2 * per, 26 * 8, seed,
                             max_iter=15 if quick else 40, seeds=seeds,
                             typefaces=("sans", "serif"), shift=1.0)
    text = (f"one face: train {one['train_accuracy']:.0%} test {one['test_accuracy']:.0%}; "
            f"two faces: test {two['test_accuracy']:.0%}")
    return {"value": two["test_accuracy"], "text": text, "one_typeface": one,
            "two_typefaces": two}


EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment(
        "left-right", "learned after ~50 trials",
        "1958 public demonstration (IBM 704 simulation)",
        "trials until the last mistake on a stream of fresh cards (median of seeds)",
        _left_right,
    ),
    Experiment(
        "square-circle", "99.8 % (500 A-units, 10,000 training images)",
        "Rosenblatt's IBM 704 simulation experiments",
        "test accuracy after one pass over 10,000 images, 500 A-units",
        _square_circle,
    ),
    Experiment(
        "square-diamond", "100 % after 60 images (1,000 A-units)",
        "Rosenblatt's IBM 704 simulation experiments",
        "test accuracy after training on 60 images until error-free, 1,000 A-units "
        "(mean and range of 5 seeds)",
        _square_diamond,
    ),
    Experiment(
        "e-f", "> 80 % after 60 images (1,000 A-units)",
        "Rosenblatt's IBM 704 simulation experiments",
        "test accuracy after training on 60 images until error-free, 1,000 A-units "
        "(mean and range of 5 seeds)",
        _e_f,
    ),
    Experiment(
        "letters", "one typeface without error; 85 % with a second typeface",
        "Mark I, 1960 Navy release",
        "26 letters on 8 R-units (binary code): train/test accuracy with one typeface, "
        "test accuracy with two",
        _letters,
    ),
)
"""The reported experiments, in the order they are run."""


def run_replay(quick: bool = False, seed: int = 0, progress: bool = False,
               only: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Run the experiments on every preset; one result dict per experiment."""
    chosen = [e for e in EXPERIMENTS if only is None or e.name in only]
    if only is not None:
        unknown = set(only) - {e.name for e in EXPERIMENTS}
        if unknown:
            raise ValueError(
                f"unknown experiment {sorted(unknown)[0]!r}; allowed: "
                f"{', '.join(e.name for e in EXPERIMENTS)}"
            )
    bar = None
    if progress:
        from mark1.progress import progress_bar

        bar = progress_bar(total=len(chosen) * len(PRESETS), unit="run", desc="replay")
    results = []
    try:
        for exp in chosen:
            ours = {}
            for preset in PRESETS:
                if bar is not None:
                    bar.set_postfix_str(f"{exp.name} on {preset}")
                started = time.perf_counter()
                res = exp.run(preset, seed, quick)
                res["wall_time_s"] = time.perf_counter() - started
                ours[preset] = res
                if bar is not None:
                    bar.update(1)
            results.append({
                "experiment": exp.name, "reported": exp.reported, "source": exp.source,
                "measure": exp.measure, "ours": ours,
            })
    finally:
        if bar is not None:
            bar.close()
    return results


@dataclass(frozen=True)
class Sweep:
    """A reported experiment rerun with the figure allowed to move less and less."""

    experiment: str
    """Name of the experiment in :data:`EXPERIMENTS`."""
    task: str
    """Retina task."""
    n_a: int
    """A-units."""
    n_train: int
    """Training images (``quick``: at most 1,000)."""
    max_iter: int
    """Passes at most (training stops after an error-free pass)."""
    shifts: tuple[float | None, ...]
    """Largest displacement of the figure from the retina's centre, cells (``None``: anywhere)."""
    reported: float
    """The reported accuracy, as a fraction, for the figure's reference line."""
    seeds: int = 3
    """Seeds averaged (``quick``: one)."""


SWEEPS: tuple[Sweep, ...] = (
    Sweep("square-diamond", "square-diamond", 1000, 60, 50, (0, 1, 2, 4, None), 1.0),
    Sweep("e-f", "e-f", 1000, 60, 50, (0, 1, 2, 3), 0.8),
    Sweep("square-circle", "square-circle", 500, 10000, 1, (0, 1, 2, 4, None), 0.998, seeds=1),
)
"""How far the reported figures depend on how much the figures move on the retina."""


def _shift_label(shift: float | None) -> str:
    return "anywhere" if shift is None else f"±{shift:g}"


def run_position_sweep(quick: bool = False, seed: int = 0,
                       progress: bool = False) -> list[dict[str, Any]]:
    """Test accuracy against the figures' freedom to move, on every preset.

    The reports do not say how far the original figures moved; this measures how our figure
    depends on it. ``quick``: one seed, two shifts, at most 1,000 training images.
    """
    jobs = [(sw, sh) for sw in SWEEPS for sh in (sw.shifts[:: len(sw.shifts) - 1] if quick
                                                  else sw.shifts)]
    bar = None
    if progress:
        from mark1.progress import progress_bar

        bar = progress_bar(total=len(jobs) * len(PRESETS), unit="run", desc="position sweep")
    results: dict[str, dict[str, Any]] = {}
    try:
        for sw, shift in jobs:
            entry = results.setdefault(sw.experiment, {
                "experiment": sw.experiment, "task": sw.task, "n_a": sw.n_a,
                "n_train": min(sw.n_train, 1000) if quick else sw.n_train,
                "reported": sw.reported, "shifts": [], "ours": {p: [] for p in PRESETS},
            })
            entry["shifts"].append(shift)
            for preset in PRESETS:
                if bar is not None:
                    bar.set_postfix_str(f"{sw.experiment} {_shift_label(shift)} {preset}")
                res = _train_until_clean(preset, sw.task, sw.n_a, entry["n_train"],
                                         200 if quick else 1000, seed, sw.max_iter,
                                         seeds=1 if quick else sw.seeds, shift=shift)
                entry["ours"][preset].append(res["test_accuracy"])
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return list(results.values())


def format_sweep_table(results: list[dict[str, Any]], markdown: bool = False) -> str:
    """Test accuracy per largest displacement, per experiment and preset."""
    shifts: list[float | None] = []
    for r in results:
        shifts += [s for s in r["shifts"] if s not in shifts]
    shifts.sort(key=lambda s: np.inf if s is None else s)
    head = ["experiment", "machine", *(_shift_label(s) for s in shifts)]
    rows = []
    for r in results:
        for preset in PRESETS:
            acc = dict(zip(r["shifts"], r["ours"][preset]))
            rows.append([r["experiment"], preset,
                         *(f"{acc[s]:.1%}" if s in acc else "" for s in shifts)])
    return _table(head, rows, markdown)


def _table(head: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = "  ".join(f"{{:{w}s}}" for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths))]
                     + [fmt.format(*row) for row in rows])


def format_table(results: list[dict[str, Any]], markdown: bool = False) -> str:
    """Our figures beside the reported ones, as text or a Markdown table."""
    head = ["experiment", "reported", "source", *(f"ours, {p}" for p in PRESETS)]
    rows = [[r["experiment"], r["reported"], r["source"],
             *(r["ours"][p]["text"] for p in PRESETS)] for r in results]
    return _table(head, rows, markdown)
