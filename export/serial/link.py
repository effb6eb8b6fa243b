"""One open port to a device: framing, sequence numbers, requests and replies.

Any pyserial URL works (``/dev/ttyUSB0``, ``/dev/pts/N``, ``socket://HOST:PORT``, ``loop://``).
A request that gets no reply is sent again after the line time of what is in flight plus
:attr:`~export.serial.settings.LinkSettings.timeout_s` (requests are idempotent);
``retries`` of those in a row, or an I/O error, raise :class:`~export.serial.errors.LinkDown`.
"""

from __future__ import annotations

import os
import select
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
import serial

from export.contract import protocol as P
from export.serial.errors import (
    DeviceBusy,
    LinkDown,
    NoDevice,
    VersionMismatch,
    expect,
    unless_busy,
)
from export.serial.settings import DEFAULT_SETTINGS, LinkSettings
from export.serial.trace import FrameTrace

URL_SCHEMES = ("socket", "rfc2217", "loop")
"""pyserial URL schemes the kit opens, besides plain device paths."""


def check_port(url: str) -> str:
    """``url`` if it names a port the kit can open: a device path (``/dev/ttyUSB0``,
    ``/dev/pts/N``), ``socket://HOST:PORT``, ``rfc2217://HOST:PORT`` or ``loop://``;
    otherwise ``ValueError`` saying what is wrong (before any port is opened)."""
    text = str(url).strip()
    allowed = ("a device path (/dev/ttyUSB0, /dev/pts/N), socket://HOST:PORT, "
               "rfc2217://HOST:PORT or loop://")
    if not text:
        raise ValueError(f"port {url!r} is empty; give {allowed}")
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text
    scheme = scheme.lower()
    if scheme == "loop":
        return text
    if scheme not in URL_SCHEMES:
        raise ValueError(f"port {text!r}: the scheme {scheme}:// is not one the kit opens; "
                         f"give {allowed}")
    host_port = rest.split("?", 1)[0].split("/", 1)[0]
    host, colon, port = host_port.rpartition(":")
    if not colon or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"port {text!r}: expected {scheme}://HOST:PORT with a port number "
                         "from 1 to 65535")
    return text


class Link:
    """One open port to a device: framing, sequence numbers, requests and replies."""

    def __init__(self, url: str, settings: LinkSettings = DEFAULT_SETTINGS, seq: int = 0,
                 trace: FrameTrace | None = None) -> None:
        self.url = url
        self.trace = trace
        """Where every frame sent and received is logged (``--trace``), or ``None``."""
        self.settings = settings
        self.seq = seq & 0xFFFF
        """Sequence number of the last request (a reopened link continues the count, so a
        late reply to the old connection cannot pass for a new one)."""
        self.bytes_out = 0
        """Wire bytes written since opening."""
        self.bytes_in = 0
        """Wire bytes read since opening."""
        self.decoder = P.FrameDecoder()
        self.frames: list[P.Frame] = []
        self.info: P.Info | None = None
        self._closed = False
        check_port(url)
        try:
            self.port = serial.serial_for_url(
                url, baudrate=settings.baud, timeout=0, write_timeout=5.0,
                exclusive=settings.exclusive,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            if "exclusively lock" in str(exc):  # another host holds it, as a TCP device's BUSY
                raise DeviceBusy(f"device on {url} is busy: the port is in use by another "
                                 "program (locked)") from exc
            errno = getattr(exc, "errno", None)
            why = os.strerror(errno) if isinstance(errno, int) else _first_line(exc)
            raise ValueError(f"cannot open port {url!r}: {why}") from exc
        try:
            self._fd: int | None = self.port.fileno()
        except (OSError, AttributeError, ValueError):
            self._fd = None  # loop:// and other ports without a file descriptor
        sock = getattr(self.port, "_socket", None)
        if sock is not None:  # socket://: send small frames at once (no Nagle delay)
            import socket

            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if trace is not None:
            trace.note(f"opened {url} at {settings.baud} baud")
        try:
            self.port.reset_input_buffer()
            self._write(P.DELIMITER)  # ends any partial frame the device holds
        except LinkDown as exc:
            self.close()
            raise ValueError(f"cannot use port {url!r}: {exc}") from exc

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.port.close()
        except (serial.SerialException, OSError):
            pass
        if self.trace is not None:
            self.trace.note(f"closed {self.url}: {self.bytes_out} bytes out, {self.bytes_in} in")

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ frames

    def _write(self, data: bytes) -> None:
        try:
            self.port.write(data)
        except (serial.SerialException, OSError) as exc:
            raise LinkDown(_failed("write", exc)) from exc
        self.bytes_out += len(data)

    def send(self, msg: P.Payload | P.Msg) -> int:
        """Send a request; returns its sequence number."""
        self.seq = (self.seq + 1) & 0xFFFF
        frame = P.Frame(int(msg), self.seq) if isinstance(msg, P.Msg) else msg.frame(self.seq)
        self._write(P.encode_frame(frame))
        if self.trace is not None:
            self.trace.frame("host", frame)
        return self.seq

    def recv(self, timeout: float) -> P.Frame | None:
        """The next reply frame, or ``None`` after ``timeout`` seconds without one."""
        deadline = time.monotonic() + timeout
        while not self.frames:
            if time.monotonic() >= deadline:
                return None
            try:
                data = self.port.read(65536)  # non-blocking: what has arrived
                if not data:
                    wait = min(deadline - time.monotonic(), 0.05)
                    if self._fd is not None:
                        select.select([self._fd], [], [], max(wait, 0.0))
                    else:
                        time.sleep(min(max(wait, 0.0), 0.002))
                    continue
            except (serial.SerialException, OSError) as exc:
                raise LinkDown(_failed("read", exc)) from exc
            self.bytes_in += len(data)
            errors = self.decoder.errors
            frames = self.decoder.feed(data)
            if self.trace is not None:
                if self.decoder.errors > errors:
                    self.trace.dropped(self.decoder.errors - errors, self.decoder.last_error)
                for frame in frames:
                    self.trace.frame("device", frame)
            self.frames += frames
        return self.frames.pop(0)

    def call(self, msg: P.Payload | P.Msg, timeout: float | None = None) -> P.Payload:
        """Send a request and return its reply, resending after silence (requests are
        idempotent); ``LinkDown`` after :attr:`LinkSettings.retries` resends."""
        timeout = timeout if timeout is not None else self.reply_timeout(1)
        for _ in range(self.settings.retries + 1):
            seq = self.send(msg)
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                frame = self.recv(left)
                if frame is not None and frame.seq == seq:
                    try:
                        return unless_busy(P.parse_reply(frame))
                    except P.ProtocolError:
                        break  # malformed reply: ask again
        raise LinkDown(f"no reply to {_name(msg)} after {self.settings.retries + 1} tries")

    def reply_timeout(self, frames_in_flight: int) -> float:
        """Silence after which requests are resent: line time of a full exchange plus slack."""
        max_frame = P.data_frame_len(self.info.max_payload if self.info else 1024)
        return self.settings.timeout_s + 2 * self.settings.line_time(
            max_frame * (frames_in_flight + 1)
        )

    def pipeline(self, requests: Sequence[P.Payload], window: int | None = None,
                 done: Callable[[int], None] | None = None) -> list[P.Payload]:
        """Send idempotent requests with up to ``window`` in flight; replies in request order.

        Replies to lost requests are asked for again after silence; ``LinkDown`` after
        :attr:`LinkSettings.retries` silences in a row.
        """
        window = window or self.settings.window
        replies: list[P.Payload | None] = [None] * len(requests)
        inflight: OrderedDict[int, int] = OrderedDict()  # seq -> request index
        todo = list(range(len(requests)))[::-1]
        stalls = finished = 0
        timeout = self.reply_timeout(window)
        while finished < len(requests):
            while todo and len(inflight) < window:
                i = todo.pop()
                inflight[self.send(requests[i])] = i
            frame = self.recv(timeout)
            if frame is None:
                stalls += 1
                if stalls > self.settings.retries:
                    raise LinkDown(f"no reply after {stalls} tries")
                todo += sorted(inflight.values(), reverse=True)
                inflight.clear()
                continue
            if frame.seq not in inflight:
                continue
            i = inflight.pop(frame.seq)
            try:
                replies[i] = unless_busy(P.parse_reply(frame))
            except P.ProtocolError:
                todo.append(i)
                continue
            stalls = 0
            finished += 1
            if done is not None:
                done(finished)
        return [r for r in replies if r is not None]

    # ------------------------------------------------------------------ requests

    def handshake(self, attempts: int | None = None) -> P.Info:
        """``HELLO`` until the device answers; checks the protocol version."""
        attempts = attempts if attempts is not None else self.settings.retries + 1
        timeout = self.settings.timeout_s + self.settings.line_time(200)
        for _ in range(attempts):
            seq = self.send(P.Hello())
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                frame = self.recv(left)
                if frame is None or frame.seq != seq:
                    continue
                try:
                    reply = P.parse_reply(frame)
                except P.ProtocolError:
                    continue
                if isinstance(reply, P.Nak) and reply.code == P.Err.BUSY:
                    raise DeviceBusy(f"device on {self.url} is busy: {reply.describe()}")
                if isinstance(reply, P.Info):
                    if reply.version != P.PROTOCOL_VERSION:
                        raise VersionMismatch(
                            f"device on {self.url} speaks protocol version {reply.version}; "
                            f"this host speaks {P.PROTOCOL_VERSION}"
                        )
                    self.info = reply
                    return reply
        if self.decoder.errors:  # something answers, but no reply survives the line
            raise NoDevice(
                f"no intact reply on {self.url} ({attempts} HELLO sent, {timeout:.2f} s each; "
                f"{self.decoder.errors} damaged frames came back: a noisy line or a wrong baud "
                "rate)"
            )
        raise NoDevice(
            f"no device answering on {self.url} ({attempts} HELLO sent, "
            f"{timeout:.2f} s each; is the device running and the baud rate right?)"
        )

    def status(self) -> P.Status:
        reply = self.call(P.Msg.STATUS)
        return expect(reply, P.Status, "STATUS")

    def read_active(self, size: int, done: Callable[[int], None] | None = None) -> bytes:
        """The active image (``size`` bytes), read in frame-sized pieces."""
        step = self.info.max_payload - P.ReadData.FIXED.size if self.info else 256
        reqs = [P.Read(P.ACTIVE_SLOT, o, min(step, size - o)) for o in range(0, size, step)]
        replies = self.pipeline(reqs, done=done)
        return b"".join(expect(r, P.ReadData, "READ").data for r in replies)

    def infer(self, x_q: np.ndarray, done: Callable[[int], None] | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
        """Run int8 inputs (n, n_inputs) on the device: int8 outputs (n, n_out), cycles (n,)."""
        x_q = np.ascontiguousarray(x_q, dtype=np.int8)
        replies = self.pipeline([P.Infer(row.tobytes()) for row in x_q], done=done)
        results = [expect(r, P.Result, "INFER") for r in replies]
        y = np.stack([np.frombuffer(r.data, dtype=np.int8) for r in results])
        return y, np.array([r.cycles for r in results], dtype=np.int64)


def _failed(what: str, exc: BaseException) -> str:
    """``"read failed: why"`` (pyserial's own text may already start so)."""
    text = _first_line(exc)
    return text if text.startswith(f"{what} failed") else f"{what} failed: {text}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _name(msg: P.Payload | P.Msg) -> str:
    return msg.name if isinstance(msg, P.Msg) else msg.TYPE.name


def connect(url: str, settings: LinkSettings = DEFAULT_SETTINGS,
            trace: FrameTrace | None = None) -> Link:
    """Open ``url`` and shake hands (``NoDevice``, ``VersionMismatch``, ``DeviceBusy``)."""
    link = Link(url, settings, trace=trace)
    try:
        link.handshake()
    except BaseException:
        link.close()
        raise
    return link
