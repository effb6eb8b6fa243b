"""The mark1-kit wire protocol: one definition used by the host (``export/serial/``) and the
simulated microcontroller (``firmware_sim/device.py``). Specified in ``docs/PROTOCOL.md``.

On the wire every frame is COBS-encoded (:mod:`export.contract.cobs`) and ends with one ``0x00``
delimiter byte, so a receiver finds frame boundaries even after noise. Decoded, a frame is::

    type u8 | seq u16 | length u16 | payload (length bytes) | crc32 u32

all little-endian; ``crc32`` is ``zlib.crc32`` over type, seq, length and payload. The host numbers
its requests; the device answers each request with exactly one reply carrying the same ``seq``.
Frames that fail COBS, length or CRC checks are dropped silently (the host times out and resends).

Only the standard library is imported here; numpy is not needed to speak the protocol.
"""

from __future__ import annotations

import enum
import hashlib
import struct
import zlib
from dataclasses import dataclass, fields
from typing import ClassVar, TypeVar

from export.contract.cobs import CobsError, cobs_decode, cobs_encode, cobs_max_len

PROTOCOL_VERSION = 2
MIN_BAUD = 1200
"""Slowest line rate host and device are set to, in bit/s: at 1200 baud a stopped device is
given up on within seconds, and a real UART rarely runs slower."""
MAX_BAUD = 12_000_000
"""Fastest line rate host and device are set to, in bit/s (the fastest USB serial bridges)."""
"""Version spoken by this module; ``HELLO``/``INFO`` exchange it and the host refuses others.
Version 2 added the image id to ``COMMIT`` and made the image id the image's SHA-256.
``ROLLBACK`` came later without a new version: a device that predates it answers
``NAK UNKNOWN_TYPE``, as to any request it does not know (docs/PROTOCOL.md, "Versions")."""

DELIMITER = b"\x00"
HEADER = struct.Struct("<BHH")
CRC = struct.Struct("<I")
FRAME_OVERHEAD = HEADER.size + CRC.size
"""Bytes a frame adds around its payload before COBS (type, seq, length, CRC)."""

ACTIVE_SLOT = 0xFF
"""Slot number meaning "the active slot" in ``READ``, "none" in ``STATUS``."""
AUTO_SLOT = 0xFF
"""Slot number in ``BEGIN`` meaning "whichever slot is not active"."""
SLOT_NAMES = {0: "A", 1: "B", 0xFF: "-"}
IMAGE_ID_BYTES = 32
"""Length of an image id in ``BEGIN`` and ``COMMIT``: the image's SHA-256 (or no id at all)."""


class ProtocolError(ValueError):
    """A frame or payload that does not follow the protocol."""


def check_image_id(image_id: bytes, what: str) -> None:
    """``ProtocolError`` unless ``image_id`` is empty or a SHA-256 (:data:`IMAGE_ID_BYTES`)."""
    if len(image_id) not in (0, IMAGE_ID_BYTES):
        raise ProtocolError(
            f"{what} image id of {len(image_id)} bytes; expected none or the image's SHA-256 "
            f"({IMAGE_ID_BYTES} bytes)"
        )


# --------------------------------------------------------------------------- message types


class Msg(enum.IntEnum):
    """Frame types. Requests go host -> device; replies (high bit set) device -> host."""

    HELLO = 0x01
    BEGIN = 0x02
    DATA = 0x03
    COMMIT = 0x04
    ABORT = 0x05
    READ = 0x06
    INFER = 0x07
    STATUS = 0x08
    RESET = 0x09
    ROLLBACK = 0x0A
    INFO = 0x81
    ACK = 0x82
    NAK = 0x83
    READ_DATA = 0x86
    RESULT = 0x87
    STATUS_REPLY = 0x88


class Err(enum.IntEnum):
    """Error codes carried by ``NAK`` (with two numbers ``a``, ``b`` and a text)."""

    UNKNOWN_TYPE = 1
    """The frame type is not a request this device knows; ``a`` = the type."""
    BAD_PAYLOAD = 2
    """The payload is malformed for its type; ``a`` = its length."""
    BUSY = 3
    """Another host holds the device's session."""
    NO_UPLOAD = 4
    """``DATA``/``COMMIT`` without a ``BEGIN`` (or after an abort, a reset or a power cycle)."""
    OFFSET = 5
    """``DATA`` offset is past the next expected byte; ``a`` = expected offset, ``b`` = offset."""
    TOO_LARGE_FLASH = 6
    """The model does not fit a flash slot; ``a`` = model bytes, ``b`` = slot bytes."""
    TOO_LARGE_RAM = 7
    """The model's activations do not fit the RAM arena; ``a`` = needed, ``b`` = available."""
    BAD_SLOT = 8
    """The slot does not exist or holds the active model; ``a`` = slot, ``b`` = active slot."""
    INCOMPLETE = 9
    """``COMMIT`` before every byte arrived; ``a`` = bytes received, ``b`` = size."""
    CRC_MISMATCH = 10
    """The image in flash does not match its CRC; ``a`` = computed, ``b`` = expected."""
    BAD_PACKAGE = 11
    """The image is not a valid weight package (the text says which field)."""
    NO_MODEL = 12
    """``INFER`` with no runnable model; ``ROLLBACK`` to a slot without a committed image
    (``a`` = slot, ``b`` = active slot)."""
    BAD_INPUT = 13
    """``INFER`` input length is wrong; ``a`` = bytes sent, ``b`` = inputs of the model."""
    RANGE = 14
    """``READ`` past the readable bytes (the active image, the bytes of an upload received so
    far, or the slot); ``a`` = offset + length, ``b`` = bytes readable."""
    FLASH = 15
    """The flash refused an operation (the text says which)."""


# --------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class Frame:
    """One decoded frame."""

    type: int
    """Message type (:class:`Msg` value for known types)."""
    seq: int
    """Sequence number, 0..65535; a reply carries the seq of its request."""
    payload: bytes = b""
    """Message body (see the payload classes below)."""


def frame_bytes(frame: Frame) -> bytes:
    """The decoded form of ``frame``: header, payload and CRC (before COBS)."""
    if not 0 <= frame.type <= 0xFF:
        raise ProtocolError(f"frame type {frame.type} is not a byte (0..255)")
    if not 0 <= frame.seq <= 0xFFFF:
        raise ProtocolError(f"sequence number {frame.seq} is outside 0..65535")
    if len(frame.payload) > 0xFFFF:
        raise ProtocolError(f"payload of {len(frame.payload)} bytes exceeds 65535")
    body = HEADER.pack(frame.type, frame.seq, len(frame.payload)) + bytes(frame.payload)
    return body + CRC.pack(zlib.crc32(body))


def encode_frame(frame: Frame) -> bytes:
    """``frame`` as it goes on the wire: COBS-encoded, with the trailing ``0x00`` delimiter."""
    return cobs_encode(frame_bytes(frame)) + DELIMITER


def decode_frame(encoded: bytes) -> Frame:
    """Decode one frame from its COBS bytes (without the delimiter); ``ProtocolError`` if bad."""
    try:
        raw = cobs_decode(encoded)
    except CobsError as exc:
        raise ProtocolError(str(exc)) from exc
    if len(raw) < FRAME_OVERHEAD:
        raise ProtocolError(f"frame of {len(raw)} bytes is shorter than {FRAME_OVERHEAD}")
    body, (crc,) = raw[:-CRC.size], CRC.unpack(raw[-CRC.size :])
    if zlib.crc32(body) != crc:
        raise ProtocolError(f"frame CRC {crc:#010x} does not match {zlib.crc32(body):#010x}")
    ftype, seq, length = HEADER.unpack_from(body)
    if length != len(body) - HEADER.size:
        raise ProtocolError(f"frame length field {length} != payload of {len(body) - HEADER.size}")
    return Frame(ftype, seq, bytes(body[HEADER.size :]))


class FrameDecoder:
    """Turns a byte stream into frames; survives noise, lost bytes and oversized garbage.

    Bytes accumulate until a ``0x00`` delimiter. A chunk longer than the largest valid frame is
    discarded up to the next delimiter; a chunk that fails decoding is counted and dropped.
    """

    def __init__(self, max_payload: int = 0xFFFF) -> None:
        self.max_encoded = cobs_max_len(max_payload + FRAME_OVERHEAD)
        """Longest COBS chunk accepted, in bytes."""
        self.frames = 0
        """Frames decoded so far."""
        self.errors = 0
        """Chunks dropped so far (bad COBS, CRC or length, or too long)."""
        self.last_error = ""
        """Why the last chunk was dropped."""
        self._buf = bytearray()
        self._overflow = False

    def feed(self, data: bytes) -> list[Frame]:
        """Add received bytes; return the frames they complete, in order."""
        out: list[Frame] = []
        for piece, ends in _split_keep(data):
            if not self._overflow:
                self._buf += piece
                if len(self._buf) > self.max_encoded:
                    self._overflow = True
                    self._buf.clear()
            if not ends:
                continue
            if self._overflow:
                self._drop("chunk longer than the largest frame")
                self._overflow = False
            elif self._buf:
                try:
                    out.append(decode_frame(bytes(self._buf)))
                    self.frames += 1
                except ProtocolError as exc:
                    self._drop(str(exc))
            self._buf.clear()
        return out

    def reset(self) -> None:
        """Forget a partial frame (the counters are kept)."""
        self._buf.clear()
        self._overflow = False

    def _drop(self, why: str) -> None:
        self.errors += 1
        self.last_error = why


def _split_keep(data: bytes) -> list[tuple[bytes, bool]]:
    """Split at delimiters: [(piece, ended_by_delimiter), ...]."""
    parts = bytes(data).split(DELIMITER)
    return [(p, i < len(parts) - 1) for i, p in enumerate(parts)]


# --------------------------------------------------------------------------- payloads


PayloadT = TypeVar("PayloadT", bound="Payload")


class Payload:
    """Base of the message bodies: a fixed little-endian struct, then an optional tail."""

    TYPE: ClassVar[Msg]
    FIXED: ClassVar[struct.Struct]
    TAIL: ClassVar[str | None] = None
    """Name of the field holding the variable-length tail (bytes or text), if any."""

    def pack(self) -> bytes:
        values = [getattr(self, f.name) for f in fields(self)]  # type: ignore[arg-type]
        tail = b""
        if self.TAIL is not None:
            t = values.pop()
            tail = t.encode("utf-8") if isinstance(t, str) else bytes(t)
        try:
            return self.FIXED.pack(*values) + tail
        except struct.error as exc:
            raise ProtocolError(f"{type(self).__name__}: {exc}") from exc

    @classmethod
    def unpack(cls: type[PayloadT], payload: bytes) -> PayloadT:
        if len(payload) < cls.FIXED.size or (cls.TAIL is None and len(payload) != cls.FIXED.size):
            want = f"{cls.FIXED.size}" + (" or more" if cls.TAIL else "")
            raise ProtocolError(
                f"{cls.TYPE.name} payload of {len(payload)} bytes; expected {want}"
            )
        values = list(cls.FIXED.unpack_from(payload))
        if cls.TAIL is not None:
            tail = bytes(payload[cls.FIXED.size :])
            kind = {f.name: f.type for f in fields(cls)}[cls.TAIL]  # type: ignore[arg-type]
            if kind == "str":
                try:
                    values.append(tail.decode("utf-8"))
                except UnicodeDecodeError as exc:
                    raise ProtocolError(f"{cls.TYPE.name} text is not UTF-8") from exc
            else:
                values.append(tail)
        return cls(*values)

    def frame(self, seq: int) -> Frame:
        return Frame(int(self.TYPE), seq, self.pack())


@dataclass(frozen=True)
class Hello(Payload):
    """``HELLO``: the host opens a session and tells its protocol version."""

    TYPE = Msg.HELLO
    FIXED = struct.Struct("<H")
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class Info(Payload):
    """``INFO``: the device's protocol version and limits (reply to ``HELLO``)."""

    TYPE = Msg.INFO
    FIXED = struct.Struct("<HHIIIII")
    TAIL = "name"
    version: int
    max_payload: int
    """Largest payload the device accepts in one frame, in bytes."""
    flash_bytes: int
    """Flash set aside for models (both slots and the commit record), in bytes."""
    page_bytes: int
    """Flash erase page, in bytes."""
    slot_bytes: int
    """Largest model one slot holds, in bytes."""
    ram_bytes: int
    """RAM arena for activations, in bytes."""
    clock_hz: int
    """CPU clock the cycle estimates refer to, in hertz."""
    name: str = ""


@dataclass(frozen=True)
class Begin(Payload):
    """``BEGIN``: start (or resume) an upload of ``size`` bytes into ``slot``."""

    TYPE = Msg.BEGIN
    FIXED = struct.Struct("<IIIB")
    TAIL = "image_id"
    size: int
    crc32: int
    """``zlib.crc32`` of the whole image."""
    ram_bytes: int
    """Activation arena the model needs, in bytes (from its package header)."""
    slot: int = AUTO_SLOT
    image_id: bytes = b""
    """The image's SHA-256 (:data:`IMAGE_ID_BYTES`), or empty: an upload in progress is resumed
    only by a ``BEGIN`` naming the same image, and ``COMMIT`` checks the image against it. Size
    and CRC alone cannot tell two packages apart: a package ends with the CRC-32 of the bytes
    before it, so the CRC-32 of every whole package is the same constant, 0x2144DF1C (the
    CRC-32 residue)."""


@dataclass(frozen=True)
class Data(Payload):
    """``DATA``: image bytes at ``offset``."""

    TYPE = Msg.DATA
    FIXED = struct.Struct("<I")
    TAIL = "data"
    offset: int
    data: bytes


@dataclass(frozen=True)
class Commit(Payload):
    """``COMMIT``: check the image against size, CRC and SHA-256, then make its slot active."""

    TYPE = Msg.COMMIT
    FIXED = struct.Struct("<II")
    TAIL = "image_id"
    size: int
    crc32: int
    image_id: bytes = b""
    """The image's SHA-256, as in ``BEGIN`` (or empty). With no upload of that image in
    progress, the ``COMMIT`` is acknowledged again only if the image it names is the active
    one (its earlier ``ACK`` was lost)."""


@dataclass(frozen=True)
class Read(Payload):
    """``READ``: ``length`` bytes of ``slot`` (``ACTIVE_SLOT`` = the active one) at ``offset``."""

    TYPE = Msg.READ
    FIXED = struct.Struct("<BIH")
    slot: int
    offset: int
    length: int


@dataclass(frozen=True)
class ReadData(Payload):
    """``READ_DATA``: reply to ``READ``: the bytes at ``offset``."""

    TYPE = Msg.READ_DATA
    FIXED = struct.Struct("<I")
    TAIL = "data"
    offset: int
    data: bytes


@dataclass(frozen=True)
class Infer(Payload):
    """``INFER``: one int8 input vector (one byte per input, two's complement)."""

    TYPE = Msg.INFER
    FIXED = struct.Struct("<")
    TAIL = "data"
    data: bytes


@dataclass(frozen=True)
class Result(Payload):
    """``RESULT``: the int8 output vector and the device's cycle estimate for it."""

    TYPE = Msg.RESULT
    FIXED = struct.Struct("<I")
    TAIL = "data"
    cycles: int
    data: bytes


@dataclass(frozen=True)
class Ack(Payload):
    """``ACK`` of request ``of`` with two numbers whose meaning depends on it (see the spec)."""

    TYPE = Msg.ACK
    FIXED = struct.Struct("<BII")
    of: int
    a: int = 0
    b: int = 0


@dataclass(frozen=True)
class Nak(Payload):
    """``NAK`` of request ``of``: an :class:`Err` code, two numbers and a readable text."""

    TYPE = Msg.NAK
    FIXED = struct.Struct("<BBII")
    TAIL = "text"
    of: int
    code: int
    a: int = 0
    b: int = 0
    text: str = ""

    def describe(self) -> str:
        try:
            name = Err(self.code).name
        except ValueError:
            name = f"error {self.code}"
        return self.text or f"{name} (a={self.a}, b={self.b})"


@dataclass(frozen=True)
class Status(Payload):
    """``STATUS_REPLY``: the active model, the upload in progress and flash wear."""

    TYPE = Msg.STATUS_REPLY
    FIXED = struct.Struct("<BIIHHBBIIIIIIII")
    TAIL = "model_id"
    active_slot: int
    """Slot of the running model, ``ACTIVE_SLOT`` (0xFF) when none."""
    active_size: int
    active_crc32: int
    n_inputs: int
    """Inputs of the running model (0 when none or not runnable)."""
    n_outputs: int
    runnable: int
    """1 if the active model passed validation and can run inference."""
    upload_slot: int
    """Slot receiving an upload, 0xFF when none."""
    upload_size: int
    upload_crc32: int
    upload_received: int
    """Bytes received in order (the offset to resume from)."""
    upload_durable: int
    """Bytes of the upload already written to flash (readable with ``READ``)."""
    max_erase_count: int
    """Erase count of the most-erased flash page."""
    total_erases: int
    frames_ok: int
    frames_bad: int
    """Frames dropped since power-on (bad COBS, CRC or length)."""
    model_id: bytes = b""
    """Identifier of the running model (from its package), empty when none."""


ROLLBACK_CHECK = 0x01
"""``ROLLBACK`` flag: check that the slot could become active, and change nothing."""


@dataclass(frozen=True)
class Rollback(Payload):
    """``ROLLBACK``: make ``slot`` active again, if it still holds an image a commit record
    names (one that passed every ``COMMIT`` check); with :data:`ROLLBACK_CHECK` in ``flags``,
    only say whether it could. Naming the slot, rather than "the other one", makes the request
    idempotent: sent again after a lost ``ACK``, it finds the slot already active."""

    TYPE = Msg.ROLLBACK
    FIXED = struct.Struct("<BB")
    slot: int
    flags: int = 0


REQUESTS: dict[int, type[Payload]] = {
    Msg.HELLO: Hello, Msg.BEGIN: Begin, Msg.DATA: Data, Msg.COMMIT: Commit, Msg.READ: Read,
    Msg.INFER: Infer, Msg.ROLLBACK: Rollback,
}
"""Requests with a payload class; ``ABORT``, ``STATUS`` and ``RESET`` carry none."""
REPLIES: dict[int, type[Payload]] = {
    Msg.INFO: Info, Msg.ACK: Ack, Msg.NAK: Nak, Msg.READ_DATA: ReadData, Msg.RESULT: Result,
    Msg.STATUS_REPLY: Status,
}
EMPTY_REQUESTS = (Msg.ABORT, Msg.STATUS, Msg.RESET)


def parse_reply(frame: Frame) -> Payload:
    """The payload object of a device reply; ``ProtocolError`` for unknown or malformed ones."""
    cls = REPLIES.get(frame.type)
    if cls is None:
        raise ProtocolError(f"frame type {frame.type:#04x} is not a reply")
    return cls.unpack(frame.payload)


def data_frame_len(n: int) -> int:
    """Wire bytes of a ``DATA`` frame carrying ``n`` image bytes (worst-case COBS)."""
    return cobs_max_len(FRAME_OVERHEAD + Data.FIXED.size + n) + 1


# --------------------------------------------------------------------------- worked example


def example_exchange() -> list[tuple[str, Frame]]:
    """A short session, as (who, frame): the worked example of ``docs/PROTOCOL.md``.

    The device figures are those of the ``cortex-m4`` preset of the simulator.
    """
    image_head = b"M1WP\x01\x00\x50\x00"  # the first bytes of a weight package
    image_id = hashlib.sha256(b"the 27,604-byte image").digest()  # mark1 push sends the SHA-256
    return [
        ("host", Hello().frame(1)),
        ("device", Info(PROTOCOL_VERSION, 1024, 262144, 2048, 129024, 65536, 80_000_000,
                        "mark1-sim cortex-m4").frame(1)),
        ("host", Begin(27604, 0x2144DF1C, 464, AUTO_SLOT, image_id).frame(2)),
        ("device", Ack(Msg.BEGIN, 0, 0).frame(2)),
        ("host", Data(0, image_head).frame(3)),
        ("device", Ack(Msg.DATA, 8, 8).frame(3)),
        ("host", Read(0, 0, 8).frame(4)),
        ("device", ReadData(0, image_head).frame(4)),
        ("host", Commit(27604, 0x2144DF1C, image_id).frame(9)),
        ("device", Nak(Msg.COMMIT, Err.INCOMPLETE, 8, 27604,
                       "only 8 of 27604 bytes received").frame(9)),
    ]


def _hex_lines(data: bytes, indent: str) -> list[str]:
    return [indent + data[i : i + 16].hex(" ") for i in range(0, len(data), 16)]


def render_example() -> str:
    """Markdown of :func:`example_exchange`: each frame decoded, before COBS, and on the wire."""
    lines = ["```"]
    for who, frame in example_exchange():
        cls = REQUESTS.get(frame.type) or REPLIES.get(frame.type)
        body = cls.unpack(frame.payload) if cls is not None else None
        what = repr(body) if body is not None else Msg(frame.type).name
        lines.append(f"{who} -> {'device' if who == 'host' else 'host'}: seq {frame.seq} {what}")
        lines.append("  frame (type seq length payload crc32):")
        lines += _hex_lines(frame_bytes(frame), "    ")
        lines.append("  on the wire (COBS + 00):")
        lines += _hex_lines(encode_frame(frame), "    ")
    lines.append("```")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_example(), end="")
