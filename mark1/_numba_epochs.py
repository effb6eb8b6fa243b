"""Numba-compiled epochs of error correction: the arithmetic of :mod:`mark1.training`'s numpy
path, trial by trial. Imported by :mod:`mark1.kernels` only (this module imports numba).

Every float operation that reaches the machine's state is the one the numpy path performs, in
the same order, on the same types (no fast-math there): a pot turn is
:meth:`mark1.potentiometers.PotentiometerBank.turn_row` element by element, a wiper stopping
at its end stop is :meth:`~mark1.potentiometers.PotentiometerBank.pin`. Only the R-unit sums
are computed differently (see :func:`_decide`), and only their signs are used.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# the numpy path's constants, as literals (numba's cache would keep imported values); a test
# checks that they are still the same
_CHUNK = 8192  # PotentiometerBank._CHUNK: step spreads drawn at a time
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
def _pin(t, base, creep, t_hit, stop, lin, row_stop, ist, fst):
    """PotentiometerBank.pin: wipers that reached their stop by ``t`` rest there."""
    if t < fst[NEXT_STOP]:
        return
    n_r, p = base.shape
    found = 0
    for r in range(n_r):
        for c in range(p):
            if t_hit[r, c] <= t:
                s = stop[r, c]
                base[r, c] = s
                creep[r, c] = 0.0
                t_hit[r, c] = np.inf
                lin[r, 0, c] = np.float32(s)
                lin[r, 1, c] = np.float32(0.0)
                found += 1
    if found:
        ist[N_PINNED] += found
        ist[CREEP_CHANGES] += 1
    for r in range(n_r):
        row_stop[r] = t_hit[r].min()
    fst[NEXT_STOP] = row_stop.min()


@njit(cache=True)
def _turn_row(r, cols, up_turn, t, base, creep, rate, lo, hi, up, down, lash, travel, t_hit,
              stop, inv_rate, lin, row_stop, ist, fst, scratch, z, counts, rng):
    """PotentiometerBank.turn_row on physical pots, the same operations element by element.

    Returns the (possibly refilled) step-spread draws and their step counts.
    """
    if t >= fst[NEXT_STOP]:
        _pin(t, base, creep, t_hit, stop, lin, row_stop, ist, fst)
    p = base.shape[1]
    motion = scratch[0]
    creep_t = scratch[1]
    w = scratch[2]
    w_new = scratch[3]
    m = cols.shape[0]
    for j in range(p):
        motion[j] = 0.0
    if ist[C2C]:
        at = ist[Z_AT]
        if ist[Z_FRESH] or at + m > z.shape[0]:  # PotentiometerBank._step_counts
            if ist[Z_FRESH] == 2:  # drawn from another generator: start afresh
                left = np.empty(0)
            else:
                left = z[at:].copy()
            if left.shape[0] < m:
                fresh = rng.standard_normal(max(_CHUNK, m))
                zz = np.empty(left.shape[0] + fresh.shape[0])
                zz[: left.shape[0]] = left
                zz[left.shape[0]:] = fresh
            else:
                zz = left
            cc = zz * fst[C2C_SCALE]
            cc += fst[N_STEPS_F]
            for x in range(cc.shape[0]):
                if not cc[x] >= 0.0:
                    cc[x] = 0.0
            z = zz
            counts = cc
            ist[Z_FRESH] = 0
            ist[REFILLED] = 1
            at = 0
        for x in range(m):
            motion[cols[x]] = counts[at + x]
        ist[Z_AT] = at + m
    else:
        for x in range(m):
            motion[cols[x]] = fst[N_STEPS_F]
    factor = up[r] if up_turn else down[r]
    for j in range(p):
        motion[j] *= factor[j]
    pinned = ist[N_PINNED] != 0
    cr = creep[r] if pinned else rate[r]
    b = base[r]
    for j in range(p):
        creep_t[j] = cr[j] * t
        w[j] = b[j] + creep_t[j]
    if pinned:
        rr = rate[r]
        n_rest = 0
        for j in range(p):
            if cr[j] != rr[j] and motion[j] != 0.0:
                n_rest += 1
        if n_rest:  # wipers resting on a stop creep again once moved
            ist[N_PINNED] -= n_rest
            ist[CREEP_CHANGES] += 1
            for j in range(p):
                if cr[j] != rr[j] and motion[j] != 0.0:
                    cr[j] = rr[j]
            for j in range(p):
                lin[r, 1, j] = np.float32(cr[j])
                creep_t[j] = cr[j] * t
    tr = travel[r]
    inv_wear = fst[INV_WEAR]
    if inv_wear:
        for j in range(p):
            w_new[j] = tr[j] * inv_wear
            w_new[j] += 1.0
            motion[j] /= w_new[j]
    if ist[PLAY]:
        half = fst[HALF]
        ls = lash[r]
        for j in range(p):
            mj = motion[j] + ls[j]
            v = mj if mj >= -half else -half
            v = v if v <= half else half
            ls[j] = v
            motion[j] = mj - v
    lr = lo[r]
    hr = hi[r]
    for j in range(p):
        v = w[j] + motion[j]
        v = v if v >= lr[j] else lr[j]
        v = v if v <= hr[j] else hr[j]
        d = w[j] - v
        tr[j] += abs(d)
        b[j] = v - creep_t[j]
        lin[r, 0, j] = np.float32(b[j])
    read_noise = fst[READ_NOISE]
    if inv_wear and read_noise:
        noise_wear = fst[NOISE_WEAR]
        for j in range(p):
            v = tr[j] * noise_wear
            v += read_noise
            v *= v
            lin[r, 2, j] = np.float32(v)
    if ist[DRIFTS]:
        sr = stop[r]
        ir = inv_rate[r]
        th = t_hit[r]
        for j in range(p):
            th[j] = (sr[j] - b[j]) * ir[j]
        if ist[N_PINNED]:
            for j in range(p):
                if cr[j] == 0.0:  # resting on a stop
                    th[j] = np.inf
        row_stop[r] = th.min()
        fst[NEXT_STOP] = row_stop.min()
    return z, counts


@njit(cache=True, fastmath=True)
def _sums(row, l0, l1, l2, drifts, noisy):
    """Sums of a 0/1 row with the float32 model rows, in float64 (exact products; only the
    float64 additions round), and the sums of magnitudes (for the error bound)."""
    s0 = 0.0
    a0 = 0.0
    for j in range(row.shape[0]):
        x = np.float64(row[j]) * np.float64(l0[j])
        s0 += x
        a0 += abs(x)
    s1 = 0.0
    a1 = 0.0
    if drifts:
        for j in range(row.shape[0]):
            x = np.float64(row[j]) * np.float64(l1[j])
            s1 += x
            a1 += abs(x)
    s2 = 0.0
    if noisy:
        for j in range(row.shape[0]):
            s2 += np.float64(row[j]) * np.float64(l2[j])
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
def physical_epoch(A, order, pos, noise, units, lin, base, creep, rate, lo, hi, up, down, lash,
                   travel, t_hit, stop, inv_rate, row_stop, indptr, indices, wrong, moved,
                   motor_us, mask, ist, fst, scratch, z, counts, rng):
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
                _pin(t_i, base, creep, t_hit, stop, lin, row_stop, ist, fst)
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
                row = A[row_k]
                t_k = (t_base + pres * (k + 1)) * 1e-6
                n_act = indptr[row_k + 1] - indptr[row_k]
                for q in range(u):
                    r = units[q]
                    s0, a0, s1, a1, s2 = _sums(row, lin[r, 0], lin[r, 1], lin[r, 2], drifts,
                                               noisy)
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
                    z, counts = _turn_row(units[q], cols, pos[k, q], t_k, base, creep, rate, lo,
                                          hi, up, down, lash, travel, t_hit, stop, inv_rate, lin,
                                          row_stop, ist, fst, scratch, z, counts, rng)
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
