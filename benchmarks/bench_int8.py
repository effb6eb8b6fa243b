"""Host int8 reference inference throughput against float and onnxruntime peers, in one run.

One MLP (400-64-32-10 on ``digits``, or ``--checkpoint``) is quantized; then, on the same test
images, this process measures images per second (best of ``--repeat`` runs, batch = the test set):

* ``golden int8``     -- :func:`export.contract.golden.golden_forward` (numpy integer ops), the
  reference;
* ``numpy float64``   -- the checkpoint's own float forward;
* ``torch float32``   -- the same MLP as ``torch.nn.Linear`` layers, eager, no grad;
* ``ort qdq basic``   -- the quantized ONNX in onnxruntime, QDQ kept as written;
* ``ort qdq fused``   -- the same with all graph optimizations (onnxruntime's int8 kernels);
* ``device engine``   -- :class:`firmware_sim.engine.Engine`, one image at a time (the simulator).

Prints each throughput and its ratio to the golden reference (> 1: faster than golden), and the
Mark I machine's S-A-R package the same way against its float static path. Every peer runs on
one thread (BLAS, torch and onnxruntime alike), so the ratios compare code, not core counts.

    .venv/bin/python benchmarks/bench_int8.py [--checkpoint mlp.pt] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy loads its BLAS

import numpy as np  # noqa: E402


def best_rate(fn: Callable[[], object], n_images: int, repeat: int) -> float:
    """Images per second of the fastest of ``repeat`` calls (after one warm-up call)."""
    fn()
    best = min(_timed(fn) for _ in range(repeat))
    return n_images / best


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def mlp(sizes: list[int], rng: np.random.Generator):
    """An MLP checkpoint of these layer sizes with random weights (activations kept in range)."""
    from export.onnx.checkpoint import MLPCheckpoint

    weights = [rng.normal(0, 1.5 / np.sqrt(a), (b, a)).astype(np.float32)
               for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [rng.normal(0, 0.1, b).astype(np.float32) for b in sizes[1:]]
    return MLPCheckpoint(list(sizes), weights, biases, [str(k) for k in range(sizes[-1])],
                         "digits", 0)


def _mlp(checkpoint: str | None, rng: np.random.Generator):
    from export.onnx.checkpoint import load_checkpoint

    return load_checkpoint(checkpoint) if checkpoint else mlp([400, 64, 32, 10], rng)


def machine(rng: np.random.Generator, a_units: int = 512, fan_in: int = 10,
            r_units: int = 8) -> dict[str, np.ndarray]:
    """Machine-file arrays: ``a_units`` A-units with ``fan_in`` inputs each (half +1, half -1),
    ``r_units`` R-units, 10 classes (the Mark I's shape by default)."""
    board = np.zeros((a_units, 400), np.int8)
    for j in range(a_units):
        cells = rng.choice(400, fan_in, replace=False)
        board[j, cells[: fan_in // 2]], board[j, cells[fan_in // 2 :]] = 1, -1
    return {
        "cell_threshold": np.full(400, 0.3), "plugboard": board,
        "a_threshold": rng.integers(0, 3, a_units).astype(np.float64),
        "weights": rng.normal(0, 1, (r_units, a_units)), "r_bias": rng.normal(0, 0.5, r_units),
        "codebook": np.where(rng.random((10, r_units)) < 0.5, -1, 1).astype(np.int8),
        "classes": np.array([str(k) for k in range(10)]),
    }


def _torch_forward(ckpt):
    import torch

    torch.set_num_threads(1)

    layers: list[torch.nn.Module] = []
    for i, (w, b) in enumerate(zip(ckpt.weights, ckpt.biases)):
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
        if i < len(ckpt.weights) - 1:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers).eval()

    def run(x: np.ndarray):
        with torch.no_grad():
            return model(torch.from_numpy(x.astype(np.float32)))

    return run


def _report(rows: list[tuple[str, float]]) -> None:
    ref = rows[0][1]
    for name, rate in rows:
        print(f"  {name:16s} {rate:14,.0f} images/s   ratio to golden {rate / ref:8.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="an mlp.pt to measure instead")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per peer (best kept)")
    args = parser.parse_args(argv)

    from export.contract.golden import golden_forward, quantize_input
    from export.int8.qonnx import onnx_bytes, ort_forward, ort_session
    from export.int8.quantize import quantize_machine, quantize_mlp
    from firmware_sim.engine import Engine
    from mark1.stimuli import make_task

    rng = np.random.default_rng(0)
    task = make_task("digits", seed=0)
    x_train = task.X_train.reshape(task.n_train, -1)
    x = task.X_test.reshape(task.n_test, -1)
    n = len(x)
    ckpt = _mlp(args.checkpoint, rng)
    pkg = quantize_mlp(ckpt, x_train[:256])
    x_q = quantize_input(pkg, x)
    model = onnx_bytes(pkg)
    basic, fused = ort_session(model), ort_session(model, fused=True)
    engine = Engine(pkg)
    torch_run = _torch_forward(ckpt)
    layers = "-".join(str(s) for s in ckpt.layer_sizes)
    print(f"MLP {layers}, {n} digits test images per batch, best of {args.repeat}")
    _report([
        ("golden int8", best_rate(lambda: golden_forward(pkg, x_q), n, args.repeat)),
        ("numpy float64", best_rate(lambda: ckpt.forward(x), n, args.repeat)),
        ("torch float32", best_rate(lambda: torch_run(x), n, args.repeat)),
        ("ort qdq basic", best_rate(lambda: ort_forward(basic, x), n, args.repeat)),
        ("ort qdq fused", best_rate(lambda: ort_forward(fused, x), n, args.repeat)),
        ("device engine", best_rate(lambda: [engine.infer(v) for v in x_q[:64]], 64,
                                    max(1, args.repeat // 2))),
    ])

    from mark1.machine import static_sums

    arrays = machine(rng)
    mpkg = quantize_machine(arrays, x_train[:256])
    mx_q = quantize_input(mpkg, x)
    mengine = Engine(mpkg)
    print(f"Mark I S-A-R (512 A-units, 8 R-units), {n} images per batch")
    _report([
        ("golden int8", best_rate(lambda: golden_forward(mpkg, mx_q), n, args.repeat)),
        ("numpy float64", best_rate(lambda: static_sums(arrays, x), n, args.repeat)),
        ("device engine", best_rate(lambda: [mengine.infer(v) for v in mx_q[:64]], 64,
                                    max(1, args.repeat // 2))),
    ])
    print(f"device estimate: MLP {engine.cycles} cycles ({1e3 * engine.latency_s:.3f} ms), "
          f"Mark I {mengine.cycles} cycles ({1e3 * mengine.latency_s:.3f} ms) at "
          f"{engine.cost.clock_hz / 1e6:g} MHz")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
