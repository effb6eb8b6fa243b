"""Optional numba-compiled training epochs, and the switch between them and the numpy path.

``MARK1_KERNELS`` (environment variable) decides, on every epoch:

``auto`` (default)
    the compiled epochs when numba can be imported, else the numpy path;
``numpy``
    always the numpy path;
``numba``
    the compiled epochs; an error when numba is missing.

numba is an accelerator, never a requirement: this module imports it (through
:mod:`mark1._numba_epochs`) only when an epoch is trained, never at ``import mark1``. The
compiled epochs give exactly the numpy path's results -- the same mistakes, logs, clock, bank
state and random draws (see :func:`exact_epoch` and :func:`physical_epoch` for how) -- and
decline (returning ``False``) the cases they do not cover, which then take the numpy path.
Progress reports come after the same trials on physical pots; on exact pots every 512 trials
(the numpy path reports where its scoring blocks end), with the same totals.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from mark1.errors import Mark1Error
from mark1.potentiometers import STEP_QUANTILES

if TYPE_CHECKING:  # pragma: no cover
    from mark1.potentiometers import PotentiometerBank
    from mark1.training import _Epoch, _Products

ENV = "MARK1_KERNELS"
"""The environment variable naming the path."""
MODES = ("auto", "numpy", "numba")
"""Its allowed values."""

_TURNED = ("_base", "_creep", "_travel", "_lash")  # the pot arrays an epoch changes (and t_hit)
_LIN_FIELDS = np.arange(3)  # the linear model's rows in the kernels' model
_WIDEN = 0.0  # added to the kernels' error bound: > 0 sends more blocks to numpy (tests)
_LOADED: list[Any] = []  # the compiled module, or None when numba cannot be imported
_WHY: list[str] = []  # why not


def mode() -> str:
    """The path ``MARK1_KERNELS`` asks for (``auto`` when unset)."""
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"{ENV}={os.environ.get(ENV)!r} is not a kernel path; allowed: "
                         f"{', '.join(MODES)}")
    return value


def _load() -> Any:
    """The compiled epochs' module, or ``None`` when numba cannot be imported."""
    if not _LOADED:
        try:
            from mark1 import _numba_epochs
        except Exception as exc:  # not installed, or an install that does not load
            _numba_epochs = None
            _WHY.append(f"{type(exc).__name__}: {exc}".splitlines()[0])
        _LOADED.append(_numba_epochs)
    return _LOADED[0]


def compiled() -> Any:
    """The compiled epochs when the switch asks for them (``None``: the numpy path)."""
    wanted = mode()
    if wanted == "numpy":
        return None
    module = _load()
    if module is None and wanted == "numba":
        why = f" ({_WHY[0]})" if _WHY else ""
        raise Mark1Error(f"{ENV}=numba but numba cannot be imported{why}; install it "
                         f"(pip install 'mark1-kit[fast]') or set {ENV}=auto")
    return module


def _state(nb: Any, job: _Epoch) -> np.ndarray:
    """The kernels' integer state with the epoch's book-keeping."""
    st = np.zeros(nb.N_INT, dtype=np.int64)
    motors = job.clock.motors
    st[nb.T0], st[nb.PRES], st[nb.ROUND_US] = job.t0, job.pres, job._round_us
    st[nb.MAX_RUNNING], st[nb.MOTORS] = motors.max_running, int(job.motors)
    st[nb.EXTRA_US], st[nb.MISTAKES] = job.extra_us, job.mistakes
    st[nb.REPORTED] = job._reported[0] if job.progress is not None else -1
    st[nb.HAS_ORDER] = int(job.order is not None)
    st[nb.MASK_I] = -1
    return st


def _order(job: _Epoch) -> np.ndarray:
    return (np.empty(0, dtype=np.int64) if job.order is None
            else np.ascontiguousarray(job.order, dtype=np.int64))


def _report(nb: Any, job: _Epoch, st: np.ndarray) -> None:
    """Bring the epoch's book-keeping up to the kernel's and report progress."""
    job.mistakes, job.extra_us = int(st[nb.MISTAKES]), int(st[nb.EXTRA_US])
    job.report(int(st[nb.AT]))
    st[nb.REPORTED] = job._reported[0]


def exact_epoch(job: _Epoch, bank: PotentiometerBank, rows: slice, r_theta: float) -> bool:
    """The compiled form of ``mark1.training._exact_epoch``; ``False`` when it does not apply.

    It applies when every R-unit sum of the pass is a whole number below 2**24 in magnitude
    (whole-number steps, threshold and weights, 0/1 rows): such sums are exact in float32
    whatever the order of summation, so the trial-by-trial pass here makes exactly the numpy
    path's decisions, and its whole-number updates of the float64 state are exact too.
    """
    nb = compiled()
    src = job.src
    if nb is None:
        return False
    step = float(bank.spec.step * (job.clock.motors.steps_per_correction if job.motors else 1))
    if not (step.is_integer() and float(r_theta).is_integer() and src.binary):
        return False
    W32 = bank.lin[rows, 0]
    if not np.array_equal(W32, np.round(W32)):
        return False
    indptr, indices = src.csr()
    # no partial sum of this pass can reach it: the weights' magnitudes now, plus a step on
    # every active pot at every trial
    most_active = int(np.diff(indptr).max(initial=0))
    bound = float(np.abs(W32).sum(axis=1).max(initial=0.0)) + abs(float(r_theta)) + step * (
        most_active * (len(job.positive) + 1))
    if bound >= 2.0**24:
        return False
    st = _state(nb, job)
    pos = np.ascontiguousarray(job.positive)
    base, travel = bank.base[rows], bank.travel[rows]
    W = np.ascontiguousarray(W32)  # contiguous rows: vectorised sums
    while nb.exact_epoch(job.A, _order(job), pos, W, base, travel, indptr, indices, step,
                         np.float32(r_theta), job.wrong, job.moved, job.motor_us,
                         st) == nb.PROGRESS:
        _report(nb, job, st)
    W32[:] = W
    job.mistakes, job.extra_us = int(st[nb.MISTAKES]), int(st[nb.EXTRA_US])
    return True


def physical_epoch(job: _Epoch, bank: PotentiometerBank, units: np.ndarray,
                   rows: slice | np.ndarray, rng: np.random.Generator, rule: str,
                   noise: np.ndarray | None, r_theta: float, block: int | None) -> bool:
    """The compiled form of ``mark1.training._physical_epoch`` for error correction on
    physical pots with a zero R-unit threshold and 0/1 rows; ``False`` otherwise.

    The same blocks of trials in the same order; the same pot turns, wiper stops and step
    draws (from ``rng``, in the same chunks), element by element. A trial's R-unit sums are
    formed in float64 with a bound on how far the numpy path's float32 BLAS products can be
    from them; a block where that bound does not settle every sign is scored by the numpy
    path's own products (``mark1.training._Products``), so every decision is the numpy path's.
    """
    nb = compiled()
    if nb is None or rule != "error-correction" or bank.exact or r_theta != 0 or not (
            job.src.binary):
        return False
    from mark1.training import _Products
    src = job.src
    indptr, indices = src.csr()
    units = np.ascontiguousarray(units, dtype=np.int64)
    noisy = noise is not None and bank.spec.read_noise > 0
    n_steps = job.clock.motors.steps_per_correction if job.motors else 1
    spec = bank.spec
    st = _state(nb, job)
    st[nb.SIZE] = block or nb._MIN_BLOCK
    st[nb.WHOLE] = int(block is None and src.last_mistakes < 2)
    st[nb.BLOCK] = block or 0
    st[nb.N_PINNED], st[nb.CREEP_CHANGES] = bank._n_pinned, bank.creep_changes
    st[nb.N_STEPS], st[nb.DRIFTS], st[nb.NOISY] = n_steps, int(bank.rate.any()), int(noisy)
    st[nb.PLAY], st[nb.C2C] = int(bool(bank.play)), int(bool(spec.step_c2c))
    st[nb.Z_AT] = bank._z_at
    st[nb.Z_FRESH] = 2 if bank._z_rng is not rng else int(bank._z_steps != n_steps)
    ft = np.zeros(nb.N_FLOAT)
    ft[nb.NEXT_STOP], ft[nb.HALF], ft[nb.INV_WEAR] = bank.next_stop_s, bank._half_play, \
        bank._inv_wear
    ft[nb.NOISE_WEAR], ft[nb.READ_NOISE] = bank._inv_wear * spec.read_noise, spec.read_noise
    ft[nb.C2C_SCALE], ft[nb.N_STEPS_F] = spec.step_c2c * np.sqrt(n_steps), float(n_steps)
    ft[nb.WIDEN] = _WIDEN
    row_stop = np.array(bank._row_stop, dtype=np.float64)
    pos = np.ascontiguousarray(job.positive)
    draws = np.ascontiguousarray(noise, dtype=np.float64) if noisy else np.zeros((1, 1))
    mask = np.zeros(pos.shape, dtype=bool)
    order = _order(job)
    z, counts = bank._z, bank._counts
    pots = np.empty((*bank.shape, len(nb.POT_FIELDS)))  # the kernels' layout (see POT_FIELDS)
    nb.pack(tuple(getattr(bank, name) for name in nb.POT_FIELDS), pots)
    model = np.zeros((*bank.shape, nb.MODEL_WIDTH), dtype=np.float32)
    lin = tuple(bank.lin[:, k] for k in range(3))  # (views)
    nb.pack(lin, model)
    scorer = None  # the numpy path's scorer, for the blocks the kernel cannot decide
    while True:
        status, z, counts = nb.physical_epoch(
            order, pos, draws, units, model, pots, bank._t_hit, row_stop, indptr, indices,
            job.wrong, job.moved, job.motor_us, mask, st, ft, z, counts, STEP_QUANTILES, rng)
        if status == nb.DONE:
            break
        if status == nb.PROGRESS:
            _report(nb, job, st)
        else:
            i, j = int(st[nb.MASK_I]), int(st[nb.MASK_J])
            nb.unpack(model, _LIN_FIELDS, lin)  # what the numpy path scores
            if scorer is None:  # one for the epoch, as in the numpy path
                scorer = _Products(bank, rows, len(units) == 1, bool(st[nb.DRIFTS]), noisy)
            mask[i:j] = _numpy_wrong(job, scorer, noise if noisy else None, i, j,
                                     bool(st[nb.WHOLE]), int(st[nb.EXTRA_US]))
    nb.unpack(pots, np.array([nb.POT_FIELDS.index(name) for name in _TURNED]),
              tuple(getattr(bank, name) for name in _TURNED))
    nb.unpack(model, _LIN_FIELDS, lin)
    job.mistakes, job.extra_us = int(st[nb.MISTAKES]), int(st[nb.EXTRA_US])
    bank._n_pinned, bank.creep_changes = int(st[nb.N_PINNED]), int(st[nb.CREEP_CHANGES])
    bank.next_stop_s = float(ft[nb.NEXT_STOP])
    bank._row_stop = row_stop.tolist()
    bank._z, bank._counts, bank._z_at = z, counts, int(st[nb.Z_AT])
    if st[nb.REFILLED]:
        bank._z_rng, bank._z_steps = rng, n_steps
    return True


def _numpy_wrong(job: _Epoch, scorer: _Products, noise: np.ndarray | None, i: int, j: int,
                 whole: bool, extra_us: int) -> np.ndarray:
    """Wrong R-units (j - i, u) of trials ``i..j-1`` as the numpy path scores that block."""
    positive = job.positive
    n, n_units = positive.shape
    times_s = None
    if scorer.drifting:
        present_us = job.pres * np.arange(1, n + 1, dtype=np.int64)
        times_s = (job.t0 + extra_us + present_us[i:j]) * 1e-6
    noise1 = noise[:, 0] if noise is not None and scorer.one else noise
    if whole:
        r = scorer.whole(i, j, times_s, noise1, job.A, job.order)
    else:
        scorer.permute(job.presented(i), i)
        r = scorer.block(i, j, times_s, noise1)
    return (r > 0).reshape(j - i, n_units) != positive[i:j]
