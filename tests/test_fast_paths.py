"""Every fast path gives exactly the reference's results, field by field; the MARK1_KERNELS switch.

The reference is :func:`mark1.training.reference_epoch`; the fast paths are the numpy block
path and the numba-compiled passes (:mod:`mark1.fast`). Compared: the logs of every pass
(mistakes, wrong trials, motor steps, machine times), the clock, every array of the pot bank's
state with its step-spread draws, the generators' states and the progress totals.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mark1 import fast, training
from mark1.errors import Mark1Error
from mark1.fast import ARows, blocks, compiled, one_blas_thread
from mark1.fast.bookkeeping import REPORT_EVERY
from mark1.machine import MarkI
from mark1.motors import MachineClock
from mark1.potentiometers import DRAWS_PER_UNIFORM, IDEAL_POTS, PotentiometerBank, PotSpec
from mark1.presets import CDS_1960, CDS_WORN
from mark1.stimuli import make_task

ROOT = Path(__file__).resolve().parents[1]
HAS_NUMBA = compiled.load() is not None
FAST = ("numpy", "numba") if HAS_NUMBA else ("numpy",)
needs_numba = pytest.mark.skipif(not HAS_NUMBA, reason="numba is not installed (the numpy "
                                 "path alone is tested)")


def bank_state(bank: PotentiometerBank) -> dict:
    """Every array and count of a bank's state, its draws included (the generator itself is
    compared by the caller: here whether there is one)."""
    state = dataclasses.asdict(bank.state)
    state["draws"]["rng"] = bank.state.draws.rng is not None
    return state


def assert_same(a: object, b: object, where: str = "") -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape, where
        np.testing.assert_array_equal(a, b, err_msg=where, strict=True)
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{k}]")
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} != {b!r}"


def progress_totals(calls: list[tuple], n_trials: int) -> list[list[int]]:
    """New trials and mistakes reported per pass (the calls' pattern may differ by path: about
    every REPORT_EVERY trials; the totals may not)."""
    totals, trials, mistakes = [], 0, 0
    for new_trials, new_mistakes, *_ in calls:
        assert new_trials < 2 * REPORT_EVERY
        trials, mistakes = trials + new_trials, mistakes + new_mistakes
        if trials == n_trials:
            totals.append([trials, mistakes])
            trials = mistakes = 0
    assert trials == 0
    return totals


def machine_run(path: str, preset: str, task: str, n: int, epochs: int, seed: int,
                rule: str = "error-correction", monkeypatch: pytest.MonkeyPatch | None = None
                ) -> dict:
    if monkeypatch is not None:
        monkeypatch.setenv(fast.ENV, path)
    t = make_task(task, seed=0, n_train=n, n_test=1)
    calls: list[tuple] = []
    m = MarkI(preset=preset, rule=rule, random_state=seed, max_iter=epochs)
    m.fit(t.X_train, t.y_train, progress=lambda *args: calls.append(args))
    assert m.pots_.state.draws.rng in (None, m._rng_steps)
    return {"logs": [vars(log) for log in m.epoch_logs_], "bank": bank_state(m.pots_),
            "clock": vars(m.clock_).copy(), "progress": progress_totals(calls, n),
            "history": m.history_, "machine": m.machine_arrays(task),
            "rngs": [r.bit_generator.state for r in (m._rng_steps, m._rng_noise,
                                                     m._rng_order)]}


@pytest.mark.parametrize("preset", ["ideal", "cds-1960", "cds-worn"])
@pytest.mark.parametrize("task,n,epochs", [("e-f", 300, 3), ("digits", 200, 2),
                                           ("letters", 156, 2)])
def test_machine_runs_on_every_fast_path_are_the_references(preset, task, n, epochs,
                                                              monkeypatch):
    ref = machine_run("reference", preset, task, n, epochs, 3, monkeypatch=monkeypatch)
    assert sum(log["mistakes"] for log in ref["logs"]) > 20
    for path in FAST:
        assert_same(ref, machine_run(path, preset, task, n, epochs, 3, monkeypatch=monkeypatch),
                    path)


@pytest.mark.parametrize("rule", ["ideal", "forced-response"])
@pytest.mark.parametrize("preset", ["ideal", "cds-1960"])
def test_the_ideal_and_forced_response_rules_on_every_fast_path_are_the_references(
        rule, preset, monkeypatch):
    ref = machine_run("reference", preset, "digits", 150, 2, 1, rule, monkeypatch)
    for path in FAST:
        assert_same(ref, machine_run(path, preset, "digits", 150, 2, 1, rule, monkeypatch),
                    path)


def random_problem(seed: int, n: int = 600, n_a: int = 60, n_units: int = 3):
    rng = np.random.default_rng(seed)
    A = rng.random((n, n_a + 1)) < 0.3
    A[:, -1] = True  # the bias line
    targets = np.where(rng.random((n, n_units)) < 0.4, 1, -1).astype(np.int8)
    orders = [rng.permutation(n) for _ in range(3)]
    return A, targets, orders


def passes(path: str, A, targets, orders, spec, *, block=None, static=True, noise=True,
           spread=False, motors=CDS_1960.motors, rule="error-correction", r_theta=0.0):
    """Three passes on ``path`` (``block``: the numpy block path's fixed block size); all
    they leave behind (``spread``: every other R-unit trained)."""
    rng = np.random.default_rng(0)
    rows = ARows(A)
    n_units = targets.shape[1]
    bank = PotentiometerBank(spec, (2 * n_units + 1, A.shape[1]), np.random.default_rng(9))
    clock = MachineClock(CDS_1960.clock, motors)
    units = np.arange(1, n_units + 1) * (2 if spread else 1)  # not starting at 0
    calls: list[tuple] = []
    logs = []
    os.environ[fast.ENV] = path
    try:
        with one_blas_thread():
            for e, order in enumerate(orders):
                draws = (np.random.default_rng([1, e]).standard_normal(targets.shape) if noise
                         else None)
                args = (rows if static else ARows(A[order]), targets[order], bank, units, clock,
                        rng)
                kw = dict(rule=rule, noise=draws, r_theta=r_theta,
                          order=order if static else None,
                          progress=lambda *a: calls.append(a))
                if block is None:
                    logs.append(vars(training.train_epoch(*args, **kw)))
                else:  # the numpy block path with fixed blocks
                    assert path == "numpy"
                    wrong, steps, times = fast.train_epoch(*args, block=block, **kw)
                    logs.append(vars(training.EpochLog(int(wrong.sum()), wrong, steps, times)))
    finally:
        del os.environ[fast.ENV]
    return {"logs": logs, "bank": bank_state(bank), "clock": vars(clock).copy(),
            "progress": progress_totals(calls, len(targets)), "rng": rng.bit_generator.state}


def every_path(*args, blocks=(1, 5), **kwargs) -> dict:
    """The reference's run, after checking that every fast path (and the numpy block path
    with each fixed block size) leaves exactly the same."""
    ref = passes("reference", *args, **kwargs)
    for path in FAST:
        assert_same(ref, passes(path, *args, **kwargs), path)
    for block in blocks:
        assert_same(ref, passes("numpy", *args, block=block, **kwargs), f"block {block}")
    return ref


WORN_AND_DRIFTING = PotSpec(  # every part of the physics at work within a few hundred trials
    w_min=-1.0, w_max=1.0, init_sd=0.05, bound_sd=0.02, step=0.05, step_d2d=0.2, step_c2c=0.3,
    up_down=1.3, backlash_steps=1.5, wear_sweeps=5.0, drift_sd=400.0, stuck_fraction=0.05,
    read_noise=0.05)


@pytest.mark.parametrize("n_units", [1, 3])
@pytest.mark.parametrize("spec", [CDS_1960.pots, CDS_WORN.pots, WORN_AND_DRIFTING],
                         ids=["cds-1960", "cds-worn", "drifting"])
def test_passes_on_physical_pots_are_the_references_on_every_path(spec, n_units):
    A, targets, orders = random_problem(2, n_units=n_units)
    ref = every_path(A, targets, orders, spec)
    assert sum(log["mistakes"] for log in ref["logs"]) > 50
    if spec is WORN_AND_DRIFTING:  # wipers reached their stops, and left them
        assert ref["bank"]["creep_changes"] > 100


@pytest.mark.parametrize("rule", ["forced-response", "error-correction"])
def test_forced_response_and_a_threshold_on_physical_pots_are_the_references(rule):
    A, targets, orders = random_problem(7, n_units=2)
    ref = every_path(A, targets, orders, WORN_AND_DRIFTING, rule=rule, r_theta=0.3)
    assert sum(log["mistakes"] for log in ref["logs"]) > 50


def test_three_steps_a_correction_are_the_references_on_every_path():
    """Step spread over three steps a correction (sqrt(3) scale), play, no wear, no drift."""
    spec = PotSpec(w_min=-1.0, w_max=1.0, step=0.05, step_c2c=0.4, up_down=1.2,
                   backlash_steps=1.0, read_noise=0.02)
    A, targets, orders = random_problem(5, n_units=2)
    motors = dataclasses.replace(CDS_1960.motors, steps_per_correction=3)
    ref = every_path(A, targets, orders, spec, motors=motors)
    assert sum(log["mistakes"] for log in ref["logs"]) > 50
    assert ref["bank"]["draws"]["steps"] == 3


def test_units_that_are_not_consecutive_and_rows_copied_per_pass_are_the_references():
    A, targets, orders = random_problem(3, n_units=3)
    every_path(A, targets, orders, WORN_AND_DRIFTING, spread=True)
    every_path(A, targets, orders, WORN_AND_DRIFTING, static=False)


@pytest.mark.parametrize("n_units", [1, 3])
def test_exact_passes_are_the_references_and_the_textbook_perceptron(n_units):
    A, targets, orders = random_problem(1, n_units=n_units)
    ref = every_path(A, targets, orders, IDEAL_POTS, noise=False)
    assert sum(log["mistakes"] for log in ref["logs"]) > 100
    W = np.zeros((n_units, A.shape[1]))
    for order in orders:  # the perceptron as printed
        for k in order:
            wrong = np.where(W @ A[k] > 0, 1, -1) != targets[k]
            W[wrong] += targets[k][wrong, None] * A[k]
    np.testing.assert_array_equal(ref["bank"]["base"][1 : n_units + 1], W)


@pytest.mark.parametrize("spec", [IDEAL_POTS, WORN_AND_DRIFTING], ids=["exact", "drifting"])
def test_rows_presented_several_times_in_a_pass_are_the_references_on_every_path(spec):
    """``sample_weight`` presents a row as many times as its weight: orders with repeats."""
    A, targets, _ = random_problem(4, n_units=2)
    rng = np.random.default_rng(4)
    orders = [rng.integers(0, 100, size=len(A)) for _ in range(3)]  # each row about 6 times
    ref = every_path(A, targets, orders, spec, noise=spec is not IDEAL_POTS)
    assert sum(log["mistakes"] for log in ref["logs"]) > 50


@pytest.mark.parametrize("r_theta", [0.0, 0.05])
@pytest.mark.parametrize("rule", ["ideal", "forced-response"])
def test_exact_pots_with_fractional_steps_are_the_references_on_every_path(rule, r_theta):
    """Sums of fractional steps are not whole numbers: the numpy block path scores them with
    products settled near zero by the reference (the first sums, of pots at zero, are exactly
    zero: wrong for a right answer of +1); the compiled passes leave them to it."""
    spec = PotSpec(w_min=float("-inf"), w_max=float("inf"), step=0.1)
    A, targets, orders = random_problem(8, n_units=2)
    ref = every_path(A, targets, orders, spec, noise=False, rule=rule, r_theta=r_theta)
    assert sum(log["mistakes"] for log in ref["logs"]) > 50


def test_sums_whose_float32_rounding_decides_are_the_references_on_every_path(monkeypatch):
    """R-unit sums a hair from zero (big weights cancelling, tiny ones left: float32 sums in
    different orders differ in sign): the numpy block path hands them to the reference."""
    spec = PotSpec(w_min=-4.0, w_max=4.0, step=0.5)  # physical pots, no noise, no drift
    n, n_p = 64, 40
    rng = np.random.default_rng(5)
    A = rng.random((n, n_p)) < 0.5
    A[:, :3] = True
    targets = np.where(rng.random((n, 1)) < 0.5, 1, -1).astype(np.int8)
    tiny = rng.standard_normal(n_p - 3).astype(np.float32) * np.float32(2.0**-27)
    settled = []
    real = blocks._Ties._settle
    monkeypatch.setattr(blocks._Ties, "_settle", lambda self, *a: settled.append(a) or real(
        self, *a))
    results = []
    for path in ("reference", *FAST):
        monkeypatch.setenv(fast.ENV, path)
        bank = PotentiometerBank(spec, (1, n_p), np.random.default_rng(0))
        bank.base[0] = np.concatenate([[3.0, -3.0, 0.0], tiny])  # float32 values, exactly
        bank.lin[0, 0] = bank.base[0]
        clock = MachineClock(CDS_1960.clock, CDS_1960.motors)
        log = training.train_epoch(ARows(A), targets, bank, [0], clock, np.random.default_rng(1))
        results.append((vars(log), bank_state(bank)))
    assert settled  # some sums were too near zero for the products
    for other in results[1:]:
        assert_same(results[0], other)


@pytest.mark.parametrize("static", [True, False])
def test_the_numpy_path_with_every_sum_settled_by_the_reference_is_the_reference(
        static, monkeypatch):
    """The band of doubt widened to everything: every scanned trial is scored again by the
    reference (the band's logic, not only its width, is right)."""
    A, targets, orders = random_problem(4, n_units=3)
    made: list = []
    real = blocks._Ties.__init__

    def wide(self, *args):
        real(self, *args)
        self.widen(1e9)
        made.append(self)

    monkeypatch.setattr(blocks._Ties, "__init__", wide)
    ref = passes("reference", A, targets, orders, WORN_AND_DRIFTING, static=static)
    assert_same(ref, passes("numpy", A, targets, orders, WORN_AND_DRIFTING, static=static))
    assert sum(ties.settled for ties in made) > 1000


def test_unit_sums_add_the_pots_in_ascending_order_in_float64():
    """The definition of an R-unit's sum, which every path reproduces bit for bit."""
    from mark1.r_units import unit_sums

    rng = np.random.default_rng(2)
    model = (rng.standard_normal((3, 3, 50)) * 10.0 ** rng.integers(-8, 3, (3, 3, 50))).astype(
        np.float32)
    model[:, 2] = np.abs(model[:, 2])
    active = np.flatnonzero(rng.random(50) < 0.6)
    units = np.array([2, 0])
    z, t = rng.standard_normal(2), 1234.5
    expected = []
    for u, zu in zip(units, z):
        s = [0.0, 0.0, 0.0]
        for j in active:
            for k in range(3):
                s[k] += float(model[u, k, j])
        expected.append(s[0] + t * s[1] + float(np.sqrt(s[2])) * zu)
    got = unit_sums(model, units, active, t, z)
    assert got.tolist() == expected
    np.testing.assert_array_equal(unit_sums(model, units, active[:0], t, z), 0.0)


def test_a_bad_switch_value_names_the_allowed_ones(monkeypatch):
    monkeypatch.setenv(fast.ENV, "fast")
    with pytest.raises(ValueError, match="MARK1_KERNELS='fast'.*allowed: auto, numpy, numba, "
                       "reference"):
        fast.mode()
    A, targets, orders = random_problem(1, n=20, n_units=1)
    bank = PotentiometerBank(IDEAL_POTS, (1, A.shape[1]), np.random.default_rng(0))
    with pytest.raises(ValueError, match="allowed: auto, numpy, numba, reference"):
        training.train_epoch(A, targets, bank, [0], MachineClock(CDS_1960.clock,
                             CDS_1960.motors), np.random.default_rng(0))


def python(code: str, switch: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with ``MARK1_KERNELS=switch``."""
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          env={**os.environ, fast.ENV: switch}, text=True, timeout=120)


@pytest.mark.parametrize("switch", ["numpy", "reference"])
def test_the_numpy_and_reference_switches_never_load_numba(switch):
    out = python("import sys, numpy as np\n"
                 "from mark1.machine import MarkI\n"
                 "MarkI(preset='cds-1960', random_state=0, max_iter=1).fit("
                 "np.random.default_rng(0).random((20, 20, 20)), [0, 1] * 10)\n"
                 "import mark1.cli\n"
                 "print('numba' in sys.modules)\n", switch)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("switch,expect", [("numba", "error"), ("auto", "numpy"),
                                           ("numpy", "numpy")])
def test_without_numba_the_numpy_path_runs_or_one_clear_error_says_why(switch, expect,
                                                                       tmp_path):
    out = python("import sys\n"
                 "sys.modules['numba'] = None  # as if numba were not installed\n"
                 "import numpy as np\n"
                 "from mark1.machine import MarkI\n"
                 "m = MarkI(preset='ideal', random_state=0, max_iter=2)\n"
                 "m.fit(np.random.default_rng(0).random((30, 20, 20)), [0, 1, 2] * 10)\n"
                 "print('trained', m.mistakes_per_epoch_)\n", switch)
    env = {**os.environ, fast.ENV: switch}
    if expect == "error":
        assert out.returncode != 0
        last = out.stderr.strip().splitlines()[-1]
        assert "Mark1Error: MARK1_KERNELS=numba but numba cannot be imported" in last
        # the command line: one line, exit status 2
        cli = ("import sys\n"
               "sys.modules['numba'] = None\n"
               "from mark1.cli import main\n"
               "sys.exit(main(sys.argv[1:]))\n")
        out = subprocess.run(
            [sys.executable, "-c", cli, "simulate", "--task", "e-f", "--n-train", "20",
             "--n-test", "5", "--epochs", "1", "-q", "--out", str(tmp_path / "run")],
            cwd=ROOT, env={**env, "MPLBACKEND": "Agg"}, capture_output=True, text=True,
            timeout=300)
        assert out.returncode == 2, out.stderr
        assert out.stderr.count("\n") == 1
        assert "numba cannot be imported (ModuleNotFoundError" in out.stderr
        assert "pip install 'mark1-kit[fast]'" in out.stderr
        assert not (tmp_path / "run").exists()
    else:
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("trained")


def test_the_cli_reports_a_bad_switch_in_one_line(tmp_path, cli, monkeypatch):
    monkeypatch.setenv(fast.ENV, "turbo")
    out = cli("simulate", "--task", "e-f", "--preset", "ideal", "--n-train", "20", "--n-test",
              "5", "--epochs", "1", "-q", "--out", str(tmp_path / "run"))
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "allowed: auto, numpy, numba, reference" in out.stderr
    assert not (tmp_path / "run").exists()


def test_a_required_but_missing_numba_is_a_mark1_error(monkeypatch):
    monkeypatch.setenv(fast.ENV, "numba")
    monkeypatch.setattr(compiled, "_LOADED", [None])
    A, targets, orders = random_problem(1, n=20, n_units=1)
    bank = PotentiometerBank(IDEAL_POTS, (1, A.shape[1]), np.random.default_rng(0))
    with pytest.raises(Mark1Error, match="pip install 'mark1-kit\\[fast\\]'"):
        training.train_epoch(A, targets, bank, [0], MachineClock(CDS_1960.clock,
                             CDS_1960.motors), np.random.default_rng(0))


@needs_numba
def test_the_kernels_copies_of_the_python_constants_are_current():
    from mark1.fast import _numba_epochs

    assert _numba_epochs._CHUNK == PotentiometerBank.CHUNK
    assert _numba_epochs._PER_UNIFORM == DRAWS_PER_UNIFORM
    assert _numba_epochs._REPORT == REPORT_EVERY
    fields = {f.name for f in dataclasses.fields(PotentiometerBank(
        CDS_1960.pots, (1, 1), np.random.default_rng(0)).state)}
    assert set(_numba_epochs.POT_FIELDS) <= fields
