"""The playground's web server: the page, one machine per tab over a WebSocket, downloads.

Routes (Starlette):

``GET /``                          the page (``static/index.html``, shipped in the package)
``GET /static/...``                its script and style
``WS  /ws``                        a tab: a new machine, commands in, frames out
``GET /tab/<id>/machine.npz``      the tab's machine file (:meth:`MarkI.save`)
``GET /tab/<id>/<figure>.png``     its figures (``curves``, ``pots``)
``GET /status``                    tabs open, and the limits

The server's loop checks every message (:func:`mark1.playground.protocol.parse`) and moves
messages; the machines run in worker processes (:class:`~mark1.playground.machines.
WorkerMachines`) or, with ``workers=0``, in this loop. A message that is too large, not JSON,
unknown or out of range gets an ``error`` message; more than :data:`MESSAGES_PER_S` messages a
second are dropped with one ``error`` a second saying how many. A tab that does not read its
frames gets only the latest. A closed tab's machine is dropped.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import secrets
import socket
import sys
import threading
import time
import webbrowser
from collections.abc import AsyncIterator, Callable
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from mark1.playground import MAX_TABS, protocol
from mark1.playground.figures import FIGURES
from mark1.playground.machines import LocalMachines, WorkerMachines
from mark1.playground.runner import FRAMES_PER_S
from mark1.presets import PRESETS
from mark1.stimuli import TASKS

MESSAGES_PER_S = 100.0
"""Messages a tab may send a second, on average ..."""
MESSAGE_BURST = 200.0
"""... and at once."""
WS_MAX_BYTES = 1 << 20
"""The socket closes (code 1009) on a message beyond this; up to it, messages over
:data:`mark1.playground.protocol.MAX_MESSAGE_BYTES` are answered with an error."""
OUTBOX = 64
"""Messages waiting for a slow tab before its oldest frames are dropped."""

Machines = LocalMachines | WorkerMachines


def default_workers() -> int:
    """Worker processes by default: one per core (at most 8)."""
    return max(1, min(8, os.cpu_count() or 1))


def _static() -> Path:
    return Path(str(resources.files("mark1.playground") / "static"))


class Socket:
    """A tab's WebSocket: checks what comes in, queues what goes out."""

    def __init__(self, websocket: WebSocket, token: str, machines: Machines) -> None:
        self.ws, self.token, self.machines = websocket, token, machines
        self.outbox: collections.deque[str] = collections.deque()
        self._ready = asyncio.Event()
        self._tokens = MESSAGE_BURST
        self._refill = time.monotonic()
        self._dropped = 0
        self._dropped_told = 0.0
        self.closed = asyncio.Event()

    def emit(self, text: str) -> None:
        """Queue a message for the page; a backlog keeps only the latest plain frame."""
        if len(self.outbox) >= OUTBOX:
            plain = [k for k, t in enumerate(self.outbox) if t.startswith('{"type": "frame"')
                     and t.endswith('"re": []}')]
            for k in reversed(plain[:-1] if plain else []):
                del self.outbox[k]
            if len(self.outbox) >= OUTBOX:
                self.outbox.popleft()
        self.outbox.append(text)
        self._ready.set()

    def error(self, text: str, re: object) -> None:
        tag = [re] if isinstance(re, (int, str)) and not isinstance(re, bool) else []
        self.emit(json.dumps({"type": "error", "message": text, "re": tag}))

    async def serve(self) -> None:
        """Listen until the page goes (or its machine does); send beside."""
        sender = asyncio.create_task(self._send())
        listener = asyncio.create_task(self._listen())
        gone = asyncio.create_task(self.closed.wait())
        try:
            await asyncio.wait({listener, gone}, return_when=asyncio.FIRST_COMPLETED)
            if gone.done():  # let the last words out
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._drain(), 2.0)
        finally:
            for task in (sender, listener, gone):
                task.cancel()
            for task in (sender, listener, gone):
                with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect,
                                         Exception):
                    await task

    async def _drain(self) -> None:
        while self.outbox:
            await asyncio.sleep(0.01)

    async def _send(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self.outbox:
                await self.ws.send_text(self.outbox.popleft())

    async def _listen(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            if not self._admit():
                continue
            data = message.get("text")
            if data is None:
                self.error("binary messages are not understood; send JSON text", None)
                continue
            try:
                command = protocol.parse(data)
            except protocol.BadMessage as exc:
                self.error(str(exc), exc.id)
                continue
            self.machines.command(self.token, command)

    def _admit(self) -> bool:
        """Token bucket: :data:`MESSAGES_PER_S` a second, :data:`MESSAGE_BURST` at once."""
        now = time.monotonic()
        self._tokens = min(MESSAGE_BURST, self._tokens + (now - self._refill) * MESSAGES_PER_S)
        self._refill = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        self._dropped += 1
        if now - self._dropped_told >= 1.0:
            self.error(f"too many messages: {self._dropped:,} dropped (at most "
                       f"{MESSAGES_PER_S:.0f} a second)", None)
            self._dropped, self._dropped_told = 0, now
        return False


def _welcome(token: str) -> dict[str, Any]:
    return {
        "type": "welcome", "tab": token,
        "tasks": dict(TASKS), "presets": {k: p.description for k, p in PRESETS.items()},
        "rules": list(protocol.RULE_NAMES),
        "sliders": {k: vars(s) for k, s in protocol.SLIDERS.items()},
        "speeds": list(protocol.SPEEDS), "default_speed": protocol.DEFAULT_SPEED,
        "limits": {"max_message_bytes": protocol.MAX_MESSAGE_BYTES,
                   "messages_per_s": MESSAGES_PER_S, "frames_per_s": FRAMES_PER_S},
        "figures": list(FIGURES),
    }


def create_app(max_tabs: int = MAX_TABS, workers: int = 0, warm_up: bool = False,
               on_ready: Callable[[], None] | None = None) -> Starlette:
    """The playground's application: ``workers`` processes hold the machines (0: this loop);
    ``warm_up``: they train a trial or two before serving; ``on_ready`` is called once the
    server serves."""
    machines: Machines = WorkerMachines(workers, warm_up) if workers else LocalMachines()
    sockets: dict[str, Socket] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await machines.start()
        if warm_up and not workers:
            from mark1.playground.machines import warm

            await asyncio.to_thread(warm)
        if on_ready is not None:
            on_ready()
        try:
            yield
        finally:
            await machines.stop()

    async def page(request: Request) -> Response:
        return FileResponse(_static() / "index.html", media_type="text/html")

    async def status(request: Request) -> Response:
        return JSONResponse({"tabs": len(sockets), "max_tabs": max_tabs, "machines":
                             machines.tabs, "workers": workers})

    async def tab_socket(websocket: WebSocket) -> None:
        await websocket.accept()
        if len(sockets) >= max_tabs:
            await websocket.send_text(json.dumps({
                "type": "error", "re": [], "message": f"this server holds {max_tabs} tabs at "
                "once, all taken; close one or start the server with a larger --max-tabs"}))
            await websocket.close(code=1013)
            return
        token = secrets.token_urlsafe(12)
        sock = Socket(websocket, token, machines)
        sockets[token] = sock
        try:
            await websocket.send_text(json.dumps(_welcome(token)))
            await machines.open(token, sock.emit, lambda _: sock.closed.set())
            await sock.serve()
        except WebSocketDisconnect:
            pass
        finally:
            sockets.pop(token, None)
            machines.close(token)  # the machine goes with the tab

    def _missing() -> Response:
        return JSONResponse({"error": "no such tab (it was closed, or the server was "
                             "restarted): reload the page"}, status_code=404)

    async def machine_file(request: Request) -> Response:
        try:
            data = await machines.machine_file(request.path_params["token"])
        except KeyError:
            return _missing()
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=409)
        return Response(data, media_type="application/octet-stream", headers={
            "Content-Disposition": 'attachment; filename="machine.npz"'})

    async def figure(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in FIGURES:
            return JSONResponse({"error": f"no figure {name!r}; figures: "
                                 f"{', '.join(FIGURES)}"}, status_code=404)
        try:
            data = await machines.figure_data(request.path_params["token"])
        except KeyError:
            return _missing()
        png = await asyncio.to_thread(FIGURES[name], data)
        return Response(png, media_type="image/png", headers={
            "Content-Disposition": f'attachment; filename="{name}.png"'})

    app = Starlette(routes=[
        Route("/", page),
        Route("/status", status),
        Route("/tab/{token}/machine.npz", machine_file),
        Route("/tab/{token}/{name}.png", figure),
        WebSocketRoute("/ws", tab_socket),
        Mount("/static", StaticFiles(directory=_static()), name="static"),
    ], lifespan=lifespan)
    app.state.sockets = sockets
    app.state.machines = machines
    return app


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port`` 0: any free one)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        raise ValueError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    return sock


def serve(host: str = "127.0.0.1", port: int = 8000, open_browser: bool = True,
          max_tabs: int = MAX_TABS, workers: int | None = None) -> int:
    """Serve the playground until interrupted; open the page in a browser when asked."""
    import uvicorn

    sock = listen(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else shown}:{bound}/"
    n_workers = default_workers() if workers is None else workers

    def ready() -> None:
        print(f"mark1 playground: serving {url} (up to {max_tabs} tabs, machines in "
              f"{n_workers or 'this'} process{'es' if n_workers > 1 else ''}; Ctrl-C stops)",
              file=sys.stderr, flush=True)
        if host not in ("127.0.0.1", "localhost", "::1"):
            print(f"mark1 playground: listening on {host}: anyone who can reach this "
                  "machine can open the page", file=sys.stderr, flush=True)
        if open_browser:
            threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()

    app = create_app(max_tabs=max_tabs, workers=n_workers, warm_up=True, on_ready=ready)
    config = uvicorn.Config(app, log_level="warning", ws_max_size=WS_MAX_BYTES,
                            lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])
    return 0
