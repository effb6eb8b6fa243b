"""Inference on a device: its active package (read back or checked against a file), and int8
inputs run on it."""

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
