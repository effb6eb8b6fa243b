"""Numba-compiled epochs of error correction: the arithmetic of :mod:`mark1.training`'s numpy
path, trial by trial. Imported by :mod:`mark1.kernels` only (this module imports numba).

Every float operation that reaches the machine's state is the one the numpy path performs, in
the same order, on the same types (no fast-math there): a pot turn is
:meth:`mark1.potentiometers.PotentiometerBank.turn_row` pot by turned pot, a wiper stopping
at its end stop is :meth:`~mark1.potentiometers.PotentiometerBank.pin`. Only the R-unit sums
are computed differently (see :func:`_decide`), and only their signs are used; fast-math is
used only where the order of operations cannot change a result (a least value, the sums).

Layout: the bank's per-pot arrays are taken packed pot by pot (:data:`POT_FIELDS`), so that a
turn of a few hundred pots spread over a row of 513 touches two cache lines per pot instead of
one in each of eleven arrays (about a fifth of the turn's time on the benchmark's machine).
"""

from __future__ import annotations

import numpy as np
from numba import njit

# the numpy path's constants, as literals (numba's cache would keep imported values); a test
# checks that they are still the same
_CHUNK = 8192  # PotentiometerBank._CHUNK: step spreads drawn at a time
_PER_UNIFORM = 4  # potentiometers.DRAWS_PER_UNIFORM
_MIN_BLOCK, _MAX_BLOCK = 8, 256  # mark1.training: scoring blocks
_REPORT = 512  # mark1.training._REPORT_EVERY: trials between progress reports
_U32 = 2.0**-24  # unit roundoff, float32
_U64 = 2.0**-52  # twice the unit roundoff, float64

DONE, PROGRESS, SCORES = 0, 1, 2
"""Kernel results: epoch done; report progress, then call again; the block ``i..j`` needs the
numpy path's own sums (write its wrong R-units into ``mask``), then call again."""

# integer state (int64 array), shared with mark1.kernels
(AT, SIZE, WHOLE, BLOCK, N_PINNED, CREEP_CHANGES, EXTRA_US, MISTAKES, T0, PRES, ROUND_US,
 MAX_RUNNING, MOTORS, N_STEPS, REPORTED, MASK_I, MASK_J, Z_AT, Z_FRESH, REFILLED, DRIFTS, NOISY,
 PLAY, C2C, HAS_ORDER, N_INT) = range(26)
# float state (float64 array)
NEXT_STOP, HALF, INV_WEAR, NOISE_WEAR, READ_NOISE, C2C_SCALE, N_STEPS_F, WIDEN, N_FLOAT = range(9)

POT_FIELDS = ("_base", "_creep", "_rate", "_travel", "_lash", "_lo", "_hi", "_up", "_down",
              "_stop", "_inv_rate")
"""The PotentiometerBank arrays the kernels take packed per pot, ``pots[r, c, field]`` (one
pot's state in two cache lines: a turn reads and writes a few hundred pots spread over a
row), in this order; ``t_hit`` stays a row-major array of its own (its rows are scanned)."""
BASE, CREEP, RATE, TRAVEL, LASH, LO, HI, UP, DOWN, STOP, INV_RATE = range(len(POT_FIELDS))
MODEL_WIDTH = 4
"""The linear model as the kernels take it: ``model[r, c, k] = lin[r, k, c]`` (k = 0, 1, 2;
float32, one pot's three values in 16 bytes, the last unused): a trial's sums read a few hundred
pots spread over a row."""


# ---------------------------------------------------------------------- layouts


@njit(cache=True)
def pack(arrays, packed):
    """``packed[r, c, k] = arrays[k][r, c]`` (the bank's arrays into the kernels' layout)."""
    n_r, p, _ = packed.shape
    for r in range(n_r):
        for c in range(p):
            for k in range(len(arrays)):
                packed[r, c, k] = arrays[k][r, c]


@njit(cache=True)
def unpack(packed, fields, arrays):
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
def _dot32(row, w):
    """float32 dot product, any order: exact when every partial sum is a whole number < 2**24."""
    acc = np.float32(0.0)
    for j in range(row.shape[0]):
        acc += row[j] * w[j]
    return acc


@njit(cache=True)
def exact_epoch(A, order, pos, W, base, travel, indptr, indices, step, theta, wrong, moved,
                motor_us, st):
    """Error correction on exact pots, trial by trial, from trial ``st[AT]``.

    ``W`` (u, p) float32: the weights as scored (``lin[rows, 0]``); ``base``, ``travel``
    (u, p) float64 state of the same rows. Whole-number steps, threshold and weights, all sums
    below 2**24 in magnitude (the caller checks): every sum is exact in any order, so this is
    exactly the numpy path's result. Returns DONE, or PROGRESS when a report is due.
    """
    n, u = pos.shape
    i = st[AT]
    while i < n:
        k = order[i] if st[HAS_ORDER] else i
        row = A[k]
        n_wrong = 0
        for q in range(u):
            s = _dot32(row, W[q]) - theta
            target = pos[i, q]
            if (s > 0) != target:
                n_wrong += 1
                d = step if target else -step
                for jj in range(indptr[k], indptr[k + 1]):
                    j = indices[jj]
                    base[q, j] += d
                    travel[q, j] += step
                    W[q, j] = np.float32(base[q, j])
        if n_wrong:
            wrong[i] = True
            st[MISTAKES] += 1
            if st[MOTORS]:
                n_pots = (indptr[k + 1] - indptr[k]) * n_wrong
                moved[i] = n_pots
                dt = ((n_pots + st[MAX_RUNNING] - 1) // st[MAX_RUNNING]) * st[ROUND_US]
                motor_us[i] = dt
                st[EXTRA_US] += dt
        i += 1
        if st[REPORTED] >= 0 and i - st[REPORTED] >= _REPORT:
            st[AT] = i
            return PROGRESS
    st[AT] = i
    return DONE


# ---------------------------------------------------------------------- physical pots


@njit(cache=True)
def _pin(t, pots, t_hit, model, row_stop, ist, fst):
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
def _least(a):
    """The least value of a 1-d float64 array with no NaN (the times here never are): the
    same value as ``a.min()``, in any order, so it may be vectorised."""
    least = np.inf
    for x in range(a.shape[0]):
        least = min(least, a[x])
    return least


@njit(cache=True)
def _refill(m, z, counts, ist, fst, quantiles, rng):
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
def _turn_row(r, cols, up_turn, t, pots, t_hit, model, row_stop, ist, fst, z, counts, quantiles,
              rng):
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


@njit(cache=True, fastmath=True)
def _sums(active, model, drifts, noisy):
    """Sums of a 0/1 row (its active columns ``active``) with the float32 model ``model``
    (p, 4) of one R-unit, in float64 (exact terms; only the float64 additions round), and
    the sums of magnitudes (for the error bound)."""
    s0 = 0.0
    a0 = 0.0
    s1 = 0.0
    a1 = 0.0
    s2 = 0.0
    for x in range(active.shape[0]):
        j = active[x]
        v = np.float64(model[j, 0])
        s0 += v
        a0 += abs(v)
        if drifts:
            v = np.float64(model[j, 1])
            s1 += v
            a1 += abs(v)
        if noisy:
            s2 += np.float64(model[j, 2])
    return s0, a0, s1, a1, s2


@njit(cache=True)
def _decide(s0, a0, s1, a1, s2, n_act, t, z, drifts, noisy, widen):
    """Whether the numpy path finds this R-unit's sum above zero: 1, 0, or -1 (cannot tell).

    The numpy path forms ``P0 + t * P1 + sqrt(P2) * z`` from float32 BLAS products ``P0, P1,
    P2`` of the row with the model. Whatever the BLAS summation order, a float32 sum of
    ``n`` terms is within ``gamma_n * sum|terms|`` of the exact sum (``gamma_n = n u / (1 -
    n u)``, ``u = 2**-24``); the float32 square root and the float64 combination add a few
    more roundings. The interval of every value the numpy path can produce is formed from the
    exact sums (``s0, s1, s2``, up to float64 rounding, and their magnitudes ``a0, a1``); only
    when it holds zero is the answer unknown here.
    """
    g = (n_act + 2.0) * (_U32 * 1.001 + _U64)
    e0 = g * a0
    low = s0 - e0
    high = s0 + e0
    mag = abs(s0) + e0
    if drifts:
        e1 = g * a1
        low += t * s1 - t * e1
        high += t * s1 + t * e1
        mag += t * (abs(s1) + e1)
    if noisy:
        e2 = g * s2
        v_lo = s2 - e2
        if v_lo < 0.0:
            v_lo = 0.0
        sd_lo = np.sqrt(v_lo) * (1.0 - 4.0 * _U32)
        sd_hi = np.sqrt(s2 + e2) * (1.0 + 4.0 * _U32)
        if z >= 0.0:
            low += z * sd_lo
            high += z * sd_hi
        else:
            low += z * sd_hi
            high += z * sd_lo
        mag += abs(z) * sd_hi
    slack = mag * 1e-13 + widen  # widen > 0: more blocks scored by the numpy path (tests)
    if low - slack > 0.0:
        return 1
    if high + slack < 0.0:
        return 0
    return -1


@njit(cache=True)
def physical_epoch(order, pos, noise, units, model, pots, t_hit, row_stop, indptr, indices, wrong,
                   moved, motor_us, mask, ist, fst, z, counts, quantiles, rng):
    """Error correction on physical pots from trial ``ist[AT]``: the numpy path's schedule.

    The numpy path scores blocks of trials (all the epoch first unless the last pass had
    several mistakes; then blocks doubling from 8 up to 256 while there are no mistakes, cut
    where a creeping wiper reaches its end stop, the wipers pinned at a block's start) and
    corrects at a block's first mistake. The same blocks are followed here, trial by trial;
    a block whose sums cannot be told apart from zero here (:func:`_decide`) is handed back
    (``SCORES``) to be scored by the numpy path's own products, its wrong R-units written into
    ``mask[i:j]``. Returns DONE, PROGRESS or SCORES, and the step-spread draws.
    """
    n, u = pos.shape
    i = ist[AT]
    size = ist[SIZE]
    whole = ist[WHOLE] != 0
    block = ist[BLOCK]
    drifts = ist[DRIFTS] != 0
    noisy = ist[NOISY] != 0
    has_order = ist[HAS_ORDER] != 0
    decided = np.empty(u, dtype=np.int64)
    while i < n:
        j = n if whole else min(n, i + size)
        t_base = ist[T0] + ist[EXTRA_US]
        pres = ist[PRES]
        if drifts:
            t_i = (t_base + pres * (i + 1)) * 1e-6
            if t_i >= fst[NEXT_STOP]:
                _pin(t_i, pots, t_hit, model, row_stop, ist, fst)
            nxt = fst[NEXT_STOP]
            if (t_base + pres * j) * 1e-6 > nxt:  # a wiper stops before trial j
                c = 0
                while i + c < j and (t_base + pres * (i + c + 1)) * 1e-6 <= nxt:
                    c += 1
                j = i + max(1, c)
        given = ist[MASK_I] == i and ist[MASK_J] == j
        f = -1
        for k in range(i, j):
            row_k = order[k] if has_order else k
            if given:
                for q in range(u):
                    decided[q] = mask[k, q]
            else:
                active = indices[indptr[row_k]:indptr[row_k + 1]]
                t_k = (t_base + pres * (k + 1)) * 1e-6
                n_act = active.shape[0]
                for q in range(u):
                    r = units[q]
                    s0, a0, s1, a1, s2 = _sums(active, model[r], drifts, noisy)
                    zq = noise[k, q] if noisy else 0.0
                    d = _decide(s0, a0, s1, a1, s2, n_act, t_k, zq, drifts, noisy,
                                fst[WIDEN])
                    if d < 0:  # the numpy path's own products decide this block
                        ist[AT] = i
                        ist[SIZE] = size
                        ist[WHOLE] = 1 if whole else 0
                        ist[MASK_I] = i
                        ist[MASK_J] = j
                        return SCORES, z, counts
                    decided[q] = 1 if (d == 1) != pos[k, q] else 0
            bad = False
            for q in range(u):
                if decided[q]:
                    bad = True
            if bad:
                f = k
                break
        ist[MASK_I] = -1
        if f < 0:
            i = j
            size = block if block else min(2 * size, _MAX_BLOCK)
        else:
            k = f
            whole = False
            row_k = order[k] if has_order else k
            cols = indices[indptr[row_k]:indptr[row_k + 1]]
            t_k = (ist[T0] + ist[EXTRA_US] + pres * (k + 1)) * 1e-6
            n_wrong = 0
            for q in range(u):
                if decided[q]:
                    n_wrong += 1
                    z, counts = _turn_row(units[q], cols, pos[k, q], t_k, pots, t_hit, model,
                                          row_stop, ist, fst, z, counts, quantiles, rng)
            wrong[k] = True
            ist[MISTAKES] += 1
            n_pots = cols.shape[0] * n_wrong
            if ist[MOTORS] and n_pots:
                moved[k] = n_pots
                dt = ((n_pots + ist[MAX_RUNNING] - 1) // ist[MAX_RUNNING]) * ist[ROUND_US]
                motor_us[k] = dt
                ist[EXTRA_US] += dt
            f_rel = k - i
            i = k + 1
            size = block if block else max(_MIN_BLOCK, min(_MAX_BLOCK, 2 * (f_rel + 1)))
        if ist[REPORTED] >= 0 and i - ist[REPORTED] >= _REPORT:
            ist[AT] = i
            ist[SIZE] = size
            ist[WHOLE] = 1 if whole else 0
            return PROGRESS, z, counts
    ist[AT] = i
    ist[SIZE] = size
    ist[WHOLE] = 1 if whole else 0
    return DONE, z, counts
