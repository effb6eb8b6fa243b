"""Faster paths of the training rules, each giving exactly the reference's results, and the
switch between them.

:mod:`mark1.training` defines the rules trial by trial (the reference). Two faster paths
compute the same thing:

* the numpy block path (:mod:`mark1.fast.blocks`): scores blocks of upcoming trials at once
  with float32 products and corrects at a block's first mistake; it needs nothing but numpy.
  On the benchmark's tasks it runs the first three passes 6-10 times as fast as the reference
  on exact pots and 1.2-3 times on the cds-1960 pots, and more as mistakes thin out (15 times
  over 20 passes of ``e-f``): it stays as the speed path where numba is not installed;
* the compiled passes (:mod:`mark1.fast.compiled`, :mod:`mark1.fast._numba_epochs`, numba):
  the reference's arithmetic trial by trial, compiled: 2-12 times the numpy block path's
  speed.

``MARK1_KERNELS`` (environment variable) decides, on every pass:

``auto`` (default)
    the compiled passes when numba can be imported, else the numpy block path;
``numba``
    the compiled passes; an error when numba is missing;
``numpy``
    the numpy block path;
``reference``
    neither: the reference, trial by trial (slow; the definition the others are tested
    against).

The compiled passes cover error correction, forced response and the ideal rule on physical
pots and on exact pots with whole-number sums; the numpy block path covers everything, and
takes the passes the compiled ones do not (exact pots with fractional steps or thresholds).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import numpy as np

from mark1.errors import Mark1Error
from mark1.fast import blocks, compiled
from mark1.fast.bookkeeping import EpochBook, EpochResult, Progress, whole_number_sums
from mark1.fast.rows import ARows
from mark1.motors import MachineClock
from mark1.potentiometers import PotentiometerBank

ENV = "MARK1_KERNELS"
"""The environment variable naming the path."""
MODES = ("auto", "numpy", "numba", "reference")
"""Its allowed values."""

__all__ = ["ENV", "MODES", "ARows", "EpochResult", "mode", "one_blas_thread", "train_epoch"]


def mode() -> str:
    """The path ``MARK1_KERNELS`` asks for (``auto`` when unset)."""
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"{ENV}={os.environ.get(ENV)!r} is not a training path; allowed: "
                         f"{', '.join(MODES)}")
    return value


def _compiled(wanted: str) -> ModuleType | None:
    """The compiled passes when the switch asks for them (``None``: the numpy block path)."""
    if wanted == "numpy":
        return None
    module = compiled.load()
    if module is None and wanted == "numba":
        why = f" ({compiled.WHY_NOT[0]})" if compiled.WHY_NOT else ""
        raise Mark1Error(f"{ENV}=numba but numba cannot be imported{why}; install it "
                         f"(pip install 'mark1-kit[fast]') or set {ENV}=auto")
    return module


def _rows(units: np.ndarray) -> slice | np.ndarray:
    """A slice when the trained R-units are consecutive (views instead of copies)."""
    if len(units) and np.array_equal(units, np.arange(units[0], units[0] + len(units))):
        return slice(int(units[0]), int(units[0]) + len(units))
    return units


def train_epoch(rows: ARows, targets: np.ndarray, bank: PotentiometerBank, units: np.ndarray,
                clock: MachineClock, rng: np.random.Generator | None, *, rule: str,
                noise: np.ndarray | None, r_theta: float, order: np.ndarray | None,
                progress: Progress | None, block: int | None = None) -> EpochResult | None:
    """:func:`mark1.training.train_epoch` (arguments checked there) on the path the switch
    asks for; ``None`` when it asks for the reference. ``block``: fixed block size of the
    numpy block path (1 scores trial by trial; adaptive when ``None``)."""
    wanted = mode()
    if wanted == "reference":
        return None
    nb = _compiled(wanted)
    units = np.asarray(units, dtype=np.int64)
    trained = _rows(units)
    book = EpochBook(rows, np.asarray(targets) > 0, order, progress, clock, rule != "ideal")
    forced = rule == "forced-response"
    if isinstance(trained, slice) and whole_number_sums(book, bank, trained, r_theta):
        if nb is not None:
            compiled.exact_epoch(nb, book, bank, trained, r_theta, forced)
        elif not forced:
            blocks.exact_epoch(book, bank, trained, r_theta, block)
        else:
            blocks.physical_epoch(book, bank, units, trained, targets, rng, rule, noise,
                                  r_theta, block)
    elif nb is not None and not bank.exact:
        assert rng is not None  # (physical pots: checked by mark1.training.train_epoch)
        compiled.physical_epoch(nb, book, bank, units, rng, forced, noise, r_theta)
    else:
        blocks.physical_epoch(book, bank, units, trained, targets, rng, rule, noise, r_theta,
                              block)
    return book.finish()


_THREADPOOLS: list[Any] = []  # the threadpoolctl controller, made once (finding the pools is slow)


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the small products of the numpy block path on one BLAS thread.

    Spread over busy cores, OpenBLAS makes products this small 10-50 times slower.
    """
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - installed with scikit-learn
        yield
        return
    if not _THREADPOOLS:
        _THREADPOOLS.append(ThreadpoolController())
    with _THREADPOOLS[0].limit(limits=1, user_api="blas"):
        yield
