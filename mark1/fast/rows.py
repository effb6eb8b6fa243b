"""A-unit rows prepared once for pass after pass: what the fast paths derive from them is kept."""

from __future__ import annotations

import numpy as np


class ARows:
    """The A-unit rows of a set of stimuli, prepared once for pass after pass.

    ``A``: (n, n_p) A-unit outputs, 0 or 1 (all-or-nothing units), with a trailing 1 for the
    bias line where there is one. Pass the same object to :func:`mark1.training.train_epoch`
    on every pass: what the fast paths derive from the rows (bit sets, active A-units) is
    computed once and kept here.
    """

    def __init__(self, A: np.ndarray) -> None:
        A = np.asarray(A)
        if A.ndim != 2:
            raise ValueError(f"A-unit rows must be a 2-d array (n, n_p); got shape {A.shape}")
        if A.dtype != bool:
            off = (A != 0) & (A != 1)
            if off.any():
                k, j = np.argwhere(off)[0]
                raise ValueError(f"A-unit rows must hold 0 or 1 (all-or-nothing A-units); got "
                                 f"{A[k, j].item()!r} in row {k}, column {j}")
        self.A = np.ascontiguousarray(A, dtype=np.float32)
        """The rows, float32 (n, n_p)."""
        self._bits: list[int] | None = None
        self._on = A if A.dtype == bool else None  # active entries, kept when given
        self._active: list[np.ndarray | None] = [None] * len(self.A)
        self._buffer: np.ndarray | None = None
        self._n_active: np.ndarray | None = None
        self._csr: tuple[np.ndarray, np.ndarray] | None = None
        self.last_mistakes = 0
        """Mistakes of the last pass over these rows (a scoring hint: after a pass with
        several, the next one is not scored all at once first)."""

    def __len__(self) -> int:
        return len(self.A)

    def bits(self) -> list[int]:
        """Each row as a Python int whose bit ``j`` is set when A-unit ``j`` is active."""
        if self._bits is None:
            on = self.A != 0 if self._on is None else self._on
            packed = np.packbits(on, axis=1, bitorder="little")
            width = packed.shape[1]
            raw = packed.tobytes()
            self._bits = [int.from_bytes(raw[k : k + width], "little")
                          for k in range(0, len(raw), width)]
        return self._bits

    @property
    def n_active(self) -> np.ndarray:
        """Active A-units of each row, int64 (n,)."""
        if self._n_active is None:
            self._n_active = np.count_nonzero(self.A, axis=1)
        return self._n_active

    def csr(self) -> tuple[np.ndarray, np.ndarray]:
        """Active A-units of every row, compressed: row ``k``'s are
        ``indices[indptr[k]:indptr[k + 1]]`` (ascending), int64."""
        if self._csr is None:
            on = self.A != 0 if self._on is None else self._on
            indptr = np.zeros(len(on) + 1, dtype=np.int64)
            np.cumsum(np.count_nonzero(on, axis=1), out=indptr[1:])
            indices = np.flatnonzero(on).astype(np.int64, copy=False)
            indices %= max(1, on.shape[1])
            self._csr = (indptr, indices)
        return self._csr

    def buffer(self, rows: int) -> np.ndarray:
        """Scratch space for at least ``rows`` rows, kept from pass to pass."""
        if self._buffer is None or len(self._buffer) < rows:
            self._buffer = np.empty((rows, self.A.shape[1]), dtype=np.float32)
        return self._buffer

    def active(self, k: int) -> np.ndarray:
        """Indices of the active A-units of row ``k`` (ascending)."""
        act = self._active[k]
        if act is None:
            act = self._active[k] = np.flatnonzero(self.A[k])
        return act
