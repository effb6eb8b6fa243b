"""Serving a :class:`~firmware_sim.device.Device` on a pseudo-terminal or a TCP socket.

A pty pair from ``os.openpty()`` (slave in raw mode) is a real serial device: a host opens the
slave path (``/dev/pts/N``) with pyserial and the device reads and writes the master side. The
device keeps its own handle on the slave open, so hosts may close and reopen the port between
sessions. A TCP listener serves ``socket://HOST:PORT`` clients, one session at a time; a second
client gets a ``NAK BUSY`` to its first frame and is disconnected.

A TCP session ends as soon as its host closes the connection: what the host sent and the device
has not read yet is dropped with it (``POLLRDHUP`` tells of the close before those bytes are
read), so a host that sent a megabyte and left does not keep a paced device busy. A session
also ends when no byte has come from the host for ``idle_timeout_s`` (30 s by default; 0 =
never): a host that vanished without closing its TCP connection no longer keeps the device
from the next one, and on a pty (where nothing tells the device that a host has gone) the
replies nobody reads are dropped. A ``HELLO`` starts a new conversation: replies to earlier
requests that have not been sent yet are dropped, so none reaches the next host.

The part behind the port is either the simulator (:class:`~firmware_sim.device.Device`, which
answers each frame as it is handled) or a :class:`RemotePart`: a real firmware behind a byte
pipe (the C firmware's UART under QEMU), whose replies arrive in its own time and are passed on
as they come, with the same rules for sessions, ``HELLO`` and the paced line.

With :class:`LinkTiming` the link behaves like a UART: every byte takes ``10 / baud`` seconds in
each direction (8N1), both directions at once, and each reply starts ``turnaround_s`` after the
end of the request that caused it. Receiving, handling and sending run in separate threads so
that a slow reply never stops reception, as with a DMA receive buffer on a real part.
"""

from __future__ import annotations

import argparse
import errno
import os
import queue
import select
import socket
import sys
import threading
import time
import tty
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

from export.contract import protocol as P
from export.contract.protocol import MAX_BAUD, MIN_BAUD
from firmware_sim.device import Device
from firmware_sim.flash import PowerLoss
from mark1.limits import Limit, check_fields, limit

POLL_S = 0.05
"""How often blocked threads look at their stop flag, in seconds."""
LINE_BUFFER = 16 * 2**20
"""Bytes a session takes from its host ahead of the modelled line: more than a connection
holds in flight, so that a host's close is seen however much it sent just before."""
IDLE_TIMEOUT_S = 30.0
"""Default time without a byte in either direction after which a session ends, in seconds."""


IDLE_TIMEOUT = Limit(0.001, 86400, "s", special=(0,), meaning="never")
"""Allowed idle timeout: up to a day, or 0 for none."""


def check_idle_timeout(seconds: float) -> float:
    """``seconds`` as a float; ``ValueError`` unless within :data:`IDLE_TIMEOUT`."""
    return float(IDLE_TIMEOUT.check("idle timeout", seconds))


@dataclass(frozen=True)
class LinkTiming:
    """Pacing of the simulated serial line."""

    baud: int = field(default=0, metadata=limit(MIN_BAUD, MAX_BAUD, "bit/s", integer=True,
                                                special=(0,), meaning="unpaced"))
    """Line rate in bit/s; each byte takes 10 / baud seconds (8N1). 0 = as fast as possible."""
    turnaround_s: float = field(default=0.0, metadata=limit(0, 10, "s", open_hi=True))
    """Time from the last byte of a request to the first byte of its reply, in seconds."""
    quantum: int = field(default=32, metadata=limit(1, 4096, "bytes", integer=True))
    """Bytes moved at a time when paced (smaller is smoother and costs more wake-ups)."""

    def __post_init__(self) -> None:
        check_fields(self)

    def byte_time(self) -> float:
        """Seconds per byte on the line (0 when unpaced)."""
        return 10.0 / self.baud if self.baud else 0.0


# --------------------------------------------------------------------------- parts


class RemotePart(ABC):
    """A part that answers in its own time: bytes go to it as they arrive, and each reply frame
    is handed to the session that is attached when it comes back."""

    @abstractmethod
    def new_session(self) -> None:
        """A new host: make the part forget a partial frame of the previous one."""

    @abstractmethod
    def send(self, data: bytes) -> None:
        """Pass received bytes on to the part; raises :class:`~firmware_sim.flash.PowerLoss`
        once the part has stopped."""

    @abstractmethod
    def attach(self, deliver: Callable[[P.Frame], None] | None) -> None:
        """Hand every later reply frame to ``deliver`` (``None``: drop them)."""


Part = Device | RemotePart
"""What a server serves: the simulator, or a part behind a byte pipe."""


# --------------------------------------------------------------------------- channels


class Channel(ABC):
    """A non-blocking byte pipe to one host. ``recv`` returns ``b""`` when nothing came within
    ``timeout`` and raises ``EOFError`` when the host is gone."""

    handle: int | socket.socket
    """What ``select`` waits on."""

    @abstractmethod
    def _read(self, n: int) -> bytes:
        """Up to ``n`` bytes the host sent (raises ``BlockingIOError`` when none are ready)."""

    @abstractmethod
    def _write(self, data: memoryview) -> int:
        """Write some of ``data``; return how many bytes went."""

    def recv(self, max_bytes: int, timeout: float) -> bytes:
        ready, _, _ = select.select([self.handle], [], [], timeout)
        if not ready:
            return b""
        try:
            data = self._read(max_bytes)
        except BlockingIOError:
            return b""
        except OSError as exc:
            if exc.errno == errno.EIO:  # a pty with no slave open: nobody there yet
                time.sleep(timeout)
                return b""
            raise EOFError(str(exc)) from exc
        if not data:
            raise EOFError("closed by the host")
        return data

    def send(self, data: bytes, stop: threading.Event) -> None:
        """Write all of ``data``, waiting while the host's buffer is full, until ``stop``."""
        view = memoryview(data)
        while view and not stop.is_set():
            _, ready, _ = select.select([], [self.handle], [], POLL_S)
            if not ready:
                continue
            try:
                n = self._write(view)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise EOFError(str(exc)) from exc
            view = view[n:]

    def close(self) -> None:
        """Let the host go. A pty's descriptors belong to its server, so by default there is
        nothing to release."""
        return None

    def hung_up(self) -> bool:
        """True once the host has closed its end, even with bytes of it still unread. A pty
        never tells (its hosts come and go unseen), so by default False."""
        return False


class FdChannel(Channel):
    """The master side of a pty (the server owns and closes it)."""

    def __init__(self, fd: int) -> None:
        self.handle = self.fd = fd
        os.set_blocking(fd, False)

    def _read(self, n: int) -> bytes:
        return os.read(self.fd, n)

    def _write(self, data: memoryview) -> int:
        return os.write(self.fd, data)


class SocketChannel(Channel):
    """One accepted TCP connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.handle = self.sock = sock
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._poll = select.poll()
        self._poll.register(sock, getattr(select, "POLLRDHUP", 0) | select.POLLHUP
                            | select.POLLERR)

    def _read(self, n: int) -> bytes:
        return self.sock.recv(n)

    def _write(self, data: memoryview) -> int:
        return self.sock.send(data)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def hung_up(self) -> bool:
        """The peer closed the connection (``POLLRDHUP``), seen before its unread bytes are."""
        return bool(self._poll.poll(0))


# --------------------------------------------------------------------------- one session


def _sleep_until(t: float, stop: threading.Event) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        stop.wait(delay)


class Session:
    """One host connection: a receiver, the handler (the caller's thread) and a transmitter.

    :meth:`run` returns when the host disconnects (at once, its unread bytes dropped), ``stop``
    is set, or no byte has come from the host for ``idle_timeout_s`` (0 = never; :attr:`idle`
    is then True); it raises
    :class:`~firmware_sim.flash.PowerLoss` if the device lost power while handling a frame.
    """

    def __init__(self, device: Part, channel: Channel, timing: LinkTiming,
                 stop: threading.Event, idle_timeout_s: float = 0.0) -> None:
        self.device, self.channel, self.timing = device, channel, timing
        self.stop = threading.Event()
        self.outer_stop = stop
        self.idle_timeout_s = check_idle_timeout(idle_timeout_s)
        self.idle = False
        """True if the session ended because no byte came for ``idle_timeout_s``."""
        self.last_active = time.monotonic()
        """When the device last received a byte of this session (``time.monotonic()``)."""
        self.host_gone = threading.Event()
        """Set when the host closed its end: what it sent and the device has not read yet is
        dropped, and the session ends at once."""
        self.rx: queue.Queue[tuple[bytes, float] | None] = queue.Queue()
        self.tx_control: queue.Queue[bytes] = queue.Queue()
        self.tx_bulk: queue.Queue[bytes] = queue.Queue()
        self.tx_ready = threading.Semaphore(0)

    def _receiver(self) -> None:
        """Move bytes from the channel to the handler, at line rate when paced.

        What the host has sent is taken off the channel at once (up to :data:`LINE_BUFFER`
        bytes ahead of the line), so that a close behind it is seen at once: the session then
        ends and those bytes, never received by the device, go with it. The line clock runs on
        without gaps while bytes are waiting (the host's bytes were on the wire back to back)
        and restarts from now when the line was idle, so scheduling delays of this thread do not
        slow the modelled line down.
        """
        t_byte = self.timing.byte_time()
        quantum = self.timing.quantum if t_byte else 4096
        clock = 0.0
        pending = bytearray()
        pos = 0  # pending[pos:] is still to go down the line
        while not self.stop.is_set():
            try:
                while len(pending) - pos < LINE_BUFFER:
                    data = self.channel.recv(65536, 0.0)
                    if not data:
                        break
                    pending += data
                if self.channel.hung_up():
                    raise EOFError("closed by the host")
                if pos == len(pending):
                    pending, pos = bytearray(), 0
                    data = self.channel.recv(65536, POLL_S)
                    if not data:
                        continue
                    pending += data
                    clock = max(clock, time.monotonic())
            except (EOFError, OSError):
                self.host_gone.set()
                self.rx.put(None)
                return
            piece = bytes(pending[pos : pos + quantum])
            pos += len(piece)
            if pos > 65536 and pos * 2 > len(pending):
                del pending[:pos]
                pos = 0
            self.last_active = time.monotonic()
            if t_byte:
                clock += len(piece) * t_byte
                _sleep_until(clock, self.stop)
            else:
                clock = time.monotonic()
            self.rx.put((piece, clock))

    def _send(self, frame: P.Frame) -> None:
        """Queue a reply. Bulk replies (``READ_DATA``) yield to the short ones at frame
        boundaries, so that acknowledgements are not held up behind read-back data."""
        q = self.tx_bulk if frame.type == P.Msg.READ_DATA else self.tx_control
        q.put(P.encode_frame(frame))
        self.tx_ready.release()

    def _deliver(self, reply: P.Frame) -> None:
        """Queue a reply of the part; a ``HELLO``'s answer starts a new conversation."""
        if reply.type == P.Msg.INFO:
            self._drop_unsent()
        self._send(reply)

    def _next_reply(self, timeout: float) -> bytes | None:
        if not self.tx_ready.acquire(timeout=timeout):
            return None
        for q in (self.tx_control, self.tx_bulk):
            try:
                return q.get_nowait()
            except queue.Empty:
                pass
        return None  # dropped by a HELLO (see _drop_unsent)

    def _drop_unsent(self) -> None:
        """Forget the replies not sent yet: a ``HELLO`` starts a new conversation, and the host
        that asked for them may be gone (on a pty the next host cannot be told apart)."""
        for q in (self.tx_control, self.tx_bulk):
            while True:
                try:
                    q.get_nowait()
                except queue.Empty:
                    break

    def _transmitter(self) -> None:
        """Send queued replies, at line rate when paced (same clock rule as the receiver)."""
        t_byte = self.timing.byte_time()
        clock = 0.0
        while not self.stop.is_set():
            data = self._next_reply(0.0)
            if data is None:
                data = self._next_reply(POLL_S)
                if data is None:
                    continue
                clock = max(clock, time.monotonic())
            step = self.timing.quantum if t_byte else len(data)
            try:
                for i in range(0, len(data), step):
                    piece = data[i : i + step]
                    if t_byte:
                        clock += len(piece) * t_byte
                        _sleep_until(clock, self.stop)
                    self.channel.send(piece, self.stop)
            except (EOFError, OSError):
                return

    def run(self) -> None:
        self.device.new_session()
        remote = self.device if isinstance(self.device, RemotePart) else None
        if remote is not None:
            remote.attach(self._deliver)
        threads = [threading.Thread(target=f, daemon=True, name=f"device-{f.__name__}")
                   for f in (self._receiver, self._transmitter)]
        for t in threads:
            t.start()
        try:
            while not (self.stop.is_set() or self.outer_stop.is_set()):
                try:
                    item = self.rx.get(timeout=POLL_S)
                except queue.Empty:
                    quiet = time.monotonic() - self.last_active
                    if self.idle_timeout_s and quiet > self.idle_timeout_s:
                        self.idle = True
                        break
                    continue
                if item is None or self.host_gone.is_set():
                    break  # the host left: its unread bytes and unsent replies go with it
                data, arrived = item
                if isinstance(self.device, RemotePart):  # its replies come through _deliver
                    self.device.send(data)
                    continue
                replies = self.device.receive_frames(data)
                if replies and self.timing.turnaround_s:
                    _sleep_until(arrived + self.timing.turnaround_s, self.outer_stop)
                for reply in replies:
                    self._deliver(reply)
        finally:
            if remote is not None:
                remote.attach(None)
            self.stop.set()
            for t in threads:
                t.join()


# --------------------------------------------------------------------------- servers


class _Server(ABC):
    """Common start/stop for the two servers; use as a context manager."""

    def __init__(self, device: Part, timing: LinkTiming,
                 idle_timeout_s: float = IDLE_TIMEOUT_S) -> None:
        self.device = device
        self.timing = timing
        self.idle_timeout_s = check_idle_timeout(idle_timeout_s)
        """A session ends after this long without a byte either way, in seconds (0 = never)."""
        self.idle_ends = 0
        """Sessions ended by the idle timeout."""
        self.stop_event = threading.Event()
        self.power_lost = False
        """True once the device lost power (the server then stops serving)."""
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    url: str = ""

    @abstractmethod
    def _serve(self) -> None:
        """Accept hosts and serve their sessions until :attr:`stop_event` is set."""

    def _serve_session(self, channel: Channel) -> None:
        """Serve one session on ``channel`` until it ends."""
        session = Session(self.device, channel, self.timing, self.stop_event,
                          self.idle_timeout_s)
        session.run()
        self.idle_ends += session.idle

    def _run(self) -> None:
        try:
            self._serve()
        except PowerLoss:
            self.power_lost = True
            self._close()  # the part is off: its port goes away
        except BaseException as exc:  # noqa: BLE001 - reported by stop() and serve_forever()
            self.error = exc
            print(f"mark1 device: server stopped: {exc!r}", file=sys.stderr)
        finally:
            self.stop_event.set()

    def start(self) -> _Server:
        self._thread = threading.Thread(target=self._run, daemon=True, name="device-server")
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._close()

    @abstractmethod
    def _close(self) -> None:
        """Release the port or the listening socket."""

    def __enter__(self) -> _Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PtyServer(_Server):
    """Serve ``device`` on a new pty pair; hosts open :attr:`path` (also :attr:`url`)."""

    def __init__(self, device: Part, timing: LinkTiming = LinkTiming(),
                 idle_timeout_s: float = IDLE_TIMEOUT_S) -> None:
        super().__init__(device, timing, idle_timeout_s)
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        """The pty's slave device, e.g. ``/dev/pts/3``."""
        self.url = self.path

    def _serve(self) -> None:
        channel = FdChannel(self.master)
        while not self.stop_event.is_set():
            self._serve_session(channel)

    def _close(self) -> None:
        for fd in (self.master, self.slave):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.master = self.slave = -1


class TcpServer(_Server):
    """Serve ``device`` on a TCP listener (port 0 picks a free one); hosts open :attr:`url`."""

    def __init__(self, device: Part, host: str = "127.0.0.1", port: int = 0,
                 timing: LinkTiming = LinkTiming(), busy_timeout_s: float = 2.0,
                 idle_timeout_s: float = IDLE_TIMEOUT_S) -> None:
        super().__init__(device, timing, idle_timeout_s)
        self.listener = socket.create_server((host, port))
        self.listener.setblocking(False)
        self.host, self.port = self.listener.getsockname()[:2]
        self.url = f"socket://{self.host}:{self.port}"
        self.busy_timeout_s = busy_timeout_s
        self.sessions = 0
        """Sessions served so far."""
        self.refused = 0
        """Connections turned away because a session was running."""
        self._session: threading.Thread | None = None
        self._serving = threading.Event()
        """Set while a session runs (cleared before its connection closes)."""
        self._busy: list[threading.Thread] = []
        self._crash: BaseException | None = None

    @property
    def serving(self) -> bool:
        """True while a host's session runs."""
        return self._session is not None and self._session.is_alive()

    def _serve(self) -> None:
        while not self.stop_event.is_set():
            if self._crash is not None:
                raise self._crash
            ready, _, _ = select.select([self.listener], [], [], POLL_S)
            if not ready:
                continue
            try:
                conn, _ = self.listener.accept()
            except BlockingIOError:
                continue
            self._busy = [t for t in self._busy if t.is_alive()]
            if self._serving.is_set():
                self.refused += 1
                t = threading.Thread(target=self._refuse, args=(conn,), daemon=True,
                                     name="device-busy")
                self._busy.append(t)
                t.start()
                continue
            self.sessions += 1
            self._serving.set()
            self._session = threading.Thread(target=self._one_session, args=(conn,),
                                             daemon=True, name="device-session")
            self._session.start()
        self._join_children()
        if self._crash is not None:
            raise self._crash

    def _one_session(self, conn: socket.socket) -> None:
        channel = SocketChannel(conn)
        try:
            self._serve_session(channel)
        except BaseException as exc:  # noqa: BLE001 - handed to the accept loop
            self._crash = exc
            self.stop_event.set()
        finally:
            self._serving.clear()  # before the client sees the end: it may come back at once
            channel.close()

    def _refuse(self, conn: socket.socket) -> None:
        """Answer the first frame of an extra client with ``NAK BUSY``, then hang up."""
        channel = SocketChannel(conn)
        decoder = P.FrameDecoder()
        deadline = time.monotonic() + self.busy_timeout_s
        try:
            while time.monotonic() < deadline and not self.stop_event.is_set():
                frames = decoder.feed(channel.recv(4096, POLL_S))
                if frames:
                    f = frames[0]
                    nak = P.Nak(f.type, P.Err.BUSY, 0, 0,
                                "the device is serving another host; try again later")
                    channel.send(P.encode_frame(nak.frame(f.seq)), self.stop_event)
                    break
        except (EOFError, OSError):
            pass
        finally:
            channel.close()

    def _join_children(self) -> None:
        for t in [self._session, *self._busy]:
            if t is not None:
                t.join()

    def _close(self) -> None:
        self.listener.close()


def serve_forever(server: _Server) -> int:
    """Run ``server`` until SIGINT/SIGTERM or power loss; 0 on a clean stop."""
    import signal

    stop = server.stop_event
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    try:
        while not stop.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)
    if server.error is not None:
        return 1
    return 0


# --------------------------------------------------------------------------- options


def parse_listen(text: str) -> tuple[str, int]:
    """``"127.0.0.1:5555"`` -> (host, port); port 0 picks a free one."""
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"--listen {text!r}: expected HOST:PORT (port 0-65535)")
    return host, int(port)


def parse_idle(text: str) -> float:
    """``--idle-timeout``: seconds within :data:`IDLE_TIMEOUT` (0 = never)."""
    try:
        return float(IDLE_TIMEOUT.parse(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_cut(text: str) -> tuple[int, int]:
    """``--cut-after N[+K]`` -> (N, K): power is cut K bytes into flash operation N."""
    ops, _, keep = str(text).partition("+")
    if not ops.isdigit() or not (keep.isdigit() or keep == "") or ("+" in text and not keep):
        raise argparse.ArgumentTypeError(
            f"--cut-after {text!r}: OPERATIONS[+BYTES], whole numbers (e.g. 7 or 7+100)"
        )
    return int(ops), int(keep or 0)


POWER_CUT_EXIT = 3
"""Exit status of ``mark1 device`` when the power was cut (``--cut-after``)."""
