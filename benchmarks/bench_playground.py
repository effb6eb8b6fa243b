"""The playground under a classroom's load: 30 tabs on one server, each playing, each clicking.

Starts ``mark1 playground --no-browser --port 0`` (a real server process on 127.0.0.1) and
opens WebSocket clients in this process, one per tab. Every tab presses play at the default
speed (20 trials a second) and then, about once a second, a control -- one trial, a card, a
drawing, a look, the speed -- and times the click to the first message of the server that
answers it (its ``re``). The peer is the same server with one tab: the latency ratio says what
29 other tabs cost. Then the guard: one more tab sends 10,000 messages as fast as it can while
the others go on clicking; its answers are counted, the others' latencies measured.

Prints the click-to-update percentiles, the trials each tab got a second (asked: the default
speed), the server's CPU time and the ratios. Every loop is bounded and every client and the
server stop by themselves. Run: ``python benchmarks/bench_playground.py [--tabs 30]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLICKS = ("step", "card", "draw", "look", "speed")


@dataclass
class TabStats:
    """What one client saw."""

    latencies_ms: list[float] = field(default_factory=list)
    first_trial: int | None = None
    last_trial: int = 0
    errors: list[str] = field(default_factory=list)
    unanswered: int = 0


def drawing(rng: random.Random) -> list[float]:
    """A bar across the retina at a random row: 400 cells."""
    row = rng.randrange(4, 16)
    return [1.0 if row <= k // 20 <= row + 2 else 0.0 for k in range(400)]


def click(kind: str, rng: random.Random) -> dict[str, object]:
    if kind == "card":
        return {"type": "card", "index": "random"}
    if kind == "draw":
        return {"type": "draw", "cells": drawing(rng)}
    if kind == "speed":
        return {"type": "speed", "value": "20"}
    return {"type": kind}


async def tab(url: str, seconds: float, stats: TabStats, seed: int,
              start: asyncio.Event) -> None:
    """One tab: play, then a click about every second, timing each to its first answer."""
    import websockets

    rng = random.Random(seed)
    sent: dict[int, float] = {}
    async with websockets.connect(url, max_size=None) as ws:
        await ws.recv()  # welcome

        async def reader() -> None:
            async for text in ws:
                now = time.perf_counter()
                if '"re": []' in text and '"type": "frame"' in text:
                    head = text.find('"trial": ')
                    if head >= 0:
                        trial = int(text[head + 9 : text.find(",", head)])
                        if stats.first_trial is None and start.is_set():
                            stats.first_trial = trial
                        stats.last_trial = trial
                    continue
                message = json.loads(text)
                for tag in message.get("re") or []:
                    if tag in sent:
                        stats.latencies_ms.append(1000 * (now - sent.pop(tag)))
                if message.get("type") == "frame" and start.is_set():
                    if stats.first_trial is None:
                        stats.first_trial = message["trial"]
                    stats.last_trial = message["trial"]
                if message.get("type") == "error":
                    stats.errors.append(message["message"])

        task = asyncio.create_task(reader())
        await ws.send(json.dumps({"type": "play"}))
        await start.wait()
        end = time.perf_counter() + seconds
        tag = 0
        await asyncio.sleep(rng.uniform(0, 1.0))
        while time.perf_counter() < end:
            tag += 1
            message = click(CLICKS[tag % len(CLICKS)], rng)
            message["id"] = tag
            sent[tag] = time.perf_counter()
            await ws.send(json.dumps(message))
            await asyncio.sleep(rng.uniform(0.7, 1.3))
        await asyncio.sleep(0.5)
        stats.unanswered = len(sent)
        task.cancel()


async def flood(url: str, n: int, stats: TabStats) -> float:
    """One tab sends ``n`` small messages as fast as it can; returns the seconds it took."""
    import websockets

    async with websockets.connect(url, max_size=None) as ws:
        await ws.recv()

        async def reader() -> None:
            async for text in ws:
                if '"type": "error"' in text:
                    stats.errors.append(json.loads(text)["message"])

        task = asyncio.create_task(reader())
        t0 = time.perf_counter()
        for k in range(n):
            await ws.send(json.dumps({"type": "speed", "value": "20", "id": k}))
            if k % 200 == 199:
                await asyncio.sleep(0.02)  # 10,000 a second
        took = time.perf_counter() - t0
        await asyncio.sleep(1.0)
        task.cancel()
    return took


async def measure(url: str, tabs: int, seconds: float, flood_n: int = 0,
                  ) -> tuple[list[TabStats], TabStats | None, float]:
    start = asyncio.Event()
    stats = [TabStats() for _ in range(tabs)]
    jobs = [asyncio.create_task(tab(url, seconds, s, k, start)) for k, s in enumerate(stats)]
    await asyncio.sleep(2.0 + 0.05 * tabs)  # every tab connected and playing
    start.set()
    flooder = None
    took = 0.0
    if flood_n:
        flooder = TabStats()
        await asyncio.sleep(seconds / 3)
        took = await flood(url, flood_n, flooder)
    await asyncio.gather(*jobs)
    return stats, flooder, took


def cpu_seconds(pid: int) -> float:
    """CPU time of process ``pid`` and of its children still running (its workers), s."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, rest = stat.read_text().rsplit(")", 1)
        except OSError:
            continue
        fields = rest.split()
        if int(stat.parent.name) == pid or int(fields[1]) == pid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def start_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mark1.cli", "playground", "--no-browser", "--port", "0",
         "--host", "127.0.0.1"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if "serving http://" in line:
            url = line.split("serving ")[1].split()[0]
            return proc, "ws" + url[len("http"):] + "ws"
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit("the playground server did not start")


def summary(stats: list[TabStats], seconds: float) -> dict[str, float]:
    lat = np.array([x for s in stats for x in s.latencies_ms])
    rates = [(s.last_trial - (s.first_trial or 0)) / seconds for s in stats]
    return {"clicks": len(lat), "p50": float(np.percentile(lat, 50)),
            "p90": float(np.percentile(lat, 90)), "p99": float(np.percentile(lat, 99)),
            "max": float(lat.max()), "rate": float(np.mean(rates)),
            "slowest_rate": float(np.min(rates)),
            "unanswered": sum(s.unanswered for s in stats),
            "errors": sum(len(s.errors) for s in stats)}


def line(name: str, s: dict[str, float]) -> str:
    return (f"{name:>28s}  {int(s['clicks']):5d} clicks  p50 {s['p50']:6.1f} ms  p90 "
            f"{s['p90']:6.1f}  p99 {s['p99']:6.1f}  max {s['max']:6.1f}   "
            f"{s['rate']:5.1f} trials/s a tab (slowest {s['slowest_rate']:.1f})  "
            f"{int(s['unanswered'])} unanswered, {int(s['errors'])} errors")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tabs", type=int, default=30)
    ap.add_argument("--seconds", type=float, default=20.0, help="per measurement")
    ap.add_argument("--flood", type=int, default=10_000, help="messages of the flooding tab")
    args = ap.parse_args()
    proc, url = start_server()
    try:
        results = {}
        for name, tabs, n_flood in (("1 tab", 1, 0), (f"{args.tabs} tabs", args.tabs, 0),
                                    (f"{args.tabs} tabs + a flood", args.tabs, args.flood)):
            cpu0, own0, t0 = cpu_seconds(proc.pid), time.process_time(), time.perf_counter()
            stats, flooder, took = asyncio.run(measure(url, tabs, args.seconds, n_flood))
            wall = time.perf_counter() - t0
            cpu = (cpu_seconds(proc.pid) - cpu0) / wall
            own = (time.process_time() - own0) / wall
            results[name] = s = summary(stats, args.seconds)
            print(line(name, s) + f"  CPU: server and workers {100 * cpu:.0f} %, clients "
                  f"{100 * own:.0f} % of a core; load average {os.getloadavg()[0]:.1f}",
                  flush=True)
            if flooder is not None:
                print(f"{'':>28s}  the flooding tab sent {args.flood:,} messages in {took:.2f} s "
                      f"({args.flood / took:,.0f} a second) and got {len(flooder.errors)} "
                      f"error messages, e.g. {flooder.errors[0] if flooder.errors else '-'!r}")
            assert proc.poll() is None, "the server stopped"
        one, many = results["1 tab"], results[f"{args.tabs} tabs"]
        print(f"ratio {args.tabs} tabs / 1 tab: p50 {many['p50'] / one['p50']:.2f}x, p99 "
              f"{many['p99'] / one['p99']:.2f}x; goal: every click answered within 100 ms "
              f"(p99 {many['p99']:.1f} ms, max {many['max']:.1f} ms)")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
