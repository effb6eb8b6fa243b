"""Named machines: every physical part's parameters, with where each number came from.

``ideal``
    Exact cells (no spread, lag, memory or dead cells; linear response, each S-unit switching
    at exactly half the lamp level), ideal pots (exact unit steps, no end stops, noise, drift
    or wear): the textbook perceptron on the A-unit features. It keeps the Mark I's wiring,
    motors and clock, so its machine time compares with the physical machine's.

``cds-1960``
    The most faithful Mark I we can justify. Sources: Rosenblatt, Psychological Review 1958;
    Principles of Neurodynamics 1962; Mark I Perceptron Operators' Manual 1960 (architecture:
    400 CdS cells in 20 x 20, random plugboard with excitatory and inhibitory wires, 512
    A-units, 8 R-units, motor-driven potentiometers); CdS photocell datasheet ranges as
    collected in the project's design notes. Number by number:

    * from the sources: 20 x 20 cells, 512 A-units, 8 R-units (Mark I; set on the estimator);
      R10 = 20 kOhm (datasheets: 10-40 kOhm) with +/-50 % cell-to-cell spread; gamma = 0.7
      (typical 0.6-0.8); dark resistance 1 MOhm (datasheets: >= 1 MOhm); rise 55 ms and decay
      20 ms (a datasheet example); a reversible light-history memory; temperature drift up to
      +/-20 % (here at the reference temperature, factor 1.0, adjustable);
    * chosen (no source gives them): lamp 100 lux on the cells, 1 lux of stray light; gamma
      spread +/-0.05; light-history gain 10 % with a 60 s time constant; 0.5 % dead cells
      (2 of 400); a 10 V divider with a 6.8 kOhm load (the standard value nearest a nominal
      cell at half the lamp level) and a 5 V S-unit trigger; 10 excitatory and 10 inhibitory
      wires per A-unit with threshold 1 (about a third of the A-units active on a figure);
      weights between -1 and +1 in steps of 0.02 (100 steps end to end) with 10 % device and
      5 % step spread, 10 % up/down asymmetry, half a step of backlash, end-stop spread 1 %,
      step halved after 1,000 full sweeps of wear, creep of 0.01 per hour (sd), 0.2 % stuck
      wipers, contact noise 0.005 per read, initial setting error 0.01; one motor step per
      correction, 0.1 s per step, 64 motors at once; 50 ms card change in the dark, 150 ms
      dwell before the reading; a bias pot on an always-active line (a learned threshold).

``cds-worn``
    ``cds-1960`` after years of service: more dead cells and stuck wipers, more backlash,
    drift and contact noise (all chosen, to show what worn parts do to learning).

Overrides: every parameter field has a name unique across the parts, so
``preset.with_overrides(gamma=0.6, read_noise=0.01)`` (and ``MarkI(machine={"gamma": 0.6})``)
works.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields, replace
from typing import Any

from mark1.limits import Limit, field_limits
from mark1.motors import ClockSpec, MotorSpec
from mark1.plugboard import PlugboardSpec
from mark1.potentiometers import IDEAL_POTS, PotSpec
from mark1.r_units import RUnitSpec
from mark1.retina import CdSCells

PARTS: dict[str, type] = {
    "cells": CdSCells,
    "plugboard": PlugboardSpec,
    "pots": PotSpec,
    "motors": MotorSpec,
    "clock": ClockSpec,
    "r_units": RUnitSpec,
}
"""The machine's parts, by the :class:`Preset` attribute that holds each."""

PARAMETERS: dict[str, str] = {f.name: part for part, cls in PARTS.items() for f in fields(cls)}
"""Every parameter name and the part it belongs to."""

assert len(PARAMETERS) == sum(len(fields(c)) for c in PARTS.values()), "parameter names clash"

LIMITS: dict[str, Limit] = {name: lim for cls in PARTS.values()
                            for name, lim in field_limits(cls).items()}
"""The allowed range of every numeric parameter, from its field (flags have none)."""


@dataclass(frozen=True)
class Preset:
    """A complete machine: one parameter set per physical part."""

    name: str
    """Preset name."""
    description: str
    """One line on what this machine is."""
    cells: CdSCells
    """Photocells and S-units."""
    plugboard: PlugboardSpec
    """Plugboard wiring and A-unit thresholds."""
    pots: PotSpec
    """Potentiometer bank."""
    motors: MotorSpec
    """Pot motors."""
    clock: ClockSpec
    """Trial timing."""
    r_units: RUnitSpec
    """Response units."""

    def with_overrides(self, **overrides: Any) -> Preset:
        """A copy with some parameters changed (names from :data:`PARAMETERS`)."""
        if not overrides:
            return self
        by_part: dict[str, dict[str, Any]] = {}
        for key, value in overrides.items():
            if key not in PARAMETERS:
                raise ValueError(
                    f"unknown machine parameter {key!r}; allowed: {', '.join(sorted(PARAMETERS))}"
                )
            by_part.setdefault(PARAMETERS[key], {})[key] = value
        parts = {part: replace(getattr(self, part), **vals) for part, vals in by_part.items()}
        return replace(self, **parts)

    def parameters(self) -> dict[str, Any]:
        """Every parameter of this machine, flat, by name."""
        return {name: getattr(getattr(self, part), name) for name, part in PARAMETERS.items()}


_WIRING = PlugboardSpec(n_excitatory=10, n_inhibitory=10, a_theta=1.0)
_MOTORS = MotorSpec(steps_per_correction=1, step_s=0.1, max_running=64)
_CLOCK = ClockSpec(dwell_s=0.15, change_s=0.05)

IDEAL = Preset(
    name="ideal",
    description="exact cells and continuous, noise-free weights: the textbook perceptron",
    cells=CdSCells(lamp_lux=100.0, gamma=1.0, r10_ohm=20e3, load_ohm=4e3),
    plugboard=_WIRING,
    pots=IDEAL_POTS,
    motors=_MOTORS,
    clock=_CLOCK,
    r_units=RUnitSpec(r_theta=0.0, bias_unit=True),
)

CDS_1960 = Preset(
    name="cds-1960",
    description="the Mark I as built: CdS cells, motor-driven pots, all their imperfections",
    cells=CdSCells(
        lamp_lux=100.0, ambient_lux=1.0, r10_ohm=20e3, r10_spread=0.5, gamma=0.7,
        gamma_spread=0.05, dark_ohm=1e6, rise_s=0.055, decay_s=0.020, memory_gain=0.1,
        memory_s=60.0, temperature_factor=1.0, dead_fraction=0.005, supply_v=10.0,
        load_ohm=6.8e3, s_threshold_v=5.0,
    ),
    plugboard=_WIRING,
    pots=PotSpec(
        w_min=-1.0, w_max=1.0, w_init=0.0, init_sd=0.01, bound_sd=0.01, step=0.02,
        step_d2d=0.1, step_c2c=0.05, up_down=1.1, backlash_steps=0.5, wear_sweeps=1000.0,
        drift_sd=0.01, stuck_fraction=0.002, read_noise=0.005,
    ),
    motors=_MOTORS,
    clock=_CLOCK,
    r_units=RUnitSpec(r_theta=0.0, bias_unit=True),
)

CDS_WORN = dataclasses.replace(
    CDS_1960.with_overrides(
        dead_fraction=0.02, stuck_fraction=0.05, backlash_steps=2.0, drift_sd=0.1,
        read_noise=0.02, wear_sweeps=100.0,
    ),
    name="cds-worn",
    description="the Mark I after years of service: dead cells, stuck wipers, play and drift",
)

PRESETS: dict[str, Preset] = {p.name: p for p in (IDEAL, CDS_1960, CDS_WORN)}
"""The named machines."""


def get_preset(preset: str | Preset) -> Preset:
    """The preset named ``preset`` (or ``preset`` itself when it is one)."""
    if isinstance(preset, Preset):
        return preset
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; allowed: {', '.join(PRESETS)}")
    return PRESETS[preset]


def parse_override(text: str) -> tuple[str, Any]:
    """``"NAME=VALUE"`` (command-line form) to ``(name, value)`` typed like the field and
    checked against its range (:data:`LIMITS`)."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ValueError(f"machine parameter must be NAME=VALUE; got {text!r}")
    if name not in PARAMETERS:
        raise ValueError(
            f"unknown machine parameter {name!r}; allowed: {', '.join(sorted(PARAMETERS))}"
        )
    default = getattr(getattr(CDS_1960, PARAMETERS[name]), name)
    raw = raw.strip()
    if isinstance(default, bool):
        if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"machine parameter {name} is a flag (true or false); got {raw!r}")
        return name, raw.lower() in ("true", "1", "yes")
    try:
        return name, LIMITS[name].parse(raw)
    except ValueError as exc:
        raise ValueError(f"machine parameter {name}: {exc}") from None
