"""The C firmware on an emulated board: ``mps2-an385`` (Cortex-M3, the portable engine) and
``mps2-an386`` (Cortex-M4, the DSP engine) under ``qemu-system-arm``.

``mark1 device --firmware m3|m4`` (or ``python -m firmware_sim.qemu``) builds the image when
its sources changed, starts QEMU with the board's UART0 on a socket of its own and serves the
firmware on a pty or a TCP port, printing the URL to open first, as the simulator does:

* QEMU runs ``-icount shift=0``: one instruction per nanosecond of virtual time, so that
  SysTick (25 MHz) ticks every 40 instructions and the firmware reports, in each ``RESULT``,
  the instructions its inference took;
* the flash is a host file reached by semihosting, in the simulator's state-file format: a
  flash file written by the simulator, the host port or QEMU boots in any of them. This
  process checks the file whole and holds its lock for as long as QEMU runs;
* the firmware's options (sizes, name, a power-cut point, a flash erase time, a smaller
  receive ring) go on QEMU's command line (``-append``, read with ``SYS_GET_CMDLINE``); a
  power cut ends QEMU with exit status 3 (``SYS_EXIT``), and this process with it. The product
  image (what a user flashes) runs unless the board asks for test machinery (a power cut,
  wear, an erase time, a smaller ring, another protocol version: :attr:`Board.test_hooks`),
  which only the test image carries;
* sessions are the simulator's (:mod:`firmware_sim.serve`): one host at a time, ``NAK BUSY``
  to a second one on TCP, the idle timeout, ``HELLO`` dropping replies not sent yet, the paced
  line; each new session begins with a ``00`` byte, so that the firmware forgets a partial
  frame of the host before.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from export.contract import protocol as P
from firmware_sim import firmware
from firmware_sim.flash import PowerLoss
from firmware_sim.serve import (
    IDLE_TIMEOUT_S,
    POWER_CUT_EXIT,
    LinkTiming,
    PtyServer,
    RemotePart,
    TcpServer,
    parse_cut,
    parse_listen,
)

FAULT_EXIT = 70
"""Exit status of the firmware after a processor fault (an undefined instruction, ...)."""
START_TIMEOUT_S = 20.0
"""Longest wait for QEMU to open the board's UART."""
BUILD_LIMITS = {"flash_bytes": 4 << 20, "ram_bytes": 64 * 1024, "max_payload": 1024}
"""The largest model flash, activation arena and frame payload the MPS2 images are built for
(``MK_MPS2_FLASH_MAX``, ``MK_ARENA_BYTES``, ``MK_MAX_PAYLOAD`` in the Makefile)."""


@dataclass(frozen=True)
class Core:
    """One emulated board and the firmware image built for it."""

    name: str
    """``m3`` or ``m4``: the make target and the image's name."""
    machine: str
    """QEMU's ``-M`` board."""
    cpu: str
    """The processor."""
    engine: str
    """Which dense kernel the image runs."""

    def target(self, test: bool = False) -> str:
        """The image's make target: the product image (what a user flashes), or with ``test``
        the test image, the same firmware with the test machinery (``MK_TEST_HOOKS``)."""
        return f"{self.name}-test" if test else self.name

    def image(self, test: bool = False) -> str:
        """The ELF image, relative to the build folder."""
        return f"{self.target(test)}/mark1-fw-{self.target(test)}.elf"


CORES: dict[str, Core] = {
    "m3": Core("m3", "mps2-an385", "Cortex-M3", "portable C"),
    "m4": Core("m4", "mps2-an386", "Cortex-M4", "DSP extension (SMLAD/SXTB16)"),
}

TOOLS: tuple[tuple[str, str], ...] = (
    ("make", "make"), ("arm-none-eabi-gcc", "gcc-arm-none-eabi"),
    ("qemu-system-arm", "qemu-system-arm"),
)
"""(program, Debian package that provides it) a firmware under QEMU needs."""


def missing_tool() -> str:
    """A one-line instruction naming the package to install, or ``""`` if the tools are there."""
    for program, package in TOOLS:
        if shutil.which(program) is None:
            return (f"the firmware under QEMU needs {program!r}, which is not installed: "
                    f"install the Debian package {package} (apt-get install {package})")
    return ""


def image(core: str, test: bool = False) -> Path:
    """The firmware image for ``core`` (the test image with ``test``), built if needed."""
    problem = missing_tool()
    if problem:
        raise ValueError(problem)
    return firmware.build(CORES[core].target(test)) / CORES[core].image(test)


# --------------------------------------------------------------------------- the state file


def claim_state(path: str | os.PathLike[str], flash_bytes: int, page_bytes: int) -> int:
    """Check the flash state file at ``path`` whole as the simulator reads it (made, as an
    erased flash, if it does not exist) and take its lock
    (:func:`~firmware_sim.flash.claim_state_file`, the simulator's own rule): the open
    descriptor, which holds the lock until it is closed. ``ValueError`` with one line if the
    file is refused."""
    from firmware_sim.flash import claim_state_file

    return claim_state_file(path, flash_bytes, page_bytes).fd


# --------------------------------------------------------------------------- QEMU


NO_POWER_CUT = 0xFFFF_FFFF
"""The power cut's operation on the firmware's command line that means none."""
STATE_PATH_MAX = 255
"""The longest state file path the firmware takes, in bytes."""
PRODUCT_ENDURANCE = 10_000
"""The endurance a board is given unless told otherwise (the simulator's default). The product
images (what a user flashes) do not simulate wear: their flash behaves as the simulator's of
this rating until a page passes 10,000 erases. Another endurance, a power cut, an erase time,
a smaller receive ring or another protocol version is test machinery, which only the test
images carry: a board that asks for any of them runs the test image."""


@dataclass(frozen=True)
class Board:
    """What the firmware is told on its command line (``ports/mps2/main.c``)."""

    flash_bytes: int = 256 * 1024
    page_bytes: int = 2048
    ram_bytes: int = 64 * 1024
    max_payload: int = 1024
    name: str = "mark1-fw m4"
    endurance: int = PRODUCT_ENDURANCE
    protocol_version: int = P.PROTOCOL_VERSION
    state: str | None = None
    """Absolute path of the flash state file (``None``: the flash lives in RAM only)."""
    cut_after: tuple[int, int] | None = None
    """(operation, bytes): cut the power that many bytes into that flash operation."""
    erase_ms: int = 0
    """Milliseconds a page erase keeps the processor waiting (receiving goes on)."""
    rx_ring: int = 0
    """Bytes of the receive ring, if smaller than the one sized for the protocol's window."""

    def __post_init__(self) -> None:
        from firmware_sim.device import DeviceConfig

        DeviceConfig(flash_bytes=self.flash_bytes, page_bytes=self.page_bytes,
                     ram_bytes=self.ram_bytes, max_payload=self.max_payload,
                     endurance=self.endurance, name=self.name)  # the simulator's checks
        for field, most in BUILD_LIMITS.items():
            if getattr(self, field) > most:
                raise ValueError(f"{field} = {getattr(self, field)}: the firmware image for "
                                 f"QEMU is built for at most {most}")
        if len(self.name.encode()) > 64 or "\0" in self.name:
            raise ValueError(f"name {self.name!r}: at most 64 bytes of UTF-8, no NUL")
        for field in ("erase_ms", "rx_ring"):
            if not 0 <= getattr(self, field) <= 2**31:
                raise ValueError(f"{field} = {getattr(self, field)}: a whole number >= 0")
        if not 0 <= self.protocol_version <= 0xFFFF:
            raise ValueError(f"protocol_version = {self.protocol_version}: 0 .. 65535")
        if self.cut_after is not None and not (0 <= self.cut_after[0] < NO_POWER_CUT
                                               and 0 <= self.cut_after[1] < 2**32):
            raise ValueError(f"cut_after = {self.cut_after}: an operation below {NO_POWER_CUT} "
                             "and a byte count below 2^32")
        if self.state and (len(os.fsencode(self.state)) > STATE_PATH_MAX
                           or b"\0" in os.fsencode(self.state)):
            raise ValueError(f"state {self.state!r}: a path of at most {STATE_PATH_MAX} bytes")

    @property
    def test_hooks(self) -> bool:
        """Whether this board needs the test image (see :data:`PRODUCT_ENDURANCE`)."""
        return (self.cut_after is not None or bool(self.erase_ms) or bool(self.rx_ring)
                or self.endurance != PRODUCT_ENDURANCE
                or self.protocol_version != P.PROTOCOL_VERSION)

    def append(self) -> str:
        """The firmware's command line (QEMU's ``-append``; ``ports/mps2/main.c``, ``options``):
        one word, these bytes in lowercase hex — 32-bit little-endian numbers: how many numbers
        follow (4, or 10 for the test image), the flash, page, RAM and largest payload in
        bytes, and for the test image the protocol version, the endurance, the power cut's
        operation and bytes (0xFFFFFFFF and 0: none), the erase time in ms and the receive
        ring's bytes (0: all of it); then the name and the state file's path, each ended by a
        NUL (an empty path: the flash in RAM only)."""
        numbers = [self.flash_bytes, self.page_bytes, self.ram_bytes, self.max_payload]
        if self.test_hooks:
            cut_op, cut_keep = self.cut_after or (NO_POWER_CUT, 0)
            numbers += [self.protocol_version, self.endurance, cut_op, cut_keep, self.erase_ms,
                        self.rx_ring]
        state = os.fsencode(self.state) if self.state else b""
        return (struct.pack(f"<{1 + len(numbers)}I", len(numbers), *numbers)
                + self.name.encode() + b"\0" + state + b"\0").hex()


def qemu_command(core: str, elf: Path, uart: str, board: Board) -> list[str]:
    """QEMU's command line: the board, deterministic instruction counting, semihosting to the
    host's files, UART0 on the Unix socket ``uart`` (QEMU listens)."""
    return ["qemu-system-arm", "-M", CORES[core].machine, "-nographic", "-monitor", "none",
            "-icount", "shift=0", "-semihosting-config", "enable=on,target=native",
            "-serial", f"unix:{uart},server=on,wait=off", "-kernel", str(elf),
            "-append", board.append()]


def _ended_with_this_thread() -> Callable[[], None] | None:
    """For QEMU's ``preexec_fn`` on Linux: the kernel sends QEMU SIGTERM when the thread that
    started it ends, as when this process is killed (even by SIGKILL). Without it, a killed
    ``mark1 device`` left its QEMU running, holding the state file that a restart opens
    again. (A :class:`QemuPart` is used as a context manager: the thread that starts QEMU
    outlives it.) None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not in the child
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def in_the_child() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent ended before the line above
            os._exit(1)

    return in_the_child


class QemuPart(RemotePart):
    """The firmware running in QEMU, reached through the board's UART0.

    Use as a context manager: QEMU starts on entry and is stopped on exit (if the firmware has
    not stopped by itself: :attr:`exit_status`).
    """

    def __init__(self, core: str, board: Board) -> None:
        if core not in CORES:
            raise ValueError(f"core {core!r}: one of {', '.join(CORES)}")
        self.core, self.board = core, board
        self.elf = image(core, test=board.test_hooks)
        self._dir = tempfile.TemporaryDirectory(prefix="mark1-qemu-")
        self._uart_path = os.path.join(self._dir.name, "uart0")
        self.process: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._deliver: Callable[[P.Frame], None] | None = None
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self.stopped = threading.Event()
        """Set once QEMU has ended (a power cut, a fault, or :meth:`close`)."""

    @property
    def exit_status(self) -> int | None:
        """QEMU's exit status once it has ended, else ``None``."""
        return None if self.process is None else self.process.poll()

    def start(self) -> QemuPart:
        self.process = subprocess.Popen(
            qemu_command(self.core, self.elf, self._uart_path, self.board),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=None,
            preexec_fn=_ended_with_this_thread())
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise ValueError(f"QEMU stopped at start-up (exit status "
                                 f"{self.process.returncode}); its message is above")
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(self._uart_path)
                break
            except OSError:
                sock.close()
                if time.monotonic() > deadline:
                    self.close()
                    raise ValueError("QEMU did not open the board's UART within "
                                     f"{START_TIMEOUT_S:g} s") from None
                time.sleep(0.02)
        self._sock = sock
        self._reader = threading.Thread(target=self._read, daemon=True, name="qemu-uart")
        self._reader.start()
        return self

    def _read(self) -> None:
        """Reply frames from the UART, to the attached session (until QEMU ends)."""
        decoder = P.FrameDecoder()
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            for frame in decoder.feed(data):
                with self._lock:
                    deliver = self._deliver
                if deliver is not None:
                    deliver(frame)
        self.stopped.set()

    # ------------------------------------------------------------------ RemotePart

    def new_session(self) -> None:
        self.send(P.DELIMITER)

    def send(self, data: bytes) -> None:
        if self.stopped.is_set() or self._sock is None:
            raise PowerLoss("the firmware has stopped")
        try:
            self._sock.sendall(data)
        except OSError as exc:
            self.stopped.set()
            raise PowerLoss(f"the firmware has stopped ({exc})") from exc

    def attach(self, deliver: Callable[[P.Frame], None] | None) -> None:
        with self._lock:
            self._deliver = deliver

    # ------------------------------------------------------------------ life

    def wait(self, timeout: float | None = None) -> int | None:
        """QEMU's exit status once it ends (``None`` if still running after ``timeout``)."""
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        """Stop QEMU (if it still runs) and release its socket."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._sock is not None:
            self._sock.close()
        if self._reader is not None:
            self._reader.join(5)
        self.stopped.set()
        self._dir.cleanup()

    def __enter__(self) -> QemuPart:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


UNPACED = LinkTiming()
"""The serial line unpaced (the default of both launchers)."""


@contextmanager
def serving(core: str, board: Board, timing: LinkTiming = UNPACED,
            idle_timeout_s: float = IDLE_TIMEOUT_S) -> Iterator[str]:
    """The firmware under QEMU served on a TCP port of 127.0.0.1 by this process, for as long as
    the ``with`` block runs: its ``socket://`` URL."""
    with QemuPart(core, board) as part, TcpServer(part, timing=timing,
                                                  idle_timeout_s=idle_timeout_s) as server:
        yield server.url


# --------------------------------------------------------------------------- the launcher


def serve(core: str, board: Board, *, pty: bool, listen: tuple[str, int] = ("127.0.0.1", 0),
          timing: LinkTiming = UNPACED, idle_timeout_s: float = IDLE_TIMEOUT_S,
          lock: int | None = None) -> int:
    """Run the firmware under QEMU behind a pty or a TCP port until SIGINT/SIGTERM (exit status
    0) or until the firmware stops by itself (its exit status: 3 after a power cut).

    ``lock``: the descriptor of the state file, claimed already by :func:`claim_state` (it is
    closed at the end); otherwise the state file is claimed here."""
    problem = missing_tool()
    if problem:
        if lock is not None:
            os.close(lock)
        raise ValueError(problem)
    if lock is None and board.state:
        lock = claim_state(board.state, board.flash_bytes, board.page_bytes)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with QemuPart(core, board) as part:
            server: PtyServer | TcpServer
            if pty:
                server = PtyServer(part, timing, idle_timeout_s=idle_timeout_s)
            else:
                try:
                    server = TcpServer(part, listen[0], listen[1], timing,
                                       idle_timeout_s=idle_timeout_s)
                except OSError as exc:
                    raise ValueError(f"cannot listen on {listen[0]}:{listen[1]}: "
                                     f"{exc.strerror or exc}") from exc
            c = CORES[core]
            print(server.url, flush=True)
            print(f"mark1 device: {board.name} (C firmware on QEMU {c.machine}, {c.cpu}, "
                  f"{c.engine}), {board.flash_bytes} B flash in {board.page_bytes} B pages, "
                  f"{board.ram_bytes} B RAM, "
                  f"{f'idle timeout {idle_timeout_s:g} s' if idle_timeout_s else 'no idle timeout'}"
                  f"{', state ' + board.state if board.state else ''}; serving {server.url} "
                  "until stopped (Ctrl-C)", file=sys.stderr, flush=True)
            with server:
                try:
                    while not stop.is_set() and part.wait(0.1) is None:
                        pass
                except KeyboardInterrupt:
                    pass
            status = part.exit_status
            if status is None:
                return 0  # stopped by the user
            if status == POWER_CUT_EXIT:
                return POWER_CUT_EXIT
            print(f"mark1 device: error: the firmware stopped (QEMU exit status {status})",
                  file=sys.stderr)
            return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        if lock is not None:
            os.close(lock)


def main(argv: list[str] | None = None) -> int:
    """``python -m firmware_sim.qemu``: the firmware's launcher with all of its options (the
    tests use these; ``mark1 device --firmware m3|m4`` takes the usual device options)."""
    p = argparse.ArgumentParser(prog="python -m firmware_sim.qemu",
                                description=main.__doc__)
    p.add_argument("--core", choices=tuple(CORES), default="m4")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", action="store_true")
    where.add_argument("--listen", type=parse_listen, metavar="HOST:PORT")
    p.add_argument("--flash", type=int, default=Board.flash_bytes)
    p.add_argument("--page", type=int, default=Board.page_bytes)
    p.add_argument("--ram", type=int, default=Board.ram_bytes)
    p.add_argument("--max-payload", type=int, default=Board.max_payload)
    p.add_argument("--name", default=None)
    p.add_argument("--endurance", type=int, default=Board.endurance)
    p.add_argument("--protocol-version", type=int, default=Board.protocol_version)
    p.add_argument("--state", metavar="FILE")
    p.add_argument("--cut-after", type=parse_cut, metavar="N[+K]")
    p.add_argument("--erase-ms", type=int, default=0)
    p.add_argument("--rx-ring", type=int, default=0)
    p.add_argument("--baud", type=int, default=0)
    p.add_argument("--idle-timeout", type=float, default=IDLE_TIMEOUT_S)
    args = p.parse_args(argv)
    board = Board(flash_bytes=args.flash, page_bytes=args.page, ram_bytes=args.ram,
                  max_payload=args.max_payload, name=args.name or f"mark1-fw {args.core}",
                  endurance=args.endurance, protocol_version=args.protocol_version,
                  state=os.path.abspath(args.state) if args.state else None,
                  cut_after=args.cut_after, erase_ms=args.erase_ms, rx_ring=args.rx_ring)
    try:
        return serve(args.core, board, pty=args.pty, listen=args.listen or ("127.0.0.1", 0),
                     timing=LinkTiming(baud=args.baud), idle_timeout_s=args.idle_timeout)
    except ValueError as exc:
        print(f"mark1 device: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
