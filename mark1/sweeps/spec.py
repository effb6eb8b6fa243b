"""A sweep's specification: what varies, what is fixed, over how many seeds; and its runs.

A spec is a plain mapping, the same whether it comes from a TOML file, from ``mark1 sweep``'s
flags or from a call to :func:`mark1.sweep`::

    task = "e-f"                      # any factor: a value (fixed) or a list (a grid axis)
    preset = "cds-1960"
    epochs = 20
    seeds = 20                        # seeds 0..19, or a list of seeds
    task_seed = 0                     # the images' seed (default 0); "seed": each run's own
    [set]                             # fixed machine parameters
    backlash_steps = 1.0
    [grid]                            # grid axes: a list, "start:stop:count" or a table
    stuck_fraction = "0:0.5:11"
    read_noise = [0, 0.01, 0.02]
    [sample]                          # random or Latin-hypercube points, crossed with the grid
    method = "lhs"                    # or "random"
    n = 32
    seed = 0
    ranges = { drift_sd = [0, 0.1], step = { low = 0.005, high = 0.05, log = true } }

A *factor* is a run setting (:data:`SETTINGS`: task, preset, rule, image counts, ``n_a``...)
or a machine parameter (:data:`mark1.presets.PARAMETERS`). The design is every combination
of the grid axes, crossed with every sample point, each run once per seed. Each run is a
:class:`RunConfig`; its :meth:`~RunConfig.key` hashes its full configuration (every machine
parameter resolved, not only those the spec names), so a run already done under another spec
is recognised.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import lru_cache
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from mark1.limits import SEED
from mark1.presets import CDS_1960, PARAMETERS, PRESETS, get_preset

SETTINGS: dict[str, str] = {
    "task": "retina task (`mark1 tasks`)",
    "preset": "machine preset",
    "rule": "learning rule",
    "epochs": "most passes over the training set (MarkI's max_iter)",
    "n_train": "training images (the task's default when not set)",
    "n_test": "test images (the task's default when not set)",
    "n_a": "association units",
    "n_r": "response units",
    "code": "class code over the R-units",
    "task_seed": "seed of the task's images: 0 (the default: every run sees the same images), "
                 "or 'seed' (each run's own seed)",
}
"""The run settings a spec can fix or sweep, besides the machine parameters."""

_TEXT = ("task", "preset", "rule", "code")
_WHOLE = {"epochs": 1, "n_train": 1, "n_test": 1, "n_a": 1, "n_r": 1, "task_seed": 0}
_SECTIONS = ("seeds", "set", "grid", "sample")
SAMPLERS = ("lhs", "random")
"""Ways to draw sample points: a Latin hypercube or independent uniforms."""


def _markI_defaults() -> dict[str, Any]:
    """Run-setting defaults, read from :class:`mark1.MarkI` itself."""
    from mark1.machine import MarkI

    sig = inspect.signature(MarkI.__init__).parameters
    return {
        "preset": sig["preset"].default, "rule": sig["rule"].default,
        "epochs": sig["max_iter"].default, "n_a": sig["n_a"].default,
        "n_r": sig["n_r"].default, "code": sig["code"].default,
        "n_train": None, "n_test": None, "task_seed": 0,
    }


def _allowed_factors() -> str:
    return (f"a run setting ({', '.join(SETTINGS)}) or a machine parameter "
            f"({', '.join(sorted(PARAMETERS))})")


def _check_name(name: str, where: str) -> None:
    if name not in SETTINGS and name not in PARAMETERS:
        raise ValueError(f"{where}: unknown parameter {name!r}; allowed: {_allowed_factors()}")


def parameter_kind(name: str) -> type:
    """The type a factor takes: ``str``, ``int``, ``float`` or ``bool``."""
    if name in _TEXT:
        return str
    if name in _WHOLE:
        return int
    return type(getattr(getattr(CDS_1960, PARAMETERS[name]), name))


def coerce(name: str, value: Any, where: str) -> Any:
    """``value`` as the type factor ``name`` takes (whole floats become ints); else ValueError."""
    kind = parameter_kind(name)
    bad = f"{where}: {name} takes {_KIND_WORDS[kind]}; got {value!r}"
    if kind is str:
        if not isinstance(value, str):
            raise ValueError(bad)
        return value
    if kind is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueError(bad)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(bad) from None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise ValueError(bad)
    if kind is int:
        if not float(value).is_integer():
            raise ValueError(bad)
        return int(value)
    return float(value)


_KIND_WORDS = {str: "a name", int: "whole numbers", float: "numbers", bool: "true or false"}


def _check_value(name: str, value: Any, where: str) -> None:
    """Range checks of the run settings (machine parameters are checked by their parts)."""
    if name in _WHOLE and value < _WHOLE[name]:
        raise ValueError(f"{where}: {name} must be >= {_WHOLE[name]}; got {value}")
    if name == "task":
        from mark1.stimuli import TASKS

        if value not in TASKS:
            raise ValueError(f"{where}: unknown task {value!r}; allowed: {', '.join(TASKS)}")
    elif name == "preset" and value not in PRESETS:
        raise ValueError(f"{where}: unknown preset {value!r}; allowed: {', '.join(PRESETS)}")
    elif name == "rule":
        from mark1.training import RULES

        if value not in RULES:
            raise ValueError(f"{where}: unknown rule {value!r}; allowed: {', '.join(RULES)}")
    elif name == "code":
        from mark1.r_units import CODES

        if value not in CODES:
            raise ValueError(f"{where}: unknown code {value!r}; allowed: {', '.join(CODES)}")


def _tidy(x: float) -> float:
    """A float of an evenly spaced range, rounded to 12 significant digits (0.15, not
    0.15000000000000002)."""
    return float(f"{x:.12g}")


def parse_values(name: str, text: str, where: str) -> list[Any]:
    """Grid values from text: ``"a,b,c"`` or ``"start:stop:count"`` (evenly spaced, ends kept)."""
    text = text.strip()
    if not text:
        raise ValueError(f"{where}: the grid of {name} is empty; give at least one value")
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise ValueError(f"{where}: a range is START:STOP:COUNT; got {text!r}")
        return _range(name, {"start": parts[0], "stop": parts[1], "num": parts[2]}, where)
    return [coerce(name, v.strip(), where) for v in text.split(",")]


def _range(name: str, table: Mapping[str, Any], where: str) -> list[Any]:
    if set(table) != {"start", "stop", "num"}:
        raise ValueError(f"{where}: a range of {name} has the keys start, stop and num; "
                         f"got {', '.join(map(str, table))}")
    kind = parameter_kind(name)
    if kind not in (int, float):
        raise ValueError(f"{where}: {name} is not a number; list its values instead of a range")
    try:
        start, stop, num = float(table["start"]), float(table["stop"]), float(table["num"])
        if not num.is_integer():
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"{where}: a range of {name} needs numbers START:STOP:COUNT; "
                         f"got {table['start']!r}:{table['stop']!r}:{table['num']!r}") from None
    if num < 1:
        raise ValueError(f"{where}: the grid of {name} is empty (count {num:g}); "
                         "give at least one value")
    _at_most(f"{where}: the count of values", int(num))
    if not (math.isfinite(start) and math.isfinite(stop)):
        raise ValueError(f"{where}: a range of {name} needs finite ends; got {start}:{stop}")
    values = [_tidy(v) for v in np.linspace(start, stop, int(num))]
    return [coerce(name, v, where) for v in values]


def _grid_values(name: str, raw: Any, where: str) -> list[Any]:
    if isinstance(raw, str) and parameter_kind(name) is not str:
        return parse_values(name, raw, where)
    if isinstance(raw, Mapping):
        return _range(name, raw, where)
    values = list(raw) if isinstance(raw, (list, tuple)) else [raw]
    if not values:
        raise ValueError(f"{where}: the grid of {name} is empty; give at least one value")
    return [coerce(name, v, where) for v in values]


@dataclass(frozen=True)
class SampleRange:
    """One sampled factor: uniform in [low, high], or log-uniform."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class RunConfig:
    """One run of a sweep: everything that decides its result, and nothing else.

    The result is what ``MarkI(preset, rule, n_a, n_r, code, max_iter=epochs,
    random_state=seed, machine=dict(machine)).fit(task.X_train, ...)`` gives, with ``task =
    make_task(task, seed=images_seed, n_train, n_test)``.
    """

    task: str
    preset: str
    rule: str
    epochs: int
    n_train: int | None
    n_test: int | None
    n_a: int
    n_r: int
    code: str
    task_seed: int | None
    """Seed of the task's images; None: the run's own seed."""
    seed: int
    machine: tuple[tuple[str, Any], ...]
    """The machine parameters the spec sets (fixed or swept), by name, sorted."""

    @property
    def images_seed(self) -> int:
        """The seed of the task's images."""
        return self.seed if self.task_seed is None else self.task_seed

    def task_key(self) -> tuple[str, int, int | None, int | None]:
        """What the task's images depend on: runs with the same key share them."""
        return (self.task, self.images_seed, self.n_train, self.n_test)

    def resolved(self) -> dict[str, Any]:
        """Every setting, the images' seed and every machine parameter of this run."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "machine"}
        out["task_seed"] = self.images_seed
        out.update(_machine_parameters(self.preset, self.machine))
        return out

    def key(self) -> str:
        """The run's identity: a SHA-256 of its full configuration and the kit's version."""
        from mark1.version import __version__

        text = json.dumps({"kit": __version__, **self.resolved()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


@lru_cache(maxsize=1024)
def _machine_parameters(preset: str, machine: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    """Every machine parameter of ``preset`` with ``machine``'s set (the seeds of a sweep
    share them: worked out once for each, not for every run). Read only: callers copy."""
    return get_preset(preset).with_overrides(**dict(machine)).parameters()


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: fixed factors, grid axes, sample ranges and seeds."""

    fixed: dict[str, Any]
    """Factors with one value (run settings with their defaults filled in)."""
    grid: dict[str, list[Any]]
    """Grid axes, in the order given."""
    samples: dict[str, SampleRange]
    """Sampled factors."""
    n_samples: int
    """Sample points drawn (crossed with the grid); 0 without sampled factors."""
    sampler: str
    """``lhs`` or ``random``."""
    sample_seed: int
    """Seed of the sample points."""
    seeds: tuple[int, ...]
    """The seeds each design point is run with."""

    @property
    def swept(self) -> list[str]:
        """The factors that vary: grid axes with more than one value, then sampled factors."""
        return [k for k, v in self.grid.items() if len(v) > 1] + list(self.samples)

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data (what ``report.json`` records; :func:`load_spec` reads it)."""
        settings = {k: v for k, v in self.fixed.items() if k in SETTINGS and v is not None}
        if "task_seed" in self.fixed and self.fixed["task_seed"] is None:
            settings["task_seed"] = "seed"
        out: dict[str, Any] = dict(settings)
        out["seeds"] = list(self.seeds)
        machine = {k: v for k, v in self.fixed.items() if k in PARAMETERS}
        if machine:
            out["set"] = machine
        if self.grid:
            out["grid"] = {k: list(v) for k, v in self.grid.items()}
        if self.samples:
            out["sample"] = {
                "method": self.sampler, "n": self.n_samples, "seed": self.sample_seed,
                "ranges": {k: {"low": r.low, "high": r.high, "log": r.log}
                           for k, r in self.samples.items()},
            }
        return out

    def points(self) -> list[dict[str, Any]]:
        """The design points: every grid combination crossed with every sample point."""
        grid = [dict(zip(self.grid, combo)) for combo in product(*self.grid.values())]
        if not self.samples:
            return grid
        drawn = draw_samples(self.samples, self.n_samples, self.sampler, self.sample_seed)
        return [{**g, **s} for g in grid for s in drawn]

    def runs(self) -> list[RunConfig]:
        """Every run, in the design's order (point by point, each over the seeds); a run that
        two points share (repeated sample values) is listed once."""
        out: list[RunConfig] = []
        seen: set[RunConfig] = set()
        for point in self.points():
            values = {**self.fixed, **point}
            machine = tuple(sorted((k, v) for k, v in values.items() if k in PARAMETERS))
            settings = {k: values[k] for k in SETTINGS}
            for seed in self.seeds:
                run = RunConfig(**settings, seed=seed, machine=machine)
                if run not in seen:
                    seen.add(run)
                    out.append(run)
        return out


def draw_samples(ranges: Mapping[str, SampleRange], n: int, sampler: str,
                 seed: int) -> list[dict[str, Any]]:
    """``n`` points in the ranges: a Latin hypercube (each range cut into ``n`` equal strata,
    one point in each) or independent uniforms; whole-number factors rounded down."""
    rng = np.random.default_rng(seed)
    if sampler == "lhs":  # McKay, Beckman & Conover 1979: strata paired at random across ranges
        strata = rng.permuted(np.tile(np.arange(n), (len(ranges), 1)), axis=1).T
        unit = (strata + rng.random((n, len(ranges)))) / n
    else:
        unit = rng.random((n, len(ranges)))
    points: list[dict[str, Any]] = [{} for _ in range(n)]
    for j, (name, r) in enumerate(ranges.items()):
        u = unit[:, j]
        if parameter_kind(name) is int:
            values: list[Any] = [int(v) for v in np.minimum(
                np.floor(r.low + u * (r.high - r.low + 1)), r.high)]
        elif r.log:
            values = [float(v) for v in np.exp(np.log(r.low) + u * np.log(r.high / r.low))]
        else:
            values = [float(v) for v in r.low + u * (r.high - r.low)]
        for point, v in zip(points, values):
            point[name] = v
    return points


def _sample_range(name: str, raw: Any, where: str) -> SampleRange:
    kind = parameter_kind(name)
    if kind not in (int, float):
        raise ValueError(f"{where}: {name} is not a number and cannot be sampled; grid it")
    log = False
    if isinstance(raw, str):
        parts = raw.split(":")
        if len(parts) == 3 and parts[2].strip() == "log":
            log, parts = True, parts[:2]
        if len(parts) != 2:
            raise ValueError(f"{where}: a sampled range is LOW:HIGH or LOW:HIGH:log; got {raw!r}")
        raw = parts
    if isinstance(raw, Mapping):
        unknown = set(raw) - {"low", "high", "log"}
        if unknown or not {"low", "high"} <= set(raw):
            raise ValueError(f"{where}: a sampled range of {name} has the keys low, high and "
                             f"(optional) log; got {', '.join(map(str, raw))}")
        log = raw.get("log", False)
        if not isinstance(log, bool):
            raise ValueError(f"{where}: log of {name} must be true or false; got {log!r}")
        raw = [raw["low"], raw["high"]]
    if not isinstance(raw, (list, tuple)) or len(raw) != 2:
        raise ValueError(f"{where}: a sampled range of {name} is [low, high]; got {raw!r}")
    low, high = (coerce(name, v, where) for v in raw)
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        raise ValueError(f"{where}: the range of {name} needs finite low <= high; "
                         f"got {low}:{high}")
    if log and low <= 0:
        raise ValueError(f"{where}: a log range of {name} needs low > 0; got {low}")
    return SampleRange(float(low), float(high), log)


MAX_RUNS = 1_000_000
"""Most runs a sweep may hold (grid points x sample points x seeds), and so most grid values,
sample points or seeds: a million runs of the smallest machine already take days."""


def _at_most(what: str, count: int) -> None:
    if count > MAX_RUNS:
        raise ValueError(f"{what}: {count:,} is more than a sweep holds (at most "
                         f"{MAX_RUNS:,} runs)")


def _seeds(raw: Any) -> tuple[int, ...]:
    if isinstance(raw, str):
        try:
            parts = [int(s) for s in raw.split(",")]
        except ValueError:
            raise ValueError(f"seeds: a count or a list of seeds; got {raw!r}") from None
        raw = parts if "," in raw else parts[0]
    if isinstance(raw, (bool, np.bool_)):
        raise ValueError(f"seeds: a count or a list of seeds; got {raw!r}")
    if isinstance(raw, (int, np.integer)):
        if raw < 1:
            raise ValueError(f"seeds: the number of seeds must be at least 1; got {raw}")
        _at_most("seeds", int(raw))
        return tuple(range(int(raw)))
    if not isinstance(raw, (list, tuple)) or not raw:
        raise ValueError(f"seeds: a count or a non-empty list of seeds; got {raw!r}")
    seeds = []
    for s in raw:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not SEED.allows(s):
            raise ValueError(f"seeds: each seed must be one of {SEED.describe()}; got {s!r}")
        seeds.append(int(s))
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: a seed is listed twice in {seeds}")
    return tuple(seeds)


def build_spec(raw: Mapping[str, Any], codes: bool = True) -> SweepSpec:
    """Check a spec (the mapping of a TOML file, see the module docstring) and normalise it.

    Every problem raises ``ValueError`` naming the value and what is allowed; every machine
    parameter combination is built once (:meth:`mark1.Preset.with_overrides`), so a value out
    of its part's range is found before any run. ``codes=False`` leaves out
    :func:`check_codes` (for the caller to run it later).
    """
    if not isinstance(raw, Mapping):
        raise ValueError(f"a sweep spec is a table of settings; got {type(raw).__name__}")
    fixed: dict[str, Any] = {}
    grid: dict[str, list[Any]] = {}
    where_of: dict[str, str] = {}

    def claim(name: str, where: str) -> None:
        _check_name(name, where)
        if name in where_of:
            raise ValueError(f"{where}: {name} is already given in {where_of[name]}")
        where_of[name] = where

    for name, value in raw.items():
        if name in _SECTIONS:
            continue
        claim(name, name)
        if isinstance(value, (list, tuple, Mapping)):
            grid[name] = _grid_values(name, value, name)
        elif name == "task_seed" and value == "seed":
            fixed[name] = None
        else:
            fixed[name] = coerce(name, value, name)
    for section in ("set", "grid"):
        table = raw.get(section, {})
        if not isinstance(table, Mapping):
            raise ValueError(f"{section}: a table of NAME = VALUE; got {table!r}")
        for name, value in table.items():
            where = f"{section}.{name}"
            claim(name, where)
            if section == "set":
                if name not in PARAMETERS:
                    raise ValueError(f"{where}: {name} is not a machine parameter; set run "
                                     "settings at the top level")
                fixed[name] = coerce(name, value, where)
            else:
                grid[name] = _grid_values(name, value, where)
    samples, n_samples, sampler, sample_seed = _sample_section(raw.get("sample"), claim)
    for name, values in grid.items():
        where = where_of[name]
        for v in values:
            _check_value(name, v, where)
        if len(set(values)) != len(values):
            twice = next(v for v in values if values.count(v) > 1)
            raise ValueError(f"{where}: the grid of {name} lists {twice!r} twice")
    for name, value in fixed.items():
        if value is not None:
            _check_value(name, value, where_of[name])
    for name, r in samples.items():
        for v in (r.low, r.high):
            _check_value(name, parameter_kind(name)(v), where_of[name])
    defaults = _markI_defaults()
    if "task" not in fixed and "task" not in grid:
        raise ValueError("task: no task given; a sweep needs one (see `mark1 tasks`)")
    for name in SETTINGS:
        if name not in grid and name not in fixed and name not in samples:
            fixed[name] = defaults.get(name)
    seeds = _seeds(raw.get("seeds", 1))
    _at_most("the sweep's runs (grid points x sample points x seeds)",
             math.prod(len(v) for v in grid.values()) * max(n_samples, 1) * len(seeds))
    spec = SweepSpec(fixed, grid, samples, n_samples, sampler, sample_seed, seeds)
    _check_machines(spec, where_of)
    if codes:
        check_codes(spec)
    return spec


def _sample_section(section: Any, claim: Any) -> tuple[dict[str, SampleRange], int, str, int]:
    if section is None:
        return {}, 0, "lhs", 0
    if not isinstance(section, Mapping):
        raise ValueError(f"sample: a table with method, n, seed and ranges; got {section!r}")
    unknown = set(section) - {"method", "n", "seed", "ranges"}
    if unknown:
        raise ValueError(f"sample: unknown key {sorted(unknown)[0]!r}; allowed: method, n, "
                         "seed, ranges")
    sampler = section.get("method", "lhs")
    if sampler not in SAMPLERS:
        raise ValueError(f"sample.method: unknown sampler {sampler!r}; allowed: "
                         f"{', '.join(SAMPLERS)}")
    whole = {}
    for key, low in (("n", 1), ("seed", 0)):
        value = section.get(key, 0 if key == "seed" else None)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"sample.{key} must be a whole number >= {low}; got {value!r}")
        whole[key] = value
    _at_most("sample.n", whole["n"])
    ranges = section.get("ranges", {})
    if not isinstance(ranges, Mapping) or not ranges:
        raise ValueError("sample.ranges: give at least one NAME = [LOW, HIGH] to sample")
    samples = {}
    for name, value in ranges.items():
        where = f"sample.ranges.{name}"
        claim(name, where)
        samples[name] = _sample_range(name, value, where)
    return samples, whole["n"], str(sampler), whole["seed"]


def _check_machines(spec: SweepSpec, where_of: Mapping[str, str]) -> None:
    """Build every distinct machine of the design once: a value out of range stops here."""
    seen: set[tuple[str, tuple[tuple[str, Any], ...]]] = set()
    for point in spec.points():
        values = {**spec.fixed, **point}
        machine = tuple(sorted((k, v) for k, v in values.items() if k in PARAMETERS))
        if (values["preset"], machine) not in seen:
            seen.add((values["preset"], machine))
            try:
                get_preset(values["preset"]).with_overrides(**dict(machine))
            except (ValueError, TypeError) as exc:
                name = _named_in(exc, dict(machine))
                at = (f"{where_of[name]} = {values[name]!r}"
                      if name is not None and name in where_of else f"preset {values['preset']}")
                raise ValueError(f"{at}: {exc}") from None


def check_codes(spec: SweepSpec) -> None:
    """Check that the R-units of every run can code its task's classes."""
    from mark1.r_units import make_codebook
    from mark1.stimuli import task_classes

    done: set[tuple[str, int, str]] = set()
    for run in spec.runs():
        if (run.task, run.n_r, run.code) in done:
            continue
        done.add((run.task, run.n_r, run.code))
        try:
            make_codebook(len(task_classes(run.task)), run.n_r, run.code)
        except ValueError as exc:
            raise ValueError(f"task {run.task}: {exc}") from None


def _named_in(exc: Exception, machine: Mapping[str, Any]) -> str | None:
    """The parameter a part's error names (``pots: stuck_fraction must be...``)."""
    words = str(exc).replace(":", " ").replace("(", " ").split()
    return next((w for w in words if w in machine), None)


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """The mapping of a TOML spec file (``ValueError`` naming the file and the fault)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a TOML spec file (not UTF-8 text)") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not a valid TOML spec: {str(exc).splitlines()[0]}") from None


def load_spec(spec: SweepSpec | Mapping[str, Any] | str | Path,
              codes: bool = True) -> SweepSpec:
    """A :class:`SweepSpec` from a spec, a mapping or the path of a TOML file (``codes``: see
    :func:`build_spec`)."""
    if isinstance(spec, SweepSpec):
        return spec
    if isinstance(spec, (str, Path)):
        return build_spec(read_spec_file(spec), codes)
    return build_spec(spec, codes)
