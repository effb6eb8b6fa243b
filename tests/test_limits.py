"""Ranges of numbers: one definition beside each parameter, checked by the API and the command
line alike, documented in docs/RELIABILITY.md, and safe at both ends.

``python -m tests.test_bad_input --update`` rewrites the ranges table (:func:`markdown`) with
the bad-input table.
"""

from __future__ import annotations

import argparse
import math
import tracemalloc
import warnings
from dataclasses import fields
from typing import Any

import numpy as np
import pytest

from mark1.limits import SEED, Limit, field_limits, iter_limits


def test_a_limit_says_what_is_allowed_and_refuses_the_rest():
    whole = Limit(1, 65536, "A-units", integer=True)
    assert whole.describe() == "whole numbers 1 to 65536 A-units"
    assert whole.check("n_a", 512) == 512 and whole.parse("1e3") == 1000
    for bad in (0, 65537, -1):
        with pytest.raises(ValueError, match=f"n_a = {bad} is out of range"):
            whole.check("n_a", bad)
    for bad in (1.5, "8", True, None):
        with pytest.raises(TypeError, match="is not a whole number"):
            whole.check("n_a", bad)
    for text in ("x", "1.5", "nan", "inf", "", "99999999999999"):
        with pytest.raises(ValueError, match=r"allowed: whole numbers 1 to 65536 A-units\)"):
            whole.parse(text)
    stop = Limit(-1e6, 1e6, "units", special=(math.inf,), meaning="no end stop")
    assert stop.describe() == "[-1e6, 1e6] units, or inf (no end stop)"
    assert stop.check("w_max", math.inf) == math.inf and stop.parse("inf") == math.inf
    for bad in (1e308, -math.inf, math.nan):
        with pytest.raises(ValueError, match="w_max = "):
            stop.check("w_max", bad)
    half_open = Limit(0, 60, "s", open_lo=True)
    assert half_open.describe() == "(0, 60] s"
    with pytest.raises(ValueError, match="timeout = 0 is out of range"):
        half_open.check("timeout", 0)
    with pytest.raises(ValueError, match="timeout = nan is not a number"):
        half_open.check("timeout", math.nan)
    assert Limit(0, 10, "s", open_hi=True).scaled(1000, "ms").describe() == "[0, 10000) ms"


def test_a_limit_becomes_a_command_line_type():
    parser = argparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--n", type=Limit(1, 10, integer=True).arg())
    assert parser.parse_args(["--n", "7"]).n == 7
    with pytest.raises(argparse.ArgumentError, match=r"11 is out of range \(allowed: whole"):
        parser.parse_args(["--n", "11"])


# --------------------------------------------------------------------------- where they are


def _tables() -> list[tuple[str, str, Any, dict[str, str]]]:
    """(section, how it is set, owner of the limits, option spelling of each name)."""
    from export.int8.quantize import CALIB_LIMIT
    from export.onnx.hyperparameters import MLPTraining
    from export.serial.cli import INFER_LIMITS
    from export.serial.settings import LinkSettings
    from firmware_sim.device import DeviceConfig
    from firmware_sim.serve import IDLE_TIMEOUT, LinkTiming
    from mark1.machine import ESTIMATOR_LIMITS
    from mark1.playground.cli import PLAYGROUND_LIMITS
    from mark1.presets import PARTS
    from mark1.stimuli import TASK_LIMITS

    tables = [(f"Mark I: {part}", "`--set NAME=VALUE`, `MarkI(machine={NAME: ...})`", cls, {})
              for part, cls in PARTS.items()]
    tables += [
        ("Mark I estimator", "`mark1 simulate`, `MarkI(...)`", ESTIMATOR_LIMITS,
         {"n_a": "--n-a", "n_r": "--n-r", "max_iter": "--epochs"}),
        ("Tasks", "`--n-train`, `--n-test`, `--seed`; `make_task`", TASK_LIMITS,
         {"n_train": "--n-train", "n_test": "--n-test", "seed": "--seed"}),
        ("MLP training", "`mark1 train-mlp`, `train_mlp`", MLPTraining,
         {"hidden": "--hidden", "epochs": "--epochs", "lr": "--lr",
          "batch_size": "--batch-size", "label_smoothing": "--label-smoothing"}),
        ("Quantization", "`mark1 quantize`, `quantize_file`", {"calib": CALIB_LIMIT},
         {"calib": "--calib (or all)"}),
        ("Host link", "`mark1 push`/`infer`, `LinkSettings`", LinkSettings,
         {"baud": "--baud", "window": "--window", "timeout_s": "--timeout",
          "retries": "--retries"}),
        ("Inference", "`mark1 infer`", INFER_LIMITS, {"n": "--n", "show": "--show"}),
        ("Simulated part", "`mark1 device`, `DeviceConfig`", DeviceConfig,
         {"flash_bytes": "--flash", "page_bytes": "--page", "ram_bytes": "--ram",
          "max_payload": "--max-payload"}),
        ("Simulated line", "`mark1 device`, `LinkTiming`, the servers",
         {**field_limits(LinkTiming), "idle_timeout_s": IDLE_TIMEOUT},
         {"baud": "--baud", "turnaround_s": "--turnaround (in ms)",
          "idle_timeout_s": "--idle-timeout"}),
        ("Playground", "`mark1 playground`", PLAYGROUND_LIMITS,
         {"port": "--port", "max_tabs": "--max-tabs", "workers": "--workers"}),
    ]
    return tables


def markdown() -> str:
    """The ranges table of docs/RELIABILITY.md."""
    from export.contract.package import MAX_PACKAGE_BYTES
    from export.onnx.hyperparameters import MAX_HIDDEN_LAYERS
    from firmware_sim.flash import MAX_ERASES
    from mark1.images import MAX_IMAGE_PIXELS, MAX_TOTAL_PIXELS
    from mark1.limits import MEMORY_SHARE
    from mark1.motors import CLOCK_LIMIT_US

    rows = ["| parameter | option | allowed |", "|---|---|---|"]
    for section, how, owner, spelled in _tables():
        rows.append(f"| **{section}** | {how} | |")
        for name, lim in iter_limits(owner):
            option = f"`{spelled[name]}`" if name in spelled else ""
            rows.append(f"| `{name}` | {option} | {lim.describe()} |")
    rows.append("| **Everywhere** | | |")
    rows.append(f"| seeds | `--seed` | {SEED.describe()} |")
    rows += [
        "", "Limits of several numbers together, checked before any work:", "",
        f"- memory: a run's estimate (images, A-units, pots; an MLP's parameters and "
        f"activations; generated task images) must fit {MEMORY_SHARE:.0%} of the computer's "
        "physical memory (`mark1.limits.memory_budget`);",
        f"- machine time: a simulation's longest possible run must fit the machine clock "
        f"({CLOCK_LIMIT_US:,} microseconds, about 292,000 years: `mark1.motors.check_clock_room`)"
        ";",
        f"- hidden layers: at most {MAX_HIDDEN_LAYERS};",
        f"- images: at most {MAX_IMAGE_PIXELS:,} pixels an image and {MAX_TOTAL_PIXELS:,} in "
        "all, read from the file's header (PNG, JPEG, `.npy`) before anything is decoded;",
        f"- packages: a file of more than {MAX_PACKAGE_BYTES:,} bytes is refused unread;",
        f"- flash state: at most {MAX_ERASES:,} erases recorded a page.",
    ]
    return "\n".join(rows) + "\n"


BEGIN, END = "<!-- ranges:begin -->\n", "<!-- ranges:end -->"
"""Markers of the generated ranges table in docs/RELIABILITY.md."""


def test_the_ranges_in_the_doc_are_the_ones_in_the_code():
    from tests.test_bad_input import DOC

    doc = DOC.read_text()
    assert doc[doc.index(BEGIN) + len(BEGIN) : doc.index(END)] == markdown(), (
        "run python -m tests.test_bad_input --update")


NUMERIC_CLASSES = ("mark1.retina.CdSCells", "mark1.plugboard.PlugboardSpec",
                   "mark1.potentiometers.PotSpec", "mark1.motors.MotorSpec",
                   "mark1.motors.ClockSpec", "mark1.r_units.RUnitSpec",
                   "export.onnx.hyperparameters.MLPTraining",
                   "export.serial.settings.LinkSettings", "firmware_sim.device.DeviceConfig",
                   "firmware_sim.serve.LinkTiming")


@pytest.mark.parametrize("path", NUMERIC_CLASSES)
def test_every_numeric_parameter_has_a_range(path):
    import importlib

    module, _, name = path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    defaults = cls()
    for f in fields(cls):
        value = getattr(defaults, f.name)
        if isinstance(value, (int, float, tuple)) and not isinstance(value, bool):
            assert "limit" in f.metadata, f"{path}.{f.name} has no range"


def test_every_numeric_option_is_checked_while_the_command_line_is_read():
    from mark1.cli import build_parser

    parser = build_parser()
    found = []

    def walk(p: argparse.ArgumentParser, prog: str) -> None:
        for action in p._actions:  # noqa: SLF001 - argparse keeps them here
            if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
                for name, sub in action.choices.items():
                    walk(sub, f"{prog} {name}")
            elif action.type in (int, float):
                found.append(f"{prog} {action.option_strings}")
            elif action.type is not None and action.default is not None and not isinstance(
                    action.default, str) and getattr(action.type, "__name__", "") == "number":
                action.type(str(action.default))  # the default lies in the range
    walk(parser, "mark1")
    assert found == [], f"options without a range: {found}"


# --------------------------------------------------------------------------- safe at both ends


def _ends() -> list[tuple[str, Any]]:
    from mark1.presets import CDS_1960, LIMITS, PARAMETERS

    cases = []
    for name, lim in LIMITS.items():
        default = getattr(getattr(CDS_1960, PARAMETERS[name]), name)
        for end in (lim.lo, lim.hi, *lim.special):
            if lim.open_lo and end == lim.lo:
                end = lim.lo + (1 if lim.integer else 1e-9 * max(1.0, abs(lim.hi)))
            if lim.open_hi and end == lim.hi:
                end = lim.hi - (1 if lim.integer else 1e-9 * max(1.0, abs(lim.hi)))
            value = int(end) if isinstance(default, int) and math.isfinite(end) else float(end)
            cases.append((name, value))
    return cases


@pytest.mark.parametrize("name, value", _ends(), ids=lambda v: str(v))
def test_a_machine_trains_at_either_end_of_every_range_without_a_warning(name, value):
    """Any value a range allows gives a run without a warning or a traceback (where it breaks a
    rule between parameters, such as gamma_spread < gamma, a one-line ValueError says so)."""
    from mark1.machine import MarkI
    from mark1.stimuli import make_task

    task = make_task("xor", seed=0, n_train=12, n_test=4)
    names = np.array(task.classes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = MarkI(n_a=16, n_r=2, random_state=0, max_iter=2, machine={name: value})
        try:
            model.fit(task.X_train, names[task.y_train])
        except ValueError as exc:  # a rule between parameters: said in one line
            assert "\n" not in str(exc) and str(exc)
            return
        assert np.isfinite(model.decision_function(task.X_test)).all()
        model.score(task.X_test, names[task.y_test])


@pytest.mark.parametrize("n_images, n_a, n_r, preset", [
    (400, 512, 8, "cds-1960"), (1600, 512, 8, "cds-1960"), (400, 4096, 8, "cds-1960"),
    (400, 1024, 32, "cds-worn"), (400, 512, 8, "ideal"),
])
def test_the_memory_estimate_of_a_run_bounds_what_it_takes(n_images, n_a, n_r, preset):
    from mark1.machine import MarkI, run_memory_bytes
    from mark1.stimuli import make_task

    task = make_task("square-circle", seed=0, n_train=n_images, n_test=10)
    names = np.array(task.classes)
    model = MarkI(preset=preset, n_a=n_a, n_r=n_r, random_state=0, max_iter=1)
    tracemalloc.start()
    try:
        model.fit(task.X_train, names[task.y_train])
        model.score(task.X_train, names[task.y_train])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    estimate = run_memory_bytes(n_images, n_a, n_r)
    assert peak <= estimate <= 4 * peak + 2**24, (peak, estimate)
