"""The host side of the serial link: push a weight package to a device, read it back, infer.

Any pyserial URL works (``/dev/ttyUSB0``, ``/dev/pts/N``, ``socket://HOST:PORT``, ``loop://``).
The upload keeps ``window`` ``DATA`` frames in flight and, while it runs, reads back what the
device reports as written to flash and compares it with the file -- the line is full duplex, so
the read-back costs almost no time. ``DATA`` frames are selective repeat: the device takes them
also out of order and acknowledges each, in order, with the bytes it has received in order and
the bytes in flash; a frame whose acknowledgement is overtaken by a later one's was lost and is
sent again by itself. No progress (no new byte acknowledged or verified) for the line time of
what is in flight plus ``timeout_s`` resends what has no reply;
``retries`` of those in a row, or an I/O error, count as a lost link: the port is reopened and
``BEGIN`` -- naming the image by its SHA-256 -- resumes from the device's offset; once every byte
is in flash, the reopened link repeats ``COMMIT`` (which names the image too: the device
acknowledges it again if that image is already the active one) instead. Each lost frame
halves the ``DATA`` (or ``READ``) size, a run of frames that get through doubles it again, so a
noisy line is crossed in short frames and a clean one in full ones.

Failures raise :class:`~mark1.errors.Mark1Error` subclasses whose ``exit_code`` the CLI returns
(table in :data:`EXIT_CODES`).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import select
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import serial

from export import protocol as P
from export.cli_serial import EXIT_CODES  # noqa: F401 - the exit codes, re-exported here
from mark1.errors import Mark1Error


class NoDevice(Mark1Error):
    """Nothing answered HELLO on the port."""

    exit_code = 3


class VersionMismatch(Mark1Error):
    """The device speaks another protocol version."""

    exit_code = 4


class ModelTooLarge(Mark1Error):
    """The model does not fit the device's flash slot or RAM arena."""

    exit_code = 5


class VerifyFailed(Mark1Error):
    """What the device holds or computes differs from what it should."""

    exit_code = 6


class LinkLost(Mark1Error):
    """The link failed after all retries and reconnections."""

    exit_code = 7


class DeviceBusy(Mark1Error):
    """Another host holds the device's session."""

    exit_code = 8


class DeviceRefused(Mark1Error):
    """The device answered a request with a NAK not covered above."""

    exit_code = 9

    def __init__(self, message: str, nak: P.Nak | None = None) -> None:
        super().__init__(message)
        self.nak = nak


class _Down(LinkLost):
    """The link stopped working (I/O error or no reply after all retries); a push reconnects."""


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


# --------------------------------------------------------------------------- one connection


class Link:
    """One open port to a device: framing, sequence numbers, requests and replies."""

    def __init__(self, url: str, settings: LinkSettings = LinkSettings(), seq: int = 0) -> None:
        self.url = url
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
        try:
            self.port = serial.serial_for_url(
                url, baudrate=settings.baud, timeout=0, write_timeout=5.0,
                exclusive=settings.exclusive,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            if "exclusively lock" in str(exc):  # another host holds it, as a TCP device's BUSY
                raise DeviceBusy(f"device on {url} is busy: the port is in use by another "
                                 "program (locked)") from exc
            if isinstance(getattr(exc, "errno", None), int):
                why = os.strerror(exc.errno)
            else:
                why = _first_line(exc)
            raise ValueError(f"cannot open port {url!r}: {why}") from exc
        try:
            self._fd: int | None = self.port.fileno()
        except (OSError, AttributeError, ValueError):
            self._fd = None  # loop:// and other ports without a file descriptor
        sock = getattr(self.port, "_socket", None)
        if sock is not None:  # socket://: send small frames at once (no Nagle delay)
            import socket

            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.port.reset_input_buffer()
            self._write(P.DELIMITER)  # ends any partial frame the device holds
        except _Down as exc:
            self.close()
            raise ValueError(f"cannot use port {url!r}: {exc}") from exc

    def close(self) -> None:
        try:
            self.port.close()
        except (serial.SerialException, OSError):
            pass

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ frames

    def _write(self, data: bytes) -> None:
        try:
            self.port.write(data)
        except (serial.SerialException, OSError) as exc:
            raise _Down(_failed("write", exc)) from exc
        self.bytes_out += len(data)

    def send(self, msg: P.Payload | P.Msg) -> int:
        """Send a request; returns its sequence number."""
        self.seq = (self.seq + 1) & 0xFFFF
        frame = P.Frame(int(msg), self.seq) if isinstance(msg, P.Msg) else msg.frame(self.seq)
        self._write(P.encode_frame(frame))
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
                raise _Down(_failed("read", exc)) from exc
            self.bytes_in += len(data)
            self.frames += self.decoder.feed(data)
        return self.frames.pop(0)

    def call(self, msg: P.Payload | P.Msg, timeout: float | None = None) -> P.Payload:
        """Send a request and return its reply, resending after silence (requests are
        idempotent); ``_Down`` after :attr:`LinkSettings.retries` resends."""
        timeout = timeout if timeout is not None else self.reply_timeout(1)
        for _ in range(self.settings.retries + 1):
            seq = self.send(msg)
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                frame = self.recv(left)
                if frame is not None and frame.seq == seq:
                    try:
                        return _checked(P.parse_reply(frame))
                    except P.ProtocolError:
                        break  # malformed reply: ask again
        raise _Down(f"no reply to {_name(msg)} after {self.settings.retries + 1} tries")

    def reply_timeout(self, frames_in_flight: int) -> float:
        """Silence after which requests are resent: line time of a full exchange plus slack."""
        max_frame = P.data_frame_len(self.info.max_payload if self.info else 1024)
        return self.settings.timeout_s + 2 * self.settings.line_time(
            max_frame * (frames_in_flight + 1)
        )

    def pipeline(self, requests: Sequence[P.Payload], window: int | None = None,
                 done: Callable[[int], None] | None = None) -> list[P.Payload]:
        """Send idempotent requests with up to ``window`` in flight; replies in request order.

        Replies to lost requests are asked for again after silence; ``_Down`` after
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
                    raise _Down(f"no reply after {stalls} tries")
                todo += sorted(inflight.values(), reverse=True)
                inflight.clear()
                continue
            i = inflight.pop(frame.seq, None)
            if i is None:
                continue
            try:
                replies[i] = _checked(P.parse_reply(frame))
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
        return _expect(reply, P.Status, "STATUS")

    def read_active(self, size: int, done: Callable[[int], None] | None = None) -> bytes:
        """The active image (``size`` bytes), read in frame-sized pieces."""
        step = self.info.max_payload - P.ReadData.FIXED.size if self.info else 256
        reqs = [P.Read(P.ACTIVE_SLOT, o, min(step, size - o)) for o in range(0, size, step)]
        replies = self.pipeline(reqs, done=done)
        return b"".join(_expect(r, P.ReadData, "READ").data for r in replies)

    def infer(self, x_q: np.ndarray, done: Callable[[int], None] | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
        """Run int8 inputs (n, n_inputs) on the device: int8 outputs (n, n_out), cycles (n,)."""
        x_q = np.ascontiguousarray(x_q, dtype=np.int8)
        replies = self.pipeline([P.Infer(row.tobytes()) for row in x_q], done=done)
        results = [_expect(r, P.Result, "INFER") for r in replies]
        y = np.stack([np.frombuffer(r.data, dtype=np.int8) for r in results])
        return y, np.array([r.cycles for r in results], dtype=np.int64)


def _first_difference(a: bytes, b: bytes) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def _failed(what: str, exc: BaseException) -> str:
    """``"read failed: why"`` (pyserial's own text may already start so)."""
    text = _first_line(exc)
    return text if text.startswith(f"{what} failed") else f"{what} failed: {text}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _name(msg: P.Payload | P.Msg) -> str:
    return msg.name if isinstance(msg, P.Msg) else msg.TYPE.name


def _checked(reply: P.Payload) -> P.Payload:
    if isinstance(reply, P.Nak) and reply.code == P.Err.BUSY:
        raise DeviceBusy(f"device busy: {reply.describe()}")
    return reply


def _expect(reply: P.Payload, cls: type, what: str) -> Any:
    if isinstance(reply, cls):
        return reply
    raise refusal(reply, what)


def refusal(reply: P.Payload, what: str) -> Mark1Error:
    """The error for an unexpected reply (a ``NAK`` becomes the matching error class)."""
    if not isinstance(reply, P.Nak):
        return DeviceRefused(f"{what}: unexpected reply {type(reply).__name__}")
    text = f"device refused {what}: {reply.describe()}"
    if reply.code in (P.Err.TOO_LARGE_FLASH, P.Err.TOO_LARGE_RAM):
        return ModelTooLarge(text)
    if reply.code == P.Err.CRC_MISMATCH:
        return VerifyFailed(text)
    if reply.code == P.Err.BUSY:
        return DeviceBusy(text)
    return DeviceRefused(text, reply)


# --------------------------------------------------------------------------- push


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


MIN_CHUNK = 32
"""Smallest ``DATA``/``READ`` size the host adapts down to, in bytes."""


class _FrameSize:
    """Bytes per frame in one direction, adapted to that direction's losses: halved after a
    lost frame (down to :data:`MIN_CHUNK`), doubled after ``run`` frames in a row got through."""

    def __init__(self, adapt: bool, run: int) -> None:
        self.adapt, self.run = adapt, run
        self.size = self.limit = 0
        self._clean = 0

    def start(self, limit: int) -> None:
        """Use at most ``limit`` bytes (a reconnection keeps the size learnt so far)."""
        self.limit = limit
        self.size = min(self.size or limit, limit)

    def lost(self) -> None:
        self._clean = 0
        if self.adapt:
            self.size = max(min(MIN_CHUNK, self.size), self.size // 2)

    def through(self) -> None:
        self._clean += 1
        if self.adapt and self._clean >= self.run:
            self.size, self._clean = min(self.limit, 2 * self.size), 0


class _Upload:
    """One upload's progress on the host, kept across reconnections."""

    def __init__(self, image: bytes, report: PushReport, settings: LinkSettings,
                 progress: Callable[[int], None] | None) -> None:
        self.image = image
        self.image_id = hashlib.sha256(image).digest()
        """Names the image in ``BEGIN``, so that only an upload of these bytes is resumed."""
        self.report = report
        self.settings = settings
        self.progress = progress
        self.verified = 0
        """Bytes at the start of the image read back from flash and found equal."""
        self.read_next = 0
        """Where the next read-back request of bytes not asked for yet starts."""
        self.reread: list[tuple[int, int]] = []
        """Ranges to read back again (their ``READ`` or its reply was lost, or refused)."""
        self.checked: list[tuple[int, int]] = []
        """Ranges past :attr:`verified` read back and found equal."""
        self.acked = 0
        run = 2 * settings.window
        self.data_size = _FrameSize(settings.adapt, run)
        """Image bytes per ``DATA`` frame (adapted to losses toward the device)."""
        self.read_size = _FrameSize(settings.adapt, run)
        """Bytes per ``READ`` (adapted to losses of ``READ_DATA`` replies)."""

    def run(self, link: Link, slot: int, ram_bytes: int) -> int:
        """BEGIN (resuming), send and verify every byte; returns the slot being written.

        ``DATA`` is selective repeat: the device takes frames out of order, so a lost frame is
        sent again by itself. The device handles frames in order and its acknowledgements keep
        that order, so when the ``ACK`` of a frame arrives, an earlier frame still without one
        was lost -- or only its ``ACK`` was, if the device's in-order offset has passed it.
        """
        image, rep, st = self.image, self.report, self.settings
        size = len(image)
        reply = link.call(P.Begin(size, rep.crc32, ram_bytes, slot, self.image_id))
        if not (isinstance(reply, P.Ack) and reply.of == P.Msg.BEGIN):
            raise refusal(reply, "BEGIN")
        base, slot = reply.a, reply.b
        rep.resumed_from.append(base)
        self.verified = self.read_next = min(self.verified, base)
        self.reread, self.checked = [], []
        self._progress(base)
        assert link.info is not None
        chunk = link.info.max_payload - P.Data.FIXED.size
        self.data_size.start(min(chunk, st.chunk) if st.chunk else chunk)
        self.read_size.start(link.info.max_payload - P.ReadData.FIXED.size)
        nxt = base  # the first byte not sent yet
        lost: list[tuple[int, int]] = []  # ranges to send again
        ahead: list[tuple[int, int]] = []  # ranges past ``base`` the device has acknowledged
        durable = base  # bytes of the upload the device reports in flash
        data_inflight: OrderedDict[int, tuple[int, int]] = OrderedDict()
        read_inflight: OrderedDict[int, tuple[int, int]] = OrderedDict()
        hold_until = 0  # a READ overtook lost DATA: read back only acknowledged bytes until here

        def timeout() -> float:  # line time of what can be in flight at the current sizes
            longest = P.data_frame_len(max(self.data_size.size, self.read_size.size))
            return st.timeout_s + 2 * st.line_time(longest * (2 * st.window + 3))

        def read_limit() -> int:  # read back right behind the DATA unless bytes are missing
            return base if lost or ahead or base < hold_until else nxt

        stalls = 0
        # Replies that bring no progress (go-backs, refused reads) must not keep the upload
        # alive: silence is measured from the last acknowledged or verified byte.
        deadline = time.monotonic() + timeout()
        while base < size or (st.verify and self.verified < size):
            while len(data_inflight) < st.window and (lost or nxt < size):
                if lost:  # lost frames first, each by itself
                    off, end = lost[0]
                    end = min(end, off + self.data_size.size)
                    lost[0] = (end, lost[0][1])
                    if lost[0][0] >= lost[0][1]:
                        lost.pop(0)
                else:
                    off, end = nxt, min(size, nxt + self.data_size.size)
                    nxt = end
                data_inflight[link.send(P.Data(off, image[off:end]))] = (off, end)
                rep.data_bytes_sent += end - off
                self._read_up_to(link, slot, read_limit(), read_inflight)
            self._read_up_to(link, slot, read_limit(), read_inflight)
            frame = link.recv(max(0.0, deadline - time.monotonic()))
            if frame is None or time.monotonic() > deadline:
                stalls += 1
                rep.timeouts += 1
                if stalls > st.retries:
                    raise _Down(f"no progress for {stalls} x {timeout():.2f} s during the upload")
                lost = _union(lost, data_inflight.values(), base)
                self.reread = _union(self.reread, read_inflight.values(), self.verified)
                data_inflight.clear()
                read_inflight.clear()
                hold_until = 0
                deadline = time.monotonic() + timeout()
                self.data_size.lost()
                self.read_size.lost()
                continue
            try:
                reply = _checked(P.parse_reply(frame))
            except P.ProtocolError:
                continue
            if frame.seq in data_inflight:
                if isinstance(reply, P.Ack) and reply.of == P.Msg.DATA:
                    overtaken = list(itertools.takewhile(frame.seq.__ne__, data_inflight))
                    off, end = data_inflight.pop(frame.seq)
                    if reply.a > base or reply.b > durable:
                        stalls, deadline = 0, time.monotonic() + timeout()
                        self.data_size.through()
                    base, durable = max(base, reply.a), max(durable, reply.b)
                    ahead = _union(ahead, [(off, end)], base)
                    for k in overtaken:  # sent before, no reply: lost (or only its ACK was)
                        gone = data_inflight.pop(k)
                        if gone[1] > base:
                            lost = _union(lost, [gone], base)
                            rep.resends += 1
                            self.data_size.lost()
                    lost = _union(lost, [], base)
                    self._progress(base)
                elif isinstance(reply, P.Nak) and reply.code == P.Err.OFFSET:
                    rep.go_backs += 1  # the device tracks no more ranges: from its offset
                    base = reply.a
                    lost, ahead = _union(lost, [(base, nxt)], base), []
                    data_inflight.clear()
                    self.data_size.lost()
                elif isinstance(reply, P.Nak) and reply.code == P.Err.NO_UPLOAD:
                    raise _Down("the device forgot the upload (reset or power cycle)")
                else:
                    raise refusal(reply, "DATA")
            elif frame.seq in read_inflight:
                # READ_DATA replies keep their order (a NAK would have come before): the READs
                # sent before this one and still without a reply were lost, or their replies
                overtaken = list(itertools.takewhile(frame.seq.__ne__, read_inflight))
                off, end = read_inflight.pop(frame.seq)
                if isinstance(reply, P.Nak) and reply.code == P.Err.RANGE:
                    self.reread = _union(self.reread, [(off, end)], self.verified)
                    hold_until = max(hold_until, end)  # its DATA was lost: read after it
                    continue
                if not isinstance(reply, P.ReadData):
                    raise refusal(reply, "READ")
                if overtaken:
                    self.read_size.lost()
                    self.reread = _union(self.reread, [read_inflight.pop(k) for k in overtaken],
                                         self.verified)
                if reply.data != image[off:end]:
                    raise VerifyFailed(
                        f"read-back differs from the file at byte "
                        f"{off + _first_difference(reply.data, image[off:end])} of {size} "
                        f"(slot {P.SLOT_NAMES[slot]})"
                    )
                before = self._checked_bytes()
                self.checked = _union(self.checked, [(off, end)], self.verified)
                if self.checked[0][0] <= self.verified:
                    self.verified = rep.verified_bytes = self.checked.pop(0)[1]
                if self._checked_bytes() > before:
                    stalls, deadline = 0, time.monotonic() + timeout()
                self.read_size.through()
        return slot

    def _read_up_to(self, link: Link, slot: int, limit: int,
                    inflight: OrderedDict[int, tuple[int, int]]) -> None:
        """Ask to read back what has been sent, up to ``limit``: the device handles frames in
        order, so each ``READ`` arrives after the ``DATA`` it checks."""
        if not self.settings.verify:
            return
        self.reread = _union(self.reread, [], self.verified)
        while len(inflight) < 2 * self.settings.window + 2:
            if self.reread and self.reread[0][0] < limit:  # again, each lost range by itself
                off, stop = self.reread[0]
                end = min(stop, limit, off + self.read_size.size)
                self.reread[0] = (end, stop)
                if end >= stop:
                    self.reread.pop(0)
            elif self.read_next < limit:
                off = self.read_next
                end = self.read_next = min(limit, off + self.read_size.size)
            else:
                return
            inflight[link.send(P.Read(slot, off, end - off))] = (off, end)

    def _checked_bytes(self) -> int:
        """Bytes read back and found equal so far."""
        return self.verified + sum(end - start for start, end in self.checked)

    def _progress(self, acked: int) -> None:
        if self.progress is not None and acked > self.acked:
            self.progress(acked - self.acked)
        self.acked = max(self.acked, acked)


def _union(ranges: list[tuple[int, int]], more: Iterable[tuple[int, int]],
           base: int) -> list[tuple[int, int]]:
    """Byte ranges [start, end) merged, sorted, and cut to what lies past ``base``."""
    out: list[tuple[int, int]] = []
    for a, b in sorted([*ranges, *more]):
        a = max(a, base)
        if a >= b:
            continue
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def push(
    url: str,
    image: bytes,
    *,
    settings: LinkSettings = LinkSettings(),
    slot: int = P.AUTO_SLOT,
    progress: Callable[[int], None] | None = None,
) -> PushReport:
    """Upload a weight package to the device at ``url``, verify it, make it active.

    ``image`` must decode as a package (``PackageError``, a ``ValueError``, if not). ``progress``
    is called with the number of newly acknowledged bytes. Returns a :class:`PushReport`; raises
    the ``Mark1Error`` subclasses of this module on failure (exit codes in :data:`EXIT_CODES`).
    """
    from export.package import decode_package

    if not isinstance(image, (bytes, bytearray, memoryview)):
        raise TypeError(f"image must be the package's bytes; got {type(image).__name__} "
                        "(read the file first)")
    image = bytes(image)
    pkg = decode_package(image)
    report = PushReport(url, len(image), zlib.crc32(image), pkg.model_id.hex(),
                        baud=settings.baud)
    up = _Upload(image, report, settings, progress)
    t0 = time.monotonic()
    link = Link(url, settings)
    try:
        info = link.handshake()
        report.device = info.name
        delay = settings.reconnect_delay_s
        sent = False  # every byte is in the device's flash and verified: COMMIT is next
        while True:
            try:
                just_sent = not sent
                if not sent:
                    up.run(link, slot, pkg.ram_bytes)
                    sent = True
                done = link.call(P.Commit(len(image), report.crc32, up.image_id))
                if isinstance(done, P.Nak) and done.code == P.Err.NO_UPLOAD:
                    sent = False  # neither in progress nor committed: the upload was lost
                    if just_sent:  # lost between the last DATA and COMMIT: a reset
                        raise _Down("the device forgot the upload before COMMIT (reset or "
                                    "power cycle)")
                    continue  # (after a reconnection) send it again on this link
                if not (isinstance(done, P.Ack) and done.of == P.Msg.COMMIT):
                    raise refusal(done, "COMMIT")
                slot_used = done.a
                st = link.status()
                break
            except _Down as exc:
                if report.reconnects >= settings.reconnects:
                    raise LinkLost(
                        f"link to {url} lost ({exc}); gave up after {report.reconnects} "
                        f"reconnection(s) at byte {up.acked} of {len(image)}"
                    ) from exc
                report.reconnects += 1
                _tally(report, link)
                link.close()
                time.sleep(delay)
                delay *= 2
                link = _reopen(url, settings, attempts=settings.retries + 1, seq=link.seq)
        report.seconds = time.monotonic() - t0
        report.slot = slot_used
        _check_active(st, report, pkg.model_id, slot_used)
    finally:
        _tally(report, link)
        link.close()
    return report


def _tally(report: PushReport, link: Link) -> None:
    report.wire_bytes_out += link.bytes_out
    report.wire_bytes_in += link.bytes_in
    link.bytes_out = link.bytes_in = 0


def _reopen(url: str, settings: LinkSettings, attempts: int, seq: int) -> Link:
    """Open the port and shake hands again; waits for a device that is restarting."""
    last: BaseException | None = None
    for i in range(attempts):
        try:
            link = Link(url, settings, seq=seq + 1000 * (i + 1))
        except (ValueError, DeviceBusy) as exc:
            last = exc
            time.sleep(settings.reconnect_delay_s * (i + 1))
            continue
        try:
            link.handshake(attempts=2)
            return link
        except (NoDevice, DeviceBusy, _Down) as exc:
            last = exc
            link.close()
            time.sleep(settings.reconnect_delay_s * (i + 1))
    raise LinkLost(f"could not reconnect to {url}: {last}")


def _check_active(st: P.Status, report: PushReport, model_id: bytes, slot: int) -> None:
    problems = []
    if st.active_slot != slot:
        problems.append(f"active slot {P.SLOT_NAMES.get(st.active_slot)} != {P.SLOT_NAMES[slot]}")
    if (st.active_size, st.active_crc32) != (report.size, report.crc32):
        problems.append(f"active image {st.active_size} bytes CRC {st.active_crc32:#010x}, "
                        f"pushed {report.size} bytes CRC {report.crc32:#010x}")
    if st.model_id != model_id:
        problems.append(f"model id {st.model_id.hex()[:16]} != {model_id.hex()[:16]}")
    if not st.runnable:
        problems.append("the device cannot run the model")
    if problems:
        raise VerifyFailed("after commit: " + "; ".join(problems))


def connect(url: str, settings: LinkSettings = LinkSettings()) -> Link:
    """Open ``url`` and shake hands (``NoDevice``, ``VersionMismatch``, ``DeviceBusy``)."""
    link = Link(url, settings)
    try:
        link.handshake()
    except BaseException:
        link.close()
        raise
    return link


def active_package(link: Link, model: bytes | None = None) -> tuple[Any, P.Status]:
    """The device's running package: decoded from ``model`` (checked to be the same) or read
    back from the device. ``DeviceRefused`` if it has none."""
    from export.package import decode_package

    st = link.status()
    if not st.runnable:
        raise DeviceRefused(f"device on {link.url} has no runnable model; push one first")
    if model is None:
        try:
            model = link.read_active(st.active_size)
        except _Down as exc:
            raise LinkLost(f"reading the model back from {link.url}: {exc}") from exc
        if zlib.crc32(model) != st.active_crc32:
            raise VerifyFailed("model read back from the device does not match its CRC")
    pkg = decode_package(model)
    if pkg.model_id != st.model_id:
        raise ValueError(
            f"the model file (id {pkg.model_id.hex()[:16]}) is not the device's active model "
            f"(id {st.model_id.hex()[:16]})"
        )
    return pkg, st


def run_inference(link: Link, x_q: np.ndarray, done: Callable[[int], None] | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Device outputs and cycle counts for int8 inputs; ``LinkLost`` if the link fails."""
    try:
        return link.infer(x_q, done=done)
    except _Down as exc:
        raise LinkLost(f"inference on {link.url}: {exc}") from exc
