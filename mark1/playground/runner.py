"""A tab's machine at work: its commands, its pace, and the frames it sends.

:class:`TabRunner` runs one :class:`~mark1.playground.tab.Tab` in an asyncio event loop: it
carries out the page's checked commands (:mod:`mark1.playground.protocol`), runs the trials
that are due at the tab's speed in short slices (at most :data:`SLICE_S` at a time, so the
tabs of one loop take turns), and hands its messages to ``emit`` as JSON text: an answer to a
command at once, frames at most :data:`FRAMES_PER_S` a second. Slow work (making a task's
cards, a pass of the XOR race) runs in a worker thread. When the loop cannot keep every tab at
its speed, the tabs slow down; they do not pile up trials to catch up.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from mark1.playground import protocol
from mark1.playground.tab import Tab, task_cards
from mark1.playground.xor import MAP_SIZE

SLICE_S = 0.003
"""Most wall time a tab's trials take in one go before the other tabs' turn, s."""
FRAMES_PER_S = 20.0
"""Most frames a tab is sent a second (an answer to a command goes at once)."""
TEST_EVERY_S = 1.0
"""Wall time between test-accuracy measurements while a tab's machine learns, s."""
XOR_PASS_S = 0.3
"""Wall time between passes of a running XOR race, s."""


class TabRunner:
    """One tab's machine, its commands and its pace, in the running event loop."""

    def __init__(self, tab: Tab, emit: Callable[[str], None]) -> None:
        self.tab, self.emit = tab, emit
        self.playing = False
        self.speed = protocol.DEFAULT_SPEED
        self.pending = 0  # trials asked for by "one trial" / "one pass"
        self.xor_playing = False
        self._xor_busy = False
        self._credit = 0.0  # trials due at the current speed, not run yet
        self._clock: tuple[float, float] | None = None  # (wall, machine time) at the 1960 pace
        self._last_step = time.monotonic()
        self._tested = 0.0
        self._last_frame = 0.0
        self._flush_at: asyncio.TimerHandle | None = None
        self._work = asyncio.Event()
        self._rng = np.random.default_rng()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start stepping, and send the first frame."""
        self._task = asyncio.get_running_loop().create_task(self._run())
        self.send_frame()

    def stop(self) -> None:
        """Stop for good (the tab is gone)."""
        if self._task is not None:
            self._task.cancel()
        if self._flush_at is not None:
            self._flush_at.cancel()

    # ------------------------------------------------------------------ sending
    def send(self, message: dict[str, Any], re: int | str | None = None) -> None:
        """Send a message (with ``re``, the answered command's id, when it had one)."""
        if re is not None:
            message["re"] = [re]
        self.emit(json.dumps(message))

    def error(self, text: str, re: int | str | None) -> None:
        """Send an ``error`` message."""
        self.send({"type": "error", "message": text}, re)

    def send_frame(self, re: int | str | None = None) -> None:
        """Send the machine as it is now (answering ``re``, when given)."""
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        frame = self.tab.frame()
        frame.update(playing=self.playing, speed=self.speed, xor_playing=self.xor_playing,
                     re=[] if re is None else [re])
        self._last_frame = time.monotonic()
        self.emit(json.dumps(frame))

    def _frame_due(self) -> None:
        """The machine changed: a frame now, or when :data:`FRAMES_PER_S` allows."""
        wait = self._last_frame + 1 / FRAMES_PER_S - time.monotonic()
        if wait <= 0:
            self.send_frame()
        elif self._flush_at is None:
            self._flush_at = asyncio.get_running_loop().call_later(wait, self.send_frame)

    # ------------------------------------------------------------------ stepping
    async def _run(self) -> None:
        """Run the trials that are due, a slice at a time; then sleep until the next is."""
        while True:
            if not (self.playing or self.pending or self.xor_playing):
                await self._work.wait()
                self._work.clear()
                self._last_step, self._credit = time.monotonic(), 0.0
                continue
            try:
                delay = self._slice()
            except Exception as exc:  # a machine that cannot go on: say so, stop playing
                self.playing, self.pending = False, 0
                self.error(f"the machine stopped: {type(exc).__name__}: {exc}", None)
                continue
            if self.xor_playing and not self._xor_busy:
                asyncio.get_running_loop().create_task(self._xor_pass())
            if self.xor_playing and not (self.playing or self.pending):
                delay = XOR_PASS_S
            await asyncio.sleep(delay)

    def _slice(self) -> float:
        """Run the trials due now, for at most :data:`SLICE_S`; return when to look again."""
        now = time.monotonic()
        end = now + SLICE_S
        ran = 0
        wait = 0.0
        if self.pending:  # "one trial" and "one pass" go first, at full speed
            while self.pending and (ran == 0 or time.monotonic() < end):
                self.pending -= 1
                ran += self.tab.step(1)
            self._last_step = now
        elif self.playing:
            ran, wait = self._play(now, end)
        if ran:
            if now - self._tested >= TEST_EVERY_S:
                self.tab.test()
                self._tested = now
            self._frame_due()
        return max(0.0, min(wait, 1.0))

    def _play(self, now: float, end: float) -> tuple[int, float]:
        """Trials due at the tab's speed; returns the trials run and the wait until the next."""
        rate = protocol.SPEEDS[self.speed]
        ran = 0
        if self.speed == "1960":  # wall seconds = machine seconds
            machine = self.tab.machine.machine_time_s if self.tab.wired else 0.0
            if self._clock is None or machine - self._clock[1] < (now - self._clock[0]) - 1.0:
                self._clock = (now, machine)  # (start, or too far behind: no catching up)
            wall0, machine0 = self._clock
            while machine - machine0 <= time.monotonic() - wall0 and time.monotonic() < end:
                ran += self.tab.step(1)
                machine = self.tab.machine.machine_time_s
            return ran, (machine - machine0) - (time.monotonic() - wall0)
        if math.isinf(rate):
            while ran == 0 or time.monotonic() < end:
                ran += self.tab.step(1)
            return ran, 0.0
        # at most a trial's worth of credit is carried: a late tab slows, it does not burst
        self._credit = min(self._credit + (now - self._last_step) * rate, 2.0)
        self._last_step = now
        while self._credit >= 1 and (ran == 0 or time.monotonic() < end):
            self._credit -= 1
            ran += self.tab.step(1)
        return ran, 0.0 if self._credit >= 1 else (1 - self._credit) / rate

    # ------------------------------------------------------------------ commands
    async def apply(self, command: protocol.Command) -> None:
        """Carry out one checked command; a bad value is answered with an ``error``."""
        try:
            await self._apply(command)
        except (ValueError, TypeError) as exc:
            self.error(str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                       command.id)

    async def _apply(self, command: protocol.Command) -> None:
        kind, args, tab = command.type, command.args, self.tab
        if kind == "play":
            self.playing, self._clock = True, None
            self._work.set()
        elif kind == "pause":
            self.playing, self.pending = False, 0
        elif kind == "step":  # at once: the answer shows the trial
            tab.step(1)
        elif kind == "pass":
            self.pending += tab.trials_left_in_pass()
            self._work.set()
        elif kind == "reset":
            self.playing, self.pending = False, 0
            tab.rebuild()
        elif kind == "speed":
            self.speed, self._clock = args["value"], None
        elif kind == "task":
            self.send({"type": "busy", "what": f"making the cards of {args['name']}"},
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
            await self._xor(args["action"], command.id)
            return
        self.send_frame(command.id)

    # ------------------------------------------------------------------ the XOR race
    async def _xor(self, action: str, re: int | str | None) -> None:
        if action == "reset":
            self.xor_playing = False
            self.tab.xor = None
        elif action == "pause":
            self.xor_playing = False
        elif action == "play":
            self.xor_playing = True
            self._work.set()
        elif action == "step" and not self._xor_busy:
            self.send({"type": "busy", "what": "a pass of the XOR race"}, re)
            await self._xor_pass()
            return
        self.send(self._xor_message(), re)

    async def _xor_pass(self) -> None:
        """One pass of the tab's XOR race, in a worker thread; then its state to the page."""
        self._xor_busy = True
        try:
            race = self.tab.xor_race()
            if race.done:
                self.xor_playing = False
            else:
                await asyncio.to_thread(race.step)
            self.send(self._xor_message())
        finally:
            self._xor_busy = False

    def _xor_message(self) -> dict[str, Any]:
        race = self.tab.xor
        learners: dict[str, Any] = {}
        if race is not None:
            for name, mistakes in race.mistakes.items():
                learners[name] = {
                    "mistakes": mistakes, "accuracy": race.accuracy.get(name),
                    "map": protocol.levels(race.maps[name], 0.0, 1.0) if name in race.maps
                    else None}
        return {"type": "xor", "passes": 0 if race is None else race.passes,
                "learners": learners, "playing": self.xor_playing, "map_size": MAP_SIZE,
                "done": bool(race is not None and race.done)}
