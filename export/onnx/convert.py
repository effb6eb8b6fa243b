"""An ONNX MLP made elsewhere, converted for a target profile -- the user's own graph, not a
rebuilt one.

:func:`graph_for_target` takes what :func:`export.sources.onnx_mlp.read_onnx_mlp` found and:

1. **cuts** the graph after the tensor its class is taken from (the argmax input: logits or
   probabilities), leaving out the outputs that only report the class (skl2onnx's label and
   ``ZipMap``, which no TensorRT parser reads);
2. turns a ``Reshape`` that flattens each input into ``Flatten`` (no int64 shape constant, and
   no batch size baked into one), and names the batch dimension of the input and output
   ``batch`` (dynamic) where it was unnamed or fixed;
3. lowers the **opset** to the target's highest where the file's is above it: with
   ``onnx.version_converter`` where it has the adapters; where it has none (it lacks most
   down-conversions, e.g. ``Relu`` 14 -> 13), by relabelling the opset when every operator
   of the graph is defined at the lower opset with the same inputs and attributes --
   ``onnx.checker`` (full check) proves the signatures, and the export's parity run the values;
   a ``Reshape``'s ``allowzero`` is dropped where its shape holds no 0 (where it means nothing);
   operators whose meaning changed in between (``Softmax``, ``LogSoftmax``, ``Hardmax`` at 13)
   are refused when the target is below the change;
4. lowers the **IR version** to the target's highest where the file's is above it, when the
   graph uses nothing newer (local functions need IR 8, float8 types 9, int4 types 10; node
   and value metadata, informational, is dropped below 10).

Whatever it cannot convert it refuses with :class:`export.onnx.onnx_export.ProfileError`
naming the operator or feature; the written file is then checked against the profile as every
export is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from export.onnx.onnx_export import BATCH_DIM, ProfileError
from export.onnx.profiles import TargetProfile

if TYPE_CHECKING:  # onnx is imported when used
    from onnx import ModelProto

    from export.sources.onnx_mlp import OnnxMLP

SEMANTICS_CHANGED: dict[str, int] = {"Softmax": 13, "LogSoftmax": 13, "Hardmax": 13}
"""Operators whose computation (not only their types) changed at an opset: relabelling across
that opset would change what the graph computes."""
NEWER_TYPES: dict[int, int] = {17: 9, 18: 9, 19: 9, 20: 9, 21: 10, 22: 10, 23: 11}
"""ONNX element type -> the IR version that introduced it (float8 kinds, int4/uint4, float4)."""


def graph_for_target(found: OnnxMLP, profile: TargetProfile) -> tuple[ModelProto, list[str]]:
    """The user's graph made to fit ``profile`` where a faithful conversion exists, and notes
    on what was done (see the module docstring)."""
    from export.sources.onnx_mlp import cut_graph

    notes: list[str] = []
    model = cut_graph(found.model, [found.scores])  # found.notes name what it leaves out
    model = _flatten_nodes(model, found.flattening, notes)
    model = cut_graph(model, [found.scores])  # drops the shape constants no longer used
    _dynamic_batch(model, notes)
    opset = _opset(model)
    if opset > profile.max_opset:
        model = convert_opset(model, profile.max_opset, notes)
    if model.ir_version > profile.max_ir_version:
        lower_ir(model, profile.max_ir_version, notes)
    return model, notes


def _opset(model: ModelProto) -> int:
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _flatten_nodes(model: ModelProto, flattening: list[str], notes: list[str]) -> ModelProto:
    from onnx import helper

    for k, node in enumerate(model.graph.node):
        if node.op_type == "Reshape" and node.output[0] in flattening:
            flat = helper.make_node("Flatten", [node.input[0]], list(node.output), axis=1,
                                    name=node.name)
            model.graph.node.remove(node)
            model.graph.node.insert(k, flat)
            notes.append(f"Reshape {node.name or node.output[0]!r} flattening each input "
                         "written as Flatten")
    return model


def _dynamic_batch(model: ModelProto, notes: list[str]) -> None:
    """Name the first dimension of the input and output ``batch`` where it is unnamed or a
    fixed size (no node depends on it once flattening is a Flatten)."""
    changed = []
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].dim_param:
            was = str(dims[0].dim_value) if dims[0].HasField("dim_value") else "unnamed"
            dims[0].dim_param = BATCH_DIM
            changed.append(f"{value.name!r} ({was})")
    if changed:
        del model.graph.value_info[:]  # intermediate shapes may hold the old batch size
        notes.append(f"batch dimension of {', '.join(changed)} named {BATCH_DIM!r} (dynamic)")


def convert_opset(model: ModelProto, target: int, notes: list[str]) -> ModelProto:
    """``model`` at ai.onnx opset ``target`` (see the module docstring); ``ProfileError``
    naming what cannot be converted."""
    import onnx
    from onnx import version_converter

    source = _opset(model)
    try:
        converted = version_converter.convert_version(model, target)
        onnx.checker.check_model(converted, full_check=True)
        notes.append(f"opset {source} -> {target} by onnx.version_converter")
        return converted
    except (RuntimeError, ValueError, onnx.checker.ValidationError,
            onnx.shape_inference.InferenceError) as exc:
        why = " ".join(str(exc).replace("$", "").split())
        missing = why.rsplit("No Adapter", 1)[-1].strip(" .") if "No Adapter" in why else why
    relabelled = _relabel(model, source, target)
    notes.append(f"opset {source} -> {target}: onnx.version_converter has no adapter "
                 f"({missing[:80]}); every operator is defined at opset {target} with the same "
                 "inputs and attributes (onnx.checker), so the opset was relabelled")
    return relabelled


def _relabel(model: ModelProto, source: int, target: int) -> ModelProto:
    import onnx
    from onnx import defs, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    consts = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    for node in out.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        where = f"node {node.name or node.output[0]!r} ({node.op_type})"
        changed = SEMANTICS_CHANGED.get(node.op_type)
        if changed is not None and target < changed <= source:
            raise ProfileError(f"{where}: {node.op_type} computes differently below opset "
                               f"{changed}; the target takes opset {target}")
        try:
            defs.get_schema(node.op_type, target, "")
        except defs.SchemaError:
            raise ProfileError(f"{where} does not exist at opset {target}") from None
        if node.op_type == "Reshape":
            for attr in list(node.attribute):
                shape = consts.get(node.input[1]) if len(node.input) > 1 else None
                if attr.name == "allowzero" and shape is not None and not (shape == 0).any():
                    node.attribute.remove(attr)  # only a 0 in the shape depends on it
    for entry in out.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = target
    try:
        onnx.checker.check_model(out, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ProfileError(f"opset {source} cannot be lowered to {target}: at opset {target} "
                           f"the graph is invalid ({first})") from exc
    return out


def lower_ir(model: ModelProto, target: int, notes: list[str]) -> None:
    """Set ``model``'s IR version to ``target`` in place when nothing in it needs a newer one;
    ``ProfileError`` naming what does."""
    import onnx
    from onnx import helper

    opset = _opset(model)
    needed = min((row[1] for row in helper.VERSION_TABLE if row[2] >= opset), default=99)
    if model.functions:
        needed = max(needed, 8)
    types = [t.data_type for t in model.graph.initializer] + [
        v.type.tensor_type.elem_type for v in list(model.graph.input) + list(model.graph.output)
        + list(model.graph.value_info)]
    for elem in types:
        needed = max(needed, NEWER_TYPES.get(int(elem), 0))
    if needed > target:
        raise ProfileError(f"IR version {model.ir_version} cannot be lowered to {target}: the "
                           f"graph needs IR {needed} (opset {opset}, its types or functions)")
    if target < 10:
        for item in list(model.graph.node) + list(model.graph.input) + list(
                model.graph.output) + list(model.graph.value_info):
            del item.metadata_props[:]
        del model.graph.metadata_props[:]
    was = model.ir_version
    model.ir_version = target
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ProfileError(f"IR version {was} cannot be lowered to {target} ({first})") from exc
    notes.append(f"IR version {was} -> {target}")
