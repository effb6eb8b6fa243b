"""Motor-driven potentiometers against their closed forms."""

from __future__ import annotations

import numpy as np
import pytest

from mark1.potentiometers import IDEAL_POTS, STEP_QUANTILES, PotentiometerBank, PotSpec

ONE = np.array([0])


def bank(shape: tuple[int, int] = (1, 4), seed: int = 0, **kw: object) -> PotentiometerBank:
    return PotentiometerBank(PotSpec(**kw), shape, np.random.default_rng(seed))


def turn(b: PotentiometerBank, direction: int, steps: int = 1, t: float = 0.0,
         cols: np.ndarray | None = None) -> None:
    cols = np.arange(b.shape[1]) if cols is None else cols
    b.move(ONE, cols, np.array([direction]), steps, t, np.random.default_rng(1))


def test_a_step_moves_the_nominal_step_scaled_by_the_up_down_asymmetry():
    b = bank(step=0.02, up_down=1.21)
    turn(b, +1, steps=3)
    np.testing.assert_allclose(b.read(), 3 * 0.02 * 1.1)  # up = step * sqrt(r)
    turn(b, -1, steps=2)
    np.testing.assert_allclose(b.read(), 3 * 0.02 * 1.1 - 2 * 0.02 / 1.1)


def test_steps_spread_from_pot_to_pot_and_from_step_to_step():
    b = bank(shape=(1, 4000), step=0.01, step_d2d=0.1)
    assert abs(b.step_size.std() / 0.01 - 0.1) < 0.01
    c2c = bank(shape=(1, 4000), step=0.01, step_c2c=0.2)
    turn(c2c, +1)
    moved = c2c.read()[0]
    assert abs(moved.mean() / 0.01 - 1) < 0.02 and abs(moved.std() / 0.01 - 0.2) < 0.02


def test_backlash_loses_the_play_on_reversal_only():
    b = bank(step=0.1, backlash_steps=2.0)
    turn(b, +1, steps=5)  # takes up the play whatever its start
    up = b.read().copy()
    turn(b, +1)  # same direction: the full step
    np.testing.assert_allclose(b.read() - up, 0.1)
    turn(b, -1, steps=3)  # reversal: 2 steps of play lost, 1 step of travel
    np.testing.assert_allclose(b.read() - up, 0.1 - 0.1, atol=1e-12)
    turn(b, -1)
    np.testing.assert_allclose(b.read() - up, -0.1)


def test_end_stops_hold_and_travel_counts_what_moved():
    b = bank(w_min=-0.1, w_max=0.1, step=0.03)
    turn(b, +1, steps=10)
    np.testing.assert_allclose(b.read(), 0.1)
    np.testing.assert_allclose(b.travel, 0.1)
    turn(b, -1, steps=1)
    np.testing.assert_allclose(b.read(), 0.07)


def test_wear_divides_the_step_by_one_plus_travel_over_its_scale():
    b = bank(w_min=-10.0, w_max=10.0, step=0.5, wear_sweeps=0.1)  # T_w = 0.1 * 20 = 2
    for _ in range(6):
        before = b.read().copy()
        travel = b.travel.copy()
        turn(b, +1)
        np.testing.assert_allclose(b.read() - before, 0.5 / (1 + travel / 2.0), rtol=1e-12)
    np.testing.assert_allclose(b.noise_sd(), 0.0)
    noisy = bank(w_min=-10.0, w_max=10.0, step=0.5, wear_sweeps=0.1, read_noise=0.01)
    turn(noisy, +1, steps=4)
    np.testing.assert_allclose(noisy.noise_sd(), 0.01 * (1 + noisy.travel / 2.0))


def test_drift_is_linear_in_machine_time_until_an_end_stop():
    b = bank(shape=(2, 200), w_min=-1.0, w_max=1.0, drift_sd=0.5)
    w0 = b.read(0.0)
    t = 600.0  # ten minutes: 0.5/h sd moves ~0.08, no pot reaches a stop
    np.testing.assert_allclose(b.read(t), w0 + b.rate * t)
    far = b.read(1e9)
    assert set(np.unique(np.sign(b.rate))) == {-1.0, 1.0}
    np.testing.assert_allclose(far[b.rate > 0], b.hi[b.rate > 0])
    np.testing.assert_allclose(far[b.rate < 0], b.lo[b.rate < 0])


def test_the_linear_model_matches_reads_before_and_after_stops():
    b = bank(shape=(2, 50), w_min=-0.2, w_max=0.2, drift_sd=1.0, step=0.05)
    turn(b, +1, steps=3, t=10.0, cols=np.arange(0, 50, 2))
    for t in (20.0, b.next_stop_s * 0.999, 400.0, 5000.0, 1e5):
        b.pin(t)
        assert t <= b.next_stop_s
        lin = b.lin[:, 0] + b.lin[:, 1] * t
        np.testing.assert_allclose(lin, b.read(t), atol=1e-6)


def test_stuck_wipers_do_not_move_or_creep():
    b = bank(shape=(1, 2000), stuck_fraction=0.1, drift_sd=0.5)
    assert 150 < b.stuck.sum() < 250
    turn(b, +1, steps=2, t=100.0)
    w = b.read(100.0)[0]
    assert np.all(w[b.stuck[0]] == 0.0) and np.all(w[~b.stuck[0]] != 0.0)


def test_reads_carry_contact_noise_of_the_given_sd():
    b = bank(shape=(1, 20000), read_noise=0.01)
    reads = b.read_noisy(0.0, np.random.default_rng(3))
    assert abs(reads.std() - 0.01) < 0.0005
    np.testing.assert_array_equal(b.read(0.0), 0.0)


def test_ideal_pots_are_exact_and_unbounded():
    spec = IDEAL_POTS
    assert spec.exact
    b = PotentiometerBank(spec, (2, 3), np.random.default_rng(0))
    b.move(np.array([0, 1]), np.array([0, 2]), np.array([1, -1]), 1, 0.0, None)
    np.testing.assert_array_equal(b.read(), [[1, 0, 1], [-1, 0, -1]])
    np.testing.assert_array_equal(b.lin[:, 0], b.read())


@pytest.mark.parametrize("kw, message", [
    ({"w_min": 1.0, "w_max": 0.0}, "w_min"), ({"step": 0.0}, "step"),
    ({"stuck_fraction": 1.0}, "stuck_fraction"), ({"read_noise": -1.0}, "read_noise"),
    ({"w_min": float("-inf"), "wear_sweeps": 10.0}, "finite w_min"),
])
def test_bad_pot_parameters_are_named(kw, message):
    with pytest.raises(ValueError, match=message):
        PotSpec(**kw)


def test_turning_several_rows_at_once_is_turning_them_one_after_the_other():
    spec = dict(step=0.02, step_d2d=0.1, step_c2c=0.2, up_down=1.2, backlash_steps=0.5,
                wear_sweeps=5.0, drift_sd=0.3, read_noise=0.01, init_sd=0.05)
    cols = np.array([1, 4, 5, 9])
    together, apart = bank((3, 12), **spec), bank((3, 12), **spec)
    rng_a, rng_b = np.random.default_rng(2), np.random.default_rng(2)
    for t in (10.0, 20.0, 30.0):
        together.move(np.array([0, 2]), cols, np.array([1, -1]), 2, t, rng_a)
        apart.move(np.array([0]), cols, np.array([1]), 2, t, rng_b)
        apart.move(np.array([2]), cols, np.array([-1]), 2, t, rng_b)
    for name in ("base", "lash", "travel", "lin"):
        np.testing.assert_array_equal(getattr(together, name), getattr(apart, name))
    assert together.travel[1].sum() == 0 and together.travel[0, cols].min() > 0


def test_step_spread_draws_are_normal_quantiles_at_the_generators_uniforms_in_order():
    b = bank((1, 6), step=0.01, step_c2c=0.2)
    rng = np.random.default_rng(7)
    turn_into = [np.array([0, 2, 3]), np.array([1, 2, 5])]
    for cols in turn_into:
        b.move(ONE, cols, np.array([1]), 1, 0.0, rng)
    # the uniforms' 53 bits as integers; each gives four 12-bit indices, leading bits first
    bits = [int(u * 2**53) for u in np.random.default_rng(7).random(2)]
    index = [(k >> (53 - 12 * (i + 1))) & 4095 for k in bits for i in range(4)]
    z = STEP_QUANTILES[index[:6]]
    expected = np.zeros(6)
    for cols, draws in zip(turn_into, (z[:3], z[3:])):
        expected[cols] += 0.01 * (1 + 0.2 * draws)
    np.testing.assert_allclose(b.read()[0], expected, rtol=1e-12)


def test_a_wiper_turned_off_its_stop_creeps_again():
    b = bank((1, 1), w_min=-0.1, w_max=0.1, step=0.05, drift_sd=50.0, seed=3)
    rate = float(b.rate[0, 0])
    stop = 0.1 if rate > 0 else -0.1
    t_stop = float(b.t_hit[0, 0])
    b.pin(t_stop + 1.0)  # resting on its stop
    assert b.creep[0, 0] == 0 and b.read(t_stop + 50.0)[0, 0] == stop
    t = t_stop + 2.0
    turn(b, -1 if rate > 0 else +1, t=t)  # one step away from the stop
    away = stop - np.sign(rate) * 0.05
    assert b.creep[0, 0] == rate and t < b.next_stop_s
    np.testing.assert_allclose(b.read(t + 0.5)[0, 0], away + rate * 0.5, rtol=1e-9)
    t_back = b.next_stop_s
    np.testing.assert_allclose(t_back, t + 0.05 / abs(rate), rtol=1e-9)  # back at its stop
    b.pin(t_back)
    assert b.creep[0, 0] == 0 and b.read(t_back + 9.0)[0, 0] == stop


def test_step_spread_quantiles_are_a_unit_normal():
    q = STEP_QUANTILES
    assert len(q) == 4096 and np.all(np.diff(q) > 0)
    np.testing.assert_allclose(q, -q[::-1], atol=1e-15)  # symmetric: mean 0
    assert abs(np.mean(q * q) - 1) < 1e-12  # unit variance, so sd = step_c2c exactly
    # the distribution function of the 4,096 equally likely values is the normal's to 1/4096
    # (Kolmogorov-Smirnov distance), checked at each value with math.erf
    from math import erf, sqrt

    normal_cdf = np.array([0.5 * (1 + erf(v / sqrt(2))) for v in q])
    below, upto = np.arange(4096) / 4096, np.arange(1, 4097) / 4096
    assert max(np.abs(normal_cdf - below).max(), np.abs(normal_cdf - upto).max()) < 1.5 / 4096
    assert 3.6 < q[-1] < 3.7  # cut at about 3.67 sd


def test_step_spread_draws_have_the_mean_and_variance_of_a_unit_normal():
    """The draws the bank takes (12-bit table indices from the generator's uniforms) stand for
    a unit normal: mean 0, variance 1 and the normal's share within 1 and 2 sd, to within a few
    standard errors of 2**20 draws; and a turn of n steps spreads by step_c2c * sqrt(n) steps."""
    from mark1.potentiometers import step_spread_draws

    n = 2**20
    z = step_spread_draws(np.random.default_rng(11), n)
    assert len(z) == n
    assert abs(z.mean()) < 4 / np.sqrt(n)
    assert abs(z.var() - 1) < 4 * np.sqrt(2 / n)
    for k, share in ((1, 0.682689), (2, 0.954500)):
        assert abs(np.mean(np.abs(z) < k) - share) < 4 * np.sqrt(share * (1 - share) / n)
    assert np.abs(z).max() == STEP_QUANTILES[-1]  # cut at 3.67 sd
    # every one of the 4,096 values is drawn about equally often (uniform 12-bit indices)
    counts = np.unique(z, return_counts=True)[1]
    assert len(counts) == 4096 and abs(counts.mean() - n / 4096) < 1e-9
    assert counts.std() < 1.5 * np.sqrt(n / 4096)
    turned = bank((1, 20000), step=0.01, step_c2c=0.2)
    turn(turned, +1, steps=3)
    moved = turned.read()[0] / 0.01  # in nominal steps
    assert abs(moved.mean() - 3) < 4 * 0.2 * np.sqrt(3) / np.sqrt(20000)
    assert abs(moved.std() / (0.2 * np.sqrt(3)) - 1) < 0.02
