"""The ``mark1`` command line.

Each part registers its own subcommands (``mark1/commands.py``, ``mark1/sweep_cli.py``,
``export/*/cli.py``, ``firmware_sim/cli.py``; see :data:`COMMAND_MODULES`). Registration imports
only argparse; a subcommand imports numpy, torch, onnxruntime or Dask inside its handler, so
``mark1 --help`` stays fast.

Exit status: 0 success; 2 bad input (one line on stderr, no traceback, no output written);
other codes are documented by the command that uses them; 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMAND_MODULES: tuple[str, ...] = (
    "mark1.commands",
    "mark1.sweep_cli",
    "mark1.playground.cli",
    "export.onnx.cli",
    "export.int8.cli",
    "export.serial.cli",
    "firmware_sim.cli",
)
"""Modules whose ``register(subparsers)`` adds subcommands, in the order ``--help`` lists them."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full ``mark1`` parser with every registered subcommand."""
    from mark1 import __version__

    parser = _Parser(
        prog="mark1",
        description="The Mark I Perceptron, simulated; and small networks taken to a Jetson "
        "or a microcontroller.",
    )
    parser.add_argument("--version", action="version", version=f"mark1-kit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    from mark1.errors import Mark1Error

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.handler(args)
    except KeyboardInterrupt:
        print("mark1: interrupted", file=sys.stderr)
        return 130
    except Mark1Error as exc:
        print(f"mark1 {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (ValueError, TypeError, OSError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
            text = f"{text}: {exc.filename}"
        print(f"mark1 {args.command}: error: {text}", file=sys.stderr)
        return 2
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
