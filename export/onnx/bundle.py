"""The device bundle: an exported, checked, parity-tested ONNX model and what runs it.

``export_bundle(CHECKPOINT, target, out)`` reads an MLP checkpoint (``mlp.pt``) or a Mark I
machine file (``machine.npz``; told apart by content), writes ``model.onnx``, checks the file
against the target profile, measures parity on the task's test set, and writes the bundle:

==================  ===========================================================================
``model.onnx``      the model (dynamic batch; float32 input ``image`` (batch, 400))
``model.json``      input/output names, shapes, dtypes; classes; preprocessing; target, opset,
                    IR version; parity figures; SHA-256 of ``model.onnx``
``run_onnx.py``     standalone runner: Python 3.6+, numpy and onnxruntime only
``build_engine.sh`` the ``trtexec`` command building an fp16 TensorRT engine on the device
``README.md``       how to copy and run it
``report.json``     export figures (export time, checks, parity); ``parity.png``
==================  ===========================================================================

Everything is staged and moved into ``out`` only when every check passed: a refused model
leaves no bundle (and an existing bundle in ``out`` untouched).
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from export.onnx.profiles import TargetProfile, get_profile

if TYPE_CHECKING:
    from export.onnx.checkpoint import MLPCheckpoint
    from export.onnx.markI_onnx import MachineFile

BUNDLE_FORMAT = "mark1-kit/onnx-bundle"
"""``format`` of ``model.json``."""
BUNDLE_FORMAT_VERSION = 1
"""``format_version`` of ``model.json``."""
ENGINE_FILE = "model_fp16.engine"
"""Engine file ``build_engine.sh`` writes."""

RUNNER_MODULES = frozenset(
    {"argparse", "hashlib", "json", "os", "struct", "sys", "zlib", "numpy", "onnxruntime"}
)
"""Modules the runner may import: Python 3.6 standard library modules, numpy, onnxruntime."""

NEWER_THAN_RUNNER_TARGET = frozenset(
    {
        # builtins and str/int methods after 3.6
        "breakpoint", "aiter", "anext", "removeprefix", "removesuffix", "isascii",
        "bit_count", "as_integer_ratio",
        # os, sys, time, hashlib, json, argparse additions after 3.6
        "waitstatus_to_exitcode", "pidfd_open", "memfd_create", "reconfigure",
        "breakpointhook", "time_ns", "monotonic_ns", "perf_counter_ns", "process_time_ns",
        "thread_time_ns", "file_digest", "BooleanOptionalAction", "unraisablehook",
        # numpy after 1.13 (Ubuntu 18.04's python3-numpy on JetPack 4.6)
        "default_rng", "Generator", "take_along_axis", "put_along_axis", "quantile",
        "nanquantile", "gcd", "lcm", "histogram_bin_edges", "printoptions",
        "sliding_window_view", "broadcast_shapes", "typing",
    }
)
"""Attribute and function names introduced after Python 3.6 / numpy 1.13 in reachable APIs."""

NEWER_KEYWORDS = frozenset({"capture_output", "text", "exit_on_error", "strict", "bitorder",
                            "like", "dtype_backend"})
"""Keyword arguments introduced after Python 3.6 / numpy 1.13 in reachable calls."""


_NEWER_NODES = {
    "NamedExpr": "assignment expression (3.8)",
    "Match": "match statement (3.10)",
    "TryStar": "except* (3.11)",
    "TypeAlias": "type alias (3.12)",
}


def py36_problems(source: str) -> list[str]:
    """Why ``source`` might not run on Python 3.6 with numpy 1.13 (empty list: none found).

    1. The parser with ``feature_version=(3, 6)`` rejects grammar newer than 3.6 (walrus,
       positional-only parameters, parenthesised context managers, ``match`` ...).
    2. The AST is walked for what that parser lets through or cannot judge: f-strings (their
       grammar grew in 3.8 and 3.12, so the runner uses ``str.format``), annotations (evaluated
       at definition time in 3.6, where ``list[int]`` or ``X | None`` fail), ``from __future__``.
    3. Imports must be in :data:`RUNNER_MODULES`, which bounds the reachable library surface;
       within it, the names in :data:`NEWER_THAN_RUNNER_TARGET` and keywords in
       :data:`NEWER_KEYWORDS` (added after 3.6 / numpy 1.13) must not appear.
    """
    try:
        tree = ast.parse(source, feature_version=(3, 6))
    except SyntaxError as exc:
        return [f"line {exc.lineno}: {exc.msg}"]
    problems = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", "?")
        if type(node).__name__ in _NEWER_NODES:
            problems.append(f"line {line}: {_NEWER_NODES[type(node).__name__]}")
        elif isinstance(node, ast.JoinedStr):
            problems.append(f"line {line}: f-string (use str.format)")
        elif isinstance(node, ast.AnnAssign) or (
            isinstance(node, ast.arg) and node.annotation is not None
        ) or (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns):
            problems.append(f"line {line}: annotation")
        elif isinstance(node, ast.arguments) and node.posonlyargs:
            problems.append(f"line {line}: positional-only parameters")
        elif isinstance(node, ast.Import):
            problems += [f"line {line}: import {a.name}" for a in node.names
                         if a.name.split(".")[0] not in RUNNER_MODULES]
        elif isinstance(node, ast.ImportFrom):
            if node.module == "__future__" or (node.module or "").split(".")[0] not in (
                RUNNER_MODULES
            ):
                problems.append(f"line {line}: from {node.module} import ...")
        elif isinstance(node, ast.Attribute) and node.attr in NEWER_THAN_RUNNER_TARGET:
            problems.append(f"line {line}: .{node.attr}")
        elif isinstance(node, ast.Name) and node.id in NEWER_THAN_RUNNER_TARGET:
            problems.append(f"line {line}: {node.id}")
        elif isinstance(node, ast.keyword) and node.arg in NEWER_KEYWORDS:
            problems.append(f"line {line}: keyword {node.arg}=")
    return problems


def template_text(name: str) -> str:
    """The text of a file in ``export/onnx/templates``."""
    return (resources.files("export.onnx") / "templates" / name).read_text(encoding="utf-8")


def render(name: str, values: dict[str, Any]) -> str:
    """A template with every ``@KEY@`` replaced; ``KeyError`` if one is left unfilled."""
    text = template_text(name)
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    left = sorted(set(re.findall(r"@([A-Z_0-9]+)@", text)))
    if left:
        raise KeyError(f"template {name} has unfilled fields: {', '.join(left)}")
    return text


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load_source(checkpoint: Path) -> MLPCheckpoint | MachineFile:
    """An MLP checkpoint or a Mark I machine file (told by content), validated."""
    from export.onnx.markI_onnx import load_machine_file, sniff_kind

    if sniff_kind(checkpoint) == "markI":
        return load_machine_file(checkpoint)
    from export.onnx.checkpoint import load_checkpoint

    return load_checkpoint(checkpoint)


def _write_model(source: MLPCheckpoint | MachineFile, path: Path, profile: TargetProfile,
                 fp16: bool) -> None:
    from export.onnx.checkpoint import MLPCheckpoint

    if isinstance(source, MLPCheckpoint):
        from export.onnx.onnx_export import export_mlp

        export_mlp(source, path, opset=profile.export_opset, fp16=fp16)
    else:
        from export.onnx.markI_onnx import build_markI_model
        from mark1.io import atomic_write_bytes

        model = build_markI_model(source, opset=profile.export_opset, fp16=fp16)
        atomic_write_bytes(path, model.SerializeToString())


def _description(source: MLPCheckpoint | MachineFile) -> str:
    from export.onnx.checkpoint import MLPCheckpoint

    if isinstance(source, MLPCheckpoint):
        sizes = "-".join(str(s) for s in source.layer_sizes)
        return f"MLP {sizes} (ReLU) trained on {source.task!r}, seed {source.seed}"
    return (f"Mark I perceptron ({source.preset}, {source.n_a} A-units, {source.n_r} R-units) "
            f"trained on {source.task!r}, seed {source.seed}")


def _write_device_files(stage: Path, meta: dict[str, Any], profile: TargetProfile,
                        bundle_name: str) -> None:
    """run_onnx.py, build_engine.sh and README.md of the bundle."""
    from mark1.io import atomic_write_text

    atomic_write_text(stage / "run_onnx.py", template_text("run_onnx.py"))
    name, n_in = meta["inputs"][0]["name"], meta["inputs"][0]["shape"][1]
    atomic_write_text(stage / "build_engine.sh", render("build_engine.sh", {
        "JETPACK": "4.6.x", "TENSORRT": profile.tensorrt or "8.2.1", "MODEL": meta["model_file"],
        "ENGINE": ENGINE_FILE, "INPUT": name, "N_IN": n_in,
    }))
    for script in ("run_onnx.py", "build_engine.sh"):
        os.chmod(stage / script, 0o755)
    precision = {
        ("mlp", "fp32"): "float32 weights",
        ("mlp", "fp16"): "float16 weights and arithmetic",
        ("markI", "fp32"): "float32 weights",
        ("markI", "fp16"): "a float16 plugboard (exact) and float32 potentiometer weights",
    }[meta["kind"], meta["precision"]]
    atomic_write_text(stage / "README.md", render("README.md", {
        "TITLE": f"{meta['description']} — ONNX bundle", "DESCRIPTION": meta["description"],
        "TARGET": profile.name, "TARGET_DESCRIPTION": profile.description,
        "OPSET": meta["opset"], "IR": meta["ir_version"], "PRECISION": precision,
        "BUNDLE": bundle_name, "RUNTIME": profile.runtime, "INPUT": name, "N_IN": n_in,
        "CLASSES": ", ".join(meta["classes"]), "ENGINE": ENGINE_FILE,
    }))


def export_bundle(
    checkpoint: str | os.PathLike[str],
    target: str,
    out: str | os.PathLike[str],
    fp16: bool = False,
) -> dict[str, Any]:
    """Export ``checkpoint`` for ``target`` into the bundle folder ``out``; return model.json.

    Raises ``ValueError``/``FileNotFoundError`` for bad input (before anything is written),
    :class:`export.onnx.onnx_export.ProfileError` when the written model breaks the profile and
    :class:`export.onnx.parity.ParityError` when it does not compute what its source computes.
    """
    from export.onnx.checkpoint import PREPROCESSING, MLPCheckpoint
    from export.onnx.figures import parity_figure
    from export.onnx.onnx_export import MLP_OUTPUT, check_model
    from export.onnx.parity import markI_parity, mlp_parity, parity_inputs
    from mark1 import __version__
    from mark1.io import staged_output_dir, write_json

    profile = get_profile(target)
    checkpoint = Path(checkpoint)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output path {str(out)!r} exists and is not a folder")
    source = _load_source(checkpoint)
    kind = "mlp" if isinstance(source, MLPCheckpoint) else "markI"
    problems = py36_problems(template_text("run_onnx.py"))
    if problems:  # the runner shipped with the kit must stay Python 3.6 code
        raise RuntimeError(f"run_onnx.py template is not Python 3.6 code: {problems[0]}")
    precision = "fp16" if fp16 else "fp32"
    X, data = parity_inputs(source.task, source.seed, getattr(source, "task_options", None))

    with staged_output_dir(out) as stage:
        model_path = stage / "model.onnx"
        t0 = time.perf_counter()
        _write_model(source, model_path, profile, fp16)
        export_s = time.perf_counter() - t0
        facts = check_model(model_path, profile)
        t1 = time.perf_counter()
        if isinstance(source, MLPCheckpoint):
            parity, ref, got = mlp_parity(source, model_path, X, fp16, data)
        else:
            parity, ref, got = markI_parity(source, model_path, X, fp16, data)
        parity_s = time.perf_counter() - t1
        parity.require()
        parity_figure(ref, got, f"{precision} parity: {parity.compared_output}, "
                      f"{parity.n_samples} images", stage / "parity.png")
        meta = {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_FORMAT_VERSION,
            "model_file": model_path.name,
            "sha256": facts.sha256,
            "n_bytes": facts.n_bytes,
            "kind": kind,
            "description": _description(source),
            "target": profile.name,
            "target_description": profile.description,
            "precision": precision,
            "opset": facts.opset,
            "ir_version": facts.ir_version,
            "operators": facts.operators,
            "inputs": facts.inputs,
            "outputs": facts.outputs,
            "class_output": MLP_OUTPUT if kind == "mlp" else "scores",
            "classes": list(source.classes),
            "preprocessing": dict(getattr(source, "preprocessing", PREPROCESSING)),
            "task": source.task,
            "seed": source.seed,
            "providers": list(profile.providers),
            "parity": parity.to_dict(),
            "source": {"file": checkpoint.name, "sha256": _file_sha256(checkpoint)},
            "created_by": f"mark1-kit {__version__}",
        }
        write_json(stage / "model.json", meta)
        _write_device_files(stage, meta, profile, out.absolute().name)
        write_json(stage / "report.json", {
            "checkpoint": str(checkpoint),
            "kind": kind,
            "target": profile.name,
            "precision": precision,
            "export_time_s": export_s,
            "parity_time_s": parity_s,
            "checks": {
                "onnx_checker_full": True, "opset": [facts.opset, profile.max_opset],
                "ir_version": [facts.ir_version, profile.max_ir_version],
                "operators": facts.operators,
                "int64_initializers_forbidden": profile.forbid_int64_initializers,
                "dynamic_batch": True,
            },
            "parity": parity.to_dict(),
            "model": facts.to_dict(),
        })
    return meta
