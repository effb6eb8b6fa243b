"""Inference on a device: its active package (read back or checked against a file), the inputs
for it, and int8 inputs run on it."""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np

from export.contract import protocol as P
from export.contract.package import Package, decode_package
from export.serial.errors import DeviceRefused, LinkDown, LinkLost, VerifyFailed
from export.serial.link import Link


def active_package(link: Link, model: bytes | None = None) -> tuple[Package, P.Status]:
    """The device's running package: decoded from ``model`` (checked to be the same) or read
    back from the device. ``DeviceRefused`` if it has none."""
    st = link.status()
    if not st.runnable:
        raise DeviceRefused(f"device on {link.url} has no runnable model; push one first")
    if model is None:
        try:
            model = link.read_active(st.active_size)
        except LinkDown as exc:
            raise LinkLost(f"reading the model back from {link.url}: {exc}") from exc
        if zlib.crc32(model) != st.active_crc32:
            raise VerifyFailed("model read back from the device does not match its CRC")
    pkg = decode_package(model)
    if pkg.model_id != st.model_id:
        raise ValueError(
            f"the model file (id {pkg.model_id.hex()[:16]}) is not the device's active model "
            f"(id {st.model_id.hex()[:16]})"
        )
    return pkg, st


def run_inference(link: Link, x_q: np.ndarray, done: Callable[[int], None] | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Device outputs and cycle counts for int8 inputs; ``LinkLost`` if the link fails."""
    try:
        return link.infer(x_q, done=done)
    except LinkDown as exc:
        raise LinkLost(f"inference on {link.url}: {exc}") from exc


def takes_retina(pkg: Package) -> bool:
    """Whether the package's input is the 20 x 20 retina image on its [0, 1] grid (a Mark I, an
    MLP trained by the kit); else it takes the model's own features."""
    from export.int8.quantize import INPUT_SCALE, INPUT_ZERO_POINT
    from mark1.images import RETINA_SHAPE

    return (tuple(pkg.input_shape) == RETINA_SHAPE and pkg.input_scale == INPUT_SCALE
            and pkg.input_zero_point == INPUT_ZERO_POINT)


def inputs_for(pkg: Package, paths: list[str]) -> tuple[list[str], np.ndarray]:
    """Names and real input rows (n, n_inputs) for the package from files: light images
    projected onto the retina for a retina model; ``.npy`` arrays of the model's own inputs,
    as they are, for any other (see :mod:`export.sources.user_data`)."""
    from pathlib import Path

    from export.sources.user_data import feature_rows, read_array
    from mark1.images import read_images, to_retina

    if takes_retina(pkg):
        found_names, X = read_images(paths)
        return found_names, to_retina(X).reshape(len(X), -1)
    shape = tuple(pkg.input_shape)
    names: list[str] = []
    rows = []
    for p in paths:
        if Path(p).suffix.lower() != ".npy":
            raise ValueError(f"{p}: the model takes {pkg.n_inputs} feature values per input "
                             f"(shape {shape}), not an image; give .npy arrays of its inputs")
        found = feature_rows(read_array(p, "input file"), shape, p)
        names += [Path(p).name] if len(found) == 1 else [f"{Path(p).name}[{i}]"
                                                         for i in range(len(found))]
        rows.append(found)
    return names, np.concatenate(rows)
