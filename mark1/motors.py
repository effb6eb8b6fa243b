"""The motors that turn the potentiometers, and the machine clock.

A correction turns each selected pot by ``steps_per_correction`` whole motor steps. The power
supply runs at most ``max_running`` motors at once, so ``n`` pots take
``ceil(n / max_running)`` rounds of ``steps_per_correction * step_s`` seconds
(:meth:`MotorSpec.motor_us`, the one definition of motor time).

The clock counts what the physical machine would need: per trial the stimulus change
(``change_s``, cells in the dark) and dwell (``dwell_s``, the photocells settling on the new
stimulus before the response is read), plus the motors' time when pots are turned. It ticks
in whole microseconds, so machine time adds up exactly whatever the order of the sums.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from mark1.limits import check_fields, limit

_Pots = TypeVar("_Pots", int, np.ndarray)


@dataclass(frozen=True)
class MotorSpec:
    """The pot motors and their supply."""

    steps_per_correction: int = field(default=1, metadata=limit(1, 1000, "steps", integer=True))
    """Motor steps each selected pot turns per correction, steps."""
    step_s: float = field(default=0.1, metadata=limit(0, 3600, "s"))
    """Time for one motor step (the inverse of the motor speed), s."""
    max_running: int = field(default=64, metadata=limit(1, 1_000_000, "motors", integer=True))
    """Most motors the supply runs at once, motors."""

    def __post_init__(self) -> None:
        check_fields(self, "motors: ")

    def motor_us(self, n_pots: _Pots) -> _Pots:
        """Machine time to turn ``n_pots`` pots by one correction each, whole microseconds:
        ``ceil(n_pots / max_running)`` rounds of ``steps_per_correction`` steps of ``step_s``
        (an int, or an int array for an array of pot counts)."""
        rounds = -(-n_pots // self.max_running)
        return rounds * (self.steps_per_correction * to_us(self.step_s))


@dataclass(frozen=True)
class ClockSpec:
    """How long each trial keeps the machine busy besides the motors."""

    dwell_s: float = field(default=0.15, metadata=limit(0, 3600, "s"))
    """Time each stimulus is in view before the response is read (the cells settle), s."""
    change_s: float = field(default=0.0, metadata=limit(0, 3600, "s"))
    """Dark interval while the next stimulus is brought in, s."""

    def __post_init__(self) -> None:
        check_fields(self, "clock: ")


def to_us(seconds: float) -> int:
    """Seconds as whole microseconds (the clock's tick)."""
    return int(round(seconds * 1e6))


class MachineClock:
    """Machine time and motor work so far."""

    def __init__(self, clock: ClockSpec, motors: MotorSpec) -> None:
        self.clock = clock
        self.motors = motors
        self.t_us = 0
        """Machine time, microseconds."""
        self.motor_us = 0
        """Of which motors running, microseconds."""
        self.motor_steps = 0
        """Motor steps taken, summed over all motors."""
        self.trials = 0
        """Stimuli presented."""
        self.present_us = to_us(clock.change_s) + to_us(clock.dwell_s)
        """Machine time of one presentation, microseconds."""

    @property
    def t_s(self) -> float:
        """Machine time, seconds."""
        return self.t_us / 1e6

    def present(self, n: int = 1) -> int:
        """Advance through ``n`` presentations; return the time of the last reading, us."""
        self.t_us += n * self.present_us
        self.trials += n
        return self.t_us

    def run_motors(self, n_pots: int) -> int:
        """Turn ``n_pots`` pots by one correction; return the motor steps taken."""
        if n_pots <= 0:
            return 0
        dt = self.motors.motor_us(n_pots)
        self.t_us += dt
        self.motor_us += dt
        steps = n_pots * self.motors.steps_per_correction
        self.motor_steps += steps
        return steps


CLOCK_LIMIT_US = 2**63 - 1
"""Largest machine time the clock holds: microseconds in a 64-bit integer (about 292,000
years), as the training paths keep it."""


def worst_trial_us(clock: ClockSpec, motors: MotorSpec, n_pots: int) -> int:
    """Longest machine time one trial can take: the presentation, then every pot turned."""
    return to_us(clock.change_s) + to_us(clock.dwell_s) + motors.motor_us(int(n_pots))


def check_clock_room(clock: ClockSpec, motors: MotorSpec, n_pots: int, trials: int,
                     start_us: int = 0) -> None:
    """``ValueError`` unless ``trials`` more trials, each as long as it can be, keep the
    machine clock (now at ``start_us``) within :data:`CLOCK_LIMIT_US`."""
    worst = worst_trial_us(clock, motors, n_pots)
    if start_us + int(trials) * worst > CLOCK_LIMIT_US:
        years = CLOCK_LIMIT_US / 1e6 / 3600 / 24 / 365.25
        raise ValueError(
            f"{int(trials):,} trials of up to {worst / 1e6:,.6g} s of machine time each (dwell_s "
            f"+ change_s + {n_pots:,} pots turned {motors.max_running:,} at a time, "
            f"{motors.steps_per_correction} steps of step_s) could run past the machine clock's "
            f"{years:,.0f} years; use fewer trials, shorter times or more motors at once"
        )
