"""The retina: 20 x 20 CdS photocells, each driving an S-unit through a voltage divider.

The physics of one cell (parameters in :class:`CdSCells`):

* illuminance on the cell: ``E = x * lamp_lux + ambient_lux`` for relative illuminance ``x``;
* light conductance relative to 10 lx: ``c = (E / 10 lx)^gamma``, so the light resistance is
  the datasheet power law ``R_light = R10 * (E / 10 lx)^-gamma``;
* the cell is the light path in parallel with its dark resistance, and the light path's
  conductance is raised by the light-history memory ``m`` and scaled by temperature:
  ``1/R = 1/R_dark + c * (1 + memory_gain * m) / (R10 * temperature_factor)``;
* lag: ``c`` follows its steady state as a first-order system, with ``rise_s`` while the light
  increases and ``decay_s`` while it decreases; over an interval of constant light the closed
  form ``c(t) = c_inf + (c_0 - c_inf) * exp(-t / tau)`` is applied exactly, so the previous
  stimulus leaves a trace;
* memory: ``m`` follows ``x`` with time constant ``memory_s`` (reversible light history);
* divider: ``V = V_supply * R_load / (R_load + R)``; the S-unit fires iff ``V > V_threshold``,
  which is ``c * (1 + memory_gain * m) > c_th`` with the per-cell constant
  ``c_th = (1/R_th - 1/R_dark) * R10 * temperature_factor``, ``R_th = R_load (V_supply/V_th - 1)``.

The *static* response is the steady state of a rested retina (``m = 0``): the S-unit fires
iff ``x > x_th``, with the per-cell threshold :meth:`Retina.cell_threshold` in relative
illuminance (``+inf`` for a dead cell, ``-inf`` for one that always fires).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mark1.images import N_CELLS
from mark1.limits import INF, check_fields, limit

_LAG = limit(1e-6, 3600, "s", special=(0.0,), meaning="no lag")
"""Range of the cells' time constants."""


@dataclass(frozen=True)
class CdSCells:
    """Photocells and S-unit dividers of the retina."""

    lamp_lux: float = field(default=100.0, metadata=limit(0, 1e6, "lux", open_lo=True))
    """Illuminance on a cell at relative light 1.0, lux."""
    ambient_lux: float = field(default=0.0, metadata=limit(0, 1e6, "lux"))
    """Stray light reaching every cell whatever the image, lux."""
    r10_ohm: float = field(default=20e3, metadata=limit(1, 1e9, "ohm"))
    """Nominal light resistance at 10 lux, ohm."""
    r10_spread: float = field(default=0.0, metadata=limit(0, 1, open_hi=True))
    """Cell-to-cell spread of R10: half-width of a uniform factor around 1, fraction."""
    gamma: float = field(default=0.7, metadata=limit(0, 5, open_lo=True))
    """Nominal power-law slope of resistance against illuminance, dimensionless."""
    gamma_spread: float = field(default=0.0, metadata=limit(0, 5, open_hi=True))
    """Cell-to-cell spread of gamma: half-width of a uniform offset, dimensionless."""
    dark_ohm: float = field(default=INF, metadata=limit(1, 1e12, "ohm", special=(INF,),
                                                          meaning="no dark path"))
    """Dark resistance (in parallel with the light path), ohm."""
    rise_s: float = field(default=0.0, metadata=_LAG)
    """Time constant of the conductance while the light increases, s."""
    decay_s: float = field(default=0.0, metadata=_LAG)
    """Time constant of the conductance while the light decreases, s."""
    memory_gain: float = field(default=0.0, metadata=limit(0, 100))
    """Light-history effect: conductance gain after long exposure at full lamp level, fraction."""
    memory_s: float = field(default=60.0, metadata=limit(1e-3, 1e7, "s"))
    """Time constant of the light-history memory, s."""
    temperature_factor: float = field(default=1.0, metadata=limit(0.1, 10))
    """Resistance multiplier from ambient temperature (0.8-1.2 over the rated range), ratio."""
    dead_fraction: float = field(default=0.0, metadata=limit(0, 1, open_hi=True))
    """Share of cells that are open circuits and never fire, fraction."""
    supply_v: float = field(default=10.0, metadata=limit(0, 1000, "V", open_lo=True))
    """Divider supply voltage, V."""
    load_ohm: float = field(default=6.8e3, metadata=limit(1, 1e9, "ohm"))
    """Divider load resistor between the cell and ground, ohm."""
    s_threshold_v: float = field(default=5.0, metadata=limit(0, 1000, "V", open_lo=True))
    """Divider voltage above which the S-unit fires, V."""

    def __post_init__(self) -> None:
        check_fields(self, "cells: ")
        if not self.gamma_spread < self.gamma:
            raise ValueError(
                f"cells: gamma_spread must be in [0, gamma={self.gamma}); got {self.gamma_spread!r}"
            )

    @property
    def settles_instantly(self) -> bool:
        """True when the cells have no lag and no memory: the static response is exact."""
        return self.rise_s == 0 and self.decay_s == 0 and self.memory_gain == 0


def _lag_factor(interval_s: float, tau_s: np.ndarray | float) -> np.ndarray:
    """``exp(-interval / tau)`` with ``tau = 0`` meaning an instant response (factor 0)."""
    tau = np.asarray(tau_s, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(tau > 0, np.exp(-interval_s / np.where(tau > 0, tau, 1.0)), 0.0)


class Retina:
    """A built retina: the cells of one machine, with their spreads and their state."""

    def __init__(self, cells: CdSCells, rng: np.random.Generator, n_cells: int = N_CELLS) -> None:
        self.cells = cells
        self.n_cells = n_cells
        self.r10 = cells.r10_ohm * (1 + rng.uniform(-cells.r10_spread, cells.r10_spread, n_cells))
        """Each cell's resistance at 10 lux, ohm."""
        self.gamma = cells.gamma + rng.uniform(-cells.gamma_spread, cells.gamma_spread, n_cells)
        """Each cell's power-law slope."""
        n_dead = int(round(cells.dead_fraction * n_cells))
        self.dead = np.zeros(n_cells, dtype=bool)
        """Open-circuit cells (never fire)."""
        self.dead[rng.choice(n_cells, size=n_dead, replace=False)] = True
        self.reset()

    # ------------------------------------------------------------------ closed forms
    def illuminance(self, x: np.ndarray) -> np.ndarray:
        """Illuminance on each cell for relative light ``x``, lux."""
        return np.asarray(x, dtype=np.float64) * self.cells.lamp_lux + self.cells.ambient_lux

    def light_conductance(self, lux: np.ndarray) -> np.ndarray:
        """``(E / 10 lx)^gamma`` per cell: the light conductance relative to 10 lux."""
        return (np.asarray(lux, dtype=np.float64) / 10.0) ** self.gamma

    def resistance(self, lux: np.ndarray, memory: np.ndarray | float = 0.0) -> np.ndarray:
        """Steady-state resistance of each cell at illuminance ``lux``, ohm (inf when dead)."""
        c = self.light_conductance(lux)
        g_light = c * (1 + self.cells.memory_gain * np.asarray(memory)) / (
            self.r10 * self.cells.temperature_factor
        )
        with np.errstate(divide="ignore"):
            r = 1.0 / (1.0 / self.cells.dark_ohm + g_light)
        return np.where(self.dead, np.inf, r)

    def divider_voltage(self, lux: np.ndarray, memory: np.ndarray | float = 0.0) -> np.ndarray:
        """Voltage each S-unit sees across its load resistor, V (0 for a dead cell)."""
        load = self.cells.load_ohm
        return self.cells.supply_v * load / (load + self.resistance(lux, memory))

    def conductance_threshold(self) -> np.ndarray:
        """``c_th`` per cell: the S-unit fires iff ``c * (1 + gain * m) > c_th`` (inf if dead)."""
        cells = self.cells
        if cells.s_threshold_v >= cells.supply_v:
            return np.full(self.n_cells, np.inf)
        r_th = cells.load_ohm * (cells.supply_v / cells.s_threshold_v - 1.0)
        c_th = (1.0 / r_th - 1.0 / cells.dark_ohm) * self.r10 * cells.temperature_factor
        return np.where(self.dead, np.inf, c_th)

    def cell_threshold(self) -> np.ndarray:
        """Relative illuminance above which each S-unit fires in the rested steady state.

        ``+inf`` for a cell that never fires (dead), ``-inf`` for one that always fires.
        """
        c_th = self.conductance_threshold()
        x_th = np.full(self.n_cells, np.inf)
        lit = np.isfinite(c_th) & (c_th > 0)
        lux = 10.0 * c_th[lit] ** (1.0 / self.gamma[lit])
        x_th[lit] = (lux - self.cells.ambient_lux) / self.cells.lamp_lux
        x_th[c_th == 0] = -self.cells.ambient_lux / self.cells.lamp_lux
        x_th[c_th < 0] = -np.inf
        return x_th

    # ------------------------------------------------------------------ responses
    def respond_static(self, x: np.ndarray) -> np.ndarray:
        """S-unit outputs (bool, shape of ``x``) of the rested retina in steady state."""
        return np.asarray(x) > self.cell_threshold()

    def reset(self) -> None:
        """Rest the retina in the dark: conductances at the ambient level, no light history."""
        self.c = self.light_conductance(np.full(self.n_cells, self.cells.ambient_lux))
        self.m = np.zeros(self.n_cells)

    def present(self, x: np.ndarray, dwell_s: float, change_s: float = 0.0,
                order: np.ndarray | None = None) -> np.ndarray:
        """Show images in turn; return the S-units at each reading (n, n_cells).

        The images are ``x`` (n, n_cells), shown in the order ``order`` when given (``x[order]``).
        Each is preceded by ``change_s`` of ambient light only (the changer swapping cards) and
        stays in view for ``dwell_s`` before the S-units are read. The cells carry their state
        from image to image and from call to call.
        """
        x = np.asarray(x, dtype=np.float64).reshape(-1, self.n_cells)
        if order is not None:
            x_shown = x[order]
        else:
            x_shown = x
        cells = self.cells
        if cells.settles_instantly:
            if len(x_shown):
                self.c = self.light_conductance(self.illuminance(x_shown[-1]))
            return self.respond_static(x_shown)
        targets = self._conductances(x)
        if order is not None:
            targets = targets[order]
        dark = self.light_conductance(np.full(self.n_cells, cells.ambient_lux))
        keep_rise = float(_lag_factor(dwell_s, cells.rise_s))
        keep_decay = float(_lag_factor(dwell_s, cells.decay_s))
        keep_dark = float(_lag_factor(change_s, cells.decay_s))
        c_all = np.empty_like(targets)
        c = self.c.copy()
        for i in range(len(targets)):
            if change_s > 0:  # in the dark every cell decays: no target lies below the dark level
                c -= dark
                c *= keep_dark
                c += dark
            d = targets[i] - c
            c += np.where(d > 0, d * (1 - keep_rise), d * (1 - keep_decay))
            c_all[i] = c
        self.c = c
        if cells.memory_gain:
            c_all *= 1 + cells.memory_gain * self._memory(x_shown, dwell_s, change_s)
        return c_all > self.conductance_threshold()

    def _conductances(self, x: np.ndarray) -> np.ndarray:
        """Steady-state light conductances of images ``x`` (cached for the last array seen)."""
        cached = getattr(self, "_cache", None)
        if cached is not None and cached[0] is x:
            return cached[1]
        targets = self.light_conductance(self.illuminance(x))
        self._cache = (x, targets)
        return targets

    def _memory(self, x: np.ndarray, dwell_s: float, change_s: float,
                chunk: int = 64) -> np.ndarray:
        """Light-history state at each reading (n, n_cells); advances :attr:`m`.

        Per trial ``m <- a * m + (1 - a_dwell) * x`` with ``a`` the decay over the change and
        the dwell: a linear recursion, solved ``chunk`` trials at a time in closed form.
        """
        keep_dwell = float(_lag_factor(dwell_s, self.cells.memory_s))
        a = float(_lag_factor(change_s, self.cells.memory_s)) * keep_dwell
        steps = np.arange(chunk)
        lag = steps[:, None] - steps[None, :]
        kernel = np.where(lag >= 0, a ** np.maximum(lag, 0), 0.0)  # a^(j-i) for i <= j
        carry = a ** (steps + 1)
        m_all = np.empty_like(x)
        m = self.m
        for start in range(0, len(x), chunk):
            b = x[start : start + chunk] * (1 - keep_dwell)
            n = len(b)
            m_all[start : start + n] = kernel[:n, :n] @ b + carry[:n, None] * m
            m = m_all[start + n - 1]
        self.m = m.copy()
        return m_all
