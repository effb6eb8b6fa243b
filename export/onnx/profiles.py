"""Target profiles: what an ONNX file must satisfy to run on a given device, as data.

A profile is checked against the *written file* (see :func:`export.onnx.onnx_export.check_model`),
never against what the exporter was asked for: an exporter may keep a newer opset than
requested with only a warning.

``jetson-tx2``
    The last software for the TX2 is JetPack 4.6.x: TensorRT 8.2.1 with CUDA 10.2, Python 3.6.9.
    The TensorRT 8.2 ONNX parser takes opset <= 13; onnxruntime builds for JetPack 4.6 stop at
    1.11, which reads IR version <= 8. TensorRT 8.x casts int64 weights down to int32 (and double
    to float), so int64 and double initializers are refused. The Pascal GPU has no fast int8:
    fp16 is its speed path. The operator list is the part of the TensorRT 8.2 parser's support
    matrix (onnx-tensorrt ``docs/operators.md``, release 8.2) that onnxruntime 1.11 also runs,
    limited to operators present since TensorRT 8.0 (GreaterOrEqual/LessOrEqual came in 8.0.1).
``desktop``
    A current onnxruntime (>= 1.20: opset <= 21, IR <= 10) on a PC; every standard operator.
"""

from __future__ import annotations

from dataclasses import dataclass

# ONNX operators of the TensorRT 8.2 ONNX parser's support matrix kept for the TX2 profile.
_TENSORRT_8_2_OPERATORS: frozenset[str] = frozenset(
    """
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
    Cast Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum
    DepthToSpace DequantizeLinear Div Dropout Elu Equal Erf Exp Expand EyeLike Flatten Floor
    Gather GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater
    GreaterOrEqual GRU HardSigmoid Identity If ImageScaler InstanceNormalization LeakyRelu Less
    LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean Min
    Mul Neg Not Or Pad ParametricSoftplus Pow PRelu QuantizeLinear Range ReduceL1 ReduceL2
    ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
    ReduceSumSquare Relu Reshape Resize ReverseSequence RNN Round ScaledTanh Scan Scatter
    ScatterElements ScatterND Selu Shape Sigmoid Sign Sin Sinh Size Slice Softmax Softplus
    Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK
    Transpose Unsqueeze Upsample Where Xor
    """.split()
)


@dataclass(frozen=True)
class TargetProfile:
    """What a device's ONNX runtime and parser accept, and how the bundle should run there."""

    name: str
    """Profile name, as given to ``--target``."""
    description: str
    """One line: the device and its software."""
    export_opset: int
    """ai.onnx opset the exporter asks for (opset number)."""
    max_opset: int
    """Highest ai.onnx opset the target's parser and runtime accept (opset number)."""
    max_ir_version: int
    """Highest ONNX IR version the target's runtime reads (IR version number)."""
    operators: frozenset[str] | None
    """ai.onnx operators the target runs; ``None`` means every standard operator."""
    allowed_domains: frozenset[str]
    """Operator domains allowed besides the default ai.onnx domain (empty: none)."""
    forbid_int64_initializers: bool
    """Refuse int64 initializers and constants (the target casts them down, or fails)."""
    forbid_double: bool
    """Refuse float64 initializers and constants (the target casts them down to float32)."""
    precisions: tuple[str, ...]
    """Weight precisions worth shipping to the target, the speed path last."""
    python: str
    """Python version the bundle's runner must work with (major.minor)."""
    runtime: str
    """ONNX runtime the bundle is checked for (name and highest version)."""
    tensorrt: str | None
    """TensorRT version on the target, or ``None`` when there is none."""
    providers: tuple[str, ...]
    """onnxruntime execution providers the runner tries, in order of preference."""
    sources: tuple[str, ...]
    """Where each limit comes from."""


JETSON_TX2 = TargetProfile(
    name="jetson-tx2",
    description="NVIDIA Jetson TX2, JetPack 4.6.x: TensorRT 8.2.1, CUDA 10.2, Python 3.6.9",
    export_opset=13,
    max_opset=13,
    max_ir_version=8,
    operators=_TENSORRT_8_2_OPERATORS,
    allowed_domains=frozenset(),
    forbid_int64_initializers=True,
    forbid_double=True,
    precisions=("fp32", "fp16"),
    python="3.6",
    runtime="onnxruntime 1.11",
    tensorrt="8.2.1",
    providers=("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
    sources=(
        "JetPack 4.6.x is the last release for the TX2: TensorRT 8.2.1, CUDA 10.2, Python 3.6.9",
        "TensorRT 8.2 ONNX parser: opset <= 13; operators per onnx-tensorrt docs/operators.md",
        "onnxruntime builds for JetPack 4.6 top out at 1.11: opset <= 16, IR <= 8",
        "TensorRT 8.x casts int64 weights to int32 and double to float",
        "Pascal GPU (sm_62) has no fast int8; fp16 is the speed path",
    ),
)
"""The Jetson TX2 on its last JetPack (4.6.x)."""

DESKTOP = TargetProfile(
    name="desktop",
    description="a PC with a current onnxruntime (>= 1.20) on CPU or CUDA",
    export_opset=17,
    max_opset=21,
    max_ir_version=10,
    operators=None,
    allowed_domains=frozenset(),
    forbid_int64_initializers=False,
    forbid_double=False,
    precisions=("fp32", "fp16"),
    python="3.6",
    runtime="onnxruntime >= 1.20",
    tensorrt=None,
    providers=("CUDAExecutionProvider", "CPUExecutionProvider"),
    sources=("onnxruntime 1.20 reads opset <= 21 and IR <= 10",),
)
"""A PC with a current onnxruntime."""

PROFILES: dict[str, TargetProfile] = {p.name: p for p in (JETSON_TX2, DESKTOP)}
"""Every target profile by name."""


def get_profile(name: str) -> TargetProfile:
    """The profile called ``name``; ``ValueError`` lists the known ones otherwise."""
    try:
        return PROFILES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown target {name!r}; allowed: {', '.join(PROFILES)}"
        ) from None
