"""Sets of byte offsets, as the resumable upload keeps them on both ends of the link.

The device records which bytes of an upload it has written (in order, and ahead of a lost frame);
the host records which bytes are lost, acknowledged ahead, to be read back again, or read back
and found equal. Each is a :class:`ByteRanges`: sorted half-open ranges ``[start, end)`` that
neither overlap nor touch (touching ranges are merged into one).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


class ByteRanges:
    """A set of byte offsets kept as sorted, disjoint, non-touching ranges ``[start, end)``."""

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._ranges: list[tuple[int, int]] = []
        self.update(ranges)

    # ------------------------------------------------------------------ reading

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(list(self._ranges))

    def __len__(self) -> int:
        """Number of ranges (not of bytes: that is :attr:`size`)."""
        return len(self._ranges)

    def __bool__(self) -> bool:
        return bool(self._ranges)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ByteRanges):
            return self._ranges == other._ranges
        return NotImplemented

    def __repr__(self) -> str:
        return f"ByteRanges({self._ranges!r})"

    @property
    def size(self) -> int:
        """Bytes in the set."""
        return sum(end - start for start, end in self._ranges)

    @property
    def first(self) -> tuple[int, int]:
        """The lowest range (``IndexError`` when the set is empty)."""
        return self._ranges[0]

    def run_end(self, start: int) -> int:
        """Where the run of bytes in the set from ``start`` on ends (``start`` if not in it)."""
        for a, b in self._ranges:
            if a <= start < b:
                return b
        return start

    def gaps(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of ``[start, end)`` not in the set, in order."""
        out, pos = [], start
        for a, b in self._ranges:
            if pos >= end or a >= end:
                break
            if a > pos:
                out.append((pos, a))
            pos = max(pos, b)
        if pos < end:
            out.append((pos, end))
        return out

    def copy(self) -> ByteRanges:
        twin = ByteRanges()
        twin._ranges = list(self._ranges)
        return twin

    # ------------------------------------------------------------------ changing

    def add(self, start: int, end: int) -> None:
        """Add ``[start, end)`` (nothing when it is empty)."""
        if start >= end:
            return
        merged: list[tuple[int, int]] = []
        for a, b in self._ranges:
            if b < start or a > end:  # apart: keep
                merged.append((a, b))
            else:  # overlapping or touching: absorb
                start, end = min(start, a), max(end, b)
        merged.append((start, end))
        self._ranges = sorted(merged)

    def update(self, ranges: Iterable[tuple[int, int]]) -> None:
        """Add every range of ``ranges``."""
        for start, end in ranges:
            self.add(start, end)

    def discard_below(self, offset: int) -> None:
        """Remove every byte before ``offset``."""
        kept = [(max(a, offset), b) for a, b in self._ranges if b > offset]
        self._ranges = kept

    def clear(self) -> None:
        self._ranges.clear()

    def pop_first(self) -> tuple[int, int]:
        """Remove and return the lowest range."""
        return self._ranges.pop(0)

    def take_first(self, most: int, limit: int | None = None) -> tuple[int, int]:
        """Remove and return the first ``most`` (> 0) bytes of the lowest range, none at or past
        ``limit`` (which lies past the range's start): ``(start, end)``, ``end - start <= most``."""
        start, stop = self._ranges[0]
        if most <= 0 or (limit is not None and limit <= start):
            raise ValueError(f"take_first({most}, {limit}) from a range starting at {start}: "
                             "takes at least one byte, before the limit")
        end = min(stop, start + most) if limit is None else min(stop, limit, start + most)
        if end >= stop:
            self._ranges.pop(0)
        else:
            self._ranges[0] = (end, stop)
        return start, end
