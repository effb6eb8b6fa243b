"""The ``mark1 playground`` subcommand. Only argparse is imported here; the handler imports the
web server (Starlette, uvicorn) when it runs."""

from __future__ import annotations

import argparse

from mark1.playground import MAX_TABS

EXTRA = "pip install 'mark1-kit[playground]'"
"""How to install what the playground's server needs."""

SERVER_MODULES = ("starlette", "uvicorn", "websockets")
"""The modules the server needs (the ``playground`` extra)."""


def _playground(args: argparse.Namespace) -> int:
    import importlib

    from mark1.errors import Mark1Error

    if not 1 <= args.max_tabs <= 10_000:
        raise ValueError(f"--max-tabs must be in [1, 10000]; got {args.max_tabs}")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in [0, 65535]; got {args.port}")
    missing = []
    for name in SERVER_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise Mark1Error(f"the playground's web server needs {', '.join(missing)}, not "
                         f"installed: {EXTRA}", exit_code=2)
    if args.workers is not None and not 0 <= args.workers <= 64:
        raise ValueError(f"--workers must be in [0, 64]; got {args.workers}")
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
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0: any free)")
    p.add_argument("--no-browser", action="store_true", help="do not open the page")
    p.add_argument("--max-tabs", type=int, default=MAX_TABS,
                   help=f"most tabs (machines) served at once (default {MAX_TABS})")
    p.add_argument("--workers", type=int, default=None,
                   help="processes that run the machines (default: one per core, at most 8; "
                   "0: the server's own)")
    p.set_defaults(handler=_playground)
