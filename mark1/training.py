"""Training rules: Rosenblatt's error correction, the forced-response variant, ideal float.

``error-correction`` (default)
    After each response, every R-unit that answered wrongly has the pots of all active A-units
    (and its bias pot) turned one correction toward the right answer; nothing moves when the
    machine was right.
``forced-response``
    The trainer forces the correct response: on every trial, every trained R-unit has the pots
    of the active A-units turned toward the forced response, right or wrong.
``ideal``
    The textbook perceptron: error correction on exact float weights (unit steps from zero, no
    pot physics, no motors), on whatever retina the preset has.

Error correction is sequential: each trial is scored with the weights left by the previous
one. The engine keeps exactly those semantics but scores a *block* of upcoming trials at once
with the current weights (drift is linear between end-stop events, so it scores in closed form
too); only the first wrong trial of a block changes anything. On physical pots the pots are
corrected there and scoring resumes from the next trial. On exact pots a correction at trial
``f`` changes a later trial's sums by ``+-step * (a_later . a_f)``, a count of shared active
A-units: where mistakes are dense the block is finished trial by trial in plain Python from
those counts (A-unit rows held as bit sets, the counts by ``int.bit_count``; several R-units'
sums packed into one integer), and the weights take the block's corrections at its end. Read
noise for each trial is drawn before the epoch, so the result does not depend on the block
size. Rows presented pass after pass are best given as one :class:`ARows`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from mark1 import kernels
from mark1.motors import MachineClock, to_us
from mark1.potentiometers import PotentiometerBank

RULES = ("error-correction", "forced-response", "ideal")
"""Names of the training rules."""

Progress = Callable[[int, int], None]
"""``progress(new_trials, new_mistakes)``, called as an epoch advances."""

_MIN_BLOCK, _MAX_BLOCK = 8, 256  # scoring blocks while mistakes are sparse
_DENSE = 1 / 24  # exact pots: over this share of mistakes, blocks are finished in Python
_MAX_AHEAD = 64  # most trials scored ahead in Python
_MAX_LIMIT = 24  # most mistakes after which the weights take a block's corrections
_SINGLE_COST, _MULTI_COST = 70.0, 120.0  # a block's numpy work in pending-mistake overlaps


class ARows:
    """The A-unit rows of a set of stimuli, prepared once for pass after pass.

    ``A``: (n, n_p) A-unit outputs, 0/1, with a trailing 1 for the bias line where there is one.
    Pass the same object to :func:`train_epoch` on every pass: what the trainer derives from
    the rows (bit sets, active A-units) is computed once and kept here.
    """

    def __init__(self, A: np.ndarray) -> None:
        A = np.asarray(A)
        if A.ndim != 2:
            raise ValueError(f"A-unit rows must be a 2-d array (n, n_p); got shape {A.shape}")
        self.A = np.ascontiguousarray(A, dtype=np.float32)
        """The rows, float32 (n, n_p)."""
        self._bits: list[int] | None = None
        self._binary: bool | None = None if A.dtype != bool else True
        self._on = A if A.dtype == bool else None  # active entries, kept when given
        self._active: list[np.ndarray | None] = [None] * len(self.A)
        self._buffer: np.ndarray | None = None
        self._n_active: np.ndarray | None = None
        self._csr: tuple[np.ndarray, np.ndarray] | None = None
        self.last_mistakes = 0
        """Mistakes of the last pass over these rows (a scoring hint: after a pass with
        several, the next one is not scored all at once first)."""

    def __len__(self) -> int:
        return len(self.A)

    @property
    def binary(self) -> bool:
        """True when every entry is 0 or 1 (then overlaps are counts of shared active units)."""
        if self._binary is None:
            self._binary = bool(np.array_equal(self.A, self.A > 0))
        return self._binary

    def bits(self) -> list[int]:
        """Each row as a Python int whose bit ``j`` is set when A-unit ``j`` is active."""
        if self._bits is None:
            on = self.A != 0 if self._on is None else self._on
            packed = np.packbits(on, axis=1, bitorder="little")
            width = packed.shape[1]
            raw = packed.tobytes()
            self._bits = [int.from_bytes(raw[k : k + width], "little")
                          for k in range(0, len(raw), width)]
        return self._bits

    @property
    def n_active(self) -> np.ndarray:
        """Active A-units (nonzero entries) of each row, int64 (n,)."""
        if self._n_active is None:
            self._n_active = np.count_nonzero(self.A, axis=1)
        return self._n_active

    def csr(self) -> tuple[np.ndarray, np.ndarray]:
        """Active A-units of every row, compressed: row ``k``'s are
        ``indices[indptr[k]:indptr[k + 1]]`` (ascending), int64."""
        if self._csr is None:
            on = self.A != 0 if self._on is None else self._on
            indptr = np.zeros(len(on) + 1, dtype=np.int64)
            np.cumsum(np.count_nonzero(on, axis=1), out=indptr[1:])
            indices = np.flatnonzero(on).astype(np.int64, copy=False)
            indices %= max(1, on.shape[1])
            self._csr = (indptr, indices)
        return self._csr

    def buffer(self, rows: int) -> np.ndarray:
        """Scratch space for at least ``rows`` rows, kept from pass to pass."""
        if self._buffer is None or len(self._buffer) < rows:
            self._buffer = np.empty((rows, self.A.shape[1]), dtype=np.float32)
        return self._buffer

    def active(self, k: int) -> np.ndarray:
        """Indices of the active A-units (nonzero entries) of row ``k``."""
        act = self._active[k]
        if act is None:
            act = self._active[k] = np.flatnonzero(self.A[k])
        return act


@dataclass
class EpochLog:
    """What one pass over the training stimuli did."""

    mistakes: int
    """Trials on which at least one R-unit answered wrongly."""
    wrong: np.ndarray
    """Bool (n,): which trials were mistakes."""
    motor_steps: np.ndarray
    """Int (n,): motor steps taken after each trial."""
    time_us: np.ndarray
    """Int64 (n,): machine time at the end of each trial, microseconds."""


def _rows(units: np.ndarray) -> slice | np.ndarray:
    """A slice when the trained R-units are consecutive (views instead of copies)."""
    units = np.asarray(units)
    if len(units) and np.array_equal(units, np.arange(units[0], units[0] + len(units))):
        return slice(int(units[0]), int(units[0]) + len(units))
    return units


_THREADPOOLS: list = []  # the threadpoolctl controller, made once (finding the pools is slow)


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the small products of the training loop on one BLAS thread.

    Spread over busy cores, OpenBLAS makes products this small 10-50 times slower.
    """
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - installed with scikit-learn
        yield
        return
    if not _THREADPOOLS:
        _THREADPOOLS.append(ThreadpoolController())
    with _THREADPOOLS[0].limit(limits=1, user_api="blas"):
        yield


def train_epoch(
    A: np.ndarray | ARows,
    targets: np.ndarray,
    bank: PotentiometerBank,
    units: np.ndarray,
    clock: MachineClock,
    rng: np.random.Generator,
    *,
    rule: str = "error-correction",
    noise: np.ndarray | None = None,
    r_theta: float = 0.0,
    motors: bool = True,
    order: np.ndarray | None = None,
    block: int | None = None,
    progress: Progress | None = None,
) -> EpochLog:
    """Present the stimuli whose A-unit rows are ``A``, correcting the pots as ``rule`` says.

    ``A``: (n, n_p) A-unit outputs, 0/1, with a trailing 1 for the bias line (an
    :class:`ARows` when the same rows are presented pass after pass), presented in the order
    ``order`` (row ``order[i]`` is trial ``i``; row ``i`` when ``None``);
    ``targets``: (n, len(units)) the right response (+1/-1) of each trained R-unit, per trial;
    ``noise``: (n, len(units)) standard normal draws for the read noise, per trial, or ``None``;
    ``motors``: run the motors (and the clock) for corrections (``False`` for ideal);
    ``block``: fixed block size (1 scores trial by trial); adaptive when ``None``.
    Call it inside :func:`one_blas_thread` when running many epochs.
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; allowed: {', '.join(RULES)}")
    rows_in = A if isinstance(A, ARows) else ARows(A)
    units = np.asarray(units, dtype=np.int64)
    rows = _rows(units)
    job = _Epoch(rows_in, np.asarray(targets) > 0, order, progress, clock, motors)
    if bank.exact and isinstance(rows, slice) and rule != "forced-response":
        if not kernels.exact_epoch(job, bank, rows, r_theta):
            _exact_epoch(job, bank, rows, r_theta, block)
    elif not kernels.physical_epoch(job, bank, units, rows, rng, rule, noise, r_theta, block):
        _physical_epoch(job, bank, units, rows, targets, rng, rule, noise, r_theta, block)
    return job.finish()


_WINDOW = 256  # rows of the trials ahead copied at a time in presentation order
_REPORT_EVERY = 512  # trials between progress reports


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
        order = self.order[self.start + i + kept : self.start + hi]
        np.take(self.A, order, axis=0, out=buffer[kept:], mode="clip")
        self._rows, self._lo, self._hi = buffer, i, hi


class _Epoch:
    """Book-keeping shared by the training loops: rows in presentation order, logs, clock."""

    def __init__(self, rows: ARows, positive: np.ndarray, order: np.ndarray | None,
                 progress: Progress | None, clock: MachineClock, motors: bool) -> None:
        n = len(positive)
        if order is None:
            if len(rows) != n:
                raise ValueError(f"{len(rows)} A-unit rows for {n} trials")
        else:
            order = np.asarray(order)
            if order.shape != (n,) or order.dtype.kind not in "iu" or n and not (
                    0 <= order.min() and order.max() < len(rows)):
                raise ValueError(
                    f"order must hold {n} row indices in [0, {len(rows)}); got shape "
                    f"{order.shape}, dtype {order.dtype}")
        self.src, self.A, self.positive, self.order = rows, rows.A, positive, order
        self.progress, self.clock, self.motors = progress, clock, motors
        self.wrong = np.zeros(n, dtype=bool)
        self.moved = np.zeros(n, dtype=np.int64)  # pots turned after each trial
        self.motor_us = np.zeros(n, dtype=np.int64)
        self.t0, self.pres = clock.t_us, clock.present_us
        self.extra_us = 0  # motor time so far this epoch
        self.mistakes = 0
        self._reported = (0, 0)
        spec = clock.motors
        self._round_us = spec.steps_per_correction * to_us(spec.step_s)

    def presented(self, start: int) -> _Window:
        """A-unit rows of trials ``start, start+1, ...`` in presentation order."""
        return _Window(self.src, self.order, start)

    def corrected(self, k: int, n_pots: int, was_wrong: bool) -> None:
        """Trial ``k`` turned ``n_pots`` pots (and was a mistake if ``was_wrong``)."""
        if was_wrong:
            self.wrong[k] = True
            self.mistakes += 1
        if self.motors and n_pots:
            self.moved[k] = n_pots
            dt = -(-n_pots // self.clock.motors.max_running) * self._round_us
            self.motor_us[k] = dt
            self.extra_us += dt

    def mark(self, ks: np.ndarray, signs: np.ndarray, n_active: np.ndarray) -> None:
        """Log the mistakes at trials ``ks`` (already counted): each corrected the R-units
        with nonzero ``signs`` over its ``n_active`` active A-units."""
        self.wrong[ks] = True
        if self.motors and len(ks):
            n_pots = n_active * np.count_nonzero(signs, axis=1)
            self.moved[ks] = n_pots
            dt = -(-n_pots // self.clock.motors.max_running) * self._round_us
            self.motor_us[ks] = dt
            self.extra_us += int(dt.sum())

    def time_us(self, k: int) -> int:
        """Machine time at the reading of trial ``k`` (motor time before it included), us."""
        return self.t0 + self.extra_us + self.pres * (k + 1)

    def report(self, i: int, final: bool = False) -> None:
        if self.progress is not None and (i - self._reported[0] >= _REPORT_EVERY or final):
            self.clock.t_us = self.t0 + self.pres * i + self.extra_us
            self.progress(i - self._reported[0], self.mistakes - self._reported[1])
            self._reported = (i, self.mistakes)

    def finish(self) -> EpochLog:
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
        return EpochLog(self.mistakes, self.wrong, steps, time_log)


# ---------------------------------------------------------------------- exact pots


def _first_wrong(wrong: np.ndarray) -> int:
    """Index of the first row of ``wrong`` (b, u) with a wrong R-unit, or -1."""
    bad = wrong[:, 0] if wrong.shape[1] == 1 else wrong.any(axis=1)
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


def _exact_epoch(job: _Epoch, bank: PotentiometerBank, rows: slice, r_theta: float,
                 block: int | None) -> None:
    """Error correction on exact pots.

    Unless the last pass over these rows had several mistakes, all the epoch's trials are first
    scored with one product over the A-unit rows as stored; from the first mistake on, blocks
    of upcoming trials in presentation order. Where mistakes are sparse, a block's first
    mistake is corrected and scoring resumes after it; where they are dense, blocks are
    finished in plain Python from the overlaps ``a_later . a_f`` of their rows (bit counts) and
    the weights take a block's corrections at its end. With whole-number steps (the ideal
    machine's) every sum is a whole number, exact in float32 up to 2**24, so this is exactly
    the trial-by-trial result. The weights are kept in float32 during the pass
    (:attr:`PotentiometerBank.lin`) and go into the float64 state at its end.
    """
    W32 = bank.lin[rows, 0]  # (u, p) view: the weights used for scoring
    step = float(bank.spec.step * (job.clock.motors.steps_per_correction if job.motors else 1))
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
    Ap = job.presented(start)
    pos = positive[start:]
    m = len(Ap)
    signs = np.zeros((m, n_units), dtype=np.float32)  # the correction after each trial, steps
    whole = float(step).is_integer() and float(r_theta).is_integer() and bool(
        np.array_equal(W32, np.round(W32)))  # whole-number sums: the packed path is exact
    python = src.binary and (n_units == 1 or whole and n_units <= _PACKED_UNITS)
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
        per_row[stored] = both
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


def _dense_one(Ap: np.ndarray, w: np.ndarray, lists: _Lists, signs: np.ndarray, i: int,
               step: float, theta: np.float32, rate: _Rate, job: _Epoch, start: int) -> int:
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


def _dense_packed(Ap: np.ndarray, W: np.ndarray, lists: _Lists, signs: np.ndarray, i: int,
                  step: int, theta: np.float32, rate: _Rate, job: _Epoch, start: int) -> int:
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


# ---------------------------------------------------------------------- physical pots


def _physical_epoch(job: _Epoch, bank: PotentiometerBank, units: np.ndarray,
                    rows: slice | np.ndarray, targets: np.ndarray, rng: np.random.Generator,
                    rule: str, noise: np.ndarray | None, r_theta: float,
                    block: int | None) -> None:
    """Any rule on any pots: score ahead, correct at the first mistake, score again.

    A trial's R-unit sums are ``A @ (base + creep * t)`` plus ``sqrt(A @ variance)`` times its
    noise draw: products of its A-unit row with the bank's linear model (one product of a
    block's rows with base, creep and variance together). Unless the last pass
    had several mistakes, all the epoch's trials are first scored with products over the rows
    as stored; from the first mistake on, blocks of upcoming trials in presentation order, cut
    where a creeping wiper reaches its end stop. A correction turns the pots of each wrong
    R-unit's row at once (:meth:`PotentiometerBank.turn_row`).
    """
    forced = rule == "forced-response"
    n_steps = job.clock.motors.steps_per_correction if job.motors else 1
    src, positive = job.src, job.positive
    n, n_units = positive.shape
    one = n_units == 1
    noisy = noise is not None and bank.spec.read_noise > 0
    drifting = bool(bank.rate.any())
    scorer = _Products(bank, rows, one, drifting, noisy)
    everyone = np.arange(n_units)
    present_us = job.pres * np.arange(1, n + 1, dtype=np.int64)
    pos1 = positive[:, 0]
    unit = int(units[0])
    noise1 = noise[:, 0] if noisy and one else noise
    Ap: np.ndarray | None = None
    start = 0
    size = block or _MIN_BLOCK
    whole = block is None and not forced and src.last_mistakes < 2
    if not whole:
        Ap = job.presented(0)
        scorer.permute(Ap, 0)
    i = 0
    while i < n:
        j = n if whole else min(n, i + (1 if forced else size))
        times_s = None
        if drifting:
            t_us = job.t0 + job.extra_us
            if (t_us + job.pres * (i + 1)) * 1e-6 >= bank.next_stop_s:
                bank.pin((t_us + job.pres * (i + 1)) * 1e-6)
            times_s = (t_us + present_us[i:j]) * 1e-6
            if (t_us + job.pres * j) * 1e-6 > bank.next_stop_s:  # a wiper stops before trial j
                j = i + max(1, int(np.searchsorted(times_s, bank.next_stop_s, side="right")))
                times_s = times_s[: j - i]
        if whole:
            r = scorer.whole(i, j, times_s, noise1, job.A, job.order)
        else:
            r = scorer.block(i, j, times_s, noise1)
        if r_theta:
            r = r - r_theta
        if one:
            bad = (r > 0) != pos1[i:j]
            f = int(bad.argmax())
            if not (forced or bad[f]):
                f = -1
        else:
            wrong = (r > 0) != positive[i:j]
            f = 0 if forced else _first_wrong(wrong)
        if f < 0:
            i = j
            size = block or min(2 * size, _MAX_BLOCK)
        else:
            k = i + f
            if Ap is None:
                start = k
                Ap = job.presented(start)
                whole = False
                scorer.permute(Ap, start)
            active = src.active(k if job.order is None else int(job.order[k]))
            t_k = job.time_us(k) * 1e-6
            if one:
                was_wrong = bool(bad[f])
                if bank.exact:
                    bank.move(units, active, targets[k], n_steps, t_k, rng)
                else:
                    bank.turn_row(unit, active, bool(pos1[k]), n_steps, t_k, rng)
                n_pots = len(active)
            else:
                sel = everyone if forced else np.flatnonzero(wrong[f])
                was_wrong = bool(wrong[f].any())
                bank.move(units[sel], active, targets[k, sel], n_steps, t_k, rng)
                n_pots = len(active) * len(sel)
            job.corrected(k, n_pots, was_wrong)
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

    def permute(self, Ap: _Window, start: int) -> None:
        """From now on trials ``start, ...`` are scored from their rows ``Ap`` (in order)."""
        self._rows, self._start = Ap, start

    def whole(self, i: int, j: int, times_s: np.ndarray | None, noise: np.ndarray | None,
              stored: np.ndarray, order: np.ndarray | None) -> np.ndarray:
        """Sums of trials ``i..j-1`` from all the rows as stored (``order``: presentation)."""
        lin = self.bank.lin[self.rows]
        if self.one:
            p = np.stack([stored @ lin[0, k] for k in range(3)], axis=1)
        else:
            p = stored @ lin.reshape(-1, lin.shape[2]).T
        p = p[i:j] if order is None else p.take(order[i:j], axis=0)
        return self._combine(p.reshape(len(p), -1, 3), times_s, noise[i:j] if self.noisy else None)

    def block(self, i: int, j: int, times_s: np.ndarray | None,
              noise: np.ndarray | None) -> np.ndarray:
        """Sums of trials ``i..j-1`` from the rows given to :meth:`permute`: one product of
        the block's rows with the whole model (base, creep and variance of every unit)."""
        A = self._rows[i - self._start : j - self._start]
        lin = self.bank.lin[self.rows]
        p = A @ lin.reshape(-1, lin.shape[2]).T
        return self._combine(p.reshape(len(p), -1, 3), times_s, noise[i:j] if self.noisy else None)

    def _combine(self, p: np.ndarray, times_s: np.ndarray | None,
                 noise: np.ndarray | None) -> np.ndarray:
        """Sums from products ``p`` (b, u, 3) of base, creep and variance."""
        r = p[:, :, 0]
        if self.drifting:
            r = r + times_s[:, None] * p[:, :, 1]
        if noise is not None:
            r = r + np.sqrt(p[:, :, 2]) * (noise[:, None] if noise.ndim == 1 else noise)
        return r[:, 0] if self.one else r
