"""The potentiometer bank: the A-to-R weights, one motor-driven potentiometer per connection.

A pot's wiper position *is* its weight, in R-unit sum units (the contribution of one active
A-unit to the R-unit's sum), between two end stops. Its physics (parameters in :class:`PotSpec`),
modelled the way analog-AI simulators model pulsed devices plus what a motorised pot adds:

* a motor step nominally moves the wiper by ``step``; each pot has its own step size
  (device-to-device spread ``step_d2d``), each step varies (``step_c2c``), and steps up are
  ``up_down`` times the size of steps down (asymmetry, centred: up = step*sqrt(r),
  down = step/sqrt(r));
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
move is ``clip(base + rate * t, lo, hi)``; no per-step integration, so it is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_HOUR = 3600.0


@dataclass(frozen=True)
class PotSpec:
    """Potentiometers, their gears and their wipers."""

    w_min: float = -1.0
    """Weight at the low end stop, R-unit sum units."""
    w_max: float = 1.0
    """Weight at the high end stop, R-unit sum units."""
    w_init: float = 0.0
    """Wiper setting at the start of a run, R-unit sum units."""
    init_sd: float = 0.0
    """Setting error of the initial wiper position (sd), R-unit sum units."""
    bound_sd: float = 0.0
    """Device-to-device spread of each end stop (sd), fraction of the span."""
    step: float = 0.02
    """Nominal wiper movement per motor step, R-unit sum units."""
    step_d2d: float = 0.0
    """Device-to-device spread of the step size (sd), fraction of the step."""
    step_c2c: float = 0.0
    """Step-to-step spread of the step size (sd), fraction of the step."""
    up_down: float = 1.0
    """Ratio of a step up to a step down, ratio."""
    backlash_steps: float = 0.0
    """Gear play lost on each reversal, nominal steps."""
    wear_sweeps: float = float("inf")
    """Wiper travel after which the step has halved and the contact noise doubled, full sweeps."""
    drift_sd: float = 0.0
    """Device-to-device spread of the wiper creep rate (sd), R-unit sum units per hour."""
    stuck_fraction: float = 0.0
    """Share of wipers stuck in place, fraction."""
    read_noise: float = 0.0
    """Wiper contact noise on each read (sd), R-unit sum units."""

    def __post_init__(self) -> None:
        if not self.w_min < self.w_max:
            raise ValueError(f"pots: w_min ({self.w_min!r}) must be below w_max ({self.w_max!r})")
        if not (self.step > 0 and np.isfinite(self.step)):
            raise ValueError(f"pots: step must be a finite number > 0; got {self.step!r}")
        if not (self.up_down > 0 and np.isfinite(self.up_down)):
            raise ValueError(f"pots: up_down must be a finite number > 0; got {self.up_down!r}")
        if not self.wear_sweeps > 0:
            raise ValueError(
                f"pots: wear_sweeps must be > 0 (inf: no wear); got {self.wear_sweeps!r}"
            )
        for name in ("init_sd", "bound_sd", "step_d2d", "step_c2c", "backlash_steps", "drift_sd",
                     "read_noise"):
            value = getattr(self, name)
            if not (value >= 0 and np.isfinite(value)):
                raise ValueError(f"pots: {name} must be a finite number >= 0; got {value!r}")
        if not 0 <= self.stuck_fraction < 1:
            raise ValueError(f"pots: stuck_fraction must be in [0, 1); got {self.stuck_fraction!r}")
        if not np.isfinite(self.w_init):
            raise ValueError(f"pots: w_init must be finite; got {self.w_init!r}")
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

    Besides the wiper state the bank keeps, for fast scoring, the *linear model* of every pot
    (:attr:`lin`, shape (n_r, 3, n_p)): ``lin[:, 0] + lin[:, 1] * t`` is the noise-free weight
    at any machine time ``t`` up to :attr:`next_stop_s` (when the next creeping wiper reaches an
    end stop; :meth:`pin` then updates the model), and ``lin[:, 2]`` is the read-noise variance.
    """

    # columns of the per-pot constants
    _LO, _HI, _RATE, _UP, _DOWN, _STEP, _STOP, _SIGN, _INV_RATE = range(9)

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
        sign = np.where(rate < 0, -1.0, 1.0)
        with np.errstate(divide="ignore"):
            inv_rate = np.where(rate != 0, 1.0 / np.where(rate != 0, rate, 1.0), np.inf)
        # per-pot constants and state, one row per pot (gathered and scattered together)
        self._prop = np.stack(
            [lo, hi, rate, step * asym, step / asym, step, stop, sign, inv_rate], axis=-1
        ).reshape(-1, 9)
        self._state = np.stack([base, lash, np.zeros(shape)], axis=-1).reshape(-1, 3)
        self.lin = np.zeros((n_r, 3, n_p), dtype=np.float32)
        """Linear model per pot, float32 for fast scoring: weight = lin[:, 0] + lin[:, 1] * t;
        lin[:, 2] = read-noise variance. The wiper state itself is kept in float64."""
        self._lin_flat = self.lin.reshape(-1)
        self.t_hit = np.full(shape, np.inf)
        """Machine time at which each creeping wiper reaches its end stop, s (inf: never)."""
        self.next_stop_s = np.inf
        """Earliest of :attr:`t_hit`: the linear model holds until then, s."""
        if self.exact:
            self.lin[:, 0] = base
        else:
            self.lin[:, 2] = spec.read_noise**2
            flat = np.arange(n_r * n_p)
            self._update_lin(flat, 0.0, base.reshape(-1), base.reshape(-1), self._prop)

    # ------------------------------------------------------------------ per-pot views
    def _column(self, table: np.ndarray, k: int) -> np.ndarray:
        return table[:, k].reshape(self.shape)

    @property
    def lo(self) -> np.ndarray:
        """Low end stop of each pot, R-unit sum units."""
        return self._column(self._prop, self._LO)

    @property
    def hi(self) -> np.ndarray:
        """High end stop of each pot, R-unit sum units."""
        return self._column(self._prop, self._HI)

    @property
    def rate(self) -> np.ndarray:
        """Each wiper's creep rate, R-unit sum units per second."""
        return self._column(self._prop, self._RATE)

    @property
    def step_size(self) -> np.ndarray:
        """Each pot's own step before asymmetry and wear (0 when stuck), R-unit sum units."""
        return self._column(self._prop, self._STEP)

    @property
    def base(self) -> np.ndarray:
        """Closed-form drift base: the weight at time t is clip(base + rate*t, lo, hi)."""
        return self._column(self._state, 0)

    @property
    def lash(self) -> np.ndarray:
        """Where each motor sits inside the gear play, in [-play/2, play/2], R-unit sum units."""
        return self._column(self._state, 1)

    @property
    def travel(self) -> np.ndarray:
        """Cumulative wiper travel of each pot, R-unit sum units."""
        return self._column(self._state, 2)

    # ------------------------------------------------------------------ reading
    def read(self, t: float = 0.0) -> np.ndarray:
        """Noise-free weights at machine time ``t`` seconds (n_r, n_p)."""
        if self.exact:
            return self.base.copy()
        return np.clip(self.base + self.rate * t, self.lo, self.hi)

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
    def _update_lin(self, flat: np.ndarray, t: float, base: np.ndarray, w: np.ndarray,
                    prop: np.ndarray, idx: np.ndarray | None = None) -> None:
        """Recompute the linear model of the pots ``flat`` (weights ``w`` at time ``t``).

        ``idx``: the pots' places in the flat :attr:`lin` array, when the caller has them.
        """
        stop = prop[:, self._STOP]
        pinned = (w - stop) * prop[:, self._SIGN] >= 0  # at the stop it creeps toward
        n_p = self.shape[1]
        if idx is None:
            idx = flat + (flat // n_p) * (2 * n_p)  # lin[row, 0, col] in the flat lin array
        self._lin_flat[idx] = np.where(pinned, stop, base)
        self._lin_flat[idx + n_p] = np.where(pinned, 0.0, prop[:, self._RATE])
        hit = (stop - base) * prop[:, self._INV_RATE]
        hit[pinned] = np.inf
        t_hit = self.t_hit.reshape(-1)
        t_hit[flat] = hit
        self.next_stop_s = float(t_hit.min())

    def pin(self, t: float) -> None:
        """Bring the linear model up to time ``t``: wipers that have reached a stop stay there."""
        if t >= self.next_stop_s:
            flat = np.flatnonzero(self.t_hit.reshape(-1) <= t)
            prop, base = self._prop[flat], self._state[flat, 0]
            w = np.minimum(np.maximum(base + prop[:, self._RATE] * t, prop[:, self._LO]),
                           prop[:, self._HI])
            self._update_lin(flat, t, base, w, prop)

    # ------------------------------------------------------------------ moving
    def move(self, rows: np.ndarray, cols: np.ndarray, directions: np.ndarray, n_steps: int,
             t: float, rng: np.random.Generator) -> None:
        """Turn the pots ``rows x cols`` by ``n_steps`` motor steps each at machine time ``t``:
        up in the rows whose ``directions`` entry is positive, down in the others.
        """
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        directions = np.asarray(directions)
        n_p = self.shape[1]
        if self.exact:
            delta = np.where(directions > 0, 1.0, -1.0) * (self.spec.step * n_steps)
            base, travel = self.base, self.travel
            base[rows[:, None], cols[None, :]] += delta[:, None]
            travel[rows[:, None], cols[None, :]] += np.abs(delta)[:, None]
            self.lin[rows[:, None], 0, cols[None, :]] = base[rows[:, None], cols[None, :]]
            return
        spec = self.spec
        if len(rows) == 1:
            flat = cols + int(rows[0]) * n_p
            idx = cols + int(rows[0]) * (3 * n_p)  # places in the flat lin array
        else:
            flat = ((rows * n_p)[:, None] + cols[None, :]).reshape(-1)
            idx = ((rows * (3 * n_p))[:, None] + cols[None, :]).reshape(-1)
        prop = self._prop[flat]
        state = self._state[flat]
        lo, hi = prop[:, self._LO], prop[:, self._HI]
        creep = prop[:, self._RATE] * t
        w = state[:, 0] + creep
        np.maximum(w, lo, out=w)
        np.minimum(w, hi, out=w)
        if len(rows) == 1:
            motion = prop[:, self._UP] if directions[0] > 0 else -prop[:, self._DOWN]
        else:
            up = np.repeat(directions > 0, len(cols))
            motion = np.where(up, prop[:, self._UP], -prop[:, self._DOWN])
        if self._inv_wear:
            motion = motion / (1.0 + state[:, 2] * self._inv_wear)
        if spec.step_c2c:
            count = rng.standard_normal(len(flat))
            count *= spec.step_c2c * np.sqrt(n_steps)
            count += n_steps
            motion = motion * np.maximum(count, 0.0, out=count)
        elif n_steps != 1:
            motion = motion * n_steps
        if self.play:
            half = self.play / 2
            e = state[:, 1] + motion
            taken = np.minimum(np.maximum(e, -half), half)  # where the motor sits in the play
            motion = e - taken
            state[:, 1] = taken
        w_new = w + motion
        np.maximum(w_new, lo, out=w_new)
        np.minimum(w_new, hi, out=w_new)
        w -= w_new
        state[:, 2] += np.abs(w, out=w)
        state[:, 0] = base_new = w_new - creep
        self._state[flat] = state
        if self._inv_wear and spec.read_noise:
            sd = state[:, 2] * self._inv_wear
            sd += 1.0
            sd *= spec.read_noise
            self._lin_flat[idx + 2 * n_p] = sd * sd
        self._update_lin(flat, t, base_new, w_new, prop, idx)
