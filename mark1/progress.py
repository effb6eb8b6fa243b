"""Progress bars on stderr, drawn only where someone watches: when stderr is a terminal.

A log file, a pipe or a CI console gets no bar (tqdm's carriage returns and escape codes would
fill it), unless the caller asks for one explicitly. Every command's bar goes through
:func:`progress_bar`.
"""

from __future__ import annotations

import sys
from typing import Any


def wanted(enabled: bool | None = None) -> bool:
    """Whether to draw a bar: ``enabled`` if given, else whether stderr is a terminal."""
    if enabled is not None:
        return enabled
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed
        return False


class QuietBar:
    """What :func:`progress_bar` gives when no bar is drawn: the calls the commands make, and
    no output but what :meth:`write` is given. (A disabled ``tqdm`` would still start its
    monitor thread.)"""

    def __init__(self, iterable: Any = None) -> None:
        self.iterable = iterable
        self.n = 0

    def __iter__(self) -> Any:
        return iter(self.iterable)

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def set_postfix_str(self, *args: Any, **kwargs: Any) -> None:
        pass

    def write(self, text: str, file: Any = None) -> None:
        print(text, file=file or sys.stderr)

    def close(self) -> None:
        pass


def progress_bar(iterable: Any = None, *, enabled: bool | None = None, **kwargs: Any) -> Any:
    """A ``tqdm`` bar on stderr (``kwargs`` are tqdm's) if :func:`wanted`, else a
    :class:`QuietBar`."""
    if not wanted(enabled):
        return QuietBar(iterable)
    from tqdm import tqdm

    return tqdm(iterable, file=sys.stderr, **kwargs)
