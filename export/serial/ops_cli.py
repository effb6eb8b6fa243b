"""Device operations: ``mark1 ports``, ``mark1 status``, ``mark1 info``, ``mark1 rollback``.

Registration imports argparse and the light modules whose defaults and exit codes it shows;
the handlers import pyserial, numpy and the package code.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from export.contract.protocol import SLOT_NAMES
from export.serial.cli import EXIT_EPILOG, link_options, link_plan, link_settings

# --------------------------------------------------------------------------- ports


def _ports(args: argparse.Namespace) -> int:
    from serial.tools.list_ports import comports

    plan = link_plan(args)
    with plan:  # the --json place checked before the ports are listed
        _list_ports(args, plan, comports)
    return 0


def _list_ports(args: argparse.Namespace, plan: Any, comports: Any) -> None:
    ports = sorted(comports(include_links=args.links), key=lambda p: p.device)
    rows = [{"device": p.device, "description": p.description, "hwid": p.hwid,
             "vid": p.vid, "pid": p.pid, "serial_number": p.serial_number,
             "manufacturer": p.manufacturer, "product": p.product, "location": p.location}
            for p in ports]
    for row in rows:
        print(f"{row['device']:<20s} {row['description']:<32s} {row['hwid']}")
        if args.verbose:
            for key in ("manufacturer", "product", "serial_number", "location"):
                if row[key]:
                    print(f"{'':<20s}   {key.replace('_', ' ')}: {row[key]}")
    if not rows:
        print("no serial ports found (a pty of `mark1 device --pty` is not listed: use the "
              "name it prints)", file=sys.stderr)
    if args.json is not None:
        plan.write_json(args.json, {"ports": rows})


# --------------------------------------------------------------------------- status


def _kib(n: int) -> str:
    return f"{n / 1024:g} KiB" if n % 1024 == 0 or n > 10 * 1024 else f"{n:,} B"


def _slot_line(view: Any) -> str:
    model = (f"model {view.model_id[:16]}, {view.size:,} B, CRC-32 {view.crc32:#010x}, "
             f"{view.n_inputs:,} inputs -> {view.n_outputs:,} outputs, needs "
             f"{view.ram_bytes:,} B RAM" if view.model_id else "")
    if view.rounding:
        model += f", package format {view.format_version}, {view.rounding} rounding"
    if view.state == "active":
        return f"active: {model}" + (f" -- {view.note}" if view.note else ", runnable")
    if view.state == "committed":
        return (f"committed earlier: {model or 'header not readable now'} "
                "(`mark1 rollback` makes it active)")
    if view.state == "uploading":
        return f"receiving an upload ({view.note})" if view.note else "receiving an upload"
    if view.state == "unknown":
        return f"unknown ({view.note})"
    return f"no committed model; the device says: {view.note}"


def _status(args: argparse.Namespace) -> int:
    from export.serial.device_ops import device_status
    from export.serial.trace import trace_file

    plan = link_plan(args)  # every check before a byte goes to the device
    settings = link_settings(args)
    with plan:
        with trace_file(plan, args.trace) as trace:
            st = device_status(args.port, settings, trace)
        _status_lines(args, st)
        if args.json is not None:
            plan.write_json(args.json, st.as_dict())
    return 0


def _status_lines(args: argparse.Namespace, st: Any) -> None:
    dev = st.device
    print(f"device   {dev['name']} on {args.port}, protocol version {dev['version']}")
    print(f"limits   flash {_kib(dev['flash_bytes'])} in {_kib(dev['page_bytes'])} pages, two "
          f"slots of {_kib(dev['slot_bytes'])}; RAM arena {_kib(dev['ram_bytes'])}; frame "
          f"payloads up to {dev['max_payload']:,} B; clock {dev['clock_hz'] / 1e6:g} MHz")
    for view in st.slots:
        print(f"slot {view.slot}   {_slot_line(view)}")
    if st.upload is not None:
        up = st.upload
        print(f"upload   into slot {SLOT_NAMES[up['slot']]}: {up['received']:,} of "
              f"{up['size']:,} B received in order, {up['durable']:,} B in flash (a push of "
              "the same package resumes there)")
    print(f"flash    {st.max_erase_count:,} erases of the most-worn page, {st.total_erases:,} "
          "in all")
    print(f"frames   {st.frames_ok:,} received intact, {st.frames_bad:,} dropped since "
          "power-on")


# --------------------------------------------------------------------------- info


def _info(args: argparse.Namespace) -> int:
    from export.contract.package import MAGIC, MAX_PACKAGE_BYTES
    from export.int8.info import package_info, render
    from mark1.io import OutputPlan

    plan = OutputPlan()
    path = plan.read("MODEL", args.model, what="model file")
    link_plan(args, plan)
    size = path.stat().st_size
    if size > MAX_PACKAGE_BYTES:
        raise ValueError(f"{path} is {size:,} bytes; a weight package is at most "
                         f"{MAX_PACKAGE_BYTES:,} bytes")
    with plan:  # the outputs' places checked before the package is read
        data = path.read_bytes()
        try:
            info = package_info(data)
        except ValueError as exc:
            said = str(exc)
            if data[:4] != MAGIC and said.startswith("not a weight package"):
                raise ValueError(f"{path} is {said}") from exc
            raise ValueError(f"{path} is not a valid weight package: {said}") from exc
        sys.stdout.write(render(info, path.name))
        if args.json is not None:
            plan.write_json(args.json, {"file": str(path), **info})
    return 0


# --------------------------------------------------------------------------- rollback


def _rollback(args: argparse.Namespace) -> int:
    from export.serial.device_ops import rollback
    from export.serial.trace import trace_file

    plan = link_plan(args)  # every check before a byte goes to the device
    settings = link_settings(args)
    slot = None if args.slot is None else "AB".index(args.slot)
    with plan:
        with trace_file(plan, args.trace) as trace:
            rep = rollback(args.port, slot, check=args.check, settings=settings, trace=trace)
        _rollback_lines(args, rep)
        if args.json is not None:
            plan.write_json(args.json, rep.as_dict())
    return 0


def _rollback_lines(args: argparse.Namespace, rep: Any) -> None:
    model = f"model {rep.model_id[:16]}, {rep.size:,} B, CRC-32 {rep.crc32:#010x}"
    if rep.checked_only:
        print(f"slot {rep.to_slot} on {rep.device} ({args.port}) holds a committed model that "
              f"can run: {model}; nothing changed")
    elif not rep.changed:
        print(f"slot {rep.to_slot} is already active on {rep.device} ({args.port}): {model}")
    else:
        print(f"rolled back on {rep.device} ({args.port}): slot {rep.from_slot} -> slot "
              f"{rep.to_slot}")
        print(f"  running  {model}")
        print(f"  kept     slot {rep.from_slot}'s model (`mark1 rollback` returns to it until "
              "the next push writes there)")


# --------------------------------------------------------------------------- registration


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``mark1 ports``, ``status``, ``info`` and ``rollback``."""
    p = subparsers.add_parser(
        "ports", help="list this computer's serial ports",
        description="List the serial ports pyserial finds (USB serial adapters, on-board\n"
        "UARTs), with their description and hardware id. A pseudo-terminal of\n"
        "`mark1 device --pty` is not a port of the system: use the name it prints.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also the manufacturer, product, serial number and USB location")
    p.add_argument("--links", action="store_true",
                   help="also symbolic links to ports (e.g. /dev/serial/by-id/...)")
    p.add_argument("--json", metavar="FILE", help="also write the list as JSON")
    p.set_defaults(handler=_ports)

    p = subparsers.add_parser(
        "status", help="show what a device holds: model, slots, upload, flash wear",
        description="Ask a device for its name and limits (INFO), its running model, the\n"
        "upload in progress, flash wear and frame counts (STATUS), and whether the\n"
        "other slot holds a committed model that `mark1 rollback` can make active.",
        epilog=EXIT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    link_options(p)
    p.set_defaults(handler=_status)

    p = subparsers.add_parser(
        "info", help="show what a weight package holds and what a device needs for it",
        description="Print a weight package's header, layers, sections, model id, CRC-32 and\n"
        "SHA-256, and the flash, RAM and frame size a device needs to run it.\n"
        "Exit status 0, or 2 if the file is not a valid package.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="weight package file (.m1w)")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    p.set_defaults(handler=_info)

    p = subparsers.add_parser(
        "rollback", help="make the model in the other flash slot active again",
        description="Make the device run the model in its other slot again (the one that\n"
        "ran before the last push), if that slot still holds a committed image. The\n"
        "device writes one commit record and nothing else: power lost meanwhile leaves\n"
        "one model or the other running. Exit status 9 if the device refuses (no\n"
        "committed model there, or firmware that predates rollback).",
        epilog=EXIT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    link_options(p)
    p.add_argument("--slot", choices=("A", "B"),
                   help="the slot to make active (default: the one not running)")
    p.add_argument("--check", action="store_true",
                   help="only ask whether the rollback is possible; change nothing")
    p.set_defaults(handler=_rollback)
