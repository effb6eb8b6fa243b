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
too); only the first wrong trial of a block changes anything, so the pots are corrected there
and scoring resumes from the next trial. Read noise for each trial is drawn before the epoch,
so the result does not depend on the block size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from mark1.motors import MachineClock, to_us
from mark1.potentiometers import PotentiometerBank

RULES = ("error-correction", "forced-response", "ideal")
"""Names of the training rules."""

Progress = Callable[[int, int], None]
"""``progress(new_trials, new_mistakes)``, called as an epoch advances."""

_MIN_BLOCK, _MAX_BLOCK = 8, 512
_DENSE, _DENSE_BLOCK = 16, 32  # over 1 mistake in 16 trials: Python on blocks of 32


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


class _Scorer:
    """R-unit sums of a block of trials from the bank's linear model: drift and noise included."""

    def __init__(self, bank: PotentiometerBank, rows: slice | np.ndarray, r_theta: float,
                 noise: np.ndarray | None) -> None:
        self.bank, self.rows, self.r_theta = bank, rows, r_theta
        self.noise = noise if bank.spec.read_noise > 0 else None
        self.drifting = bool(bank.rate.any())
        self.simple = self.noise is None and not self.drifting
        self.u = len(range(bank.shape[0])[rows]) if isinstance(rows, slice) else len(rows)

    def products(self, A: np.ndarray) -> tuple[np.ndarray, ...]:
        """``A`` times the weights, creep rates and noise variances (as needed), each (b, u)."""
        lin = self.bank.lin[self.rows]
        if self.simple:
            return (A @ lin[:, 0].T,)
        if self.u == 1:  # matrix-vector products are much faster than a thin product
            out = [A @ lin[0, 0]]
            if self.drifting:
                out.append(A @ lin[0, 1])
            if self.noise is not None:
                out.append(A @ lin[0, 2])
            return tuple(p[:, None] for p in out)
        s = (A @ lin.reshape(3 * self.u, -1).T).reshape(len(A), self.u, 3)
        return tuple(s[:, :, k] for k in range(3) if k == 0 or (
            k == 1 and self.drifting) or (k == 2 and self.noise is not None))

    def sums(self, products: tuple[np.ndarray, ...], i: int,
             times_s: np.ndarray | None) -> np.ndarray:
        """R-unit sums of trials ``i, i+1, ...`` from their :meth:`products`."""
        r = products[0]
        k = 1
        if self.drifting:
            r = r + times_s[:, None] * products[k]
            k += 1
        if self.noise is not None:
            r = r + np.sqrt(products[k]) * self.noise[i : i + len(r)]
        if self.r_theta:
            r = r - self.r_theta
        return r

    def score(self, A: np.ndarray, i: int, times_s: np.ndarray | None) -> np.ndarray:
        """Sums (b, u) for the trials ``i, i+1, ...`` whose A-unit rows are ``A``."""
        return self.sums(self.products(A), i, times_s)


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the small products of the training loop on one BLAS thread.

    Spread over busy cores, OpenBLAS makes products this small 10-50 times slower.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - installed with scikit-learn
        yield
        return
    with threadpool_limits(1, user_api="blas"):
        yield


def train_epoch(
    A: np.ndarray,
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

    ``A``: (n, n_p) A-unit outputs, 0/1 (float32 best), with a trailing 1 for the bias line,
    presented in the order ``order`` (row ``order[i]`` is trial ``i``; row ``i`` when ``None``);
    ``targets``: (n, len(units)) the right response (+1/-1) of each trained R-unit, per trial;
    ``noise``: (n, len(units)) standard normal draws for the read noise, per trial, or ``None``;
    ``motors``: run the motors (and the clock) for corrections (``False`` for ideal);
    ``block``: fixed block size (1 scores trial by trial); adaptive when ``None``.
    Call it inside :func:`one_blas_thread` when running many epochs.
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; allowed: {', '.join(RULES)}")
    A = np.asarray(A, dtype=np.float32)
    units = np.asarray(units, dtype=np.int64)
    rows = _rows(units)
    job = _Epoch(A, targets > 0, order, progress, clock, motors)
    if bank.exact and isinstance(rows, slice) and rule != "forced-response":
        _exact_epoch(job, bank, rows, r_theta, block)
    else:
        _physical_epoch(job, bank, units, rows, targets, rng, rule, noise, r_theta, block)
    return job.finish()


class _Epoch:
    """Book-keeping shared by the training loops: logs, clock, progress."""

    def __init__(self, A: np.ndarray, positive: np.ndarray, order: np.ndarray | None,
                 progress: Progress | None, clock: MachineClock, motors: bool) -> None:
        n = len(A)
        self.A, self.positive, self.order = A, positive, order
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

    def rows(self, i: int, j: int) -> np.ndarray:
        """A-unit rows of trials ``i..j-1``."""
        return self.A[i:j] if self.order is None else self.A.take(self.order[i:j], axis=0)

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

    def time_s(self, k: int) -> float:
        """Machine time at the reading of trial ``k`` (motor time before it included), s."""
        return (self.t0 + self.extra_us + self.pres * (k + 1)) * 1e-6

    def report(self, i: int, final: bool = False) -> None:
        if self.progress is not None and (i - self._reported[0] >= 512 or final):
            self.clock.t_us = self.t0 + self.pres * i + self.extra_us
            self.progress(i - self._reported[0], self.mistakes - self._reported[1])
            self._reported = (i, self.mistakes)

    def finish(self) -> EpochLog:
        n = len(self.A)
        clock = self.clock
        steps = self.moved * clock.motors.steps_per_correction
        time_log = self.t0 + self.pres * np.arange(1, n + 1, dtype=np.int64) + np.cumsum(
            self.motor_us)
        clock.t_us = int(time_log[-1]) if n else self.t0
        clock.trials += n
        clock.motor_us += int(self.motor_us.sum())
        clock.motor_steps += int(steps.sum())
        self.report(n, final=True)
        return EpochLog(self.mistakes, self.wrong, steps, time_log)


def _exact_epoch(job: _Epoch, bank: PotentiometerBank, rows: slice, r_theta: float,
                 block: int | None) -> None:
    """Error correction on exact pots.

    While mistakes are rare, all the epoch's remaining trials are scored with one product over
    the A-unit rows as stored. Then blocks of upcoming trials are scored; a mistake at trial
    ``k`` of a block changes the later trials' sums by ``+-step * (a_later . a_k)``, so the rest
    of the block is finished with one matrix-vector product per mistake (or, where mistakes
    are dense, from the block's Gram matrix in plain Python), and the weights take all of the
    block's corrections at its end. With whole-number steps (the ideal machine's) the sums are
    whole numbers, exact in float32 up to 2**24, so this is exactly the trial-by-trial result.
    """
    W64, W32, travel = bank.base[rows], bank.lin[rows, 0], bank.travel[rows]
    step = np.float32(bank.spec.step * (job.clock.motors.steps_per_correction if job.motors
                                        else 1))
    positive = job.positive
    n, n_units = positive.shape
    size = block or 64
    whole = block is None  # score everything left at once until mistakes turn up
    dense = False
    i = 0
    while i < n:
        if whole:
            r = job.A @ W32.T
            r = r[i:] if job.order is None else r[job.order[i:]]
            Ab, j = None, n
        else:
            j = min(n, i + size)
            Ab = job.rows(i, j)
            r = Ab @ W32.T
        if r_theta:
            r -= np.float32(r_theta)
        pos = positive[i:j]
        if whole:
            bad = (r > 0) != pos
            first = int(bad.argmax())
            f = first // n_units
            if not bad[f, first % n_units]:
                break
            found = [f]
            signs = np.where(pos[f], step, -step) * bad[f]
            signs = signs[None, :].astype(np.float32)
            Ab = job.rows(i + f, i + f + 1)
            found_rows = [0]
            j = i + f + 1
            whole = job.mistakes < 1  # a second mistake this epoch: blocks from now on
        elif dense:
            found, signs = _block_dense(Ab, r, pos, step)
            found_rows = found
        elif n_units == 1:
            found = found_rows = _block_single(Ab, r[:, 0], pos[:, 0], step)
            signs = np.where(pos[found, 0], step, -step)[:, None]
        else:
            found, signs = _block_multi(Ab, r, pos, step)
            found_rows = found
        if found:
            corrected = Ab[found_rows]
            if job.motors:
                n_active = corrected.sum(axis=1).astype(np.int64).tolist()
                n_units_wrong = np.count_nonzero(signs, axis=1).tolist()
                for m, f in enumerate(found):
                    job.corrected(i + f, n_active[m] * n_units_wrong[m], True)
            else:
                for f in found:
                    job.corrected(i + f, 0, True)
            delta = signs.T @ corrected
            W64 += delta
            W32 += delta
            travel[:] += np.abs(delta)
        if not whole:
            dense = len(found) * _DENSE > j - i  # many mistakes: plain Python on small blocks
            if block is None:
                size = _DENSE_BLOCK if dense else min(2 * size, _MAX_BLOCK) if not found else max(
                    _MIN_BLOCK, min(_MAX_BLOCK, 4 * (j - i) // (len(found) + 1)))
        i = j
        job.report(i)


def _block_dense(Ab: np.ndarray, r: np.ndarray, pos: np.ndarray,
                 step: np.float32) -> tuple[list[int], np.ndarray]:
    """A block with many mistakes: its Gram matrix once, then plain Python trial by trial.

    Returns the mistakes' places in the block and their signed corrections (one row each).
    """
    gram = (Ab @ Ab.T).tolist()
    b, n_units = r.shape
    s = float(step)
    found: list[int] = []
    signs: list[list[float]] = []
    if n_units == 1:
        sums, right = r[:, 0].tolist(), pos[:, 0].tolist()
        for p in range(b):
            if (sums[p] > 0) != right[p]:
                d = s if right[p] else -s
                found.append(p)
                signs.append([d])
                g = gram[p]
                for q in range(p + 1, b):
                    sums[q] += d * g[q]
        return found, np.array(signs, dtype=np.float32).reshape(-1, 1)
    sums, right = r.tolist(), pos.tolist()
    units = range(n_units)
    for p in range(b):
        sp, rp = sums[p], right[p]
        corr = [(s if rp[k] else -s) if (sp[k] > 0) != rp[k] else 0.0 for k in units]
        if any(corr):
            found.append(p)
            signs.append(corr)
            wrong = [k for k in units if corr[k]]
            g = gram[p]
            for q in range(p + 1, b):
                if g[q]:
                    sq = sums[q]
                    for k in wrong:
                        sq[k] += corr[k] * g[q]
    return found, np.array(signs, dtype=np.float32).reshape(-1, n_units)


def _block_single(Ab: np.ndarray, r: np.ndarray, pos: np.ndarray, step: np.float32) -> list[int]:
    """The mistakes of one R-unit over a block, updating its later sums as it goes."""
    found = []
    p, b = 0, len(r)
    while p < b:
        bad = (r[p:] > 0) != pos[p:]
        f = p + int(bad.argmax())
        if not bad[f - p]:
            break
        found.append(f)
        if f + 1 < b:
            g = Ab[f + 1 :] @ Ab[f]
            if pos[f]:
                g *= step
                r[f + 1 :] += g
            else:
                g *= step
                r[f + 1 :] -= g
        p = f + 1
    return found


def _block_multi(Ab: np.ndarray, r: np.ndarray, pos: np.ndarray,
                 step: np.float32) -> tuple[list[int], np.ndarray]:
    """The mistakes of several R-units over a block: trial indices and signed corrections."""
    found = []
    b, n_units = r.shape
    signs = np.zeros((b, n_units), dtype=np.float32)
    sign_of = np.where(pos, step, -step)
    p = 0
    while p < b:
        bad = (r[p:] > 0) != pos[p:]
        first = int(bad.argmax())  # row-major: the first row with any wrong R-unit
        f = p + first // n_units
        if not bad[f - p, first % n_units]:
            break
        found.append(f)
        correction = sign_of[f] * bad[f - p]
        signs[f] = correction
        if f + 1 < b:
            r[f + 1 :] += np.multiply.outer(Ab[f + 1 :] @ Ab[f], correction)
        p = f + 1
    return found, signs[found]


def _physical_epoch(job: _Epoch, bank: PotentiometerBank, units: np.ndarray,
                    rows: slice | np.ndarray, targets: np.ndarray, rng: np.random.Generator,
                    rule: str, noise: np.ndarray | None, r_theta: float,
                    block: int | None) -> None:
    """Any rule on any pots: score ahead, correct at the first mistake, score again.

    While mistakes are rare, all the epoch's remaining trials are scored with products over
    the A-unit rows as stored; after the second mistake, blocks of upcoming trials.
    """
    forced = rule == "forced-response"
    scorer = _Scorer(bank, rows, r_theta, noise)
    n_steps = job.clock.motors.steps_per_correction if job.motors else 1
    positive = job.positive
    n, n_units = positive.shape
    everyone = np.arange(n_units)
    size = block or 64
    whole = block is None and not forced
    i = 0
    while i < n:
        j = n if whole else min(n, i + (1 if forced else size))
        times_s = None
        if scorer.drifting:
            times_s = (job.t0 + job.extra_us + job.pres * np.arange(i + 1, j + 1)) * 1e-6
            bank.pin(float(times_s[0]))
            if times_s[-1] > bank.next_stop_s:  # a wiper reaches its stop before trial j
                j = i + max(1, int(np.searchsorted(times_s, bank.next_stop_s, side="right")))
                times_s = times_s[: j - i]
        if whole:
            products = scorer.products(job.A)
            picked = slice(i, j) if job.order is None else job.order[i:j]
            r = scorer.sums(tuple(p[picked] for p in products), i, times_s)
        else:
            r = scorer.score(job.rows(i, j), i, times_s)
        wrong = (r > 0) != positive[i:j]
        bad = wrong[:, 0] if n_units == 1 else wrong.any(axis=1)
        f = int(bad.argmax())
        if not (forced or bad[f]):
            i = j
            size = block or min(2 * size, _MAX_BLOCK)
        else:
            k = i + f
            active = np.flatnonzero(job.rows(k, k + 1)[0])
            sel = everyone if forced else np.flatnonzero(wrong[f])
            bank.move(units[sel], active, targets[k, sel], n_steps, job.time_s(k), rng)
            job.corrected(k, len(active) * len(sel), bool(bad[f]))
            whole = whole and job.mistakes < 2
            i = k + 1
            size = block or max(_MIN_BLOCK, min(_MAX_BLOCK, 2 * (f + 1)))
        job.report(i)
