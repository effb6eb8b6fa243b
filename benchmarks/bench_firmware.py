"""The C firmware on the emulated boards (QEMU ``-icount shift=0``), measured in one run:

* **speed**: instructions per multiply-accumulate of a 400-64-32-10 MLP on the Cortex-M4 (DSP
  path) and the Cortex-M3 (portable path), and per connection of the Mark I's S-A-R package
  (threshold and sparse step layers, a small dense head), as the firmware counts them
  (SysTick under ``-icount``: one instruction a nanosecond), beside the goals (2.0 and 5.0);
* **the cycle model** (``firmware_sim.engine.CortexM4Cost``, what the simulator and the host
  port report) against the instructions the Cortex-M4 firmware counts, model by model and per
  layer kind; ``--fit`` prints the model's constants fitted to these measurements (least
  squares, whole numbers);
* **size**: text (code and constants) of each image and static RAM besides the arena and the
  receive ring, beside the goals (16 KB and 8 KB);
* **push**: a 30 KB package pushed to the firmware under QEMU and to the simulator, unpaced
  over TCP in this process (bytes per second and seconds; ratio QEMU / simulator).

    .venv/bin/python benchmarks/bench_firmware.py [--fit] [--n 20]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import time
from collections.abc import Callable

import numpy as np
from bench_int8 import machine, mlp

from export.contract.golden import golden_forward
from export.contract.package import Dense, Package, Step, Threshold, decode_package, encode_package
from export.int8.quantize import quantize_machine, quantize_mlp
from export.serial.link import connect
from export.serial.push import push
from firmware_sim import firmware
from firmware_sim.device import Device, DeviceConfig
from firmware_sim.engine import CORTEX_M4_80MHZ, CortexM4Cost, Engine
from firmware_sim.qemu import Board, serving
from firmware_sim.serve import TcpServer

GOALS = {"m4": 2.0, "m3": 5.0}
"""Instructions per multiply-accumulate aimed at, by core."""
TEXT_GOAL, STATIC_RAM_GOAL = 16 * 1024, 8 * 1024


def mlp_package(sizes: list[int], seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return encode_package(quantize_mlp(mlp(sizes, rng), rng.uniform(size=(64, sizes[0]))))


def markI_package(a_units: int = 512, fan_in: int = 10, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return encode_package(quantize_machine(machine(rng, a_units, fan_in),
                                           rng.uniform(size=(64, 400))))


def connections(pkg: Package) -> int:
    """Multiply-accumulates of the dense layers, connections of the step layers, and the
    elements the threshold layers compare."""
    return sum(layer.n_in if isinstance(layer, Threshold) else
               int(layer.row_ptr[-1]) if isinstance(layer, Step) else layer.macs
               for layer in pkg.layers)


def measured(url: str, data: bytes, n: int) -> int:
    """Push ``data`` and run ``n`` random inputs: the median count the device reports (the
    outputs checked against golden)."""
    push(url, data)
    pkg = decode_package(data)
    x = np.random.default_rng(1).integers(-128, 128, (n, pkg.n_inputs)).astype(np.int8)
    with connect(url) as link:
        y, counts = link.infer(x)
    if not (y == golden_forward(pkg, x)).all():
        raise AssertionError("the firmware's outputs differ from golden")
    return int(np.median(counts))


# --------------------------------------------------------------------------- the cycle model

FAMILIES: dict[str, list[Callable[[], bytes]]] = {
    "dense (MLP)": [lambda s=s: mlp_package(s) for s in (
        [400, 64, 32, 10], [400, 8, 10], [400, 128, 10], [100, 50, 10], [37, 9, 3],
        [64, 64, 64, 64, 10], [13, 7, 6, 5], [256, 30, 10])],
    "threshold + step + dense (Mark I)": [lambda a=a, f=f: markI_package(a, f) for a, f in (
        (512, 10), (512, 40), (128, 10), (256, 20), (64, 100))],
}


def features(pkg: Package) -> dict[str, int]:
    """How often each constant of the cycle model counts for a package."""
    f = dict.fromkeys(("inference_cycles", "layer_cycles", "dense_quad_cycles",
                       "dense_tail_cycles", "dense_row_cycles", "threshold_cycles",
                       "step_row_cycles", "step_connection_cycles"), 0)
    f["inference_cycles"] = 1
    f["layer_cycles"] = len(pkg.layers)
    for layer in pkg.layers:
        if isinstance(layer, Dense):
            f["dense_quad_cycles"] += layer.n_out * (layer.n_in // 4)
            f["dense_tail_cycles"] += layer.n_out * (layer.n_in % 4)
            f["dense_row_cycles"] += layer.n_out
        elif isinstance(layer, Threshold):
            f["threshold_cycles"] += layer.n_in
        else:
            f["step_row_cycles"] += layer.n_out
            f["step_connection_cycles"] += int(layer.row_ptr[-1])
    return f


def fit(rows: list[tuple[Package, int]]) -> CortexM4Cost:
    """The model's constants fitted to measured counts: least squares of the relative error
    (small models count as much as large ones), no constant below zero (a constant that comes
    out negative is set to 0 and the rest fitted again), rounded to whole numbers."""
    names = list(features(rows[0][0]))
    counts = np.array([count for _, count in rows], float)
    a = np.array([[features(pkg)[k] for k in names] for pkg, _ in rows], float) / counts[:, None]
    free = [j for j in range(len(names)) if a[:, j].any()]
    solution = np.zeros(len(names))
    while free:
        solution[:] = 0
        solution[free] = np.linalg.lstsq(a[:, free], np.ones(len(rows)), rcond=None)[0]
        negative = [j for j in free if solution[j] < 0]
        if not negative:
            break
        free = [j for j in free if j not in negative]
    values = np.maximum(0, np.rint(solution)).astype(int)
    return CortexM4Cost(name="fitted", **{k: int(v) for k, v in zip(names, values)})


# --------------------------------------------------------------------------- size


def sizes(core: str) -> dict[str, int]:
    """Text of the image ``core`` (``m4``, ``m3``, ``m4-test``, ``m3-test``: code, and
    constants: strings, tables, padding), static RAM, ring, arena, in bytes. The images are
    linked with link-time optimization, which inlines functions of the board support and of
    the portable firmware into one another: the code is counted whole, by its function
    symbols."""
    elf = firmware.build("cortex-m") / core / f"mark1-fw-{core}.elf"
    symbols = subprocess.run(["arm-none-eabi-objdump", "-t", str(elf)],
                             capture_output=True, text=True, check=True).stdout
    # "00000130 l     F .text  000000b8 with_range": F marks a function (names sharing an
    # address share its code)
    functions = {m.group(1): int(m.group(2), 16) for m in re.finditer(
        r"^([0-9a-f]+) .{6}F \.text\s+([0-9a-f]+) ", symbols, re.M)}
    text = {"code": sum(functions.values())}
    sections = dict(re.findall(r"^(\.\w+)\s+(\d+)", subprocess.run(
        ["arm-none-eabi-size", "-A", str(elf)], capture_output=True, text=True,
        check=True).stdout, re.M))
    text["total"] = sum(int(sections.get(s, 0)) for s in (".text", ".ARM.exidx", ".data"))
    text["constants"] = text["total"] - text["code"]
    text["static RAM"] = int(sections.get(".data", 0)) + int(sections.get(".bss", 0))
    text["receive ring"] = int(sections.get(".ring", 0))
    text["arena"] = int(sections.get(".arena", 0))
    return text


# --------------------------------------------------------------------------- push


def push_time(url: str, image: bytes, repeat: int) -> float:
    """Seconds of the fastest of ``repeat`` pushes of ``image`` to ``url`` (read-back on; each
    push goes to the slot the one before did not use)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        push(url, image)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20, help="inferences per model (default 20)")
    p.add_argument("--fit", action="store_true", help="print the cycle model fitted anew")
    p.add_argument("--repeat", type=int, default=3, help="pushes of each kind (best is kept)")
    args = p.parse_args()

    big = mlp_package([400, 64, 32, 10])
    mark = markI_package()
    big_pkg, mark_pkg = decode_package(big), decode_package(mark)
    print("Speed: instructions per multiply-accumulate (QEMU -icount, counted by the firmware)")
    for core in ("m4", "m3"):
        with serving(core, Board(name=f"bench {core}")) as url:
            mlp_count = measured(url, big, args.n)
            mark_count = measured(url, mark, args.n)
        print(f"  {core}  400-64-32-10 MLP: {mlp_count:,} instructions, "
              f"{mlp_count / big_pkg.macs:.3f} per MAC (goal <= {GOALS[core]}, "
              f"{'met' if mlp_count / big_pkg.macs <= GOALS[core] else 'NOT met'});  "
              f"Mark I S-A-R (512 A-units x 10): {mark_count:,} instructions, "
              f"{mark_count / connections(mark_pkg):.3f} per connection")

    print("\nCycle model (CortexM4Cost, reported by the simulator and the host port) against "
          "the Cortex-M4's counted instructions")
    rows: list[tuple[Package, int]] = []
    with serving("m4", Board(name="bench m4")) as url:
        for family, makers in FAMILIES.items():
            print(f"  {family}")
            for make in makers:
                data = make()
                pkg = decode_package(data)
                count = measured(url, data, args.n)
                rows.append((pkg, count))
                model = Engine(pkg).cycles
                shape = "-".join(str(n) for n in [pkg.n_inputs] + [lay.n_out
                                                                   for lay in pkg.layers])
                print(f"    {shape:>22s}  measured {count:>9,}  model {model:>9,}  "
                      f"model/measured {model / count:6.3f}")
    for family in FAMILIES:
        share = [Engine(pkg).cycles / count for pkg, count in rows
                 if family.startswith("dense") == all(isinstance(x, Dense) for x in pkg.layers)]
        print(f"  {family}: model/measured {min(share):.3f} .. {max(share):.3f}")
    if args.fit:
        fitted = fit(rows)
        print("  fitted constants:", {k: v for k, v in vars(fitted).items()
                                      if k.endswith("_cycles")})
        print("  current constants:", {k: v for k, v in vars(CORTEX_M4_80MHZ).items()
                                       if k.endswith("_cycles")})
        share = [Engine(pkg, fitted).cycles / count for pkg, count in rows]
        print(f"  fitted model/measured {min(share):.3f} .. {max(share):.3f}")

    print(f"\nSize (goals: text <= {TEXT_GOAL // 1024} KB, static RAM <= "
          f"{STATIC_RAM_GOAL // 1024} KB besides the arena and the receive ring; the product "
          "images, then the test images: the same with the test machinery)")
    for core in ("m4", "m3", "m4-test", "m3-test"):
        s = sizes(core)
        print(f"  {core}: text {s['total']:,} B = code {s['code']:,} + constants (strings, "
              f"tables, padding) {s['constants']:,}; "
              f"static RAM {s['static RAM']:,} B; receive ring {s['receive ring']:,} B; "
              f"arena {s['arena']:,} B")

    image = mlp_package([400, 72, 10], seed=3)
    print(f"\nPush of a {len(image):,}-byte package, unpaced over TCP, read-back on "
          f"(best of {args.repeat})")
    config = DeviceConfig(name="bench")
    with serving("m4", Board(name="bench m4")) as url:
        t_qemu = push_time(url, image, args.repeat)
    dev = Device(config)
    with TcpServer(dev) as server:
        t_sim = push_time(server.url, image, args.repeat)
    print(f"  firmware on QEMU m4: {t_qemu:.2f} s ({len(image) / t_qemu:,.0f} B/s)")
    print(f"  simulator:           {t_sim:.2f} s ({len(image) / t_sim:,.0f} B/s)")
    print(f"  QEMU / simulator time: {t_qemu / t_sim:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
