"""The Mark I's training rules, trial by trial: the definition every faster path is tested against.

``error-correction`` (default)
    Rosenblatt's rule. After each response, every R-unit that answered wrongly has the pots of
    all active A-units (its bias pot included) turned one correction toward the right answer;
    nothing moves when the machine was right.
``forced-response``
    The trainer forces the correct response: on every trial, every trained R-unit has the pots
    of the active A-units turned toward the forced response, right or wrong.
``ideal``
    The textbook perceptron: error correction on exact weights (unit steps from zero, no pot
    physics, no motors: :data:`mark1.potentiometers.IDEAL_POTS`), on whatever retina the
    machine has.

:func:`reference_epoch` is the rule written out, one trial after the other, using only the pot
bank's public operations (``pin``, ``move``), the R-units' sums (:func:`mark1.r_units.unit_sums`)
and the machine clock. :func:`train_epoch` checks its arguments and hands the pass to a faster
path (:mod:`mark1.fast`: numpy blocks, or compiled with numba when installed) that gives
exactly the same results -- the same mistakes, logs, clock, pot states and random draws, tested
field by field -- or, with ``MARK1_KERNELS=reference``, runs the reference itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mark1 import fast
from mark1.fast import ARows
from mark1.fast.bookkeeping import REPORT_EVERY, Progress
from mark1.motors import MachineClock
from mark1.potentiometers import PotentiometerBank
from mark1.r_units import unit_sums

RULES = ("error-correction", "forced-response", "ideal")
"""Names of the training rules."""


@dataclass
class EpochLog:
    """What one pass over the training stimuli did."""

    mistakes: int
    """Trials on which at least one R-unit answered wrongly."""
    wrong: np.ndarray
    """Bool (n,): which trials were mistakes."""
    motor_steps: np.ndarray
    """Int64 (n,): motor steps taken after each trial."""
    time_us: np.ndarray
    """Int64 (n,): machine time at the end of each trial, microseconds."""


def reference_epoch(A: np.ndarray, targets: np.ndarray, bank: PotentiometerBank,
                    units: np.ndarray, clock: MachineClock, rng: np.random.Generator | None, *,
                    rule: str = "error-correction", noise: np.ndarray | None = None,
                    r_theta: float = 0.0, order: np.ndarray | None = None,
                    progress: Progress | None = None) -> EpochLog:
    """One pass of ``rule``, trial by trial (arguments as :func:`train_epoch`'s)."""
    n, n_units = targets.shape
    motors = rule != "ideal"  # the ideal rule: exact weights, no motors, one step a correction
    n_steps = clock.motors.steps_per_correction if motors else 1
    forced = rule == "forced-response"
    log = EpochLog(0, np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64),
                   np.zeros(n, dtype=np.int64))
    reported = 0
    for i in range(n):
        active = np.flatnonzero(A[i if order is None else order[i]])  # the A-units that fire
        t = clock.present() * 1e-6  # the stimulus has dwelt: the responses are read now, s
        bank.pin(t)  # wipers that crept to an end stop rest there
        z = None if noise is None else noise[i]  # contact noise of this reading
        r = unit_sums(bank.lin, units, active, t, z) - r_theta
        wrong = (r > 0) != (targets[i] > 0)  # the R-units that answered wrongly
        turn = np.ones(n_units, dtype=bool) if forced else wrong
        if turn.any():  # each active A-unit's pot one correction toward the right answer
            bank.move(units[turn], active, targets[i, turn], n_steps, t, rng)
            if motors:
                log.motor_steps[i] = clock.run_motors(len(active) * int(turn.sum()))
        if wrong.any():
            log.wrong[i] = True
            log.mistakes += 1
        log.time_us[i] = clock.t_us
        if progress is not None and (i + 1 - reported >= REPORT_EVERY or i + 1 == n):
            progress(i + 1 - reported, int(log.wrong[reported : i + 1].sum()))
            reported = i + 1
    return log


def train_epoch(
    A: np.ndarray | ARows,
    targets: np.ndarray,
    bank: PotentiometerBank,
    units: np.ndarray,
    clock: MachineClock,
    rng: np.random.Generator | None,
    *,
    rule: str = "error-correction",
    noise: np.ndarray | None = None,
    r_theta: float = 0.0,
    order: np.ndarray | None = None,
    progress: Progress | None = None,
) -> EpochLog:
    """Present the stimuli whose A-unit rows are ``A`` once each, correcting the pots as
    ``rule`` says (see the module docstring).

    ``A``: (n_rows, n_p) A-unit outputs, 0 or 1, with a trailing 1 for the bias line (an
    :class:`~mark1.fast.ARows` when the same rows are presented pass after pass), presented in
    the order ``order`` (row ``order[i]`` is trial ``i``; row ``i`` when ``None``);
    ``targets``: (n, len(units)) the right response (+1/-1) of each trained R-unit, per trial;
    ``units``: the R-units trained (rows of ``bank``); ``rng``: the step spread's draws
    (``None`` will do for exact pots);
    ``noise``: (n, len(units)) standard normal draws for the contact noise, per trial, or
    ``None``; ``r_theta``: the R-units' fixed threshold; ``progress(new_trials,
    new_mistakes)`` is called as the pass advances (every 512 trials or so, and at its end).
    The ideal rule needs exact pots. Call it inside :func:`mark1.fast.one_blas_thread` when
    running many passes.
    """
    rows = A if isinstance(A, ARows) else ARows(A)
    targets = np.asarray(targets)
    units = np.asarray(units, dtype=np.int64)
    order = None if order is None else np.asarray(order)
    _check(rows, targets, bank, units, rule, noise, order, rng)
    done = fast.train_epoch(rows, targets, bank, units, clock, rng, rule=rule, noise=noise,
                            r_theta=r_theta, order=order, progress=progress)
    if done is None:  # MARK1_KERNELS=reference
        return reference_epoch(rows.A, targets, bank, units, clock, rng, rule=rule, noise=noise,
                               r_theta=r_theta, order=order, progress=progress)
    wrong, motor_steps, time_us = done
    return EpochLog(int(np.count_nonzero(wrong)), wrong, motor_steps, time_us)


def _check(rows: ARows, targets: np.ndarray, bank: PotentiometerBank, units: np.ndarray,
           rule: str, noise: np.ndarray | None, order: np.ndarray | None,
           rng: np.random.Generator | None) -> None:
    """Refuse arguments :func:`train_epoch` cannot train with, naming what is allowed."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; allowed: {', '.join(RULES)}")
    if not (bank.exact or isinstance(rng, np.random.Generator)):
        raise TypeError(f"physical pots need a numpy Generator for the step spread; got "
                        f"{type(rng).__name__}")
    if rule == "ideal" and not bank.exact:
        raise ValueError("rule 'ideal' trains exact weights (mark1.potentiometers.IDEAL_POTS);"
                         " these pots are physical: use error-correction or forced-response")
    if targets.ndim != 2 or targets.shape[1] != len(units):
        raise ValueError(f"targets must have shape (n, {len(units)}), one column per trained "
                         f"R-unit; got shape {targets.shape}")
    n = len(targets)
    if noise is not None and np.shape(noise) != targets.shape:
        raise ValueError(f"noise must have the targets' shape {targets.shape}; got "
                         f"{np.shape(noise)}")
    if len(units) and not (0 <= units.min() and units.max() < bank.shape[0]):
        raise ValueError(f"units must be R-units of the bank, in [0, {bank.shape[0]})")
    if rows.A.shape[1] != bank.shape[1]:
        raise ValueError(f"A-unit rows have {rows.A.shape[1]} columns for a bank of "
                         f"{bank.shape[1]} pots per R-unit")
    if order is None:
        if len(rows) != n:
            raise ValueError(f"{len(rows)} A-unit rows for {n} trials")
    else:
        if order.shape != (n,) or order.dtype.kind not in "iu" or n and not (
                0 <= order.min() and order.max() < len(rows)):
            raise ValueError(
                f"order must hold {n} row indices in [0, {len(rows)}); got shape "
                f"{order.shape}, dtype {order.dtype}")
