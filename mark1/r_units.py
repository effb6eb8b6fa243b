"""Response (R-) units, the class code over them, and decoding.

An R-unit sums its weighted A-unit inputs, ``r = weights @ a + r_bias``, and is on (+1) iff
``r > 0``, else off (-1). While the machine trains, the weights are the pots as read at that
moment, drifting and with contact noise (:func:`unit_sums`). Classes are codewords over the R-units:

* ``dichotomy`` (2 classes): one R-unit, on for the second class (Rosenblatt's single response);
* ``one-vs-rest`` (up to ``n_r`` classes): R-unit ``k`` is on for class ``k`` only;
* ``code`` (beyond ``n_r`` classes, up to ``2**n_r``): a binary code chosen greedily for the
  largest minimum Hamming distance, then balanced columns, so a wrong R-unit or two can still
  decode to the right class.

Decoding is the nearest codeword: the classes whose code agrees with the most R-units, then
among them the largest ``codebook[k] . r`` (continuous sums), then the lowest index. The rule
is :mod:`export.contract.codebook`'s, the one a weight package's codebook head follows too.
R-units whose column is the same in every codeword carry nothing and are not trained.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from export.contract.codebook import decode, responses
from mark1.limits import check_fields, limit

__all__ = ["CODES", "RUnitSpec", "class_scores", "decode", "make_codebook", "responses",
           "trained_units"]

CODES = ("auto", "dichotomy", "one-vs-rest", "code")
"""Names accepted for the class code."""


@dataclass(frozen=True)
class RUnitSpec:
    """The response units."""

    r_theta: float = field(default=0.0, metadata=limit(-1e6, 1e6, "R-unit sum units"))
    """Fixed threshold the weighted sum must exceed for the R-unit to turn on, R-unit sum units."""
    bias_unit: bool = True
    """An always-active line with its own pot into every R-unit (a learned threshold), flag."""

    def __post_init__(self) -> None:
        check_fields(self, "r_units: ")


def unit_sums(model: np.ndarray, units: np.ndarray, active: np.ndarray, t: float,
              noise: np.ndarray | None = None) -> np.ndarray:
    """The sums of the R-units ``units`` on a trial whose active A-units are ``active``, read
    at machine time ``t`` seconds: float64 (len(units),), before the threshold ``r_theta``.

    ``model`` is the pot bank's linear model (:attr:`mark1.potentiometers.PotentiometerBank.
    lin`: float32 (n_r, 3, n_p), the base, creep and read-noise variance of each pot);
    ``noise`` holds one standard normal draw per R-unit, or is ``None`` (no contact noise).
    Over an R-unit's pots on the active A-units::

        r = sum(base) + t * sum(creep) + sqrt(sum(variance)) * noise

    the weights as read at ``t`` (drift in closed form) plus the independent contact noise of
    those pots as one Gaussian. Each sum is taken in float64, pot by pot in ascending order: a
    fixed order, so that every training path can reproduce the same bits (this function is the
    definition they are tested against).
    """
    terms = model.take(units, axis=0).take(active, axis=2)  # (u, 3, n_active) float32
    if terms.shape[2]:  # one addition after the other, in float64
        sums = np.add.accumulate(terms, axis=2, dtype=np.float64)[:, :, -1]
    else:
        sums = np.zeros(terms.shape[:2])
    base, creep, variance = sums.T
    r = base + t * creep
    if noise is not None:
        r = r + np.sqrt(variance) * noise
    return r


def _greedy_code(n_classes: int, n_r: int) -> np.ndarray:
    """``n_classes`` codewords in {-1,+1}^n_r, greedily spread apart and column-balanced."""
    if n_r <= 16:
        words = np.arange(2**n_r)
    else:  # too many words to list: a fixed sample of them
        words = np.unique(np.random.default_rng(0).integers(0, 2**n_r, 8 * n_classes + 64))
    bits = np.where((words[:, None] >> np.arange(n_r)[::-1]) & 1, 1, -1).astype(np.int64)
    weight_gap = np.abs((bits > 0).sum(axis=1) - n_r / 2)
    chosen: list[int] = []
    dmin = np.full(len(words), n_r + 1)
    colsum = np.zeros(n_r, dtype=np.int64)
    available = np.ones(len(words), dtype=bool)
    for _ in range(n_classes):
        balance = np.abs(colsum + bits).sum(axis=1)
        # largest distance first, then balance, then weight near n_r/2, then lowest word
        key = np.lexsort((np.arange(len(words)), weight_gap, balance, -np.where(available, dmin,
                                                                                -1)))
        pick = int(key[0])
        chosen.append(pick)
        available[pick] = False
        colsum += bits[pick]
        dmin = np.minimum(dmin, (n_r - bits @ bits[pick]) // 2)
    return bits[chosen].astype(np.int8)


def make_codebook(n_classes: int, n_r: int, code: str = "auto") -> np.ndarray:
    """The class code: int8 (n_classes, n_r) in {-1, +1}.

    Raises ``ValueError`` when the R-units cannot tell that many classes apart.
    """
    if code not in CODES:
        raise ValueError(f"unknown code {code!r}; allowed: {', '.join(CODES)}")
    if n_classes < 2:
        raise ValueError(f"need samples of at least 2 classes to learn; got {n_classes}")
    if n_r < 1:
        raise ValueError(f"n_r must be at least 1; got {n_r}")
    if n_r < 63 and n_classes > 2**n_r:
        need = int(np.ceil(np.log2(n_classes)))
        raise ValueError(
            f"{n_classes} classes is too many for {n_r} R-units: they have at most "
            f"{2**n_r} codewords; use n_r >= {need}"
        )
    if code == "auto":
        code = "dichotomy" if n_classes == 2 else "one-vs-rest" if n_classes <= n_r else "code"
    book = -np.ones((n_classes, n_r), dtype=np.int8)
    if code == "dichotomy":
        if n_classes != 2:
            raise ValueError(f"code 'dichotomy' is for 2 classes; got {n_classes}")
        book[1, 0] = 1
    elif code == "one-vs-rest":
        if n_classes > n_r:
            raise ValueError(
                f"code 'one-vs-rest' needs one R-unit per class: {n_classes} classes, "
                f"{n_r} R-units; use code='code' or n_r >= {n_classes}"
            )
        book[np.arange(n_classes), np.arange(n_classes)] = 1
    else:
        book = _greedy_code(n_classes, n_r)
    return book


def trained_units(codebook: np.ndarray) -> np.ndarray:
    """Indices of the R-units whose codeword column is not constant (the ones that learn)."""
    book = np.asarray(codebook)
    return np.flatnonzero((book != book[:1]).any(axis=0))


def class_scores(codebook: np.ndarray, r: np.ndarray) -> np.ndarray:
    """A score per class whose argmax is :func:`decode`: agreement plus a bounded tie-breaker.

    ``agree_k + 0.9 * s / (1 + |s|)`` with ``s = codebook[k] . r``; agreements differ by at
    least 2, so the bounded term only orders classes that agree equally.
    """
    book = np.asarray(codebook, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    agree = responses(r).astype(np.float64) @ book.T
    s = r @ book.T
    return agree + 0.9 * s / (1.0 + np.abs(s))
