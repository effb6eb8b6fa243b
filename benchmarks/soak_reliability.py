"""Reliability soak: many pushes over a lossy line, fuzzing, and power cut at every byte.

* ``lossy``  -- ``--uploads`` seeded pushes through a :class:`~firmware_sim.lossy_link.LossyLink`
  at ``--ber`` (1e-4), then ``--uploads-high`` at ``--ber-high`` (1e-3) and the same number
  through a line with every kind of fault; the device is the ``cortex-m4-small`` part served on
  TCP and paced like a UART at ``--baud`` with 2 ms turnaround, the model a 7,144-byte package
  (400-16-10 MLP). Four models of the same size take turns, so every push replaces the running
  one. After each push the running image is read straight from the simulated flash: it must be
  exactly the model just pushed (success) or the one before (failure) -- never anything else.
  Every failure must be one of the host's documented errors with a one-line message. Figures:
  completion rate, timeouts, go-backs, reconnections, bytes resent, and throughput against
  ``--clean`` pushes on the same line without faults.
* ``cuts``   -- ``--cuts`` pushes, each cut once at a seeded random byte of its upload (a pulled
  cable; unpaced): the host reconnects and resumes, and may send again at most the frames that
  were in flight (``window`` x frame size).
* ``fuzz``   -- ``--fuzz`` cases each of mutated frames into the device, mutated packages into
  the loader, and a tenth as many mutated packages pushed and committed (``tests/test_fuzz.py``).
* ``power``  -- power cut at every byte of every flash erase and write of the uploads of
  ``tests/test_power_loss.py`` and of the soak's own upload (``tests/test_power_loss.py``).

* ``fixed``  -- ``--fixed`` pushes at ``--ber`` and a tenth as many at ``--ber-high`` with the
  host's frame size held at its maximum (``LinkSettings(adapt=False)``), for comparison.

Run: ``python benchmarks/soak_reliability.py`` (all; about an hour and a half on two cores), or
pick parts with ``--only lossy,fixed,cuts,fuzz,power``. ``--json FILE`` writes every figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the test helpers live in tests/
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_push import model_image  # noqa: E402
from export.contract import protocol as P  # noqa: E402
from export.serial.push import push  # noqa: E402
from export.serial.settings import LinkSettings  # noqa: E402
from firmware_sim.device import PRESETS, Device  # noqa: E402
from firmware_sim.lossy_link import CLEAN, LineFaults, LossyLink  # noqa: E402
from firmware_sim.serve import LinkTiming, TcpServer  # noqa: E402
from mark1.errors import Mark1Error  # noqa: E402

PART = PRESETS["cortex-m4-small"]
"""The soak's device: 64 KiB of flash in 1 KiB pages, 512-byte frames."""
ROUGH = LineFaults(ber=2e-5, drop=5e-5, duplicate=5e-5, garbage=5e-5, stall=2e-5,
                   stall_s=(0.05, 1.0), cut=2e-5)
"""Every kind of fault at once."""


def images(n: int = 4) -> list[bytes]:
    """``n`` different packages of the same size (400-16-10 MLPs, seeds 0..n-1)."""
    out = [model_image(16, seed) for seed in range(n)]
    assert len({len(x) for x in out}) == 1 and len(set(out)) == n
    return out


def _running(dev: Device) -> bytes | None:
    act = dev.store.active()
    return None if act is None else dev.store.read_slot(act.slot, 0, act.size)


def lossy_soak(faults: LineFaults, n: int, seed: int = 0, baud: int = 115200,
               turnaround_s: float = 0.002, settings: LinkSettings | None = None,
               progress: bool = False) -> dict[str, Any]:
    """``n`` pushes over a paced line with ``faults``; figures and invariant counts."""
    settings = settings or LinkSettings(baud=baud)
    imgs = images()
    dev = Device(PART)
    runs: list[dict[str, Any]] = []
    failures: Counter = Counter()
    corrupted = unclear = 0
    examples: dict[str, str] = {}
    with TcpServer(dev, timing=LinkTiming(baud=baud, turnaround_s=turnaround_s)) as srv, \
            LossyLink((srv.host, srv.port), faults, seed=seed) as line:
        for i in range(n):
            img, before = imgs[i % len(imgs)], _running(dev)
            t0 = time.monotonic()
            try:
                rep = push(line.url, img, settings=settings)
                ok, error = True, None
            except Mark1Error as exc:
                ok, error, rep = False, exc, None
                failures[type(exc).__name__] += 1
                examples.setdefault(type(exc).__name__, str(exc))
                if "\n" in str(exc) or not str(exc):
                    unclear += 1
            except Exception as exc:  # noqa: BLE001 - counted: not one of the host's errors
                ok, error, rep = False, exc, None
                unclear += 1
                failures[f"unexpected {type(exc).__name__}"] += 1
                examples.setdefault(f"unexpected {type(exc).__name__}", repr(exc))
            now = _running(dev)
            if now not in ((img,) if ok else (before, img)):
                corrupted += 1
            runs.append({
                "ok": ok, "seconds": rep.seconds if rep else time.monotonic() - t0,
                "timeouts": rep.timeouts if rep else None,
                "go_backs": rep.go_backs if rep else None,
                "resends": rep.resends if rep else None,
                "reconnects": rep.reconnects if rep else None,
                "resent": (rep.data_bytes_sent - rep.size) if rep else None,
                "error": None if error is None else f"{type(error).__name__}: {error}",
            })
            if progress and (i + 1) % max(1, n // 20) == 0:
                done = sum(r["ok"] for r in runs)
                print(f"  {i + 1}/{n}: {done} completed, {corrupted} corrupted",
                      file=sys.stderr, flush=True)
        counts = {k: dataclasses.asdict(v) for k, v in line.counts().items()}
    good = [r for r in runs if r["ok"]]
    seconds = np.array([r["seconds"] for r in good]) if good else np.zeros(1)

    def mean(key: str) -> float:
        return float(np.mean([r[key] for r in good])) if good else float("nan")

    return {
        "faults": dataclasses.asdict(faults), "n": n, "seed": seed, "baud": baud,
        "image_bytes": len(imgs[0]), "completed": len(good),
        "completion_rate": len(good) / n if n else 0.0,
        "failures": dict(failures), "failure_examples": examples,
        "corrupted_commits": corrupted, "unclear_failures": unclear,
        "device_faults": dev.faults,
        "timeouts_mean": mean("timeouts"), "timeouts_max": max(
            (r["timeouts"] for r in good), default=0),
        "go_backs_mean": mean("go_backs"), "resends_mean": mean("resends"),
        "reconnects_total": sum(
            r["reconnects"] for r in good),
        "resent_fraction": mean("resent") / len(imgs[0]) if good else float("nan"),
        "seconds_mean": float(seconds.mean()), "seconds_median": float(np.median(seconds)),
        "seconds_p95": float(np.percentile(seconds, 95)), "seconds_max": float(seconds.max()),
        "throughput": len(imgs[0]) * len(good) / float(seconds.sum()) if good else 0.0,
        "line": counts, "runs": runs,
    }


def cut_soak(n: int, seed: int = 0, settings: LinkSettings | None = None) -> dict[str, Any]:
    """``n`` pushes, each cut once at a seeded random byte of its upload (unpaced)."""
    settings = settings or LinkSettings(baud=1_000_000, timeout_s=0.1, reconnect_delay_s=0.02)
    rng = np.random.default_rng(seed)
    imgs = images()
    dev = Device(PART)
    frame = PART.max_payload - P.Data.FIXED.size
    bound = settings.window * frame
    worst = over = corrupted = 0
    resumed_at: list[int] = []
    with TcpServer(dev) as srv:
        for i in range(n):
            img = imgs[i % len(imgs)]
            cut = int(rng.integers(100, len(img)))
            with LossyLink((srv.host, srv.port), CLEAN, cut_after=(cut,)) as line:
                rep = push(line.url, img, settings=settings)
            if _running(dev) != img:
                corrupted += 1
            resent = rep.data_bytes_sent - rep.size
            worst = max(worst, resent)
            over += resent > bound * rep.reconnects
            resumed_at += rep.resumed_from[1:]
    return {"n": n, "seed": seed, "window": settings.window, "frame_bytes": frame,
            "bound_bytes": bound, "worst_resent_bytes": worst, "over_bound": over,
            "corrupted_commits": corrupted,
            "resumed_from_mean": float(np.mean(resumed_at)) if resumed_at else 0.0}


def fuzz_soak(n: int, seed: int = 0) -> dict[str, Any]:
    """Frames, packages and pushed packages: ``n``, ``n`` and ``n // 10`` cases."""
    from tests.test_fuzz import fuzz_device, fuzz_packages, fuzz_uploads

    out = {}
    for name, fn, k in (("frames", fuzz_device, n), ("packages", fuzz_packages, n),
                        ("uploads", fuzz_uploads, max(1, n // 10))):
        t0 = time.monotonic()
        tally = fn(k, seed)
        out[name] = {"cases": k, "seconds": time.monotonic() - t0, "answers": dict(tally)}
    out["total_cases"] = sum(v["cases"] for v in out.values() if isinstance(v, dict))
    return out


def power_soak() -> dict[str, Any]:
    """Every byte of every flash operation of the test uploads and of the soak's upload."""
    from tests.device_helpers import image
    from tests.test_power_loss import CASES, Upload, crash_points, run_crash

    a, b = images(2)
    cases = dict(CASES)
    cases["soak part, 7 KB models"] = Upload(PART, a, b, chunk=PART.max_payload - 4)
    cases["soak part, 7 KB over 3.7 KB, log rolling over"] = Upload(
        PART, image(), b, log_fill=PART.page_bytes // 32 - 1, chunk=PART.max_payload - 4)
    out = {}
    for name, case in cases.items():
        t0 = time.monotonic()
        ops = case.ops()
        base = case.base()
        points = crash_points(ops, inside=None)
        new = sum(run_crash(case, base, k, keep, len(ops), retry=False) for k, keep in points)
        out[name] = {"operations": len(ops), "erases": sum(o.kind == "erase" for o in ops),
                     "writes": sum(o.kind == "write" for o in ops), "crash_points": len(points),
                     "new_model_after": new, "old_model_after": len(points) - new,
                     "seconds": time.monotonic() - t0}
    out["total_crash_points"] = sum(v["crash_points"] for v in out.values())
    return out


def _lossy_line(label: str, r: dict[str, Any], clean: float) -> str:
    return (f"| {label} | {r['n']} | {100 * r['completion_rate']:.1f} % | "
            f"{r['corrupted_commits']} | {r['timeouts_mean']:.2f} | {r['resends_mean']:.1f} | "
            f"{r['go_backs_mean']:.1f} | "
            f"{r['reconnects_total']} | {100 * r['resent_fraction']:.0f} % | "
            f"{r['seconds_median']:.2f} s | {r['throughput']:,.0f} B/s | "
            f"{r['throughput'] / clean:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="lossy,fixed,cuts,fuzz,power")
    ap.add_argument("--uploads", type=int, default=1000)
    ap.add_argument("--ber", type=float, default=1e-4)
    ap.add_argument("--uploads-high", type=int, default=50)
    ap.add_argument("--ber-high", type=float, default=1e-3)
    ap.add_argument("--clean", type=int, default=20)
    ap.add_argument("--fixed", type=int, default=50,
                    help="pushes at --ber with the frame size held fixed (a tenth at --ber-high)")
    ap.add_argument("--cuts", type=int, default=200)
    ap.add_argument("--fuzz", type=int, default=60_000)
    ap.add_argument("--baud", type=int, default=115200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    parts = set(args.only.split(","))
    report: dict[str, Any] = {}
    if "lossy" in parts:
        lines = {}
        for label, faults, n in (
            ("clean", CLEAN, args.clean),
            (f"BER {args.ber:g}", LineFaults(ber=args.ber), args.uploads),
            (f"BER {args.ber_high:g}", LineFaults(ber=args.ber_high), args.uploads_high),
            ("every fault", ROUGH, args.uploads_high),
        ):
            print(f"lossy: {label}, {n} pushes", file=sys.stderr, flush=True)
            lines[label] = lossy_soak(faults, n, seed=args.seed, baud=args.baud, progress=True)
        report["lossy"] = lines
        clean = lines["clean"]["throughput"]
        print(f"\n{len(images()[0])}-byte package, {args.baud} baud, 2 ms turnaround")
        print("| line | pushes | completed | corrupted | timeouts | resends | go-backs "
              "| reconnections | resent | median time | throughput | vs clean |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for label, r in lines.items():
            print(_lossy_line(label, r, clean))
        for label, r in lines.items():
            for kind, text in r["failure_examples"].items():
                print(f"  {label}: {r['failures'][kind]} x {kind}: {text}")
    if "fixed" in parts:  # the same lines with the frame size held at its maximum
        fixed = LinkSettings(baud=args.baud, adapt=False)
        rows = {}
        for label, ber, n in ((f"BER {args.ber:g}, fixed frames", args.ber, args.fixed),
                              (f"BER {args.ber_high:g}, fixed frames", args.ber_high,
                               max(1, args.fixed // 10))):
            print(f"fixed: {label}, {n} pushes", file=sys.stderr, flush=True)
            rows[label] = lossy_soak(LineFaults(ber=ber), n, seed=args.seed, baud=args.baud,
                                     settings=fixed, progress=True)
        report["fixed"] = rows
        clean = report.get("lossy", {}).get("clean", {}).get("throughput") or lossy_soak(
            CLEAN, 5, seed=args.seed, baud=args.baud)["throughput"]
        for label, r in rows.items():
            print(_lossy_line(label, r, clean))
            for kind, text in r["failure_examples"].items():
                print(f"  {label}: {r['failures'][kind]} x {kind}: {text}")
    if "cuts" in parts:
        print(f"cuts: {args.cuts} pushes", file=sys.stderr, flush=True)
        r = report["cuts"] = cut_soak(args.cuts, seed=args.seed)
        print(f"\ncuts: {r['n']} pushes cut once each; worst resend {r['worst_resent_bytes']} "
              f"bytes (bound {r['window']} x {r['frame_bytes']} = {r['bound_bytes']}); "
              f"over the bound: {r['over_bound']}; corrupted: {r['corrupted_commits']}")
    if "fuzz" in parts:
        print(f"fuzz: {args.fuzz} cases each", file=sys.stderr, flush=True)
        r = report["fuzz"] = fuzz_soak(args.fuzz, seed=args.seed)
        print(f"\nfuzz: {r['total_cases']:,} cases")
        for name in ("frames", "packages", "uploads"):
            v = r[name]
            print(f"  {name}: {v['cases']:,} in {v['seconds']:.0f} s: {v['answers']}")
    if "power" in parts:
        print("power: every byte of every flash operation", file=sys.stderr, flush=True)
        r = report["power"] = power_soak()
        print(f"\npower: {r['total_crash_points']:,} crash points")
        for name, v in r.items():
            if isinstance(v, dict):
                print(f"  {name}: {v['operations']} operations ({v['erases']} erases, "
                      f"{v['writes']} writes), {v['crash_points']:,} cuts: old model after "
                      f"{v['old_model_after']:,}, new after {v['new_model_after']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
