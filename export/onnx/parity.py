"""Parity: an exported ONNX model run in onnxruntime against its reference, on real inputs.

MLP: the reference is the checkpoint's float32 torch module (or, for an ONNX graph made
elsewhere, that graph in onnxruntime). The bound on the logits of each input ``i`` is relative
to their magnitude::

    max_k |got[i, k] - ref[i, k]|  <=  atol + rtol * max_k |ref[i, k]|

fp32: ``atol = 1e-5``, ``rtol = 2**-18`` (32 float32 steps of 1.0, about 3.8e-6): two float32
sums of the same products in another order differ by a few steps of their magnitude, so logits
near 34 may differ by 1.2e-5 (3 steps) and pass, where an absolute 1e-5 refused them. Every
input must keep its class, except where the reference's two best logits are within twice the
bound of each other (a tie the bound cannot decide; counted as ``n_near_ties``). fp16:
``atol = 1e-2``, ``rtol = 0`` -- kept absolute on purpose: it checks that float16 resolves the
logits at all (at 127 its steps are 0.06, and such a model is refused with that reason) -- and
the same class on >= 99.5 % of inputs.

Mark I: the reference is the simulator's static, noise-free decision from the machine file's
arrays (:meth:`export.onnx.markI_onnx.MachineFile.decide`, the path of ``MarkI.predict``): the same
class on every input, fp32 or fp16 (the fp16 graph keeps float16 where
it is exact, see :mod:`export.onnx.markI_onnx`). Both sides receive the same float32 images (the
model's input type).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mark1.errors import Mark1Error

if TYPE_CHECKING:  # onnxruntime is imported when used
    from onnxruntime import InferenceSession

    from export.onnx.checkpoint import MLPCheckpoint
    from export.onnx.markI_onnx import MachineFile

TOLERANCES: dict[str, tuple[float, float, float]] = {
    "fp32": (1e-5, 2.0**-18, 1.0),
    "fp16": (1e-2, 0.0, 0.995),
}
"""Precision -> (atol, rtol of the MLP logits, least class agreement); see the module
docstring."""


def logit_bounds(ref: np.ndarray, precision: str) -> np.ndarray:
    """The allowed difference for each input's logits: ``atol + rtol * max_k |ref[i, k]|``."""
    if precision not in TOLERANCES:
        raise ValueError(f"precision must be one of {', '.join(TOLERANCES)}; got {precision!r}")
    atol, rtol, _ = TOLERANCES[precision]
    ref = np.asarray(ref, np.float64).reshape(len(ref), -1)
    return atol + rtol * np.abs(ref).max(axis=1, initial=0.0)


def near_ties(ref: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Inputs whose two best reference logits are within twice their bound: a difference
    inside the bound may change their class."""
    ref = np.asarray(ref, np.float64).reshape(len(ref), -1)
    if ref.shape[1] < 2:
        return np.zeros(len(ref), bool)
    top = np.sort(ref, axis=1)[:, -2:]
    return (top[:, 1] - top[:, 0]) <= 2.0 * bounds


class ParityError(Mark1Error):
    """The exported model does not compute what its reference computes (exit status 3)."""

    exit_code = 3


@dataclass
class ParityResult:
    """Figures of one parity run."""

    model: str
    """``"mlp"`` or ``"markI"``."""
    precision: str
    """``"fp32"`` or ``"fp16"``."""
    reference: str
    """What the ONNX outputs were compared with."""
    data: str
    """Which inputs were used."""
    n_samples: int
    """Number of inputs compared."""
    max_abs_diff: float
    """Largest |onnxruntime - reference| over every compared output value."""
    compared_output: str
    """Name of the output the differences are taken on."""
    max_abs_reference: float
    """Largest |reference output| (float16 resolves it to half its float16 step)."""
    argmax_agreement: float
    """Fraction of inputs whose predicted class is the same."""
    n_class_mismatches: int
    """Number of inputs whose predicted class differs."""
    max_abs_diff_allowed: float | None
    """The bound at the input where the difference comes closest to it (``None``:
    informational only)."""
    agreement_required: float
    """Least class agreement allowed."""
    passed: bool
    """Whether every requirement holds."""
    bound: str = ""
    """The rule: ``|diff| <= atol + rtol * max|logit|`` with its numbers."""
    worst_diff_to_bound: float | None = None
    """Largest ratio of an input's difference to its bound (<= 1 passes)."""
    n_near_ties: int = 0
    """Inputs whose class differs where the bound cannot decide it (the reference's two best
    logits within twice the bound): not counted against fp32 parity."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def require(self) -> ParityResult:
        """Return ``self`` if it passed, else raise :class:`ParityError` with the figures."""
        if not self.passed:
            allowed = (f" (allowed {self.bound}: {self.max_abs_diff_allowed:.3g} where it comes "
                       "closest)" if self.max_abs_diff_allowed is not None else "")
            raise ParityError(
                f"{self.model} {self.precision} parity failed against {self.reference} on "
                f"{self.n_samples} inputs: max |diff| {self.max_abs_diff:.3g}{allowed}, class "
                f"agreement {self.argmax_agreement:.4f} (required {self.agreement_required})"
                + self._fp16_hint()
            )
        return self

    def _fp16_hint(self) -> str:
        if self.precision != "fp16" or self.max_abs_diff_allowed is None:
            return ""
        step = float(np.spacing(np.float16(min(self.max_abs_reference, 65504.0))))
        return (f"; outputs reach {self.max_abs_reference:.3g}, where float16 steps are "
                f"{step:.3g}: export in fp32")


def onnx_session(model: str | os.PathLike[str] | bytes) -> InferenceSession:
    """An onnxruntime session on the CPU execution provider, quiet."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])


def run_onnx(model: str | os.PathLike[str] | bytes, X: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of the model for inputs ``X`` (n, ...), by name, fed as float32 (float64
    for a graph that takes doubles)."""
    session = onnx_session(model)
    first = session.get_inputs()[0]
    dtype = np.float64 if first.type == "tensor(double)" else np.float32
    values = session.run(None, {first.name: np.ascontiguousarray(X, dtype)})
    return {o.name: v for o, v in zip(session.get_outputs(), values)}


def task_test_inputs(
    task: str, seed: int, options: dict[str, Any] | None = None
) -> tuple[np.ndarray, str]:
    """The task's test images as model inputs (float32 (n, 400)) and a description."""
    from mark1.images import N_CELLS, to_retina
    from mark1.stimuli import make_task

    data = make_task(task, seed=seed, **(options or {}))
    X = to_retina(data.X_test, "test images").reshape(-1, N_CELLS).astype(np.float32)
    return X, f"test set of task {task!r} (seed {seed}, {data.n_test} images)"


def probe_inputs(n: int = 512, seed: int = 0, n_inputs: int | None = None
                 ) -> tuple[np.ndarray, str]:
    """Seeded stand-in inputs (float32 (n, n_inputs), default the retina's 400): half uniform
    noise in [0, 1], half random on/off values. Used where the source names no data."""
    from mark1.images import N_CELLS

    width = N_CELLS if n_inputs is None else int(n_inputs)
    rng = np.random.default_rng(seed)
    half = n // 2
    X = np.concatenate([
        rng.uniform(0.0, 1.0, (half, width)),
        (rng.uniform(0.0, 1.0, (n - half, width)) < rng.uniform(0.1, 0.9, (n - half, 1))),
    ]).astype(np.float32)
    return X, f"{n} seeded random inputs in [0, 1] (seed {seed})"


def parity_inputs(
    task: str, seed: int, options: dict[str, Any] | None = None
) -> tuple[np.ndarray, str]:
    """The test set of ``task`` (seed 0 if ``seed`` is not a valid one), or probe images when
    ``task`` names no known task (a machine saved without its task)."""
    from mark1.stimuli import TASKS

    if task not in TASKS:
        X, data = probe_inputs()
        return X, f"{data}: the source names no known task ({task!r})"
    return task_test_inputs(task, seed if seed >= 0 else 0, options)


def _result(
    model: str, precision: str, reference: str, data: str, ref_out: np.ndarray,
    got_out: np.ndarray, output: str, ref_class: np.ndarray, got_class: np.ndarray,
    gate_diff: bool,
) -> ParityResult:
    bounds = logit_bounds(ref_out, precision)
    atol, rtol, agreement_required = TOLERANCES[precision]
    ref64 = ref_out.astype(np.float64).reshape(len(ref_out), -1)
    diffs = np.abs(got_out.astype(np.float64).reshape(len(ref64), -1) - ref64).max(axis=1)
    ratio = diffs / bounds
    worst = int(np.argmax(ratio))
    mismatch = ref_class != got_class
    ties = near_ties(ref64, bounds) if model == "mlp" else np.zeros(len(ref64), bool)
    if model == "markI":
        agreement_required = 1.0
    agree = float(np.mean(~mismatch))
    if precision == "fp32" or model == "markI":  # every input whose class the bound decides
        class_ok = not (mismatch & ~ties).any()
    else:
        class_ok = agree >= agreement_required
    passed = class_ok and (not gate_diff or bool((ratio <= 1.0).all()))
    return ParityResult(
        model=model, precision=precision, reference=reference, data=data,
        n_samples=int(ref_class.shape[0]), max_abs_diff=float(diffs.max()),
        compared_output=output, max_abs_reference=float(np.max(np.abs(ref_out))),
        argmax_agreement=agree, n_class_mismatches=int(mismatch.sum()),
        max_abs_diff_allowed=float(bounds[worst]) if gate_diff else None,
        agreement_required=agreement_required, passed=bool(passed),
        bound=f"atol {atol:g} + rtol {rtol:.3g} x max|logit|" if gate_diff else "",
        worst_diff_to_bound=float(ratio[worst]) if gate_diff else None,
        n_near_ties=int((mismatch & ties).sum()),
    )


def mlp_parity(
    ckpt: MLPCheckpoint, model: str | os.PathLike[str] | bytes, X: np.ndarray, fp16: bool = False,
    data: str = "given inputs",
) -> tuple[ParityResult, np.ndarray, np.ndarray]:
    """Compare the ONNX MLP with the checkpoint's float32 torch module on ``X``.

    Returns the result and the reference and onnxruntime logits.
    """
    import torch

    from export.onnx.mlp import build_module
    from export.onnx.onnx_export import MLP_OUTPUT

    X = np.ascontiguousarray(X, np.float32)
    with torch.inference_mode():
        ref = build_module(ckpt)(torch.from_numpy(X)).numpy()
    got = run_onnx(model, X)[MLP_OUTPUT]
    result = _result(
        "mlp", "fp16" if fp16 else "fp32", "torch (float32, eager)", data, ref, got,
        MLP_OUTPUT, ref.argmax(axis=1), got.argmax(axis=1), gate_diff=True,
    )
    return result, ref, got


def graph_parity(
    ref: np.ndarray, got: np.ndarray, output: str, data: str, threshold: float | None = None,
) -> ParityResult:
    """A converted ONNX graph against the original, both run in onnxruntime, on the class
    output ``output`` (fp32 bound). ``threshold``: a one-column output's class is whether it is
    above it (a binary classifier); else the argmax."""
    ref = np.asarray(ref).reshape(len(ref), -1)
    got = np.asarray(got).reshape(len(got), -1)

    def classes(v: np.ndarray) -> np.ndarray:
        if threshold is not None and v.shape[1] == 1:
            return (v[:, 0] > threshold).astype(np.int64)
        return v.argmax(axis=1)

    return _result("mlp", "fp32", "onnxruntime on the original graph", data, ref, got, output,
                   classes(ref), classes(got), gate_diff=True)


def markI_parity(  # noqa: N802
    machine: MachineFile, model: str | os.PathLike[str] | bytes, X: np.ndarray,
    fp16: bool = False,
    data: str = "given inputs",
) -> tuple[ParityResult, np.ndarray, np.ndarray]:
    """Compare the ONNX Mark I with the machine file's decision rule on ``X``.

    Returns the result and the reference and onnxruntime R-unit sums.
    """
    X = np.ascontiguousarray(X, np.float32)
    ref_class, ref_r = machine.decide(X)
    out = run_onnx(model, X)
    result = _result(
        "markI", "fp16" if fp16 else "fp32", "the simulator's static decision (float64)",
        data, ref_r, out["r_sum"], "r_sum", ref_class, out["class_index"], gate_diff=False,
    )
    return result, ref_r, out["r_sum"]
