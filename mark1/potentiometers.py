"""The potentiometer bank: the A-to-R weights, one motor-driven potentiometer per connection.

A pot's wiper position *is* its weight, in R-unit sum units (the contribution of one active
A-unit to the R-unit's sum), between two end stops. Its physics (parameters in :class:`PotSpec`),
modelled the way analog-AI simulators model pulsed devices plus what a motorised pot adds:

* a motor step nominally moves the wiper by ``step``; each pot has its own step size
  (device-to-device spread ``step_d2d``), each step varies (``step_c2c``: a turn of ``n``
  steps moves ``n + step_c2c * sqrt(n) * z`` steps' worth, ``z`` a standard normal from
  :func:`step_spread_draws`), and steps up are ``up_down`` times the size of steps down
  (asymmetry, centred: up = step*sqrt(r), down = step/sqrt(r));
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
    """Potentiometers, their gears and their wipers."""

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


class PotentiometerBank:
    """A built bank of ``shape = (n_r, n_p)`` pots with their device spreads and wiper state.

    The wiper state is kept as a *linear model* per pot: the weight at machine time ``t`` is
    ``clip(base + creep * t, lo, hi)``, where ``creep`` is the pot's drift :attr:`rate`, or 0
    once its wiper rests at the end stop it creeps toward. The model is exact until the next
    creeping wiper reaches its stop (:attr:`next_stop_s`; :meth:`pin` then stops those wipers).
    :attr:`lin` (shape (n_r, 3, n_p), float32, for fast scoring) holds ``base``, ``creep`` and
    the read-noise variance of every pot.
    """

    _CHUNK = 8192  # step spreads drawn at a time

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
        self._wear_travel = spec.wear_sweeps * span if np.isfinite(span) else np.inf
        self._inv_wear = 1.0 / self._wear_travel
        asym = np.sqrt(spec.up_down)
        # the stop each wiper creeps toward (inf when it does not creep), and 1/rate
        stop = np.where(rate > 0, hi, np.where(rate < 0, lo, np.inf))
        with np.errstate(divide="ignore"):
            inv_rate = np.where(rate != 0, 1.0 / np.where(rate != 0, rate, 1.0), np.inf)
        # per-pot constants, (n_r, n_p) each
        self._lo, self._hi, self._rate, self._step = lo, hi, rate, step
        self._up, self._down, self._stop, self._inv_rate = step * asym, -step / asym, stop, inv_rate
        # wiper state (n_r, n_p) each: the linear model's base and creep, play taken, travel
        self._base, self._creep, self._lash = base, rate.copy(), lash
        self._travel = np.zeros(shape)
        self._t_hit = np.full(shape, np.inf)
        self.lin = np.zeros((n_r, 3, n_p), dtype=np.float32)
        """The linear model per pot, float32 for fast scoring: weight = lin[:, 0] + lin[:, 1] * t
        until :attr:`next_stop_s`; lin[:, 2] = read-noise variance. The state itself is float64."""
        self.next_stop_s = np.inf
        """Machine time up to which the linear model holds, s: no creeping wiper reaches its end
        stop before it (:meth:`pin` moves it on)."""
        self._row_stop = [np.inf] * n_r  # per R-unit row: no creeping wiper stops earlier
        self._n_pinned = 0  # wipers resting at the stop they creep toward (creep 0)
        self.creep_changes = 0
        """Count of the times any pot's creep changed (a wiper stopped, or left its stop)."""
        self._half_play = half
        self._drifts = bool(rate.any())
        self._scratch = np.empty((4, n_p))
        self._row_constants = {  # for whole-row arithmetic without scalar operands
            name: np.full(n_p, value) for name, value in (
                ("inv_wear", self._inv_wear), ("one", 1.0), ("half", half), ("-half", -half),
                ("noise_wear", self._inv_wear * spec.read_noise), ("noise", spec.read_noise))}
        # step-spread draws, the step counts made of them (for _z_steps steps) from _z_at on
        self._z: np.ndarray = np.empty(0)
        self._counts: np.ndarray = np.empty(0)
        self._z_at, self._z_steps = 0, 0
        self._z_rng: np.random.Generator | None = None
        self.lin[:, 0] = base
        if not self.exact:
            self.lin[:, 1] = rate
            self.lin[:, 2] = spec.read_noise**2
            self._t_hit[:] = (stop - base) * inv_rate
            self.next_stop_s = 0.0
            self.pin(0.0)

    # ------------------------------------------------------------------ per-pot views
    @property
    def lo(self) -> np.ndarray:
        """Low end stop of each pot, R-unit sum units."""
        return self._lo

    @property
    def hi(self) -> np.ndarray:
        """High end stop of each pot, R-unit sum units."""
        return self._hi

    @property
    def rate(self) -> np.ndarray:
        """Each wiper's creep rate, R-unit sum units per second."""
        return self._rate

    @property
    def step_size(self) -> np.ndarray:
        """Each pot's own step before asymmetry and wear (0 when stuck), R-unit sum units."""
        return self._step

    @property
    def base(self) -> np.ndarray:
        """Linear-model base: the weight at time t is clip(base + creep * t, lo, hi)."""
        return self._base

    @property
    def creep(self) -> np.ndarray:
        """Linear-model creep: :attr:`rate`, or 0 for a wiper resting at its stop, per second."""
        return self._creep

    @property
    def lash(self) -> np.ndarray:
        """Where each motor sits inside the gear play, in [-play/2, play/2], R-unit sum units."""
        return self._lash

    @property
    def travel(self) -> np.ndarray:
        """Cumulative wiper travel of each pot, R-unit sum units."""
        return self._travel

    @property
    def t_hit(self) -> np.ndarray:
        """Machine time at which each creeping wiper reaches its end stop, s (inf: never)."""
        return self._t_hit

    # ------------------------------------------------------------------ reading
    def read(self, t: float = 0.0) -> np.ndarray:
        """Noise-free weights at machine time ``t`` seconds (n_r, n_p), ``t`` not before the
        last move."""
        if self.exact:
            return self.base.copy()
        return np.clip(self.base + self.creep * t, self.lo, self.hi)

    def wear_factor(self) -> np.ndarray:
        """``1 + travel / T_w`` per pot: the step is divided by it, the contact noise multiplied."""
        return 1.0 + self.travel * self._inv_wear

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
        if t < self.next_stop_s:
            return
        r, c = np.nonzero(self._t_hit <= t)
        if len(r):
            stop = self._stop[r, c]
            self._base[r, c] = stop
            self._creep[r, c] = 0.0
            self._t_hit[r, c] = np.inf
            self.lin[r, 0, c] = stop
            self.lin[r, 1, c] = 0.0
            self._n_pinned += len(r)
            self.creep_changes += 1
        self._row_stop = self._t_hit.min(axis=1).tolist()
        self.next_stop_s = min(self._row_stop)

    def _step_counts(self, rng: np.random.Generator, m: int, n_steps: int) -> np.ndarray:
        """Effective step counts of the next ``m`` pots turned ``n_steps`` steps:
        ``max(n_steps + step_c2c * sqrt(n_steps) * z, 0)`` with ``z`` standard normal draws
        (:func:`step_spread_draws`).

        The draws come from ``rng`` in chunks, kept for the next moves: they are the values of
        one draw per move as long as nothing else draws from ``rng`` in between (and the same
        for the same seed in any case).
        """
        at = self._z_at
        if self._z_rng is not rng or self._z_steps != n_steps or at + m > len(self._z):
            z = self._z[at:] if self._z_rng is rng else np.empty(0)
            if len(z) < m:
                z = np.concatenate([z, step_spread_draws(rng, max(self._CHUNK, m))])
            counts = z * (self.spec.step_c2c * np.sqrt(n_steps))
            counts += float(n_steps)
            self._z, self._counts = z, np.maximum(counts, 0.0, out=counts)
            self._z_rng, self._z_steps, at = rng, n_steps, 0
        self._z_at = at + m
        return self._counts[at : at + m]

    # ------------------------------------------------------------------ moving
    def move(self, rows: np.ndarray, cols: np.ndarray, directions: np.ndarray, n_steps: int,
             t: float, rng: np.random.Generator) -> None:
        """Turn the pots ``rows x cols`` by ``n_steps`` motor steps each at machine time ``t``:
        up in the rows whose ``directions`` entry is positive, down in the others.
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
            for r, row_up in zip(rows.tolist(), up.tolist()):
                self.turn_row(r, cols, row_up, n_steps, t, rng)

    def turn_row(self, r: int, cols: np.ndarray, up: bool, n_steps: int, t: float,
                 rng: np.random.Generator) -> None:
        """:meth:`move` of the pots ``cols`` (distinct) of one row, physical pots only.

        Works on the whole row at once: pots not turned take a motion of exactly 0, and their
        base and travel are written back only where a pot was turned (so they stay exactly as
        they were, as in the compiled path, which works on the turned pots only).
        """
        if t >= self.next_stop_s:
            self.pin(t)
        spec = self.spec
        motion, creep_t, w, w_new = self._scratch
        motion.fill(0.0)
        motion[cols] = self._step_counts(rng, len(cols), n_steps) if spec.step_c2c else float(
            n_steps)
        motion *= self._up[r] if up else self._down[r]
        base, travel = self._base[r], self._travel[r]
        creep = self._creep[r] if self._n_pinned else self._rate[r]
        np.multiply(creep, t, out=creep_t)
        np.add(base, creep_t, out=w)
        if self._n_pinned:
            resting = creep != self._rate[r]
            resting &= motion != 0.0
            if resting.any():  # wipers resting on a stop creep again once moved
                self._n_pinned -= int(np.count_nonzero(resting))
                self.creep_changes += 1
                np.copyto(creep, self._rate[r], where=resting)
                self.lin[r, 1] = creep
                np.multiply(creep, t, out=creep_t)  # the creep after the move
        c = self._row_constants
        if self._inv_wear:
            np.multiply(travel, c["inv_wear"], out=w_new)
            w_new += c["one"]
            motion /= w_new
        if self.play:
            lash = self._lash[r]
            motion += lash  # where the motor would sit in the play
            np.maximum(motion, c["-half"], out=lash)
            np.minimum(lash, c["half"], out=lash)
            motion -= lash  # what reaches the wiper
        np.add(w, motion, out=w_new)
        np.maximum(w_new, self._lo[r], out=w_new)
        np.minimum(w_new, self._hi[r], out=w_new)
        w -= w_new
        np.abs(w, out=w)
        w += travel
        travel[cols] = w[cols]  # (only the turned pots: the others stay exactly as they were)
        np.subtract(w_new, creep_t, out=w)
        base[cols] = w[cols]
        self.lin[r, 0] = base
        if self._inv_wear and spec.read_noise:
            np.multiply(travel, c["noise_wear"], out=w)
            w += c["noise"]
            w *= w
            self.lin[r, 2] = w
        if self._drifts:
            hit = np.subtract(self._stop[r], base, out=self._t_hit[r])
            hit *= self._inv_rate[r]
            if self._n_pinned:
                hit[creep == 0.0] = np.inf  # resting on a stop
            self._row_stop[r] = float(hit.min())
            self.next_stop_s = min(self._row_stop)
