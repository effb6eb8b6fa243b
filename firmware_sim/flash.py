"""NOR flash with erase pages, and the A/B model store with a commit record written last.

:class:`Flash` behaves as on-chip flash of a small microcontroller: an erase sets a whole page to
``0xFF`` and counts toward that page's wear; a write may only program erased bytes within one
page. Every erase and write goes through a *power hook* that a test can use to cut power before,
inside (after a chosen number of bytes) or after any operation. With a ``path`` the flash lives in
a file, updated operation by operation, so a restart (a "power cycle") finds what was really
written, torn operations included.

:class:`ModelStore` lays the flash out as two commit-record pages followed by two equal model
slots, A and B. An upload is written to the slot that is not active; only when it is complete
and checked is a 32-byte commit record appended, naming the slot, the image size, its CRC-32 and
its image id (the first 8 bytes of its SHA-256). At boot the newest valid record whose image
still matches its size, CRC and id names the active model; a record torn by power loss fails its
own CRC and is ignored, so the previous model stays active.

The id is what tells images apart: a weight package ends with the CRC-32 of the bytes before
it, so the CRC-32 of every whole package is the same constant (0x2144DF1C, the CRC-32 residue).
Were records checked by size and CRC alone, a boot that falls back to an older record (the
newest one's image damaged) could run a complete but never committed package of the same size
that an upload left in the other slot.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ERASED = 0xFF
"""Value of every byte of an erased page."""

FILE_MAGIC = b"M1FLASH1"
FILE_HEADER = struct.Struct("<8sII")


class FlashError(RuntimeError):
    """An operation the flash cannot do (write over unerased bytes, across a page, out of range)."""


class PowerLoss(BaseException):
    """Power was cut during a flash operation (raised by the power hook; not an ``Exception``
    so that no handler meant for bad input swallows it)."""


@dataclass(frozen=True)
class FlashOp:
    """One erase or write, as shown to the power hook."""

    kind: str
    """``"erase"`` or ``"write"``."""
    page: int
    """Page index."""
    address: int
    """First byte address."""
    length: int
    """Bytes the operation changes."""
    index: int
    """Operations done since power-on before this one (0 = the first)."""


PowerHook = Callable[[FlashOp], "int | None"]
"""Called before each operation: ``None`` lets it run; an int ``k`` completes only its first ``k``
bytes (0 = none of it), then cuts power (:class:`PowerLoss`)."""


class Flash:
    """Page-erasable flash of ``size_bytes``, in memory or mirrored to a file at ``path``."""

    def __init__(
        self,
        size_bytes: int,
        page_bytes: int,
        *,
        path: str | os.PathLike[str] | None = None,
        hook: PowerHook | None = None,
        endurance: int | None = None,
    ) -> None:
        check_geometry(size_bytes, page_bytes)
        if endurance is not None and (isinstance(endurance, bool) or
                                      not isinstance(endurance, int) or endurance < 0):
            raise ValueError(f"endurance = {endurance!r}: must be a whole number >= 0 or None")
        self.endurance = endurance
        """Erase cycles a page is rated for (``None``: unlimited). Past it the page is worn out:
        its cells no longer program fully and bit 7 of every written byte stays 1."""
        self.size = int(size_bytes)
        """Flash size, in bytes."""
        self.page_bytes = int(page_bytes)
        """Erase page size, in bytes."""
        self.n_pages = self.size // self.page_bytes
        self.hook = hook
        """Power hook (see :data:`PowerHook`), or ``None``."""
        self.ops = 0
        """Erases and writes since power-on."""
        self.powered = True
        """False once power was cut; every later operation raises :class:`PowerLoss`."""
        self.path = Path(path) if path is not None else None
        self._fd: int | None = None
        if path is not None:
            state = claim_state_file(path, self.size, self.page_bytes)
            self._fd, self._mem, self._erases = state.fd, state.memory, state.erase_counts
        else:
            self._mem = bytearray([ERASED]) * self.size
            self._erases = [0] * self.n_pages

    # ------------------------------------------------------------------ state file

    def _persist(self, address: int, length: int, page: int) -> None:
        if self._fd is None:
            return
        counts_at = FILE_HEADER.size
        os.pwrite(self._fd, struct.pack("<I", self._erases[page]), counts_at + 4 * page)
        data_at = counts_at + 4 * self.n_pages
        os.pwrite(self._fd, bytes(self._mem[address : address + length]), data_at + address)

    def close(self) -> None:
        """Release the state file (the flash contents stay in it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def power_cycle(self) -> Flash:
        """A new flash object with exactly what this one holds now (re-read from the state file
        when there is one), powered and without a hook: the chip after a restart."""
        if self.path is not None:
            self.close()
            return Flash(self.size, self.page_bytes, path=self.path, endurance=self.endurance)
        new = Flash(self.size, self.page_bytes, endurance=self.endurance)
        new._mem[:] = self._mem
        new._erases[:] = self._erases
        return new

    # ------------------------------------------------------------------ operations

    @property
    def erase_counts(self) -> list[int]:
        """Erases of each page since the flash was new."""
        return list(self._erases)

    def read(self, address: int, length: int) -> bytes:
        """``length`` bytes from ``address``."""
        self._check_range(address, length)
        return bytes(self._mem[address : address + length])

    def erase(self, page: int) -> None:
        """Set every byte of ``page`` to ``0xFF``; counts one erase of that page."""
        if not 0 <= page < self.n_pages:
            raise FlashError(f"page {page} does not exist (0..{self.n_pages - 1})")
        address = page * self.page_bytes
        cut = self._before(FlashOp("erase", page, address, self.page_bytes, self.ops))
        self._erases[page] += 1
        done = self.page_bytes if cut is None else cut
        self._mem[address : address + done] = bytes([ERASED]) * done
        self._after(address, done, page, cut)

    def write(self, address: int, data: bytes) -> None:
        """Program ``data`` at ``address``: within one page, over erased bytes only."""
        data = bytes(data)
        self._check_range(address, len(data))
        page = address // self.page_bytes
        if data and (address + len(data) - 1) // self.page_bytes != page:
            raise FlashError(
                f"write of {len(data)} bytes at {address:#x} crosses the end of page {page}"
            )
        current = self._mem[address : address + len(data)]
        if current.count(ERASED) != len(current):
            bad = next(i for i, b in enumerate(current) if b != ERASED)
            raise FlashError(f"write at {address + bad:#x}: byte not erased (erase page {page})")
        cut = self._before(FlashOp("write", page, address, len(data), self.ops))
        done = len(data) if cut is None else cut
        if self.endurance is not None and self._erases[page] > self.endurance:
            data = bytes(b | 0x80 for b in data)  # worn cells: the top bit no longer programs
        self._mem[address : address + done] = data[:done]
        self._after(address, done, page, cut)

    def _before(self, op: FlashOp) -> int | None:
        if not self.powered:
            raise PowerLoss(f"flash {op.kind} of page {op.page} without power")
        cut = self.hook(op) if self.hook is not None else None
        if cut is not None:
            cut = max(0, min(int(cut), op.length))
        return cut

    def _after(self, address: int, done: int, page: int, cut: int | None) -> None:
        self.ops += 1
        self._persist(address, done, page)
        if cut is not None:
            self.powered = False
            raise PowerLoss(f"power cut after {done} bytes of operation {self.ops - 1}")

    def _check_range(self, address: int, length: int) -> None:
        if address < 0 or length < 0 or address + length > self.size:
            raise FlashError(
                f"range {address:#x}+{length} is outside the flash (0..{self.size:#x})"
            )


def check_geometry(size_bytes: int, page_bytes: int) -> None:
    """``ValueError`` unless the sizes make a flash the model store can use."""
    if isinstance(size_bytes, bool) or not isinstance(size_bytes, int):
        raise TypeError(f"flash size must be an int; got {type(size_bytes).__name__}")
    if isinstance(page_bytes, bool) or not isinstance(page_bytes, int):
        raise TypeError(f"page size must be an int; got {type(page_bytes).__name__}")
    if page_bytes < RECORD.size or page_bytes & (page_bytes - 1):
        raise ValueError(
            f"page size {page_bytes} must be a power of two of at least {RECORD.size} bytes"
        )
    if size_bytes % page_bytes or size_bytes < 4 * page_bytes:
        raise ValueError(
            f"flash size {size_bytes} must be a multiple of the page size {page_bytes} "
            "and hold at least 4 pages (2 commit-record pages and 2 slots)"
        )


MAX_ERASES = 100_000_000
"""Most erases a page's counter may record: a hundred million cycles, far beyond any flash's
endurance (NOR flash is rated for 10^4-10^6); a state file with more is damaged."""


@dataclass
class StateFile:
    """A flash state file opened and locked for one device (see :func:`claim_state_file`)."""

    fd: int
    """Open read-write; holds the exclusive lock until closed."""
    memory: bytearray
    """The flash contents."""
    erase_counts: list[int]
    """Erases of each page."""
    created: bool
    """True if the file was made now (an erased flash)."""


def state_file_bytes(size: int, page_bytes: int) -> int:
    """Length of the state file of a flash of ``size`` bytes in ``page_bytes`` pages."""
    return FILE_HEADER.size + 4 * (size // page_bytes) + size


def claim_state_file(path: str | os.PathLike[str], size: int, page_bytes: int) -> StateFile:
    """Open the flash state file at ``path`` for one device, checked whole before it is used.

    The file is opened and locked by :func:`open_locked` (created, as an erased flash, if it
    does not exist). An existing file must then begin with the state file's header for this
    geometry, have exactly :func:`state_file_bytes` bytes (checked before any is read) and
    record at most :data:`MAX_ERASES` erases a page. Any other file raises ``ValueError`` with
    one line naming the path and what is wrong, and is left as it was: the device refuses to
    start rather than run on a damaged flash.
    """
    check_geometry(size, page_bytes)
    fd, created = open_locked(path)
    text = os.fspath(path)
    try:
        n_pages = size // page_bytes
        if created:
            memory = bytearray([ERASED]) * size
            header = FILE_HEADER.pack(FILE_MAGIC, size, page_bytes)
            os.pwrite(fd, header + bytes(4 * n_pages) + bytes(memory), 0)
            return StateFile(fd, memory, [0] * n_pages, True)
        memory, counts = _read_state(fd, text, size, page_bytes,
                                     state_file_bytes(size, page_bytes))
        return StateFile(fd, memory, counts, False)
    except BaseException:
        os.close(fd)
        if created:
            os.unlink(text)
        raise


def open_locked(path: str | os.PathLike[str]) -> tuple[int, bool]:
    """Open (or create, empty) the state file at ``path`` read-write and take its exclusive
    ``fcntl.flock``: ``(descriptor, created)``. The lock is held until the descriptor is closed
    (by the process or by its end), so one device at a time owns the file.

    Refused with one line (``ValueError``): an empty path, a place where the file cannot be
    created, a folder, a device (``/dev/zero``), a pipe or socket, and a file another device
    has locked. Every device that keeps its flash in a file opens it through here.
    """
    text = os.fspath(path)
    if not text:
        raise ValueError("flash state path is empty; give a file name")
    try:
        fd = os.open(text, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        created = True
    except FileExistsError:
        fd, created = _open_existing(text), False
    except OSError as exc:
        raise ValueError(f"flash state {text!r}: cannot create it ({exc.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        if created:
            os.unlink(text)
        raise ValueError(
            f"flash state {text!r} is in use by another device (it holds the file's lock); "
            "stop that device or give another --state"
        ) from None
    return fd, created


def _open_existing(path: str) -> int:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ValueError(f"flash state {path!r}: cannot open it ({exc.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ValueError(f"flash state {path!r} is a folder; give a file name")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"flash state {path!r} is not a regular file (a device, pipe or "
                         "socket); give a file name")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise ValueError(f"flash state {path!r}: cannot open it ({exc.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced since the stat
        os.close(fd)
        raise ValueError(f"flash state {path!r} is not a regular file")
    return fd


def _read_state(fd: int, path: str, size: int, page_bytes: int,
                want: int) -> tuple[bytearray, list[int]]:
    """The flash contents and erase counts of an open state file, every field checked."""
    have = os.fstat(fd).st_size
    head = os.pread(fd, FILE_HEADER.size, 0)
    if len(head) < FILE_HEADER.size or head[:8] != FILE_MAGIC:
        raise ValueError(f"{path} is not a mark1-kit flash state file")
    _, f_size, f_page = FILE_HEADER.unpack(head)
    if (f_size, f_page) != (size, page_bytes):
        raise ValueError(
            f"{path} holds a flash of {f_size} bytes in {f_page}-byte pages, not {size} bytes in "
            f"{page_bytes}-byte pages; use the same sizes or another state file"
        )
    if have != want:
        raise ValueError(f"{path} is {have:,} bytes, expected {want:,}: truncated or damaged")
    raw = os.pread(fd, want, 0)
    if len(raw) != want:
        raise ValueError(f"{path}: read {len(raw):,} of {want:,} bytes: truncated or damaged")
    n_pages = size // page_bytes
    counts = list(struct.unpack_from(f"<{n_pages}I", raw, FILE_HEADER.size))
    for page, count in enumerate(counts):
        if count > MAX_ERASES:
            raise ValueError(
                f"{path} is damaged: the erase counter of page {page} reads {count:,} "
                f"(at most {MAX_ERASES:,}); restore the file or start on a new one"
            )
    return bytearray(raw[FILE_HEADER.size + 4 * n_pages :]), counts


# --------------------------------------------------------------------------- model store

RECORD = struct.Struct("<IIB3xII8sI")
"""Commit record: magic, sequence, slot, (pad), image size, image CRC-32, image id (the first 8
bytes of the image's SHA-256), CRC-32 of the preceding 28 bytes. 32 bytes."""
RECORD_MAGIC = 0x5243314D  # b"M1CR" little-endian
RECORD_PAGES = (0, 1)
N_SLOTS = 2
ID_BYTES = 8
"""Bytes of the image's SHA-256 a commit record keeps."""
LEGACY_ID = bytes(ID_BYTES)
"""Image id of a record written before records named their image (the bytes were reserved,
zero): such a record is honoured, by size and CRC-32, only as the newest valid record."""


def image_id(image: bytes) -> bytes:
    """What a commit record names ``image`` by: the first :data:`ID_BYTES` of its SHA-256."""
    return hashlib.sha256(image).digest()[:ID_BYTES]


@dataclass(frozen=True)
class CommitRecord:
    """One entry of the commit log: from ``seq`` on, ``slot`` holds the active image."""

    seq: int
    """Increases by one with every commit; the highest valid one wins."""
    slot: int
    """0 = A, 1 = B."""
    size: int
    """Image size, in bytes."""
    crc32: int
    """``zlib.crc32`` of the image."""
    image_id: bytes
    """:func:`image_id` of the image (:data:`LEGACY_ID` in a record of the earlier layout)."""

    def pack(self) -> bytes:
        if len(self.image_id) != ID_BYTES:
            raise ValueError(f"image id of {len(self.image_id)} bytes; a record keeps {ID_BYTES}")
        head = RECORD.pack(RECORD_MAGIC, self.seq, self.slot, self.size, self.crc32,
                           self.image_id, 0)[:-4]
        return head + struct.pack("<I", zlib.crc32(head))

    @classmethod
    def unpack(cls, raw: bytes) -> CommitRecord | None:
        """The record in ``raw``, or ``None`` if it is blank, torn or not a record."""
        magic, seq, slot, size, crc, ident, rec_crc = RECORD.unpack(raw)
        if magic != RECORD_MAGIC or rec_crc != zlib.crc32(raw[:-4]) or slot >= N_SLOTS:
            return None
        return cls(seq, slot, size, crc, ident)

    def names(self, image: bytes, newest: bool) -> bool:
        """True if ``image`` (read from the record's slot) is the image this record committed.
        A record of the earlier layout (no id) is trusted only as the ``newest`` valid record:
        uploads never write the slot it names, so its size and CRC still suffice there."""
        if len(image) != self.size or zlib.crc32(image) != self.crc32:
            return False
        if self.image_id == LEGACY_ID:
            return newest
        return image_id(image) == self.image_id


class ModelStore:
    """Two model slots and a commit log on a :class:`Flash`.

    Layout: pages 0 and 1 hold commit records (appended; when one page is full the other is
    erased and continued); slot A is the next ``slot_pages`` pages, slot B the ones after.
    """

    def __init__(self, flash: Flash) -> None:
        self.flash = flash
        self.slot_pages = (flash.n_pages - len(RECORD_PAGES)) // N_SLOTS
        """Pages per slot."""
        self.slot_bytes = self.slot_pages * flash.page_bytes
        """Largest image a slot holds, in bytes."""
        self.per_page = flash.page_bytes // RECORD.size

    def slot_page(self, slot: int, index: int) -> int:
        """Flash page number of page ``index`` of ``slot``."""
        if slot not in range(N_SLOTS) or not 0 <= index < self.slot_pages:
            raise FlashError(f"slot {slot} page {index} does not exist")
        return len(RECORD_PAGES) + slot * self.slot_pages + index

    def read_slot(self, slot: int, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.slot_bytes:
            raise FlashError(f"range {offset}+{length} is outside the slot ({self.slot_bytes})")
        return self.flash.read(self.slot_page(slot, 0) * self.flash.page_bytes + offset, length)

    def erase_page(self, slot: int, index: int) -> None:
        """Erase page ``index`` of ``slot``."""
        self.flash.erase(self.slot_page(slot, index))

    def write_slot(self, slot: int, offset: int, data: bytes) -> None:
        """Program ``data`` at ``offset`` of ``slot`` (within one page, over erased bytes)."""
        if offset < 0 or offset + len(data) > self.slot_bytes:
            raise FlashError(f"range {offset}+{len(data)} is outside the slot ({self.slot_bytes})")
        self.flash.write(self.slot_page(slot, 0) * self.flash.page_bytes + offset, data)

    # ------------------------------------------------------------------ commit log

    def _entries(self) -> list[tuple[int, int, bytes]]:
        """(record page, index, raw 32 bytes) of every entry of both record pages."""
        out = []
        for page in RECORD_PAGES:
            raw = self.flash.read(page * self.flash.page_bytes, self.flash.page_bytes)
            for i in range(self.per_page):
                out.append((page, i, raw[i * RECORD.size : (i + 1) * RECORD.size]))
        return out

    def records(self) -> list[CommitRecord]:
        """Valid commit records, newest first."""
        recs = [CommitRecord.unpack(raw) for _, _, raw in self._entries()]
        return sorted((r for r in recs if r is not None), key=lambda r: -r.seq)

    def active(self) -> CommitRecord | None:
        """The newest valid record whose image still matches its size, CRC and id, if any."""
        found = self.active_image()
        return None if found is None else found[0]

    def active_image(self) -> tuple[CommitRecord, bytes] | None:
        """The newest valid record whose image still matches it, and that image; or ``None``."""
        for k, rec in enumerate(self.records()):
            if rec.size <= self.slot_bytes:
                image = self.read_slot(rec.slot, 0, rec.size)
                if rec.names(image, newest=k == 0):
                    return rec, image
        return None

    def committed_image(self, slot: int) -> tuple[CommitRecord, bytes] | None:
        """The newest valid record naming ``slot`` whose image the slot still holds (by size,
        CRC and id), and that image; ``None`` if the slot holds no image a record names (none
        committed there, or overwritten or damaged since). A record of the earlier layout (no
        id) does not count: only the newest record is trusted by size and CRC alone."""
        for rec in self.records():
            if rec.slot == slot and rec.size <= self.slot_bytes:
                image = self.read_slot(slot, 0, rec.size)
                if rec.names(image, newest=False):
                    return rec, image
        return None

    def commit(self, slot: int, size: int, crc32: int, ident: bytes) -> CommitRecord:
        """Append a record making ``slot`` active, naming its image by ``ident``
        (:func:`image_id`). The image must already be in the slot."""
        entries = self._entries()
        newest: tuple[int, int] | None = None  # (seq, record page)
        for page, _, raw in entries:
            rec = CommitRecord.unpack(raw)
            if rec is not None and (newest is None or rec.seq > newest[0]):
                newest = (rec.seq, page)
        seq = 1 if newest is None else newest[0] + 1
        page = RECORD_PAGES[0] if newest is None else newest[1]
        # first blank entry after the last used one on the current record page
        used = [i for p, i, raw in entries if p == page and raw != _BLANK]
        index = (max(used) + 1) if used else 0
        if index >= self.per_page:
            page = RECORD_PAGES[1] if page == RECORD_PAGES[0] else RECORD_PAGES[0]
            self.flash.erase(page)
            index = 0
        rec = CommitRecord(seq, slot, size, crc32, ident)
        self.flash.write(page * self.flash.page_bytes + index * RECORD.size, rec.pack())
        return rec


_BLANK = bytes([ERASED]) * RECORD.size
