"""onnxruntime vs torch eager: inference latency of the exported MLP, and export time.

Both run in this process on the CPU with their default thread settings, on the same inputs
(retina test images of ``digits``), at batch 1 and batch 256. Prints the median latency per
call and the ratio onnxruntime / torch (goal at batch 1: <= 0.5).

    .venv/bin/python benchmarks/bench_onnx.py [--hidden 64,32] [--epochs 5] [--repeats 2000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 50) -> float:
    """Median wall time of one call of ``fn`` over ``repeats`` calls, after a warm-up."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", default="64,32")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2000, help="timed calls at batch 1")
    args = parser.parse_args(argv)

    import onnxruntime as ort
    import torch

    from export.onnx.bundle import export_bundle
    from export.onnx.checkpoint import save_checkpoint
    from export.onnx.cli import parse_hidden
    from export.onnx.mlp import build_module, train_mlp
    from export.onnx.onnx_export import check_model, export_mlp
    from export.onnx.parity import onnx_session, task_test_inputs
    from export.onnx.profiles import JETSON_TX2

    ckpt = train_mlp("digits", hidden=parse_hidden(args.hidden), epochs=args.epochs, seed=0,
                     progress=False)
    X, _ = task_test_inputs("digits", 0)
    batch = np.ascontiguousarray(np.resize(X, (256, X.shape[1])), np.float32)
    module = build_module(ckpt)

    with tempfile.TemporaryDirectory() as tmp:
        exports = []
        for i in range(5):
            t0 = time.perf_counter()
            path = export_mlp(ckpt, Path(tmp) / f"m{i}.onnx", opset=13)
            t1 = time.perf_counter()
            check_model(path, JETSON_TX2)
            exports.append((t1 - t0, time.perf_counter() - t1))
        cold_s = exports[0][0]
        export_s = statistics.median(e[0] for e in exports)
        check_s = statistics.median(e[1] for e in exports)
        src = save_checkpoint(ckpt, Path(tmp) / "mlp.pt")
        t0 = time.perf_counter()
        export_bundle(src, "jetson-tx2", Path(tmp) / "bundle")
        bundle_s = time.perf_counter() - t0
        session = onnx_session(path)
        name = session.get_inputs()[0].name

        rows = []
        for n, repeats in ((1, args.repeats), (256, max(50, args.repeats // 10))):
            x_np = np.ascontiguousarray(batch[:n])
            x_t = torch.from_numpy(x_np)

            def run_torch(x_t: torch.Tensor = x_t) -> object:
                with torch.inference_mode():
                    return module(x_t)

            def run_ort(x_np: np.ndarray = x_np) -> object:
                return session.run(None, {name: x_np})

            t_torch = median_seconds(run_torch, repeats)
            t_ort = median_seconds(run_ort, repeats)
            rows.append((n, t_torch, t_ort))

    sizes = "-".join(str(s) for s in ckpt.layer_sizes)
    print(f"MLP {sizes} (digits), CPU, torch {torch.__version__} ({torch.get_num_threads()} "
          f"threads), onnxruntime {ort.__version__}")
    print(f"export (TorchScript, opset 13): {cold_s * 1e3:.1f} ms first, {export_s * 1e3:.1f} ms "
          f"after; profile check (onnx.checker full + jetson-tx2 rules): {check_s * 1e3:.1f} ms")
    print(f"whole TX2 bundle (export, check, parity on {len(X)} test images, files): "
          f"{bundle_s:.2f} s")
    print(f"{'batch':>5}  {'torch eager':>12}  {'onnxruntime':>12}  {'ort/torch':>9}")
    for n, t_torch, t_ort in rows:
        print(f"{n:5d}  {t_torch * 1e6:9.1f} us  {t_ort * 1e6:9.1f} us  {t_ort / t_torch:9.2f}")
    ratio1 = rows[0][2] / rows[0][1]
    verdict = "meets" if ratio1 <= 0.5 else "misses"
    print(f"batch 1: onnxruntime is {ratio1:.2f}x torch eager ({verdict} the goal <= 0.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
