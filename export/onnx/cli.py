"""Subcommands ``train-mlp`` and ``export onnx``.

Registration imports argparse and the light modules whose defaults it shows (the training
hyperparameters, the target profiles); the handlers import torch, onnx and onnxruntime.
"""

from __future__ import annotations

import argparse

from export.onnx.hyperparameters import DEFAULT_TRAINING as TRAINING
from export.onnx.hyperparameters import MAX_HIDDEN_LAYERS, MLPTraining
from export.onnx.profiles import JETSON_TX2, PROFILES
from export.tflite.cli import register_format
from firmware_sim.export_c import register_format as register_c
from mark1.limits import SEED, field_limits
from mark1.stimuli import TASK_LIMITS

LIMITS = field_limits(MLPTraining)

EXPORT_EXIT_CODES: dict[int, str] = {
    0: "bundle written",
    2: "bad input, or the model breaks the target profile",
    3: "parity with the source failed",
}
"""Exit status of ``mark1 export onnx`` for each outcome."""

EXPORT_EPILOG = """\
MODEL is an MLP checkpoint (mlp.pt from `mark1 train-mlp`), a trained Mark I machine
(machine.npz from `mark1 simulate`), or an MLP made elsewhere: an ONNX file from any converter
(shipped as its own graph, its opset and IR version lowered to the target's where that can be
done faithfully), a torch nn.Sequential saved whole, a TorchScript archive or a state_dict
(docs/EXPORT.md, "Models made elsewhere"); the kind is told by content. The written model is
checked against the target profile (onnx.checker, opset, IR version, operators, int64
initializers) and run in onnxruntime against its source on --eval-data, else on the test set of
the task the model was trained on, else on seeded probe inputs.

exit status:
""" + "".join(f"  {k}  {v}\n" for k, v in EXPORT_EXIT_CODES.items()) + """\
In every failure no bundle is written.
"""


def parse_hidden(text: str) -> tuple[int, ...]:
    """``"64,32"`` -> ``(64, 32)``; ``""`` or ``"none"`` -> ``()`` (no hidden layer). Each size
    within :class:`MLPTraining`'s range, at most :data:`MAX_HIDDEN_LAYERS` of them."""
    cleaned = str(text).strip().lower()
    if cleaned in ("", "none"):
        return ()
    width = LIMITS["hidden"]
    sizes = []
    for part in cleaned.split(","):
        part = part.strip()
        if not part.isdigit():
            raise ValueError(
                f"hidden layer sizes must be positive whole numbers separated by commas "
                f"(e.g. 64,32, or none for no hidden layer); got {text!r}"
            )
        try:
            width.check("size", int(part))
        except ValueError:
            raise ValueError(f"hidden layer size {part} in {text!r} is out of range (allowed: "
                             f"{width.describe()}; none for no hidden layer)") from None
        sizes.append(int(part))
    if len(sizes) > MAX_HIDDEN_LAYERS:
        raise ValueError(f"{len(sizes)} hidden layers in {text!r}; allowed at most "
                         f"{MAX_HIDDEN_LAYERS}")
    return tuple(sizes)


def _hidden_arg(text: str) -> tuple[int, ...]:
    try:
        return parse_hidden(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _train_mlp(args: argparse.Namespace) -> int:
    from export.onnx.hyperparameters import TRAINING_FILES, check_training
    from mark1.io import OutputPlan

    options = dict(task=args.task, hidden=args.hidden, epochs=args.epochs, seed=args.seed,
                   lr=args.lr, label_smoothing=args.label_smoothing,
                   batch_size=args.batch_size, n_train=args.n_train, n_test=args.n_test)
    check_training(**options)  # every check, and the plan, before torch is even imported
    plan = OutputPlan()
    out = plan.write_folder("--out", args.out, files=TRAINING_FILES)
    with plan:
        from export.onnx.mlp import train_into

        report = train_into(plan.staged(out), out, progress=not args.quiet, **options)
    print(
        f"train-mlp {report['task']}: layers {'-'.join(map(str, report['layer_sizes']))}, "
        f"train accuracy {report['train_accuracy']:.4f}, test accuracy "
        f"{report['test_accuracy']:.4f}, {report['wall_time_s']:.1f} s"
    )
    for name, path in report["files"].items():
        print(f"  {name:12s} {path}")
    return 0


def _export_onnx(args: argparse.Namespace) -> int:
    from export.onnx.bundle import export_bundle

    if args.eval_data is not None and not 1 <= len(args.eval_data) <= 2:
        raise ValueError(f"--eval-data takes X.npy and optionally y.npy; got "
                         f"{len(args.eval_data)} files")
    meta = export_bundle(args.checkpoint, args.target, args.out, fp16=args.fp16,
                         eval_data=tuple(args.eval_data) if args.eval_data else None)
    parity = meta["parity"]
    print(
        f"export onnx: {meta['kind']} -> {args.out} for {meta['target']} ({meta['precision']}, "
        f"opset {meta['opset']}, IR {meta['ir_version']}, {meta['n_bytes']} bytes)"
    )
    for note in meta["source"].get("notes", []) + meta["conversion"]:
        print(f"  note: {note}")
    print(
        f"  parity vs {parity['reference']} on {parity['data']}: max |diff| "
        f"{parity['max_abs_diff']:.3g} ({parity['compared_output']}), class agreement "
        f"{parity['argmax_agreement']:.4f}"
    )
    if "accuracy" in meta:
        print(f"  accuracy: {100 * meta['accuracy']['exported']:.2f} % (source "
              f"{100 * meta['accuracy']['reference']:.2f} %)")
    print(f"  sha256 {meta['sha256']}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train-mlp`` and ``export onnx``."""
    p = subparsers.add_parser(
        "train-mlp",
        help="train a torch MLP on a retina task",
        description="Train a multi-layer perceptron (ReLU hidden layers) by backpropagation on "
        "the retina images of a task; writes OUT/mlp.pt, OUT/report.json, OUT/training.png.",
    )
    p.add_argument("--task", default=TRAINING.task,
                   help="retina task (see `mark1 tasks`; default %(default)s)")
    p.add_argument("--hidden", type=_hidden_arg,
                   default=",".join(map(str, TRAINING.hidden)) or "none",
                   help="hidden layer sizes, comma separated, or none (each "
                   f"{LIMITS['hidden'].describe()}, at most {MAX_HIDDEN_LAYERS} layers; "
                   "default %(default)s)")
    p.add_argument("--epochs", type=LIMITS["epochs"].arg(), default=TRAINING.epochs,
                   help=f"training epochs ({LIMITS['epochs'].describe()}; default %(default)s)")
    p.add_argument("--seed", type=SEED.arg(), default=0,
                   help=f"seed of data, weights, batches ({SEED.describe()})")
    p.add_argument("--lr", type=LIMITS["lr"].arg(), default=TRAINING.lr,
                   help=f"Adam learning rate ({LIMITS['lr'].describe()}; default %(default)g)")
    p.add_argument("--label-smoothing", type=LIMITS["label_smoothing"].arg(),
                   default=TRAINING.label_smoothing, metavar="EPS",
                   help="label smoothing of the cross-entropy, in [0, 1) (default %(default)g: "
                   "keeps the logits small enough for an fp16 export)")
    p.add_argument("--batch-size", type=LIMITS["batch_size"].arg(), default=TRAINING.batch_size,
                   help=f"minibatch size ({LIMITS['batch_size'].describe()}; default "
                   "%(default)s)")
    p.add_argument("--n-train", type=TASK_LIMITS["n_train"].arg(), default=None,
                   help=f"training images ({TASK_LIMITS['n_train'].describe()}; task default)")
    p.add_argument("--n-test", type=TASK_LIMITS["n_test"].arg(), default=None,
                   help=f"test images ({TASK_LIMITS['n_test'].describe()}; task default)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_train_mlp)

    e = subparsers.add_parser("export", help="export a trained model (onnx, tflite, c)",
                              description="Export a trained model.")
    formats = e.add_subparsers(dest="format", metavar="FORMAT", parser_class=type(e))
    formats.required = True
    o = formats.add_parser(
        "onnx",
        help=f"ONNX bundle for a target ({', '.join(PROFILES)})",
        description="Export an MLP or the Mark I machine to ONNX for a target device and write "
        "a bundle: model.onnx, model.json, run_onnx.py, build_engine.sh, README.md.",
        epilog=EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    o.add_argument("checkpoint", metavar="MODEL",
                   help="mlp.pt, machine.npz, or an MLP made elsewhere (.onnx, torch .pt)")
    o.add_argument("--target", choices=sorted(PROFILES), default=JETSON_TX2.name,
                   help="target profile (default %(default)s)")
    o.add_argument("--fp16", action="store_true",
                   help="float16 weights (Mark I: the plugboard), float32 inputs/outputs; the "
                   "TX2's speed path")
    o.add_argument("--eval-data", metavar="FILE", nargs="+", default=None,
                   help="X.npy [y.npy]: check parity on these inputs (and report accuracy)")
    o.add_argument("--out", required=True, help="bundle folder")
    o.set_defaults(handler=_export_onnx)
    register_format(formats)
    register_c(formats)

