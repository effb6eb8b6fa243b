"""``make demo``: the whole kit end to end, as a user would run it, with one summary table.

1. the Mark I learns a retina task (``mark1 simulate``),
2. a torch MLP learns the digits (``mark1 train-mlp``),
3. the MLP goes to a Jetson TX2 bundle, fp16, and so does the trained Mark I
   (``mark1 export onnx``),
4. the MLP is quantized to int8 (``mark1 quantize``),
5. a simulated microcontroller starts on a pty (``mark1 device --pty``),
6. the package is pushed to it (``mark1 push``) and
7. it classifies test images (``mark1 infer``);
8. the same package goes to the C firmware on an emulated Cortex-M4 board (``mark1 device
   --firmware m4``, QEMU): bit-exact outputs and the instructions each inference took. Without
   QEMU or the ARM compiler the demo says which package to install and goes on.

Every step is a real ``mark1`` command in a subprocess; each command line is printed first.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path


def _mark1(*args: str) -> list[str]:
    return [sys.executable, "-m", "mark1.cli", *args]


def _run(title: str, *args: str) -> float:
    print(f"\n== {title}\n$ mark1 {shlex.join(args)}", flush=True)
    t0 = time.monotonic()
    res = subprocess.run(_mark1(*args))
    if res.returncode != 0:
        raise SystemExit(f"demo: `mark1 {args[0]}` failed with exit status {res.returncode}")
    return time.monotonic() - t0


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mark1.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every step (default 0)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    seed = str(args.seed)
    os.environ.setdefault("MPLBACKEND", "Agg")
    t_start = time.monotonic()
    times: dict[str, float] = {}

    times["simulate"] = _run(
        "1. The Mark I learns capital letters E and F through its photocells",
        "simulate", "--task", "e-f", "--preset", "cds-1960", "--epochs", "5",
        "--seed", seed, "--out", str(out / "markI"),
    )
    times["train-mlp"] = _run(
        "2. A torch MLP learns the handwritten digits on the same retina",
        "train-mlp", "--task", "digits", "--hidden", "64,32", "--epochs", "15",
        "--seed", seed, "--out", str(out / "mlp"),
    )
    times["export"] = _run(
        "3. Export to ONNX for a Jetson TX2 (opset 13, IR <= 8, fp16), checked and bundled",
        "export", "onnx", str(out / "mlp" / "mlp.pt"), "--target", "jetson-tx2", "--fp16",
        "--out", str(out / "tx2-bundle"),
    )
    times["export-markI"] = _run(
        "3b. The trained Mark I itself as ONNX: S-units, plugboard, A-units, pots, R-units",
        "export", "onnx", str(out / "markI" / "machine.npz"), "--target", "jetson-tx2",
        "--out", str(out / "tx2-markI"),
    )
    times["quantize"] = _run(
        "4. Quantize to integer-only int8 for a microcontroller",
        "quantize", str(out / "mlp" / "mlp.pt"), "--calib", "256",
        "--out", str(out / "int8" / "model.m1w"),
    )

    print("\n== 5. Start the simulated microcontroller on a pseudo-terminal\n"
          "$ mark1 device --pty --baud 115200 --turnaround 2 &", flush=True)
    device = subprocess.Popen(
        _mark1("device", "--pty", "--baud", "115200", "--turnaround", "2"),
        stdout=subprocess.PIPE, text=True,
    )
    try:
        port = (device.stdout.readline() if device.stdout else "").strip()
        if not port:
            raise SystemExit("demo: the simulated device did not start")
        times["push"] = _run(
            f"6. Push the weight package over {port} at 115200 baud",
            "push", str(out / "int8" / "model.m1w"), "--port", port,
            "--json", str(out / "push.json"),
        )
        times["infer"] = _run(
            "7. The device classifies 100 test digits; compare with the golden reference",
            "infer", "--task", "digits", "--n", "100", "--port", port, "--show", "5",
            "--model", str(out / "int8" / "model.m1w"), "--json", str(out / "infer.json"),
        )
    finally:
        _stop(device)
    _firmware_step(out, times)
    _summary(out, times, time.monotonic() - t_start)
    return 0


def _stop(device: subprocess.Popen) -> None:
    device.send_signal(signal.SIGTERM)
    try:
        device.wait(timeout=10)
    except subprocess.TimeoutExpired:
        device.kill()
        device.wait()


def _firmware_step(out: Path, times: dict[str, float]) -> None:
    """Step 8: the package on the C firmware under QEMU (Cortex-M4), if the tools are there."""
    print("\n== 8. The C firmware on an emulated Cortex-M4 board (QEMU mps2-an386)\n"
          "$ mark1 device --firmware m4 --listen 127.0.0.1:0 &", flush=True)
    device = subprocess.Popen(_mark1("device", "--firmware", "m4", "--listen", "127.0.0.1:0"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = (device.stdout.readline() if device.stdout else "").strip()
        if not url:
            device.wait(timeout=30)
            why = (device.stderr.read() if device.stderr else "").strip().splitlines()
            print(f"skipped: {why[-1] if why else 'the firmware did not start'}\n(the C firmware "
                  "under QEMU needs: apt-get install qemu-system-arm gcc-arm-none-eabi make)")
            return
        times["push-m4"] = _run(
            f"8a. Push the same package to the firmware ({url})",
            "push", str(out / "int8" / "model.m1w"), "--port", url,
        )
        times["infer-m4"] = _run(
            "8b. The firmware classifies the same 100 digits, counting its instructions",
            "infer", "--task", "digits", "--n", "100", "--port", url, "--show", "3",
            "--model", str(out / "int8" / "model.m1w"), "--json", str(out / "infer-m4.json"),
        )
    finally:
        _stop(device)


def _summary(out: Path, times: dict[str, float], total: float) -> None:
    sim = _load(out / "markI" / "report.json")
    mlp = _load(out / "mlp" / "report.json")
    bundle = _load(out / "tx2-bundle" / "model.json")
    markI_bundle = _load(out / "tx2-markI" / "model.json")
    q = _load(out / "int8" / "model.m1w.json")
    push = _load(out / "push.json")
    infer = _load(out / "infer.json")
    rows = [
        ("Mark I (cds-1960), E vs F", f"test accuracy {100 * sim['test_accuracy']:.1f} %, "
         f"{sim['machine_time_s'] / 60:.1f} min of machine time, "
         f"{sim['motor_steps']:,} motor steps", "markI/"),
        ("MLP 400-64-32-10, digits", f"test accuracy {100 * mlp['test_accuracy']:.1f} %",
         "mlp/"),
        ("ONNX for Jetson TX2", f"opset {bundle['opset']}, IR {bundle['ir_version']}, "
         f"{bundle['precision']}; {_parity_text(bundle['parity'])}", "tx2-bundle/"),
        ("Mark I as ONNX", f"opset {markI_bundle['opset']}, {len(markI_bundle['operators'])} "
         f"operator types; same class as the simulator on "
         f"{100 * markI_bundle['parity']['argmax_agreement']:.0f} % of test images",
         "tx2-markI/"),
        ("int8 package", _quant_text(q), "int8/model.m1w"),
        ("push at 115200 baud", f"{push['size']:,} B in {push['seconds']:.2f} s, "
         f"{100 * push['efficiency']:.0f} % of line rate, verified", "push.json"),
        ("device inference", f"accuracy {100 * infer['accuracy']:.0f} %, bit-exact with "
         f"golden {100 * infer['bit_exact']:.0f} %, "
         f"{sum(infer['cycles']) / len(infer['cycles']):,.0f} cycles each", "infer.json"),
    ]
    if (out / "infer-m4.json").is_file():
        m4 = _load(out / "infer-m4.json")
        rows.append(("C firmware, QEMU Cortex-M4", f"bit-exact with golden "
                     f"{100 * m4['bit_exact']:.0f} %, same outputs as the simulator "
                     f"{100 * _same(infer, m4):.0f} %, "
                     f"{sum(m4['cycles']) / len(m4['cycles']):,.0f} instructions each "
                     f"(cycle model {m4['cycles_model']:,})", "infer-m4.json"))
    width = max(len(r[0]) for r in rows)
    print(f"\n== Summary ({total:.0f} s)  — everything is under {out}/")
    for name, text, where in rows:
        print(f"  {name:<{width}}  {text}  [{where}]")


def _same(a: dict, b: dict) -> float:
    """The share of inferences whose int8 outputs two runs of ``mark1 infer`` agree on."""
    pairs = list(zip(a["outputs_device"], b["outputs_device"]))
    return sum(x == y for x, y in pairs) / max(1, len(pairs))


def _parity_text(p: dict) -> str:
    return (f"{p['precision']} parity vs torch: max |diff| {p['max_abs_diff']:.1e}, "
            f"same class {100 * p['argmax_agreement']:.1f} %")


def _quant_text(q: dict) -> str:
    acc = q["accuracy"]
    return (f"accuracy float {100 * acc['float']:.1f} % -> int8 {100 * acc['int8']:.1f} %, "
            f"{q['model_bytes']:,} B, {q['ram_bytes']:,} B RAM")


if __name__ == "__main__":
    sys.exit(main())
