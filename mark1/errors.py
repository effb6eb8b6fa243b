"""Errors the command line turns into one line on stderr and an exit status.

Bad input raises ``ValueError``/``TypeError`` (exit status 2). Failures that are not the
caller's input -- a device that does not answer, a verification that fails -- raise
:class:`Mark1Error` subclasses carrying their own documented exit status.
"""

from __future__ import annotations


class Mark1Error(Exception):
    """A failure reported as one line; ``exit_code`` is the CLI's exit status for it."""

    exit_code: int = 2

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
