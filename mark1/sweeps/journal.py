"""``runs.jsonl``: every finished run of a sweep folder, one JSON line each, by its key.

The sweep appends a line as each run comes back, so a sweep killed at any point keeps every
run it finished; the same spec run again reads the journal and runs only what is missing. A
line cut short by a kill mid-write is dropped (and cut off the file) when the journal is next
opened. The journal is locked while a sweep writes it: two sweeps never share a folder. A
sweep that ends before any run finished (a bad setting found by the first run, Ctrl-C) leaves no
journal, nor the folder if it made it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any

NAME = "runs.jsonl"


class Journal:
    """The finished runs of one sweep folder, open for appending (use as a context manager)."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / NAME
        self.results: dict[str, dict[str, Any]] = {}
        """Measures of each finished run, by key."""
        self._fd = -1

    def __enter__(self) -> Journal:
        self._made_folder = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._made_file = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ValueError(f"{self.path}: another sweep is writing to this folder") from None
        self._fd = fd
        self._read()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            empty = os.fstat(self._fd).st_size == 0
            if empty and self._made_file:  # no run finished: nothing to resume from, and
                with contextlib.suppress(FileNotFoundError):  # nothing of this sweep is
                    os.unlink(self.path)  # left behind (unless the folder was cleared)
                if self._made_folder:
                    try:
                        self.path.parent.rmdir()
                    except OSError:
                        pass
            os.close(self._fd)  # closing releases the lock
            self._fd = -1

    def _read(self) -> None:
        with open(self.path, "rb") as fh:
            data = fh.read()
        good = data.rfind(b"\n") + 1  # a line cut short by a kill has no newline yet
        for n, line in enumerate(data[:good].splitlines(), 1):
            try:
                record = json.loads(line)
                self.results[record["key"]] = record["result"]
            except (ValueError, KeyError, TypeError):
                raise ValueError(f"{self.path}: line {n} is not a run record; move the file "
                                 "away to start the sweep afresh") from None
        if good < len(data):
            os.ftruncate(self._fd, good)

    def add(self, key: str, config: dict[str, Any], result: dict[str, Any]) -> None:
        """Record a finished run (one write of one whole line)."""
        line = json.dumps({"key": key, "config": config, "result": result}, sort_keys=True)
        os.write(self._fd, line.encode() + b"\n")
        self.results[key] = result
