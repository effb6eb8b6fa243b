"""Where the tabs' machines run: in the server's own event loop, or in worker processes.

Both keep the same interface for the web server: :meth:`open` a tab's machine (its messages go
to the tab's ``emit``), hand it checked commands, :meth:`close` it, and fetch its machine file
or its figures' data.

* :class:`LocalMachines` runs each tab's :class:`~mark1.playground.runner.TabRunner` in the
  current event loop (one core);
* :class:`WorkerMachines` spreads the tabs over worker processes, each running a
  :class:`LocalMachines` in its own loop, so a classroom's machines use every core while the
  server's loop only moves messages. A tab stays with its worker; a worker that dies takes
  only its own tabs with it (they are told, and a new worker takes new tabs).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import multiprocessing
import tempfile
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from mark1.playground import protocol
from mark1.playground.runner import TabRunner
from mark1.playground.tab import Settings, Tab, task_cards

Emit = Callable[[str], None]
"""Where a tab's messages go (JSON text)."""

QUEUE = 256
"""Commands a tab may have waiting (behind a slow one) before more are refused."""

ANSWER_TIMEOUT_S = 60.0
"""Longest wait for a worker to hand over a machine file or a figure's data, s."""


def warm() -> None:
    """Train a trial on each kind of pots and make the default task's cards: the first tab
    then waits neither for the compiled training passes nor for its cards."""
    for preset in ("cds-1960", "ideal"):
        tab = Tab()
        tab.configure(preset=preset)
        tab.step(2)


def machine_file(tab: Tab) -> bytes:
    """The tab's ``machine.npz`` (written by :meth:`MarkI.save`), as bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        return tab.save_machine(Path(tmp) / "machine.npz").read_bytes()


class LocalMachines:
    """The tabs' machines in the current event loop.

    From :meth:`start` to :meth:`stop` the process's BLAS runs on one thread: the machines'
    products are small (a test accuracy: 400 cards by 512 A-units by 8 R-units), and spread
    over cores that other tabs keep busy, OpenBLAS makes them 10-20 times slower.
    """

    def __init__(self) -> None:
        self.runners: dict[str, TabRunner] = {}
        self._blas = contextlib.ExitStack()
        self._queues: dict[str, asyncio.Queue[protocol.Command]] = {}
        self._consumers: dict[str, asyncio.Task[None]] = {}
        self._emit: dict[str, Emit] = {}

    async def start(self) -> None:
        """Put BLAS on one thread."""
        from mark1.fast import one_blas_thread

        self._blas.enter_context(one_blas_thread())

    async def stop(self) -> None:
        """Drop every machine; BLAS as it was."""
        for token in list(self._queues):
            self.close(token)
        self._blas.close()

    @property
    def tabs(self) -> int:
        return len(self._queues)

    async def open(self, token: str, emit: Emit, gone: Callable[[str], None]) -> None:
        """A new machine for tab ``token``; its messages go to ``emit`` (:meth:`open_now`)."""
        self.open_now(token, emit)

    def open_now(self, token: str, emit: Emit) -> None:
        """A new machine for tab ``token``; its messages go to ``emit``. Commands may follow
        at once: they wait until the machine is made."""
        queue: asyncio.Queue[protocol.Command] = asyncio.Queue(QUEUE)
        self._queues[token], self._emit[token] = queue, emit
        self._consumers[token] = asyncio.get_running_loop().create_task(
            self._serve(token, emit, queue))

    async def _serve(self, token: str, emit: Emit,
                     queue: asyncio.Queue[protocol.Command]) -> None:
        tab = Tab(task=await asyncio.to_thread(task_cards, Settings().task))
        runner = self.runners[token] = TabRunner(tab, emit)
        runner.start()
        try:
            while True:  # one command after the other, in the order sent
                await runner.apply(await queue.get())
        finally:
            runner.stop()

    def command(self, token: str, command: protocol.Command) -> None:
        """Hand tab ``token`` a checked command."""
        queue = self._queues.get(token)
        if queue is None:
            return
        try:
            queue.put_nowait(command)
        except asyncio.QueueFull:
            message = {"type": "error", "re": [] if command.id is None else [command.id],
                       "message": f"{QUEUE} commands are waiting already; this one was dropped"}
            self._emit[token](json.dumps(message))

    def close(self, token: str) -> None:
        """Drop tab ``token``'s machine."""
        consumer = self._consumers.pop(token, None)
        if consumer is not None:
            consumer.cancel()  # (which stops its runner)
        self.runners.pop(token, None)
        self._queues.pop(token, None)
        self._emit.pop(token, None)

    async def machine_file(self, token: str) -> bytes:
        """Tab ``token``'s machine file; ``KeyError`` for no such tab, ``ValueError`` when its
        machine is not wired yet."""
        return machine_file(self.runners[token].tab)

    async def figure_data(self, token: str) -> dict[str, Any]:
        """What tab ``token``'s figures are drawn from; ``KeyError`` for no such tab."""
        return self.runners[token].tab.figure_data()


# ---------------------------------------------------------------------- worker processes


def worker_main(conn: Connection, warm_up: bool) -> None:
    """A worker process: a :class:`LocalMachines` driven through ``conn``."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_worker(conn, warm_up))


async def _worker(conn: Connection, warm_up: bool) -> None:
    machines = LocalMachines()
    await machines.start()
    if warm_up:
        await asyncio.to_thread(warm)
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def emit_for(token: str) -> Emit:
        return lambda text: conn.send(("text", token, text))

    async def answer(request: int, job: Any) -> None:
        try:
            conn.send(("answer", request, True, await job))
        except (KeyError, ValueError) as exc:
            conn.send(("answer", request, False, f"{type(exc).__name__}:{exc}"))

    def readable() -> None:
        try:
            while conn.poll():
                message = conn.recv()
                kind = message[0]
                if kind == "open":
                    machines.open_now(message[1], emit_for(message[1]))
                elif kind == "cmd":
                    machines.command(message[1], message[2])
                elif kind == "close":
                    machines.close(message[1])
                elif kind == "save":
                    loop.create_task(answer(message[2], machines.machine_file(message[1])))
                elif kind == "figure":
                    loop.create_task(answer(message[2], machines.figure_data(message[1])))
                elif kind == "stop" and not done.done():
                    done.set_result(None)
        except (EOFError, OSError):  # the server is gone
            if not done.done():
                done.set_result(None)

    loop.add_reader(conn.fileno(), readable)
    conn.send(("ready",))
    try:
        await done
    finally:
        loop.remove_reader(conn.fileno())
        await machines.stop()


class _Worker:
    def __init__(self, process: Any, conn: Connection) -> None:
        self.process, self.conn = process, conn
        self.tokens: set[str] = set()
        self.alive = True


class WorkerMachines:
    """The tabs' machines in ``n`` worker processes."""

    def __init__(self, n: int, warm_up: bool = True) -> None:
        if n < 1:
            raise ValueError(f"workers must be >= 1; got {n}")
        self.n, self.warm_up = n, warm_up
        self.workers: list[_Worker] = []
        self._emit: dict[str, Emit] = {}
        self._gone: dict[str, Callable[[str], None]] = {}
        self._where: dict[str, _Worker] = {}
        self._answers: dict[int, asyncio.Future[Any]] = {}
        self._requests = itertools.count(1)
        self._context = multiprocessing.get_context("spawn")

    @property
    def tabs(self) -> int:
        return len(self._where)

    async def start(self) -> None:
        """Start the workers and wait until each is ready."""
        await asyncio.gather(*(self._spawn() for _ in range(self.n)))

    async def _spawn(self) -> _Worker:
        ours, theirs = self._context.Pipe()
        process = self._context.Process(target=worker_main, args=(theirs, self.warm_up),
                                        daemon=True, name="mark1-playground-worker")
        process.start()
        theirs.close()
        worker = _Worker(process, ours)
        ready = asyncio.get_running_loop().create_future()
        self.workers.append(worker)
        asyncio.get_running_loop().add_reader(ours.fileno(), self._readable, worker, ready)
        await ready
        return worker

    def _readable(self, worker: _Worker, ready: asyncio.Future[None]) -> None:
        try:
            while worker.conn.poll():
                message = worker.conn.recv()
                kind = message[0]
                if kind == "text":
                    emit = self._emit.get(message[1])
                    if emit is not None:
                        emit(message[2])
                elif kind == "answer":
                    future = self._answers.pop(message[1], None)
                    if future is not None and not future.done():
                        if message[2]:
                            future.set_result(message[3])
                        else:
                            name, _, text = message[3].partition(":")
                            future.set_exception(KeyError(text) if name == "KeyError"
                                                 else ValueError(text))
                elif kind == "ready" and not ready.done():
                    ready.set_result(None)
        except (EOFError, OSError):
            self._lost(worker, ready)

    def _lost(self, worker: _Worker, ready: asyncio.Future[None]) -> None:
        """A worker died: its tabs are told and closed; new tabs go to the others."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(worker.conn.fileno())
        worker.alive = False
        if not ready.done():
            ready.set_exception(RuntimeError("a playground worker did not start"))
        for token in list(worker.tokens):
            emit, gone = self._emit.pop(token, None), self._gone.pop(token, None)
            self._where.pop(token, None)
            if emit is not None:
                emit('{"type": "error", "message": "the worker process holding this '
                     'machine stopped; reload the page for a new machine", "re": []}')
            if gone is not None:
                gone(token)

    async def open(self, token: str, emit: Emit, gone: Callable[[str], None]) -> None:
        """A new machine for tab ``token`` on the worker with the fewest tabs."""
        alive = [w for w in self.workers if w.alive]
        if len(alive) < self.n:  # replace the dead
            self.workers = alive
            alive.append(await self._spawn())
        worker = min(alive, key=lambda w: len(w.tokens))
        worker.tokens.add(token)
        self._where[token], self._emit[token], self._gone[token] = worker, emit, gone
        self._send(worker, ("open", token))

    def _send(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        try:
            worker.conn.send(message)
        except (OSError, ValueError):
            pass  # a dead worker: its reader reports it

    def command(self, token: str, command: protocol.Command) -> None:
        """Hand tab ``token`` a checked command."""
        worker = self._where.get(token)
        if worker is not None:
            self._send(worker, ("cmd", token, command))

    def close(self, token: str) -> None:
        """Drop tab ``token``'s machine."""
        worker = self._where.pop(token, None)
        self._emit.pop(token, None)
        self._gone.pop(token, None)
        if worker is not None:
            worker.tokens.discard(token)
            self._send(worker, ("close", token))

    async def _ask(self, kind: str, token: str) -> Any:
        worker = self._where.get(token)
        if worker is None:
            raise KeyError(token)
        request = next(self._requests)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._answers[request] = future
        self._send(worker, (kind, token, request))
        try:
            return await asyncio.wait_for(future, ANSWER_TIMEOUT_S)
        finally:
            self._answers.pop(request, None)

    async def machine_file(self, token: str) -> bytes:
        """Tab ``token``'s machine file (as :meth:`LocalMachines.machine_file`)."""
        data: bytes = await self._ask("save", token)
        return data

    async def figure_data(self, token: str) -> dict[str, Any]:
        """What tab ``token``'s figures are drawn from."""
        data: dict[str, Any] = await self._ask("figure", token)
        return data

    async def stop(self) -> None:
        """Stop every worker (a moment to finish, then terminated)."""
        loop = asyncio.get_running_loop()
        for worker in self.workers:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(worker.conn.fileno())
            self._send(worker, ("stop",))
        for worker in self.workers:
            await asyncio.to_thread(worker.process.join, 5)
            if worker.process.is_alive():
                worker.process.terminate()
                await asyncio.to_thread(worker.process.join, 5)
            worker.conn.close()
        self.workers = []
