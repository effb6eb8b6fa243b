"""``mark1 push`` and ``mark1 infer``: the host side of the serial link.

Registration imports argparse and the light modules whose defaults and exit codes it shows
(:mod:`export.serial.settings`, :mod:`export.serial.errors`, the protocol's slot numbers); the
handlers import pyserial, numpy and the package code.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from export.contract.protocol import AUTO_SLOT, SLOT_NAMES
from export.serial.errors import EXIT_CODES
from export.serial.settings import DEFAULT_SETTINGS, LinkSettings
from mark1.limits import SEED, Limit, field_limits

if TYPE_CHECKING:
    from export.contract.package import Package
    from mark1.io import OutputPlan

LIMITS = field_limits(LinkSettings)

EXIT_EPILOG = "exit status:\n" + "".join(f"  {k}  {v}\n" for k, v in EXIT_CODES.items())

SLOTS: dict[str, int] = {"auto": AUTO_SLOT, **{SLOT_NAMES[n]: n for n in (0, 1)}}
"""``--slot`` choices: the slot number each names (``auto``: the one not running)."""


def link_plan(args: argparse.Namespace, plan: OutputPlan | None = None) -> OutputPlan:
    """The plan of a command that talks to a device (``plan``, or a new one, with its inputs
    declared): its ``--json`` and ``--trace`` files declared and its ``--port`` checked, so
    that entering the plan makes every check before a byte goes to the device."""
    from export.serial.link import check_port
    from mark1.io import OutputPlan

    plan = OutputPlan() if plan is None else plan
    if getattr(args, "json", None) is not None:
        plan.write_file("--json", args.json)
    if getattr(args, "trace", None) is not None:
        plan.write_file("--trace", args.trace, keep_on_error=True)
    if getattr(args, "port", None) is not None:
        check_port(args.port)
    return plan


def link_settings(args: argparse.Namespace) -> LinkSettings:
    """The link settings of ``--baud``, ``--window``, ``--timeout``, ``--retries`` (and
    ``--no-read-back`` where a command has it)."""
    return LinkSettings(baud=args.baud, window=args.window, timeout_s=args.timeout,
                        retries=args.retries, verify=not getattr(args, "no_read_back", False))


def _push(args: argparse.Namespace) -> int:
    from export.contract.package import read_package
    from mark1.io import OutputPlan

    # every check before a byte goes to the device: the file, the outputs' places, the port
    plan = OutputPlan()
    path = plan.read("MODEL", args.model, what="model file")
    link_plan(args, plan)
    settings = link_settings(args)
    image, pkg = read_package(path)
    with plan:
        report = _push_work(args, plan, path, image, pkg, settings)
        if args.json is not None:
            plan.write_json(args.json, report)
    return 0


def _push_work(args: argparse.Namespace, plan: OutputPlan, path: Path, image: bytes,
               pkg: Package, settings: LinkSettings) -> dict[str, Any]:
    """The upload of ``mark1 push`` and its summary; returns the JSON report."""
    from export.serial.push import push
    from export.serial.trace import trace_file
    from mark1.progress import progress_bar

    slot = SLOTS[args.slot]
    bars: list[Any] = []

    def progress(n: int) -> None:  # the bar appears once the device acknowledges data
        if not bars:
            bars.append(progress_bar(total=len(image), unit="B", unit_scale=True,
                                     unit_divisor=1024, desc=f"push {path.name}",
                                     enabled=False if args.quiet else None, leave=False))
        bars[0].update(n)

    try:
        with trace_file(plan, args.trace) as trace:
            report = push(args.port, image, settings=settings, slot=slot, progress=progress,
                          trace=trace)
    finally:
        for bar in bars:
            bar.close()
    eff = f", line-rate bound {report.line_bound_s:.2f} s at {args.baud} baud"
    if report.efficiency <= 1.0:  # a paced line: how much of it the push used
        eff += f" ({100 * report.efficiency:.1f} % efficiency)"
    resumed = [o for o in report.resumed_from if o > 0]
    print(f"pushed {path.name}: {report.size} bytes, model {report.model_id[:16]} "
          f"({len(pkg.classes)} classes, needs {pkg.ram_bytes} B RAM)")
    print(f"  device   {report.device} on {args.port}, now running from slot "
          f"{'AB'[report.slot]}")
    print(f"  time     {report.seconds:.2f} s, {report.throughput:,.0f} B/s{eff}")
    print(f"  verified {report.verified_bytes} bytes read back from flash, CRC-32 "
          f"{report.crc32:#010x} checked by the device before switching slots")
    print(f"  link     {report.wire_bytes_out} bytes out, {report.wire_bytes_in} in; "
          f"{report.timeouts} timeouts, {report.go_backs} go-backs, {report.reconnects} "
          f"reconnections{', resumed at ' + str(resumed) if resumed else ''}")
    return report.as_dict()


def _infer(args: argparse.Namespace) -> int:
    from export.contract.package import read_package
    from mark1.io import OutputPlan
    from mark1.stimuli import TASKS

    # every check before a byte goes to the device: the files, the report's place, the port
    if not args.images and not args.task:
        raise ValueError("give image files or --task NAME (see --help)")
    if args.task is not None and args.task not in TASKS:
        raise ValueError(f"unknown task {args.task!r}; allowed: {', '.join(TASKS)}")
    plan = OutputPlan()
    images = [plan.read("IMAGES", name, what="image file") for name in args.images]
    model = plan.read("--model", args.model, what="model file") if args.model else None
    link_plan(args, plan)
    settings = link_settings(args)
    named = None if model is None else read_package(model)
    with plan:
        report, differ = _infer_work(args, plan, images, named, settings)
        if args.json is not None:
            plan.write_json(args.json, report)
    if differ:
        from export.serial.errors import VerifyFailed

        raise VerifyFailed(f"{differ} of {report['n']} device outputs differ from the golden "
                           "reference")
    return 0


def _infer_work(args: argparse.Namespace, plan: OutputPlan, images: list[Path],
                given: tuple[bytes, Package] | None,
                settings: LinkSettings) -> tuple[dict[str, Any], int]:
    """The inferences of ``mark1 infer`` and their summary; returns the JSON report and how
    many outputs differ from the golden reference."""
    import time

    from export.contract.golden import decide, golden_forward, quantize_input
    from export.serial.infer import active_package, inputs_for, run_inference, takes_retina
    from export.serial.link import connect
    from export.serial.trace import trace_file
    from firmware_sim.engine import Engine

    model, named = (None, None) if given is None else given
    labels = None
    names: list[str] = []
    x = None
    paths = [str(p) for p in images]
    if images and named is not None:  # a bad input file is bad input: before connecting
        names, x = inputs_for(named, paths)
    elif images:  # the device's model decides how files are read; a picture must be one
        from mark1.images import read_images

        pictures = [p for p in paths if not p.lower().endswith(".npy")]
        if pictures:
            read_images(pictures)
    if images:
        source = f"{len(images)} input file(s)"
    else:
        from mark1.stimuli import make_task

        task = make_task(args.task, seed=args.seed)
        x = task.X_test[: args.n].reshape(min(args.n, task.n_test), -1)
        labels = task.y_test[: args.n]
        names = [f"#{i}" for i in range(len(x))]
        source = f"{len(x)} test images of {args.task!r} (seed {args.seed})"
        task_classes = list(task.classes)
    with trace_file(plan, args.trace) as trace, connect(args.port, settings, trace) as link:
        pkg, st = active_package(link, model)
        if labels is not None and not takes_retina(pkg):
            raise ValueError(f"task {args.task!r} gives 20x20 retina images; the device's model "
                             f"takes {pkg.n_inputs} inputs (shape {tuple(pkg.input_shape)})")
        if labels is not None and list(pkg.classes) != task_classes:
            raise ValueError(f"the device's model knows classes {list(pkg.classes)[:6]}..., "
                             f"task {args.task!r} has {task_classes[:6]}...")
        if x is None:
            names, x = inputs_for(pkg, paths)
        x_q = quantize_input(pkg, x)
        t0 = time.monotonic()
        y_dev, cycles = run_inference(link, x_q)
        seconds = time.monotonic() - t0
        info = link.info
        assert info is not None  # connect() shook hands
        clock = info.clock_hz
    y_gold = golden_forward(pkg, x_q)
    model_cycles = Engine(pkg).cycles  # the simulator's cycle model, beside the device's count
    k_dev, k_gold = decide(pkg, y_dev), decide(pkg, y_gold)
    same_out = (y_dev == y_gold).all(axis=1)
    show = len(names) if images else min(args.show, len(names))
    for i in range(show):
        line = f"{names[i]:>12s}  {pkg.classes[k_dev[i]]:>10s}  {cycles[i]:>9,d} cycles"
        if labels is not None:
            line += f"  (label {pkg.classes[labels[i]]})"
        if not same_out[i]:
            line += f"  golden says {pkg.classes[k_gold[i]]}, outputs differ"
        print(line)
    n = len(names)
    mean_cycles = float(cycles.mean())
    print(f"device   {info.name} on {args.port}, model {st.model_id.hex()[:16]} "
          f"({len(pkg.classes)} classes)")
    print(f"inputs   {source}")
    print(f"golden   outputs bit-exact {int(same_out.sum())}/{n} "
          f"({100 * same_out.mean():.1f} %), same class {int((k_dev == k_gold).sum())}/{n}")
    if labels is not None:
        print(f"accuracy {100 * float((k_dev == labels).mean()):.1f} % against the labels")
    print(f"cycles   {int(cycles.min()):,}..{int(cycles.max()):,} per inference as the device "
          f"counts them (mean {mean_cycles:,.0f} = {1e6 * mean_cycles / clock:,.0f} us at "
          f"{clock / 1e6:g} MHz); the cycle model gives {model_cycles:,} "
          f"(device/model {mean_cycles / model_cycles:.3f})")
    print(f"link     {n} inferences in {seconds:.2f} s ({n / seconds:,.1f}/s)")
    report = {
        "port": args.port, "inputs": source, "n": n, "model_id": st.model_id.hex(),
        "classes_device": [pkg.classes[k] for k in k_dev],
        "outputs_device": y_dev.astype(int).tolist(),
        "output_scale": pkg.output_scale, "output_zero_point": pkg.output_zero_point,
        "rounding": pkg.rounding,
        "cycles": cycles, "cycles_model": model_cycles, "bit_exact": float(same_out.mean()),
        "same_class": float((k_dev == k_gold).mean()),
        "accuracy": None if labels is None else float((k_dev == labels).mean()),
        "seconds": seconds,
    }
    return report, int((~same_out).sum())


def link_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", required=True, metavar="URL",
                   help="pyserial port or URL: /dev/ttyUSB0, /dev/pts/N, socket://HOST:PORT")
    p.add_argument("--baud", type=LIMITS["baud"].arg(), default=DEFAULT_SETTINGS.baud,
                   help=f"line rate ({LIMITS['baud'].describe()}; default %(default)s)")
    p.add_argument("--window", type=LIMITS["window"].arg(), default=DEFAULT_SETTINGS.window,
                   help=f"frames in flight ({LIMITS['window'].describe()}; default %(default)s; "
                   "1 = stop-and-wait)")
    p.add_argument("--timeout", type=LIMITS["timeout_s"].arg(),
                   default=DEFAULT_SETTINGS.timeout_s, metavar="S",
                   help="silence beyond the line time before resending "
                   f"({LIMITS['timeout_s'].describe()}; default %(default)s s)")
    p.add_argument("--retries", type=LIMITS["retries"].arg(), default=DEFAULT_SETTINGS.retries,
                   help="resends without reply before the link counts as lost "
                   f"({LIMITS['retries'].describe()}; default %(default)s)")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON (infer: with "
                   "the device's raw int8 outputs beside its classes)")
    p.add_argument("--trace", metavar="FILE",
                   help="write every frame sent and received to FILE, one readable line each "
                   "(time, direction, type, seq, length, decoded fields)")


INFER_LIMITS: dict[str, Limit] = {
    "n": Limit(1, 1_000_000, "images", integer=True),
    "show": Limit(0, 1_000_000, "lines", integer=True),
}
"""Ranges of ``mark1 infer``'s own numbers."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``mark1 push`` and ``mark1 infer``."""
    p = subparsers.add_parser(
        "push", help="upload a weight package to a device and make it active",
        description="Upload a weight package (.m1w) over a serial port: handshake, upload with\n"
        "several frames in flight (resuming after a lost link), read-back verification,\n"
        "commit, and a final status check.",
        epilog=EXIT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="weight package file (.m1w)")
    link_options(p)
    p.add_argument("--slot", choices=tuple(SLOTS), default="auto",
                   help="flash slot to write (default: the one not running)")
    p.add_argument("--no-read-back", action="store_true",
                   help="skip reading the image back during the upload (the device still "
                   "checks its CRC-32 before switching slots)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_push)

    p = subparsers.add_parser(
        "infer", help="run inputs on the device and compare with the golden reference",
        description="Send int8 inputs to the device's active model; print its classes and\n"
        "cycle estimates and how its outputs agree with the golden integer reference.\n"
        "A model on the retina takes images (resampled onto its 20x20 grid); a model made\n"
        "elsewhere takes .npy arrays of its own inputs, (n, features), used as they are.",
        epilog=EXIT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images", nargs="*",
                   help="image files (PNG, JPEG or .npy) or .npy inputs of the model's size")
    link_options(p)
    p.add_argument("--task", help="use test images of this retina task (see `mark1 tasks`)")
    p.add_argument("--n", type=INFER_LIMITS["n"].arg(), default=100,
                   help=f"number of task images ({INFER_LIMITS['n'].describe()}; default 100)")
    p.add_argument("--seed", type=SEED.arg(), default=0,
                   help=f"task seed ({SEED.describe()}; default 0)")
    p.add_argument("--show", type=INFER_LIMITS["show"].arg(), default=10,
                   help="task images to list one per line (default 10)")
    p.add_argument("--model", metavar="FILE",
                   help="the package the device runs (else it is read back from the device)")
    p.set_defaults(handler=_infer)
