"""Subcommands of the Mark I machine: ``tasks``, ``simulate`` and ``replay``.

Registration reads the estimator's defaults, the names of presets, rules and codes and the
ranges of the numbers from the modules that define them (all numpy-only, already loaded with
``mark1``); each handler imports what else it needs. Every handler checks its whole input and
plans its outputs (:class:`mark1.io.OutputPlan`) before any work.
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


SIMULATE_FILES = ("report.json", "machine.npz", "plugboard.csv", "stimuli.png", "pots.png",
                  "learning.png", "motors.png")
"""What ``mark1 simulate`` writes into its ``--out`` folder."""


def _simulate(args: argparse.Namespace) -> int:
    from mark1.images import N_CELLS
    from mark1.io import OutputPlan
    from mark1.limits import check_memory
    from mark1.machine import MarkI, run_memory_bytes
    from mark1.motors import check_clock_room
    from mark1.presets import parse_override
    from mark1.r_units import make_codebook
    from mark1.stimuli import TASKS, task_classes, task_sizes

    # every check before any work or any file (the numbers' ranges were checked by the parser)
    if args.task not in TASKS:
        raise ValueError(f"unknown task {args.task!r}; allowed: {', '.join(TASKS)}")
    overrides = dict(parse_override(text) for text in args.set)
    model = MarkI(preset=args.preset, rule=args.rule, n_a=args.n_a, n_r=args.n_r,
                  code=args.code, raw=args.raw, random_state=args.seed, max_iter=args.epochs,
                  machine=overrides)
    model.check_params()
    make_codebook(len(task_classes(args.task)), args.n_r, args.code)  # too many classes
    n_train, n_test = task_sizes(args.task, args.n_train, args.n_test)
    n_a = N_CELLS if args.raw else args.n_a
    check_memory(f"simulate with {n_a:,} A-units and {n_train + n_test:,} images",
                 run_memory_bytes(n_train + n_test, n_a, args.n_r),
                 "use fewer images (--n-train, --n-test) or A-units (--n-a)")
    preset = model.machine_preset()
    n_pots = args.n_r * (n_a + int(preset.r_units.bias_unit))
    check_clock_room(preset.clock, preset.motors, n_pots, args.epochs * n_train)
    plan = OutputPlan()
    out = plan.write_folder("--out", args.out, files=SIMULATE_FILES)
    with plan:
        report = _simulate_run(args, model, overrides, plan.staged(out))
    print(
        f"{args.task} on {args.preset}: train {report['train_accuracy']:.3f}, "
        f"test {report['test_accuracy']:.3f}; machine time {report['machine_time_s'] / 3600:.2f} "
        f"h, {report['motor_steps']:,} motor steps; wall {report['wall_time_s']:.1f} s"
    )
    print(f"report and figures in {out}/ ({', '.join(report['files'])})")
    return 0


def _simulate_run(args: argparse.Namespace, model: Any, overrides: dict[str, Any],
                  stage: Path) -> dict[str, Any]:
    """The work of ``mark1 simulate``: train, then write every file into ``stage``; returns
    the report."""
    import time

    import numpy as np

    from mark1 import figures
    from mark1.io import atomic_write_text, write_json
    from mark1.stimuli import make_task

    task = make_task(args.task, seed=args.seed, n_train=args.n_train, n_test=args.n_test)
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
        "files": list(SIMULATE_FILES),
    }
    model.save(stage / "machine.npz", task=args.task)
    atomic_write_text(stage / "plugboard.csv", model.plugboard_.to_csv())
    figures.stimuli(stage / "stimuli.png", model, task.X_train, task.y_train, task.classes)
    figures.pots(stage / "pots.png", model)
    figures.learning(stage / "learning.png", curve, task.n_train)
    figures.motors(stage / "motors.png", model)
    write_json(stage / "report.json", report)
    return report


def _replay(args: argparse.Namespace) -> int:
    from mark1.io import OutputPlan
    from mark1.replay import format_sweep_table, format_table, run_position_sweep, run_replay

    # every check before any work: a bad --out must not cost a whole replay
    plan = OutputPlan()
    files = ("replay.json",) if args.no_sweep else ("replay.json", "position_sweep.png")
    out = plan.write_folder("--out", args.out, files=files) if args.out is not None else None
    with plan:
        results = run_replay(quick=args.quick, seed=args.seed, progress=not args.quiet)
        print(format_table(results))
        sweep = []
        if not args.no_sweep:
            sweep = run_position_sweep(quick=args.quick, seed=args.seed,
                                       progress=not args.quiet)
            print("\ntest accuracy against how far the figure may move from the retina's centre:")
            print(format_sweep_table(sweep))
        if out is not None:
            from mark1 import figures
            from mark1.io import write_json

            stage = plan.staged(out)
            write_json(stage / "replay.json", {"quick": args.quick, "seed": args.seed,
                                               "experiments": results,
                                               "position_sweep": sweep})
            if sweep:
                figures.position_sweep(stage / "position_sweep.png", sweep)
    if out is not None:
        print(f"written to {out / 'replay.json'}" + (" and position_sweep.png" if sweep else ""))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the Mark I subcommands."""
    from mark1.limits import SEED
    from mark1.machine import ESTIMATOR_LIMITS as EST
    from mark1.machine import MarkI
    from mark1.presets import PRESETS
    from mark1.r_units import CODES
    from mark1.stimuli import TASK_LIMITS as TASK
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
    p.add_argument("--epochs", type=EST["max_iter"].arg(), default=10,
                   help=f"passes over the training set ({EST['max_iter'].describe()}; "
                   "default %(default)s)")
    p.add_argument("--seed", type=SEED.arg(), default=0,
                   help=f"seeds the task and the machine ({SEED.describe()})")
    p.add_argument("--out", required=True, help="folder for the report and figures")
    p.add_argument("--n-train", type=TASK["n_train"].arg(), default=None,
                   help=f"training images ({TASK['n_train'].describe()}; task default)")
    p.add_argument("--n-test", type=TASK["n_test"].arg(), default=None,
                   help=f"test images ({TASK['n_test'].describe()}; task default)")
    p.add_argument("--n-a", type=EST["n_a"].arg(), default=machine["n_a"],
                   help=f"association units ({EST['n_a'].describe()}; default %(default)s)")
    p.add_argument("--n-r", type=EST["n_r"].arg(), default=machine["n_r"],
                   help=f"response units ({EST['n_r'].describe()}; default %(default)s)")
    p.add_argument("--code", default=machine["code"],
                   help=f"class code over the R-units: {', '.join(CODES)} (default "
                   f"{machine['code']})")
    p.add_argument("--raw", action="store_true",
                   help="wire the S-units straight to the R-units (no A-layer)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override a machine parameter, e.g. --set read_noise=0.02 (repeatable; "
                   "ranges in docs/RELIABILITY.md)")
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
    p.add_argument("--seed", type=SEED.arg(), default=0,
                   help=f"seed of the tasks and machines ({SEED.describe()})")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_replay)
