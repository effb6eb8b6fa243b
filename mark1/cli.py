"""The ``mark1`` command line.

Each part registers its own subcommands (``mark1/commands.py``, ``mark1/sweep_cli.py``,
``export/*/cli.py``, ``firmware_sim/cli.py``; see :data:`COMMAND_MODULES`). Registration imports
only argparse; a subcommand imports numpy, torch, onnxruntime or Dask inside its handler, so
``mark1 --help`` stays fast.

Exit status: 0 success; 2 bad input (one line on stderr, no traceback, no output written), or
a module of an extra that is not installed (the line names the extra: ``mark1.extras``);
other codes are documented by the command that uses them; 130 interrupted; 141 stdout closed by
its reader (``mark1 tasks -v | head``: no message, like any command ended by SIGPIPE).
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
    "export.serial.ops_cli",
    "firmware_sim.cli",
)
"""Modules whose ``register(subparsers)`` adds subcommands, in the order ``--help`` lists them."""


BROKEN_PIPE = 128 + 13
"""Exit status when the reader of stdout went away (``mark1 tasks -v | head``): what a shell
reports for a program ended by SIGPIPE, said without a message, as such programs end."""


def _stdout_gone() -> bool:
    """True if stdout is a pipe or socket whose reading end is closed."""
    import select

    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0))


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's last flush cannot fail again."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


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
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, --version, or a usage error
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _silence_stdout()
            return BROKEN_PIPE
        raise done
    except BrokenPipeError:
        _silence_stdout()
        return BROKEN_PIPE
    from mark1.extras import check_command

    advice = check_command(args.command, getattr(args, "format", None))
    if advice is not None:
        print(f"mark1 {args.command}: error: {advice}", file=sys.stderr)
        return 2
    try:
        status = args.handler(args)
        sys.stdout.flush()  # a reader that went away is found here, not at exit
    except KeyboardInterrupt:
        print("mark1: interrupted", file=sys.stderr)
        return 130
    except Mark1Error as exc:
        print(f"mark1 {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ModuleNotFoundError as exc:
        from mark1.extras import missing_extra

        advice = missing_extra(exc)
        if advice is None:
            raise
        print(f"mark1 {args.command}: error: {advice}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError) as exc:
        if isinstance(exc, BrokenPipeError) and _stdout_gone():
            _silence_stdout()
            return BROKEN_PIPE
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
            text = f"{text}: {exc.filename}"
        print(f"mark1 {args.command}: error: {text}", file=sys.stderr)
        return 2
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
