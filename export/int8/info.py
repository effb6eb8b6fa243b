"""What a weight package holds and what a device needs to run it: ``mark1 info model.m1w``.

Like ``esptool image-info``: the header's fields, each layer with its size, the sections of the
file, the checks (CRC-32, model id) and the flash, RAM and frame size a device must have. The
layout is read with the package's own definitions (:mod:`export.contract.package`), after
:func:`~export.contract.package.decode_package` has checked every field.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from typing import Any

from export.contract import protocol as P
from export.contract.package import (
    CRC,
    HEADER,
    HEADER_OFFSETS,
    LAYER_ENTRY,
    LAYER_LAYOUT,
    decode_package,
)
from export.int8.rounding import OPTION, RUNTIMES

SHOWN_CLASSES = 12
"""Class names listed before the rest are counted."""


def package_info(data: bytes) -> dict[str, Any]:
    """The layout, checks and needs of the package ``data`` (``PackageError`` if it is not a
    valid one), JSON-ready."""
    pkg = decode_package(data)
    version, payload = (struct.unpack_from(code, data, HEADER_OFFSETS[name])[0]
                        for name, code in (("format_version", "<H"), ("payload_size", "<I")))
    entries = [dict(zip((name for name, _ in LAYER_LAYOUT),
                        LAYER_ENTRY.unpack_from(data, HEADER.size + i * LAYER_ENTRY.size)))
               for i in range(len(pkg.layers))]
    table_end = HEADER.size + len(entries) * LAYER_ENTRY.size
    names = len(data) - CRC.size - payload - table_end
    layers = []
    for layer, entry in zip(pkg.layers, entries):
        layers.append({"type": layer.kind, "n_in": layer.n_in, "n_out": layer.n_out,
                       "relu": bool(layer.relu), "data_bytes": int(entry["data_size"]),
                       "macs": int(layer.macs), "output_scale": float(layer.output_scale),
                       "output_zero_point": int(layer.output_zero_point)})
    widths = [pkg.n_inputs] + [layer.n_out for layer in pkg.layers]
    codebook = payload - sum(int(e["data_size"]) for e in entries)
    return {
        "format_version": int(version),
        "size": len(data),
        "model_id": pkg.model_id.hex(),
        "sha256": hashlib.sha256(data).hexdigest(),
        "crc32_stored": int(CRC.unpack(data[-CRC.size:])[0]),
        "crc32_computed": zlib.crc32(data[: -CRC.size]),
        "source": pkg.source,
        "rounding": pkg.rounding,
        "rounding_runtimes": RUNTIMES[pkg.rounding],
        "head": "codebook" if pkg.codebook is not None else "argmax",
        "classes": list(pkg.classes),
        "input_shape": list(pkg.input_shape),
        "n_inputs": pkg.n_inputs,
        "n_outputs": pkg.n_outputs,
        "input_scale": pkg.input_scale,
        "input_zero_point": pkg.input_zero_point,
        "layers": layers,
        "sections": {"header": HEADER.size, "layer table": table_end - HEADER.size,
                     "class names": names, "layer data": payload - codebook,
                     "codebook": codebook, "CRC-32": CRC.size},
        "macs": pkg.macs,
        "needs": {
            "flash_bytes": len(data),
            "ram_bytes": pkg.ram_bytes,
            "ram_buffers": [max(widths[0::2]), max(widths[1::2], default=0)],
            "max_payload": max(pkg.n_inputs, pkg.n_outputs) + P.Result.FIXED.size,
        },
    }


def _scale(value: float) -> str:
    return f"{value:.6g}"


def render(info: dict[str, Any], name: str) -> str:
    """``info`` (from :func:`package_info`) as the text ``mark1 info`` prints."""
    need = info["needs"]
    classes = info["classes"]
    shown = " ".join(classes[:SHOWN_CLASSES]) + (
        f" ... ({len(classes) - SHOWN_CLASSES} more)" if len(classes) > SHOWN_CLASSES else "")
    shape = " x ".join(str(d) for d in info["input_shape"])
    crc_ok = "checked" if info["crc32_stored"] == info["crc32_computed"] else "MISMATCH"
    lines = [
        f"{name}: mark1-kit weight package, format {info['format_version']}, "
        f"{info['size']:,} bytes",
        f"  model id  {info['model_id']}  (SHA-256 of the content; `mark1 status` shows it)",
        f"  SHA-256   {info['sha256']}  (of the file: the image id `mark1 push` sends)",
        f"  CRC-32    {info['crc32_stored']:#010x} stored over the {info['size'] - 4:,} bytes "
        f"before it, {crc_ok}",
        f"  source    {info['source']}; decision by {info['head']}; {len(classes)} classes: "
        f"{shown}",
        f"  input     {shape} ({info['n_inputs']:,} int8 values), scale "
        f"{_scale(info['input_scale'])}, zero point {info['input_zero_point']}",
        f"  rounding  {info['rounding']} (`mark1 quantize --rounding "
        f"{OPTION[info['rounding']]}`)"
        + ("; a device must read package format 2" if info["format_version"] >= 2 else ""),
        f"            bit for bit as {info['rounding_runtimes']}",
        "  layers    #  type        inputs  outputs  relu   data bytes        MACs  out scale",
    ]
    for i, layer in enumerate(info["layers"]):
        lines.append(
            f"            {i:<2d} {layer['type']:<10s} {layer['n_in']:>7,d} {layer['n_out']:>8,d}"
            f"  {'yes' if layer['relu'] else 'no':<4s} {layer['data_bytes']:>11,d} "
            f"{layer['macs']:>11,d}  {_scale(layer['output_scale'])}")
    sections = ", ".join(f"{k} {v:,}" for k, v in info["sections"].items() if v)
    lines += [
        f"  sections  {sections} bytes",
        f"  needs     flash {need['flash_bytes']:,} bytes (one slot); RAM {need['ram_bytes']:,} "
        f"bytes of activation arena (buffers of {need['ram_buffers'][0]:,} and "
        f"{need['ram_buffers'][1]:,}, each 4-byte aligned)",
        f"            frames of {need['max_payload']:,}-byte payloads (INFO max_payload: "
        f"{info['n_inputs']:,} inputs in, 4 + {info['n_outputs']:,} outputs back); "
        f"{info['macs']:,} MACs an inference",
    ]
    return "\n".join(lines) + "\n"

