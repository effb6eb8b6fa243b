"""``mark1 device``: run the simulated microcontroller on a pty or a TCP socket.

Registration imports argparse and the simulator's settings (presets, line pacing, idle timeout)
whose defaults it shows; nothing heavy.
"""

from __future__ import annotations

import argparse
import re

from firmware_sim.device import DEFAULT_PRESET, PRESETS
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
    device = Device(config, state_path=args.state)
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
    return status


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``mark1 device``."""
    p = subparsers.add_parser(
        "device",
        help="run the simulated microcontroller on a pty or a TCP socket",
        description="Run the simulated microcontroller. Prints the port to open (a /dev/pts/N "
        "path or a socket:// URL) on the first line of standard output, then serves until "
        "stopped (Ctrl-C or SIGTERM, exit status 0).",
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
    p.set_defaults(handler=_device)
