"""The compiled epochs (numba) give exactly the numpy path's results; the MARK1_KERNELS switch."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mark1 import kernels
from mark1.errors import Mark1Error
from mark1.machine import IDEAL_WEIGHTS, MarkI
from mark1.motors import MachineClock
from mark1.potentiometers import DRAWS_PER_UNIFORM, PotentiometerBank, PotSpec
from mark1.presets import CDS_1960, CDS_WORN
from mark1.stimuli import make_task
from mark1.training import ARows, one_blas_thread, train_epoch

ROOT = Path(__file__).resolve().parents[1]
HAS_NUMBA = kernels._load() is not None
needs_numba = pytest.mark.skipif(not HAS_NUMBA, reason="numba is not installed (the numpy "
                                 "path alone is tested)")


def bank_state(bank: PotentiometerBank) -> dict:
    """Everything a pass can change in a bank (the scratch rows excepted)."""
    state = {name: value for name, value in vars(bank).items()
             if name != "_scratch" and not callable(value)}
    state["_z_rng"] = bank._z_rng is not None  # (the generator itself: checked by the caller)
    return state


def assert_same(a: object, b: object, where: str = "") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        np.testing.assert_array_equal(a, b, err_msg=where, strict=True)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{k}]")
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} != {b!r}"


def machine_run(preset: str, task: str, n: int, epochs: int, seed: int,
                rule: str = "error-correction") -> dict:
    t = make_task(task, seed=0, n_train=n, n_test=1)
    calls: list[tuple] = []
    m = MarkI(preset=preset, rule=rule, random_state=seed, max_iter=epochs)
    m.fit(t.X_train, t.y_train, progress=lambda *args: calls.append(args))
    logs = [vars(log) for log in m.epoch_logs_]
    assert m.pots_._z_rng in (None, m._rng_steps)
    return {"logs": logs, "bank": bank_state(m.pots_), "clock": vars(m.clock_).copy(),
            "progress": calls, "history": m.history_,
            "rngs": [r.bit_generator.state for r in (m._rng_steps, m._rng_noise,
                                                     m._rng_order)]}


@needs_numba
@pytest.mark.parametrize("preset", ["ideal", "cds-1960", "cds-worn"])
@pytest.mark.parametrize("task,n,epochs", [("e-f", 300, 3), ("digits", 200, 2),
                                           ("letters", 156, 2)])
def test_machine_runs_are_identical_on_both_paths(preset, task, n, epochs, monkeypatch):
    runs = {}
    for path in ("numpy", "numba"):
        monkeypatch.setenv(kernels.ENV, path)
        runs[path] = machine_run(preset, task, n, epochs, seed=3)
    assert sum(log["mistakes"] for log in runs["numpy"]["logs"]) > 20
    assert_same(runs["numpy"], runs["numba"])


@needs_numba
@pytest.mark.parametrize("rule", ["ideal", "forced-response"])
def test_other_rules_are_identical_on_both_paths(rule, monkeypatch):
    """The ideal rule (exact pots, no motors) compiled; forced response stays on numpy."""
    runs = {}
    for path in ("numpy", "numba"):
        monkeypatch.setenv(kernels.ENV, path)
        runs[path] = machine_run("cds-1960", "digits", 150, 2, seed=1, rule=rule)
    assert_same(runs["numpy"], runs["numba"])


def random_problem(seed: int, n: int = 600, n_a: int = 60, n_units: int = 3):
    rng = np.random.default_rng(seed)
    A = rng.random((n, n_a + 1)) < 0.3
    A[:, -1] = True  # the bias line
    targets = np.where(rng.random((n, n_units)) < 0.4, 1, -1).astype(np.int8)
    orders = [rng.permutation(n) for _ in range(3)]
    return A, targets, orders


def epochs(A, targets, orders, spec, block, *, static=True, noise=True, spread=False,
           motors=CDS_1960.motors):
    """Three passes; everything they leave behind (``spread``: every other R-unit trained)."""
    rng = np.random.default_rng(0)
    rows = ARows(A)
    n_units = targets.shape[1]
    bank = PotentiometerBank(spec, (2 * n_units + 1, A.shape[1]), np.random.default_rng(9))
    clock = MachineClock(CDS_1960.clock, motors)
    units = np.arange(1, n_units + 1) * (2 if spread else 1)  # not starting at 0
    calls: list[tuple] = []
    logs = []
    with one_blas_thread():
        for e, order in enumerate(orders):
            draws = np.random.default_rng([1, e]).standard_normal(targets.shape) if noise else None
            logs.append(vars(train_epoch(
                rows if static else ARows(A[order]), targets[order], bank, units, clock, rng,
                noise=draws, order=order if static else None, block=block,
                progress=lambda *args: calls.append(args))))
    return {"logs": logs, "bank": bank_state(bank), "clock": vars(clock).copy(),
            "progress": calls, "rng": rng.bit_generator.state}


def both_paths(monkeypatch, *args, **kwargs) -> tuple[dict, dict]:
    out = []
    for path in ("numpy", "numba"):
        monkeypatch.setenv(kernels.ENV, path)
        out.append(epochs(*args, **kwargs))
    return out[0], out[1]


WORN_AND_DRIFTING = PotSpec(  # every part of the physics at work within a few hundred trials
    w_min=-1.0, w_max=1.0, init_sd=0.05, bound_sd=0.02, step=0.05, step_d2d=0.2, step_c2c=0.3,
    up_down=1.3, backlash_steps=1.5, wear_sweeps=5.0, drift_sd=400.0, stuck_fraction=0.05,
    read_noise=0.05)


@needs_numba
@pytest.mark.parametrize("n_units", [1, 3])
@pytest.mark.parametrize("block", [None, 1, 5])
@pytest.mark.parametrize("spec", [CDS_1960.pots, CDS_WORN.pots, WORN_AND_DRIFTING],
                         ids=["cds-1960", "cds-worn", "drifting"])
def test_physical_epochs_are_identical(spec, block, n_units, monkeypatch):
    A, targets, orders = random_problem(2, n_units=n_units)
    ref, fast = both_paths(monkeypatch, A, targets, orders, spec, block)
    assert sum(log["mistakes"] for log in ref["logs"]) > 50
    if spec is WORN_AND_DRIFTING:  # wipers reached their stops, and left them
        assert ref["bank"]["creep_changes"] > 100
    assert_same(ref, fast)


@needs_numba
def test_physical_epochs_of_several_steps_a_correction_are_identical(monkeypatch):
    """Step spread over three steps a correction (sqrt(3) scale), play, no wear, no drift."""
    spec = PotSpec(w_min=-1.0, w_max=1.0, step=0.05, step_c2c=0.4, up_down=1.2,
                   backlash_steps=1.0, read_noise=0.02)
    A, targets, orders = random_problem(5, n_units=2)
    motors = dataclasses.replace(CDS_1960.motors, steps_per_correction=3)
    ref, fast = both_paths(monkeypatch, A, targets, orders, spec, None, motors=motors)
    assert sum(log["mistakes"] for log in ref["logs"]) > 50
    assert ref["bank"]["_z_steps"] == 3
    assert_same(ref, fast)


@needs_numba
def test_physical_epochs_of_units_that_are_not_consecutive(monkeypatch):
    A, targets, orders = random_problem(3, n_units=3)
    ref, fast = both_paths(monkeypatch, A, targets, orders, WORN_AND_DRIFTING, None,
                           spread=True)
    assert_same(ref, fast)


@needs_numba
@pytest.mark.parametrize("n_units", [1, 3])
def test_blocks_the_bound_cannot_settle_are_scored_by_numpy(n_units, monkeypatch):
    """With the error bound widened, every block goes to the numpy path's own products."""
    A, targets, orders = random_problem(4, n_units=n_units)
    scored = []
    real = kernels._numpy_wrong
    monkeypatch.setattr(kernels, "_numpy_wrong", lambda *a: scored.append(a[4:6]) or real(*a))
    monkeypatch.setattr(kernels, "_WIDEN", 1e9)
    for static in (True, False):  # presented in order, or through an order (a window)
        scored.clear()
        ref, fast = both_paths(monkeypatch, A, targets, orders, WORN_AND_DRIFTING, None,
                               static=static)
        assert len(scored) > 100
        assert_same(ref, fast)


@needs_numba
def test_sums_whose_float32_rounding_decides_follow_the_numpy_path(monkeypatch):
    """R-unit sums a hair from zero (big weights cancelling, tiny ones left: float32 sums in
    different orders differ in sign): the compiled epoch takes the numpy path's decision."""
    spec = PotSpec(w_min=-4.0, w_max=4.0, step=0.5)  # physical pots, no noise, no drift
    n, n_p = 64, 40
    rng = np.random.default_rng(5)
    A = rng.random((n, n_p)) < 0.5
    A[:, :3] = True
    targets = np.where(rng.random((n, 1)) < 0.5, 1, -1).astype(np.int8)
    tiny = rng.standard_normal(n_p - 3).astype(np.float32) * np.float32(2.0**-27)
    results = []
    scored = []
    real = kernels._numpy_wrong
    monkeypatch.setattr(kernels, "_numpy_wrong", lambda *a: scored.append(1) or real(*a))
    for path in ("numpy", "numba"):
        monkeypatch.setenv(kernels.ENV, path)
        bank = PotentiometerBank(spec, (1, n_p), np.random.default_rng(0))
        bank.base[0] = np.concatenate([[3.0, -3.0, 0.0], tiny])  # float32 values, exactly
        bank.lin[0, 0] = bank.base[0]
        clock = MachineClock(CDS_1960.clock, CDS_1960.motors)
        log = train_epoch(ARows(A), targets, bank, [0], clock, np.random.default_rng(1),
                          block=1)
        results.append(({k: v for k, v in vars(log).items()}, bank_state(bank)))
    assert scored  # the bound could not settle some sums
    assert_same(results[0], results[1])


@needs_numba
@pytest.mark.parametrize("n_units", [1, 3])
def test_exact_epochs_are_identical_and_textbook(n_units, monkeypatch):
    A, targets, orders = random_problem(1, n_units=n_units)
    ref, fast = both_paths(monkeypatch, A, targets, orders, IDEAL_WEIGHTS, None, noise=False)
    assert sum(log["mistakes"] for log in ref["logs"]) > 100
    # progress comes at other trials on exact pots (every 512 trials here, at the numpy
    # path's block ends there): the same totals per pass
    for run in (ref, fast):
        calls = np.array(run.pop("progress"))
        ends = np.flatnonzero(np.cumsum(calls[:, 0]) % len(A) == 0)
        assert calls[:, 0].sum() == 3 * len(A)
        assert np.diff(np.concatenate([[0], np.cumsum(calls[:, 1])[ends]])).tolist() == [
            log["mistakes"] for log in run["logs"]]
    assert_same(ref, fast)
    W = np.zeros((n_units, A.shape[1]))
    for order in orders:  # the perceptron as printed
        for k in order:
            wrong = np.where(W @ A[k] > 0, 1, -1) != targets[k]
            W[wrong] += targets[k][wrong, None] * A[k]
    fast_base = fast["bank"]["_base"]
    np.testing.assert_array_equal(fast_base[1 : n_units + 1], W)


@needs_numba
def test_exact_pots_with_fractional_steps_take_the_numpy_path(monkeypatch):
    """Sums of fractional steps are not exact in float32: the compiled epoch declines."""
    monkeypatch.setenv(kernels.ENV, "numba")
    spec = PotSpec(w_min=float("-inf"), w_max=float("inf"), step=0.1)
    bank = PotentiometerBank(spec, (1, 5), np.random.default_rng(0))
    clock = MachineClock(CDS_1960.clock, CDS_1960.motors)
    A = np.ones((4, 5), dtype=bool)
    from mark1.training import _Epoch

    job = _Epoch(ARows(A), np.ones((4, 1), dtype=bool), None, None, clock, True)
    assert kernels.exact_epoch(job, bank, slice(0, 1), 0.0) is False
    assert kernels.exact_epoch(job, PotentiometerBank(IDEAL_WEIGHTS, (1, 5),
                                                      np.random.default_rng(0)),
                               slice(0, 1), 0.0) is True


def test_a_bad_switch_value_names_the_allowed_ones(monkeypatch):
    monkeypatch.setenv(kernels.ENV, "fast")
    with pytest.raises(ValueError, match="MARK1_KERNELS='fast'.*allowed: auto, numpy, numba"):
        kernels.mode()
    A, targets, orders = random_problem(1, n=20, n_units=1)
    with pytest.raises(ValueError, match="allowed: auto, numpy, numba"):
        epochs(A, targets, orders, IDEAL_WEIGHTS, None, noise=False)


def test_numpy_switch_never_loads_numba():
    code = ("import sys, numpy as np\n"
            "from mark1.machine import MarkI\n"
            "MarkI(preset='cds-1960', random_state=0, max_iter=1).fit("
            "np.random.default_rng(0).random((20, 20, 20)), [0, 1] * 10)\n"
            "import mark1.cli\n"
            "print('numba' in sys.modules)\n")
    env = {**os.environ, kernels.ENV: "numpy"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("switch,expect", [("numba", "error"), ("auto", "numpy"),
                                           ("numpy", "numpy")])
def test_without_numba(switch, expect, tmp_path):
    """numba made unimportable: the numpy path, or one clear error when numba is required."""
    code = ("import sys\n"
            "sys.modules['numba'] = None  # as if numba were not installed\n"
            "import numpy as np\n"
            "from mark1.machine import MarkI\n"
            "m = MarkI(preset='ideal', random_state=0, max_iter=2)\n"
            "m.fit(np.random.default_rng(0).random((30, 20, 20)), [0, 1, 2] * 10)\n"
            "print('trained', m.mistakes_per_epoch_)\n")
    env = {**os.environ, kernels.ENV: switch}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
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


def test_cli_reports_the_switch_errors_in_one_line(tmp_path, cli, monkeypatch):
    monkeypatch.setenv(kernels.ENV, "turbo")
    out = cli("simulate", "--task", "e-f", "--preset", "ideal", "--n-train", "20", "--n-test",
              "5", "--epochs", "1", "-q", "--out", str(tmp_path / "run"))
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "allowed: auto, numpy, numba" in out.stderr
    assert not (tmp_path / "run").exists()


def test_required_numba_error_is_a_mark1_error(monkeypatch):
    monkeypatch.setenv(kernels.ENV, "numba")
    monkeypatch.setattr(kernels, "_LOADED", [None])
    with pytest.raises(Mark1Error, match="pip install 'mark1-kit\\[fast\\]'"):
        kernels.compiled()


@needs_numba
def test_the_kernels_copies_of_the_numpy_paths_constants_are_current():
    from mark1 import _numba_epochs, training

    assert _numba_epochs._CHUNK == PotentiometerBank._CHUNK
    assert _numba_epochs._PER_UNIFORM == DRAWS_PER_UNIFORM
    assert (_numba_epochs._MIN_BLOCK, _numba_epochs._MAX_BLOCK) == (training._MIN_BLOCK,
                                                                    training._MAX_BLOCK)
    assert _numba_epochs._REPORT == training._REPORT_EVERY
