"""The optional parts of the distribution (``pyproject.toml``'s extras) and what each installs.

``pip install mark1-kit`` gives the Mark I simulator, the int8 packages, the simulated device
and the serial link. A command that needs a module of an extra that is not installed stops
with one line naming the extra to install (exit status 2): :func:`missing_extra` words it, and
``mark1.cli.main`` says it for every command.
"""

from __future__ import annotations

EXTRAS: dict[str, str] = {
    "torch": "export",
    "onnx": "export",
    "onnxruntime": "export",
    "tflite": "export",
    "flatbuffers": "export",
    "numba": "fast",
    "starlette": "playground",
    "uvicorn": "playground",
    "websockets": "playground",
    "pyarrow": "sweep",
    "dask": "sweep",
    "distributed": "sweep",
}
"""Top-level module -> the extra that installs it."""

PURPOSE: dict[str, str] = {
    "export": "training MLPs, ONNX and TensorFlow Lite, int8 quantization",
    "fast": "the compiled training passes",
    "playground": "the browser playground's server",
    "sweep": "Parquet tables and Dask clusters of sweeps",
}
"""What each extra is for, in words."""

COMMANDS: dict[str, tuple[str, ...]] = {
    "train-mlp": ("torch",),
    "export onnx": ("torch", "onnx", "onnxruntime"),
    "export tflite": ("tflite", "flatbuffers"),
    "quantize": ("torch", "onnx", "onnxruntime", "tflite", "flatbuffers"),
}
"""Commands (``export`` by its format) that need modules of an extra whatever their input,
checked before they start: they are refused at once rather than after minutes of work
(``quantize`` reads torch, ONNX and TensorFlow Lite models and writes the ONNX twin of every
package, checked with onnxruntime). ``export c`` needs no extra; ``playground`` says its
own extra when it starts its server."""


def _advice(module: str, extra: str) -> str:
    return (f"this needs {module}, which is not installed: pip install 'mark1-kit[{extra}]' "
            f"(the extra for {PURPOSE[extra]})")


def check_command(command: str, form: str | None = None) -> str | None:
    """The advice for ``command`` (``form``: the format of ``export``) if it needs a module of
    an extra that is not installed (looked up without importing it), else ``None``."""
    from importlib.util import find_spec

    for module in COMMANDS.get(f"{command} {form}" if form else command, ()):
        try:
            found = find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return _advice(module, EXTRAS[module])
    return None


def missing_extra(exc: ImportError) -> str | None:
    """The one-line advice for a module of an extra that failed to import, or ``None`` if the
    module is none of :data:`EXTRAS`' (then it is a fault, not a choice of install)."""
    name = getattr(exc, "name", None) or ""
    top = name.split(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        return None
    return _advice(top, extra)
