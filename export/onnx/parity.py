"""Parity: an exported ONNX model run in onnxruntime against its reference, on real inputs.

MLP: the reference is the checkpoint's float32 torch module. fp32 export: max |difference| of the
logits <= 1e-5 and the same argmax on every input; fp16 export: max |difference| <= 1e-2 and the
same argmax on >= 99.5 % of inputs.

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

TOLERANCES: dict[str, tuple[float, float]] = {"fp32": (1e-5, 1.0), "fp16": (1e-2, 0.995)}
"""Precision -> (max abs difference of the MLP logits, least argmax agreement)."""


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
    """Largest difference allowed (``None``: informational only)."""
    agreement_required: float
    """Least class agreement allowed."""
    passed: bool
    """Whether every requirement holds."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def require(self) -> ParityResult:
        """Return ``self`` if it passed, else raise :class:`ParityError` with the figures."""
        if not self.passed:
            allowed = (f" (allowed {self.max_abs_diff_allowed:g})"
                       if self.max_abs_diff_allowed is not None else "")
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
    """Every output of the model for float32 inputs ``X`` (n, 400), by name."""
    session = onnx_session(model)
    name = session.get_inputs()[0].name
    values = session.run(None, {name: np.ascontiguousarray(X, np.float32)})
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


def probe_inputs(n: int = 512, seed: int = 0) -> tuple[np.ndarray, str]:
    """Seeded stand-in images (float32 (n, 400)): half uniform noise, half random on/off cells."""
    from mark1.images import N_CELLS

    rng = np.random.default_rng(seed)
    half = n // 2
    X = np.concatenate([
        rng.uniform(0.0, 1.0, (half, N_CELLS)),
        (rng.uniform(0.0, 1.0, (n - half, N_CELLS)) < rng.uniform(0.1, 0.9, (n - half, 1))),
    ]).astype(np.float32)
    return X, f"{n} seeded random images (seed {seed})"


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
    if precision not in TOLERANCES:
        raise ValueError(f"precision must be one of {', '.join(TOLERANCES)}; got {precision!r}")
    max_diff_allowed, agreement_required = TOLERANCES[precision]
    if model == "markI":
        agreement_required = 1.0
    diff = float(np.max(np.abs(got_out.astype(np.float64) - ref_out.astype(np.float64))))
    agree = float(np.mean(ref_class == got_class))
    passed = agree >= agreement_required and (not gate_diff or diff <= max_diff_allowed)
    return ParityResult(
        model=model, precision=precision, reference=reference, data=data,
        n_samples=int(ref_class.shape[0]), max_abs_diff=diff, compared_output=output,
        max_abs_reference=float(np.max(np.abs(ref_out))),
        argmax_agreement=agree, n_class_mismatches=int(np.sum(ref_class != got_class)),
        max_abs_diff_allowed=max_diff_allowed if gate_diff else None,
        agreement_required=agreement_required, passed=bool(passed),
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
