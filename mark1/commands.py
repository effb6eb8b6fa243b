"""Subcommands of the Mark I machine: ``tasks`` (more are added by their modules below).

Only argparse is imported here; each handler imports what it needs.
"""

from __future__ import annotations

import argparse


def _tasks(args: argparse.Namespace) -> int:
    from mark1.stimuli import TASKS, make_task

    for name, text in TASKS.items():
        line = f"{name:15s} {text}"
        if args.verbose:
            task = make_task(name, seed=0)
            line += f"  [{len(task.classes)} classes, {task.n_train} train / {task.n_test} test]"
        print(line)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the Mark I subcommands."""
    p = subparsers.add_parser("tasks", help="list the retina tasks")
    p.add_argument("-v", "--verbose", action="store_true", help="also show classes and sizes")
    p.set_defaults(handler=_tasks)
