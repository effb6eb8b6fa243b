"""A lossy serial line: a TCP relay between a host and a device that damages what it carries.

:class:`LossyLink` listens on a local TCP port (hosts open its :attr:`~LossyLink.url`,
``socket://127.0.0.1:PORT``) and relays every connection to a device server
(:class:`firmware_sim.serve.TcpServer`, or ``mark1 device --listen``). In each direction it
applies the faults of a :class:`LineFaults`: inverted bits at a bit error rate, lost bytes,
bytes received twice, bursts of random bytes, stalls of the line, and cuts of the connection
(both sides closed, as when a cable is pulled; the host reconnects through the same relay).

Faults are drawn from a ``numpy.random.Generator`` per direction, seeded by the caller, as
distances to the next event in bits or bytes (geometric draws). The damage is therefore a
function of the position in the byte stream, not of how the operating system chunks the bytes:
the same bytes through a link with the same seed are damaged the same way.
"""

from __future__ import annotations

import select
import socket
import threading
from dataclasses import dataclass, field, fields

import numpy as np

POLL_S = 0.05
"""How often relay threads look at their stop flag, in seconds."""


@dataclass(frozen=True)
class LineFaults:
    """What the line does to the bytes it carries (in one direction)."""

    ber: float = 0.0
    """Bit error rate: probability that a data bit arrives inverted, per bit (8 per byte)."""
    drop: float = 0.0
    """Probability that a byte is lost, per byte."""
    duplicate: float = 0.0
    """Probability that a byte arrives twice, per byte."""
    garbage: float = 0.0
    """Probability that a burst of random bytes arrives before a byte, per byte."""
    garbage_max: int = 16
    """Longest burst of random bytes, in bytes (each burst is 1 to this many)."""
    stall: float = 0.0
    """Probability that the line stops before a byte, per byte."""
    stall_s: tuple[float, float] = (0.05, 0.5)
    """Shortest and longest stall, in seconds (uniform between)."""
    cut: float = 0.0
    """Probability that the connection is cut before a byte, per byte."""

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name in ("garbage_max", "stall_s"):
                continue
            p = getattr(self, f.name)
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
                raise ValueError(f"{f.name} = {p!r}: a probability in [0, 1)")
        if isinstance(self.garbage_max, bool) or not isinstance(self.garbage_max, int) or \
                self.garbage_max < 1:
            raise ValueError(f"garbage_max = {self.garbage_max!r}: a whole number >= 1")
        lo, hi = self.stall_s
        if not 0.0 <= lo <= hi <= 60.0:
            raise ValueError(f"stall_s = {self.stall_s!r}: 0 <= shortest <= longest <= 60 s")

    @property
    def clean(self) -> bool:
        """True if this line never damages anything."""
        return not (self.ber or self.drop or self.duplicate or self.garbage or self.stall
                    or self.cut)


CLEAN = LineFaults()
"""A perfect line."""
NOISY = LineFaults(ber=1e-4)
"""Bit errors only, at 1e-4 (a frame of 500 bytes is hit one time in three)."""
VERY_NOISY = LineFaults(ber=1e-3)
"""Bit errors only, at 1e-3 (a frame of 500 bytes is almost always hit)."""
ROUGH = LineFaults(ber=1e-5, drop=2e-5, duplicate=2e-5, garbage=2e-5, stall=5e-6, cut=5e-6)
"""Every kind of fault, each rare."""


@dataclass
class FaultCounts:
    """What a direction of the line did so far."""

    bytes_in: int = 0
    """Bytes that entered the line."""
    bytes_out: int = 0
    """Bytes delivered (after drops, duplicates and garbage)."""
    bit_flips: int = 0
    dropped: int = 0
    duplicated: int = 0
    garbage_bytes: int = 0
    stalls: int = 0
    stall_s: float = 0.0
    """Total stall time, in seconds."""
    cuts: int = 0


_EVENTS = ("drop", "duplicate", "garbage", "stall", "cut")


class FaultyStream:
    """The faults of one direction: turns what was sent into what arrives.

    :meth:`apply` returns the arriving bytes as pieces, each with a stall (seconds to wait
    before delivering it), and whether the connection is cut after them.
    """

    def __init__(self, faults: LineFaults, rng: np.random.Generator) -> None:
        self.faults = faults
        # one generator per kind of draw, each used in stream order: the damage does not
        # depend on how the stream is cut into chunks
        self._rng = dict(zip(("ber", *_EVENTS, "garbage bytes", "stall time"), rng.spawn(8)))
        self.counts = FaultCounts()
        self.pos = 0
        """Bytes that entered so far (the stream position)."""
        self._next_bit = self._gap("ber")
        self._next = {name: self._gap(name) - 1 for name in _EVENTS}

    def _gap(self, name: str) -> int:
        """Trials to the next event of kind ``name`` (huge when its probability is 0)."""
        p = getattr(self.faults, name)
        return int(self._rng[name].geometric(p)) if p > 0 else 1 << 62

    def apply(self, data: bytes) -> tuple[list[tuple[bytes, float]], bool]:
        """(pieces, cut): ``pieces`` are (bytes, stall before them in seconds)."""
        buf = bytearray(data)
        start, end = self.pos, self.pos + len(buf)
        bit = self._next_bit
        while bit <= end * 8:  # bits are numbered from 1 over the whole stream
            i = (bit - 1) // 8 - start
            buf[i] ^= 1 << ((bit - 1) % 8)
            self.counts.bit_flips += 1
            bit += self._gap("ber")
        self._next_bit = bit
        events: list[tuple[int, str]] = []
        for name in _EVENTS:
            at = self._next[name]
            while at < end:
                events.append((at, name))
                at += self._gap(name)
            self._next[name] = at
        events.sort(key=lambda e: (e[0], _EVENTS.index(e[1])))
        pieces: list[tuple[bytes, float]] = []
        out = bytearray()
        stall = 0.0
        cursor = start
        cut = False
        for at, name in events:
            out += buf[cursor - start : at - start]
            cursor = at
            if name == "cut":
                cut = True
                self.counts.cuts += 1
                break
            if name == "stall":
                pieces.append((bytes(out), stall))
                out = bytearray()
                lo, hi = self.faults.stall_s
                stall = float(self._rng["stall time"].uniform(lo, hi))
                self.counts.stalls += 1
                self.counts.stall_s += stall
            elif name == "garbage":
                rng = self._rng["garbage bytes"]
                n = int(rng.integers(1, self.faults.garbage_max + 1))
                out += rng.integers(0, 256, n, dtype=np.uint8).tobytes()
                self.counts.garbage_bytes += n
            elif name == "drop" and cursor < end:
                cursor += 1
                self.counts.dropped += 1
            elif name == "duplicate" and cursor < end:
                out.append(buf[cursor - start])
                self.counts.duplicated += 1
        if not cut:
            out += buf[cursor - start :]
            cursor = end
        pieces.append((bytes(out), stall))
        self.pos = end if not cut else cursor
        self.counts.bytes_in += self.pos - start
        self.counts.bytes_out += sum(len(p) for p, _ in pieces)
        return [(p, s) for p, s in pieces if p or s], cut


@dataclass
class _Connection:
    host: socket.socket
    device: socket.socket
    closed: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        self.closed.set()
        for s in (self.host, self.device):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


class LossyLink:
    """A faulty TCP relay to the device at ``target`` (host, port); hosts open :attr:`url`.

    ``to_device`` and ``to_host`` are the faults of each direction (``to_host`` defaults to
    ``to_device``); ``seed`` seeds both (each direction draws from its own stream).
    ``cut_after`` lists, for the first connections in turn, a number of host-to-device bytes
    after which that connection is cut (``None`` = not cut): a deterministic pulled cable on top
    of the random faults. :attr:`up` and :attr:`down` may be replaced, before :meth:`start`, by
    any object with the same ``apply`` method and ``counts`` attribute. Use as a context
    manager.
    """

    def __init__(
        self,
        target: tuple[str, int],
        to_device: LineFaults = CLEAN,
        to_host: LineFaults | None = None,
        *,
        seed: int = 0,
        cut_after: tuple[int | None, ...] = (),
    ) -> None:
        self.target = target
        up_rng, down_rng = np.random.default_rng(seed).spawn(2)
        self.up = FaultyStream(to_device, up_rng)
        """Host to device."""
        self.down = FaultyStream(to_device if to_host is None else to_host, down_rng)
        """Device to host."""
        self.cut_after = list(cut_after)
        self.connections = 0
        """Connections accepted so far."""
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.url = f"socket://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._conns: list[_Connection] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True, name="lossy-accept")

    # ------------------------------------------------------------------ life cycle

    def start(self) -> LossyLink:
        self._acceptor.start()
        return self

    def close(self) -> None:
        """Stop relaying; every connection is closed."""
        self._stop.set()
        if self._acceptor.is_alive():
            self._acceptor.join()
        for conn in self._conns:
            conn.close()
        for t in self._threads:
            t.join()
        self.listener.close()

    def __enter__(self) -> LossyLink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def cut(self) -> None:
        """Cut every open connection now (both sides closed)."""
        for conn in self._conns:
            conn.close()

    def counts(self) -> dict[str, FaultCounts]:
        """What each direction did so far: ``{"to_device": ..., "to_host": ...}``."""
        return {"to_device": self.up.counts, "to_host": self.down.counts}

    # ------------------------------------------------------------------ relaying

    def _accept(self) -> None:
        while not self._stop.is_set():
            if not select.select([self.listener], [], [], POLL_S)[0]:
                continue
            try:
                host, _ = self.listener.accept()
            except BlockingIOError:
                continue
            try:
                device = socket.create_connection(self.target, timeout=5.0)
            except OSError:
                host.close()  # no device behind the line: the host sees a closed port
                continue
            for s in (host, device):
                s.setblocking(True)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            limit = self.cut_after[self.connections] if self.connections < len(
                self.cut_after) else None
            self.connections += 1
            conn = _Connection(host, device)
            self._conns = [c for c in self._conns if not c.closed.is_set()] + [conn]
            self._threads = [t for t in self._threads if t.is_alive()]
            for src, dst, stream, lim in ((host, device, self.up, limit),
                                          (device, host, self.down, None)):
                t = threading.Thread(target=self._relay, args=(conn, src, dst, stream, lim),
                                     daemon=True, name="lossy-relay")
                t.start()
                self._threads.append(t)

    def _relay(self, conn: _Connection, src: socket.socket, dst: socket.socket,
               stream: FaultyStream, limit: int | None) -> None:
        passed = 0
        try:
            while not (self._stop.is_set() or conn.closed.is_set()):
                if not select.select([src], [], [], POLL_S)[0]:
                    continue
                data = src.recv(4096)
                if not data:
                    break
                cut = False
                if limit is not None and passed + len(data) >= limit:
                    data, cut = data[: limit - passed], True
                passed += len(data)
                with self._lock:  # one direction's draws at a time keep each stream in order
                    pieces, cut_now = stream.apply(data)
                for piece, stall in pieces:
                    if stall and conn.closed.wait(stall):
                        return
                    if piece:
                        dst.sendall(piece)
                if cut or cut_now:
                    break
        except OSError:
            pass
        finally:
            conn.close()
