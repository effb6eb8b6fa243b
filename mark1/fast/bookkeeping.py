"""Book-keeping of a training pass shared by the fast paths: rows, logs, clock and progress."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mark1.fast.rows import ARows
from mark1.motors import MachineClock
from mark1.potentiometers import PotentiometerBank

Progress = Callable[[int, int], None]
"""``progress(new_trials, new_mistakes)``, called as a pass advances."""

REPORT_EVERY = 512
"""Trials between progress reports (the numpy block path reports at the first block end
after as many)."""

EpochResult = tuple[np.ndarray, np.ndarray, np.ndarray]
"""What a pass did: wrong (bool (n,)), motor steps (int64 (n,)), machine time after each trial
(int64 (n,), microseconds)."""


class EpochBook:
    """A pass in progress: its rows in presentation order, what each trial did, the clock.

    ``moved[k]``: pots turned after trial ``k`` (0 when the motors do not run), ``motor_us[k]``
    the motors' time for them (:meth:`mark1.motors.MotorSpec.motor_us`); the clock is brought
    up to date by :meth:`finish`.
    """

    def __init__(self, rows: ARows, positive: np.ndarray, order: np.ndarray | None,
                 progress: Progress | None, clock: MachineClock, motors: bool) -> None:
        n = len(positive)
        self.src, self.A, self.positive, self.order = rows, rows.A, positive, order
        self.progress, self.clock, self.motors = progress, clock, motors
        self.wrong = np.zeros(n, dtype=bool)
        self.moved = np.zeros(n, dtype=np.int64)  # pots turned after each trial
        self.motor_us = np.zeros(n, dtype=np.int64)
        self.t0, self.pres = clock.t_us, clock.present_us
        self.extra_us = 0  # motor time so far this pass
        self.mistakes = 0
        self.reported = 0  # trials reported so far
        self._reported_mistakes = 0

    def corrected(self, k: int, n_pots: int, was_wrong: bool) -> None:
        """Trial ``k`` turned ``n_pots`` pots (and was a mistake if ``was_wrong``)."""
        if was_wrong:
            self.wrong[k] = True
            self.mistakes += 1
        if self.motors and n_pots:
            self.moved[k] = n_pots
            dt = self.clock.motors.motor_us(n_pots)
            self.motor_us[k] = dt
            self.extra_us += dt

    def mark(self, ks: np.ndarray, signs: np.ndarray, n_active: np.ndarray) -> None:
        """Log the mistakes at trials ``ks`` (already counted): each corrected the R-units
        with nonzero ``signs`` over its ``n_active`` active A-units."""
        self.wrong[ks] = True
        if self.motors and len(ks):
            n_pots = n_active * np.count_nonzero(signs, axis=1)
            self.moved[ks] = n_pots
            dt = self.clock.motors.motor_us(n_pots)
            self.motor_us[ks] = dt
            self.extra_us += int(dt.sum())

    def motors_ran(self, i: int, j: int) -> None:
        """Trials ``i..j-1`` turned ``moved`` pots each: their motors' time (none when the
        motors do not run, and then no pots count as moved)."""
        if self.motors:
            dt = self.clock.motors.motor_us(self.moved[i:j])
            self.motor_us[i:j] = dt
            self.extra_us += int(dt.sum())
        else:
            self.moved[i:j] = 0

    def time_us(self, k: int) -> int:
        """Machine time at the reading of trial ``k`` (motor time before it included), us."""
        return self.t0 + self.extra_us + self.pres * (k + 1)

    def report(self, i: int, final: bool = False) -> None:
        """Report progress after ``i`` trials when due (or ``final``), the clock set to then."""
        if self.progress is not None and (i - self.reported >= REPORT_EVERY or final):
            self.clock.t_us = self.t0 + self.pres * i + self.extra_us
            self.progress(i - self.reported, self.mistakes - self._reported_mistakes)
            self.reported, self._reported_mistakes = i, self.mistakes

    def finish(self) -> EpochResult:
        """Bring the clock up to the end of the pass; what each trial did."""
        n = len(self.positive)
        clock = self.clock
        steps = self.moved * clock.motors.steps_per_correction
        time_log = self.t0 + self.pres * np.arange(1, n + 1, dtype=np.int64) + np.cumsum(
            self.motor_us)
        clock.t_us = int(time_log[-1]) if n else self.t0
        clock.trials += n
        clock.motor_us += int(self.motor_us.sum())
        clock.motor_steps += int(steps.sum())
        self.report(n, final=True)
        self.src.last_mistakes = self.mistakes
        return self.wrong, steps, time_log


def correction_step(bank: PotentiometerBank, book: EpochBook) -> float:
    """How far a correction turns an exact pot: the step times the steps per correction (one
    step when the motors do not run)."""
    n_steps = book.clock.motors.steps_per_correction if book.motors else 1
    return float(bank.spec.step * n_steps)


def whole_number_sums(book: EpochBook, bank: PotentiometerBank, rows: slice,
                      r_theta: float) -> bool:
    """True when every R-unit sum of this pass on exact pots is a whole number below 2**24 in
    magnitude: whole-number steps, threshold and weights, and no sum that can reach 2**24 (the
    weights' magnitudes now plus a step on every active pot at every trial). Such sums are
    exact in float32 and float64 in any order of summation, so the fast exact paths make the
    reference's decisions whatever order they sum in."""
    step = correction_step(bank, book)
    if not (bank.exact and step.is_integer() and float(r_theta).is_integer()):
        return False
    W = bank.lin[rows, 0]
    if not np.array_equal(W, np.round(W)):
        return False
    most_active = int(book.src.n_active.max(initial=0))
    bound = float(np.abs(W).sum(axis=1).max(initial=0.0)) + abs(float(r_theta)) + step * (
        most_active * (len(book.positive) + 1))
    return bound < 2.0**24
