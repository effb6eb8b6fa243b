"""Numba-compiled training passes: the arithmetic of :mod:`mark1.training`'s reference, trial
by trial. Imported by :mod:`mark1.fast.compiled` only (this module imports numba).

Every float operation that reaches the machine's state or a decision is the one the reference
performs, in the same order, on the same types (no fast-math, and no fused multiply-adds: numba
contracts none without fast-math): a trial's R-unit sums are
:func:`mark1.r_units.unit_sums` (float64 sums pot by pot in ascending order), a pot turn is
:meth:`mark1.potentiometers.PotentiometerBank.turn_row` pot by turned pot, a wiper stopping at
its end stop is :meth:`~mark1.potentiometers.PotentiometerBank.pin`. Fast-math is used only
where the order of operations cannot change a result: a least value, and the float32 sums of
exact pots (whole numbers below 2**24, exact in any order).

Layout: the bank's per-pot arrays are taken packed pot by pot (:data:`POT_FIELDS`), so that a
turn of a few hundred pots spread over a row of 513 touches two cache lines per pot instead of
one in each of eleven arrays (about a fifth of the turn's time on the benchmark's machine).
"""

from __future__ import annotations

import numpy as np
from numba import njit

Arr = np.ndarray  # (the kernels' arrays; numba reads no annotations)

# the Python side's constants, as literals (numba's cache would keep imported values); a test
# checks that they are still the same
_CHUNK = 8192  # PotentiometerBank.CHUNK: step spreads drawn at a time
_PER_UNIFORM = 4  # potentiometers.DRAWS_PER_UNIFORM
_REPORT = 512  # mark1.fast.bookkeeping.REPORT_EVERY: most trials between progress reports

DONE, PROGRESS = 0, 1
"""Kernel results: pass done; report progress, then call again."""

# integer state (int64 array), shared with mark1.fast.compiled
(AT, N_PINNED, CREEP_CHANGES, EXTRA_US, MISTAKES, T0, PRES, MOTORS, REPORTED, Z_AT, Z_FRESH,
 REFILLED, DRIFTS, NOISY, PLAY, C2C, HAS_ORDER, FORCED, N_INT) = range(19)
# float state (float64 array)
NEXT_STOP, HALF, INV_WEAR, NOISE_WEAR, READ_NOISE, C2C_SCALE, N_STEPS_F, R_THETA, N_FLOAT = \
    range(9)

POT_FIELDS = ("base", "creep", "rate", "travel", "lash", "lo", "hi", "up", "down", "stop",
              "inv_rate")
"""The :class:`mark1.potentiometers.BankState` arrays the kernels take packed per pot,
``pots[r, c, field]`` (one pot's state in two cache lines: a turn reads and writes a few
hundred pots spread over a row), in this order; ``t_hit`` stays a row-major array of its own
(its rows are scanned)."""
BASE, CREEP, RATE, TRAVEL, LASH, LO, HI, UP, DOWN, STOP, INV_RATE = range(len(POT_FIELDS))
MODEL_WIDTH = 4
"""The linear model as the kernels take it: ``model[r, c, k] = lin[r, k, c]`` (k = 0, 1, 2;
float32, one pot's three values in 16 bytes, the last unused): a trial's sums read a few hundred
pots spread over a row."""


# ---------------------------------------------------------------------- layouts


@njit(cache=True)
def pack(arrays: tuple[np.ndarray, ...], packed: np.ndarray) -> None:
    """``packed[r, c, k] = arrays[k][r, c]`` (the bank's arrays into the kernels' layout)."""
    n_r, p, _ = packed.shape
    for r in range(n_r):
        for c in range(p):
            for k in range(len(arrays)):
                packed[r, c, k] = arrays[k][r, c]


@njit(cache=True)
def unpack(packed: np.ndarray, fields: np.ndarray, arrays: tuple[np.ndarray, ...]) -> None:
    """``arrays[i][r, c] = packed[r, c, fields[i]]`` (back into the bank's arrays)."""
    n_r, p, _ = packed.shape
    for i in range(len(arrays)):
        a = arrays[i]
        k = fields[i]
        for r in range(n_r):
            for c in range(p):
                a[r, c] = packed[r, c, k]


# ---------------------------------------------------------------------- exact pots


@njit(cache=True, fastmath=True)
def _dot32(row: np.ndarray, w: np.ndarray) -> np.float32:
    """float32 dot product, any order: exact when every partial sum is a whole number < 2**24."""
    acc = np.float32(0.0)
    for j in range(row.shape[0]):
        acc += row[j] * w[j]
    return acc


@njit(cache=True)
def exact_epoch(A: Arr, order: Arr, pos: Arr, W: Arr, base: Arr, travel: Arr, indptr: Arr,
                indices: Arr, step: float, theta: np.float32, wrong: Arr, moved: Arr,
                st: Arr) -> int:
    """Error correction (or forced response) on exact pots, trial by trial, from ``st[AT]``.

    ``W`` (u, p) float32: the weights as scored (``lin[rows, 0]``); ``base``, ``travel``
    (u, p) float64 state of the same rows. Whole-number steps, threshold and weights, all sums
    below 2**24 in magnitude (the caller checks): every sum is exact in any order, so this is
    exactly the reference's result. Exact pots do not drift, so no trial depends on the
    machine time: ``moved[i]`` gets the pots turned after trial ``i``, and the caller puts
    the motors' time on the clock. Returns DONE, or PROGRESS when a report is due.
    """
    n, u = pos.shape
    i = st[AT]
    forced = st[FORCED] != 0
    while i < n:
        k = order[i] if st[HAS_ORDER] else i
        row = A[k]
        n_turned = 0
        n_wrong = 0
        for q in range(u):
            s = _dot32(row, W[q]) - theta
            target = pos[i, q]
            wrong_q = (s > 0) != target
            if wrong_q or forced:
                n_wrong += wrong_q
                n_turned += 1
                d = step if target else -step
                for jj in range(indptr[k], indptr[k + 1]):
                    j = indices[jj]
                    base[q, j] += d
                    travel[q, j] += step
                    W[q, j] = np.float32(base[q, j])
        if n_turned:
            moved[i] = (indptr[k + 1] - indptr[k]) * n_turned
            if n_wrong:
                wrong[i] = True
                st[MISTAKES] += 1
        i += 1
        if st[REPORTED] >= 0 and i - st[REPORTED] >= _REPORT:
            st[AT] = i
            return PROGRESS
    st[AT] = i
    return DONE


# ---------------------------------------------------------------------- physical pots


@njit(cache=True)
def _pin(t: float, pots: Arr, t_hit: Arr, model: Arr, row_stop: Arr, ist: Arr,
         fst: Arr) -> None:
    """PotentiometerBank.pin: wipers that reached their stop by ``t`` rest there."""
    if t < fst[NEXT_STOP]:
        return
    n_r, p = t_hit.shape
    found = 0
    for r in range(n_r):
        for c in range(p):
            if t_hit[r, c] <= t:
                s = pots[r, c, STOP]
                pots[r, c, BASE] = s
                pots[r, c, CREEP] = 0.0
                t_hit[r, c] = np.inf
                model[r, c, 0] = np.float32(s)
                model[r, c, 1] = np.float32(0.0)
                found += 1
    if found:
        ist[N_PINNED] += found
        ist[CREEP_CHANGES] += 1
    for r in range(n_r):
        row_stop[r] = t_hit[r].min()
    fst[NEXT_STOP] = row_stop.min()


@njit(cache=True, fastmath=True)
def _least(a: Arr) -> float:
    """The least value of a 1-d float64 array with no NaN (the times here never are): the
    same value as ``a.min()``, in any order, so it may be vectorised."""
    least = np.inf
    for x in range(a.shape[0]):
        least = min(least, a[x])
    return least


@njit(cache=True)
def _refill(m: int, z: Arr, counts: Arr, ist: Arr, fst: Arr, quantiles: Arr,
            rng: np.random.Generator) -> tuple[Arr, Arr]:
    """PotentiometerBank._step_counts' refill: the draws left, then a fresh chunk
    (potentiometers.step_spread_draws of ``quantiles``), and their step counts."""
    at = ist[Z_AT]
    if ist[Z_FRESH] == 2:  # drawn from another generator: start afresh
        left = np.empty(0)
    else:
        left = z[at:].copy()
    n_left = left.shape[0]
    n_u = 0 if n_left >= m else (max(_CHUNK, m) + _PER_UNIFORM - 1) // _PER_UNIFORM
    u = rng.random(n_u)  # potentiometers.step_spread_draws
    zz = np.empty(n_left + n_u * _PER_UNIFORM)
    zz[:n_left] = left
    x = n_left
    for a in range(n_u):
        bits = np.int64(u[a] * 9007199254740992.0)  # u * 2**53, a whole number
        for shift in (41, 29, 17, 5):  # the leading 48 bits, 12 at a time
            zz[x] = quantiles[(bits >> shift) & 4095]
            x += 1
    cc = np.empty(zz.shape[0])
    scale = fst[C2C_SCALE]
    n_steps = fst[N_STEPS_F]
    for x in range(zz.shape[0]):
        c = zz[x] * scale
        c += n_steps
        cc[x] = c if c >= 0.0 else 0.0
    ist[Z_FRESH] = 0
    ist[REFILLED] = 1
    ist[Z_AT] = 0
    return zz, cc


@njit(cache=True)
def _turn_row(r: int, cols: Arr, up_turn: bool, t: float, pots: Arr, t_hit: Arr, model: Arr,
              row_stop: Arr, ist: Arr, fst: Arr, z: Arr, counts: Arr, quantiles: Arr,
              rng: np.random.Generator) -> tuple[Arr, Arr]:
    """PotentiometerBank.turn_row on physical pots: the same operations on each turned pot,
    in one pass (the numpy path's whole-row arithmetic leaves the others exactly as they were).

    Returns the (possibly refilled) step-spread draws and their step counts.
    """
    if t >= fst[NEXT_STOP]:
        _pin(t, pots, t_hit, model, row_stop, ist, fst)
    m = cols.shape[0]
    c2c = ist[C2C] != 0
    if c2c and (ist[Z_FRESH] or ist[Z_AT] + m > z.shape[0]):
        z, counts = _refill(m, z, counts, ist, fst, quantiles, rng)
    at = ist[Z_AT]
    if c2c:
        ist[Z_AT] = at + m
    n_steps = fst[N_STEPS_F]
    factor = UP if up_turn else DOWN
    pinned = ist[N_PINNED] != 0
    pr = pots[r]
    th = t_hit[r]
    mr = model[r]
    inv_wear = fst[INV_WEAR]
    play = ist[PLAY] != 0
    half = fst[HALF]
    read_noise = fst[READ_NOISE]
    noisy_wear = inv_wear != 0.0 and read_noise != 0.0
    noise_wear = fst[NOISE_WEAR]
    drifts = ist[DRIFTS] != 0
    n_rest = 0
    for x in range(m):
        j = cols[x]
        mv = (counts[at + x] if c2c else n_steps) * pr[j, factor]
        c_old = pr[j, CREEP]
        c_new = c_old
        if pinned and c_old != pr[j, RATE] and mv != 0.0:  # resting on a stop: creeps again
            c_new = pr[j, RATE]
            pr[j, CREEP] = c_new
            mr[j, 1] = np.float32(c_new)
            n_rest += 1
        w = pr[j, BASE] + c_old * t
        creep_t = c_new * t
        tj = pr[j, TRAVEL]
        if inv_wear:
            wn = tj * inv_wear
            wn += 1.0
            mv /= wn
        if play:
            mj = mv + pr[j, LASH]
            v = mj if mj >= -half else -half
            v = v if v <= half else half
            pr[j, LASH] = v
            mv = mj - v
        v = w + mv
        v = v if v >= pr[j, LO] else pr[j, LO]
        v = v if v <= pr[j, HI] else pr[j, HI]
        tj += abs(w - v)
        pr[j, TRAVEL] = tj
        bj = v - creep_t
        pr[j, BASE] = bj
        mr[j, 0] = np.float32(bj)
        if noisy_wear:
            nv = tj * noise_wear
            nv += read_noise
            nv *= nv
            mr[j, 2] = np.float32(nv)
        if drifts:  # a wiper with no creep never reaches a stop (inf, as in the numpy path)
            th[j] = (pr[j, STOP] - bj) * pr[j, INV_RATE] if c_new != 0.0 else np.inf
    if n_rest:
        ist[N_PINNED] -= n_rest
        ist[CREEP_CHANGES] += 1
    if drifts:
        row_stop[r] = _least(th)
        fst[NEXT_STOP] = _least(row_stop)
    return z, counts


@njit(cache=True)
def _unit_sum(active: Arr, model: Arr, t: float, z: float, noisy: bool) -> float:
    """mark1.r_units.unit_sums of one R-unit (its model (p, 4)): float64 sums of the float32
    model, pot by pot in ascending order, then ``base + t * creep + sqrt(variance) * z``."""
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    for x in range(active.shape[0]):
        j = active[x]
        s0 += np.float64(model[j, 0])
        s1 += np.float64(model[j, 1])
        if noisy:
            s2 += np.float64(model[j, 2])
    r = s0 + t * s1
    if noisy:
        r = r + np.sqrt(s2) * z
    return r


@njit(cache=True)
def physical_epoch(order: Arr, pos: Arr, noise: Arr, units: Arr, model: Arr, pots: Arr,
                   t_hit: Arr, row_stop: Arr, indptr: Arr, indices: Arr, wrong: Arr, moved: Arr,
                   motor_us: Arr, motor_table: Arr, ist: Arr, fst: Arr, z: Arr, counts: Arr,
                   quantiles: Arr, rng: np.random.Generator) -> tuple[int, Arr, Arr]:
    """Error correction (or forced response) on physical pots from trial ``ist[AT]``: the
    reference trial by trial.

    Before each trial the wipers that reached their stops by its reading are pinned; its
    R-unit sums are the reference's (:func:`_unit_sum`, minus ``r_theta``); then the rows of
    the R-units to correct are turned one after the other, and the motors' time
    (``motor_table[n]`` us for ``n`` pots) moves the clock on. Returns DONE or PROGRESS, and
    the step-spread draws.
    """
    n, u = pos.shape
    i = ist[AT]
    noisy = ist[NOISY] != 0
    has_order = ist[HAS_ORDER] != 0
    forced = ist[FORCED] != 0
    r_theta = fst[R_THETA]
    turn = np.zeros(u, dtype=np.bool_)
    while i < n:
        k = order[i] if has_order else i
        cols = indices[indptr[k]:indptr[k + 1]]
        t = (ist[T0] + ist[EXTRA_US] + ist[PRES] * (i + 1)) * 1e-6
        if t >= fst[NEXT_STOP]:
            _pin(t, pots, t_hit, model, row_stop, ist, fst)
        was_wrong = False
        for q in range(u):
            zq = noise[i, q] if noisy else 0.0
            r = _unit_sum(cols, model[units[q]], t, zq, noisy) - r_theta
            wrong_q = (r > 0.0) != pos[i, q]
            was_wrong = was_wrong or wrong_q
            turn[q] = forced or wrong_q
        n_turned = 0
        for q in range(u):
            if turn[q]:
                n_turned += 1
                z, counts = _turn_row(units[q], cols, pos[i, q], t, pots, t_hit, model,
                                      row_stop, ist, fst, z, counts, quantiles, rng)
        if was_wrong:
            wrong[i] = True
            ist[MISTAKES] += 1
        n_pots = cols.shape[0] * n_turned
        if ist[MOTORS] and n_pots:
            moved[i] = n_pots
            dt = motor_table[n_pots]
            motor_us[i] = dt
            ist[EXTRA_US] += dt
        i += 1
        if ist[REPORTED] >= 0 and i - ist[REPORTED] >= _REPORT:
            ist[AT] = i
            return PROGRESS, z, counts
    ist[AT] = i
    return DONE, z, counts
