"""The simulated microcontroller's firmware: the message handler and its state machine.

A :class:`Device` owns a :class:`~firmware_sim.flash.Flash` laid out as a
:class:`~firmware_sim.flash.ModelStore` (slots A and B plus a commit log) and answers every request
frame of :mod:`export.contract.protocol` with one reply frame. State, as on the real part:

* in flash (survives a power cycle): both slots, the commit log, per-page erase counts;
* in RAM (lost on ``RESET`` or power loss): the upload in progress -- target slot, size, CRC,
  bytes received in order and up to :data:`MAX_AHEAD` ranges received beyond them (a
  :class:`~export.contract.ranges.ByteRanges`, the set type the host's upload keeps too) --
  and the loaded model.

An upload goes to the slot that is not active. Each ``DATA`` frame is programmed into flash as it
arrives (write-through, so an acknowledged byte is a byte in flash), also when it arrives out of
order, past a lost frame (selective repeat: the host then sends the lost frame alone); a page is
erased when the upload first writes into it. ``COMMIT`` re-reads the image from flash, checks
size, CRC-32 and the SHA-256 that ``BEGIN`` named, decodes the package and checks its RAM need,
and only then appends the commit record (which names the image by its SHA-256): power lost at
any point before the record is complete leaves the previous model active. A ``COMMIT`` with no
upload of its image in progress is acknowledged again only if the image it names is the active
one.

``ROLLBACK`` makes the other slot active again if it still holds an image a commit record names:
it appends a commit record naming that image, and nothing else, so a power cut leaves either
model active, never neither.
"""

from __future__ import annotations

import hashlib
import os
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from export.contract import protocol as P
from export.contract.package import HEADER as PACKAGE_HEADER
from export.contract.package import Package, PackageError, decode_package, peek_header
from export.contract.ranges import ByteRanges
from firmware_sim.engine import CORTEX_M4_80MHZ, CortexM4Cost, Engine
from firmware_sim.flash import (
    ID_BYTES,
    MAX_ERASES,
    Flash,
    FlashError,
    ModelStore,
    check_geometry,
)
from mark1.limits import check_fields, limit

MAX_CYCLES = 2**32 - 1
_U32 = 2**32 - 1
"""Largest value of a u32 field of a reply."""
MAX_FLASH_BYTES = 64 * 2**20
"""Most model flash a simulated part may have (the largest microcontroller flashes hold a few
MiB; the simulator keeps it all in memory, and the state file as large)."""
MAX_RAM_BYTES = 64 * 2**20
"""Most activation RAM a simulated part may have."""

_HEADER_BYTES = PACKAGE_HEADER.size
"""Bytes of the package header, checked as soon as they have arrived."""
MAX_AHEAD = 16
"""Byte ranges an upload keeps track of past the bytes received in order (a small table in RAM):
a ``DATA`` frame that would need more is refused (``NAK OFFSET``) and sent again later."""


@dataclass(frozen=True)
class DeviceConfig:
    """Limits of the simulated part."""

    flash_bytes: int = field(default=256 * 1024, metadata=limit(
        128, MAX_FLASH_BYTES, "bytes", integer=True))
    """Flash set aside for models (commit-record pages and both slots), in bytes."""
    page_bytes: int = field(default=2048, metadata=limit(32, 65536, "bytes", integer=True))
    """Flash erase page, in bytes (a power of two)."""
    ram_bytes: int = field(default=64 * 1024, metadata=limit(
        1, MAX_RAM_BYTES, "bytes", integer=True))
    """RAM arena for activations, in bytes."""
    max_payload: int = field(default=1024, metadata=limit(64, 65535, "bytes", integer=True))
    """Largest frame payload the firmware's receive buffer takes, in bytes."""
    endurance: int = field(default=10_000, metadata=limit(0, MAX_ERASES, "erases",
                                                          integer=True))
    """Erase cycles a flash page is rated for; past it, programming fails (bit 7 stays 1)."""
    cost: CortexM4Cost = CORTEX_M4_80MHZ
    """Cycle cost model of the inference engine (its clock is reported in ``INFO``)."""
    name: str = "mark1-sim cortex-m4"
    """Name the device reports in ``INFO``."""

    def __post_init__(self) -> None:
        check_fields(self)
        check_geometry(self.flash_bytes, self.page_bytes)


DEFAULT_PRESET = "cortex-m4"
"""The device ``mark1 device`` simulates unless told otherwise."""
PRESETS: dict[str, DeviceConfig] = {
    DEFAULT_PRESET: DeviceConfig(),
    "cortex-m4-small": DeviceConfig(
        flash_bytes=64 * 1024, page_bytes=1024, ram_bytes=8 * 1024, max_payload=512,
        name="mark1-sim cortex-m4 (small)",
    ),
}
"""Named devices: a Cortex-M4 at 80 MHz with 256 KiB of model flash in 2 KiB pages and a 64 KiB
activation arena; and a smaller part with 64 KiB of flash, 8 KiB of arena and 512-byte frames."""


@dataclass
class Upload:
    """The upload in progress (RAM only)."""

    slot: int
    size: int
    crc32: int
    ram_bytes: int
    image_id: bytes = b""
    """The image's SHA-256 as the ``BEGIN`` named it (empty if not): only the same id resumes,
    and ``COMMIT`` checks the image against it."""
    written: ByteRanges = field(default_factory=ByteRanges)
    """Byte ranges of the image written to flash: the bytes received in order from 0, and up
    to :data:`MAX_AHEAD` ranges received beyond them."""
    erased: set[int] = field(default_factory=set)
    """Pages of the slot this upload has erased (each is erased before its first write)."""
    head: bytearray = field(default_factory=lambda: bytearray(_HEADER_BYTES))
    """The image's first bytes (the package header), checked once all have arrived."""
    header_checked: bool = False

    @property
    def received(self) -> int:
        """Bytes received in order and written to flash: where a resumed upload continues."""
        return self.written.run_end(0)

    @property
    def durable(self) -> int:
        """Bytes of the upload in flash (in order and ahead)."""
        return self.written.size


def _ranges_ahead(written: ByteRanges) -> int:
    """How many ranges of ``written`` lie past the bytes received in order."""
    return sum(1 for start, _ in written if start > 0)


class Device:
    """Firmware state machine. :meth:`handle` maps one request frame to its reply frame."""

    def __init__(
        self,
        config: DeviceConfig = PRESETS[DEFAULT_PRESET],
        flash: Flash | None = None,
        *,
        state_path: str | os.PathLike[str] | None = None,
        protocol_version: int = P.PROTOCOL_VERSION,
    ) -> None:
        if flash is None:
            flash = Flash(config.flash_bytes, config.page_bytes, path=state_path,
                          endurance=config.endurance)
        elif (flash.size, flash.page_bytes) != (config.flash_bytes, config.page_bytes):
            raise ValueError(
                f"flash of {flash.size} bytes in {flash.page_bytes}-byte pages does not match "
                f"the configuration ({config.flash_bytes}, {config.page_bytes})"
            )
        self.config = config
        self.flash = flash
        self.store = ModelStore(flash)
        self.protocol_version = protocol_version
        """Version reported in ``INFO`` (another value lets a test play an incompatible part)."""
        self.lock = threading.Lock()
        """Held while a frame is handled; a server handles one session at a time."""
        self.decoder = P.FrameDecoder(config.max_payload)
        self.faults = 0
        """Unexpected exceptions caught by :meth:`receive_frames` (each reboots the device)."""
        self.boot()

    # ------------------------------------------------------------------ power and boot

    def boot(self) -> None:
        """Start as after reset: forget the upload, find the active model in flash, load it."""
        self.upload: Upload | None = None
        found = self.store.active_image()
        self.active = None if found is None else found[0]
        self.active_sha256 = b""
        """SHA-256 of the active image (what a repeated ``COMMIT`` must name)."""
        self.package: Package | None = None
        self.engine: Engine | None = None
        self.load_error = ""
        if found is not None:
            image = found[1]
            self.active_sha256 = hashlib.sha256(image).digest()
            self.package, self.engine, self.load_error = self._load(image)

    def _load(self, image: bytes) -> tuple[Package | None, Engine | None, str]:
        """(package, engine, "") for a runnable image, else (package or None, None, why)."""
        try:
            pkg = decode_package(image)
        except PackageError as exc:
            return None, None, str(exc)
        problem = self._fit_problem(pkg)
        if problem:
            return pkg, None, problem
        return pkg, Engine(pkg, self.config.cost), ""

    def _frame_room(self) -> int:
        """Most int8 values one ``INFER`` or ``RESULT`` frame carries."""
        return self.config.max_payload - P.Result.FIXED.size

    def _fit_problem(self, pkg: Package) -> str:
        room = self._frame_room()
        if pkg.ram_bytes > self.config.ram_bytes:
            return (f"model needs {pkg.ram_bytes} bytes of RAM; the arena has "
                    f"{self.config.ram_bytes}")
        if pkg.n_inputs > room or pkg.n_outputs > room:
            return (f"model has {pkg.n_inputs} inputs and {pkg.n_outputs} outputs; one frame "
                    f"carries at most {room}")
        return ""

    def power_cycle(self) -> Device:
        """The same part after power off and on: flash kept, RAM lost."""
        return Device(self.config, self.flash.power_cycle(), protocol_version=self.protocol_version)

    # ------------------------------------------------------------------ byte stream

    def new_session(self) -> None:
        """Forget a partial frame from a previous connection."""
        with self.lock:
            self.decoder.reset()

    def receive_frames(self, data: bytes) -> list[P.Frame]:
        """Feed received bytes; return the replies to the frames they complete.

        An unexpected exception in the handler counts as a firmware fault: the device reboots
        (as a watchdog would) and the frame gets no reply.
        """
        out = []
        with self.lock:
            for frame in self.decoder.feed(data):
                try:
                    out.append(self.handle(frame))
                except Exception:  # noqa: BLE001 - a firmware fault, not bad input
                    self.faults += 1
                    self.boot()
        return out

    def receive(self, data: bytes) -> bytes:
        """Like :meth:`receive_frames`, with the replies encoded for the wire."""
        return b"".join(P.encode_frame(f) for f in self.receive_frames(data))

    # ------------------------------------------------------------------ messages

    def handle(self, frame: P.Frame) -> P.Frame:
        """The reply to one request frame."""
        handler = _HANDLERS.get(frame.type)
        if handler is None:
            return self._nak(frame, P.Err.UNKNOWN_TYPE, frame.type, 0,
                             f"frame type {frame.type:#04x} is not a request")
        try:
            reply = handler(self, frame)
        except P.ProtocolError as exc:
            return self._nak(frame, P.Err.BAD_PAYLOAD, len(frame.payload), 0, str(exc))
        except FlashError as exc:
            self.upload = None
            return self._nak(frame, P.Err.FLASH, 0, 0, f"flash: {exc}")
        if isinstance(reply, P.Nak):
            reply = replace(reply, text=clip_text(reply.text))
        return reply.frame(frame.seq)

    @staticmethod
    def _nak(frame: P.Frame, code: P.Err, a: int, b: int, text: str) -> P.Frame:
        return P.Nak(frame.type, int(code), a, b, clip_text(text)).frame(frame.seq)

    def _no_payload(self, frame: P.Frame) -> None:
        if frame.payload:
            raise P.ProtocolError(
                f"{P.Msg(frame.type).name} takes no payload; got {len(frame.payload)} bytes"
            )

    def info(self) -> P.Info:
        c = self.config
        return P.Info(self.protocol_version, c.max_payload, c.flash_bytes, c.page_bytes,
                      self.store.slot_bytes, c.ram_bytes, int(c.cost.clock_hz), c.name)

    def _hello(self, frame: P.Frame) -> P.Payload:
        P.Hello.unpack(frame.payload)
        return self.info()

    def _begin(self, frame: P.Frame) -> P.Payload:
        b = P.Begin.unpack(frame.payload)
        slot_bytes, ram = self.store.slot_bytes, self.config.ram_bytes
        active = self.active.slot if self.active is not None else P.ACTIVE_SLOT
        if b.size == 0:
            raise P.ProtocolError("BEGIN size 0: an image has at least one byte")
        P.check_image_id(b.image_id, "BEGIN")
        if b.size > slot_bytes:
            return P.Nak(frame.type, P.Err.TOO_LARGE_FLASH, b.size, slot_bytes,
                         f"model of {b.size} bytes does not fit a {slot_bytes}-byte flash slot")
        if b.ram_bytes > ram:
            return P.Nak(frame.type, P.Err.TOO_LARGE_RAM, b.ram_bytes, ram,
                         f"model needs {b.ram_bytes} bytes of RAM; the arena has {ram}")
        slot = b.slot
        if slot == P.AUTO_SLOT:
            slot = 0 if active != 0 else 1
        if slot not in (0, 1) or slot == active:
            why = "holds the running model" if slot == active else "does not exist (0 = A, 1 = B)"
            return P.Nak(frame.type, P.Err.BAD_SLOT, slot, active, f"slot {slot} {why}")
        up = self.upload
        if up is None or (up.slot, up.size, up.crc32, up.ram_bytes, up.image_id) != (
            slot, b.size, b.crc32, b.ram_bytes, b.image_id
        ):
            self.upload = up = Upload(slot, b.size, b.crc32, b.ram_bytes, b.image_id)
        return P.Ack(frame.type, up.received, slot)

    def _data(self, frame: P.Frame) -> P.Payload:
        d = P.Data.unpack(frame.payload)
        up = self.upload
        if up is None:
            return P.Nak(frame.type, P.Err.NO_UPLOAD, 0, 0, "no upload in progress (send BEGIN)")
        end = d.offset + len(d.data)
        if not d.data or end > up.size:
            raise P.ProtocolError(
                f"DATA of {len(d.data)} bytes at {d.offset}: must be non-empty and end by the "
                f"image size {up.size}"
            )
        gaps = up.written.gaps(d.offset, end)
        trial = up.written.copy()
        trial.add(d.offset, end)
        if gaps and _ranges_ahead(trial) > MAX_AHEAD:
            return P.Nak(frame.type, P.Err.OFFSET, up.received, d.offset,
                         f"expected offset {up.received}, got {d.offset} (already "
                         f"{_ranges_ahead(up.written)} ranges received out of order)")
        page = self.config.page_bytes
        for start, stop in gaps:  # only bytes not yet written: flash is written once
            pos = start
            while pos < stop:  # page by page
                index = pos // page
                cut = min(stop, (index + 1) * page)
                if index not in up.erased:  # the first write into this page: erase it
                    self.store.erase_page(up.slot, index)
                    up.erased.add(index)
                piece = d.data[pos - d.offset : cut - d.offset]
                self.store.write_slot(up.slot, pos, piece)
                if pos < _HEADER_BYTES:
                    up.head[pos : min(cut, _HEADER_BYTES)] = piece[: _HEADER_BYTES - pos]
                pos = cut
            up.written.add(start, stop)
        problem = self._header_problem(up)
        if problem is not None:
            self.upload = None
            return P.Nak(frame.type, *problem)
        return P.Ack(frame.type, up.received, up.durable)

    def _header_problem(self, up: Upload) -> tuple[P.Err, int, int, str] | None:
        """Check the package header as soon as it has arrived (once per upload)."""
        if up.received < _HEADER_BYTES or up.header_checked:
            return None
        up.header_checked = True
        try:
            head = peek_header(bytes(up.head))
        except PackageError as exc:
            return P.Err.BAD_PACKAGE, 0, 0, f"not a weight package: {exc}"
        if head.total_size != up.size:
            return (P.Err.BAD_PACKAGE, head.total_size, up.size,
                    f"package header says {head.total_size} bytes; BEGIN said {up.size}")
        if head.ram_bytes > self.config.ram_bytes:
            return (P.Err.TOO_LARGE_RAM, head.ram_bytes, self.config.ram_bytes,
                    f"model needs {head.ram_bytes} bytes of RAM; the arena has "
                    f"{self.config.ram_bytes}")
        room = self._frame_room()
        if max(head.n_inputs, head.n_outputs) > room:
            return (P.Err.BAD_PACKAGE, max(head.n_inputs, head.n_outputs), room,
                    f"model has {head.n_inputs} inputs and {head.n_outputs} outputs; one frame "
                    f"carries at most {room}")
        return None

    def _commit(self, frame: P.Frame) -> P.Payload:
        c = P.Commit.unpack(frame.payload)
        P.check_image_id(c.image_id, "COMMIT")
        up = self.upload
        if up is None or (c.image_id and c.image_id != up.image_id):
            act = self.active
            if c.image_id and act is not None and c.image_id == self.active_sha256 and (
                act.size, act.crc32) == (c.size, c.crc32):
                return P.Ack(frame.type, act.slot, act.crc32)  # a repeat: its ACK was lost
            what = f"image {c.image_id.hex()[:16]}" if c.image_id else "the image (unnamed)"
            return P.Nak(frame.type, P.Err.NO_UPLOAD, 0, 0,
                         f"no upload of {what} in progress to commit, and it is not the "
                         "active model")
        if (c.size, c.crc32) != (up.size, up.crc32):
            return P.Nak(frame.type, P.Err.CRC_MISMATCH, c.crc32, up.crc32,
                         f"COMMIT names {c.size} bytes CRC {c.crc32:#010x}; the upload is "
                         f"{up.size} bytes CRC {up.crc32:#010x}")
        if up.received < up.size:
            return P.Nak(frame.type, P.Err.INCOMPLETE, up.received, up.size,
                         f"only {up.received} of {up.size} bytes received")
        self.upload = None
        image = self.store.read_slot(up.slot, 0, up.size)
        crc = zlib.crc32(image)
        if crc != up.crc32:
            return P.Nak(frame.type, P.Err.CRC_MISMATCH, crc, up.crc32,
                         f"image in flash has CRC {crc:#010x}, expected {up.crc32:#010x}")
        sha = hashlib.sha256(image).digest()
        if up.image_id and sha != up.image_id:
            return P.Nak(frame.type, P.Err.CRC_MISMATCH, _u32(sha), _u32(up.image_id),
                         f"image in flash has SHA-256 {sha.hex()[:16]}..., BEGIN named "
                         f"{up.image_id.hex()[:16]}...")
        pkg, engine, problem = self._load(image)
        refused = self._unrunnable(frame, pkg, problem)
        if refused is not None:
            return refused
        self._activate(up.slot, up.size, up.crc32, sha, pkg, engine)
        return P.Ack(frame.type, up.slot, up.crc32)

    def _rollback(self, frame: P.Frame) -> P.Payload:
        r = P.Rollback.unpack(frame.payload)
        if r.flags & ~P.ROLLBACK_CHECK:
            raise P.ProtocolError(f"ROLLBACK flags {r.flags:#04x}: only "
                                  f"{P.ROLLBACK_CHECK:#04x} (check only) is defined")
        act = self.active
        active = act.slot if act is not None else P.ACTIVE_SLOT
        if r.slot not in (0, 1):
            return P.Nak(frame.type, P.Err.BAD_SLOT, r.slot, active,
                         f"slot {r.slot} does not exist (0 = A, 1 = B)")
        if act is not None and r.slot == act.slot:  # running already (or a repeat)
            return P.Ack(frame.type, act.slot, act.crc32)
        found = self.store.committed_image(r.slot)
        if found is None:
            return P.Nak(frame.type, P.Err.NO_MODEL, r.slot, active,
                         f"slot {'AB'[r.slot]} holds no committed model (none was, or an "
                         "upload has written there since)")
        rec, image = found
        pkg, engine, problem = self._load(image)
        refused = self._unrunnable(frame, pkg, problem)
        if refused is not None:
            return refused
        if r.flags & P.ROLLBACK_CHECK:
            return P.Ack(frame.type, r.slot, rec.crc32)
        self.upload = None  # it was writing this slot
        self._activate(r.slot, rec.size, rec.crc32, hashlib.sha256(image).digest(), pkg, engine)
        return P.Ack(frame.type, r.slot, rec.crc32)

    def _activate(self, slot: int, size: int, crc32: int, sha: bytes, pkg: Package | None,
                  engine: Engine | None) -> None:
        """Append the commit record that makes ``slot`` (its image of SHA-256 ``sha`` checked
        and loaded) active, and run it."""
        self.active = self.store.commit(slot, size, crc32, sha[:ID_BYTES])
        self.active_sha256 = sha
        self.package, self.engine, self.load_error = pkg, engine, ""

    def _unrunnable(self, frame: P.Frame, pkg: Package | None, problem: str) -> P.Nak | None:
        """The ``NAK`` for an image that is no package or cannot run here (from :meth:`_load`);
        ``None`` for a runnable one."""
        if pkg is None:
            return P.Nak(frame.type, P.Err.BAD_PACKAGE, 0, 0, f"not a weight package: {problem}")
        if problem:
            code = P.Err.TOO_LARGE_RAM if pkg.ram_bytes > self.config.ram_bytes else \
                P.Err.BAD_PACKAGE
            return P.Nak(frame.type, code, pkg.ram_bytes, self.config.ram_bytes, problem)
        return None

    def _abort(self, frame: P.Frame) -> P.Payload:
        self._no_payload(frame)
        self.upload = None
        return P.Ack(frame.type)

    def _read(self, frame: P.Frame) -> P.Payload:
        r = P.Read.unpack(frame.payload)
        slot = r.slot
        if slot == P.ACTIVE_SLOT:
            if self.active is None:
                return P.Nak(frame.type, P.Err.NO_MODEL, 0, 0, "no active model to read")
            slot, limit = self.active.slot, self.active.size
        elif slot not in (0, 1):
            return P.Nak(frame.type, P.Err.BAD_SLOT, slot, 0, f"slot {slot} does not exist")
        elif self.upload is not None and self.upload.slot == slot:
            limit = self.upload.received  # only what this upload has written
        else:
            limit = self.store.slot_bytes
        room = self.config.max_payload - P.ReadData.FIXED.size
        if r.length > room:
            raise P.ProtocolError(f"READ of {r.length} bytes; one reply carries at most {room}")
        if r.offset + r.length > limit:
            end = min(r.offset + r.length, 0xFFFFFFFF)  # the NAK's fields are u32
            return P.Nak(frame.type, P.Err.RANGE, end, limit,
                         f"READ {r.offset}+{r.length} is past the {limit} readable bytes")
        return P.ReadData(r.offset, self.store.read_slot(slot, r.offset, r.length))

    def _infer(self, frame: P.Frame) -> P.Payload:
        x = P.Infer.unpack(frame.payload).data
        if self.engine is None:
            why = self.load_error or "no model has been committed"
            return P.Nak(frame.type, P.Err.NO_MODEL, 0, 0, f"no runnable model: {why}")
        n_in = self.engine.n_inputs
        if len(x) != n_in:
            return P.Nak(frame.type, P.Err.BAD_INPUT, len(x), n_in,
                         f"input of {len(x)} bytes; the model takes {n_in} int8 values")
        y, cycles = self.engine.infer(np.frombuffer(x, dtype=np.int8))
        y = np.asarray(y, dtype=np.int8)
        return P.Result(min(int(cycles), MAX_CYCLES), y.tobytes())

    def status(self) -> P.Status:
        act, up, pkg, engine = self.active, self.upload, self.package, self.engine
        counts = self.flash.erase_counts
        return P.Status(
            active_slot=act.slot if act else P.ACTIVE_SLOT,
            active_size=act.size if act else 0,
            active_crc32=act.crc32 if act else 0,
            n_inputs=engine.n_inputs if engine else 0,
            n_outputs=engine.n_outputs if engine else 0,
            runnable=int(engine is not None),
            upload_slot=up.slot if up else P.ACTIVE_SLOT,
            upload_size=up.size if up else 0,
            upload_crc32=up.crc32 if up else 0,
            upload_received=up.received if up else 0,
            upload_durable=up.durable if up else 0,
            max_erase_count=min(max(counts), _U32),
            total_erases=min(sum(counts), _U32),  # the fields are u32: saturate
            frames_ok=self.decoder.frames,
            frames_bad=self.decoder.errors,
            model_id=bytes(pkg.model_id) if pkg is not None else b"",
        )

    def _status(self, frame: P.Frame) -> P.Payload:
        self._no_payload(frame)
        return self.status()

    def _reset(self, frame: P.Frame) -> P.Payload:
        self._no_payload(frame)
        self.boot()
        return P.Ack(frame.type)


NAK_TEXT_MAX = 240
"""Longest ``NAK`` message, in bytes of UTF-8 (a firmware builds its replies in a fixed buffer):
a longer one is cut at a character boundary (docs/PROTOCOL.md)."""


def clip_text(text: str, limit: int = NAK_TEXT_MAX) -> str:
    """``text`` cut to ``limit`` bytes of UTF-8 at a character boundary."""
    raw = text.encode("utf-8")
    return text if len(raw) <= limit else raw[:limit].decode("utf-8", "ignore")


def _u32(digest: bytes) -> int:
    """The first four bytes of a digest as a ``NAK`` number."""
    return int.from_bytes(digest[:4], "little")


_HANDLERS: dict[int, Callable[[Device, P.Frame], P.Payload]] = {
    P.Msg.HELLO: Device._hello, P.Msg.BEGIN: Device._begin, P.Msg.DATA: Device._data,
    P.Msg.COMMIT: Device._commit, P.Msg.ABORT: Device._abort, P.Msg.READ: Device._read,
    P.Msg.INFER: Device._infer, P.Msg.STATUS: Device._status, P.Msg.RESET: Device._reset,
    P.Msg.ROLLBACK: Device._rollback,
}
