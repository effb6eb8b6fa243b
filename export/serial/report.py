"""What a push did: the figures of its summary, its JSON report and the push benchmark."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class PushReport:
    """What a push did (figures for the summary and the benchmark)."""

    url: str
    size: int
    """Image bytes."""
    crc32: int
    model_id: str
    slot: int = -1
    """Slot the model now runs from (0 = A, 1 = B)."""
    seconds: float = 0.0
    """Wall time from opening the port to the final status check (closing not included:
    pyserial waits 0.3 s after closing a ``socket://`` port)."""
    data_bytes_sent: int = 0
    """Image bytes sent in ``DATA`` frames, resends included."""
    wire_bytes_out: int = 0
    wire_bytes_in: int = 0
    resumed_from: list[int] = field(default_factory=list)
    """Offset each ``BEGIN`` resumed from (first entry > 0: an earlier upload was continued)."""
    timeouts: int = 0
    """Silences that made the host resend."""
    go_backs: int = 0
    """``NAK OFFSET`` replies (the device could track no more out-of-order ranges; everything
    from its offset was sent again)."""
    resends: int = 0
    """``DATA`` frames found lost from the replies to later ones and sent again by themselves."""
    reconnects: int = 0
    verified_bytes: int = 0
    """Bytes read back from flash and found equal to the file."""
    baud: int = 0
    device: str = ""

    @property
    def line_bound_s(self) -> float:
        """Time the image alone takes at the line rate (size x 10 / baud)."""
        return self.size * 10.0 / self.baud if self.baud else 0.0

    @property
    def efficiency(self) -> float:
        """Line-rate bound over actual push time (1.0 = the line never idles)."""
        return self.line_bound_s / self.seconds if self.seconds else 0.0

    @property
    def throughput(self) -> float:
        """Image bytes per second of push time."""
        return self.size / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items()}
        d.update(line_bound_s=self.line_bound_s, efficiency=self.efficiency,
                 throughput=self.throughput)
        return d
