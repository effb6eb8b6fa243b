"""The potentiometer bank: the A-to-R weights, one motor-driven potentiometer per connection.

A pot's wiper position *is* its weight, in R-unit sum units (the contribution of one active
A-unit to the R-unit's sum), between two end stops. Its physics (parameters in :class:`PotSpec`),
modelled the way analog-AI simulators model pulsed devices plus what a motorised pot adds:

* a motor step nominally moves the wiper by ``step``; each pot has its own step size
  (device-to-device spread ``step_d2d``), each step varies (``step_c2c``: a turn of ``n``
  steps moves ``n + step_c2c * sqrt(n) * z`` steps' worth, ``z`` a standard normal held as
  a table of 4,096 quantiles for speed, :func:`step_spread_draws`), and steps up are
  ``up_down`` times the size of steps down (asymmetry, centred: up = step*sqrt(r), down =
  step/sqrt(r));
* backlash: the gear train has ``backlash_steps`` of play; after a reversal the motor first
  takes up the play, so the wiper loses that much travel (a play operator);
* end stops at ``w_min``/``w_max`` with device spread; the wiper never passes them;
* wear: after a cumulative wiper travel ``T`` the step is divided by ``1 + T/T_w`` and the
  contact noise multiplied by it, with ``T_w = wear_sweeps * (w_max - w_min)``;
* drift: each wiper creeps at its own constant rate (device spread ``drift_sd``) while the
  machine runs, stopping at the end stops;
* stuck wipers never move (motor steps are lost, no drift);
* wiper contact noise: each read adds Gaussian noise of sd ``read_noise`` (times wear).

Drift is kept in closed form: a pot's weight at machine time ``t`` (seconds) since its last
move is ``clip(base + rate * t, lo, hi)``; no per-step integration, so it is exact. A move
of one R-unit's pots is a fixed set of whole-row array operations (pots not turned take a zero
motion and are written back unchanged), whatever the number of pots turned.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import numpy as np

from mark1.limits import INF, check_fields, limit

_HOUR = 3600.0


def _normal_quantiles(n: int) -> np.ndarray:
    """``n`` equally likely values of a unit normal: its quantiles at ``(i + 1/2) / n``,
    scaled to unit variance."""
    q = np.array([statistics.NormalDist().inv_cdf((i + 0.5) / n) for i in range(n)])
    return q / np.sqrt(np.mean(q * q))


STEP_QUANTILES = _normal_quantiles(4096)
"""The step-to-step spread's standard normal, as 4,096 equally likely values: the normal
quantiles at ``(i + 1/2) / 4096``, scaled to unit variance (a normal cut at +/-3.67 sd), drawn
by :func:`step_spread_draws`."""

DRAWS_PER_UNIFORM = 4
"""Step-spread draws made of one uniform from the generator (12 of its 53 bits each)."""

_INDEX_SHIFTS = np.array([41, 29, 17, 5])  # the leading 48 of 53 bits, 12 at a time


def step_spread_draws(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` standard normal draws (rounded up to a multiple of :data:`DRAWS_PER_UNIFORM`) for
    the step-to-step spread: :data:`STEP_QUANTILES` at 12-bit indices, the leading 48 bits of
    each uniform ``u`` from ``rng`` (``u * 2**53`` is a whole number), 12 at a time, leading
    bits first. The same spread as a normal draw per pot turned, from a quarter of the random
    numbers and with no transform (a table look-up)."""
    u = rng.random(-(-n // DRAWS_PER_UNIFORM))
    bits = (u * 2.0**53).astype(np.int64)
    index = (bits[:, None] >> _INDEX_SHIFTS) & (len(STEP_QUANTILES) - 1)
    return STEP_QUANTILES[index.ravel()]


@dataclass(frozen=True)
class PotSpec:
    """Potentiometers, their gears and their wipers.

    A turn of ``n`` steps moves a wiper by ``n_eff * step_i * a / (1 + T / T_w)`` minus the
    play taken up (backlash), then the wiper stops at its end stops, where ``step_i`` is the
    pot's own step (``step`` with device spread ``step_d2d``), ``a`` is ``sqrt(up_down)`` up
    and ``1 / sqrt(up_down)`` down, ``T`` the pot's travel so far, ``T_w = wear_sweeps * (w_max
    - w_min)``, and ``n_eff = max(n + step_c2c * sqrt(n) * z, 0)``. Between moves the weight
    is ``clip(base + rate * t, lo, hi)`` (drift in closed form); each read adds contact noise
    of sd ``read_noise * (1 + T / T_w)``.

    Simplified for speed: the step-to-step spread ``z`` is not drawn from the normal itself
    but from :data:`STEP_QUANTILES`, the normal's 4,096 quantiles at ``(i + 1/2) / 4096``
    scaled to unit variance -- a normal cut at +/-3.67 sd (what lies beyond has probability
    2.4e-4) and resolved to 1/4,096 in probability -- four draws from each uniform the
    generator gives (:func:`step_spread_draws`): a table look-up instead of a transform, and a
    quarter of the random numbers. Its mean is 0 and its variance 1, so the spread of a turn
    has the sd ``step_c2c * sqrt(n)`` steps it stands for. The R-units sum the pots' linear
    model rounded to float32 (:attr:`PotentiometerBank.lin`, 7 significant digits).
    """

    w_min: float = field(default=-1.0, metadata=limit(-1e6, 1e6, "R-unit sum units",
                                                       special=(-INF,), meaning="no end stop"))
    """Weight at the low end stop, R-unit sum units."""
    w_max: float = field(default=1.0, metadata=limit(-1e6, 1e6, "R-unit sum units",
                                                      special=(INF,), meaning="no end stop"))
    """Weight at the high end stop, R-unit sum units."""
    w_init: float = field(default=0.0, metadata=limit(-1e6, 1e6, "R-unit sum units"))
    """Wiper setting at the start of a run, R-unit sum units."""
    init_sd: float = field(default=0.0, metadata=limit(0, 1e6, "R-unit sum units"))
    """Setting error of the initial wiper position (sd), R-unit sum units."""
    bound_sd: float = field(default=0.0, metadata=limit(0, 1))
    """Device-to-device spread of each end stop (sd), fraction of the span."""
    step: float = field(default=0.02, metadata=limit(1e-9, 1e6, "R-unit sum units"))
    """Nominal wiper movement per motor step, R-unit sum units."""
    step_d2d: float = field(default=0.0, metadata=limit(0, 10))
    """Device-to-device spread of the step size (sd), fraction of the step."""
    step_c2c: float = field(default=0.0, metadata=limit(0, 10))
    """Step-to-step spread of the step size (sd), fraction of the step."""
    up_down: float = field(default=1.0, metadata=limit(0.01, 100))
    """Ratio of a step up to a step down, ratio."""
    backlash_steps: float = field(default=0.0, metadata=limit(0, 1e6, "steps"))
    """Gear play lost on each reversal, nominal steps."""
    wear_sweeps: float = field(default=INF, metadata=limit(1e-6, 1e12, "sweeps", special=(INF,),
                                                           meaning="no wear"))
    """Wiper travel after which the step has halved and the contact noise doubled, full sweeps."""
    drift_sd: float = field(default=0.0, metadata=limit(0, 1e6, "R-unit sum units per hour"))
    """Device-to-device spread of the wiper creep rate (sd), R-unit sum units per hour."""
    stuck_fraction: float = field(default=0.0, metadata=limit(0, 1, open_hi=True))
    """Share of wipers stuck in place, fraction."""
    read_noise: float = field(default=0.0, metadata=limit(0, 1e6, "R-unit sum units"))
    """Wiper contact noise on each read (sd), R-unit sum units."""

    def __post_init__(self) -> None:
        check_fields(self, "pots: ")
        if not self.w_min < self.w_max:
            raise ValueError(f"pots: w_min ({self.w_min!r}) must be below w_max ({self.w_max!r})")
        bounded = np.isfinite(self.w_min) and np.isfinite(self.w_max)
        if not bounded and (self.bound_sd or np.isfinite(self.wear_sweeps)):
            raise ValueError("pots: bound_sd and wear_sweeps need finite w_min and w_max")

    @property
    def exact(self) -> bool:
        """True for ideal pots: every step exactly ``step``, no stops, noise, drift or wear."""
        return (
            not np.isfinite(self.w_min) and not np.isfinite(self.w_max) and self.step_d2d == 0
            and self.step_c2c == 0 and self.up_down == 1 and self.backlash_steps == 0
            and not np.isfinite(self.wear_sweeps) and self.drift_sd == 0
            and self.stuck_fraction == 0 and self.read_noise == 0 and self.init_sd == 0
        )


IDEAL_POTS = PotSpec(w_min=float("-inf"), w_max=float("inf"), step=1.0)
"""Exact pots of unit steps from zero: no end stops, spread, play, wear, drift or noise. The
``ideal`` preset's pots, and the weights of the ``ideal`` training rule on any machine."""


@dataclass
class StepDraws:
    """The step-to-step spread's draw stream of a bank: draws taken from a generator in chunks
    (:func:`step_spread_draws`) and used in order, one per pot turned, across moves."""

    z: np.ndarray
    """Standard normal draws (float64), those from :attr:`at` on not used yet."""
    counts: np.ndarray
    """Effective step counts made of them for turns of :attr:`steps` steps:
    ``max(steps + step_c2c * sqrt(steps) * z, 0)``."""
    at: int
    """Index of the next unused draw."""
    steps: int
    """Motor steps per turn that :attr:`counts` were made for."""
    rng: np.random.Generator | None
    """The generator the draws came from (``None`` before the first draw)."""


@dataclass
class BankState:
    """Everything a :class:`PotentiometerBank` computes with: its per-pot arrays, its linear
    model and its step-spread draw stream.

    Arrays are (n_r, n_p) float64 unless noted. The per-pot constants are fixed when the bank is
    built; the wiper state, the model and the draws change as pots are turned and wipers reach
    their stops. Faster training paths take these fields, change them exactly as
    :meth:`PotentiometerBank.move` and :meth:`PotentiometerBank.pin` would, and write them back.
    """

    lo: np.ndarray
    """Low end stop of each pot, R-unit sum units."""
    hi: np.ndarray
    """High end stop of each pot, R-unit sum units."""
    rate: np.ndarray
    """Creep rate of each wiper, R-unit sum units per second (0 when stuck)."""
    step: np.ndarray
    """Each pot's own step before asymmetry and wear (0 when stuck), R-unit sum units."""
    up: np.ndarray
    """Wiper motion of one step up before wear: ``step * sqrt(up_down)``."""
    down: np.ndarray
    """Wiper motion of one step down before wear: ``-step / sqrt(up_down)``."""
    stop: np.ndarray
    """The end stop each wiper creeps toward (inf when it does not creep)."""
    inv_rate: np.ndarray
    """``1 / rate`` (inf when the wiper does not creep), seconds per R-unit sum unit."""
    base: np.ndarray
    """Linear-model base: the weight at machine time t is ``clip(base + creep * t, lo, hi)``."""
    creep: np.ndarray
    """Linear-model creep: :attr:`rate`, or 0 for a wiper resting at its stop, per second."""
    lash: np.ndarray
    """Where each motor sits inside the gear play, in [-play/2, play/2], R-unit sum units."""
    travel: np.ndarray
    """Cumulative wiper travel of each pot, R-unit sum units."""
    t_hit: np.ndarray
    """Machine time at which each creeping wiper reaches its end stop, s (inf: never)."""
    lin: np.ndarray
    """The linear model in float32 (n_r, 3, n_p), what the R-units sum: ``lin[:, 0]`` base,
    ``lin[:, 1]`` creep, ``lin[:, 2]`` the read-noise variance of each pot."""
    row_stop: list[float]
    """Per R-unit row: no creeping wiper of the row reaches its stop before this time, s."""
    next_stop_s: float
    """Machine time up to which the linear model holds (the least of :attr:`row_stop`), s."""
    n_pinned: int
    """Wipers resting at the stop they creep toward (creep 0 while their rate is not)."""
    creep_changes: int
    """Count of the times any pot's creep changed (a wiper stopped, or left its stop)."""
    half_play: float
    """Half the gear play, R-unit sum units."""
    inv_wear: float
    """``1 / T_w``: the step is divided by ``1 + travel * inv_wear`` (0: no wear)."""
    draws: StepDraws
    """The step-to-step spread's draws."""


class PotentiometerBank:
    """A built bank of ``shape = (n_r, n_p)`` pots with their device spreads and wiper state.

    The wiper state is kept as a *linear model* per pot: the weight at machine time ``t`` is
    ``clip(base + creep * t, lo, hi)``, where ``creep`` is the pot's drift :attr:`rate`, or 0
    once its wiper rests at the end stop it creeps toward. The model is exact until the next
    creeping wiper reaches its stop (:attr:`next_stop_s`; :meth:`pin` then stops those wipers).
    :attr:`lin` (shape (n_r, 3, n_p), float32) holds ``base``, ``creep`` and the read-noise
    variance of every pot: the R-units sum it (:func:`mark1.r_units.unit_sums`). All of the
    bank's arrays are in :attr:`state`.
    """

    CHUNK = 8192
    """Step-spread draws taken from the generator at a time."""

    def __init__(self, spec: PotSpec, shape: tuple[int, int], rng: np.random.Generator) -> None:
        self.spec = spec
        self.shape = shape
        self.exact = spec.exact
        n_r, n_p = shape
        span = spec.w_max - spec.w_min
        lo = np.full(shape, spec.w_min, dtype=np.float64)
        hi = np.full(shape, spec.w_max, dtype=np.float64)
        if spec.bound_sd:
            lo += rng.normal(0.0, spec.bound_sd * span, shape)
            hi += rng.normal(0.0, spec.bound_sd * span, shape)
            mid = (lo + hi) / 2
            lo, hi = np.minimum(lo, mid - 0.05 * span), np.maximum(hi, mid + 0.05 * span)
        step = spec.step * np.clip(1 + rng.normal(0.0, spec.step_d2d, shape), 0.05, None)
        rate = rng.normal(0.0, spec.drift_sd / _HOUR, shape) if spec.drift_sd else np.zeros(shape)
        self.stuck = rng.random(shape) < spec.stuck_fraction
        """Wipers that never move (no steps, no creep)."""
        rate[self.stuck] = 0.0
        step[self.stuck] = 0.0
        self.play = spec.backlash_steps * spec.step
        """Gear play, R-unit sum units."""
        half = self.play / 2
        lash = rng.uniform(-half, half, shape) if half else np.zeros(shape)
        w0 = spec.w_init + (rng.normal(0.0, spec.init_sd, shape) if spec.init_sd else 0.0)
        base = np.clip(w0 + np.zeros(shape), lo, hi)
        wear_travel = spec.wear_sweeps * span if np.isfinite(span) else np.inf
        asym = np.sqrt(spec.up_down)
        # the stop each wiper creeps toward (inf when it does not creep), and 1/rate
        stop = np.where(rate > 0, hi, np.where(rate < 0, lo, np.inf))
        with np.errstate(divide="ignore"):
            inv_rate = np.where(rate != 0, 1.0 / np.where(rate != 0, rate, 1.0), np.inf)
        self.state = BankState(
            lo=lo, hi=hi, rate=rate, step=step, up=step * asym, down=-step / asym, stop=stop,
            inv_rate=inv_rate, base=base, creep=rate.copy(), lash=lash,
            travel=np.zeros(shape), t_hit=np.full(shape, np.inf),
            lin=np.zeros((n_r, 3, n_p), dtype=np.float32), row_stop=[np.inf] * n_r,
            next_stop_s=np.inf, n_pinned=0, creep_changes=0, half_play=half,
            inv_wear=1.0 / wear_travel,
            draws=StepDraws(z=np.empty(0), counts=np.empty(0), at=0, steps=0, rng=None))
        """The bank's arrays, model and draws."""
        self.drifts = bool(rate.any())
        """True when some wiper creeps."""
        self.max_weight = float(max(np.abs(lo).max(initial=0.0), np.abs(hi).max(initial=0.0)))
        """The largest magnitude a wiper can reach (the farthest end stop; inf: no stops)."""
        self.max_rate = float(np.abs(rate).max(initial=0.0))
        """The fastest creep of any wiper, R-unit sum units per second."""
        self._scratch = np.empty((4, n_p))
        self._row_constants = {  # for whole-row arithmetic without scalar operands
            name: np.full(n_p, value) for name, value in (
                ("inv_wear", self.state.inv_wear), ("one", 1.0), ("half", half),
                ("-half", -half), ("noise_wear", self.state.inv_wear * spec.read_noise),
                ("noise", spec.read_noise))}
        self.lin[:, 0] = base
        if not self.exact:
            self.lin[:, 1] = rate
            self.lin[:, 2] = spec.read_noise**2
            self.state.t_hit[:] = (stop - base) * inv_rate
            self.state.next_stop_s = 0.0
            self.pin(0.0)

    # ------------------------------------------------------------------ per-pot views
    @property
    def lo(self) -> np.ndarray:
        """Low end stop of each pot, R-unit sum units."""
        return self.state.lo

    @property
    def hi(self) -> np.ndarray:
        """High end stop of each pot, R-unit sum units."""
        return self.state.hi

    @property
    def rate(self) -> np.ndarray:
        """Each wiper's creep rate, R-unit sum units per second."""
        return self.state.rate

    @property
    def step_size(self) -> np.ndarray:
        """Each pot's own step before asymmetry and wear (0 when stuck), R-unit sum units."""
        return self.state.step

    @property
    def base(self) -> np.ndarray:
        """Linear-model base: the weight at time t is clip(base + creep * t, lo, hi)."""
        return self.state.base

    @property
    def creep(self) -> np.ndarray:
        """Linear-model creep: :attr:`rate`, or 0 for a wiper resting at its stop, per second."""
        return self.state.creep

    @property
    def lash(self) -> np.ndarray:
        """Where each motor sits inside the gear play, in [-play/2, play/2], R-unit sum units."""
        return self.state.lash

    @property
    def travel(self) -> np.ndarray:
        """Cumulative wiper travel of each pot, R-unit sum units."""
        return self.state.travel

    @property
    def t_hit(self) -> np.ndarray:
        """Machine time at which each creeping wiper reaches its end stop, s (inf: never)."""
        return self.state.t_hit

    @property
    def lin(self) -> np.ndarray:
        """The linear model per pot, float32 (n_r, 3, n_p): weight = lin[:, 0] + lin[:, 1] * t
        until :attr:`next_stop_s`; lin[:, 2] = read-noise variance. The state is float64."""
        return self.state.lin

    @property
    def next_stop_s(self) -> float:
        """Machine time up to which the linear model holds, s: no creeping wiper reaches its end
        stop before it (:meth:`pin` moves it on)."""
        return self.state.next_stop_s

    @property
    def creep_changes(self) -> int:
        """Count of the times any pot's creep changed (a wiper stopped, or left its stop)."""
        return self.state.creep_changes

    # ------------------------------------------------------------------ reading
    def read(self, t: float = 0.0) -> np.ndarray:
        """Noise-free weights at machine time ``t`` seconds (n_r, n_p), ``t`` not before the
        last move."""
        if self.exact:
            return self.base.copy()
        return np.clip(self.base + self.creep * t, self.lo, self.hi)

    def wear_factor(self) -> np.ndarray:
        """``1 + travel / T_w`` per pot: the step is divided by it, the contact noise multiplied."""
        return 1.0 + self.travel * self.state.inv_wear

    def noise_sd(self) -> np.ndarray:
        """Contact-noise sd of each pot's read, R-unit sum units."""
        return self.spec.read_noise * self.wear_factor()

    def read_noisy(self, t: float, rng: np.random.Generator) -> np.ndarray:
        """One read of every pot at time ``t``, with wiper contact noise."""
        w = self.read(t)
        if self.spec.read_noise:
            w = w + self.noise_sd() * rng.standard_normal(self.shape)
        return w

    # ------------------------------------------------------------------ the linear model
    def pin(self, t: float) -> None:
        """Bring the linear model up to time ``t``: wipers that have reached a stop stay there."""
        st = self.state
        if t < st.next_stop_s:
            return
        r, c = np.nonzero(st.t_hit <= t)
        if len(r):
            stop = st.stop[r, c]
            st.base[r, c] = stop
            st.creep[r, c] = 0.0
            st.t_hit[r, c] = np.inf
            st.lin[r, 0, c] = stop
            st.lin[r, 1, c] = 0.0
            st.n_pinned += len(r)
            st.creep_changes += 1
        st.row_stop = st.t_hit.min(axis=1).tolist()
        st.next_stop_s = min(st.row_stop)

    def _step_counts(self, rng: np.random.Generator, m: int, n_steps: int) -> np.ndarray:
        """Effective step counts of the next ``m`` pots turned ``n_steps`` steps:
        ``max(n_steps + step_c2c * sqrt(n_steps) * z, 0)`` with ``z`` standard normal draws
        (:func:`step_spread_draws`).

        The draws come from ``rng`` in chunks, kept for the next moves: they are the values of
        one draw per move as long as nothing else draws from ``rng`` in between (and the same
        for the same seed in any case).
        """
        d = self.state.draws
        at = d.at
        if d.rng is not rng or d.steps != n_steps or at + m > len(d.z):
            z = d.z[at:] if d.rng is rng else np.empty(0)
            if len(z) < m:
                z = np.concatenate([z, step_spread_draws(rng, max(self.CHUNK, m))])
            counts = z * (self.spec.step_c2c * np.sqrt(n_steps))
            counts += float(n_steps)
            d.z, d.counts = z, np.maximum(counts, 0.0, out=counts)
            d.rng, d.steps, at = rng, n_steps, 0
        d.at = at + m
        return d.counts[at : at + m]

    # ------------------------------------------------------------------ moving
    def move(self, rows: np.ndarray, cols: np.ndarray, directions: np.ndarray, n_steps: int,
             t: float, rng: np.random.Generator | None) -> None:
        """Turn the pots ``rows x cols`` by ``n_steps`` motor steps each at machine time ``t``:
        up in the rows whose ``directions`` entry is positive, down in the others, one row
        after the other (``rng``: the step spread's draws; exact pots need none).
        """
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        up = np.asarray(directions) > 0
        if self.exact:
            delta = np.where(up, 1.0, -1.0) * (self.spec.step * n_steps)
            base, travel = self.base, self.travel
            base[rows[:, None], cols[None, :]] += delta[:, None]
            travel[rows[:, None], cols[None, :]] += np.abs(delta)[:, None]
            self.lin[rows[:, None], 0, cols[None, :]] = base[rows[:, None], cols[None, :]]
        else:
            if rng is None:
                raise TypeError("physical pots need a numpy Generator for the step spread")
            for r, row_up in zip(rows.tolist(), up.tolist()):
                self.turn_row(r, cols, row_up, n_steps, t, rng)

    def turn_row(self, r: int, cols: np.ndarray, up: bool, n_steps: int, t: float,
                 rng: np.random.Generator) -> None:
        """:meth:`move` of the pots ``cols`` (distinct) of one row, physical pots only.

        Works on the whole row at once: pots not turned take a motion of exactly 0, and their
        base and travel are written back only where a pot was turned (so they stay exactly as
        they were, as in the compiled path, which works on the turned pots only).
        """
        st = self.state
        if t >= st.next_stop_s:
            self.pin(t)
        spec = self.spec
        motion, creep_t, w, w_new = self._scratch
        motion.fill(0.0)
        motion[cols] = self._step_counts(rng, len(cols), n_steps) if spec.step_c2c else float(
            n_steps)
        motion *= st.up[r] if up else st.down[r]
        base, travel = st.base[r], st.travel[r]
        creep = st.creep[r] if st.n_pinned else st.rate[r]
        np.multiply(creep, t, out=creep_t)
        np.add(base, creep_t, out=w)
        if st.n_pinned:
            resting = creep != st.rate[r]
            resting &= motion != 0.0
            if resting.any():  # wipers resting on a stop creep again once moved
                st.n_pinned -= int(np.count_nonzero(resting))
                st.creep_changes += 1
                np.copyto(creep, st.rate[r], where=resting)
                st.lin[r, 1] = creep
                np.multiply(creep, t, out=creep_t)  # the creep after the move
        c = self._row_constants
        if st.inv_wear:
            np.multiply(travel, c["inv_wear"], out=w_new)
            w_new += c["one"]
            motion /= w_new
        if self.play:
            lash = st.lash[r]
            motion += lash  # where the motor would sit in the play
            np.maximum(motion, c["-half"], out=lash)
            np.minimum(lash, c["half"], out=lash)
            motion -= lash  # what reaches the wiper
        np.add(w, motion, out=w_new)
        np.maximum(w_new, st.lo[r], out=w_new)
        np.minimum(w_new, st.hi[r], out=w_new)
        w -= w_new
        np.abs(w, out=w)
        w += travel
        travel[cols] = w[cols]  # (only the turned pots: the others stay exactly as they were)
        np.subtract(w_new, creep_t, out=w)
        base[cols] = w[cols]
        st.lin[r, 0] = base
        if st.inv_wear and spec.read_noise:
            np.multiply(travel, c["noise_wear"], out=w)
            w += c["noise"]
            w *= w
            st.lin[r, 2] = w
        if self.drifts:
            hit = np.subtract(st.stop[r], base, out=st.t_hit[r])
            hit *= st.inv_rate[r]
            if st.n_pinned:
                hit[creep == 0.0] = np.inf  # resting on a stop
            st.row_stop[r] = float(hit.min())
            st.next_stop_s = min(st.row_stop)
