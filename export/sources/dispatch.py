"""Which kind of model a file holds, and the loader that reads it.

:data:`KINDS` lists every kind the kit reads, each with a test on the file's first bytes (and,
for zip archives, the names inside), the suffixes it usually has, and its loader. The kind is
told by content: a file named ``model.onnx`` that is really a torch checkpoint is read as one;
the suffix only helps to say what a damaged file was meant to be. Every MLP loader
returns an :class:`ImportedMLP`: the float description every consumer reads
(:class:`~export.onnx.checkpoint.MLPCheckpoint`) and where it came from. A kind that is
quantized already (an int8 TensorFlow Lite model) has a package loader instead, returning an
:class:`ImportedPackage`: its integers, scales and zero points as they are, no re-quantization.

A new kind slots in as one more :class:`Kind`: a float model with ``load(path) -> ImportedMLP``
building its layers through :func:`export.sources.steps.assemble`, a quantized one with
``load_package(path) -> ImportedPackage``.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from export.contract.package import Package
from export.onnx.checkpoint import MLPCheckpoint
from export.sources.onnx_mlp import OnnxMLP


@dataclass
class ImportedMLP:
    """A float MLP read from a file, and what is known of where it came from."""

    mlp: MLPCheckpoint
    """The MLP every consumer (quantizer, ONNX export, parity) reads."""
    kind: str
    """What the file was, in words: ``"mark1-kit checkpoint"``, ``"ONNX"``, ``"torch module"``,
    ``"TorchScript"``, ``"state_dict"``."""
    path: Path
    producer: str = ""
    """The converter or library that wrote the file, where it says (``"skl2onnx 1.20.0"``)."""
    notes: list[str] = field(default_factory=list)
    """What was folded, dropped or assumed while reading."""
    reference: Callable[[np.ndarray], np.ndarray] | None = None
    """The model's logits for inputs (n, n_in) computed by its own runtime (onnxruntime on the
    original graph, torch on the module); ``None`` where there is none (a state_dict, the kit's
    own checkpoint, which *is* the reference)."""
    reference_name: str = ""
    onnx: OnnxMLP | None = None
    """For ONNX files: the graph as read (``mark1 export onnx`` converts it rather than
    rebuilding it)."""

    def describe(self) -> dict[str, object]:
        """JSON-ready summary for reports."""
        return {"path": str(self.path), "kind": self.kind, "producer": self.producer,
                "layer_sizes": list(self.mlp.layer_sizes),
                "input_shape": list(self.mlp.input_shape), "classes": list(self.mlp.classes),
                "activations": [[lo, hi] for lo, hi in self.mlp.clamps],
                "notes": list(self.notes)}


@dataclass
class ImportedPackage:
    """A quantized model read from a file as a weight package, its integers taken as they are."""

    package: Package
    """The layers; its ``rounding`` is the package's default, which the importer sets."""
    kind: str
    """What the file was, in words: ``"TensorFlow Lite"``."""
    path: Path
    producer: str = ""
    notes: list[str] = field(default_factory=list)
    """What was dropped or assumed while reading."""
    details: dict[str, object] = field(default_factory=dict)
    """What else the reader found (the interface, the operators)."""
    logit_columns: tuple[int, ...] = ()
    """Which package outputs are the model's own outputs, in order (all but an added constant
    column of a binary classifier)."""

    def describe(self) -> dict[str, object]:
        """JSON-ready summary for reports."""
        return {"path": str(self.path), "kind": self.kind, "producer": self.producer,
                "input_shape": list(self.package.input_shape),
                "layer_sizes": [self.package.n_inputs] + [lay.n_out for lay in
                                                          self.package.layers],
                "notes": list(self.notes), **self.details}


@dataclass(frozen=True)
class Probe:
    """What the kind tests look at: the first bytes, the names in a zip archive, the path."""

    head: bytes
    names: tuple[str, ...] | None
    """Member names of a zip archive (``None``: not a readable zip)."""
    path: Path


@dataclass(frozen=True)
class Kind:
    """One kind of model file."""

    name: str
    what: str
    """The kind in words, for messages."""
    label: str
    """The kind in a word or two, for the list of kinds."""
    suffixes: tuple[str, ...]
    looks_like: Callable[[Probe], bool]
    load: Callable[[Path], ImportedMLP] | None
    """Reads a float MLP; ``None`` for a kind that is not one (the Mark I machine file, a
    quantized model)."""
    load_package: Callable[[Path], ImportedPackage] | None = None
    """Reads a quantized model as a weight package, its integers as they are."""


def _is_torchscript(p: Probe) -> bool:
    return p.names is not None and any(
        n.endswith("constants.pkl") or "/code/__torch__/" in n for n in p.names)


def _is_torch(p: Probe) -> bool:
    return p.names is not None and any(n.endswith("/data.pkl") or n == "data.pkl"
                                       for n in p.names)


def _is_onnx(p: Probe) -> bool:
    """An ONNX model is a protobuf whose first field is the IR version (tag 0x08)."""
    if not p.head.startswith(b"\x08"):
        return False
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_model(str(p.path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError):
        return False
    return len(model.graph.node) > 0


def load_kit_or_torch(path: Path) -> ImportedMLP:
    """A file written by ``torch.save``: the kit's checkpoint, a module or a state_dict."""
    from export.onnx.checkpoint import checkpoint_from_dict, is_checkpoint_dict, read_torch_file
    from export.sources.torch_mlp import module_classes, read_torch_mlp

    raw = read_torch_file(path, module_classes())
    if is_checkpoint_dict(raw):
        return ImportedMLP(checkpoint_from_dict(raw, path), "mark1-kit checkpoint", path)
    got = read_torch_mlp(path, raw)
    return ImportedMLP(got.mlp, got.kind, path, got.producer, got.notes, got.reference,
                       "torch, the module itself" if got.reference else "")


def load_torchscript(path: Path) -> ImportedMLP:
    from export.sources.torch_mlp import read_torchscript_mlp

    got = read_torchscript_mlp(path)
    return ImportedMLP(got.mlp, got.kind, path, got.producer, got.notes, got.reference,
                       "torch, the TorchScript module's own layers")


def load_onnx(path: Path) -> ImportedMLP:
    from export.sources.onnx_mlp import onnx_runner, read_onnx_mlp

    got = read_onnx_mlp(path)
    run = onnx_runner(got, [got.logits])

    def reference(x: np.ndarray) -> np.ndarray:
        logits = np.asarray(run(x)[0], np.float64).reshape(len(x), -1)
        if logits.shape[1] == 1:  # a single logit z: the MLP's outputs are (0, z)
            return np.hstack([np.zeros((len(x), 1)), logits])
        return logits

    return ImportedMLP(got.mlp, "ONNX", path, got.producer, got.notes, reference,
                       "onnxruntime on the original graph", got)


def load_tflite(path: Path) -> ImportedPackage:
    from export.tflite.read import read_tflite

    got = read_tflite(path)
    return ImportedPackage(got.package, "TensorFlow Lite", path, got.producer, got.notes,
                           {"interface": got.interface, "operators": got.operators},
                           got.logit_columns)


def _is_tflite(p: Probe) -> bool:
    from export.tflite.schema import TFLITE_IDENTIFIER

    return p.head[4:8] == TFLITE_IDENTIFIER


KINDS: tuple[Kind, ...] = (
    Kind("markI", "a Mark I machine file (machine.npz)", "machine.npz", (".npz",),
         lambda p: p.names is not None and "format.npy" in p.names, None),
    Kind("torchscript", "a TorchScript archive", "TorchScript", (".pt", ".pth", ".jit"),
         _is_torchscript,
         load_torchscript),
    Kind("torch", "a torch checkpoint, module or state_dict", "mlp.pt or another torch file",
         (".pt", ".pth"), _is_torch, load_kit_or_torch),
    Kind("onnx", "an ONNX model", "ONNX", (".onnx",), _is_onnx, load_onnx),
    Kind("tflite", "an int8 TensorFlow Lite model", "int8 TFLite", (".tflite",), _is_tflite,
         None, load_tflite),
)
"""Every kind of model file the kit reads, in the order they are tried."""


def _probe(path: Path) -> Probe:
    with open(path, "rb") as fh:
        head = fh.read(16)
    names = None
    if head.startswith(b"PK\x03\x04") and zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                names = tuple(zf.namelist())
        except (zipfile.BadZipFile, OSError, ValueError):
            names = None
    return Probe(head, names, path)


def _what_else(p: Probe) -> str:
    """What a file that is no model looks like, in words."""
    head = p.head
    if head.startswith(b"PK\x03\x04"):
        return "a damaged or truncated zip archive" if p.names is None else \
            "a zip archive of something else"
    if head.startswith(b"\x89PNG"):
        return "a PNG image"
    if head.startswith(b"\x93NUMPY"):
        return "a single numpy array (.npy), not a machine file (.npz)"
    if head[:1] in (b"{", b"["):
        return "JSON text"
    meant = [k for k in KINDS if p.path.suffix.lower() in k.suffixes]
    if head.startswith(b"\x08") or (meant and meant[0].name == "onnx"):
        return "an unreadable ONNX model (damaged or truncated)"
    if meant and meant[0].name == "tflite":
        return "not a TensorFlow Lite flatbuffer (no TFL3 identifier at byte 4)"
    if not head:
        return "empty"
    if all(32 <= c < 127 or c in (9, 10, 13) for c in head):
        return "a text file"
    return "unrecognised binary data"


def sniff(path: str | os.PathLike[str]) -> Kind:
    """The kind of model in ``path``, told by content.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` saying what the file looks
    like when it is no model the kit reads.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "checkpoint not found", str(path))
    probe = _probe(path)
    for kind in KINDS:
        if kind.looks_like(probe):
            return kind
    kinds = ", ".join(k.label for k in KINDS)
    raise ValueError(f"{path} is not a model file the kit reads ({kinds}): it is "
                     f"{_what_else(probe)}")


def load_mlp(path: str | os.PathLike[str]) -> ImportedMLP:
    """Read the MLP in ``path``, whatever its kind; ``ValueError`` for a file of another kind
    or an MLP the int8 engine cannot run (the message names the part)."""
    path = Path(path)
    kind = sniff(path)
    if kind.load is None:
        if kind.load_package is not None:
            raise ValueError(f"{path} is {kind.what}, quantized already, not a float MLP: "
                             "`mark1 quantize` imports it as a weight package")
        raise ValueError(f"{path} is {kind.what}, not an MLP")
    return kind.load(path)


def load_package(path: str | os.PathLike[str]) -> ImportedPackage:
    """Read the quantized model in ``path`` as a weight package; ``ValueError`` for a file of
    another kind or a model the int8 engine cannot run as it is (the message names the part)."""
    path = Path(path)
    kind = sniff(path)
    if kind.load_package is None:
        raise ValueError(f"{path} is {kind.what}, not a quantized model")
    return kind.load_package(path)
