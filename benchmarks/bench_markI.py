"""Speed of Mark I learning against scikit-learn's Perceptron, side by side in one run.

All three learners train on the same A-unit features (the ideal retina's static S-units through
one seeded plugboard of 512 A-units, plus the bias line) for the same number of passes, in
the same process:

* ``ideal``     -- error correction on exact weights (the textbook perceptron);
* ``cds-1960``  -- error correction on the Mark I's potentiometers: device spread, backlash,
                   end stops, wear, drift, stuck wipers, contact noise, with motors and clock;
* ``sklearn``   -- ``sklearn.linear_model.Perceptron`` (one-vs-rest, ``tol=None``);
* ``ideal (numba)``, ``cds-1960 (numba)`` -- the same two on the compiled epochs
  (``MARK1_KERNELS=numba``; the plain ones run on the numpy block path, ``MARK1_KERNELS=numpy``);
  left out when numba is not installed. Both paths give the reference's mistakes and weights.

Each learner's time includes preparing its input (scikit-learn validates and converts the
features; the Mark I prepares its rows, :class:`mark1.fast.ARows`, and builds its bank).
Everything runs on one BLAS thread (set before numpy loads): scikit-learn's Perceptron does not
use more, and an idle BLAS pool spinning on the second core slows whatever runs beside it.

First prints how long the compiled epochs take to be ready in a fresh process: compiled
(empty cache), then loaded from numba's cache. Then trials per second, the ratio to
scikit-learn (best of ``--repeat`` runs on as many seeds, learners interleaved), the share of
trials that were mistakes and the training accuracy (of the first run, seed 0: the same on both
paths). Learners whose runs take under half a second (scikit-learn, the compiled epochs) run
each seed three times, interleaved with the others: the shorter a run, the likelier a busy
spell of a shared machine covers all of its repeats. Then
the whole machine (``MarkI.fit``: retina, plugboard and all) for information.

Run: ``python benchmarks/bench_markI.py`` (``--quick`` for a short run).
"""

from __future__ import annotations

import os

# One BLAS thread for every learner, fixed before numpy loads: an OpenBLAS pool, even limited
# to one thread later, keeps a worker spinning on the other core and slows both learners.
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from contextlib import contextmanager  # noqa: E402

import numpy as np  # noqa: E402

from mark1 import fast  # noqa: E402
from mark1.fast import ARows, compiled, one_blas_thread  # noqa: E402
from mark1.machine import MarkI  # noqa: E402
from mark1.motors import MachineClock  # noqa: E402
from mark1.potentiometers import IDEAL_POTS, PotentiometerBank  # noqa: E402
from mark1.presets import get_preset  # noqa: E402
from mark1.r_units import decode, make_codebook, trained_units  # noqa: E402
from mark1.stimuli import make_task  # noqa: E402
from mark1.training import train_epoch  # noqa: E402

HAS_NUMBA = compiled.load() is not None
SHORT_S, SHORT_ROUNDS = 0.5, 3  # runs shorter than this are repeated so many times over
LEARNERS = ("sklearn", "ideal", "cds-1960") + (
    ("ideal (numba)", "cds-1960 (numba)") if HAS_NUMBA else ())

_FIRST_CALL = """
import time
import numpy as np
from mark1.fast import compiled
from mark1.machine import MarkI
x = np.random.default_rng(0).random((40, 20, 20))
t = time.perf_counter()
compiled.load()
out = [time.perf_counter() - t]
for preset in ("ideal", "cds-1960"):
    for _ in range(2):  # first fit (compile or load), then a second one
        t = time.perf_counter()
        MarkI(preset=preset, random_state=0, max_iter=1).fit(x, [0, 1] * 20)
        out.append(time.perf_counter() - t)
print(*out)
"""


def first_call_times() -> list[tuple[str, list[float]]]:
    """Seconds to import numba, then to train a tiny machine twice (ideal, then cds-1960) in
    a fresh process: with an empty numba cache (compiling), then with the cache it left."""
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, fast.ENV: "numba"}
        for label in ("compile", "cached"):
            out = subprocess.run([sys.executable, "-c", _FIRST_CALL], env=env, check=True,
                                 capture_output=True, text=True)
            rows.append((label, [float(v) for v in out.stdout.split()]))
    return rows


@contextmanager
def kernel_path(path: str):
    """Train on the ``numpy`` or the ``numba`` path."""
    old = os.environ.get(fast.ENV)
    os.environ[fast.ENV] = path
    try:
        yield
    finally:
        if old is None:
            del os.environ[fast.ENV]
        else:
            os.environ[fast.ENV] = old


def a_unit_features(X: np.ndarray, n_a: int, seed: int) -> np.ndarray:
    """A-unit outputs (float32, no bias line) of the ideal retina through a seeded plugboard."""
    m = MarkI(preset="ideal", n_a=n_a, random_state=seed, max_iter=1)
    m.fit(X[:2], [0, 1])
    s = m.retina_.respond_static(X.reshape(len(X), -1))
    return m.plugboard_.respond(s).astype(np.float32)


def train_machine(A: np.ndarray, y: np.ndarray, n_classes: int, preset: str, epochs: int,
                  seed: int) -> tuple[float, float, int]:
    """Error correction with the preset's pots: (seconds, training accuracy, mistakes)."""
    spec = get_preset(preset)
    rng = [np.random.default_rng([seed, k]) for k in range(4)]
    t0 = time.perf_counter()
    book = make_codebook(n_classes, 8)
    units = trained_units(book)
    rows = ARows(np.concatenate([A > 0, np.ones((len(A), 1), dtype=bool)], axis=1))
    bank = PotentiometerBank(IDEAL_POTS if preset == "ideal" else spec.pots,
                             (8, rows.A.shape[1]), rng[0])
    clock = MachineClock(spec.clock, spec.motors)
    targets = book[y][:, units]
    noisy = preset != "ideal" and spec.pots.read_noise > 0
    mistakes = 0
    with one_blas_thread():
        for _ in range(epochs):
            order = rng[1].permutation(len(A))
            noise = rng[2].standard_normal(targets.shape) if noisy else None
            log = train_epoch(rows, targets[order], bank, units, clock, rng[3], noise=noise,
                              rule="ideal" if preset == "ideal" else "error-correction",
                              order=order)
            mistakes += log.mistakes
    seconds = time.perf_counter() - t0
    accuracy = float((decode(book, rows.A @ bank.read(clock.t_s).T) == y).mean())
    return seconds, accuracy, mistakes


def train_sklearn(A: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> tuple[float, float,
                                                                                   int]:
    from sklearn.linear_model import Perceptron

    t0 = time.perf_counter()
    clf = Perceptron(max_iter=epochs, tol=None, shuffle=True, random_state=seed).fit(A, y)
    return time.perf_counter() - t0, float(clf.score(A, y)), -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20, help="passes over the training set")
    parser.add_argument("--repeat", type=int, default=5, help="runs per learner (best kept)")
    parser.add_argument("--n-a", type=int, default=512, help="A-units")
    parser.add_argument("--quick", action="store_true", help="two tasks, two repeats")
    parser.add_argument("--tasks", default="e-f:2000,digits:0,letters:1040,square-diamond:2000,"
                        "square-circle:2000", help="TASK:N_TRAIN,... (0: the task's default)")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.repeat = "e-f:2000,digits:0", 2
    warnings.filterwarnings("ignore")  # scikit-learn's convergence warnings
    with one_blas_thread():  # in case the BLAS was loaded before this module set its threads
        run(args)


def run(args: argparse.Namespace) -> None:
    if HAS_NUMBA:
        print("compiled epochs in a fresh process, seconds: import numba; a tiny ideal fit, "
              "first and second; a tiny cds-1960 fit, first and second")
        for label, times in first_call_times():
            print(f"  {label:8s} " + "  ".join(f"{v:6.2f}" for v in times))
        print()
    else:
        print("numba is not installed: the numpy path only\n")
    print(f"A-unit features, {args.n_a} A-units, {args.epochs} passes; best of {args.repeat} "
          f"seeds ({SHORT_ROUNDS} runs each for runs under {SHORT_S} s)")
    print(f"{'task':15s} {'n':>5s} {'classes':>7s} {'learner':16s} {'trials/s':>11s} "
          f"{'ratio':>6s} {'mistakes':>8s} {'train acc':>9s}")
    for item in args.tasks.split(","):
        name, _, n = item.partition(":")
        sizes = {"n_train": int(n), "n_test": 1} if int(n) else {}
        task = make_task(name, seed=0, **sizes)
        A = a_unit_features(task.X_train, args.n_a, seed=0)
        y = task.y_train
        trials = len(y) * args.epochs
        best = {learner: (np.inf, 0.0, 0) for learner in LEARNERS}
        for rep in range(args.repeat * SHORT_ROUNDS):
            seed = rep % args.repeat  # (later rounds rerun the same seeds)
            for learner in LEARNERS:
                if rep >= args.repeat and best[learner][0] > SHORT_S:
                    continue
                if learner == "sklearn":
                    res = train_sklearn(A, y, args.epochs, seed)
                else:
                    preset, _, fast = learner.partition(" ")
                    with kernel_path("numba" if fast else "numpy"):
                        res = train_machine(A, y, len(task.classes), preset, args.epochs, seed)
                if rep == 0:  # mistakes and accuracy: the first run's (seed 0, every learner)
                    best[learner] = res
                elif res[0] < best[learner][0]:
                    best[learner] = (res[0], *best[learner][1:])
        base = trials / best["sklearn"][0]
        for learner in LEARNERS:
            seconds, accuracy, mistakes = best[learner]
            rate = trials / seconds
            share = f"{mistakes / trials:8.1%}" if mistakes >= 0 else f"{'':8s}"
            print(f"{name:15s} {len(y):5d} {len(task.classes):7d} {learner:16s} {rate:11,.0f} "
                  f"{rate / base:6.2f} {share} {accuracy:9.3f}")
    print("\nthe whole machine (MarkI.fit: retina, plugboard, learning; stops when error-free):")
    task = make_task("e-f", seed=0, n_train=2000, n_test=1)
    for learner in LEARNERS[1:]:
        preset, _, fast = learner.partition(" ")
        m = MarkI(preset=preset, random_state=0, max_iter=args.epochs)
        with kernel_path("numba" if fast else "numpy"):
            t0 = time.perf_counter()
            m.fit(task.X_train, task.y_train)
            seconds = time.perf_counter() - t0
        n_trials = sum(m.history_["trials"])
        print(f"  e-f, 2000 images, {learner:16s} {n_trials / seconds:11,.0f} trials/s "
              f"({m.n_iter_} passes; the machine itself would need "
              f"{m.machine_time_s / 3600:.1f} h)")


if __name__ == "__main__":
    main()
