"""The numpy block path: the training rules on blocks of trials, exactly the reference's results.

:mod:`mark1.training` defines the rules trial by trial. Error correction is sequential -- each
trial is scored with the weights left by the previous one -- but most trials change nothing,
so this path scores a *block* of upcoming trials at once with the current weights (drift is
linear between end-stop events, so it scores in closed form too); only the first wrong trial
of a block changes anything. The pots are corrected there and scoring resumes from the next
trial. Unless the last pass over the rows had several mistakes, all of a pass's trials are
first scored with one product over the rows as stored.

A block's R-unit sums are float32 BLAS products (base, creep and variance of every R-unit's
pots at once), whose order of summation is not the reference's: a sum that lands within the
products' rounding bound of zero (:class:`_Ties`) is scored again by the reference's own
:func:`mark1.r_units.unit_sums`, so every decision is the reference's. Blocks are cut where a
creeping wiper reaches its end stop, so each trial's wipers are those the reference reads.

On exact pots whose sums are whole numbers (the ideal machine's; see
:func:`mark1.fast.bookkeeping.whole_number_sums`) float32 products are exact in any order. A
correction at trial ``f`` changes a later trial's sums by ``+-step * (a_later . a_f)``, a count
of shared active A-units: where mistakes are dense the block is finished trial by trial in
plain Python from those counts (A-unit rows held as bit sets, the counts by
``int.bit_count``; several R-units' sums packed into one integer), and the weights take the
block's corrections at its end.
"""

from __future__ import annotations

import numpy as np

from mark1.fast.bookkeeping import EpochBook, correction_step
from mark1.fast.rows import ARows
from mark1.potentiometers import PotentiometerBank
from mark1.r_units import unit_sums

_MIN_BLOCK, _MAX_BLOCK = 8, 256  # scoring blocks while mistakes are sparse
_DENSE = 1 / 24  # exact pots: over this share of mistakes, blocks are finished in Python
_MAX_AHEAD = 64  # most trials scored ahead in Python
_MAX_LIMIT = 24  # most mistakes after which the weights take a block's corrections
_SINGLE_COST, _MULTI_COST = 70.0, 120.0  # a block's numpy work in pending-mistake overlaps

_WINDOW = 256  # rows of the trials ahead copied at a time in presentation order


class _Window:
    """The A-unit rows of trials ``start, start+1, ...`` in presentation order.

    ``window[i:j]`` is trial ``start + i`` to ``start + j - 1``, and ``window[k]`` one row:
    views of the stored rows when they are presented in order, else of a copy of the next
    ``_WINDOW`` trials' rows (kept in the rows' :meth:`ARows.buffer`), valid until an access
    outside the copied trials.
    """

    def __init__(self, src: ARows, order: np.ndarray | None, start: int) -> None:
        self.A, self.order, self.start = src.A, order, start
        self.shape = ((len(src) if order is None else len(order)) - start, src.A.shape[1])
        self._src, self._lo, self._hi = src, 0, 0
        self._rows = src.A[:0]

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: int | slice) -> np.ndarray:
        if isinstance(key, slice):
            i, j = key.start or 0, self.shape[0] if key.stop is None else key.stop
        else:
            i, j = key, key + 1
        if self.order is None:
            rows = self.A[self.start + i : self.start + j]
        else:
            if i < self._lo or j > self._hi:
                self._refill(i, j)
            rows = self._rows[i - self._lo : j - self._lo]
        return rows if isinstance(key, slice) else rows[0]

    def _refill(self, i: int, j: int) -> None:
        """Copy the rows of trials ``i..`` (at least to ``j``); rows still held are moved."""
        hi = min(self.shape[0], i + max(_WINDOW, j - i))
        buffer = self._src.buffer(hi - i)[: hi - i]
        kept = 0
        if self._lo <= i < self._hi and buffer.base is self._rows.base:  # slide
            kept = self._hi - i
            buffer[:kept] = self._rows[i - self._lo :]
        assert self.order is not None  # (rows in order are views, never copied)
        order = self.order[self.start + i + kept : self.start + hi]
        np.take(self.A, order, axis=0, out=buffer[kept:], mode="clip")
        self._rows, self._lo, self._hi = buffer, i, hi


def _first_wrong(wrong: np.ndarray) -> int:
    """Index of the first row of ``wrong`` (b, u) with a wrong R-unit, or -1."""
    bad = wrong[:, 0] if wrong.shape[1] == 1 else np.asarray(wrong.any(axis=1))
    f = int(bad.argmax())
    return f if bad[f] else -1


class _Rate:
    """Running share of mistakes among the recent trials (halved weight per block)."""

    def __init__(self, trials: float, mistakes: float, block: int | None) -> None:
        self.trials, self.mistakes, self.block = trials, mistakes, block

    def add(self, trials: int, mistakes: int) -> None:
        self.trials = self.trials / 2 + trials
        self.mistakes = self.mistakes / 2 + mistakes

    @property
    def dense(self) -> bool:
        return self.mistakes > _DENSE * self.trials

    def plan(self, cost: float) -> tuple[int, int]:
        """Mistakes per block and trials scored ahead, for a block that costs ``cost`` times
        what each pending mistake adds to a trial (fewer blocks against shorter waits)."""
        share = self.mistakes / self.trials
        limit = min(_MAX_LIMIT, max(2, round((2 * cost * share) ** 0.5)))
        if self.block:
            return limit, self.block
        return limit, min(_MAX_AHEAD, max(_MIN_BLOCK, int(1.5 * limit / share) + 1))


def exact_epoch(job: EpochBook, bank: PotentiometerBank, rows: slice, r_theta: float,
                block: int | None = None) -> None:
    """Error correction on exact pots whose sums are whole numbers below 2**24
    (:func:`mark1.fast.bookkeeping.whole_number_sums`: the caller checks).

    Unless the last pass over these rows had several mistakes, all the pass's trials are first
    scored with one product over the A-unit rows as stored; from the first mistake on, blocks
    of upcoming trials in presentation order (``block`` trials each when given, else adaptive).
    Where mistakes are sparse, a block's first mistake is corrected and scoring resumes after
    it; where they are dense, blocks are finished in plain Python from the overlaps
    ``a_later . a_f`` of their rows (bit counts) and the weights take a block's corrections at
    its end. Every sum is a whole number, exact in float32, so this is exactly the reference's
    result. The weights are kept in float32 during the pass (:attr:`PotentiometerBank.lin`) and
    go into the float64 state at its end (whole numbers of steps: exact too).
    """
    W32 = bank.lin[rows, 0]  # (u, p) view: the weights used for scoring
    step = correction_step(bank, job)
    src, positive = job.src, job.positive
    n, n_units = positive.shape
    theta = np.float32(r_theta)
    start = 0
    if block is None and src.last_mistakes < 2:  # score everything at once
        r = job.A @ W32.T
        if job.order is not None:
            r = r.take(job.order, axis=0)
        if r_theta:
            r -= theta
        start = _first_wrong((r > 0) != positive)
        if start < 0:
            return
    Ap = _Window(src, job.order, start)
    pos = positive[start:]
    m = len(Ap)
    signs = np.zeros((m, n_units), dtype=np.float32)  # the correction after each trial, steps
    python = n_units <= _PACKED_UNITS
    if start or src.last_mistakes < 2:
        rate = _Rate(start + 1.0, 1.0, block)  # the first mistake came after `start` trials
    else:
        rate = _Rate(float(n), float(src.last_mistakes), block)  # as many as last time
    lists = _Lists(src, job.order, start, pos)
    size = block or _MIN_BLOCK
    one = n_units == 1
    w, pos1, signs1 = W32[0], pos[:, 0], signs[:, 0]
    up, down = np.float32(step), np.float32(-step)
    i = 0
    while i < m:
        if python and rate.dense:
            if one:
                i = _dense_one(Ap, w, lists, signs1, i, step, theta, rate, job, start)
            else:
                stop = _dense_packed(Ap, W32, lists, signs, i, int(step), theta, rate, job,
                                     start)
                python = stop >= 0
                i = max(i, stop)
            continue
        j = min(m, i + size)
        if one:
            r = Ap[i:j] @ w
            if r_theta:
                r -= theta
            bad = (r > 0) != pos1[i:j]
            f = int(bad.argmax())
            if not bad[f]:
                f = -1
        else:
            r = Ap[i:j] @ W32.T
            if r_theta:
                r -= theta
            wrong = (r > 0) != pos[i:j]
            f = _first_wrong(wrong)
        if f < 0:
            rate.add(j - i, 0)
            size = block or min(2 * size, _MAX_BLOCK)
            i = j
        else:
            k = i + f
            if one:
                signs1[k] = 1.0 if pos1[k] else -1.0
                w += Ap[k] * (up if pos1[k] else down)
            else:
                correction = np.where(pos[k], np.float32(1), np.float32(-1)) * wrong[f]
                signs[k] = correction
                W32 += np.multiply.outer(correction * up, Ap[k])
            job.mistakes += 1
            rate.add(f + 1, 1)
            size = block or max(_MIN_BLOCK, min(_MAX_BLOCK, 2 * (f + 1)))
            i = k + 1
        job.report(start + i)
    # the pass's corrections into the state (whole numbers of steps: exact in float32)
    hit = np.flatnonzero(signs1 if one else signs.any(axis=1))
    both = np.concatenate([signs[hit], np.abs(signs[hit])], axis=1)
    stored = hit + start if job.order is None else job.order[start:][hit]
    if len(hit) * 4 < m:  # few mistakes: their rows only
        counts = both.T @ job.A.take(stored, axis=0)
    else:
        per_row = np.zeros((len(job.A), 2 * n_units), dtype=np.float32)
        if job.order is None:
            per_row[stored] = both
        else:  # a row may be presented, and corrected, more than once (sample_weight)
            np.add.at(per_row, stored, both)
        counts = per_row.T @ job.A
    base, travel = bank.base[rows], bank.travel[rows]
    base += step * counts[:n_units].astype(np.float64)
    travel += step * counts[n_units:].astype(np.float64)
    W32[:] = base
    job.mark(start + hit, signs[hit], src.n_active[stored])


class _Lists:
    """Python lists of the trials from ``start`` on, for the dense loops (made when needed)."""

    def __init__(self, src: ARows, order: np.ndarray | None, start: int,
                 pos: np.ndarray) -> None:
        self.src, self.order, self.start, self.pos = src, order, start, pos
        self._order: list[int] | None = None
        self._right: list | None = None

    def bits(self, i: int, j: int) -> list[int]:
        """Bit sets of the A-unit rows of trials ``i..j-1`` (counted from ``start``)."""
        stored = self.src.bits()
        if self.order is None:
            return stored[self.start + i : self.start + j]
        if self._order is None:
            self._order = self.order[self.start :].tolist()
        return [stored[k] for k in self._order[i:j]]

    def right(self) -> list[bool]:
        """Whether the right response of each trial is +1 (one R-unit)."""
        if self._right is None:
            self._right = self.pos[:, 0].tolist()
        return self._right


def _dense_one(Ap: _Window, w: np.ndarray, lists: _Lists, signs: np.ndarray, i: int,
               step: float, theta: np.float32, rate: _Rate, job: EpochBook, start: int) -> int:
    """One R-unit, trials ``i, i+1, ...`` while mistakes are dense; returns where it stopped.

    Each block of upcoming trials is scored with the weights ``w`` at its start; then trial
    by trial, a trial's sum is its block score plus ``step`` times the active A-units it shares
    with each earlier mistake of the block, signed (``int.bit_count`` of the rows' bit sets).
    After a number of mistakes (more where they are denser: :meth:`_Rate.plan`) the weights
    take the block's corrections and a new block starts after the last one.
    """
    m = len(Ap)
    right = lists.right()
    while i < m and rate.dense:
        limit, ahead = rate.plan(_SINGLE_COST)
        j = min(m, i + ahead)
        r = Ap[i:j] @ w
        if theta:
            r -= theta
        up: list[int] = []
        down: list[int] = []
        e = i
        for s, aq, rq in zip(r.tolist(), lists.bits(i, j), right[i:j]):
            if up:
                c = 0
                for am in up:
                    c += (am & aq).bit_count()
                s += step * c
            if down:
                c = 0
                for am in down:
                    c += (am & aq).bit_count()
                s -= step * c
            e += 1
            if (s > 0) != rq:
                if rq:
                    up.append(aq)
                    signs[e - 1] = 1.0
                else:
                    down.append(aq)
                    signs[e - 1] = -1.0
                if len(up) + len(down) == limit:
                    break
        found = len(up) + len(down)
        if found:
            delta = signs[i:e] @ Ap[i:e]
            if step != 1:
                delta *= np.float32(step)
            w += delta
            job.mistakes += found
        rate.add(e - i, found)
        i = e
        job.report(start + i)
    return i


_PACKED_UNITS = 8  # most R-units packed into one integer (four 64-bit words)
_FIELD = 32  # bits per R-unit sum in a packed integer
_ONE_F32, _MINUS_ONE_F32 = 0x3F800000, 0xBF800000  # bit patterns of float32 1.0 and -1.0


def _dense_packed(Ap: _Window, W: np.ndarray, lists: _Lists, signs: np.ndarray, i: int,
                  step: int, theta: np.float32, rate: _Rate, job: EpochBook, start: int) -> int:
    """Several R-units with whole-number sums (see :func:`_dense_one`), trial by trial.

    The R-unit sums of a trial are packed into one Python integer, a 32-bit field per unit
    holding ``sum + 2**31``, so a mistake's correction of all its wrong units is one integer
    (its packed steps) and an overlap adds ``count * correction`` to every unit at once; the
    units that are on (sum > 0) are the top bits of the fields of ``packed - 1``, compared with
    the right responses' top bits in one operation. Returns where it stopped, or -1 when the
    sums could outgrow the fields.
    """
    m, u = len(Ap), W.shape[0]
    shift = _FIELD - 1
    bound = float(np.abs(W).sum(axis=1).max()) + abs(float(theta)) + step * Ap.shape[1] * (
        m - i + _MAX_LIMIT)  # no sum of this pass can reach it
    if bound >= 1 << shift:
        return -1
    width = 4 * u
    fields = np.zeros((rate.block or _MAX_AHEAD, u), dtype="<i4")
    flip = np.int32(-(1 << shift))  # xor: adds 2**31 modulo 2**32
    ones = sum(1 << (_FIELD * k) for k in range(u))
    top = ones << shift
    right_fields = np.ascontiguousarray(lists.pos[i:], dtype="<u4")
    right_fields <<= shift
    rights = _packed(right_fields)
    offset = i
    while i < m and rate.dense:
        limit, ahead = rate.plan(_MULTI_COST)
        j = min(m, i + ahead)
        r = Ap[i:j] @ W.T
        if theta:
            r -= theta
        b = j - i
        fields[:b, :u] = r
        np.bitwise_xor(fields[:b, :u], flip, out=fields[:b, :u])
        base = _packed(fields[:b])
        made: list[tuple[int, int]] = []
        found: list[int] = []
        corrections: list[bytes] = []
        e = i
        for s, aq, rq in zip(base, lists.bits(i, j), rights[i - offset : j - offset]):
            for am, d in made:
                s += (am & aq).bit_count() * d
            e += 1
            wrong = ((s - ones) & top) ^ rq
            if wrong:
                up = (wrong & rq) >> shift
                down = (wrong >> shift) ^ up
                made.append((aq, (up - down) * step))
                found.append(e - 1)
                corrections.append((up * _ONE_F32 + down * _MINUS_ONE_F32).to_bytes(
                    width, "little"))
                if len(found) == limit:
                    break
        if found:
            signs[found] = np.frombuffer(b"".join(corrections), "<f4").reshape(len(found), u)
            delta = signs[i:e].T @ Ap[i:e]
            if step != 1:
                delta *= np.float32(step)
            W += delta
            job.mistakes += len(found)
        rate.add(e - i, len(found))
        i = e
        job.report(start + i)
    return i


def _packed(fields: np.ndarray) -> list[int]:
    """Each row of ``fields`` (contiguous, little-endian) as one Python integer."""
    rows = fields.view(f"V{fields.itemsize * fields.shape[1]}").ravel().tolist()
    return [int.from_bytes(row, "little") for row in rows]


# ---------------------------------------------------------------------- any pots

_U32, _U64 = 2.0**-24, 2.0**-53  # unit roundoff, float32 and float64
_WRONG, _RIGHT = np.array([True]), np.array([False])  # one R-unit's decisions


def physical_epoch(job: EpochBook, bank: PotentiometerBank, units: np.ndarray,
                   rows: slice | np.ndarray, targets: np.ndarray,
                   rng: np.random.Generator | None, rule: str, noise: np.ndarray | None,
                   r_theta: float, block: int | None = None) -> None:
    """Any rule on any pots: score ahead, correct at the first mistake, score again.

    A trial's R-unit sums are ``A @ (base + creep * t)`` plus ``sqrt(A @ variance)`` times its
    noise draw: products of its A-unit row with the bank's linear model (one product of a
    block's rows with base, creep and variance together). Unless the last pass
    had several mistakes, all the pass's trials are first scored with products over the rows
    as stored; from the first mistake on, blocks of upcoming trials in presentation order
    (``block`` trials each when given), cut before the trial at which a creeping wiper reaches
    its end stop (that trial starts the next block, the wipers pinned first, as the reference
    does before every trial). Sums near zero are settled by the reference (:class:`_Ties`).
    Forced response corrects every trial: blocks of one. A correction turns the pots of each
    R-unit to correct, one row after the other (:meth:`PotentiometerBank.move`).
    """
    forced = rule == "forced-response"
    n_steps = job.clock.motors.steps_per_correction if job.motors else 1
    src, positive = job.src, job.positive
    n, n_units = positive.shape
    one = n_units == 1
    noisy = noise is not None and bank.spec.read_noise > 0
    drifting = bank.drifts
    scorer = _Products(bank, rows, one, drifting, noisy)
    ties = _Ties(job, bank, units, noise if noisy else None, r_theta)
    fixed_band = ties.band(0.0) if np.isfinite(bank.max_weight) else None
    everyone = np.arange(n_units)
    present_us = job.pres * np.arange(1, n + 1, dtype=np.int64)
    pos1 = positive[:, 0]
    signs = np.where(pos1 if one else positive, 1.0, -1.0)  # r * sign > 0: right
    unit_list = units.tolist()
    noise1 = noise[:, 0] if noisy and one and noise is not None else noise
    Ap: _Window | None = None
    start = 0
    size = block or _MIN_BLOCK
    whole = block is None and not forced and src.last_mistakes < 2
    if not whole:
        Ap = _Window(src, job.order, 0)
        scorer.permute(Ap, 0)
    i = 0
    while i < n:
        j = n if whole else min(n, i + (1 if forced else size))
        t_us = job.t0 + job.extra_us
        times_s = (t_us + present_us[i:j]) * 1e-6
        if drifting:
            state = bank.state
            if (t_us + job.pres * (i + 1)) * 1e-6 >= state.next_stop_s:
                bank.pin((t_us + job.pres * (i + 1)) * 1e-6)
            if (t_us + job.pres * j) * 1e-6 >= state.next_stop_s:  # a wiper stops by j - 1
                j = i + max(1, int(np.searchsorted(times_s, state.next_stop_s, side="left")))
                times_s = times_s[: j - i]
        if whole:
            r = scorer.whole(i, j, times_s, noise1, job.A, job.order)
        else:
            r = scorer.block(i, j, times_s, noise1)
        if r_theta:
            r = r - r_theta
        # signed by the right answers: > 0 right, < 0 wrong, within the band (zero included,
        # which is wrong for a right answer of +1) too near to tell
        signed = r * signs[i:j]
        band = fixed_band if fixed_band is not None else ties.band((t_us + job.pres * j) * 1e-6)
        doubt = signed <= band
        if not one:
            doubt = np.asarray(doubt.any(axis=1))
        f = 0 if forced else int(doubt.argmax())
        if not (forced or doubt[f]):
            f = -1
        elif one and not forced and signed[f] < -band:  # (the usual mistake)
            wrong = _WRONG
        else:
            f, wrong = ties.first_wrong(signed, doubt, band, f, i, times_s, forced)
        if f < 0:
            i = j
            size = block or min(2 * size, _MAX_BLOCK)
        else:
            k = i + f
            if Ap is None:
                start = k
                Ap = _Window(src, job.order, start)
                whole = False
                scorer.permute(Ap, start)
            active = src.active(k if job.order is None else int(job.order[k]))
            t_k = job.time_us(k) * 1e-6
            if one and not bank.exact:
                assert rng is not None  # (checked by train_epoch)
                bank.turn_row(unit_list[0], active, bool(pos1[k]), n_steps, t_k, rng)
                job.corrected(k, len(active), bool(wrong[0]))
            else:
                turn = everyone if forced else wrong.nonzero()[0]
                if bank.exact:
                    bank.move(units[turn], active, targets[k, turn], n_steps, t_k, rng)
                else:  # (move, one row after the other)
                    assert rng is not None  # (checked by train_epoch)
                    for q in turn.tolist():
                        bank.turn_row(unit_list[q], active, bool(positive[k, q]), n_steps,
                                      t_k, rng)
                job.corrected(k, len(active) * len(turn), bool(wrong.any()))
            i = k + 1
            size = block or max(_MIN_BLOCK, min(_MAX_BLOCK, 2 * (f + 1)))
        job.report(i)


class _Products:
    """R-unit sums of trials from their A-unit rows and the bank's linear model."""

    def __init__(self, bank: PotentiometerBank, rows: slice | np.ndarray, one: bool,
                 drifting: bool, noisy: bool) -> None:
        self.bank, self.rows, self.one = bank, rows, one
        self.drifting, self.noisy = drifting, noisy
        self._rows: _Window | None = None
        self._start = 0
        lin = bank.lin
        # the trained rows' model as one (n_p, 3 u) matrix: a view the turns keep current
        # when the rows are consecutive, else taken again for every block
        self._model = lin[rows].reshape(-1, lin.shape[2]).T if isinstance(rows, slice) else None

    def _flat_model(self) -> np.ndarray:
        if self._model is not None:
            return self._model
        lin = self.bank.lin[self.rows]
        return lin.reshape(-1, lin.shape[2]).T

    def permute(self, Ap: _Window, start: int) -> None:
        """From now on trials ``start, ...`` are scored from their rows ``Ap`` (in order)."""
        self._rows, self._start = Ap, start

    def whole(self, i: int, j: int, times_s: np.ndarray, noise: np.ndarray | None,
              stored: np.ndarray, order: np.ndarray | None) -> np.ndarray:
        """Sums of trials ``i..j-1`` from all the rows as stored (``order``: presentation)."""
        if self.one:
            lin = self.bank.lin[self.rows]
            p = np.stack([stored @ lin[0, k] for k in range(3)], axis=1)
        else:
            p = stored @ self._flat_model()
        p = p[i:j] if order is None else p.take(order[i:j], axis=0)
        return self._combine(p.reshape(len(p), -1, 3), times_s, noise[i:j] if self.noisy
                             and noise is not None else None)

    def block(self, i: int, j: int, times_s: np.ndarray,
              noise: np.ndarray | None) -> np.ndarray:
        """Sums of trials ``i..j-1`` from the rows given to :meth:`permute`: one product of
        the block's rows with the whole model (base, creep and variance of every unit)."""
        assert self._rows is not None
        p = self._rows[i - self._start : j - self._start] @ self._flat_model()
        return self._combine(p.reshape(len(p), -1, 3), times_s, noise[i:j] if self.noisy
                             and noise is not None else None)

    def _combine(self, p: np.ndarray, times_s: np.ndarray,
                 noise: np.ndarray | None) -> np.ndarray:
        """Sums from products ``p`` (b, u, 3) of base, creep and variance."""
        r = p[:, :, 0]
        if self.drifting:
            r = r + times_s[:, None] * p[:, :, 1]
        if noise is not None:
            r = r + np.sqrt(p[:, :, 2]) * (noise[:, None] if noise.ndim == 1 else noise)
        return r[:, 0] if self.one else r


class _Ties:
    """Sums the products cannot tell from zero, settled by the reference's own arithmetic.

    A block's sums come from float32 BLAS products, summed in an order of BLAS's choosing; the
    reference (:func:`mark1.r_units.unit_sums`) sums in float64 in ascending order. Whatever
    the order, a float32 sum of ``n`` terms is within ``gamma_n * sum|terms|`` of the exact
    sum (``gamma_n = n u / (1 - n u)``, ``u = 2**-24``), and the reference's within the float64
    ``gamma_n`` of it. The weights' part of a sum, ``sum(base) + t * sum(creep)``, has at most
    ``n_max`` terms (the most active A-units of any row), bounded by ``weights = n_max (w + t
    c)`` with ``w``, ``c`` bounds on the pots' base and creep: for bounded pots ``|base| <=
    max|stop| + max|rate| t`` and ``|creep| <= max|rate|`` (so one band serves a whole pass,
    taken at the latest time the pass can reach: every trial followed by the longest motor
    run), else the model's largest entries now. The noise part ``sqrt(sum(variance)) * z``
    carries a relative error below ``c = 2 (gamma_n + 2u)`` (the float32 square root adds a
    rounding) and is itself at most ``|r| + weights + |r_theta|``; the float64 combinations
    add a few roundings of the magnitude. So where ``|r| (1 - c) > 2 gamma_n weights + (16 u64
    + c) (weights + |r_theta|)``, the product's sign is the reference's (the band is the right
    side over ``1 - c``, with a safety factor of 2 on every term). A trial with a sum inside
    the band is tried against a band from its own terms, then scored again by ``unit_sums``.
    """

    def __init__(self, job: EpochBook, bank: PotentiometerBank, units: np.ndarray,
                 noise: np.ndarray | None, r_theta: float) -> None:
        self.job, self.bank, self.units, self.noise, self.r_theta = job, bank, units, noise, \
            r_theta
        n_max = int(job.src.n_active.max(initial=0))
        self.n_max = n_max
        self.g = 2 * (n_max + 2) * (_U32 + _U64) * 1.01  # gamma_n, float32 plus float64, x2
        self.c = 2 * (self.g + 2 * _U32) * 1.01 if noise is not None else 0.0
        self.settled = 0  # trials scored again by the reference
        self._widen = 0.0
        self._band: float | None = None  # the pass's band (bounded pots)
        if np.isfinite(bank.max_weight):
            n = len(job.positive)
            longest = job.clock.motors.motor_us(bank.shape[1] * len(units))
            t_end = (job.t0 + n * (job.pres + longest)) * 1e-6
            self._band = self._of(n_max * (bank.max_weight + 2 * bank.max_rate * t_end))

    def widen(self, by: float) -> None:
        """Widen the band by ``by`` (tests: more sums settled by the reference)."""
        self._widen = by
        if self._band is not None:
            self._band += by

    def _of(self, weights: float) -> float:
        """The band for sums whose weights' part is at most ``weights`` in magnitude."""
        weights *= 1 + 4 * _U32  # (rounded to float32)
        rest = weights + abs(self.r_theta)
        return (self.g * weights + 16 * _U64 * rest + self.c * rest) / (1 - self.c)

    def band(self, t_max: float) -> float:
        """Half-width of the band around zero in which a sum of a block read up to ``t_max``
        seconds may differ in sign from the reference's (sums outside it are decided by the
        products; those inside by :meth:`first_wrong`)."""
        if self._band is not None:
            return self._band
        model = self.bank.lin[self.units]
        m0, m1 = float(np.abs(model[:, 0]).max()), float(np.abs(model[:, 1]).max())
        return self._of(self.n_max * (m0 + t_max * m1)) + self._widen

    def first_wrong(self, s: np.ndarray, doubt: np.ndarray, band: float, k: int, i: int,
                    times_s: np.ndarray, forced: bool) -> tuple[int, np.ndarray]:
        """The first trial of a block (from trial ``i``) with a wrong R-unit, from trial
        ``k`` on, and its wrong R-units (u,) as the reference decides them (not to be written
        to); -1 when there is none (``k`` = 0 when ``forced``: the first trial is corrected
        whatever). ``s`` ((b,) or (b, u)): the products' sums signed by the right responses
        (> 0: right); ``doubt`` (b,): the trials with a sum not above ``band``."""
        one = s.ndim == 1
        while forced or doubt[k]:
            if one:
                v = float(s[k])
                if abs(v) > band:
                    wrong = _WRONG if v < 0 else _RIGHT
                else:
                    wrong = self._settle(i + k, times_s[k], s[k : k + 1], _WRONG)
            else:
                wrong = s[k] < 0
                near = np.abs(s[k]) <= band
                if near.any():  # (rarely)
                    wrong[near] = self._settle(i + k, times_s[k], s[k, near], near)
            if forced or wrong.any():
                return k, wrong
            if k + 1 == len(s):
                break
            k += 1 + int(doubt[k + 1 :].argmax())  # right after all: look further
        return -1, _RIGHT

    def _settle(self, k: int, t: float, s: np.ndarray, near: np.ndarray) -> np.ndarray:
        """Whether the R-units ``near`` (bool (u,)) answer trial ``k`` wrongly, read at ``t``
        seconds, their products' signed sums ``s`` too near zero for the block's band: first
        against a band from this trial's own terms (``gamma_n`` times the sum of the base
        magnitudes plus ``t`` times the creep bound), then, for those still in doubt, by the
        reference (:func:`mark1.r_units.unit_sums`)."""
        job, bank = self.job, self.bank
        active = job.src.active(k if job.order is None else int(job.order[k]))
        units = self.units[near]
        t = float(t)
        base = bank.lin[:, 0].take(units, axis=0)[:, active]
        weights = np.abs(base).sum(axis=1, dtype=np.float64) * 1.01  # (float64 sums rounded)
        weights += len(active) * bank.max_rate * t * 1.01
        g = (len(active) + 2) * (_U32 + _U64) * 2.02
        rest = weights + abs(self.r_theta)
        c = 2 * (g + 2 * _U32) * 1.01 if self.noise is not None else 0.0
        band = (g * weights + 16 * _U64 * rest + c * rest) / (1 - c) + self._widen
        wrong = s < 0
        doubt = np.abs(s) <= band
        if doubt.any():
            self.settled += 1
            z = self.noise[k, near][doubt] if self.noise is not None else None
            r = unit_sums(bank.lin, units[doubt], active, t, z) - self.r_theta
            wrong[doubt] = (r > 0) != job.positive[k, near][doubt]
        return wrong
