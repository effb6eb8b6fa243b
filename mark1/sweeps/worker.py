"""One run of a sweep, as a worker process (local or Dask) does it.

A run is the public API::

    task = make_task(config.task, seed=config.images_seed, n_train=..., n_test=...)
    model = MarkI(config.preset, rule=..., n_a=..., n_r=..., code=..., max_iter=config.epochs,
                  random_state=config.seed, machine=dict(config.machine)).fit(task.X_train,
                                                                             labels)

and ``score`` on the training and test images -- through ``MarkI._fit_images`` and
``_score_images``, which are ``fit`` and ``score`` without scikit-learn's checks of the input:
the images are ``make_task``'s own, and importing scikit-learn would add ~0.8 s to the start
of every sweep (tests/test_sweep.py checks the rows against ``fit`` and ``score``).

What a worker shares between runs is exact by construction: a task's images are a function
of its name, seed and sizes (kept, read-only, for the runs that need them again; local
workers are sent them by the sweep's process, a Dask worker makes its own), and a
plugboard is a function of its spec, size and generator state (:func:`mark1.plugboard.
reusing_wirings`). Products run on one BLAS thread: the worker processes are the parallelism.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from mark1.fast import one_blas_thread
from mark1.plugboard import WiringMemo, reusing_wirings
from mark1.sweeps.spec import RunConfig

RESULTS: dict[str, str] = {
    "train_accuracy": "accuracy on the training images after training (static path)",
    "test_accuracy": "accuracy on the test images",
    "passes": "passes over the training set made (fit stops after an error-free one)",
    "mistakes": "mistakes in training, all passes",
    "last_mistakes": "mistakes in the last pass",
    "machine_time_s": "time the physical machine would have run, s",
    "motor_steps": "motor steps taken, all motors",
    "wall_time_s": "this run's wall time in its worker (building, training, scoring), s",
}
"""What a run measures: the table's result columns."""

TaskKey = tuple[str, int, "int | None", "int | None"]

_TASKS: OrderedDict[TaskKey, Any] = OrderedDict()
_TASKS_KEPT = 8
_WIRINGS = WiringMemo(64)


def build_task(key: TaskKey) -> Any:
    """The task's images for ``RunConfig.task_key()``, arrays made read-only."""
    from mark1.stimuli import make_task

    name, seed, n_train, n_test = key
    return _read_only(make_task(name, seed=seed, n_train=n_train, n_test=n_test))


def _read_only(task: Any) -> Any:
    for arr in (task.X_train, task.y_train, task.X_test, task.y_test):
        arr.flags.writeable = False
    return task


def _task(key: TaskKey) -> Any:
    task = _TASKS.get(key)
    if task is None:
        _keep(key, build_task(key))
        task = _TASKS[key]
    _TASKS.move_to_end(key)
    return task


def _keep(key: TaskKey, task: Any) -> None:
    """Keep ``task``'s images, read-only, for the runs of ``key`` (the 8 last used)."""
    _TASKS[key] = _read_only(task)
    _TASKS.move_to_end(key)
    while len(_TASKS) > _TASKS_KEPT:
        _TASKS.popitem(last=False)


def run_one(config: RunConfig) -> dict[str, Any]:
    """Train and score the machine of ``config``; its measures (:data:`RESULTS`)."""
    from mark1.machine import MarkI

    started = time.perf_counter()
    task = _task(config.task_key())
    names = np.array(task.classes)
    y_train, y_test = names[task.y_train], names[task.y_test]
    model = MarkI(preset=config.preset, rule=config.rule, n_a=config.n_a, n_r=config.n_r,
                  code=config.code, max_iter=config.epochs, random_state=config.seed,
                  machine=dict(config.machine))
    model._fit_images(task.X_train, y_train)  # fit, without re-checking make_task's images
    return {
        "train_accuracy": model._score_images(task.X_train, y_train),
        "test_accuracy": model._score_images(task.X_test, y_test),
        "passes": int(model.n_iter_),
        "mistakes": int(sum(model.mistakes_per_epoch_)),
        "last_mistakes": int(model.mistakes_per_epoch_[-1]),
        "machine_time_s": float(model.machine_time_s),
        "motor_steps": int(model.motor_steps),
        "wall_time_s": time.perf_counter() - started,
        "n_train": task.n_train,
        "n_test": task.n_test,
    }


def run_chunk(configs: Iterable[RunConfig],
              images: Mapping[TaskKey, Any] | None = None) -> list[tuple[RunConfig, Any]]:
    """Run each config in turn; ``(config, measures)``, or ``(config, error text)`` when a run
    raises ``ValueError``/``TypeError`` (bad input the spec could not catch, e.g. more images
    than a data set has). Other exceptions propagate. ``images``: tasks' images the sweep's
    process made (``build_task``'s, for those keys), used instead of making them again."""
    from mark1.version import __version__

    for key, task in (images or {}).items():
        _keep(key, task)
    out: list[tuple[RunConfig, Any]] = []
    with reusing_wirings(_WIRINGS), one_blas_thread():
        for config in configs:
            try:
                result = run_one(config)
            except (ValueError, TypeError) as exc:
                out.append((config, f"{type(exc).__name__}: {str(exc).splitlines()[0]}"))
                continue
            result["kit"] = __version__
            out.append((config, result))
    return out


def warm_up() -> None:
    """Load what the first run of a process would: the compiled training epochs of both pot
    kinds (numba's cache), trained once on a few random images. Run by the fork server of
    local workers (:mod:`mark1.sweeps.forkserver_warmup`), so that every worker forked from it
    starts warm; their tasks' images come from the sweep's process, made while this runs.
    Anything that fails here fails again, and is reported, in the run that needs it."""
    try:
        from mark1.machine import MarkI

        _numba_without_scipy_linalg()
        rng = np.random.default_rng(0)
        images, labels = rng.random((4, 20, 20)), np.array([0, 1, 0, 1])
        with one_blas_thread():
            for preset in ("ideal", "cds-1960"):
                model = MarkI(preset=preset, n_a=8, max_iter=1, random_state=0)
                model._fit_images(images, labels)
                model._score_images(images[:1], labels[:1])
    except Exception:  # noqa: BLE001 - only a head start; the runs report real errors
        pass


def _numba_without_scipy_linalg() -> None:
    """Set up numba's CPU target without importing scipy.linalg (~0.25 s of a worker's start:
    as long as numba's own import).

    The first compiled function numba loads imports ``numba.np.arraymath``, which imports
    ``scipy.linalg.cython_blas`` only to decide how numba-compiled ``np.convolve`` and
    ``np.correlate`` run (every other BLAS use asks again when it is compiled). The epochs
    use neither, nor any BLAS: numba's own loops, so the machine code loaded from the cache is
    the same either way (tests/test_sweep.py checks the rows against runs in a fresh
    interpreter, and that a worker starts without scipy.linalg). Only a sweep's workers do
    this; a user's process keeps numba as it is, and scipy.linalg imports as usual after."""
    import sys

    if "numba.np.arraymath" in sys.modules or "scipy.linalg" in sys.modules:
        return
    sys.modules["scipy.linalg.cython_blas"] = None  # type: ignore[assignment] # import fails
    try:
        import numba.np.arraymath  # noqa: F401
    finally:
        del sys.modules["scipy.linalg.cython_blas"]


def local_worker_started() -> None:
    """Initializer of local worker processes. Ctrl-C is the sweep's to handle (it stops the
    workers), so a worker leaves quietly instead of printing a traceback; and a worker whose
    sweep is gone (killed, say) leaves at once rather than wait for work forever."""
    import multiprocessing
    import os
    import signal
    import threading

    signal.signal(signal.SIGINT, lambda *_: os._exit(130))
    sweep = multiprocessing.parent_process()
    if sweep is not None:
        def leave_with_the_sweep() -> None:
            sweep.join()
            os._exit(1)

        threading.Thread(target=leave_with_the_sweep, daemon=True).start()
