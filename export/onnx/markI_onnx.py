"""The trained Mark I machine (``machine.npz``) as an ONNX graph, built with ``onnx.helper``.

The graph computes the machine's steady-state, noise-free decision on retina images
(float32, (batch, 400), relative illuminance in [0, 1]):

1. S-units: ``s = image > cell_threshold`` (Greater, Cast)
2. plugboard: ``p = s @ plugboard.T`` (MatMul; whole numbers, exact in float16 and float32)
3. A-units: ``a = p >= a_threshold`` (GreaterOrEqual, Cast)
4. potentiometers: ``r = a @ weights.T + r_bias`` (MatMul, Add) -- output ``r_sum``
5. R-units: ``sign_out = +1 if r > 0 else -1`` (Greater, Where)
6. class decode: ``agree = sign_out @ codebook.T``; candidates are the classes with maximal
   agreement (ReduceMax, Equal); among them the largest ``codebook . r`` wins, remaining ties go
   to the lowest class index (MatMul, Where, ArgMax) -- outputs ``scores`` and ``class_index``.

Every operator is in opset 13 and in the TensorRT 8.2 parser's list. Thresholds are stored so
the float comparisons are exact: a cell threshold is rounded *down* to float32 (for float32
``x``, ``x > t`` is then the same as in float64) and clipped to [-1, 2] (the input range is
[0, 1]); an A-unit threshold is replaced by the whole number ``ceil(theta)`` clipped to the
sums the unit can reach.

``fp16=True`` stores the plugboard (400 x n_a, nearly all of the parameters) as float16 and runs
the plugboard MatMul in float16: its inputs are 0/1 and small whole numbers and its sums stay
below 2048 (checked), so float16 is exact there. The potentiometer weights stay float32: the
decision hangs on the signs of continuous sums near zero, and float16 weights (3 decimal digits)
flip some of them, which would break the rule that the export decides as the simulator does.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.onnx.onnx_export import BATCH_DIM, INPUT_NAME
from mark1.images import N_CELLS
from mark1.machine import FORMAT, FORMAT_VERSION

FP16_EXACT_WIRES = 2048
"""Most wires into one A-unit for which float16 plugboard sums are exact (2**11)."""


@dataclass
class MachineFile:
    """The arrays of a trained Mark I machine, as saved in ``machine.npz``."""

    cell_threshold: np.ndarray
    """float64 (400,): relative illuminance above which each S-unit fires (+-inf allowed)."""
    plugboard: np.ndarray
    """int8 (n_a, 400): net wiring count of each S-unit into each A-unit."""
    a_threshold: np.ndarray
    """float64 (n_a,): an A-unit fires iff plugboard @ s >= a_threshold."""
    weights: np.ndarray
    """float64 (n_r, n_a): A->R weights as read (noise-free)."""
    r_bias: np.ndarray
    """float64 (n_r,): R-unit bias; r = weights @ a + r_bias."""
    codebook: np.ndarray
    """int8 (n_classes, n_r) in {-1, +1}: the R-unit code of each class."""
    classes: list[str]
    """Class names."""
    task: str
    """Task the machine was trained on."""
    preset: str
    """Machine preset."""
    seed: int
    """Seed of the run."""

    @property
    def n_a(self) -> int:
        return int(self.plugboard.shape[0])

    @property
    def n_r(self) -> int:
        return int(self.weights.shape[0])

    def arrays(self) -> dict[str, Any]:
        """The machine file's arrays by name (as :func:`mark1.machine.load_machine` returns)."""
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "cell_threshold": self.cell_threshold, "plugboard": self.plugboard,
            "a_threshold": self.a_threshold, "weights": self.weights, "r_bias": self.r_bias,
            "codebook": self.codebook, "classes": np.array(self.classes), "task": self.task,
            "preset": self.preset, "seed": int(self.seed),
        }

    def decide(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The simulator's static decision: (class index (n,), R-unit sums (n, n_r)).

        Computed by :func:`mark1.machine.static_sums` and :func:`mark1.r_units.decode` (the
        noise-free path of ``MarkI.predict``); ``X`` is images in [0, 1], e.g. (n, 400).
        """
        from mark1.machine import static_sums
        from mark1.r_units import decode

        r = static_sums(self.arrays(), X)
        return decode(self.codebook, r), r


def load_machine_file(path: str | os.PathLike[str]) -> MachineFile:
    """Read a machine file with :func:`mark1.machine.load_machine` (which checks it)."""
    from mark1.machine import load_machine

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "machine file not found", str(path))
    try:
        arrays = load_machine(path)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ValueError(f"{path}: not a readable machine file ({exc})") from exc
    return MachineFile(
        cell_threshold=np.asarray(arrays["cell_threshold"], np.float64),
        plugboard=np.asarray(arrays["plugboard"], np.int8),
        a_threshold=np.asarray(arrays["a_threshold"], np.float64),
        weights=np.asarray(arrays["weights"], np.float64),
        r_bias=np.asarray(arrays["r_bias"], np.float64),
        codebook=np.asarray(arrays["codebook"], np.int8),
        classes=[str(c) for c in arrays["classes"]],
        task=str(arrays["task"]),
        preset=str(arrays["preset"]),
        seed=int(arrays["seed"]),
    )


def save_machine_file(m: MachineFile, path: str | os.PathLike[str]) -> Path:
    """Write ``m`` as a machine file (``numpy.savez``, no pickles), atomically."""
    from mark1.machine import save_machine

    return save_machine(path, m.arrays())


def _float32_floor(values: np.ndarray) -> np.ndarray:
    """The largest float32 not above each value (so ``x > t32`` equals ``x > t`` for float32 x)."""
    t32 = values.astype(np.float32)
    above = t32.astype(np.float64) > values
    t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
    return t32


def exact_thresholds(m: MachineFile) -> tuple[np.ndarray, np.ndarray]:
    """Cell and A-unit thresholds as the graph stores them (float32; see the module docstring)."""
    cell = _float32_floor(np.clip(m.cell_threshold, -1.0, 2.0))
    plug = m.plugboard.astype(np.int64)
    lowest = np.minimum(plug, 0).sum(axis=1)
    highest = np.maximum(plug, 0).sum(axis=1)
    a_thr = np.clip(np.ceil(np.clip(m.a_threshold, lowest - 1, highest + 1)), lowest, highest + 1)
    return cell, a_thr.astype(np.float32)


def build_markI_model(m: MachineFile, opset: int = 13, fp16: bool = False) -> Any:  # noqa: N802
    """The machine's decision as an ``onnx.ModelProto`` (dynamic batch, see module docstring)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if fp16 and int(np.abs(m.plugboard.astype(np.int64)).sum(axis=1).max()) > FP16_EXACT_WIRES:
        raise ValueError(
            f"an A-unit has more than {FP16_EXACT_WIRES} plugboard wires: its sums would not be "
            "exact in float16; export in fp32"
        )
    plug_dtype = np.float16 if fp16 else np.float32
    plug_type = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    cell, a_thr = exact_thresholds(m)
    code_t = m.codebook.T.astype(np.float32)
    inits = {
        "cell_threshold": cell,
        "plugboard_t": m.plugboard.T.astype(plug_dtype),
        "a_threshold": a_thr,
        "weights_t": m.weights.T.astype(np.float32),
        "r_bias": m.r_bias.astype(np.float32),
        "codebook_t": code_t,
        "zero": np.array(0.0, np.float32),
        "plus_one": np.array(1.0, np.float32),
        "minus_one": np.array(-1.0, np.float32),
        "lowest": np.array(np.finfo(np.float32).min, np.float32),
    }
    node = helper.make_node
    nodes = [
        node("Greater", [INPUT_NAME, "cell_threshold"], ["s_on"], name="s_units"),
        node("Cast", ["s_on"], ["s"], to=plug_type, name="s_as_number"),
        node("MatMul", ["s", "plugboard_t"], ["plug_sum_h"], name="plugboard"),
    ]
    plug_sum = "plug_sum_h"
    if fp16:
        nodes.append(node("Cast", ["plug_sum_h"], ["plug_sum"], to=TensorProto.FLOAT))
        plug_sum = "plug_sum"
    nodes += [
        node("GreaterOrEqual", [plug_sum, "a_threshold"], ["a_on"], name="a_units"),
        node("Cast", ["a_on"], ["a"], to=TensorProto.FLOAT, name="a_as_number"),
        node("MatMul", ["a", "weights_t"], ["r_weighted"], name="potentiometers"),
        node("Add", ["r_weighted", "r_bias"], ["r_sum"], name="bias"),
        node("Greater", ["r_sum", "zero"], ["r_on"], name="r_units"),
        node("Where", ["r_on", "plus_one", "minus_one"], ["sign_out"], name="r_sign"),
        node("MatMul", ["sign_out", "codebook_t"], ["agree"], name="code_agreement"),
        node("ReduceMax", ["agree"], ["best_agree"], axes=[1], keepdims=1, name="best"),
        node("Equal", ["agree", "best_agree"], ["candidate"], name="candidates"),
        node("MatMul", ["r_sum", "codebook_t"], ["code_sum"], name="code_sums"),
        node("Where", ["candidate", "code_sum", "lowest"], ["scores"], name="decision_scores"),
        node("ArgMax", ["scores"], ["class_index"], axis=1, keepdims=0, name="decision"),
    ]
    n_classes = len(m.classes)
    graph = helper.make_graph(
        nodes,
        "mark1_markI",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, N_CELLS])],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [BATCH_DIM, n_classes]),
            helper.make_tensor_value_info("class_index", TensorProto.INT64, [BATCH_DIM]),
            helper.make_tensor_value_info("r_sum", TensorProto.FLOAT, [BATCH_DIM, m.n_r]),
        ],
        initializer=[numpy_helper.from_array(v, name=k) for k, v in inits.items()],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", int(opset))],
        producer_name="mark1-kit",
        doc_string=f"Mark I perceptron ({m.preset}, task {m.task}, seed {m.seed}), noise-free",
    )
    model.ir_version = 7 if opset <= 13 else 8
    onnx.checker.check_model(model)
    return model
