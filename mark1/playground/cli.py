"""The ``mark1 playground`` subcommand. Only argparse is imported here; the handler imports the
web server (Starlette, uvicorn) when it runs."""

from __future__ import annotations

import argparse

from mark1.limits import Limit
from mark1.playground import MAX_TABS

EXTRA = "pip install 'mark1-kit[playground]'"
"""How to install what the playground's server needs."""

SERVER_MODULES = ("starlette", "uvicorn", "websockets")
"""The modules the server needs (the ``playground`` extra)."""

PLAYGROUND_LIMITS: dict[str, Limit] = {
    "port": Limit(1, 65535, integer=True, special=(0,), meaning="any free port"),
    "max_tabs": Limit(1, 10_000, "tabs", integer=True),
    "workers": Limit(0, 64, "processes", integer=True),
}
"""Ranges of ``mark1 playground``'s numbers, checked while the command line is read."""


def _playground(args: argparse.Namespace) -> int:
    import importlib

    from mark1.errors import Mark1Error

    missing = []
    for name in SERVER_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise Mark1Error(f"the playground's web server needs {', '.join(missing)}, not "
                         f"installed: {EXTRA}", exit_code=2)
    from mark1.playground.server import serve

    return serve(args.host, args.port, open_browser=not args.no_browser,
                 max_tabs=args.max_tabs, workers=args.workers)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``mark1 playground``."""
    p = subparsers.add_parser(
        "playground", help="the Mark I in a browser: draw on the retina, watch it learn",
        description="Start a local web server with the Mark I playground and open it in a "
        "browser: draw on the 20 x 20 retina or pick a task's card, watch the cells, A-units, "
        "R-units and the potentiometer panel as the machine learns, teach it yourself, race "
        "one layer against the Mark I and an MLP on XOR, download the machine (machine.npz) "
        "and figures. Each browser tab has its own machine. Needs " + EXTRA + ".",
        epilog="Example: mark1 playground --host 0.0.0.0 --port 8000 --no-browser (serve a "
        "classroom on this machine's address)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 "
                   "serves every network this machine is on)")
    p.add_argument("--port", type=PLAYGROUND_LIMITS["port"].arg(), default=8000,
                   help=f"TCP port ({PLAYGROUND_LIMITS['port'].describe()}; default 8000)")
    p.add_argument("--no-browser", action="store_true", help="do not open the page")
    p.add_argument("--max-tabs", type=PLAYGROUND_LIMITS["max_tabs"].arg(), default=MAX_TABS,
                   help="most tabs (machines) served at once "
                   f"({PLAYGROUND_LIMITS['max_tabs'].describe()}; default {MAX_TABS})")
    p.add_argument("--workers", type=PLAYGROUND_LIMITS["workers"].arg(), default=None,
                   help="processes that run the machines "
                   f"({PLAYGROUND_LIMITS['workers'].describe()}; default: one per core, at "
                   "most 8; 0: the server's own)")
    p.set_defaults(handler=_playground)
