"""One trial of a Mark I, watched: what its cells, A-units, R-units and pots did.

A trial is :meth:`MarkI.partial_fit` on one card: the card is shown (the cells carry their
state from the previous card), the R-units answer, and on a mistake the motors turn the pots
of the active A-units one correction toward the right answer (Rosenblatt's rule). Around that
call :func:`one_trial` reads what the page shows, from the machine's public parts only:

* the cells at the reading, from the retina's state (:func:`cells_at_reading`): each cell's
  conductance relative to the one at which its S-unit fires -- a card shown too briefly
  leaves the previous card's ghost here;
* the A-units that fired (:meth:`Plugboard.respond` of those S-units);
* the R-units' sums before and after the correction, with the pots read without contact noise
  (the machine itself read them with it);
* which pots the motors turned: the active A-units' pots on the R-units corrected, and among
  them the wipers that moved (a stuck wiper, or a motor taking up gear play, turns nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mark1.images import N_CELLS
from mark1.machine import MarkI
from mark1.r_units import decode


@dataclass
class Trial:
    """What one trial (or one look at a card, with nothing learned) did."""

    card: np.ndarray
    """The light on the retina, relative illuminance, float64 (400,)."""
    label: int | None
    """The right class, as an index into the machine's ``classes_`` (``None`` for a look)."""
    cells: np.ndarray
    """Each cell's conductance at the reading over its S-unit's firing level, float64 (400,)."""
    s: np.ndarray
    """S-units that fired, bool (400,)."""
    a: np.ndarray
    """A-units that fired, bool (n_a,)."""
    sums_before: np.ndarray
    """R-unit sums at the reading (the pots as read then without contact noise), float64
    (n_r,); NaN for the R-units corrected on the trial that wired the machine (their pots
    before it are not kept)."""
    sums_after: np.ndarray
    """R-unit sums after the correction (the pots read when the motors stopped), float64."""
    answer: int
    """The class the sums before the correction decode to (the response), as an index into
    the machine's ``classes_``."""
    mistake: bool
    """The machine answered wrongly (its rule then turned pots)."""
    motors: np.ndarray
    """Pots whose motors ran on this trial, bool (n_r, n_p) (the bias pot last)."""
    moved: np.ndarray
    """Pots whose wipers moved on this trial, bool (n_r, n_p)."""
    motor_steps: int
    """Motor steps taken on this trial."""
    machine_time_s: float
    """The machine clock after the trial, s."""


def cells_at_reading(machine: MarkI) -> tuple[np.ndarray, np.ndarray]:
    """The retina at its last reading: each cell's conductance over its S-unit's firing level
    (float64 (400,); 0 for a dead cell), and the S-units that fired (bool (400,)).

    The S-unit fires iff ``c * (1 + memory_gain * m) > c_th`` (see :mod:`mark1.retina`); the
    retina keeps ``c`` and ``m`` as they were at the last card's reading.
    """
    retina = machine.retina_
    level = retina.c * (1 + retina.cells.memory_gain * retina.m)
    c_th = retina.conductance_threshold()
    fired = level > c_th
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(np.isfinite(c_th) & (c_th > 0), level / c_th, np.where(fired, np.inf, 0))
    return ratio, fired


def a_units(machine: MarkI, s: np.ndarray) -> np.ndarray:
    """The A-units that fire for S-units ``s`` (bool (n_a,))."""
    return machine.plugboard_.respond(np.asarray(s)[None, :])[0]


def pot_columns(machine: MarkI, a: np.ndarray) -> np.ndarray:
    """The pot columns an A-unit pattern ``a`` drives: the active A-units, and the bias line."""
    cols = np.flatnonzero(a)
    if machine.pots_.shape[1] > len(a):  # the always-active bias line
        cols = np.append(cols, len(a))
    return cols


def read_pots(machine: MarkI, ahead_s: float = 0.0) -> np.ndarray:
    """Every pot as read without contact noise ``ahead_s`` seconds of machine time from now
    (if nothing moves them meanwhile), bias pots last, float64 (n_r, n_p)."""
    return machine.pots_.read(machine.machine_time_s + ahead_s)


def reading_delay_s(machine: MarkI) -> float:
    """Machine time from now to the reading of the next card: the change and the dwell, s."""
    return machine.clock_.present_us / 1e6


def sums(machine: MarkI, pots: np.ndarray, a: np.ndarray) -> np.ndarray:
    """R-unit sums ``pots . a - r_theta`` of an A-unit pattern (bias line included)."""
    return pots[:, pot_columns(machine, a)].sum(axis=1) - machine.preset_.r_units.r_theta


def one_trial(machine: MarkI, card: np.ndarray, label: object,
              classes: np.ndarray | None = None) -> Trial:
    """Train ``machine`` on one card of class ``label`` and say what the trial did.

    ``classes``: every class the machine will know (needed on its first trial, which wires
    it). The machine learns exactly as ``machine.partial_fit([card], [label])`` would.
    """
    card = np.asarray(card, dtype=np.float64).reshape(N_CELLS)
    wired = hasattr(machine, "classes_")
    before = read_pots(machine, reading_delay_s(machine)) if wired else None
    travel = machine.pots_.travel.copy() if wired else None
    steps = machine.motor_steps if wired else 0
    machine.partial_fit(card[None, :], np.array([label]), classes=None if wired else classes)
    forget_pass_logs(machine)
    cells, s = cells_at_reading(machine)
    a = a_units(machine, s)
    after = read_pots(machine)
    # the wipers that moved (on the trial that wired the machine, the pots before are not kept)
    moved = np.greater(machine.pots_.travel, 0.0 if travel is None else travel)
    motor_steps = machine.motor_steps - steps
    turned: np.ndarray = moved.any(axis=1)
    if machine.rule == "forced-response" or (motor_steps and not turned.any()):
        turned[:] = False
        turned[machine.units_] = True  # every trained R-unit (or all its wipers were stuck)
    motors = np.zeros_like(moved)  # (the ideal rule turns weights without motors: same pots)
    if turned.any():
        motors[np.ix_(np.flatnonzero(turned), pot_columns(machine, a))] = True
    if before is None:
        before = after.copy()
        before[turned] = np.nan
    sums_before = sums(machine, before, a)
    return Trial(
        card=card, label=int(np.flatnonzero(machine.classes_ == label)[0]), cells=cells,
        s=s, a=a, sums_before=sums_before,
        sums_after=sums(machine, after, a),
        answer=int(decode(machine.codebook_, np.nan_to_num(sums_before)[None, :])[0]),
        mistake=bool(machine.history_["mistakes"][-1]), motors=motors, moved=moved,
        motor_steps=int(motor_steps), machine_time_s=machine.machine_time_s)


def look(machine: MarkI, card: np.ndarray) -> Trial:
    """Show ``machine`` a card without teaching it (:meth:`MarkI.present`: the cells lag, the
    clock runs) and say what it saw and answered."""
    card = np.asarray(card, dtype=np.float64).reshape(N_CELLS)
    machine.present(card[None, :])
    cells, s = cells_at_reading(machine)
    a = a_units(machine, s)
    pots = read_pots(machine)
    r = sums(machine, pots, a)
    none = np.zeros(pots.shape, dtype=bool)
    return Trial(card=card, label=None, cells=cells, s=s, a=a, sums_before=r, sums_after=r,
                 answer=int(decode(machine.codebook_, r[None, :])[0]), mistake=False,
                 motors=none, moved=none, motor_steps=0, machine_time_s=machine.machine_time_s)


def forget_pass_logs(machine: MarkI) -> None:
    """Keep only the last pass's entries of the machine's per-pass logs.

    Every call of ``partial_fit`` is a pass; trial by trial, the logs would grow for as long as
    the page runs. The page keeps its own curves.
    """
    del machine.epoch_logs_[:-1]
    del machine.mistakes_per_epoch_[:-1]
    for values in machine.history_.values():
        del values[:-1]
