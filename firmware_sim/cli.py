"""``mark1 device``: run the simulated microcontroller, or the C firmware's host port, on a pty
or a TCP socket.

Registration imports argparse and the simulator's settings (presets, line pacing, idle timeout)
whose defaults it shows; nothing heavy. The handler imports the simulator, or builds the
firmware.
"""

from __future__ import annotations

import argparse
import re

from firmware_sim.device import DEFAULT_PRESET, PRESETS, DeviceConfig
from firmware_sim.serve import IDLE_TIMEOUT_S, LinkTiming

LINE = LinkTiming()

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


def parse_listen(text: str) -> tuple[str, int]:
    """``"127.0.0.1:5555"`` -> (host, port); port 0 picks a free one."""
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"--listen {text!r}: expected HOST:PORT (port 0-65535)")
    return host, int(port)


def parse_idle(text: str) -> float:
    """``--idle-timeout``: seconds >= 0, finite (0 = never)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(
            f"--idle-timeout {text!r}: a number of seconds >= 0 (0 = never)"
        )
    return value


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


def _firmware_host(args: argparse.Namespace, config: DeviceConfig, idle: float) -> int:
    """Build the C firmware's host port and run it in place of this process."""
    import os
    import sys

    from firmware_sim.firmware import host_command

    cut = None if args.cut_after is None else "{}+{}".format(*args.cut_after)
    cmd = host_command(
        listen=None if args.pty else "{}:{}".format(*args.listen), pty=args.pty,
        flash_bytes=config.flash_bytes, page_bytes=config.page_bytes,
        ram_bytes=config.ram_bytes, max_payload=config.max_payload,
        name=config.name.replace("mark1-sim", "mark1-fw host"), state=args.state,
        idle_timeout_s=idle, endurance=config.endurance, cut_after=cut, baud=args.baud,
        turnaround_ms=args.turnaround,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(cmd[0], cmd)
    return 0  # not reached


def _device(args: argparse.Namespace) -> int:
    import dataclasses
    import sys

    from firmware_sim.device import Device
    from firmware_sim.serve import PtyServer, TcpServer, serve_forever

    base = PRESETS[args.preset]
    overrides = {
        name: value for name, value in (
            ("flash_bytes", args.flash), ("page_bytes", args.page), ("ram_bytes", args.ram),
            ("max_payload", args.max_payload),
        ) if value is not None
    }
    config = dataclasses.replace(base, **overrides)
    timing = LinkTiming(baud=args.baud, turnaround_s=args.turnaround / 1000.0)
    idle = args.idle_timeout
    if args.firmware == "host":
        return _firmware_host(args, config, idle)
    device = Device(config, state_path=args.state)
    if args.cut_after is not None:
        cut_op, keep = args.cut_after
        device.flash.hook = lambda op: keep if op.index == cut_op else None
    if args.pty:
        server: PtyServer | TcpServer = PtyServer(device, timing, idle_timeout_s=idle)
    else:
        host, port = args.listen
        try:
            server = TcpServer(device, host, port, timing, idle_timeout_s=idle)
        except OSError as exc:
            raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
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
    device.flash.close()
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
        description="Run the simulated microcontroller, or the C firmware's host port "
        "(--firmware host). Prints the port to open (a /dev/pts/N path or a socket:// URL) on "
        "the first line of standard output, then serves until stopped (Ctrl-C or SIGTERM, "
        f"exit status 0; {POWER_CUT_EXIT} after a --cut-after power cut).",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", action="store_true", help="serve on a new pseudo-terminal")
    where.add_argument("--listen", type=parse_listen, metavar="HOST:PORT",
                       help="serve socket:// clients on a TCP port (0 = any free port)")
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=tuple(PRESETS),
                   help="device limits to start from (default: %(default)s)")
    p.add_argument("--flash", type=parse_size, metavar="BYTES",
                   help="flash for models: two slots plus two commit-record pages")
    p.add_argument("--page", type=parse_size, metavar="BYTES", help="flash erase page size")
    p.add_argument("--ram", type=parse_size, metavar="BYTES", help="RAM arena for activations")
    p.add_argument("--max-payload", type=parse_size, metavar="BYTES",
                   help="largest frame payload the device accepts")
    p.add_argument("--baud", type=int, default=LINE.baud,
                   help="pace the line at 10/BAUD seconds per byte (0 = unpaced; default "
                   "%(default)s)")
    p.add_argument("--turnaround", type=float, default=1000.0 * LINE.turnaround_s, metavar="MS",
                   help="delay from a request's last byte to its reply, in ms "
                   "(default %(default)g)")
    p.add_argument("--state", metavar="FILE",
                   help="keep the flash in FILE, so a restart keeps the models")
    p.add_argument("--idle-timeout", type=parse_idle, default=IDLE_TIMEOUT_S, metavar="S",
                   help="end a session after S seconds with no byte either way, so that a "
                   "host that vanished without closing its connection does not keep the "
                   "device busy (default %(default)g; 0 = never)")
    p.add_argument("--firmware", choices=("sim", "host"), default="sim",
                   help="sim: the Python simulator (default); host: the C firmware built for "
                   "this computer (needs make and a C compiler; built on first use)")
    p.add_argument("--cut-after", type=parse_cut, metavar="N[+K]",
                   help="cut the power K bytes (default 0) into flash operation N, counted from "
                   "0 since start-up: the device stops with its flash as the cut left it")
    p.set_defaults(handler=_device)
