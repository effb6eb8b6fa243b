"""Push time against the line-rate bound, with the simulated device paced like a UART.

The device (``firmware_sim``) is served on a real pty pair in this process, paced at ``--baud``
(10 bits per byte each way) with ``--turnaround`` ms from each request to its reply. The same
model (a 400-64-10 MLP quantized to a ~27 KB package) is pushed several ways, side by side:

* ``mark1 push``     -- 4 frames in flight, every byte read back from flash during the upload;
* ``no read-back``   -- the same without read-back (the device's CRC check at commit only);
* ``stop-and-wait``  -- one frame at a time, full frames, no read-back;
* ``write+verify``   -- the classic programmer: stop-and-wait upload, then read everything back;
* ``small frames``   -- stop-and-wait with 64-byte chunks, as a naive loader would.

Efficiency = line-rate bound (size x 10 / baud) / push time: 1.0 means the line never idles and
carries nothing but the image. Then the unpaced throughput over a pty and a TCP socket (how fast
the host and simulator code are). Run: ``python benchmarks/bench_push.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from export.contract.package import encode_package
from export.int8.quantize import quantize_mlp
from export.onnx.checkpoint import MLPCheckpoint
from export.serial.link import connect
from export.serial.push import push
from export.serial.settings import LinkSettings
from firmware_sim.device import Device
from firmware_sim.serve import LinkTiming, PtyServer, TcpServer


def model_image(hidden: int, seed: int) -> bytes:
    """A seeded random 400-hidden-10 MLP, quantized into a package."""
    rng = np.random.default_rng(seed)
    sizes = [400, hidden, 10]
    weights = [rng.normal(0, 1.5 / np.sqrt(a), (b, a)).astype(np.float32)
               for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [rng.normal(0, 0.1, b).astype(np.float32) for b in sizes[1:]]
    ckpt = MLPCheckpoint(sizes, weights, biases, [str(k) for k in range(10)], "digits", seed)
    return encode_package(quantize_mlp(ckpt, rng.uniform(size=(64, 400))))


def write_then_verify(url: str, image: bytes, settings: LinkSettings) -> float:
    """Stop-and-wait upload, then a full stop-and-wait read-back: seconds."""
    t0 = time.monotonic()
    push(url, image, settings=settings)
    with connect(url, settings) as link:
        back = link.read_active(len(image))
    assert back == image
    return time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baud", type=int, default=115200)
    ap.add_argument("--turnaround", type=float, default=2.0, help="ms")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    image = model_image(args.hidden, args.seed)
    bound = len(image) * 10 / args.baud
    timing = LinkTiming(baud=args.baud, turnaround_s=args.turnaround / 1000)
    base = LinkSettings(baud=args.baud)
    cases = {
        "mark1 push": base,
        "no read-back": dataclasses.replace(base, verify=False),
        "stop-and-wait": dataclasses.replace(base, window=1, verify=False),
        "small frames": dataclasses.replace(base, window=1, chunk=64, verify=False),
    }
    print(f"package {len(image)} bytes; line {args.baud} baud, turnaround {args.turnaround} ms; "
          f"line-rate bound {bound:.3f} s")
    print(f"{'method':16s} {'time s':>8s} {'efficiency':>10s} {'B/s':>8s} {'vs mark1':>9s}")
    results = {}
    with PtyServer(Device(), timing) as srv:
        for name, st in cases.items():
            rep = push(srv.path, image, settings=st)
            results[name] = rep.seconds
        results["write+verify"] = write_then_verify(
            srv.path, image, dataclasses.replace(base, window=1, verify=False))
    ours = results["mark1 push"]
    for name, sec in results.items():
        print(f"{name:16s} {sec:8.3f} {bound / sec:10.3f} {len(image) / sec:8.0f} "
              f"{sec / ours:8.2f}x")
    print(f"goal: mark1 push >= 0.90 of the line rate -> "
          f"{'met' if bound / ours >= 0.9 else 'NOT met'} ({bound / ours:.3f})")

    print("\nunpaced (host and simulator code speed), mark1 push with read-back:")
    for label, server in (("pty", PtyServer(Device())), ("tcp", TcpServer(Device()))):
        with server as srv:
            best = min(push(srv.url, image).seconds for _ in range(3))
        print(f"  {label}: {best * 1000:7.1f} ms, {len(image) / best / 1e6:6.2f} MB/s "
              f"({len(image) / best * 10 / args.baud:.0f}x a {args.baud}-baud line)")


if __name__ == "__main__":
    main()
