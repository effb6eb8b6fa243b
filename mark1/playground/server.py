"""The playground's web server: the page, one machine per tab over a WebSocket, downloads.

Routes (Starlette):

``GET /``                          the page (``static/index.html``, shipped in the package)
``GET /static/...``                its script and style
``WS  /ws``                        a tab: a new machine, commands in, frames out
``GET /tab/<id>/machine.npz``      the tab's machine file (:meth:`MarkI.save`)
``GET /tab/<id>/<figure>.png``     its figures (``curves``, ``pots``)
``GET /status``                    tabs open, and the limits

Each tab's machine runs in the server's event loop in short slices (at most
:data:`SLICE_S` of trials at a time), so that no tab holds up another; slow work (making a
task's cards, a pass of the XOR race, drawing a figure) runs in a worker thread. A tab gets at
most :data:`FRAMES_PER_S` frames a second, and an answer to each command at once. The socket
is guarded: a message that is too large, not JSON, unknown or out of range gets an ``error``
message; more than :data:`MESSAGES_PER_S` messages a second are dropped with one ``error``
a second saying how many. A closed tab's machine is dropped.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import math
import secrets
import socket
import sys
import tempfile
import threading
import time
import webbrowser
from collections.abc import AsyncIterator, Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from mark1.playground import protocol
from mark1.playground.cli import MAX_TABS
from mark1.playground.figures import FIGURES
from mark1.playground.tab import Tab, task_cards
from mark1.presets import PRESETS
from mark1.stimuli import TASKS

SLICE_S = 0.004
"""Most wall time a tab's trials take in one go before the other tabs' turn, s."""
FRAMES_PER_S = 20.0
"""Most frames a tab is sent a second (answers to commands go at once)."""
MESSAGES_PER_S = 100.0
"""Messages a tab may send a second, on average ..."""
MESSAGE_BURST = 200.0
"""... and at once."""
WS_MAX_BYTES = 1 << 20
"""The socket closes (code 1009) on a message beyond this; up to it, messages over
:data:`mark1.playground.protocol.MAX_MESSAGE_BYTES` are answered with an error."""
TEST_EVERY_S = 1.0
"""Wall time between test-accuracy measurements while a tab's machine learns, s."""
XOR_PASS_S = 0.3
"""Wall time between passes of a running XOR race, s."""


def _static() -> Path:
    return Path(str(resources.files("mark1.playground") / "static"))


class Connection:
    """One tab: its machine, its socket, and the loops that step, listen and send."""

    def __init__(self, websocket: WebSocket, tab: Tab, token: str) -> None:
        self.ws, self.tab, self.token = websocket, tab, token
        self.playing = False
        self.speed = protocol.DEFAULT_SPEED
        self.pending = 0  # trials asked for by "one trial" / "one pass"
        self._credit = 0.0  # trials due at the current speed, not run yet
        self._clock: tuple[float, float] | None = None  # (wall, machine time) at the 1960 pace
        self._last_step = time.monotonic()
        self._tested = 0.0
        self.acks: list[int | str] = []
        self.replies: collections.deque[dict[str, Any]] = collections.deque(maxlen=32)
        self.frame_due = True
        self._last_frame = 0.0
        self._outbox = asyncio.Event()
        self._work = asyncio.Event()
        self._tokens = MESSAGE_BURST
        self._refill = time.monotonic()
        self._dropped = 0
        self._dropped_told = 0.0
        self.xor_playing = False
        self._xor_busy = False
        self._rng = np.random.default_rng()

    # ------------------------------------------------------------------ the loops
    async def serve(self) -> None:
        """Listen until the page goes; the stepping and sending loops run beside."""
        self._outbox.set()  # the first frame
        tasks = [asyncio.create_task(self._run()), asyncio.create_task(self._send())]
        try:
            await self._listen()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

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
            try:
                await self.apply(command)
            except (ValueError, TypeError) as exc:
                self.error(str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                           command.id)

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

    async def _run(self) -> None:
        """Run the trials that are due, a slice at a time; then sleep until the next is."""
        while True:
            if not (self.playing or self.pending or self.xor_playing):
                await self._work.wait()
                self._work.clear()
                self._last_step, self._credit = time.monotonic(), 0.0
                continue
            delay = self._slice()
            if self.xor_playing and not self._xor_busy:
                asyncio.create_task(self._xor_pass())
            if self.xor_playing and not (self.playing or self.pending):
                delay = XOR_PASS_S
            await asyncio.sleep(delay)

    def _slice(self) -> float:
        """Run the trials due now, for at most :data:`SLICE_S`; return when to look again."""
        now = time.monotonic()
        end = now + SLICE_S
        rate = protocol.SPEEDS[self.speed]
        ran = 0
        if self.pending:
            while self.pending and (ran == 0 or time.monotonic() < end):
                self.pending -= 1
                ran += self.tab.step(1)
            self._last_step = now
        elif self.playing:
            if self.speed == "1960":  # wall seconds = machine seconds
                machine = self.tab.machine.machine_time_s if self.tab.wired else 0.0
                if self._clock is None:
                    self._clock = (now, machine)
                wall0, machine0 = self._clock
                while machine - machine0 <= time.monotonic() - wall0 and (
                        time.monotonic() < end):
                    ran += self.tab.step(1)
                    machine = self.tab.machine.machine_time_s
                wait = (machine - machine0) - (time.monotonic() - wall0)
            elif math.isinf(rate):
                while ran == 0 or time.monotonic() < end:
                    ran += self.tab.step(1)
                wait = 0.0
            else:
                self._credit = min(self._credit + (now - self._last_step) * rate, rate + 1)
                self._last_step = now
                while self._credit >= 1 and (ran == 0 or time.monotonic() < end):
                    self._credit -= 1
                    ran += self.tab.step(1)
                wait = 0.0 if self._credit >= 1 else (1 - self._credit) / rate
        if ran:
            if now - self._tested >= TEST_EVERY_S:
                self.tab.test()
                self._tested = now
            self.frame_due = True
            self._outbox.set()
        if self.pending:
            return 0.0
        if not self.playing:
            return 0.0
        return max(0.0, min(wait, 1.0))

    async def _send(self) -> None:
        """Send answers at once, and frames at most :data:`FRAMES_PER_S` a second."""
        while True:
            await self._outbox.wait()
            self._outbox.clear()
            while self.replies:
                await self.ws.send_text(json.dumps(self.replies.popleft()))
            if not (self.frame_due or self.acks):
                continue
            wait = self._last_frame + 1 / FRAMES_PER_S - time.monotonic()
            if wait > 0 and not self.acks:
                await asyncio.sleep(wait)
            self.frame_due = False
            frame = self.tab.frame()
            frame.update(re=self.acks, playing=self.playing, speed=self.speed,
                         xor_playing=self.xor_playing)
            self.acks = []
            self._last_frame = time.monotonic()
            await self.ws.send_text(json.dumps(frame))

    # ------------------------------------------------------------------ answers
    def reply(self, message: dict[str, Any], re: int | str | None = None) -> None:
        """Queue an answer (with ``re``, the command's id, when it had one)."""
        if re is not None:
            message["re"] = [re]
        self.replies.append(message)
        self._outbox.set()

    def error(self, text: str, re: object) -> None:
        """Queue an ``error`` message."""
        tag = re if isinstance(re, (int, str)) and not isinstance(re, bool) else None
        self.reply({"type": "error", "message": text}, tag)

    def ack(self, command: protocol.Command) -> None:
        """The next frame answers ``command`` (sent at once)."""
        if command.id is not None:
            self.acks.append(command.id)
        self.frame_due = True
        self._outbox.set()

    # ------------------------------------------------------------------ commands
    async def apply(self, command: protocol.Command) -> None:
        """Carry out one checked command from the page."""
        kind, args, tab = command.type, command.args, self.tab
        if kind == "play":
            self.playing, self._clock = True, None
            self._work.set()
        elif kind == "pause":
            self.playing, self.pending = False, 0
        elif kind == "step":
            self.pending += 1
            self._work.set()
        elif kind == "pass":
            self.pending += tab.trials_left_in_pass()
            self._work.set()
        elif kind == "reset":
            self.playing, self.pending = False, 0
            tab.rebuild()
        elif kind == "speed":
            self.speed, self._clock = args["value"], None
        elif kind == "task":
            self.reply({"type": "busy", "what": f"making the cards of {args['name']}"},
                       command.id)
            task = await asyncio.to_thread(task_cards, args["name"])
            self.playing, self.pending = False, 0
            tab.configure(task=task)
        elif kind in ("preset", "rule"):
            self.playing, self.pending = False, 0
            tab.configure(**{kind: args["name"]})
        elif kind == "seed":
            self.playing, self.pending = False, 0
            tab.configure(seed=args["value"])
        elif kind == "param":
            self.playing, self.pending = False, 0
            tab.configure(**{args["name"]: args["value"]})
        elif kind == "card":
            tab.pick(args["index"], self._rng)
        elif kind == "draw":
            tab.draw(args["cells"])
        elif kind == "look":
            tab.look()
        elif kind == "teach":
            self.playing, self.pending = False, 0
            tab.teach(args["label"])
        elif kind == "test":
            tab.test()
        elif kind == "xor":
            await self._xor(args["action"], command)
            return
        self.ack(command)

    async def _xor(self, action: str, command: protocol.Command) -> None:
        if action == "reset":
            self.xor_playing = False
            self.tab.xor = None
            self.reply({"type": "xor", "passes": 0, "learners": {}}, command.id)
            return
        if action == "pause":
            self.xor_playing = False
        elif action == "play":
            self.xor_playing = True
            self._work.set()
        elif action == "step" and not self._xor_busy:
            self.reply({"type": "busy", "what": "a pass of the XOR race"}, command.id)
            await self._xor_pass()
            return
        self.reply(self._xor_message(), command.id)

    async def _xor_pass(self) -> None:
        """One pass of the tab's XOR race, in a worker thread; then its state to the page."""
        self._xor_busy = True
        try:
            race = self.tab.xor_race()
            if race.done:
                self.xor_playing = False
            else:
                await asyncio.to_thread(race.step)
            self.reply(self._xor_message())
        finally:
            self._xor_busy = False

    def _xor_message(self) -> dict[str, Any]:
        race = self.tab.xor
        learners: dict[str, Any] = {}
        if race is not None:
            for name in race.mistakes:
                learners[name] = {
                    "mistakes": race.mistakes[name], "accuracy": race.accuracy.get(name),
                    "map": protocol.levels(race.maps[name], 0.0, 1.0) if name in race.maps
                    else None}
        return {"type": "xor", "passes": 0 if race is None else race.passes,
                "learners": learners, "playing": self.xor_playing,
                "map_size": 11, "done": bool(race is not None and race.done)}


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


def warm() -> None:
    """Train a trial on each kind of pots and make the default task: the first tab then does
    not wait for the compiled training passes or the cards."""
    for preset in ("cds-1960", "ideal"):
        tab = Tab()
        tab.configure(preset=preset)
        tab.step(2)


def create_app(max_tabs: int = MAX_TABS, warm_up: bool = False,
               on_ready: Callable[[], None] | None = None) -> Starlette:
    """The playground's application. ``warm_up``: train a trial or two before serving
    (:func:`warm`); ``on_ready`` is called once it serves."""
    tabs: dict[str, Connection] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if warm_up:
            await asyncio.to_thread(warm)
        if on_ready is not None:
            on_ready()
        yield

    async def page(request: Request) -> Response:
        return FileResponse(_static() / "index.html", media_type="text/html")

    async def status(request: Request) -> Response:
        return JSONResponse({"tabs": len(tabs), "max_tabs": max_tabs})

    async def tab_socket(websocket: WebSocket) -> None:
        await websocket.accept()
        if len(tabs) >= max_tabs:
            await websocket.send_text(json.dumps({
                "type": "error", "message": f"this server holds {max_tabs} tabs at once, all "
                "taken; close one or start the server with a larger --max-tabs"}))
            await websocket.close(code=1013)
            return
        token = secrets.token_urlsafe(12)
        try:
            tab = Tab(task=await asyncio.to_thread(task_cards, "e-f"))
        except Exception as exc:  # pragma: no cover - the default task is made by the kit
            await websocket.close(code=1011, reason=str(exc)[:100])
            return
        conn = Connection(websocket, tab, token)
        tabs[token] = conn
        try:
            await websocket.send_text(json.dumps(_welcome(token)))
            await conn.serve()
        except WebSocketDisconnect:
            pass
        finally:
            tabs.pop(token, None)  # the machine goes with the tab

    def _find(request: Request) -> Connection | Response:
        conn = tabs.get(request.path_params["token"])
        if conn is None:
            return JSONResponse({"error": "no such tab (it was closed, or the server was "
                                 "restarted): reload the page"}, status_code=404)
        return conn

    async def machine_file(request: Request) -> Response:
        conn = _find(request)
        if isinstance(conn, Response):
            return conn
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = conn.tab.save_machine(Path(tmp) / "machine.npz")
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=409)
            data = path.read_bytes()
        return Response(data, media_type="application/octet-stream", headers={
            "Content-Disposition": 'attachment; filename="machine.npz"'})

    async def figure(request: Request) -> Response:
        conn = _find(request)
        if isinstance(conn, Response):
            return conn
        name = request.path_params["name"]
        if name not in FIGURES:
            return JSONResponse({"error": f"no figure {name!r}; figures: "
                                 f"{', '.join(FIGURES)}"}, status_code=404)
        data = conn.tab.figure_data()
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
    app.state.tabs = tabs
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
          max_tabs: int = MAX_TABS) -> int:
    """Serve the playground until interrupted; open the page in a browser when asked."""
    import uvicorn

    sock = listen(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else shown}:{bound}/"

    def ready() -> None:
        print(f"mark1 playground: serving {url} (up to {max_tabs} tabs; Ctrl-C stops)",
              file=sys.stderr, flush=True)
        if host not in ("127.0.0.1", "localhost", "::1"):
            print(f"mark1 playground: listening on {host}: anyone who can reach this "
                  "machine can open the page", file=sys.stderr, flush=True)
        if open_browser:
            threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()

    app = create_app(max_tabs=max_tabs, warm_up=True, on_ready=ready)
    config = uvicorn.Config(app, log_level="warning", ws_max_size=WS_MAX_BYTES,
                            lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])
    return 0
