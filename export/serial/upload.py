"""One upload's progress on the host: the ``DATA`` sender and the read-back verifier.

``DATA`` frames are selective repeat: the device takes them also out of order and acknowledges
each, in order, with the bytes it has received in order and the bytes in flash. The device
handles frames in order and its acknowledgements keep that order, so when the ``ACK`` of a frame
arrives, an earlier frame still without one was lost -- or only its ``ACK`` was, if the device's
in-order offset has passed it -- and is sent again by itself (:class:`DataSender`).

While the upload runs, :class:`ReadBackVerifier` reads back what has been sent and compares it
with the file -- the line is full duplex, so the read-back costs almost no time. Each ``READ``
arrives after the ``DATA`` it checks.

No progress (no new byte acknowledged or verified) for the line time of what is in flight plus
``timeout_s`` resends what has no reply; ``retries`` of those in a row raise
:class:`~export.serial.errors.LinkDown` (the push then reconnects and resumes). Each lost frame
halves the ``DATA`` (or ``READ``) size, a run of frames that get through doubles it again, so a
noisy line is crossed in short frames and a clean one in full ones (:class:`FrameSize`).
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections import OrderedDict
from collections.abc import Callable

from export.contract import protocol as P
from export.contract.ranges import ByteRanges
from export.serial.errors import LinkDown, VerifyFailed, refusal, unless_busy
from export.serial.link import Link
from export.serial.report import PushReport
from export.serial.settings import MIN_CHUNK, LinkSettings


class FrameSize:
    """Bytes per frame in one direction, adapted to that direction's losses: halved after a
    lost frame (down to :data:`~export.serial.settings.MIN_CHUNK`), doubled after ``run``
    frames in a row got through."""

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


class StallClock:
    """When an upload counts as stalled: silence is measured from the last acknowledged or
    verified byte, so replies that bring no progress (go-backs, refused reads) do not keep the
    upload alive. ``timeout`` gives the silence allowed at the current frame sizes."""

    def __init__(self, timeout: Callable[[], float]) -> None:
        self.timeout = timeout
        self.deadline = 0.0
        self.stalls = 0
        """Silences in a row."""

    def start(self) -> None:
        """Allow one more timeout from now."""
        self.deadline = time.monotonic() + self.timeout()

    def progress(self) -> None:
        """New bytes were acknowledged or verified."""
        self.stalls = 0
        self.start()

    def left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() > self.deadline


Inflight = OrderedDict[int, tuple[int, int]]
"""Requests without a reply yet: sequence number -> the byte range ``[start, end)`` they carry."""


class DataSender:
    """Sends the image in ``DATA`` frames and follows the device's acknowledgements."""

    def __init__(self, image: bytes, report: PushReport, settings: LinkSettings,
                 clock: StallClock) -> None:
        self.image = image
        self.report = report
        self.clock = clock
        self.window = settings.window
        self.size = FrameSize(settings.adapt, 2 * settings.window)
        """Image bytes per ``DATA`` frame (adapted to losses toward the device)."""
        self.chunk = settings.chunk
        self.acked = 0
        """Bytes the device has acknowledged in order."""
        self.sent = 0
        """The first byte not sent yet."""
        self.durable = 0
        """Bytes of the upload the device reports in flash."""
        self.lost = ByteRanges()
        """Ranges to send again, each frame by itself."""
        self.ahead = ByteRanges()
        """Ranges past :attr:`acked` the device has acknowledged."""
        self.inflight: Inflight = OrderedDict()

    def begin(self, base: int, max_payload: int) -> None:
        """Start (or resume) at the device's offset ``base``."""
        self.acked = self.sent = self.durable = base
        self.lost, self.ahead = ByteRanges(), ByteRanges()
        self.inflight.clear()
        chunk = max_payload - P.Data.FIXED.size
        self.size.start(min(chunk, self.chunk) if self.chunk else chunk)

    @property
    def has_more(self) -> bool:
        """A frame may be sent now (the window has room and bytes wait to be sent)."""
        return len(self.inflight) < self.window and bool(self.lost or self.sent < len(self.image))

    @property
    def holes(self) -> bool:
        """Some bytes sent are not in the device's in-order part yet (lost or ahead of a loss)."""
        return bool(self.lost or self.ahead)

    def send_one(self, link: Link) -> None:
        """Send the next ``DATA`` frame: lost bytes first, each range by itself."""
        if self.lost:
            off, end = self.lost.take_first(self.size.size)
        else:
            off, end = self.sent, min(len(self.image), self.sent + self.size.size)
            self.sent = end
        self.inflight[link.send(P.Data(off, self.image[off:end]))] = (off, end)
        self.report.data_bytes_sent += end - off

    def silence(self) -> None:
        """No reply for too long: everything in flight is lost."""
        self.lost.update(self.inflight.values())
        self.lost.discard_below(self.acked)
        self.inflight.clear()
        self.size.lost()

    def reply(self, seq: int, reply: P.Payload) -> None:
        """Take the reply to ``DATA`` ``seq``."""
        if isinstance(reply, P.Ack) and reply.of == P.Msg.DATA:
            self._acknowledged(seq, reply)
        elif isinstance(reply, P.Nak) and reply.code == P.Err.OFFSET:
            self.report.go_backs += 1  # the device tracks no more ranges: from its offset
            self.acked = reply.a
            self.lost.add(self.acked, self.sent)
            self.lost.discard_below(self.acked)
            self.ahead.clear()
            self.inflight.clear()
            self.size.lost()
        elif isinstance(reply, P.Nak) and reply.code == P.Err.NO_UPLOAD:
            raise LinkDown("the device forgot the upload (reset or power cycle)")
        else:
            raise refusal(reply, "DATA")

    def _acknowledged(self, seq: int, ack: P.Ack) -> None:
        overtaken = list(itertools.takewhile(seq.__ne__, self.inflight))
        off, end = self.inflight.pop(seq)
        if ack.a > self.acked or ack.b > self.durable:
            self.clock.progress()
            self.size.through()
        self.acked, self.durable = max(self.acked, ack.a), max(self.durable, ack.b)
        self.ahead.add(off, end)
        self.ahead.discard_below(self.acked)
        for k in overtaken:  # sent before, no reply: lost (or only its ACK was)
            gone = self.inflight.pop(k)
            if gone[1] > self.acked:
                self.lost.add(*gone)
                self.report.resends += 1
                self.size.lost()
        self.lost.discard_below(self.acked)


class ReadBackVerifier:
    """Reads back from the device's flash what has been sent and compares it with the image."""

    def __init__(self, image: bytes, report: PushReport, settings: LinkSettings,
                 clock: StallClock) -> None:
        self.image = image
        self.report = report
        self.clock = clock
        self.enabled = settings.verify
        self.most_inflight = 2 * settings.window + 2
        self.size = FrameSize(settings.adapt, 2 * settings.window)
        """Bytes per ``READ`` (adapted to losses of ``READ_DATA`` replies)."""
        self.slot = 0
        self.verified = 0
        """Bytes at the start of the image read back from flash and found equal."""
        self.next = 0
        """Where the next read-back request of bytes not asked for yet starts."""
        self.reread = ByteRanges()
        """Ranges to read back again (their ``READ`` or its reply was lost, or refused)."""
        self.checked = ByteRanges()
        """Ranges past :attr:`verified` read back and found equal."""
        self.hold_until = 0
        """A ``READ`` overtook lost ``DATA``: read back only acknowledged bytes until here."""
        self.inflight: Inflight = OrderedDict()

    def begin(self, base: int, slot: int, max_payload: int) -> None:
        """Start (or resume) the read-back of ``slot``; nothing past ``base`` counts as read."""
        self.slot = slot
        self.verified = self.next = min(self.verified, base)
        self.reread, self.checked = ByteRanges(), ByteRanges()
        self.hold_until = 0
        self.inflight.clear()
        self.size.start(max_payload - P.ReadData.FIXED.size)

    @property
    def done(self) -> bool:
        return not self.enabled or self.verified >= len(self.image)

    def request(self, link: Link, limit: int) -> None:
        """Ask to read back what has been sent, up to ``limit``: lost reads first, each by
        itself, then bytes not asked for yet."""
        if not self.enabled:
            return
        self.reread.discard_below(self.verified)
        while len(self.inflight) < self.most_inflight:
            if self.reread and self.reread.first[0] < limit:
                off, end = self.reread.take_first(self.size.size, limit)
            elif self.next < limit:
                off = self.next
                end = self.next = min(limit, off + self.size.size)
            else:
                return
            self.inflight[link.send(P.Read(self.slot, off, end - off))] = (off, end)

    def silence(self) -> None:
        """No reply for too long: every read in flight is asked for again."""
        self.reread.update(self.inflight.values())
        self.reread.discard_below(self.verified)
        self.inflight.clear()
        self.hold_until = 0
        self.size.lost()

    def reply(self, seq: int, reply: P.Payload) -> None:
        """Take the reply to ``READ`` ``seq``.

        ``READ_DATA`` replies keep their order (a ``NAK`` would have come before): the ``READ``
        requests sent before this one and still without a reply were lost, or their replies.
        """
        overtaken = list(itertools.takewhile(seq.__ne__, self.inflight))
        off, end = self.inflight.pop(seq)
        if isinstance(reply, P.Nak) and reply.code == P.Err.RANGE:
            self._reread([(off, end)])
            self.hold_until = max(self.hold_until, end)  # its DATA was lost: read after it
            return
        if not isinstance(reply, P.ReadData):
            raise refusal(reply, "READ")
        if overtaken:
            self.size.lost()
            self._reread([self.inflight.pop(k) for k in overtaken])
        self._compare(off, end, reply.data)
        before = self.verified + self.checked.size
        self.checked.add(off, end)
        self.checked.discard_below(self.verified)
        if self.checked.first[0] <= self.verified:
            self.verified = self.report.verified_bytes = self.checked.pop_first()[1]
        if self.verified + self.checked.size > before:
            self.clock.progress()
        self.size.through()

    def _reread(self, ranges: list[tuple[int, int]]) -> None:
        self.reread.update(ranges)
        self.reread.discard_below(self.verified)

    def _compare(self, off: int, end: int, data: bytes) -> None:
        if data != self.image[off:end]:
            raise VerifyFailed(
                f"read-back differs from the file at byte "
                f"{off + _first_difference(data, self.image[off:end])} of {len(self.image)} "
                f"(slot {P.SLOT_NAMES[self.slot]})"
            )


def _first_difference(a: bytes, b: bytes) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


class Upload:
    """One upload's progress on the host, kept across reconnections."""

    def __init__(self, image: bytes, report: PushReport, settings: LinkSettings,
                 progress: Callable[[int], None] | None) -> None:
        self.image = image
        self.image_id = hashlib.sha256(image).digest()
        """Names the image in ``BEGIN``, so that only an upload of these bytes is resumed."""
        self.report = report
        self.settings = settings
        self.progress = progress
        self.acked = 0
        """Bytes the device has acknowledged in order (the most so far, across links)."""
        self.clock = StallClock(self._timeout)
        self.sender = DataSender(image, report, settings, self.clock)
        self.verifier = ReadBackVerifier(image, report, settings, self.clock)

    def run(self, link: Link, slot: int, ram_bytes: int) -> int:
        """BEGIN (resuming), send and verify every byte; returns the slot being written."""
        rep, sender, verifier, clock = self.report, self.sender, self.verifier, self.clock
        reply = link.call(P.Begin(len(self.image), rep.crc32, ram_bytes, slot, self.image_id))
        if not (isinstance(reply, P.Ack) and reply.of == P.Msg.BEGIN):
            raise refusal(reply, "BEGIN")
        base, slot = reply.a, reply.b
        rep.resumed_from.append(base)
        assert link.info is not None
        sender.begin(base, link.info.max_payload)
        verifier.begin(base, slot, link.info.max_payload)
        self._progress(base)
        clock.progress()
        while sender.acked < len(self.image) or not verifier.done:
            while sender.has_more:
                sender.send_one(link)
                verifier.request(link, self._read_limit())
            verifier.request(link, self._read_limit())
            frame = link.recv(clock.left())
            if frame is None or clock.expired():
                clock.stalls += 1
                rep.timeouts += 1
                if clock.stalls > self.settings.retries:
                    raise LinkDown(f"no progress for {clock.stalls} x {self._timeout():.2f} s "
                                   "during the upload")
                clock.start()
                sender.silence()
                verifier.silence()
            else:
                self._dispatch(frame)
        return slot

    def _dispatch(self, frame: P.Frame) -> None:
        """Hand a reply to the sender or the verifier."""
        try:
            reply = unless_busy(P.parse_reply(frame))
        except P.ProtocolError:
            return
        if frame.seq in self.sender.inflight:
            self.sender.reply(frame.seq, reply)
            if isinstance(reply, P.Ack):
                self._progress(self.sender.acked)
        elif frame.seq in self.verifier.inflight:
            self.verifier.reply(frame.seq, reply)

    def _timeout(self) -> float:
        """Line time of what can be in flight at the current frame sizes, plus the slack."""
        st = self.settings
        longest = P.data_frame_len(max(self.sender.size.size, self.verifier.size.size))
        return st.timeout_s + 2 * st.line_time(longest * (2 * st.window + 3))

    def _read_limit(self) -> int:
        """Read back right behind the ``DATA`` unless bytes are missing."""
        s = self.sender
        if s.holes or s.acked < self.verifier.hold_until:
            return s.acked
        return s.sent

    def _progress(self, acked: int) -> None:
        if self.progress is not None and acked > self.acked:
            self.progress(acked - self.acked)
        self.acked = max(self.acked, acked)
