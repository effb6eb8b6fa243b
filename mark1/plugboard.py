"""The plugboard and the association (A-) units.

Each A-unit is wired by a seeded random plugboard to ``n_excitatory`` S-units (+1) and
``n_inhibitory`` S-units (-1), all distinct. It fires (all or nothing) when the sum of its
active inputs reaches its threshold: ``a = (plugboard @ s >= threshold)``.

``raw`` mode wires each S-unit straight to one A-position (identity plugboard, threshold 1):
the R-units then see the cells themselves, the single-layer perceptron of the XOR argument.
"""

from __future__ import annotations

import csv
import io
import json
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mark1.images import N_CELLS, RETINA_SHAPE
from mark1.limits import check_fields, limit


@dataclass(frozen=True)
class PlugboardSpec:
    """How the plugboard wires S-units to A-units, and the A-units' threshold."""

    n_excitatory: int = field(default=10, metadata=limit(0, N_CELLS, "wires", integer=True))
    """Excitatory (+1) S-unit connections per A-unit, wires."""
    n_inhibitory: int = field(default=10, metadata=limit(0, N_CELLS, "wires", integer=True))
    """Inhibitory (-1) S-unit connections per A-unit, wires."""
    a_theta: float = field(default=1.0, metadata=limit(-N_CELLS, N_CELLS, "inputs"))
    """A-unit threshold: fires when excitatory minus inhibitory active inputs reach it, inputs."""
    a_theta_spread: float = field(default=0.0, metadata=limit(0, N_CELLS, "inputs"))
    """Unit-to-unit spread of the threshold: half-width of a uniform offset, inputs."""

    def __post_init__(self) -> None:
        check_fields(self, "plugboard: ")
        if self.n_excitatory + self.n_inhibitory == 0:
            raise ValueError("plugboard: an A-unit needs at least one input wire")
        if self.n_excitatory + self.n_inhibitory > N_CELLS:
            raise ValueError(
                f"plugboard: {self.n_excitatory} + {self.n_inhibitory} wires per A-unit; the "
                f"retina has {N_CELLS} S-units and each is wired at most once"
            )


class Plugboard:
    """A wired plugboard: the (n_a, n_s) matrix of net connections and the A-unit thresholds."""

    def __init__(self, wiring: np.ndarray, threshold: np.ndarray, raw: bool = False) -> None:
        self.wiring = np.asarray(wiring, dtype=np.int8)
        """Net wiring count of each S-unit into each A-unit, int8 (n_a, n_s)."""
        self.threshold = np.asarray(threshold, dtype=np.float64)
        """A-unit thresholds, float64 (n_a,)."""
        self.raw = raw
        """True for the identity wiring of raw mode."""
        self._wiring_t = self.wiring.T.astype(np.float32)

    @classmethod
    def wire(cls, spec: PlugboardSpec, n_a: int, n_s: int, rng: np.random.Generator) -> Plugboard:
        """Wire ``n_a`` A-units at random (each input a distinct S-unit).

        Inside :func:`reusing_wirings`, a wiring already drawn from a generator in the same
        state is handed out again (read-only) and ``rng`` is left in the state the draws would
        have left it: the same plugboard, the same generator, without drawing.
        """
        memo = _ACTIVE_MEMO[-1] if _ACTIVE_MEMO else None
        if memo is None:
            return cls._draw(spec, n_a, n_s, rng)
        key = (spec, n_a, n_s, json.dumps(rng.bit_generator.state, sort_keys=True))
        hit = memo.get(key)
        if hit is None:
            board = cls._draw(spec, n_a, n_s, rng)
            board.wiring.flags.writeable = False
            board.threshold.flags.writeable = False
            memo.put(key, (board.wiring, board.threshold, rng.bit_generator.state))
            return board
        wiring, threshold, state = hit
        rng.bit_generator.state = state
        return cls(wiring, threshold)

    @classmethod
    def _draw(cls, spec: PlugboardSpec, n_a: int, n_s: int, rng: np.random.Generator) -> Plugboard:
        n_in = spec.n_excitatory + spec.n_inhibitory
        if n_in > n_s:
            raise ValueError(
                f"plugboard: {n_in} inputs per A-unit but only {n_s} S-units to wire from"
            )
        wiring = np.zeros((n_a, n_s), dtype=np.int8)
        signs = np.r_[np.ones(spec.n_excitatory), -np.ones(spec.n_inhibitory)].astype(np.int8)
        for a in range(n_a):
            wiring[a, rng.choice(n_s, size=n_in, replace=False)] = signs
        offset = rng.uniform(-spec.a_theta_spread, spec.a_theta_spread, n_a)
        return cls(wiring, spec.a_theta + offset)

    @classmethod
    def identity(cls, n_s: int) -> Plugboard:
        """Raw mode: each S-unit is its own A-position (fires iff the S-unit fires)."""
        return cls(np.eye(n_s, dtype=np.int8), np.ones(n_s), raw=True)

    @property
    def n_a(self) -> int:
        return int(self.wiring.shape[0])

    def respond(self, s: np.ndarray) -> np.ndarray:
        """A-unit outputs, bool (n, n_a), for S-unit outputs ``s`` (n, n_s)."""
        sums = np.asarray(s, dtype=np.float32) @ self._wiring_t  # integer sums, exact in float32
        return sums >= self.threshold

    def activity(self, s: np.ndarray) -> float:
        """Mean fraction of A-units active over the S-unit patterns ``s``."""
        return float(self.respond(s).mean())

    # ------------------------------------------------------------------ the table
    def rows(self) -> list[dict[str, object]]:
        """One record per A-unit: threshold and the (row, col) cells on each kind of wire."""
        return [
            {
                "a_unit": a,
                "threshold": float(self.threshold[a]),
                "excitatory": _cells(self.wiring[a], +1),
                "inhibitory": _cells(self.wiring[a], -1),
            }
            for a in range(self.n_a)
        ]

    def to_csv(self) -> str:
        """The plugboard table as CSV: a_unit, threshold, excitatory and inhibitory cells.

        Cells are written ``row:col`` (retina coordinates), space separated; ``x2`` marks a
        cell wired twice.
        """
        buf = io.StringIO()
        writer = csv.DictWriter(
            buf, fieldnames=["a_unit", "threshold", "excitatory", "inhibitory"], lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(self.rows())
        return buf.getvalue()

    def format_table(self, limit: int | None = 20) -> str:
        """A printable table of the first ``limit`` A-units (all when ``None``)."""
        rows = self.rows()[: limit if limit is not None else None]
        lines = [f"{'A':>4} {'theta':>6}  excitatory | inhibitory"]
        for r in rows:
            lines.append(
                f"{r['a_unit']:>4} {r['threshold']:>6.2f}  {r['excitatory']} | {r['inhibitory']}"
            )
        if limit is not None and self.n_a > limit:
            lines.append(f"... {self.n_a - limit} more A-units")
        return "\n".join(lines)


_Wiring = tuple[np.ndarray, np.ndarray, Mapping[str, Any]]  # wiring, thresholds, state after


class WiringMemo:
    """The last ``size`` wirings drawn, by spec, size and generator state (see
    :func:`reusing_wirings`)."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._items: OrderedDict[object, _Wiring] = OrderedDict()

    def get(self, key: object) -> _Wiring | None:
        hit = self._items.get(key)
        if hit is not None:
            self._items.move_to_end(key)
        return hit

    def put(self, key: object, value: _Wiring) -> None:
        self._items[key] = value
        while len(self._items) > self.size:
            self._items.popitem(last=False)


_ACTIVE_MEMO: list[WiringMemo] = []


@contextmanager
def reusing_wirings(memo: WiringMemo) -> Iterator[WiringMemo]:
    """Within this block :meth:`Plugboard.wire` reuses the wirings kept in ``memo``.

    A wiring is a function of the spec, the size and the generator's state, so reusing it is
    exact: machines built with the same seed and plugboard (a sweep over pot parameters, say)
    get the same wiring they would have drawn, at no cost.
    """
    _ACTIVE_MEMO.append(memo)
    try:
        yield memo
    finally:
        _ACTIVE_MEMO.pop()


def _cells(row: np.ndarray, sign: int) -> str:
    """The cells wired to one A-unit with ``sign``, as ``row:col`` (``x2``: wired twice)."""
    cols = RETINA_SHAPE[1]
    out = []
    for i in np.flatnonzero(np.sign(row) == sign):
        count = abs(int(row[i]))
        out.append(f"{i // cols}:{i % cols}" + (f"x{count}" if count > 1 else ""))
    return " ".join(out)
