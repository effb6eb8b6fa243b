"""Where a sweep's runs go: this process, local worker processes, or a Dask cluster.

The runs travel in *chunks*: a few runs that share a task's images (same task, image seed and
sizes), so a worker builds those images once for them. Each executor calls ``done(results)``
in the calling thread as each chunk comes back and ``lost(n)`` when a dead worker's ``n`` runs
in flight go back to be run again.

* :class:`InProcess`: the chunks one after the other in this process (``workers=0``).
* :class:`LocalWorkers`: ``n`` worker processes (``concurrent.futures``, one single-process
  pool each, so a worker that dies takes only its own chunk with it; a new one takes its
  place). A worker holds its next chunk while it runs one (so it never waits on this
  process between chunks), the next of the task it last worked on when there is one.
  The tasks' images are made here, the first while the workers start, and go to each worker
  with its first chunk of that task: the workers then need neither matplotlib nor the
  letters' glyphs, and start ~0.3 s sooner.
* :class:`DaskWorkers`: a ``dask.distributed`` cluster (an existing scheduler, or a
  ``LocalCluster``); Dask's scheduler places the chunks, and reruns those of a worker that
  dies. (Making each task's images a Dask task of their own, that the chunks depend on, builds
  them once per cluster; but Dask then keeps the chunks beside the images, on one worker,
  and a sweep with one set of images ran 1.4-1.5x slower. Each worker builds them once.)
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mark1.errors import Mark1Error
from mark1.sweeps.spec import RunConfig
from mark1.sweeps.worker import TaskKey, build_task, local_worker_started, run_chunk

Done = Callable[[list[tuple[RunConfig, Any]]], None]
Lost = Callable[[int], None]

PREFETCH = 2
"""Chunks a local worker holds at once: the one it runs and the next."""

MAX_ATTEMPTS = 3
"""A chunk whose workers died this many times stops the sweep (it is what kills them)."""

IMAGES_KEPT_BYTES = 2**30
"""Task images the sweep's process keeps for its local workers, at most (but the last task's:
a task may take up to half the memory, :func:`mark1.limits.check_memory`)."""


@dataclass(frozen=True)
class Chunk:
    """Runs that share one task's images."""

    task: TaskKey
    runs: tuple[RunConfig, ...]


def make_chunks(runs: Sequence[RunConfig], n_workers: int) -> list[Chunk]:
    """Runs grouped by their task's images, same seeds together, in chunks that shrink as the
    sweep nears its end: each takes ``1 / (4 * n_workers)`` of the runs still to hand out (1 to
    16 runs, never two tasks' images), so the workers finish together rather than one waiting
    on the other's last long chunk (guided self-scheduling). A chunk ends where a seed's runs
    end nearest that size, if one does at up to twice it: the runs of a seed share a
    plugboard's wiring, which a worker draws once for them (~10 ms) where two workers would
    each draw it."""
    groups: OrderedDict[TaskKey, list[RunConfig]] = OrderedDict()
    for run in runs:
        groups.setdefault(run.task_key(), []).append(run)
    left = len(runs)
    chunks = []
    for key, group in groups.items():
        group.sort(key=lambda r: r.seed)  # stable: design order within a seed
        ends = {i for i in range(1, len(group)) if group[i].seed != group[i - 1].seed}
        start = 0
        while start < len(group):
            size = max(1, min(16, math.ceil(left / (4 * max(1, n_workers)))))
            end = min(start + size, len(group))
            if end < len(group) and end not in ends:  # the nearest seed's end, up to 2x
                near = [e for e in ends if start < e <= start + min(16, 2 * size)]
                end = min(near, key=lambda e: (abs(e - end), e), default=end)
            part = group[start:end]
            chunks.append(Chunk(key, tuple(part)))
            start = end
            left -= len(part)
    return chunks


class InProcess:
    """The runs in the calling process, one chunk after the other."""

    description = "this process"
    workers = 1

    def run(self, chunks: Sequence[Chunk], done: Done, lost: Lost) -> None:
        for chunk in chunks:
            done(run_chunk(chunk.runs))

    def close(self) -> None:
        pass


def _context() -> Any:
    import multiprocessing as mp

    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["mark1.sweeps.forkserver_warmup"])  # warm once, then fork
        return ctx
    return mp.get_context("spawn")


def check_main_module_importable() -> None:
    """Refuse, in one line, a sweep whose worker processes could not start.

    Local workers (and a Dask ``LocalCluster``'s) start by importing the main module of this
    process, as ``multiprocessing`` does outside ``fork``: a script that calls the sweep at
    its top level, not under ``if __name__ == "__main__":``, would start it again in every
    worker (which Python refuses, worker after worker), and a script read from stdin cannot be
    imported at all. A notebook, ``python -c`` and a package's ``__main__`` are not imported.
    """
    import ast
    import sys

    main = sys.modules.get("__main__")
    if main is None:
        return
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    if name is not None and (name == "__main__" or name.endswith(".__main__")):
        return
    path = getattr(spec, "origin", None) if name is not None else getattr(main, "__file__", None)
    if path is None:
        return
    if not os.path.isfile(path):
        raise ValueError(f"the sweep's worker processes start by importing the main module, "
                         f"and {path} is not a file: run the script from a file, or the sweep "
                         "in this process (workers=0)")
    frame: Any = sys._getframe(1)
    top = None  # the main module's own code, running the line that led here
    while frame is not None:
        if frame.f_globals is main.__dict__ and frame.f_code.co_name == "<module>":
            top = frame
        frame = frame.f_back
    if top is None:
        return
    try:
        with open(path, "rb") as fh:
            tree = ast.parse(fh.read())
    except (OSError, SyntaxError, ValueError):
        return
    line = top.f_lineno
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_main_guard(node.test) and any(
                s.lineno <= line <= (s.end_lineno or s.lineno) for s in node.body):
            return
    raise ValueError(
        f"{path}, line {line}: the sweep runs at the script's top level, and its worker "
        "processes import the script: put it under `if __name__ == \"__main__\":` (or run "
        "it in this process: workers=0)")


def _is_main_guard(test: Any) -> bool:
    """``__name__ == "__main__"`` (either way round)."""
    import ast

    if not (isinstance(test, ast.Compare) and len(test.ops) == 1
            and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    return (any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides)
            and any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides))


def start_local_workers_early() -> None:
    """Start the fork server of the local workers now, so that it warms up (imports, the
    compiled epochs) while this process checks the spec. It has no effect outside the process
    tree, and it leaves with this process."""
    ctx = _context()
    if ctx.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


class LocalWorkers:
    """``n`` worker processes on this machine."""

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"--workers must be at least 1 (0: in this process); got {n}")
        self.workers = n
        self.description = f"{n} local worker process{'es' if n > 1 else ''}"
        self._ctx = _context()
        self._slots = [self._start() for _ in range(n)]
        self._has: list[set[TaskKey]] = [set() for _ in range(n)]  # images each worker got
        self._images: OrderedDict[TaskKey, Any] = OrderedDict()
        import threading

        self.images_ready = threading.Event()
        """Set once the images made ahead are there (at once when none are)."""
        self.images_ready.set()

    def make_images_ahead(self, task: TaskKey) -> None:
        """Start making ``task``'s images in a thread of this process (while the workers
        start and this process checks the rest)."""
        import threading

        def make() -> None:
            try:
                self._images_of(task)
            finally:
                self.images_ready.set()

        self.images_ready.clear()
        threading.Thread(target=make, daemon=True, name="mark1-images").start()

    def _images_of(self, task: TaskKey) -> Any:
        """``task``'s images, or None when they cannot be made: the worker then tries, and its
        run reports the error as a run's. Kept for the workers' later chunks: as many tasks
        as workers and one more (the chunks come task by task), and at most
        :data:`IMAGES_KEPT_BYTES` but for the last task made."""
        images = self._images.get(task)
        if images is None:
            try:
                images = build_task(task)
            except (ValueError, TypeError):
                return None
            self._images[task] = images
            while len(self._images) > 1 and (
                    len(self._images) > self.workers + 1
                    or sum(_nbytes(t) for t in self._images.values()) > IMAGES_KEPT_BYTES):
                self._images.popitem(last=False)
        self._images.move_to_end(task)
        return images

    def _images_for(self, slot: int, task: TaskKey) -> dict[TaskKey, Any] | None:
        """The images to send with a chunk of ``task`` to ``slot``: none when it has them."""
        if task in self._has[slot]:
            return None
        self.images_ready.wait()
        self._has[slot].add(task)
        images = self._images_of(task)
        return None if images is None else {task: images}

    def _start(self) -> Any:
        """A pool of one worker process (started with its first chunk: forked once the fork
        server is warm)."""
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(max_workers=1, mp_context=self._ctx,
                                   initializer=local_worker_started)

    def run(self, chunks: Sequence[Chunk], done: Done, lost: Lost) -> None:
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        pending: OrderedDict[TaskKey, deque[Chunk]] = OrderedDict()
        for chunk in chunks:
            pending.setdefault(chunk.task, deque()).append(chunk)
        left = len(chunks)  # chunks not yet handed out
        last: dict[int, TaskKey | None] = dict.fromkeys(range(self.workers))
        attempts: dict[Chunk, int] = {}
        held: list[deque[tuple[Any, Chunk]]] = [deque() for _ in range(self.workers)]
        """Each worker's chunks, oldest (the one it runs) first."""

        def next_chunk(slot: int) -> Chunk | None:
            mine = last[slot]
            if mine not in pending:  # its task is done: one nobody works on, else any
                busy = {c.task for h in held for _, c in h}
                free = [k for k in pending if k not in busy]
                mine = free[0] if free else max(pending, key=lambda k: len(pending[k]),
                                                default=None)
            if mine is None:
                return None
            chunk = pending[mine].popleft()
            if not pending[mine]:
                del pending[mine]
            last[slot] = mine
            return chunk

        def feed(slot: int) -> None:
            """Hand ``slot`` chunks until it holds two, its next one waiting in its queue so
            that it never waits on this process between chunks; but one at a time once fewer
            chunks are left than workers, so that the last ones go to whoever is free."""
            nonlocal left
            while len(held[slot]) < (PREFETCH if left >= self.workers else 1):
                chunk = next_chunk(slot)
                if chunk is None:
                    return
                left -= 1
                try:
                    future = self._slots[slot].submit(run_chunk, chunk.runs,
                                                      self._images_for(slot, chunk.task))
                except BrokenProcessPool:  # it died since: its chunk waits for the next one
                    hand_back(chunk)
                    if not held[slot]:  # (one that died before its first chunk started)
                        self._restart(slot)
                        continue
                    return
                held[slot].append((future, chunk))

        def hand_back(chunk: Chunk) -> None:
            nonlocal left
            pending.setdefault(chunk.task, deque()).appendleft(chunk)
            pending.move_to_end(chunk.task, last=False)
            left += 1

        def worker_died(slot: int) -> None:
            """The chunk it ran counts an attempt and is lost; those waiting go back as they
            were. A new worker takes its place."""
            (_, ran), *waiting = held[slot]
            held[slot].clear()
            attempts[ran] = attempts.get(ran, 0) + 1
            if attempts[ran] >= MAX_ATTEMPTS:
                raise Mark1Error(
                    f"runs starting with {_describe(ran.runs[0])} killed their worker "
                    f"{MAX_ATTEMPTS} times", exit_code=1) from None
            self._restart(slot)
            for _, chunk in reversed([(None, ran), *waiting]):
                hand_back(chunk)
            lost(len(ran.runs))

        for slot in range(self.workers):
            feed(slot)
        while any(held):
            waiting_on = [f for h in held for f, _ in h]
            finished, _ = wait(waiting_on, return_when=FIRST_COMPLETED)
            for slot, h in enumerate(held):
                while h and h[0][0] in finished:  # a worker's chunks end in order
                    future, _ = h[0]
                    try:
                        results = future.result()
                    except BrokenProcessPool:
                        worker_died(slot)
                        break
                    h.popleft()
                    done(results)
                feed(slot)

    def _restart(self, slot: int) -> None:
        """A new worker process in ``slot``, in place of one that died."""
        self._slots[slot].shutdown(wait=False)
        self._slots[slot] = self._start()
        self._has[slot] = set()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the workers: those at work finish their chunk (or leave at once on Ctrl-C,
        which reaches them too). Waits up to ``timeout`` s for each pool's manager thread:
        one still running when the interpreter exits can race Python 3.11's own exit
        handler, which then prints an ignored "Bad file descriptor" error."""
        import time

        for pool in self._slots:
            pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + timeout
        for pool in self._slots:
            manager = getattr(pool, "_executor_manager_thread", None)
            if manager is not None:
                manager.join(max(0.0, deadline - time.monotonic()))
        self._images.clear()


class DaskWorkers:
    """A Dask cluster: the scheduler at ``address``, or a ``LocalCluster`` of ``n`` workers.

    The workers of a ``LocalCluster`` started here run without Dask's statistical profiler,
    which samples the running task's stack every 10 ms (its thread and the task's share the
    GIL): a 200-run sweep took ~5 % less time on two workers without it."""

    def __init__(self, address: str | None = None, n: int | None = None,
                 timeout: float = 10.0) -> None:
        try:
            from distributed import Client, LocalCluster
            from distributed.scheduler import KilledWorker
        except ImportError:
            raise Mark1Error(
                "a Dask cluster needs dask.distributed: pip install 'mark1-kit[sweep]'"
            ) from None
        self._cluster = None
        if address is None:
            import logging

            import dask

            with dask.config.set({"distributed.worker.profile.enabled": False}):
                self._cluster = LocalCluster(n_workers=n, threads_per_worker=1,
                                             processes=True, host="127.0.0.1",
                                             dashboard_address=":0", silence_logs=logging.ERROR)
            self.client = Client(self._cluster, set_as_default=False)
            self.description = f"a Dask LocalCluster of {n} workers"
        else:
            try:
                self.client = Client(address, timeout=timeout, set_as_default=False)
            except (OSError, TimeoutError, ValueError, TypeError) as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise Mark1Error(f"the Dask scheduler at {address} does not answer within "
                                 f"{timeout:g} s ({reason})") from None
            self.description = f"the Dask scheduler at {address}"
        self._killed_worker = KilledWorker
        self.workers = max(1, sum(self.client.nthreads().values()))  # slots, for the chunks

    def run(self, chunks: Sequence[Chunk], done: Done, lost: Lost) -> None:
        from distributed import as_completed

        client = self.client
        futures = {client.submit(run_chunk, chunk.runs, pure=False): chunk for chunk in chunks}
        try:
            for future in as_completed(list(futures), loop=client.loop):
                chunk = futures.pop(future)
                try:
                    results = future.result()
                except ImportError as exc:
                    raise Mark1Error(f"the Dask workers cannot run the sweep ({exc}): install "
                                     "mark1-kit[sweep] on every worker") from None
                except self._killed_worker:
                    raise Mark1Error(
                        f"runs starting with {_describe(chunk.runs[0])} killed Dask workers "
                        "again and again (Dask's allowed-failures)", exit_code=1) from None
                future.release()
                done(results)
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


def _nbytes(task: Any) -> int:
    return int(task.X_train.nbytes + task.X_test.nbytes)


def _describe(run: RunConfig) -> str:
    machine = " ".join(f"{k}={v}" for k, v in run.machine)
    return f"{run.task} on {run.preset} seed {run.seed} {machine}".strip()
