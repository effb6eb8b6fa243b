"""Subcommand ``export tflite``: a weight package as a ``.tflite`` for TFLite Micro or LiteRT.

Registered under ``mark1 export`` (:func:`register_format`, called by ``export/onnx/cli.py``,
which owns the ``export`` command); registration imports argparse and the ranges' helper, the
handler the package code, numpy and the ``tflite`` schema package.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from mark1.limits import SEED

if TYPE_CHECKING:
    from export.contract.package import Package

EXPORT_TFLITE_EPILOG = """\
MODEL is a weight package (.m1w) of an MLP: from `mark1 quantize` (a model of the kit's, one made
elsewhere, or an int8 .tflite imported). The .tflite holds the same integers, scales and zero
points: one FULLY_CONNECTED per layer (int8 weights per tensor or per channel, int32 bias,
fused RELU), RESHAPE first for an input of more than one dimension; int8 input and output, or
float32 through QUANTIZE / DEQUANTIZE with --float-io. A Mark I package has no TFLite
operators and is refused.

TFLite derives each layer's multiplier from the scales and rounds as its kernels do: TFLite
Micro's reference kernels round twice (a package made with --rounding tflite: bit-exact), LiteRT
once (a package with single rounding: bit-exact). The command says what the other rounding
changes on --eval-data, else on 256 random int8 inputs (docs/TFLITE.md).

exit status: 0 written; 2 bad input (missing or unreadable package, a Mark I package, bad option,
an --out that is an input or cannot be written: all found before any work).
"""


def _export_tflite(args: argparse.Namespace) -> int:
    from mark1.io import OutputPlan

    # every check before any work: the package, the data, the place of the .tflite
    plan = OutputPlan()
    path = plan.read("MODEL", args.model, what="model file")
    data = None if args.eval_data is None else plan.read("--eval-data", args.eval_data,
                                                         what="data file")
    out = plan.write_file("--out", args.out)
    with plan:
        sizes, pkg, blob, line = _tflite_work(args, path, data)
        plan.write_bytes(out, blob)
    print(f"export tflite: {path} ({sizes}, {pkg.rounding} rounding) -> {out} ({len(blob)} "
          f"bytes, {'float32' if args.float_io else 'int8'} interface)")
    print(f"  {line}")
    return 0


def _tflite_work(args: argparse.Namespace, path: Path,
                 data: Path | None) -> tuple[str, Package, bytes, str]:
    """The .tflite of the package at ``path`` and what the other rounding changes."""
    import numpy as np

    from export.contract.golden import quantize_input
    from export.contract.package import MAX_PACKAGE_BYTES, decode_package
    from export.int8.imported import PROBE_INPUTS
    from export.int8.rounding import compare_roundings, runtime_line
    from export.tflite.write import tflite_bytes

    size = path.stat().st_size
    if size > MAX_PACKAGE_BYTES:
        raise ValueError(f"{path} is {size:,} bytes; a weight package is at most "
                         f"{MAX_PACKAGE_BYTES:,} bytes")
    try:
        pkg = decode_package(path.read_bytes())
    except ValueError as exc:
        raise ValueError(f"{path} is not a valid weight package: {exc}") from exc
    blob = tflite_bytes(pkg, float_io=args.float_io)
    if data is not None:
        from export.sources.user_data import feature_rows, read_array

        x_q = quantize_input(pkg, feature_rows(read_array(data, "evaluation data"),
                                               tuple(pkg.input_shape),
                                               f"evaluation data {data}"))
        measured = f"{len(x_q)} inputs of {data}"
    else:
        rng = np.random.default_rng(args.seed)
        x_q = rng.integers(-128, 128, (PROBE_INPUTS, pkg.n_inputs)).astype(np.int8)
        measured = f"{PROBE_INPUTS} random int8 inputs (seed {args.seed})"
    figures = compare_roundings(pkg, x_q)
    sizes = "-".join(str(n) for n in [pkg.n_inputs] + [lay.n_out for lay in pkg.layers])
    return sizes, pkg, blob, runtime_line(figures, measured)


def register_format(formats: argparse._SubParsersAction) -> None:
    """Add ``export tflite`` to the formats of ``mark1 export``."""
    t = formats.add_parser(
        "tflite",
        help="a weight package as a .tflite (TFLite Micro, LiteRT)",
        description="Write a weight package (.m1w) as a TensorFlow Lite model holding the same "
        "integers.",
        epilog=EXPORT_TFLITE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument("model", metavar="MODEL", help="weight package (.m1w) of an MLP")
    t.add_argument("--out", required=True, help=".tflite file to write")
    t.add_argument("--float-io", action="store_true",
                   help="float32 input and output through QUANTIZE / DEQUANTIZE (default int8)")
    t.add_argument("--eval-data", metavar="X.npy", default=None,
                   help="measure the other rounding on these inputs (default: random int8)")
    t.add_argument("--seed", type=SEED.arg(), default=0,
                   help=f"seed of the random inputs ({SEED.describe()})")
    t.set_defaults(handler=_export_tflite)
