"""The device bundle: an exported, checked, parity-tested ONNX model and what runs it.

``export_bundle(MODEL, target, out)`` reads an MLP checkpoint (``mlp.pt``), a Mark I machine
file (``machine.npz``) or an MLP made elsewhere (ONNX, torch: :mod:`export.sources`; the kind is
told by content), writes ``model.onnx``, checks the file against the target profile, measures
parity on the task's test set (or the user's data, or seeded probe inputs), and writes the
bundle:

==================  ===========================================================================
``model.onnx``      the model (dynamic batch; float32 input ``image`` (batch, 400))
``model.json``      input/output names, shapes, dtypes; classes; preprocessing; target, opset,
                    IR version; parity figures; SHA-256 of ``model.onnx``
``run_onnx.py``     standalone runner: Python 3.6+, numpy and onnxruntime only
``build_engine.sh`` the ``trtexec`` command building an fp16 TensorRT engine on the device
``README.md``       how to copy and run it
``report.json``     export figures (export time, checks, parity); ``parity.png``
==================  ===========================================================================

An ONNX file made elsewhere is shipped as its own graph, converted for the target
(:mod:`export.onnx.convert`) and checked against itself in onnxruntime; every other MLP is
written by the kit's exporter from its float description.

Everything is staged and moved into ``out`` only when every check passed: a refused model
leaves no bundle (and an existing bundle in ``out`` untouched).
"""

from __future__ import annotations

import ast
import hashlib
import math
import os
import re
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from export.onnx.checkpoint import PREPROCESSING
from export.onnx.profiles import TargetProfile, get_profile

if TYPE_CHECKING:
    import numpy as np

    from export.onnx.markI_onnx import MachineFile
    from export.onnx.parity import ParityResult
    from export.sources.dispatch import ImportedMLP

BUNDLE_FORMAT = "mark1-kit/onnx-bundle"
"""``format`` of ``model.json``."""
BUNDLE_FORMAT_VERSION = 1
"""``format_version`` of ``model.json``."""
ENGINE_FILE = "model_fp16.engine"
BUNDLE_FILES = ("model.onnx", "model.json", "run_onnx.py", "build_engine.sh", "README.md",
                "parity.png", "report.json")
"""What :func:`export_bundle` writes into the bundle folder."""
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


def _load_source(checkpoint: Path) -> ImportedMLP | MachineFile:
    """Any MLP the kit reads, or a Mark I machine file (told by content), validated."""
    from export.sources.dispatch import load_mlp, sniff

    if sniff(checkpoint).name == "markI":
        from export.onnx.markI_onnx import load_machine_file

        return load_machine_file(checkpoint)
    return load_mlp(checkpoint)


def _kind(source: ImportedMLP | MachineFile) -> str:
    """``"markI"``, ``"onnx"`` (a graph shipped as it is) or ``"mlp"`` (written by the kit)."""
    from export.onnx.markI_onnx import MachineFile

    if isinstance(source, MachineFile):
        return "markI"
    return "onnx" if source.onnx is not None else "mlp"


def _write_model(source: ImportedMLP | MachineFile, path: Path, profile: TargetProfile,
                 fp16: bool) -> list[str]:
    """Write ``model.onnx``; returns notes on what a conversion did."""
    from export.onnx.markI_onnx import MachineFile
    from mark1.io import atomic_write_bytes

    if isinstance(source, MachineFile):
        from export.onnx.markI_onnx import build_markI_model

        model = build_markI_model(source, opset=profile.export_opset, fp16=fp16)
        atomic_write_bytes(path, model.SerializeToString())
        return []
    if source.onnx is not None:
        from export.onnx.convert import graph_for_target

        graph, notes = graph_for_target(source.onnx, profile)
        atomic_write_bytes(path, graph.SerializeToString())
        return notes
    from export.onnx.onnx_export import export_mlp

    export_mlp(source.mlp, path, opset=profile.export_opset, fp16=fp16)
    return []


def _description(source: ImportedMLP | MachineFile) -> str:
    from export.onnx.markI_onnx import MachineFile

    if isinstance(source, MachineFile):
        return (f"Mark I perceptron ({source.preset}, {source.n_a} A-units, {source.n_r} "
                f"R-units) trained on {source.task!r}, seed {source.seed}")
    mlp = source.mlp
    sizes = "-".join(str(s) for s in mlp.layer_sizes)
    if source.kind == "mark1-kit checkpoint":
        return f"MLP {sizes} (ReLU) trained on {mlp.task!r}, seed {mlp.seed}"
    made = f", written by {source.producer}" if source.producer else ""
    return f"MLP {sizes} from {source.kind} file {source.path.name}{made}"


def parity_data(source: ImportedMLP | MachineFile, eval_data: tuple[str, ...] | None
                ) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Inputs the export is checked on, as float32 rows, their labels if known, and their
    description: the user's ``eval_data``; else the test set of the task the model was trained
    on when its images fit the model; else seeded probe inputs."""
    import numpy as np

    from export.onnx.markI_onnx import MachineFile
    from export.onnx.parity import parity_inputs, probe_inputs
    from export.sources.user_data import class_indices, model_inputs, read_array
    from mark1.images import N_CELLS, to_retina

    machine = source if isinstance(source, MachineFile) else None
    mlp = None if isinstance(source, MachineFile) else source.mlp
    if eval_data:
        X = read_array(eval_data[0], "evaluation data")
        what = f"evaluation data {eval_data[0]}"
        rows = model_inputs(X, mlp, what) if mlp is not None else \
            to_retina(X, what).reshape(-1, N_CELLS)
        labels = None
        if len(eval_data) > 1:
            classes = mlp.classes if mlp is not None else machine.classes if machine else []
            labels = class_indices(read_array(eval_data[1], "evaluation labels"),
                                   list(classes), len(rows), f"evaluation labels {eval_data[1]}")
        return rows.astype(np.float32), labels, f"{len(rows)} inputs of {eval_data[0]}"
    if machine is not None:
        X, data = parity_inputs(machine.task, machine.seed)
        return X, None, data
    assert mlp is not None
    if mlp.takes_retina:
        X, data = parity_inputs(mlp.task, mlp.seed, mlp.task_options)
        return X, None, data
    X, data = probe_inputs(n_inputs=int(mlp.layer_sizes[0]))
    return X, None, f"{data}: no --eval-data given"


def _graph_parity(source: ImportedMLP, model_path: Path, X: np.ndarray, data: str
                  ) -> tuple[ParityResult, np.ndarray, np.ndarray]:
    """The converted graph against the original, both in onnxruntime, on the class scores."""
    from export.onnx.parity import graph_parity, run_onnx
    from export.sources.onnx_mlp import onnx_runner

    found = source.onnx
    assert found is not None
    ref = onnx_runner(found, [found.scores])(X)[0]
    got = run_onnx(model_path, X.reshape(len(X), *found.input_shape))[found.scores]
    return graph_parity(ref, got, found.scores, data, found.threshold), ref, got


def _write_device_files(stage: Path, meta: dict[str, Any], profile: TargetProfile,
                        bundle_name: str) -> None:
    """run_onnx.py, build_engine.sh and README.md of the bundle."""
    from mark1.io import atomic_write_text

    atomic_write_text(stage / "run_onnx.py", template_text("run_onnx.py"))
    name = meta["inputs"][0]["name"]
    n_in = "x".join(str(d) for d in meta["inputs"][0]["shape"][1:])
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
        ("onnx", "fp32"): "the graph's own weights",
    }[meta["kind"], meta["precision"]]
    atomic_write_text(stage / "README.md", render("README.md", {
        "TITLE": f"{meta['description']} — ONNX bundle", "DESCRIPTION": meta["description"],
        "TARGET": profile.name, "TARGET_DESCRIPTION": profile.description,
        "OPSET": meta["opset"], "IR": meta["ir_version"], "PRECISION": precision,
        "BUNDLE": bundle_name, "RUNTIME": profile.runtime,
        "INPUT_TEXT": _input_text(meta, name, n_in),
        "CLASSES": ", ".join(meta["classes"]), "ENGINE": ENGINE_FILE,
    }))


def _input_text(meta: dict[str, Any], name: str, n_in: str) -> str:
    """The README's paragraph on the model's input."""
    if meta["preprocessing"].get("input") == "features":
        dims = [int(d) for d in meta["inputs"][0]["shape"][1:]]
        shape = ", ".join(str(d) for d in dims)
        flat = f" or (n, {math.prod(dims)})" if len(dims) > 1 else ""
        return (f"Input: {name} of shape (batch, {shape}), float32 — the model's own features, "
                f"as it was trained on them. `run_onnx.py` reads `.npy` files of shape (n, "
                f"{shape}){flat} and feeds the values as they are.")
    return (f"Input: {name} of shape (batch, {n_in}), float32 — the 20 x 20 retina image row "
            "by row,\nrelative illuminance in [0, 1] (0 dark, 1 lit). `run_onnx.py` reads PNG, "
            "PGM/PPM and `.npy`,\nturns colour into luminance and averages any image size onto "
            "the 20 x 20 grid; `--invert` for\ndark figures on a light ground.")


def export_bundle(
    checkpoint: str | os.PathLike[str],
    target: str,
    out: str | os.PathLike[str],
    fp16: bool = False,
    eval_data: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Export the model in ``checkpoint`` for ``target`` into the bundle folder ``out``; return
    model.json.

    ``eval_data``: ``(X.npy,)`` or ``(X.npy, y.npy)``, the inputs (and labels) parity is measured
    on (default: see :func:`parity_data`). Every path is planned before any work
    (:class:`mark1.io.OutputPlan`). Raises ``ValueError``/``FileNotFoundError`` for bad
    input (before anything is written), :class:`export.onnx.onnx_export.ProfileError` when the
    written model breaks the profile and :class:`export.onnx.parity.ParityError` when it does
    not compute what its source computes.
    """
    from mark1.io import OutputPlan

    profile = get_profile(target)
    if eval_data is not None and not 1 <= len(eval_data) <= 2:
        raise ValueError(f"--eval-data takes X.npy and optionally y.npy; got {len(eval_data)} "
                         "files")
    plan = OutputPlan()
    source = plan.read("MODEL", checkpoint, what="checkpoint")
    given = None if eval_data is None else tuple(
        str(plan.read("--eval-data", path, what="data file")) for path in eval_data)
    folder = plan.write_folder("--out", out, files=BUNDLE_FILES)
    with plan:
        return _export(source, profile, folder, plan.staged(folder), fp16, given)


def _export(checkpoint: Path, profile: TargetProfile, out: Path, stage: Path, fp16: bool,
            eval_data: tuple[str, ...] | None) -> dict[str, Any]:
    """The work of :func:`export_bundle`: write every file of the bundle into ``stage``."""
    import numpy as np

    from export.onnx.figures import parity_figure
    from export.onnx.markI_onnx import MachineFile
    from export.onnx.onnx_export import MLP_OUTPUT, check_model
    from export.onnx.parity import markI_parity, mlp_parity
    from mark1 import __version__
    from mark1.io import write_json

    source = _load_source(checkpoint)
    kind = _kind(source)
    if kind == "onnx" and fp16:
        raise ValueError(f"{checkpoint}: --fp16 applies to models the kit writes; an ONNX file "
                         "is exported as its own graph in float32 (build_engine.sh still builds "
                         "an fp16 TensorRT engine from it)")
    problems = py36_problems(template_text("run_onnx.py"))
    if problems:  # the runner shipped with the kit must stay Python 3.6 code
        raise RuntimeError(f"run_onnx.py template is not Python 3.6 code: {problems[0]}")
    precision = "fp16" if fp16 else "fp32"
    X, labels, data = parity_data(source, eval_data)
    machine = source if isinstance(source, MachineFile) else None
    imported = None if isinstance(source, MachineFile) else source
    graph = imported.onnx if imported is not None else None

    model_path = stage / "model.onnx"
    t0 = time.perf_counter()
    notes = _write_model(source, model_path, profile, fp16)
    export_s = time.perf_counter() - t0
    facts = check_model(model_path, profile)
    t1 = time.perf_counter()
    if imported is not None and graph is not None:
        parity, ref, got = _graph_parity(imported, model_path, X, data)
    elif imported is not None:
        parity, ref, got = mlp_parity(imported.mlp, model_path, X, fp16, data)
    else:
        assert machine is not None
        parity, ref, got = markI_parity(machine, model_path, X, fp16, data)
    parity_s = time.perf_counter() - t1
    parity.require()
    parity_figure(ref, got, f"{precision} parity: {parity.compared_output}, "
                  f"{parity.n_samples} inputs", stage / "parity.png")
    trained = machine if machine is not None else imported.mlp if imported else None
    assert trained is not None
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
        "class_output": graph.scores if graph is not None else
        "scores" if machine is not None else MLP_OUTPUT,
        "decision": _decision(got, graph.threshold if graph is not None else 0.0),
        "classes": list(trained.classes),
        "preprocessing": dict(PREPROCESSING if imported is None else
                              imported.mlp.preprocessing),
        "task": trained.task,
        "seed": trained.seed,
        "providers": list(profile.providers),
        "parity": parity.to_dict(),
        "source": {"file": checkpoint.name, "sha256": _file_sha256(checkpoint),
                   **({} if imported is None else {"kind": imported.kind,
                                                   "producer": imported.producer,
                                                   "notes": imported.notes})},
        "conversion": notes,
        "created_by": f"mark1-kit {__version__}",
    }
    if labels is not None:
        if machine is not None:  # the Mark I decides by its codebook rule, not an argmax
            from export.onnx.parity import run_onnx

            ref_class = machine.decide(X)[0]
            got_class = run_onnx(model_path, X)["class_index"]
        else:
            ref_class, got_class = _classes(ref, meta), _classes(got, meta)
        meta["accuracy"] = {"inputs": data,
                            "reference": float(np.mean(ref_class == labels)),
                            "exported": float(np.mean(got_class == labels))}
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
        "conversion": notes,
        "parity": parity.to_dict(),
        "model": facts.to_dict(),
    })
    return meta


def _decision(scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """How the class follows from the class output: the argmax, or for a single column (a
    binary classifier's logit or probability) whether it is above ``threshold``."""
    if scores.ndim == 2 and scores.shape[1] == 1:
        return {"rule": "above", "threshold": float(threshold)}
    return {"rule": "argmax"}


def _classes(scores: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    import numpy as np

    scores = np.asarray(scores).reshape(len(scores), -1)
    if meta["decision"]["rule"] == "above":
        return (scores[:, 0] > meta["decision"]["threshold"]).astype(np.int64)
    return np.argmax(scores, axis=1)
