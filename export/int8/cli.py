"""Subcommand ``quantize``: int8 weight package for a microcontroller.

Registration imports argparse and :mod:`export.int8.quantize` (numpy; for its defaults); the
handler imports torch and onnxruntime, and the simulated microcontroller's engine for the
report's device figures: the CLI layer is where the host tools and the device meet
(``export.int8.quantize`` itself imports nothing of the device).
"""

from __future__ import annotations

import argparse

from export.int8.quantize import CALIB_LIMIT, DEFAULT_CALIB
from mark1.limits import SEED

QUANTIZE_EPILOG = """\
MODEL is an MLP checkpoint (mlp.pt from `mark1 train-mlp`), a Mark I machine file (machine.npz
from `mark1 simulate`), or an MLP made elsewhere: an ONNX file from any converter (skl2onnx,
torch.onnx), a torch nn.Sequential saved whole, a TorchScript archive or a state_dict
(docs/INT8.md, "Models made elsewhere"); the kind is told by content. Calibration inputs come
from --calib-data, else from the training split of the task the model names (or --task);
accuracy is measured on --eval-data, else on that task's test split. A task whose images or
classes do not fit the model is refused.

An int8 TensorFlow Lite model (.tflite, full-integer quantization) is imported as it is: its
integers, scales and zero points, nothing calibrated again (docs/TFLITE.md). It is measured on
--eval-data, else on 256 random int8 inputs (--seed).

--rounding: how the package requantizes. single (the default for models quantized here) rounds
the exact product once, as LiteRT does on x86; tflite (the default for a .tflite) rounds twice as
TensorFlow Lite's kernels do, giving the bits TensorFlow Lite Micro computes (package format
version 2; docs/PACKAGE.md).

Writes three files, each whole and only once everything has succeeded (no output may be an
input or another output; each place is checked before any work):
  OUT                  the weight package (docs/PACKAGE.md)
  OUT minus suffix + .int8.onnx   the same model as QDQ ONNX, opset 13 (or --onnx)
  OUT + .json          the report: float vs int8 accuracy, bytes, RAM, onnxruntime agreement,
                       device cycles (or --report)

exit status: 0 written; 2 bad input (missing or unreadable file, wrong kind, bad option).
"""


def _calib(text: str) -> int | str:
    if text.strip().lower() == "all":
        return "all"
    try:
        return int(CALIB_LIMIT.parse(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--calib must be a positive whole number of images "
            f"({CALIB_LIMIT.describe()}) or all; got {text!r}"
        ) from None


def _import(args: argparse.Namespace) -> int:
    """A model quantized already (an int8 .tflite): imported as it is."""
    from export.int8.imported import import_file
    from firmware_sim.engine import Engine

    options = [name for name, value in (("--calib", args.calib), ("--calib-data",
               args.calib_data), ("--task", args.task)) if value is not None]
    if options:
        raise ValueError(f"{args.checkpoint} is quantized already: it is imported as it is, so "
                         f"{', '.join(options)} (calibration) does not apply")
    r = import_file(args.checkpoint, args.out, rounding=ROUNDING_CHOICES[args.rounding or
                    "tflite"], seed=args.seed, eval_data=tuple(args.eval_data or ()) or None,
                    onnx_path=args.onnx, report_path=args.report, device=Engine)
    _print_import(r)
    return 0


def _quantize(args: argparse.Namespace) -> int:
    from export.int8.quantize import quantize_file
    from export.sources.dispatch import sniff
    from firmware_sim.engine import Engine
    from mark1.io import OutputPlan

    if args.eval_data is not None and not 1 <= len(args.eval_data) <= 2:
        raise ValueError(f"--eval-data takes X.npy and optionally y.npy; got "
                         f"{len(args.eval_data)} files")
    OutputPlan().read("MODEL", args.checkpoint, what="checkpoint")  # a file, before sniffing
    if sniff(args.checkpoint).load_package is not None:
        return _import(args)
    r = quantize_file(
        args.checkpoint, args.out, calib=args.calib, seed=args.seed, task=args.task,
        calib_data=args.calib_data, eval_data=tuple(args.eval_data) if args.eval_data else None,
        onnx_path=args.onnx, report_path=args.report, device=Engine,
        rounding=ROUNDING_CHOICES[args.rounding] if args.rounding else None,
    )
    acc, src = r["accuracy"], r["source"]
    on = f"task {src['task']}" if src["task"] else f"{r['calibration']['from']}"
    shape = "x".join(str(d) for d in r["package"]["input_shape"])
    print(f"quantize: {src['kind']} ({shape} inputs, {len(r['package']['classes'])} classes) on "
          f"{on} -> {r['package']['path']} ({r['model_bytes']} bytes, id "
          f"{r['package']['model_id'][:16]})")
    for note in src.get("model", {}).get("notes", []):
        print(f"  note: {note}")
    if r["import_check"]:
        check = r["import_check"]
        print(f"  read as an MLP: logits within {check['max_abs_diff']:.3g} of "
              f"{check['reference']} on {check['inputs']} inputs")
    if acc["float"] is not None:
        images = "test images" if acc["split"] == "test" else f"inputs of {acc['from']}"
        print(f"  accuracy on {acc['images']} {images}: float "
              f"{100 * acc['float']:.2f} %, int8 {100 * acc['int8']:.2f} % (drop "
              f"{acc['drop_points']:.2f} points, goal <= {acc['goal_drop_points']:g}: "
              f"{'met' if acc['goal_met'] else 'NOT met'})")
    else:
        print(f"  no labels: the int8 model gives the float model's class on "
              f"{100 * acc['same_class_float_int8']:.2f} % of {acc['images']} inputs "
              "(--eval-data X.npy y.npy for accuracy)")
    _print_tail(r)
    return 0


def _print_tail(r: dict) -> None:
    """The lines every quantize run ends with: rounding, device, onnxruntime, report."""
    from export.int8.rounding import summary

    dev, onnx = r["device"], r["onnx"]
    print(f"  rounding: {summary(r['rounding'])}")
    print(f"  device: {r['ram_bytes']} bytes of RAM for activations, {dev['cycles']} cycles = "
          f"{dev['latency_ms']:.3f} ms at {dev['clock_hz'] / 1e6:g} MHz, bit-exact with the "
          f"golden reference: {'yes' if dev['bit_exact_with_golden'] else 'NO'}")
    goal = "goal met" if onnx["goal_met"] else "goal NOT met"
    print(f"  onnxruntime vs golden: max {onnx['max_abs_diff_lsb']} LSB, same class on "
          f"{100 * onnx['decision_agreement']:.2f} % ({goal}) -> {onnx['path']}")
    print(f"  report {r['report_path']}")


def _print_import(r: dict) -> None:
    """The summary of a model imported as it is (an int8 .tflite)."""
    model, pkg, acc = r["source"]["model"], r["package"], r["accuracy"]
    shape = "x".join(str(d) for d in pkg["input_shape"])
    print(f"quantize: {model['kind']} ({model['interface']} interface, {shape} inputs, "
          f"{len(pkg['classes'])} classes, layers {'-'.join(map(str, model['layer_sizes']))}) "
          f"imported as it is -> {pkg['path']} ({r['model_bytes']} bytes, format version "
          f"{pkg['format_version']}, id {pkg['model_id'][:16]})")
    for note in model["notes"]:
        print(f"  note: {note}")
    if acc["int8"] is not None:
        print(f"  accuracy on {acc['images']} inputs of {acc['from']}: int8 "
              f"{100 * acc['int8']:.2f} %")
    else:
        print(f"  measured on {acc['from']} (--eval-data X.npy y.npy for accuracy)")
    _print_tail(r)


ROUNDING_CHOICES: dict[str, str] = {"single": "single", "tflite": "double"}
"""``--rounding`` choices and the package rounding each gives."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``quantize``."""
    p = subparsers.add_parser(
        "quantize",
        help="int8-quantize a trained model into a weight package",
        description="Post-training static int8 quantization (weights per output channel, "
        "activations asymmetric, Q31 requantization) of an MLP or the Mark I machine into a "
        "weight package for `mark1 push`.",
        epilog=QUANTIZE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", metavar="MODEL",
                   help="mlp.pt, machine.npz, an MLP made elsewhere (.onnx, torch .pt), or an "
                   "int8 .tflite")
    p.add_argument("--calib", type=_calib, default=None, metavar="N",
                   help=f"calibration inputs to draw (default {DEFAULT_CALIB}, or all)")
    p.add_argument("--calib-data", metavar="X.npy", default=None,
                   help="calibrate on these inputs (the model's own, shaped (n, ...))")
    p.add_argument("--eval-data", metavar="FILE", nargs="+", default=None,
                   help="X.npy [y.npy]: measure on these inputs (and labels, for accuracy)")
    p.add_argument("--out", required=True, help="weight package to write (e.g. model.m1w)")
    p.add_argument("--seed", type=SEED.arg(), default=0,
                   help=f"seed of the calibration draw ({SEED.describe()})")
    p.add_argument("--task", default=None,
                   help="task to calibrate and test on (default: the one the source names)")
    p.add_argument("--onnx", default=None, help="quantized ONNX path (default OUT.int8.onnx)")
    p.add_argument("--report", default=None, help="report path (default OUT.json)")
    p.add_argument("--rounding", choices=tuple(ROUNDING_CHOICES), default=None,
                   help="requantization rounding: single (default; LiteRT's bits) or tflite "
                   "(TensorFlow Lite's double rounding: TFLite Micro's bits; default for a "
                   ".tflite)")
    p.set_defaults(handler=_quantize)
