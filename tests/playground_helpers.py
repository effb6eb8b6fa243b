"""Helpers of the playground's tests: a real server on 127.0.0.1, and reading a tab's answers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def live_server(**options: Any) -> Iterator[str]:
    """The playground served by uvicorn in a thread on 127.0.0.1 (a free port): yields
    ``host:port``; stops the server (and its workers) on exit."""
    import uvicorn

    from mark1.playground.server import WS_MAX_BYTES, create_app, listen

    app = create_app(**options)
    sock = listen("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", ws_max_size=WS_MAX_BYTES,
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the playground server did not start"
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def until(receive: Callable[[], dict[str, Any]], wanted: Callable[[dict[str, Any]], bool],
          limit: int = 2000) -> dict[str, Any]:
    """The first message ``receive()`` gives for which ``wanted`` holds (reading at most
    ``limit`` messages)."""
    for _ in range(limit):
        message = receive()
        if wanted(message):
            return message
    raise AssertionError(f"no such message in {limit}")


def answer(receive: Callable[[], dict[str, Any]], tag: int | str,
           kind: str | None = None) -> dict[str, Any]:
    """The first message answering command ``tag`` (of type ``kind`` when given)."""
    return until(receive, lambda m: tag in (m.get("re") or []) and (
        kind is None or m["type"] == kind))
