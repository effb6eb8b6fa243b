"""The ``mark1 sweep`` subcommand. Only argparse and the ranges' helper are imported here; the
handler imports the rest (Dask and pyarrow only when it needs them)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mark1.limits import Limit

_SETTING_FLAGS = ("task", "preset", "rule", "epochs", "n_train", "n_test", "n_a", "n_r", "code",
                  "task_seed")


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for text in items:
        name, sep, value = text.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"{flag} takes NAME=VALUES; got {text!r}")
        if name in out:
            raise ValueError(f"{flag} {name} is given twice")
        out[name] = value
    return out


def spec_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The spec mapping of the command line, on top of ``--spec FILE`` when given."""
    from mark1.io import OutputPlan
    from mark1.sweeps.spec import parse_values, read_spec_file

    if args.spec is not None:  # missing, a folder, a device: said before anything is read
        OutputPlan().read("--spec", args.spec, what="spec file")
    raw: dict[str, Any] = read_spec_file(args.spec) if args.spec else {}
    for name in _SETTING_FLAGS:
        value = getattr(args, name)
        if value is not None:
            raw[name] = value
    if args.seeds is not None:
        raw["seeds"] = args.seeds
    if args.set:
        raw["set"] = {**raw.get("set", {}), **_pairs(args.set, "--set")}
    if args.grid:
        grid = {name: parse_values(name, text, f"--grid {name}") if _known(name) else text
                for name, text in _pairs(args.grid, "--grid").items()}
        raw["grid"] = {**raw.get("grid", {}), **grid}
    if args.sample:
        if args.samples is None and "n" not in raw.get("sample", {}):
            raise ValueError("--sample needs --samples N (how many points to draw)")
        section = dict(raw.get("sample", {}))
        section["ranges"] = {**section.get("ranges", {}), **_pairs(args.sample, "--sample")}
        raw["sample"] = section
    for key, flag, value in (("n", "--samples", args.samples),
                             ("method", "--sampler", args.sampler),
                             ("seed", "--sample-seed", args.sample_seed)):
        if value is not None:
            if "sample" not in raw:
                raise ValueError(f"{flag} needs --sample NAME=LOW:HIGH")
            raw["sample"] = {**raw["sample"], key: value}
    return raw


def _known(name: str) -> bool:
    from mark1.presets import PARAMETERS
    from mark1.sweeps.spec import SETTINGS

    return name in SETTINGS or name in PARAMETERS  # unknown names: the spec check says so


def _sweep(args: argparse.Namespace) -> int:
    from mark1.sweeps import sweep

    raw = spec_from_args(args)
    try:
        result = sweep(raw, out=args.out, workers=args.workers, scheduler=args.scheduler,
                       cluster=args.cluster, connect_timeout=args.connect_timeout,
                       progress=False if args.quiet else None)
    except KeyboardInterrupt:
        print(f"mark1 sweep: interrupted; the runs finished so far are in "
              f"{Path(args.out) / 'runs.jsonl'}: the same command runs the rest",
              file=sys.stderr)
        return 130
    counts = result.report["counts"]
    wall = result.report["wall_time_s"]
    rate = result.report["runs_per_minute"]
    where = result.report["environment"]["workers"]
    journal = f"{Path(args.out) / 'runs.jsonl'}"
    if where is None:
        print(f"{counts['runs']} runs, all already in {journal}; table, figures and report "
              f"written in {wall:.1f} s")
    else:
        done = f"{counts['run_now']} run now" + (
            f", {counts['from_journal']} from {journal}" if counts["from_journal"] else "")
        if counts["rerun_after_lost_worker"]:
            done += f", {counts['rerun_after_lost_worker']} rerun after a worker died"
        print(f"{counts['runs']} runs ({done}) in {wall:.1f} s on {where}: {rate:.0f} runs "
              "per minute")
    if not result.report["summary"]:
        from mark1.sweeps.table import mean_ci

        mean, half = mean_ci([r["test_accuracy"] for r in result.rows])
        print(f"test accuracy (%) over the {len(result.rows)} runs: {100 * mean:.1f}"
              f"±{100 * half:.1f}")
    for factor, by_measure in result.report["summary"].items():
        points = by_measure["test_accuracy"]
        line = ", ".join(f"{p['label']}: {100 * p['mean']:.1f}±{100 * p['ci95']:.1f}"
                         for p in points[:12])
        print(f"test accuracy (%) against {factor}: {line}" + (" ..." if len(points) > 12
                                                               else ""))
    print(f"table, figures and report in {args.out}/ ({', '.join(result.report['files'])})")
    return 0


SWEEP_LIMITS: dict[str, Limit] = {
    "samples": Limit(1, 1_000_000, "points", integer=True),
    "workers": Limit(0, 1024, "processes", integer=True),
    "connect_timeout": Limit(0, 3600, "s", open_lo=True),
}
"""Ranges of ``mark1 sweep``'s own numbers (the design's are the estimator's and the tasks')."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``mark1 sweep``."""
    from mark1.limits import SEED
    from mark1.machine import ESTIMATOR_LIMITS as EST
    from mark1.stimuli import TASK_LIMITS as TASK
    p = subparsers.add_parser(
        "sweep", help="train many machines: a grid of parameters times seeds",
        description="Train a grid (and random or Latin-hypercube samples) of simulated Mark I "
        "machines, each over several seeds, on local worker processes or a Dask cluster. "
        "Writes results.parquet and results.csv (a row per run), report.json and figures to "
        "--out; finished runs go to --out/runs.jsonl, so the same command run again after an "
        "interruption runs only what is missing. Parquet needs pip install "
        "'mark1-kit[sweep]'.",
        epilog="Example: mark1 sweep --task e-f --preset cds-1960 --grid "
        "stuck_fraction=0:0.5:11 --grid read_noise=0,0.01,0.02 --seeds 20 --out runs/sweep",
    )
    p.add_argument("--spec", default=None, metavar="FILE.toml",
                   help="the sweep's spec file (docs/SWEEPS.md); flags below go on top of it")
    p.add_argument("--out", required=True, help="folder for the table, figures and report")
    design = p.add_argument_group("design (each also a spec-file key)")
    design.add_argument("--task", default=None, help="retina task (see `mark1 tasks`)")
    design.add_argument("--preset", default=None, help="machine preset (default cds-1960)")
    design.add_argument("--rule", default=None, help="learning rule (default error-correction)")
    design.add_argument("--epochs", type=EST["max_iter"].arg(), default=None,
                        help="most passes over the training set (default 20)")
    design.add_argument("--n-train", type=TASK["n_train"].arg(), default=None,
                        help="training images")
    design.add_argument("--n-test", type=TASK["n_test"].arg(), default=None, help="test images")
    design.add_argument("--n-a", type=EST["n_a"].arg(), default=None,
                        help="association units (512)")
    design.add_argument("--n-r", type=EST["n_r"].arg(), default=None,
                        help="response units (8)")
    design.add_argument("--code", default=None, help="class code (auto)")
    design.add_argument("--task-seed", default=None, metavar="N|seed",
                        help="seed of the task's images: the same for every run (default 0), "
                        "or 'seed' for each run's own seed")
    design.add_argument("--seeds", default=None, metavar="N|S1,S2,...",
                        help="seeds per design point: a count (seeds 0..N-1) or a list")
    design.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="fix a machine parameter (repeatable)")
    design.add_argument("--grid", action="append", default=[], metavar="NAME=VALUES",
                        help="a grid axis: NAME=a,b,c or NAME=START:STOP:COUNT; any machine "
                        "parameter or run setting (preset, rule, task, n_a...); repeatable")
    design.add_argument("--sample", action="append", default=[], metavar="NAME=LOW:HIGH[:log]",
                        help="a sampled range (repeatable), crossed with the grid")
    design.add_argument("--samples", type=SWEEP_LIMITS["samples"].arg(), default=None,
                        help=f"sample points to draw ({SWEEP_LIMITS['samples'].describe()})")
    design.add_argument("--sampler", default=None, choices=("lhs", "random"),
                        help="Latin hypercube (default) or independent uniforms")
    design.add_argument("--sample-seed", type=SEED.arg(), default=None,
                        help="seed of the sample points (0)")
    where = p.add_argument_group("where the runs go")
    where.add_argument("--workers", type=SWEEP_LIMITS["workers"].arg(), default=None,
                       help="local worker processes (default: the cores; 0: in this process), "
                       "or the workers of --cluster dask")
    where.add_argument("--scheduler", default=None, metavar="tcp://HOST:8786",
                       help="run on a running Dask scheduler")
    where.add_argument("--cluster", default=None, choices=("dask",),
                       help="start a Dask LocalCluster of --workers workers")
    where.add_argument("--connect-timeout", type=SWEEP_LIMITS["connect_timeout"].arg(),
                       default=10.0, metavar="S",
                       help="seconds to wait for the scheduler (10)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_sweep)
