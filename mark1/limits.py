"""Allowed ranges of numeric parameters and options, each defined once beside its parameter.

A :class:`Limit` is the interval a number must lie in, with its unit and the special values
that mean something else (``inf``: no end stop; ``0``: never). It lives where the parameter is
defined: in the metadata of a dataclass field,

    step: float = field(default=0.02, metadata=limit(1e-9, 1e3, "R-unit sum units"))

or, for a function's parameters and a command's own options, in a table beside them. One
definition serves every reader: ``__post_init__`` (:func:`check_fields`), the command line
(:meth:`Limit.arg` checks an option while it is parsed, :meth:`Limit.describe` goes into
``--help``) and docs/RELIABILITY.md (its ranges table is generated from the same objects).

Ranges are finite and chosen so that nothing downstream overflows, divides by zero or asks for
more memory than a computer has: a value inside its range never yields a warning or a traceback.
Where a limit depends on several values together (the memory a run needs, the machine time it
spans) the module that owns them checks it as well; :func:`memory_budget` is the share of this
computer's memory such checks allow.

Only the standard library is imported, so every module, the CLI's registration included, can
use it.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Any

INF = float("inf")
"""Infinity, the special value of parameters that may be unbounded (no end stop, no wear)."""


def _num(value: float) -> str:
    """A bound as people write it: ``65536``, ``0.5``, ``1e6``, ``4294967295``, ``inf``."""
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    short = f"{value:g}".replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")
    if float(value).is_integer():
        whole = str(int(value))
        return short if float(short) == value and len(short) < len(whole) else whole
    return short


@dataclass(frozen=True)
class Limit:
    """The values a number may take: ``lo <= value <= hi`` (or ``<`` at an open end), a whole
    number if ``integer``, or one of ``special``."""

    lo: float
    """Least value allowed (or bound excluded, with ``open_lo``)."""
    hi: float
    """Greatest value allowed (or bound excluded, with ``open_hi``)."""
    unit: str = ""
    """Unit shown after the range."""
    integer: bool = False
    """Only whole numbers."""
    open_lo: bool = False
    """``lo`` itself is not allowed."""
    open_hi: bool = False
    """``hi`` itself is not allowed."""
    special: tuple[float, ...] = ()
    """Values allowed outside the range (``inf``, ``-inf``, ``0``)."""
    meaning: str = ""
    """What the special values mean, for the messages and the docs."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lo) and math.isfinite(self.hi) and self.lo <= self.hi):
            raise ValueError(f"a limit needs finite bounds lo <= hi; got [{self.lo}, {self.hi}]")

    def describe(self) -> str:
        """The range in words: ``whole numbers 1 to 65536 A-units``, ``(0, 60] s, or 0 (never)``."""
        if self.integer and not (self.open_lo or self.open_hi):
            text = f"whole numbers {int(self.lo)} to {int(self.hi)}"
        else:
            text = (("(" if self.open_lo else "[") + f"{_num(self.lo)}, {_num(self.hi)}"
                    + (")" if self.open_hi else "]"))
        if self.unit:
            text += f" {self.unit}"
        if self.special:
            text += ", or " + " or ".join(_num(v) for v in self.special)
            if self.meaning:
                text += f" ({self.meaning})"
        return text

    def allows(self, value: object) -> bool:
        """True if ``value`` is a number within the limit."""
        try:
            self.check("value", value)
        except (TypeError, ValueError):
            return False
        return True

    def check(self, name: str, value: object) -> Any:
        """``value`` unchanged if allowed; else ``TypeError``/``ValueError`` naming ``name``,
        the value and the range."""
        wanted = numbers.Integral if self.integer else numbers.Real
        if isinstance(value, bool) or not isinstance(value, wanted):
            kind = "whole number" if self.integer else "number"
            raise TypeError(f"{name} = {value!r} is not a {kind} (allowed: {self.describe()})")
        v = float(value)
        if math.isnan(v):
            raise ValueError(f"{name} = {value!r} is not a number (allowed: {self.describe()})")
        if v in self.special:
            return value
        inside = self.lo <= v <= self.hi and not (
            (self.open_lo and v == self.lo) or (self.open_hi and v == self.hi))
        if not inside:  # NaN is never inside
            raise ValueError(f"{name} = {value!r} is out of range (allowed: {self.describe()})")
        return value

    def parse(self, text: str) -> int | float:
        """``text`` (a command-line value) as a number within the limit; ``ValueError``
        saying what is allowed. An integer limit reads whole numbers (``1e3`` too)."""
        raw = str(text).strip()
        value: int | float
        try:
            value = int(raw) if self.integer else float(raw)
        except ValueError:
            try:
                value = float(raw)
            except ValueError:
                kind = "a whole number" if self.integer else "a number"
                raise ValueError(
                    f"{raw!r} is not {kind} (allowed: {self.describe()})") from None
            if self.integer and math.isfinite(value) and value.is_integer():
                value = int(value)
        if isinstance(value, float) and math.isnan(value):
            raise ValueError(f"{raw} is not a number (allowed: {self.describe()})")
        try:
            self.check("value", value)
        except (TypeError, ValueError):
            raise ValueError(f"{raw} is out of range (allowed: {self.describe()})") from None
        return value

    def scaled(self, factor: float, unit: str) -> Limit:
        """The same range in another unit (``factor`` of the new unit to one of this one):
        ``turnaround_s``'s limit as milliseconds for the ``--turnaround MS`` option."""
        return replace(self, lo=self.lo * factor, hi=self.hi * factor, unit=unit,
                       special=tuple(v * factor for v in self.special))

    def arg(self) -> Callable[[str], int | float]:
        """An argparse ``type=``: the option's value parsed and checked while the command line
        is read (so a bad value costs nothing), or a one-line argparse error."""
        import argparse

        def parse(text: str) -> int | float:
            try:
                return self.parse(text)
            except ValueError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None

        parse.__name__ = "number"
        return parse


def limit(lo: float, hi: float, unit: str = "", **options: Any) -> dict[str, Limit]:
    """Field metadata holding a :class:`Limit` (``field(default=..., metadata=limit(...))``)."""
    return {"limit": Limit(lo, hi, unit, **options)}


def field_limits(cls_or_obj: Any) -> dict[str, Limit]:
    """The limits of a dataclass's fields, by field name (fields without one left out)."""
    if not is_dataclass(cls_or_obj):
        raise TypeError(f"{cls_or_obj!r} is not a dataclass")
    return {f.name: f.metadata["limit"] for f in fields(cls_or_obj) if "limit" in f.metadata}


def limit_of(cls_or_obj: Any, name: str) -> Limit:
    """The limit of field ``name`` of a dataclass."""
    return field_limits(cls_or_obj)[name]


def check_fields(obj: Any, prefix: str = "") -> None:
    """``ValueError``/``TypeError`` for the first field of dataclass ``obj`` outside its limit
    (a field holding a tuple or list: each of its items)."""
    for name, lim in field_limits(obj).items():
        value = getattr(obj, name)
        if isinstance(value, (tuple, list)):
            for i, item in enumerate(value):
                lim.check(f"{prefix}{name}[{i}]", item)
        else:
            lim.check(prefix + name, value)


def check_table(table: Mapping[str, Limit], values: Mapping[str, object],
                names: Mapping[str, str] | None = None) -> None:
    """Check each of ``values`` against its limit in ``table`` (``None`` values are skipped:
    they mean a default). ``names`` gives the name to show for a key (an option's spelling)."""
    for key, value in values.items():
        if value is not None and key in table:
            table[key].check((names or {}).get(key, key), value)


def iter_limits(owner: Any) -> Iterator[tuple[str, Limit]]:
    """(name, limit) of a dataclass's fields or of a table."""
    if isinstance(owner, Mapping):
        yield from owner.items()
    else:
        yield from field_limits(owner).items()


SEED = Limit(0, 2**32 - 1, integer=True)
"""Seeds of tasks, machines and draws (a 32-bit number, as every seeded library takes)."""

MEMORY_SHARE = 0.5
"""Share of the computer's physical memory a run may plan to use (the rest is the system's,
and other programs')."""


def physical_memory() -> int:
    """Bytes of physical memory of this computer (8 GiB when the system does not say)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return 8 * 2**30


def memory_budget() -> int:
    """Bytes a run may plan to use: :data:`MEMORY_SHARE` of :func:`physical_memory`."""
    return int(MEMORY_SHARE * physical_memory())


def check_memory(what: str, needed: float, hint: str = "") -> None:
    """``ValueError`` if ``needed`` bytes exceed :func:`memory_budget`, naming ``what``."""
    budget = memory_budget()
    if needed > budget:
        raise ValueError(
            f"{what} would need about {needed / 2**30:,.1f} GiB of memory; this computer allows "
            f"a run {budget / 2**30:,.1f} GiB (half its memory){'; ' + hint if hint else ''}"
        )
