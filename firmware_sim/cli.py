"""``mark1 device``: run the simulated microcontroller, or the C firmware's host port, on a pty
or a TCP socket.

Registration imports argparse and the simulator's settings (presets, line pacing, idle timeout)
whose defaults it shows; nothing heavy. The handler imports the simulator, or builds the
firmware.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from firmware_sim.device import DEFAULT_PRESET, PRESETS, DeviceConfig
from firmware_sim.serve import (
    IDLE_TIMEOUT,
    IDLE_TIMEOUT_S,
    POWER_CUT_EXIT,
    LinkTiming,
    parse_cut,
    parse_idle,
    parse_listen,
)
from mark1.limits import field_limits

if TYPE_CHECKING:
    from firmware_sim.device import Device
    from firmware_sim.flash import StateFile

LINE = LinkTiming()
TIMING = field_limits(LinkTiming)
TURNAROUND_MS = TIMING["turnaround_s"].scaled(1000, "ms")
"""``--turnaround``'s range: the field's, in milliseconds."""

_SIZE = re.compile(r"^\s*(\d+)\s*([kKmM]i?[bB]?|[bB])?\s*$")


def parse_size(text: str) -> int:
    """``"2048"``, ``"2K"``, ``"256KiB"``, ``"1M"`` -> bytes (K = 1024)."""
    m = _SIZE.match(str(text))
    if not m:
        raise argparse.ArgumentTypeError(
            f"size {text!r} is not a number of bytes (e.g. 2048, 2K, 256KiB, 1M)"
        )
    unit = (m.group(2) or "b")[0].lower()
    return int(m.group(1)) * {"b": 1, "k": 1024, "m": 1024 * 1024}[unit]


def _size_arg(name: str) -> Callable[[str], int]:
    """An argparse type: a size (:func:`parse_size`) within the range of ``DeviceConfig``'s
    field ``name``."""
    lim = field_limits(DeviceConfig)[name]

    def size(text: str) -> int:
        value = parse_size(text)
        try:
            return int(lim.check(name, value))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text} is out of range (allowed: {lim.describe()})") from None
    return size


def _cannot_listen(host: str, port: int, exc: OSError) -> ValueError:
    return ValueError(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


def _check_listen(args: argparse.Namespace) -> None:
    """The TCP address can be listened on: checked by listening there a moment, before the
    state file is made or locked, so that a device that cannot serve leaves nothing behind."""
    import socket

    if args.pty:
        return
    host, port = args.listen
    try:
        socket.create_server((host, port)).close()
    except OSError as exc:
        raise _cannot_listen(host, port, exc) from None


def _release(state: StateFile | None, path: str | None) -> None:
    """Give up a claimed state file (a device that will not run): unlocked, and removed if it
    was made by this claim."""
    import os

    if state is not None and path is not None:
        os.close(state.fd)
        if state.created:
            os.unlink(path)


def _firmware_host(args: argparse.Namespace, config: DeviceConfig, idle: float) -> int:
    """Build the C firmware's host port and run it in place of this process. Its state file is
    checked and locked first (:func:`~firmware_sim.flash.claim_state_file`, the same rule as the
    simulator's), so that a bad or busy one is refused before the build; the port locks it
    again itself as it starts (``flock``, as the simulator does) and holds it while it runs."""
    import os
    import sys

    from firmware_sim.firmware import host_command
    from firmware_sim.flash import claim_state_file

    state = None
    if args.state is not None:  # checked whole and locked before the build
        state = claim_state_file(args.state, config.flash_bytes, config.page_bytes)
    try:
        cut = None if args.cut_after is None else "{}+{}".format(*args.cut_after)
        cmd = host_command(
            listen=None if args.pty else "{}:{}".format(*args.listen), pty=args.pty,
            flash_bytes=config.flash_bytes, page_bytes=config.page_bytes,
            ram_bytes=config.ram_bytes, max_payload=config.max_payload,
            name=config.name.replace("mark1-sim", "mark1-fw host"), state=args.state,
            idle_timeout_s=idle, endurance=config.endurance, cut_after=cut, baud=args.baud,
            turnaround_ms=args.turnaround,
        )
    except BaseException:
        _release(state, args.state)
        raise
    if state is not None:
        os.close(state.fd)  # the port takes the file's lock again as it starts (host_flash.c)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(cmd[0], cmd)
    return 0  # not reached


def _firmware_qemu(args: argparse.Namespace, config: DeviceConfig, timing: LinkTiming) -> int:
    """Build the C firmware for an MPS2 board and serve it from QEMU (until stopped). Its state
    file is checked and locked first, by the simulator's rule (as for ``--firmware host``);
    a state file made now is removed again if the firmware cannot run."""
    import os

    from firmware_sim.flash import claim_state_file
    from firmware_sim.qemu import CORES, Board, missing_tool, serve

    core = args.firmware
    state = None
    if args.state is not None:  # checked whole and locked before the tools and the build
        state = claim_state_file(args.state, config.flash_bytes, config.page_bytes)
    try:
        problem = missing_tool()
        if problem:
            raise ValueError(problem)
        board = Board(flash_bytes=config.flash_bytes, page_bytes=config.page_bytes,
                      ram_bytes=config.ram_bytes, max_payload=config.max_payload,
                      name=f"mark1-fw {core} qemu {CORES[core].machine}",
                      endurance=config.endurance,
                      state=os.path.abspath(args.state) if args.state else None,
                      cut_after=args.cut_after)
    except BaseException:
        _release(state, args.state)
        raise
    return serve(core, board, pty=args.pty, listen=args.listen or ("127.0.0.1", 0),
                 timing=timing, idle_timeout_s=args.idle_timeout,
                 lock=None if state is None else state.fd)


def _device(args: argparse.Namespace) -> int:
    import dataclasses

    from firmware_sim.device import Device

    base = PRESETS[args.preset]
    overrides = {
        name: value for name, value in (
            ("flash_bytes", args.flash), ("page_bytes", args.page), ("ram_bytes", args.ram),
            ("max_payload", args.max_payload),
        ) if value is not None
    }
    config = dataclasses.replace(base, **overrides)
    timing = LinkTiming(baud=args.baud, turnaround_s=args.turnaround / 1000.0)
    _check_listen(args)  # before the state file is made
    if args.firmware == "host":
        return _firmware_host(args, config, args.idle_timeout)
    if args.firmware in ("m3", "m4"):
        return _firmware_qemu(args, config, timing)
    device = Device(config, state_path=args.state)  # the state file checked and locked here
    if args.cut_after is not None:
        cut_op, keep = args.cut_after
        device.flash.hook = lambda op: keep if op.index == cut_op else None
    try:
        return _serve(args, device, timing)
    finally:
        device.flash.close()


def _serve(args: argparse.Namespace, device: Device, timing: LinkTiming) -> int:
    import sys

    from firmware_sim.serve import PtyServer, TcpServer, serve_forever

    config, idle = device.config, args.idle_timeout
    if args.pty:
        server: PtyServer | TcpServer = PtyServer(device, timing, idle_timeout_s=idle)
    else:
        host, port = args.listen
        try:
            server = TcpServer(device, host, port, timing, idle_timeout_s=idle)
        except OSError as exc:
            raise _cannot_listen(host, port, exc) from exc
    act = device.active
    model = "no model" if act is None else f"model in slot {'AB'[act.slot]} ({act.size} bytes)"
    pacing = f"{args.baud} baud" if args.baud else "unpaced"
    print(server.url, flush=True)
    print(
        f"mark1 device: {config.name}, {config.flash_bytes} B flash in {config.page_bytes} B "
        f"pages, {config.ram_bytes} B RAM, {model}, {pacing}, turnaround {args.turnaround} ms, "
        f"{f'idle timeout {idle:g} s' if idle else 'no idle timeout'}"
        f"{', state ' + str(args.state) if args.state else ''}; serving {server.url} "
        "until stopped (Ctrl-C)",
        file=sys.stderr, flush=True,
    )
    status = serve_forever(server)
    if server.power_lost:
        print(f"mark1 device: power cut after {args.cut_after[1]} bytes of flash operation "
              f"{args.cut_after[0]}", file=sys.stderr)
        return POWER_CUT_EXIT
    return status


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``mark1 device``."""
    p = subparsers.add_parser(
        "device",
        help="run the simulated microcontroller (or the C firmware) on a pty or a TCP socket",
        description="Run the simulated microcontroller, the C firmware's host port "
        "(--firmware host) or the C firmware under QEMU (--firmware m3|m4). Prints the port to "
        "open (a /dev/pts/N path or a socket:// URL) on "
        "the first line of standard output, then serves until stopped (Ctrl-C or SIGTERM, "
        f"exit status 0; {POWER_CUT_EXIT} after a --cut-after power cut).",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", action="store_true", help="serve on a new pseudo-terminal")
    where.add_argument("--listen", type=parse_listen, metavar="HOST:PORT",
                       help="serve socket:// clients on a TCP port (0 = any free port)")
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=tuple(PRESETS),
                   help="device limits to start from (default: %(default)s)")
    p.add_argument("--flash", type=_size_arg("flash_bytes"), metavar="BYTES",
                   help="flash for models: two slots plus two commit-record pages")
    p.add_argument("--page", type=_size_arg("page_bytes"), metavar="BYTES",
                   help="flash erase page size")
    p.add_argument("--ram", type=_size_arg("ram_bytes"), metavar="BYTES",
                   help="RAM arena for activations")
    p.add_argument("--max-payload", type=_size_arg("max_payload"), metavar="BYTES",
                   help="largest frame payload the device accepts")
    p.add_argument("--baud", type=TIMING["baud"].arg(), default=LINE.baud,
                   help=f"pace the line at 10/BAUD seconds per byte ({TIMING['baud'].describe()}"
                   "; default %(default)s)")
    p.add_argument("--turnaround", type=TURNAROUND_MS.arg(), default=1000.0 * LINE.turnaround_s,
                   metavar="MS", help="delay from a request's last byte to its reply "
                   f"({TURNAROUND_MS.describe()}; default %(default)g)")
    p.add_argument("--state", metavar="FILE",
                   help="keep the flash in FILE, so a restart keeps the models")
    p.add_argument("--idle-timeout", type=parse_idle, default=IDLE_TIMEOUT_S, metavar="S",
                   help="end a session after S seconds with no byte from the host, so that a "
                   "host that vanished without closing its connection does not keep the "
                   f"device busy ({IDLE_TIMEOUT.describe()}; default %(default)g)")
    p.add_argument("--firmware", choices=("sim", "host", "m3", "m4"), default="sim",
                   help="sim: the Python simulator (default); host: the C firmware built for "
                   "this computer (needs make and a C compiler); m3, m4: the C firmware on an "
                   "emulated Cortex-M3 (mps2-an385) or Cortex-M4 (mps2-an386) board under QEMU "
                   "(needs qemu-system-arm and gcc-arm-none-eabi); built on first use")
    p.add_argument("--cut-after", type=parse_cut, metavar="N[+K]",
                   help="cut the power K bytes (default 0) into flash operation N, counted from "
                   "0 since start-up: the device stops with its flash as the cut left it")
    p.set_defaults(handler=_device)
