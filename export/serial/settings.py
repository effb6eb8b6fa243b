"""How the host drives the serial link: one dataclass whose defaults the CLI shows and uses.

Only the standard library is imported here, so ``mark1 push --help`` reads the defaults without
importing pyserial.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_CHUNK = 32
"""Smallest ``DATA``/``READ`` size the host adapts down to, in bytes."""


@dataclass(frozen=True)
class LinkSettings:
    """How the host drives the link."""

    baud: int = 115200
    """Line rate in bit/s: set on real ports, and used for timeouts and efficiency figures."""
    window: int = 4
    """``DATA`` frames in flight (1 = stop-and-wait)."""
    chunk: int = 0
    """Image bytes per ``DATA`` frame; 0 = as many as the device's frame takes."""
    timeout_s: float = 0.5
    """Silence tolerated beyond the line time of what is in flight before resending, in s."""
    retries: int = 5
    """Resends in a row without any reply before the link counts as lost."""
    reconnects: int = 3
    """Reopenings of the port after a lost link, each resuming the upload."""
    reconnect_delay_s: float = 0.2
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
        for name, lo in (("baud", 1), ("window", 1), ("chunk", 0), ("retries", 0),
                         ("reconnects", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} = {v!r}: must be a whole number >= {lo}")
        if not 0.0 < self.timeout_s <= 60.0:
            raise ValueError(f"timeout = {self.timeout_s!r} s: allowed (0, 60]")

    def line_time(self, n_bytes: int) -> float:
        """Seconds ``n_bytes`` take on the line at :attr:`baud` (8N1)."""
        return n_bytes * 10.0 / self.baud


DEFAULT_SETTINGS = LinkSettings()
"""The settings ``mark1 push`` and ``mark1 infer`` use unless told otherwise."""
