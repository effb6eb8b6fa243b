"""An MLP read from an ONNX graph, whichever converter wrote it (skl2onnx, torch.onnx, ...).

The graph is walked from its one input along the data path:

* **at the input**: ``Flatten`` (axis 1) and ``Reshape`` to (batch, features); ``Add``, ``Sub``,
  ``Mul``, ``Div`` by a constant (an input normalisation, folded into the first layer; after a
  layer, before its activation, the same fold into that layer);
* **layers**: ``Gemm`` (any ``alpha``, ``beta``, ``transB``), ``MatMul`` with a constant
  weight, followed by ``Add`` of a constant bias or not; ``BatchNormalization`` after a layer
  (folded into it);
* **after a layer**: ``Relu``; ``Clip`` with min 0 (ReLU6 and other ReLU-n: the int8 layer's
  range ends at n, so its saturation is the clip);
* **anywhere**: ``Identity``, ``Dropout`` (inference), ``Cast`` to a float type;
* **at the output**: ``Softmax``, ``LogSoftmax``, ``Sigmoid`` (dropped: the class is the argmax of
  the logits either way) and what converters add after them to report the class -- ``ArgMax``,
  skl2onnx's label path (``ArrayFeatureExtractor``, ``Reshape``, ``Cast``), its ``ZipMap`` and
  the two-column probabilities of a binary classifier (``Sub``, ``Concat``): dropped too.

Constant subgraphs (a ``Transpose`` of a weight, a ``Constant`` node, shape arithmetic on
constants and on the input's shape, :data:`BATCH`) are computed first with ``onnx.reference``.
Every other node is refused, naming its operator and name. Class labels come from skl2onnx's
``ZipMap`` or ``ArrayFeatureExtractor`` where present.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from export.onnx.checkpoint import MLPCheckpoint
from export.sources.steps import (
    Activation,
    Affine,
    Dense,
    Head,
    Step,
    UnsupportedModel,
    assemble,
    batch_norm,
)

if TYPE_CHECKING:  # onnx and onnxruntime are imported when a graph is read or run
    from onnx import ModelProto, NodeProto
    from onnxruntime import InferenceSession

SUPPORTED = (
    "Gemm, MatMul (+Add), Relu, Clip(0, n), BatchNormalization or constant Add/Sub/Mul/Div "
    "(folded into a layer), Identity, Dropout, Cast, Flatten/Reshape at the input, "
    "Softmax/LogSoftmax/Sigmoid/ArgMax at the output"
)
"""What the reader takes, for messages."""

PASS_THROUGH = frozenset({"Identity", "Dropout", "Cast"})
HEADS = frozenset({"Softmax", "LogSoftmax", "Sigmoid"})
REPORTING = frozenset({
    "Softmax", "LogSoftmax", "Sigmoid", "ArgMax", "ZipMap", "ArrayFeatureExtractor", "Cast",
    "Reshape", "Identity", "Flatten", "Squeeze", "Unsqueeze", "Sub", "Concat",
})
"""Operators allowed downstream of the logits, where converters report the class."""
SHAPE_QUERIES = frozenset({"Shape", "Size"})
NO_FOLD = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                     "Multinomial", "Bernoulli", "If", "Loop", "Scan"})
FLOAT_TYPES = frozenset({1, 10, 11, 16})
"""ONNX element types FLOAT, FLOAT16, DOUBLE, BFLOAT16."""
BATCH = -(2**40) - 17
"""Stands for the batch size where ``Shape`` of the input is computed with (``x.view(x.size(0),
-1)`` exports as Shape, Gather, Unsqueeze, Concat, Reshape): no real dimension has this value,
so a Reshape target holding it first flattens each input."""


@dataclass
class OnnxMLP:
    """What the reader found in a graph."""

    model: ModelProto
    """The graph as read."""
    mlp: MLPCheckpoint
    """The MLP it computes."""
    input_name: str
    input_dtype: np.dtype
    input_shape: tuple[int, ...]
    """Shape of one input (the batch dimension removed)."""
    logits: str
    """Name of the tensor holding the last layer's outputs."""
    scores: str
    """Name of the tensor the graph's own class decision is taken from (the argmax input, or
    the output function's output, or the logits)."""
    dropped_outputs: list[str] = field(default_factory=list)
    """Graph outputs that report the class rather than compute it."""
    flattening: list[str] = field(default_factory=list)
    """Names of the Flatten and Reshape nodes that flatten each input (by their output)."""
    threshold: float = 0.0
    """A one-column class output's class is whether it is above this: 0 for a logit, 0.5 for
    a Sigmoid's output."""
    notes: list[str] = field(default_factory=list)
    producer: str = ""


def _node_name(node: NodeProto) -> str:
    return f"node {node.name or node.output[0]!r} ({node.op_type})"


def _refuse(node: NodeProto, why: str) -> UnsupportedModel:
    return UnsupportedModel(f"{_node_name(node)} {why}; the int8 engine runs MLPs of "
                            f"{SUPPORTED}")


def _attr(node: NodeProto, name: str) -> Any:
    """The value of a node's attribute, or ``None`` (``onnx.helper`` decodes it: a number, a
    list, a tensor, ...)."""
    from onnx import helper

    found = [a for a in node.attribute if a.name == name]
    return helper.get_attribute_value(found[0]) if found else None


def _number(node: NodeProto, name: str, default: float) -> float:
    value = _attr(node, name)
    return float(default if value is None else value)


def _constant_value(node: NodeProto) -> np.ndarray:
    from onnx import numpy_helper

    for a in node.attribute:
        value = _attr(node, a.name)
        if a.name == "value":
            return numpy_helper.to_array(value)
        if a.name in ("value_float", "value_floats"):
            return np.asarray(value, np.float32)
        if a.name in ("value_int", "value_ints"):
            return np.asarray(value, np.int64)
    raise _refuse(node, "holds no tensor value")


def _fold(node: NodeProto, values: list[np.ndarray], opset: int) -> list[np.ndarray] | None:
    """The outputs of a node whose inputs are all constant, by ``onnx.reference``; ``None``
    where it cannot be computed."""
    from onnx.reference import ReferenceEvaluator

    names = [n for n in node.input if n]
    try:
        run = ReferenceEvaluator(node, opsets={"": opset})
        return [np.asarray(v) for v in run.run(None, dict(zip(names, values)))]
    except Exception:  # noqa: BLE001 - any failure means: not a constant we can compute
        return None


class _Graph:
    """Constants, consumers and the data input of a graph."""

    def __init__(self, model: ModelProto) -> None:
        from onnx import numpy_helper

        graph = model.graph
        self.opset = next((int(o.version) for o in model.opset_import
                           if o.domain in ("", "ai.onnx")), 0)
        self.const: dict[str, np.ndarray] = {
            t.name: numpy_helper.to_array(t) for t in graph.initializer}
        inputs = [i for i in graph.input if i.name not in self.const]
        if len(inputs) != 1:
            names = ", ".join(repr(i.name) for i in inputs)
            raise UnsupportedModel(f"the graph has {len(inputs)} inputs ({names}); an MLP has "
                                   "one")
        self.input = inputs[0]
        dims = self.input.type.tensor_type.shape.dim
        self.input_shape = [BATCH] + [int(d.dim_value) for d in dims[1:]] \
            if dims and all(d.HasField("dim_value") for d in dims[1:]) else None
        self.outputs = [o.name for o in graph.output]
        self.folded: set[int] = set()
        self.nodes = list(graph.node)
        for k, node in enumerate(self.nodes):
            self._try_fold(k, node)
        self.users: dict[str, list[int]] = {}
        for k, node in enumerate(self.nodes):
            if k not in self.folded:
                for name in node.input:
                    self.users.setdefault(name, []).append(k)

    def _try_fold(self, k: int, node: NodeProto) -> None:
        if node.op_type == "Constant":
            self.const[node.output[0]] = _constant_value(node)
            self.folded.add(k)
            return
        if node.op_type == "Shape" and node.input[0] == self.input.name and \
                self.input_shape is not None:
            start, end = int(_number(node, "start", 0)), _attr(node, "end")
            self.const[node.output[0]] = np.array(self.input_shape[start:end], np.int64)
            self.folded.add(k)
            return
        if node.op_type in NO_FOLD or node.domain not in ("", "ai.onnx"):
            return
        names = [n for n in node.input if n]
        if not names or any(n not in self.const for n in names):
            return
        values = _fold(node, [self.const[n] for n in names], self.opset)
        if values is not None:
            self.const.update(zip(node.output, values))
            self.folded.add(k)

    def data_users(self, name: str) -> list[NodeProto]:
        """Nodes that read ``name`` as data (shape queries excluded)."""
        return [self.nodes[k] for k in self.users.get(name, [])
                if self.nodes[k].op_type not in SHAPE_QUERIES]

    def constant(self, node: NodeProto, index: int, what: str) -> np.ndarray:
        name = node.input[index] if index < len(node.input) else ""
        if not name or name not in self.const:
            raise _refuse(node, f"takes a {what} that is not a constant")
        return np.asarray(self.const[name])

    def other_input(self, node: NodeProto, name: str) -> tuple[int, np.ndarray]:
        """The index and value of a binary node's constant operand (the other is ``name``)."""
        if len(node.input) != 2 or name not in node.input:
            raise _refuse(node, "is not a binary operation on the data")
        k = 1 - list(node.input).index(name)
        return k, self.constant(node, k, "second operand")


def _input_shape(graph: _Graph) -> tuple[np.dtype, tuple[int, ...]]:
    from onnx import helper

    t = graph.input.type.tensor_type
    where = f"input {graph.input.name!r}"
    if not graph.input.type.HasField("tensor_type") or t.elem_type not in FLOAT_TYPES:
        raise UnsupportedModel(f"{where} is not a float tensor; an MLP takes float features")
    dims = list(t.shape.dim)
    if len(dims) < 2:
        raise UnsupportedModel(f"{where} has rank {len(dims)}; expected a batch dimension first, "
                               "then the features")
    shape = []
    for d in dims[1:]:
        if not d.HasField("dim_value") or d.dim_value < 1:
            raise UnsupportedModel(f"{where} has a dimension that is not fixed "
                                   f"({d.dim_param or '?'}); each input must have one size")
        shape.append(int(d.dim_value))
    return np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)), tuple(shape)


def _fixed_batch(graph: _Graph) -> int | None:
    d = graph.input.type.tensor_type.shape.dim[0]
    return int(d.dim_value) if d.HasField("dim_value") else None


def _flattens(graph: _Graph, node: NodeProto, shape: tuple[int, ...]) -> bool:
    """Whether a Flatten or Reshape node turns (batch, *shape) into (batch, prod(shape))."""
    n = math.prod(shape)
    if node.op_type == "Flatten":
        return _number(node, "axis", 1) == 1
    target = [int(v) for v in graph.constant(node, 1, "target shape").ravel()]
    batch = _fixed_batch(graph)
    return (len(target) == 2 and target[1] in (n, -1)
            and (target[0] in (-1, 0, BATCH) or (batch is not None and target[0] == batch))
            and not (target[0] == -1 and target[1] == -1))


def _cast_is_float(node: NodeProto) -> bool:
    return int(_number(node, "to", 0)) in FLOAT_TYPES


def _input_affine(graph: _Graph, node: NodeProto, name: str, shape: tuple[int, ...]) -> Affine:
    k, c = graph.other_input(node, name)
    item = np.broadcast_to(c.astype(np.float64), (1, *shape)) if c.ndim <= len(shape) + 1 \
        else None
    if item is None or not np.isfinite(item).all():
        raise _refuse(node, f"takes a constant of shape {c.shape} that does not broadcast over "
                      f"one input {shape}")
    flat = item.reshape(-1)
    op, where = node.op_type, _node_name(node)
    if op == "Add":
        return Affine(np.ones_like(flat), flat, where)
    if op == "Sub":
        return Affine(np.ones_like(flat), -flat, where) if k == 1 else \
            Affine(-np.ones_like(flat), flat, where)
    if op == "Mul":
        return Affine(flat, np.zeros_like(flat), where)
    if k != 1 or (flat == 0).any():  # Div: only x / c
        raise _refuse(node, "divides by the data")
    return Affine(1.0 / flat, np.zeros_like(flat), where)


def _dense(graph: _Graph, node: NodeProto, name: str) -> tuple[Dense, NodeProto]:
    """A Gemm or a MatMul on the data, and the node."""
    if node.op_type == "Gemm":
        if list(node.input).index(name) != 0 or _number(node, "transA", 0):
            raise _refuse(node, "multiplies the data from the right")
        w = graph.constant(node, 1, "weight").astype(np.float64)
        w = (w if _number(node, "transB", 0) else w.T) * _number(node, "alpha", 1.0)
        if len(node.input) > 2 and node.input[2]:
            c = graph.constant(node, 2, "bias").astype(np.float64) * _number(node, "beta", 1.0)
            bias = np.broadcast_to(c, (1, w.shape[0])).ravel() if c.size in (1, w.shape[0]) \
                else None
            if bias is None:
                raise _refuse(node, f"adds a bias of shape {c.shape} to {w.shape[0]} outputs")
        else:
            bias = np.zeros(w.shape[0])
        return Dense(w, np.array(bias), _node_name(node)), node
    if list(node.input).index(name) != 0:
        raise _refuse(node, "multiplies the data from the right")
    w = graph.constant(node, 1, "weight").astype(np.float64)
    if w.ndim != 2:
        raise _refuse(node, f"has a weight of shape {w.shape}; a layer's weight is 2-D")
    # the Add of a bias that usually follows is an affine step, folded in by ``assemble``
    return Dense(w.T.copy(), np.zeros(w.shape[1]), _node_name(node)), node


def _clip(graph: _Graph, node: NodeProto) -> Activation:
    if graph.opset < 11:
        lo, hi = _number(node, "min", -math.inf), _number(node, "max", math.inf)
    else:
        lo = float(graph.constant(node, 1, "min")) if len(node.input) > 1 and node.input[1] \
            else -math.inf
        hi = float(graph.constant(node, 2, "max")) if len(node.input) > 2 and node.input[2] \
            else math.inf
    return Activation(lo, hi, _node_name(node))


def _batch_norm(graph: _Graph, node: NodeProto) -> Affine:
    if _number(node, "training_mode", 0):
        raise _refuse(node, "runs in training mode")
    s, b, m, v = (graph.constant(node, i, what) for i, what in
                  ((1, "scale"), (2, "bias"), (3, "mean"), (4, "variance")))
    return batch_norm(s, b, m, v, _number(node, "epsilon", 1e-5), _node_name(node))


def steps_width(steps: list[Step]) -> int:
    """Outputs of the last layer among ``steps``."""
    return next(int(s.weight.shape[0]) for s in reversed(steps) if isinstance(s, Dense))


def _walk(graph: _Graph) -> tuple[list[Step], str, list[str], set[int]]:
    """The steps along the data path; the logits tensor; the flattening nodes (their
    outputs); the nodes used."""
    name = graph.input.name
    _, shape = _input_shape(graph)
    flat = len(shape) == 1
    steps: list[Step] = []
    used: set[int] = set()
    index = {id(n): k for k, n in enumerate(graph.nodes)}
    layers = 0
    flattening: list[str] = []
    while True:
        users = graph.data_users(name)
        if not users:
            break
        at_output = layers > 0 and (len(users) > 1 or users[0].op_type in HEADS | {"ArgMax",
                                                                                    "ZipMap"})
        if at_output:
            break
        if len(users) > 1:
            raise _refuse(users[1], f"also reads {name!r}: the data path branches")
        node = users[0]
        op = node.op_type
        if node.domain not in ("", "ai.onnx"):
            raise _refuse(node, f"is an operator of domain {node.domain!r}")
        used.add(index[id(node)])
        if op in PASS_THROUGH:
            if op == "Cast" and not _cast_is_float(node):
                raise _refuse(node, "casts the data to a type that is not a float")
            if op == "Dropout" and len(node.input) > 2 and node.input[2] and \
                    bool(graph.constant(node, 2, "training mode").ravel()[0]):
                raise _refuse(node, "runs in training mode")
        elif op in ("Flatten", "Reshape") and _flattens(graph, node, shape if not flat else
                                                       (math.prod(shape),)):
            flat = True
            flattening.append(node.output[0])
        elif op in ("Add", "Sub", "Mul", "Div"):
            steps.append(_input_affine(graph, node, name, shape if layers == 0 else
                                       (steps_width(steps),)))
        elif op in ("Gemm", "MatMul"):
            if not flat:
                raise _refuse(node, f"multiplies an input of shape {shape} before it is "
                              "flattened")
            dense, node = _dense(graph, node, name)
            used.add(index[id(node)])
            steps.append(dense)
            layers += 1
        elif op == "Relu" and layers:
            steps.append(Activation(0.0, math.inf, _node_name(node)))
        elif op == "Clip" and layers:
            steps.append(_clip(graph, node))
        elif op == "BatchNormalization" and layers:
            steps.append(_batch_norm(graph, node))
        else:
            raise _refuse(node, "is not part of an MLP" if op not in ("Flatten", "Reshape") else
                          f"reshapes the data (from {shape}) other than flattening each input")
        name = node.output[0]
    if not layers:
        raise UnsupportedModel(f"no Gemm or MatMul layer on the data path; the int8 engine "
                               f"runs MLPs of {SUPPORTED}")
    return steps, name, flattening, used


def _reporting(graph: _Graph, logits: str, used: set[int]
               ) -> tuple[list[Step], str, list[str] | None, set[int]]:
    """The nodes downstream of the logits: every one must report the class. Returns the head
    step (if any), the scores tensor, the class labels found and the nodes visited."""
    steps: list[Step] = []
    labels: list[str] | None = None
    scores = logits
    seen: set[int] = set()
    frontier = [logits]
    head_done = False
    while frontier:
        tensor = frontier.pop()
        for k in graph.users.get(tensor, []):
            if k in seen or k in used:
                continue
            node = graph.nodes[k]
            seen.add(k)
            if node.op_type not in REPORTING:
                raise _refuse(node, f"follows the last layer ({logits!r}) and changes which "
                              "class wins")
            if node.op_type in HEADS and tensor == logits and not head_done:
                steps.append(Head(node.op_type, _node_name(node)))
                head_done = True
                scores = node.output[0]
            elif node.op_type in HEADS and tensor != logits:
                raise _refuse(node, "applies an output function twice")
            if node.op_type == "ArgMax":
                scores = node.input[0]
            if node.op_type == "ZipMap":
                found = _attr(node, "classlabels_strings") or _attr(node, "classlabels_int64s")
                if found:
                    labels = [v.decode() if isinstance(v, bytes) else str(v) for v in found]
            if node.op_type == "ArrayFeatureExtractor" and node.input[0] in graph.const \
                    and labels is None:
                labels = [v.decode() if isinstance(v, bytes) else str(v)
                          for v in graph.const[node.input[0]].ravel()]
            if node.op_type == "ArrayFeatureExtractor" and node.input[0] in graph.outputs:
                raise _refuse(node, "reads from a graph output")
            frontier.extend(node.output)
    return steps, scores, labels, seen


def read_onnx_mlp(path: str | os.PathLike[str]) -> OnnxMLP:
    """Read the ONNX file at ``path`` as an MLP; ``UnsupportedModel`` (a ``ValueError``) names
    the first node the int8 engine cannot run exactly."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    where = f"{path} (ONNX)"
    try:
        model = onnx.load_model(str(path))
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise ValueError(f"{path} is not a readable ONNX file ({exc})") from exc
    if not model.graph.node:
        raise ValueError(f"{path} is not an ONNX model with a graph")
    try:
        graph = _Graph(model)
        dtype, shape = _input_shape(graph)
        steps, logits, flattening, used = _walk(graph)
        head, scores, labels, reporting = _reporting(graph, logits, used)
        steps += head
        for k, node in enumerate(graph.nodes):  # nodes off the path must be shape arithmetic
            if k in used | reporting | graph.folded or node.op_type in SHAPE_QUERIES:
                continue
            if any(o in graph.outputs for o in node.output) or graph.input.name in node.input:
                raise _refuse(node, "is off the MLP's data path")
        try:
            mlp, notes = assemble(steps, shape, labels)
        except UnsupportedModel as exc:
            raise UnsupportedModel(f"{exc}; the int8 engine runs MLPs of {SUPPORTED}") from exc
    except UnsupportedModel as exc:
        raise exc.at(where) from exc
    dropped = [o for o in graph.outputs if o not in (logits, scores)]
    if dropped:
        notes.append(f"outputs {', '.join(repr(o) for o in dropped)} report the class and are "
                     f"left out: the class is the argmax of {scores!r}")
    producer = " ".join(p for p in (model.producer_name, model.producer_version) if p)
    sigmoid = any(isinstance(s, Head) and s.op == "Sigmoid" for s in head) and scores != logits
    return OnnxMLP(model, mlp, graph.input.name, dtype, shape, logits, scores, dropped,
                   flattening, 0.5 if sigmoid else 0.0, notes, producer)


def cut_graph(model: ModelProto, outputs: list[str]) -> ModelProto:
    """The part of ``model`` that computes ``outputs`` from its inputs, as a model whose graph
    outputs are exactly those tensors (types and shapes from shape inference)."""
    import onnx
    from onnx import helper

    graph = model.graph
    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
        infos = {v.name: v for v in list(inferred.value_info) + list(inferred.output)}
    except (onnx.shape_inference.InferenceError, RuntimeError):
        infos = {}
    infos.update({v.name: v for v in graph.output})
    needed, keep = set(outputs), []
    for node in reversed(graph.node):
        if needed & set(node.output):
            keep.append(node)
            needed.update(n for n in node.input if n)
    keep.reverse()
    outs = [infos[o] if o in infos else helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT,
                                                                      None) for o in outputs]
    new_graph = helper.make_graph(
        keep, graph.name, [i for i in graph.input if i.name in needed], outs,
        [t for t in graph.initializer if t.name in needed],
    )
    domains = {n.domain for n in keep}
    opsets = [o for o in model.opset_import if o.domain in ("", "ai.onnx") or o.domain in domains]
    cut = helper.make_model(new_graph, opset_imports=opsets, producer_name=model.producer_name,
                            producer_version=model.producer_version)
    cut.ir_version = model.ir_version
    return cut


def onnx_runner(onnx_mlp: OnnxMLP, outputs: list[str]
                ) -> Callable[[np.ndarray], list[np.ndarray]]:
    """A function running the graph in onnxruntime on inputs (n, *input_shape) or (n, n_in),
    returning the named tensors. A graph exported with a fixed batch size runs batch by batch
    (the last one padded)."""
    from export.onnx.parity import onnx_session

    sessions: list[InferenceSession] = []  # made on the first call
    shape, dtype, name = onnx_mlp.input_shape, onnx_mlp.input_dtype, onnx_mlp.input_name
    dim = onnx_mlp.model.graph.input
    batch = next((int(i.type.tensor_type.shape.dim[0].dim_value) for i in dim if i.name == name
                  and i.type.tensor_type.shape.dim[0].HasField("dim_value")), 0)

    def run(x: np.ndarray) -> list[np.ndarray]:
        if not sessions:
            sessions.append(onnx_session(cut_graph(onnx_mlp.model, outputs).SerializeToString()))
        session = sessions[0]
        x = np.ascontiguousarray(np.asarray(x).reshape(len(x), *shape), dtype=dtype)
        if not batch:
            return [np.asarray(v) for v in session.run(outputs, {name: x})]
        parts = []
        for lo in range(0, len(x), batch):
            chunk = x[lo : lo + batch]
            padded = np.concatenate([chunk, np.zeros((batch - len(chunk), *shape), dtype)])
            parts.append([np.asarray(v)[: len(chunk)]
                          for v in session.run(outputs, {name: padded})])
        return [np.concatenate([p[i] for p in parts]) for i in range(len(outputs))]

    return run
