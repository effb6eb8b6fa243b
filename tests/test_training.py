"""The training rules: the reference is the textbook perceptron on exact pots and meets
Novikoff's bound; the numpy block path keeps its sequential semantics whatever the block; the
variants; what train_epoch refuses."""

from __future__ import annotations

import numpy as np
import pytest

from mark1 import fast
from mark1.fast import ARows, blocks, one_blas_thread
from mark1.machine import MarkI
from mark1.motors import MachineClock
from mark1.potentiometers import IDEAL_POTS, PotentiometerBank
from mark1.presets import CDS_1960, get_preset
from mark1.stimuli import make_task
from mark1.training import EpochLog, reference_epoch, train_epoch


def random_problem(seed: int, n: int = 300, n_a: int = 40, n_units: int = 3):
    rng = np.random.default_rng(seed)
    A = (rng.random((n, n_a + 1)) < 0.3).astype(np.float32)
    A[:, -1] = 1.0  # the bias line
    targets = np.where(rng.random((n, n_units)) < 0.4, 1, -1).astype(np.int8)
    orders = [rng.permutation(n) for _ in range(3)]
    return A, targets, orders


def textbook(A: np.ndarray, targets: np.ndarray, orders: list[np.ndarray]):
    """The perceptron as printed: trial by trial, on R-unit sums above zero."""
    W = np.zeros((targets.shape[1], A.shape[1]))
    wrong_log = []
    for order in orders:
        for k in order:
            out = np.where(W @ A[k] > 0, 1, -1)
            wrong = out != targets[k]
            W[wrong] += targets[k][wrong, None] * A[k]
            wrong_log.append(bool(wrong.any()))
    return W, np.array(wrong_log)


def run(A, targets, orders, spec, block, seed=0, noise_sd=True, fortran=False,
        path="numpy"):
    """Passes on the numpy block path with blocks of ``block`` trials (adaptive: ``None``),
    or on ``path``."""
    rng = np.random.default_rng(seed)
    n_p = (A.A if isinstance(A, ARows) else A).shape[1]
    bank = PotentiometerBank(spec, (targets.shape[1], n_p), np.random.default_rng(9))
    clock = MachineClock(CDS_1960.clock, CDS_1960.motors)
    units = np.arange(targets.shape[1])
    logs = []
    with one_blas_thread():
        for e, order in enumerate(orders):
            noise = (np.random.default_rng([seed, e]).standard_normal(targets.shape)
                     if noise_sd else None)
            presented = np.asfortranarray(targets[order]) if fortran else targets[order]
            rows = A if isinstance(A, ARows) else ARows(A)
            if path == "reference":
                logs.append(reference_epoch(rows.A, presented, bank, units, clock, rng,
                                            noise=noise, order=order))
                continue
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv(fast.ENV, path)
                done = fast.train_epoch(rows, presented, bank, units, clock, rng,
                                        rule="error-correction", noise=noise, r_theta=0.0,
                                        order=order, progress=None, block=block)
            assert done is not None
            logs.append(EpochLog(int(done[0].sum()), *done))
    return bank, clock, np.concatenate([log.wrong for log in logs])


@pytest.mark.parametrize("n_units", [1, 3])
def test_the_reference_and_block_scoring_on_exact_pots_are_the_textbook_perceptron(n_units):
    A, targets, orders = random_problem(1, n_units=n_units)
    W_ref, wrong_ref = textbook(A, targets, orders)
    assert wrong_ref.sum() > 100  # plenty of corrections to get wrong
    bank, clock, wrong = run(A, targets, orders, IDEAL_POTS, None, path="reference")
    np.testing.assert_array_equal(bank.read(), W_ref)
    np.testing.assert_array_equal(wrong, wrong_ref)
    for block in (None, 1, 7):
        bank, clock, wrong = run(A, targets, orders, IDEAL_POTS, block)
        np.testing.assert_array_equal(bank.read(), W_ref)
        np.testing.assert_array_equal(bank.lin[:, 0], W_ref)
        np.testing.assert_array_equal(wrong, wrong_ref)


@pytest.mark.parametrize("n_units", [1, 3])
def test_block_scoring_of_physical_pots_is_the_reference_whatever_the_block(n_units):
    A, targets, orders = random_problem(2, n_units=n_units)
    spec = CDS_1960.pots
    ref_bank, ref_clock, ref_wrong = run(A, targets, orders, spec, None, path="reference")
    assert ref_wrong.sum() > 50
    for block in (None, 1, 5):
        bank, clock, wrong = run(A, targets, orders, spec, block)
        np.testing.assert_array_equal(wrong, ref_wrong)
        np.testing.assert_array_equal(bank.read(clock.t_s), ref_bank.read(ref_clock.t_s))
        np.testing.assert_array_equal(bank.lin, ref_bank.lin)
        assert clock.t_us == ref_clock.t_us and clock.motor_steps == ref_clock.motor_steps


def test_the_ideal_rule_converges_within_novikoffs_bound():
    rng = np.random.default_rng(4)
    X = (rng.random((600, 400)) < 0.5).astype(np.float64)
    w_star = np.append(rng.normal(size=400), 0.3)
    xb = np.hstack([X, np.ones((600, 1))])
    margin = xb @ w_star / np.linalg.norm(w_star)
    keep = np.abs(margin) > np.quantile(np.abs(margin), 0.5)  # a separable set with a margin
    X, xb, margin = X[keep], xb[keep], margin[keep]
    y = (margin > 0).astype(int)
    R = np.linalg.norm(xb, axis=1).max()
    gamma = np.abs(margin).min()
    bound = (R / gamma) ** 2
    m = MarkI(preset="ideal", rule="ideal", raw=True, random_state=0, max_iter=500).fit(X, y)
    assert m.mistakes_per_epoch_[-1] == 0  # converged: an error-free pass
    assert sum(m.mistakes_per_epoch_) <= bound
    assert m.score(X, y) == 1.0


def test_the_ideal_rule_is_error_correction_on_ideal_pots_without_motors():
    task = make_task("square-diamond", seed=3, n_train=80, n_test=4)
    a = MarkI(preset="ideal", rule="ideal", n_a=128, random_state=5, max_iter=6)
    b = MarkI(preset="ideal", rule="error-correction", n_a=128, random_state=5, max_iter=6)
    a.fit(task.X_train, task.y_train)
    b.fit(task.X_train, task.y_train)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    assert a.mistakes_per_epoch_ == b.mistakes_per_epoch_
    assert a.motor_steps == 0 < b.motor_steps


def test_the_ideal_rule_trains_the_ideal_presets_pots_on_any_machine():
    task = make_task("e-f", seed=0, n_train=20, n_test=2)
    m = MarkI(preset="cds-1960", rule="ideal", n_a=32, random_state=0, max_iter=1)
    m.fit(task.X_train, task.y_train)
    assert m.pots_.spec == get_preset("ideal").pots == IDEAL_POTS and m.pots_.exact


def test_forced_response_reinforces_every_trial():
    task = make_task("left-right", seed=0, n_train=60, n_test=100)
    m = MarkI(preset="cds-1960", rule="forced-response", n_a=128, random_state=0, max_iter=2)
    m.fit(task.X_train, task.y_train)
    steps = np.concatenate([log.motor_steps for log in m.epoch_logs_])
    assert np.all(steps > 0) and len(steps) == 120
    assert m.score(task.X_test, task.y_test) > 0.8


def test_an_unknown_rule_is_named():
    A, targets, orders = random_problem(0)
    bank = PotentiometerBank(IDEAL_POTS, (3, 41), np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown rule 'hebb'; allowed: error-correction"):
        train_epoch(A, targets, bank, np.arange(3), MachineClock(CDS_1960.clock,
                    CDS_1960.motors), np.random.default_rng(0), rule="hebb")


def test_the_ideal_rule_trains_exact_weights_only():
    A, targets, orders = random_problem(0)
    clock = MachineClock(CDS_1960.clock, CDS_1960.motors)
    bank = PotentiometerBank(CDS_1960.pots, (3, 41), np.random.default_rng(0))
    with pytest.raises(ValueError, match="rule 'ideal' trains exact weights"):
        train_epoch(A, targets, bank, np.arange(3), clock, np.random.default_rng(0),
                    rule="ideal")
    exact = PotentiometerBank(IDEAL_POTS, (3, 41), np.random.default_rng(0))
    log = train_epoch(A, targets, exact, np.arange(3), clock, None, rule="ideal")
    assert log.mistakes > 0 and log.motor_steps.sum() == 0 and clock.motor_us == 0
    assert clock.t_us == len(A) * clock.present_us


def integer_problem(seed: int, n_units: int, levels: int = 2, n: int = 400, n_a: int = 60):
    """A-unit rows and targets that mistakes thin out on: R-unit k answers +1 when A-unit k
    or A-unit k + 1 is active (separable), but for a few flipped labels."""
    rng = np.random.default_rng(seed)
    A = rng.integers(0, levels, (n, n_a + 1)).astype(np.float32)
    A[:, -1] = 1.0
    k = np.arange(n_units)
    targets = np.where(A[:, k] + A[:, k + 1] > 0, 1, -1).astype(np.int8)
    targets[rng.random(targets.shape) < 0.004] *= -1
    orders = [rng.permutation(n) for _ in range(6)]
    return A, targets, orders


@pytest.mark.parametrize("n_units", [1, 3, 9])
@pytest.mark.parametrize("dense", [None, 0.0, 2.0])
def test_sparse_and_dense_scoring_are_the_textbook_perceptron(n_units, dense, monkeypatch):
    # dense=None: the trainer switches as mistakes thin out; 0.0: trial by trial in Python
    # wherever it can; 2.0: never (one product per mistake). 9 R-units are too many to pack.
    if dense is not None:
        monkeypatch.setattr(blocks, "_DENSE", dense)
    A, targets, orders = integer_problem(3, n_units)
    W_ref, wrong_ref = textbook(A, targets, orders)
    per_pass = wrong_ref.reshape(len(orders), -1).sum(axis=1)
    assert per_pass[0] > 5 * per_pass[-1] > 0  # dense at first, sparse later
    for block, fortran in ((None, False), (3, False), (None, True)):  # any memory layout
        bank, clock, wrong = run(A, targets, orders, IDEAL_POTS, block, noise_sd=False,
                                 fortran=fortran)
        np.testing.assert_array_equal(wrong, wrong_ref)
        np.testing.assert_array_equal(bank.read(), W_ref)
        np.testing.assert_array_equal(bank.travel, travel_of(A, targets, orders))


def travel_of(A: np.ndarray, targets: np.ndarray, orders: list[np.ndarray]) -> np.ndarray:
    """Wiper travel of the textbook run: one step per correction of each active A-unit."""
    W = np.zeros((targets.shape[1], A.shape[1]))
    travel = np.zeros_like(W)
    for order in orders:
        for k in order:
            wrong = np.where(W @ A[k] > 0, 1, -1) != targets[k]
            W[wrong] += targets[k][wrong, None] * A[k]
            travel[wrong] += np.abs(A[k])
    return travel


def test_rows_that_are_not_all_or_nothing_are_refused():
    A, targets, orders = integer_problem(5, 2, levels=3)  # entries 0, 1, 2
    with pytest.raises(ValueError, match="must hold 0 or 1 .all-or-nothing A-units.; got 2.0 "
                       "in row"):
        ARows(A)
    bank = PotentiometerBank(IDEAL_POTS, (2, A.shape[1]), np.random.default_rng(0))
    with pytest.raises(ValueError, match="0 or 1"):
        train_epoch(A, targets, bank, np.arange(2), MachineClock(CDS_1960.clock,
                    CDS_1960.motors), None)


def test_a_unit_rows_become_bit_sets_and_bad_orders_are_named():
    A, targets, orders = random_problem(6)
    rows = ARows(A > 0)
    assert rows.A.dtype == np.float32
    bits = rows.bits()
    overlaps = [[(bits[i] & bits[j]).bit_count() for j in range(20)] for i in range(20)]
    np.testing.assert_array_equal(overlaps, A[:20] @ A[:20].T)
    np.testing.assert_array_equal(rows.active(4), np.flatnonzero(A[4]))
    bank = PotentiometerBank(IDEAL_POTS, (3, 41), np.random.default_rng(0))
    clock = MachineClock(CDS_1960.clock, CDS_1960.motors)
    for bad in (orders[0][:-1], orders[0] + 1, orders[0].astype(float)):
        with pytest.raises(ValueError, match="order must hold 300 row indices in"):
            train_epoch(rows, targets, bank, np.arange(3), clock, np.random.default_rng(0),
                        order=bad)
    with pytest.raises(ValueError, match="2-d array"):
        ARows(np.zeros(5))


@pytest.mark.parametrize("change, message", [
    ({"targets": np.ones((300, 2))}, "targets must have shape .n, 3."),
    ({"noise": np.zeros((300, 2))}, "noise must have the targets' shape"),
    ({"units": np.array([0, 1, 5])}, "units must be R-units of the bank, in .0, 3."),
    ({"A": np.ones((300, 40), dtype=bool)}, "40 columns for a bank of 41 pots"),
    ({"A": np.ones((299, 41), dtype=bool)}, "299 A-unit rows for 300 trials"),
])
def test_targets_noise_units_and_rows_that_do_not_fit_are_named(change, message):
    A, targets, orders = random_problem(6)
    args = {"A": A > 0, "targets": targets, "units": np.arange(3), "noise": None, **change}
    bank = PotentiometerBank(IDEAL_POTS, (3, 41), np.random.default_rng(0))
    with pytest.raises(ValueError, match=message):
        train_epoch(args["A"], args["targets"], bank, args["units"],
                    MachineClock(CDS_1960.clock, CDS_1960.motors), None, noise=args["noise"])
