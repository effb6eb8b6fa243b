"""The codebook decision: a class from R-unit sums by the nearest codeword.

A class code gives each class a codeword in {-1, +1} over the R-units (``mark1.r_units`` makes
them). An R-unit responds +1 where its sum is above zero, else -1. The decision is the nearest
codeword: the classes whose codeword agrees with the most responses; among them the largest
``codebook[k] . r``; remaining ties go to the lowest ``k``.

One rule for the Mark I machine (float sums of its potentiometers) and for a package with a
codebook head (the device's int8 outputs minus their zero point: small whole numbers, whose
products and sums float64 holds exactly).
"""

from __future__ import annotations

import numpy as np


def responses(r: np.ndarray) -> np.ndarray:
    """R-unit outputs: +1 where the sum is above zero, else -1 (int8)."""
    return np.where(np.asarray(r) > 0, 1, -1).astype(np.int8)


def decode(codebook: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Class index for each row of R-unit sums ``r`` (n, n_r): the nearest codeword.

    Candidates agree with the most R-units; among them the largest ``codebook[k] . r`` wins;
    remaining ties go to the lowest ``k``.
    """
    book = np.asarray(codebook, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    agree = responses(r).astype(np.float64) @ book.T
    score = r @ book.T
    score = np.where(agree == agree.max(axis=1, keepdims=True), score, -np.inf)
    return np.argmax(score, axis=1)
