"""CdS photocells and S-units against their closed forms."""

from __future__ import annotations

import numpy as np
import pytest

from mark1.presets import CDS_1960, IDEAL
from mark1.retina import CdSCells, Retina


def retina(**kw: object) -> Retina:
    return Retina(CdSCells(**kw), np.random.default_rng(0))


def test_power_law_per_cell():
    r = retina(r10_ohm=20e3, r10_spread=0.5, gamma=0.7, gamma_spread=0.1)
    lux = np.array([0.5, 1.0, 10.0, 100.0, 1000.0])[:, None]
    expected = r.r10 * (lux / 10.0) ** (-r.gamma)  # R = R10 (E / 10 lx)^-gamma
    np.testing.assert_allclose(r.resistance(lux), expected, rtol=1e-12)
    # at 10 lux every cell shows its own R10; the spreads are there and bounded
    np.testing.assert_allclose(r.resistance(np.full(400, 10.0)), r.r10, rtol=1e-12)
    assert 0.5 * 20e3 <= r.r10.min() < 0.7 * 20e3 and 1.3 * 20e3 < r.r10.max() <= 1.5 * 20e3
    assert 0.6 <= r.gamma.min() and r.gamma.max() <= 0.8 and r.gamma.std() > 0.03


def test_dark_resistance_in_parallel_and_temperature():
    r = retina(dark_ohm=1e6, temperature_factor=1.2)
    assert np.all(r.resistance(np.zeros(400)) == 1e6)
    lux = 25.0
    light = 1.2 * 20e3 * (lux / 10) ** -0.7
    np.testing.assert_allclose(r.resistance(np.full(400, lux)), 1 / (1 / 1e6 + 1 / light))


def test_s_unit_switches_where_the_divider_crosses_its_threshold():
    r = retina(r10_spread=0.5, gamma_spread=0.05, ambient_lux=1.0, dark_ohm=2e6,
               load_ohm=6.8e3)
    x_th = r.cell_threshold()
    assert np.all(np.isfinite(x_th))
    lux_at = r.illuminance(x_th)
    np.testing.assert_allclose(r.divider_voltage(lux_at), 5.0, rtol=1e-9)  # V = V_th there
    eps = 1e-6
    assert np.all(r.divider_voltage(r.illuminance(x_th + eps)) > 5.0)
    assert np.all(r.divider_voltage(r.illuminance(x_th - eps)) < 5.0)
    assert np.array_equal(r.respond_static(x_th + eps), np.ones(400, bool))
    assert not r.respond_static(x_th - eps).any()


def test_ideal_cells_switch_at_exactly_half_light():
    r = Retina(IDEAL.cells, np.random.default_rng(0))
    assert np.all(r.cell_threshold() == 0.5)
    x = np.full((1, 400), 0.5)
    assert not r.respond_static(x).any()
    assert r.respond_static(np.nextafter(x, 1)).all()


def test_dead_and_always_on_cells():
    r = retina(dead_fraction=0.05)
    assert r.dead.sum() == 20
    assert np.all(np.isinf(r.cell_threshold()[r.dead]))
    assert not r.respond_static(np.ones((1, 400)))[0, r.dead].any()
    # a dark resistance below the trigger resistance always fires, even in the dark
    leaky = retina(dark_ohm=3e3, load_ohm=4e3)
    assert np.all(leaky.cell_threshold() == -np.inf)
    assert leaky.respond_static(np.zeros((1, 400))).all()


def test_lag_step_response_rise_and_decay_closed_forms():
    r = retina(rise_s=0.055, decay_s=0.020)
    c_dark = r.c.copy()
    lit = np.ones((1, 400))
    dwell = 0.03
    r.present(lit, dwell_s=dwell)
    c_lit = r.light_conductance(r.illuminance(lit[0]))
    np.testing.assert_allclose(r.c, c_lit + (c_dark - c_lit) * np.exp(-dwell / 0.055), rtol=1e-12)
    c_before = r.c.copy()
    r.present(np.zeros((1, 400)), dwell_s=dwell)  # light off: the faster decay
    np.testing.assert_allclose(r.c, c_dark + (c_before - c_dark) * np.exp(-dwell / 0.020),
                               rtol=1e-12, atol=1e-15)
    # the dark interval of a card change is a decay too
    r.reset()
    r.present(lit, dwell_s=1.0, change_s=0.0)
    settled = r.c.copy()
    r.present(lit, dwell_s=0.0, change_s=0.01)
    np.testing.assert_allclose(r.c, c_dark + (settled - c_dark) * np.exp(-0.01 / 0.020))


def test_previous_stimulus_leaves_a_trace():
    cells = CdSCells(rise_s=0.055, decay_s=0.5)  # slow decay: the last card lingers
    x = np.zeros((2, 400))
    x[0, :200] = 1.0  # first card lights the top half, second card is dark
    r = Retina(cells, np.random.default_rng(0))
    s = r.present(x, dwell_s=0.1)
    assert s[1, :200].all() and not s[1, 200:].any()  # still "sees" the first card
    s = Retina(CdSCells(rise_s=0.055, decay_s=0.02), np.random.default_rng(0)).present(
        x, dwell_s=0.5)
    assert not s[1].any()  # a fast decay forgets it


def test_memory_follows_light_in_closed_form_across_chunks():
    r = retina(memory_gain=0.1, memory_s=60.0, rise_s=0.01, decay_s=0.01)
    x = np.full((150, 400), 0.8)
    r.present(x, dwell_s=0.2)
    keep = np.exp(-0.2 / 60.0)
    np.testing.assert_allclose(r.m, 0.8 * (1 - keep**150), rtol=1e-10)


def test_presenting_in_an_order_equals_presenting_the_reordered_images():
    x = np.random.default_rng(1).uniform(size=(30, 400))
    order = np.random.default_rng(2).permutation(30)
    a = Retina(CDS_1960.cells, np.random.default_rng(3))
    b = Retina(CDS_1960.cells, np.random.default_rng(3))
    np.testing.assert_array_equal(a.present(x, 0.15, 0.05, order), b.present(x[order], 0.15, 0.05))


def test_instant_cells_present_the_static_response():
    r = Retina(IDEAL.cells, np.random.default_rng(0))
    x = np.random.default_rng(1).uniform(size=(20, 400))
    np.testing.assert_array_equal(r.present(x, 0.15, 0.05), r.respond_static(x))


@pytest.mark.parametrize("field, value", [("gamma", -1.0), ("r10_spread", 1.5),
                                          ("rise_s", float("nan")), ("gamma_spread", 0.9)])
def test_bad_cell_parameters_are_named(field, value):
    with pytest.raises(ValueError, match=field):
        CdSCells(**{field: value})
