"""torch MLP -> ONNX, and the check of a written ONNX file against a target profile.

The MLP is exported with the TorchScript exporter (``dynamo=False``), the route that still writes
opset 13; a torch without it gets the same graph from ``onnx.helper`` (:func:`mlp_graph`).
Whatever route wrote a file, :func:`check_model` reads the file back and checks it:
``onnx.checker`` full check, opset and IR version, every operator and domain, int64/double
initializers and a dynamic batch dimension on every input. It raises :class:`ProfileError`
listing every violation rather than let a model that breaks its profile be shipped.

fp16 export: the weights are float16 and the model's inputs and outputs stay float32, with a
Cast node at each boundary (the caller feeds and reads float32 as before).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from export.onnx.checkpoint import LINEAR, RELU, MLPCheckpoint
from export.onnx.profiles import TargetProfile
from mark1.errors import Mark1Error

if TYPE_CHECKING:  # onnx is imported when used
    from onnx import GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto

INPUT_NAME = "image"
"""Name of the model input: retina images, float32 (batch, 400)."""
MLP_OUTPUT = "logits"
"""Name of the MLP output: float32 logits (batch, n_classes)."""
BATCH_DIM = "batch"
"""Symbolic name of the dynamic batch dimension."""


class ProfileError(Mark1Error):
    """An ONNX file that breaks its target profile (or is no valid ONNX file at all)."""

    exit_code = 2


@dataclass
class ModelFacts:
    """What a checked ONNX file is, as read back from the file."""

    opset: int
    """ai.onnx opset of the file."""
    ir_version: int
    """ONNX IR version of the file."""
    operators: list[str]
    """Distinct operator types used, sorted."""
    inputs: list[dict[str, Any]]
    """Graph inputs: name, shape (``"batch"`` for the dynamic dimension), dtype."""
    outputs: list[dict[str, Any]]
    """Graph outputs: name, shape, dtype."""
    n_bytes: int
    """Size of the file in bytes."""
    sha256: str
    """SHA-256 of the file, hex."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _dtype_name(elem_type: int) -> str:
    import onnx

    return str(onnx.helper.tensor_dtype_to_np_dtype(elem_type))


def _value_infos(values: Iterable[ValueInfoProto]) -> list[dict[str, Any]]:
    out = []
    for v in values:
        t = v.type.tensor_type
        shape = [d.dim_param if d.dim_param else int(d.dim_value) for d in t.shape.dim]
        out.append({"name": v.name, "shape": shape, "dtype": _dtype_name(t.elem_type)})
    return out


def _all_nodes(graph: GraphProto) -> list[NodeProto]:
    """Nodes of ``graph`` and of every subgraph (If/Loop/Scan bodies)."""
    import onnx

    nodes: list[NodeProto] = []
    for node in graph.node:
        nodes.append(node)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                nodes.extend(_all_nodes(attr.g))
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    nodes.extend(_all_nodes(g))
    return nodes


def _constant_tensors(model: ModelProto) -> list[tuple[str, TensorProto]]:
    """(description, TensorProto) of every initializer and Constant node value."""
    tensors = [(f"initializer {t.name!r}", t) for t in model.graph.initializer]
    for node in _all_nodes(model.graph):
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    tensors.append((f"Constant node {node.name or node.output[0]!r}", attr.t))
    return tensors


def check_model(path: str | os.PathLike[str], profile: TargetProfile) -> ModelFacts:
    """Check the ONNX file at ``path`` against ``profile``; raise :class:`ProfileError` if not.

    Checks: ``onnx.checker.check_model(full_check=True)``; ai.onnx opset <= ``max_opset``; IR
    version <= ``max_ir_version``; no other operator domain unless allowed; every operator in the
    profile's list (or a standard operator when the profile lists none); no int64/double
    initializers or constants where the profile forbids them; a symbolic first (batch)
    dimension on every graph input.
    """
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    data = path.read_bytes()
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ProfileError(f"{path} is not a readable ONNX file ({exc})") from exc
    problems: list[str] = []
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        problems.append(f"onnx.checker: {first}")

    opset = 0
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            opset = int(entry.version)
        elif entry.domain not in profile.allowed_domains:
            problems.append(f"operator domain {entry.domain!r} (version {entry.version})")
    if opset > profile.max_opset:
        problems.append(f"opset {opset} > {profile.max_opset}")
    if model.ir_version > profile.max_ir_version:
        problems.append(f"IR version {model.ir_version} > {profile.max_ir_version}")

    nodes = _all_nodes(model.graph)
    operators = sorted({n.op_type for n in nodes})
    standard = sorted({n.op_type for n in nodes if n.domain in ("", "ai.onnx")})
    for op in sorted({f"{n.domain}.{n.op_type}" for n in nodes if n.domain not in (
        "", "ai.onnx", *profile.allowed_domains
    )}):
        problems.append(f"operator {op} outside the standard domain")
    if profile.operators is not None:
        unsupported = [op for op in standard if op not in profile.operators]
    else:
        unsupported = [op for op in standard if not onnx.defs.has(op)]
    if unsupported:
        problems.append(f"operators not supported by the target: {', '.join(unsupported)}")

    forbidden = set()
    if profile.forbid_int64_initializers:
        forbidden.add(onnx.TensorProto.INT64)
    if profile.forbid_double:
        forbidden.add(onnx.TensorProto.DOUBLE)
    for what, tensor in _constant_tensors(model):
        if tensor.data_type in forbidden:
            problems.append(f"{what} is {_dtype_name(tensor.data_type)}")

    inputs = _value_infos(model.graph.input)
    for inp in inputs:
        if not inp["shape"] or not isinstance(inp["shape"][0], str):
            problems.append(
                f"input {inp['name']!r} has no dynamic batch dimension (shape {inp['shape']})"
            )
    if problems:
        raise ProfileError(
            f"{path.name} does not fit target {profile.name!r}: " + "; ".join(problems)
        )
    return ModelFacts(
        opset=opset,
        ir_version=int(model.ir_version),
        operators=operators,
        inputs=inputs,
        outputs=_value_infos(model.graph.output),
        n_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def export_mlp(
    ckpt: MLPCheckpoint,
    path: str | os.PathLike[str],
    opset: int = 13,
    fp16: bool = False,
    dynamo: bool = False,
) -> Path:
    """Write the checkpoint's MLP to ``path`` as ONNX with a dynamic batch dimension.

    ``dynamo=False`` (the default) uses torch's TorchScript exporter, which honours ``opset``;
    where this torch no longer has it (it is deprecated since torch 2.9), the same graph --
    Gemm and Relu, Casts at the boundaries for fp16 -- is written with ``onnx.helper``
    (:func:`mlp_graph`). ``dynamo=True`` is available to show what the newer exporter writes.
    The file is written as is: check it with :func:`check_model`.
    """
    import inspect

    import torch

    from export.onnx.mlp import build_module

    module = build_module(ckpt, fp16=fp16)
    example = torch.zeros(2, ckpt.layer_sizes[0], dtype=torch.float32)
    path = Path(path)
    has_dynamo_switch = "dynamo" in inspect.signature(torch.onnx.export).parameters
    if dynamo and not has_dynamo_switch:
        raise ValueError(f"torch {torch.__version__} has no dynamo ONNX exporter")
    kwargs: dict[str, Any] = {}
    if has_dynamo_switch:
        kwargs["dynamo"] = dynamo
    if not dynamo:
        kwargs["dynamic_axes"] = {INPUT_NAME: {0: BATCH_DIM}, MLP_OUTPUT: {0: BATCH_DIM}}
    else:
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim(BATCH_DIM, min=1)},)
        kwargs["verbose"] = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, (example,), str(path), input_names=[INPUT_NAME],
                              output_names=[MLP_OUTPUT], opset_version=int(opset), **kwargs)
        except (TypeError, ValueError, RuntimeError, NotImplementedError, ImportError):
            if dynamo:
                raise
            from mark1.io import atomic_write_bytes

            atomic_write_bytes(path, mlp_graph(ckpt, opset, fp16).SerializeToString())
    return path


def mlp_graph(ckpt: MLPCheckpoint, opset: int = 13, fp16: bool = False) -> ModelProto:
    """The MLP as an ONNX model built with ``onnx.helper``: the graph the TorchScript exporter
    writes (Gemm with transposed weights, Relu -- or Clip for ReLU-n -- after the layers that
    have one; with ``fp16`` float16 initializers and a Cast at each boundary), for a torch that
    no longer has that exporter."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    dtype = np.float16 if fp16 else np.float32
    nodes, inits = [], []
    x = INPUT_NAME
    if fp16:
        nodes.append(helper.make_node("Cast", [x], ["image_fp16"], to=TensorProto.FLOAT16))
        x = "image_fp16"
    n_layers = len(ckpt.weights)
    for i, (w, b, (lo, hi)) in enumerate(zip(ckpt.weights, ckpt.biases, ckpt.clamps)):
        inits += [numpy_helper.from_array(np.asarray(w, dtype), f"layer{i}.weight"),
                  numpy_helper.from_array(np.asarray(b, dtype), f"layer{i}.bias")]
        last = i == n_layers - 1
        activated = (lo, hi) != LINEAR
        y = MLP_OUTPUT if last and not fp16 and not activated else f"gemm{i}"
        nodes.append(helper.make_node("Gemm", [x, f"layer{i}.weight", f"layer{i}.bias"], [y],
                                      transB=1))
        if activated:
            z = MLP_OUTPUT if last and not fp16 else f"act{i}"
            if (lo, hi) == RELU:
                nodes.append(helper.make_node("Relu", [y], [z]))
            else:  # ReLU-n as Clip(0, n)
                inits += [numpy_helper.from_array(np.asarray(lo, dtype), f"clip{i}.min"),
                          numpy_helper.from_array(np.asarray(hi, dtype), f"clip{i}.max")]
                nodes.append(helper.make_node("Clip", [y, f"clip{i}.min", f"clip{i}.max"], [z]))
            y = z
        x = y
    if fp16:
        nodes.append(helper.make_node("Cast", [x], [MLP_OUTPUT], to=TensorProto.FLOAT))
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT,
                                       [BATCH_DIM, ckpt.layer_sizes[0]])],
        [helper.make_tensor_value_info(MLP_OUTPUT, TensorProto.FLOAT,
                                       [BATCH_DIM, ckpt.layer_sizes[-1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", int(opset))],
                              producer_name="mark1-kit")
    model.ir_version = 7  # what the TorchScript exporter writes for opset 13
    onnx.checker.check_model(model)
    return model
