"""Subcommands of the Mark I machine: ``tasks``, ``simulate`` and ``replay``.

Registration reads the estimator's defaults and the names of presets, rules and codes from the
modules that define them (all numpy-only, already loaded with ``mark1``); each handler imports
what else it needs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _tasks(args: argparse.Namespace) -> int:
    from mark1.stimuli import TASKS, make_task

    for name, text in TASKS.items():
        line = f"{name:15s} {text}"
        if args.verbose:
            task = make_task(name, seed=0)
            line += f"  [{len(task.classes)} classes, {task.n_train} train / {task.n_test} test]"
        print(line)
    return 0


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{name} must be at least 1; got {value}")


def _simulate(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from mark1 import figures
    from mark1.io import atomic_write_text, staged_output_dir, write_json
    from mark1.machine import MarkI
    from mark1.presets import get_preset, parse_override
    from mark1.r_units import make_codebook
    from mark1.stimuli import TASKS, make_task

    # every check before any work or any file
    if args.task not in TASKS:
        raise ValueError(f"unknown task {args.task!r}; allowed: {', '.join(TASKS)}")
    get_preset(args.preset)
    for name in ("epochs", "n_train", "n_test", "n_a", "n_r"):
        _positive(f"--{name.replace('_', '-')}", getattr(args, name))
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0; got {args.seed}")
    overrides = dict(parse_override(text) for text in args.set)
    model = MarkI(preset=args.preset, rule=args.rule, n_a=args.n_a, n_r=args.n_r,
                  code=args.code, raw=args.raw, random_state=args.seed, max_iter=args.epochs,
                  machine=overrides)
    model.check_params()
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} exists and is not a folder")

    task = make_task(args.task, seed=args.seed, n_train=args.n_train, n_test=args.n_test)
    make_codebook(len(task.classes), args.n_r, args.code)  # too many classes: stop here
    names = np.array(task.classes)
    y_train, y_test = names[task.y_train], names[task.y_test]

    from mark1.progress import progress_bar

    started = time.perf_counter()
    curve: list[dict[str, Any]] = []
    bar = progress_bar(total=args.epochs * task.n_train, unit="trial",
                       desc=f"{args.task} on {args.preset}",
                       enabled=False if args.quiet else None, mininterval=0.2)
    state = {"mistakes": 0}

    def progress(new_trials: int, new_mistakes: int, machine_time_s: float) -> None:
        state["mistakes"] += new_mistakes
        bar.update(new_trials)
        bar.set_postfix(mistakes=state["mistakes"], machine=f"{machine_time_s / 3600:.2f}h",
                        refresh=False)

    try:
        for epoch in range(args.epochs):
            model.partial_fit(task.X_train, y_train, classes=names, progress=progress)
            curve.append({
                "epoch": epoch + 1,
                "mistakes": model.mistakes_per_epoch_[-1],
                "machine_time_s": model.machine_time_s,
                "motor_steps": model.motor_steps,
                "train_accuracy": model.score(task.X_train, y_train),
                "test_accuracy": model.score(task.X_test, y_test),
            })
    finally:
        bar.close()
    wall = time.perf_counter() - started
    report = {
        "task": args.task,
        "preset": args.preset,
        "rule": args.rule,
        "seed": args.seed,
        "raw": args.raw,
        "n_a": model.plugboard_.n_a,
        "n_r": args.n_r,
        "code": args.code,
        "classes": list(task.classes),
        "overrides": overrides,
        "n_train": task.n_train,
        "n_test": task.n_test,
        "epochs": args.epochs,
        "train_accuracy": curve[-1]["train_accuracy"],
        "test_accuracy": curve[-1]["test_accuracy"],
        "mistakes_per_epoch": list(model.mistakes_per_epoch_),
        "machine_time_s": model.machine_time_s,
        "motor_time_s": model.clock_.motor_us / 1e6,
        "motor_steps": model.motor_steps,
        "a_unit_activity": model.plugboard_.activity(
            model.retina_.respond_static(task.X_train.reshape(task.n_train, -1))),
        "wall_time_s": wall,
        "learning_curve": curve,
        "files": ["report.json", "machine.npz", "plugboard.csv", "stimuli.png", "pots.png",
                  "learning.png", "motors.png"],
    }
    with staged_output_dir(out) as stage:
        model.save(stage / "machine.npz", task=args.task)
        atomic_write_text(stage / "plugboard.csv", model.plugboard_.to_csv())
        figures.stimuli(stage / "stimuli.png", model, task.X_train, task.y_train, task.classes)
        figures.pots(stage / "pots.png", model)
        figures.learning(stage / "learning.png", curve, task.n_train)
        figures.motors(stage / "motors.png", model)
        write_json(stage / "report.json", report)
    print(
        f"{args.task} on {args.preset}: train {report['train_accuracy']:.3f}, "
        f"test {report['test_accuracy']:.3f}; machine time {model.machine_time_s / 3600:.2f} h, "
        f"{model.motor_steps:,} motor steps; wall {wall:.1f} s"
    )
    print(f"report and figures in {out}/ ({', '.join(report['files'])})")
    return 0


def _replay(args: argparse.Namespace) -> int:
    from mark1.replay import format_sweep_table, format_table, run_position_sweep, run_replay

    # every check before any work: a bad --out or --seed must not cost a whole replay
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0; got {args.seed}")
    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {str(args.out)!r} exists and is not a folder")
    results = run_replay(quick=args.quick, seed=args.seed, progress=not args.quiet)
    print(format_table(results))
    sweep = []
    if not args.no_sweep:
        sweep = run_position_sweep(quick=args.quick, seed=args.seed, progress=not args.quiet)
        print("\ntest accuracy against how far the figure may move from the retina's centre:")
        print(format_sweep_table(sweep))
    if args.out is not None:
        from mark1 import figures
        from mark1.io import staged_output_dir, write_json

        with staged_output_dir(args.out) as stage:
            write_json(stage / "replay.json", {"quick": args.quick, "seed": args.seed,
                                               "experiments": results,
                                               "position_sweep": sweep})
            if sweep:
                figures.position_sweep(stage / "position_sweep.png", sweep)
        print(f"written to {Path(args.out) / 'replay.json'}"
              + (" and position_sweep.png" if sweep else ""))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the Mark I subcommands."""
    from mark1.machine import MarkI
    from mark1.presets import PRESETS
    from mark1.r_units import CODES
    from mark1.training import RULES

    machine = MarkI().get_params()  # the estimator's defaults
    p = subparsers.add_parser("tasks", help="list the retina tasks")
    p.add_argument("-v", "--verbose", action="store_true", help="also show classes and sizes")
    p.set_defaults(handler=_tasks)

    p = subparsers.add_parser(
        "simulate", help="train a simulated Mark I on a retina task",
        description="Train a simulated Mark I Perceptron on a retina task; write report.json, "
        "machine.npz, plugboard.csv and PNG figures to --out.",
    )
    p.add_argument("--task", required=True, help="retina task (see `mark1 tasks`)")
    p.add_argument("--preset", default=machine["preset"],
                   help=f"machine: {', '.join(PRESETS)} (default {machine['preset']})")
    p.add_argument("--rule", default=machine["rule"],
                   help=f"training rule: {', '.join(RULES)} (default {machine['rule']})")
    p.add_argument("--epochs", type=int, default=10, help="passes over the training set")
    p.add_argument("--seed", type=int, default=0, help="seeds the task and the machine")
    p.add_argument("--out", required=True, help="folder for the report and figures")
    p.add_argument("--n-train", type=int, default=None, help="training images (task default)")
    p.add_argument("--n-test", type=int, default=None, help="test images (task default)")
    p.add_argument("--n-a", type=int, default=machine["n_a"],
                   help=f"association units (default {machine['n_a']})")
    p.add_argument("--n-r", type=int, default=machine["n_r"],
                   help=f"response units (default {machine['n_r']})")
    p.add_argument("--code", default=machine["code"],
                   help=f"class code over the R-units: {', '.join(CODES)} (default "
                   f"{machine['code']})")
    p.add_argument("--raw", action="store_true",
                   help="wire the S-units straight to the R-units (no A-layer)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override a machine parameter, e.g. --set read_noise=0.02 (repeatable)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_simulate)

    p = subparsers.add_parser(
        "replay", help="rerun Rosenblatt's reported experiments beside his figures",
        description="Run the experiments reported for the Mark I and its IBM 704 simulations "
        "and print our figure beside the reported one, with its source; then rerun three of "
        "them with the figure allowed to move less and less (the position sweep).",
    )
    p.add_argument("--out", default=None,
                   help="folder for replay.json and position_sweep.png")
    p.add_argument("--no-sweep", action="store_true", help="skip the position sweep")
    p.add_argument("--quick", action="store_true", help="smaller runs (a few seconds)")
    p.add_argument("--seed", type=int, default=0, help="seed of the tasks and machines")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_replay)
