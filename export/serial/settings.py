"""How the host drives the serial link: one dataclass whose defaults the CLI shows and uses.

Only the standard library, the protocol's constants and the ranges' helper are imported here, so
``mark1 push --help`` reads the defaults and checks the options without importing pyserial.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from export.contract.protocol import MAX_BAUD, MIN_BAUD
from mark1.limits import check_fields, limit

MIN_CHUNK = 32
"""Smallest ``DATA``/``READ`` size the host adapts down to, in bytes."""


@dataclass(frozen=True)
class LinkSettings:
    """How the host drives the link."""

    baud: int = field(default=115200, metadata=limit(MIN_BAUD, MAX_BAUD, "bit/s", integer=True))
    """Line rate in bit/s: set on real ports, and used for timeouts and efficiency figures."""
    window: int = field(default=4, metadata=limit(1, 256, "frames", integer=True))
    """``DATA`` frames in flight (1 = stop-and-wait)."""
    chunk: int = field(default=0, metadata=limit(MIN_CHUNK, 0xFFFF, "bytes", integer=True,
                                                 special=(0,), meaning="as the device takes"))
    """Image bytes per ``DATA`` frame; 0 = as many as the device's frame takes."""
    timeout_s: float = field(default=0.5, metadata=limit(0, 60, "s", open_lo=True))
    """Silence tolerated beyond the line time of what is in flight before resending, in s."""
    retries: int = field(default=5, metadata=limit(0, 100, "resends", integer=True))
    """Resends in a row without any reply before the link counts as lost."""
    reconnects: int = field(default=3, metadata=limit(0, 100, "reopenings", integer=True))
    """Reopenings of the port after a lost link, each resuming the upload."""
    reconnect_delay_s: float = field(default=0.2, metadata=limit(0, 10, "s"))
    """Pause before reopening the port, in seconds (doubles each time)."""
    verify: bool = True
    """Read the image back from flash during the upload and compare it with the file."""
    adapt: bool = True
    """Halve the ``DATA``/``READ`` size after each lost frame (down to :data:`MIN_CHUNK` bytes)
    and double it again after ``2 * window`` frames in a row get through: on a noisy line
    short frames get through where long ones almost never do."""
    exclusive: bool = True
    """Lock a local port so that a second host cannot open it at the same time."""

    def __post_init__(self) -> None:
        check_fields(self)

    def line_time(self, n_bytes: int) -> float:
        """Seconds ``n_bytes`` take on the line at :attr:`baud` (8N1)."""
        return n_bytes * 10.0 / self.baud


DEFAULT_SETTINGS = LinkSettings()
"""The settings ``mark1 push`` and ``mark1 infer`` use unless told otherwise."""
