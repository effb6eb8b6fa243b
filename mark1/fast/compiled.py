"""The numba-compiled passes, driven from Python: the bank's state in, the kernels run, back out.

numba is an accelerator, never a requirement: :func:`load` imports it (through
:mod:`mark1.fast._numba_epochs`) only when a pass is trained on this path, never at
``import mark1``. The compiled passes give exactly the reference's results -- the same
mistakes, logs, clock, bank state and random draws -- because they perform the reference's
float operations in its order (see :mod:`mark1.fast._numba_epochs`).
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from mark1.fast.bookkeeping import EpochBook, correction_step
from mark1.potentiometers import STEP_QUANTILES, BankState, PotentiometerBank

_TURNED = ("base", "creep", "travel", "lash")  # the pot arrays a pass changes (and t_hit)
_LIN_FIELDS = np.arange(3)  # the linear model's rows in the kernels' model
_LOADED: list[ModuleType | None] = []  # the compiled module, or None when numba cannot load
WHY_NOT: list[str] = []
"""Why numba could not be loaded (one line), when it could not."""


def load() -> ModuleType | None:
    """The compiled passes' module, or ``None`` when numba cannot be imported."""
    if not _LOADED:
        module: ModuleType | None
        try:
            from mark1.fast import _numba_epochs as module
        except Exception as exc:  # not installed, or an install that does not load
            module = None
            WHY_NOT.append(f"{type(exc).__name__}: {exc}".splitlines()[0])
        _LOADED.append(module)
    return _LOADED[0]


def _state(nb: ModuleType, job: EpochBook) -> np.ndarray:
    """The kernels' integer state with the pass's book-keeping."""
    st = np.zeros(nb.N_INT, dtype=np.int64)
    st[nb.T0], st[nb.PRES], st[nb.MOTORS] = job.t0, job.pres, int(job.motors)
    st[nb.EXTRA_US], st[nb.MISTAKES] = job.extra_us, job.mistakes
    st[nb.REPORTED] = job.reported if job.progress is not None else -1
    st[nb.HAS_ORDER] = int(job.order is not None)
    return st


def _order(job: EpochBook) -> np.ndarray:
    return (np.empty(0, dtype=np.int64) if job.order is None
            else np.ascontiguousarray(job.order, dtype=np.int64))


def _motor_table(job: EpochBook, most_pots: int) -> np.ndarray:
    """The motors' time for 0, 1, ..., ``most_pots`` pots, us (one definition:
    :meth:`mark1.motors.MotorSpec.motor_us`)."""
    return job.clock.motors.motor_us(np.arange(most_pots + 1, dtype=np.int64))


def _report(nb: ModuleType, job: EpochBook, st: np.ndarray) -> None:
    """Bring the pass's book-keeping up to the kernel's and report progress."""
    job.mistakes, job.extra_us = int(st[nb.MISTAKES]), int(st[nb.EXTRA_US])
    job.report(int(st[nb.AT]))
    st[nb.REPORTED] = job.reported


def exact_epoch(nb: ModuleType, job: EpochBook, bank: PotentiometerBank, rows: slice,
                r_theta: float, forced: bool) -> None:
    """Error correction (or forced response) on exact pots whose sums are whole numbers below
    2**24 (:func:`mark1.fast.bookkeeping.whole_number_sums`: the caller checks)."""
    indptr, indices = job.src.csr()
    st = _state(nb, job)
    st[nb.FORCED] = int(forced)
    pos = np.ascontiguousarray(job.positive)
    W32 = bank.lin[rows, 0]
    base, travel = bank.base[rows], bank.travel[rows]
    W = np.ascontiguousarray(W32)  # contiguous rows: vectorised sums
    order, step = _order(job), correction_step(bank, job)
    done = 0
    while True:
        status = nb.exact_epoch(job.A, order, pos, W, base, travel, indptr, indices, step,
                                np.float32(r_theta), job.wrong, job.moved, st)
        at = int(st[nb.AT])
        job.motors_ran(done, at)  # the pots turned into motor time
        st[nb.EXTRA_US], done = job.extra_us, at
        if status != nb.PROGRESS:
            break
        _report(nb, job, st)
    W32[:] = W
    job.mistakes, job.extra_us = int(st[nb.MISTAKES]), int(st[nb.EXTRA_US])


def physical_epoch(nb: ModuleType, job: EpochBook, bank: PotentiometerBank, units: np.ndarray,
                   rng: np.random.Generator, forced: bool, noise: np.ndarray | None,
                   r_theta: float) -> None:
    """Error correction (or forced response) on physical pots: the bank's
    :class:`~mark1.potentiometers.BankState` packed for the kernel, the pass run, the state
    written back."""
    state: BankState = bank.state
    draws = state.draws
    spec = bank.spec
    indptr, indices = job.src.csr()
    units = np.ascontiguousarray(units, dtype=np.int64)
    noisy = noise is not None and spec.read_noise > 0
    n_steps = job.clock.motors.steps_per_correction if job.motors else 1
    st = _state(nb, job)
    st[nb.N_PINNED], st[nb.CREEP_CHANGES] = state.n_pinned, state.creep_changes
    st[nb.DRIFTS], st[nb.NOISY], st[nb.FORCED] = int(bank.drifts), int(noisy), int(forced)
    st[nb.PLAY], st[nb.C2C] = int(bool(bank.play)), int(bool(spec.step_c2c))
    st[nb.Z_AT] = draws.at
    st[nb.Z_FRESH] = 2 if draws.rng is not rng else int(draws.steps != n_steps)
    ft = np.zeros(nb.N_FLOAT)
    ft[nb.NEXT_STOP], ft[nb.HALF], ft[nb.INV_WEAR] = state.next_stop_s, state.half_play, \
        state.inv_wear
    ft[nb.NOISE_WEAR], ft[nb.READ_NOISE] = state.inv_wear * spec.read_noise, spec.read_noise
    ft[nb.C2C_SCALE], ft[nb.N_STEPS_F] = spec.step_c2c * np.sqrt(n_steps), float(n_steps)
    ft[nb.R_THETA] = r_theta
    row_stop = np.array(state.row_stop, dtype=np.float64)
    pos = np.ascontiguousarray(job.positive)
    normal = np.ascontiguousarray(noise, dtype=np.float64) if noisy else np.zeros((1, 1))
    pots = np.empty((*bank.shape, len(nb.POT_FIELDS)))  # the kernels' layout (see POT_FIELDS)
    nb.pack(tuple(getattr(state, name) for name in nb.POT_FIELDS), pots)
    model = np.zeros((*bank.shape, nb.MODEL_WIDTH), dtype=np.float32)
    lin = tuple(state.lin[:, k] for k in range(3))  # (views)
    nb.pack(lin, model)
    table = _motor_table(job, job.A.shape[1] * pos.shape[1])
    z, counts = draws.z, draws.counts
    order = _order(job)
    while True:
        status, z, counts = nb.physical_epoch(
            order, pos, normal, units, model, pots, state.t_hit, row_stop, indptr,
            indices, job.wrong, job.moved, job.motor_us, table, st, ft, z, counts,
            STEP_QUANTILES, rng)
        if status == nb.DONE:
            break
        _report(nb, job, st)
    nb.unpack(pots, np.array([nb.POT_FIELDS.index(name) for name in _TURNED]),
              tuple(getattr(state, name) for name in _TURNED))
    nb.unpack(model, _LIN_FIELDS, lin)
    job.mistakes, job.extra_us = int(st[nb.MISTAKES]), int(st[nb.EXTRA_US])
    state.n_pinned, state.creep_changes = int(st[nb.N_PINNED]), int(st[nb.CREEP_CHANGES])
    state.next_stop_s = float(ft[nb.NEXT_STOP])
    state.row_stop = row_stop.tolist()
    draws.z, draws.counts, draws.at = z, counts, int(st[nb.Z_AT])
    if st[nb.REFILLED]:
        draws.rng, draws.steps = rng, n_steps
