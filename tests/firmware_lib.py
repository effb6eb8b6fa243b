"""The C firmware in the tests: its portable code as a library (ctypes), and the check that the
tools it needs are there.

The library (``firmware_sim/c/tests/shim.c``) holds the same sources as the firmware images:
the engine, the package loader, the Python-compatible formatting, the frames and a whole
device on an in-memory flash (:class:`CDevice`), so that tests compare each with its Python
definition byte for byte, in process.
"""

from __future__ import annotations

import ctypes
import os
from functools import lru_cache

import numpy as np

from export.contract import protocol as P
from firmware_sim import firmware
from firmware_sim.device import DeviceConfig
from tests.conftest import require


def require_host_build() -> None:
    """The host build's tools (make, a C compiler), as :func:`require`."""
    require("make", os.environ.get("CC", "cc"))


def require_qemu() -> None:
    """The firmware under QEMU: its build tools and the emulator, as :func:`require`."""
    require("make", "arm-none-eabi-gcc", "qemu-system-arm")


_u8p = ctypes.POINTER(ctypes.c_uint8)
_u32p = ctypes.POINTER(ctypes.c_uint32)


@lru_cache(maxsize=1)
def lib() -> ctypes.CDLL:
    """The firmware's test library, built if needed."""
    path = firmware.build("lib") / firmware.TEST_LIBRARY
    so = ctypes.CDLL(str(path))
    sig = {
        "fw_package_load": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_uint32, ctypes.c_char_p,
                                           ctypes.c_uint32, _u32p, _u32p]),
        "fw_package_peek": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_uint32, ctypes.c_char_p,
                                           ctypes.c_uint32, _u32p, _u32p]),
        "fw_run": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_uint32, ctypes.c_void_p,
                                  ctypes.c_uint32, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
                                  ctypes.c_int, ctypes.POINTER(ctypes.c_uint64)]),
        "fw_text_max": (ctypes.c_uint32, []),
        "fw_text_catalog": (ctypes.c_uint32, [ctypes.c_uint32, ctypes.c_char_p]),
        "fw_text_count": (ctypes.c_uint32, []),
        "fw_max_ahead": (ctypes.c_uint32, []),
        "mk_requantize_single": (ctypes.c_int32, [ctypes.c_int32] * 3),
        "mk_requantize_double": (ctypes.c_int32, [ctypes.c_int32] * 3),
        "mk_saturating_rounding_doubling_high_mul": (ctypes.c_int32, [ctypes.c_int32] * 2),
        "mk_rounding_divide_by_pot": (ctypes.c_int32, [ctypes.c_int32, ctypes.c_int]),
        "mk_crc32": (ctypes.c_uint32, [ctypes.c_uint32, ctypes.c_char_p, ctypes.c_size_t]),
        "mk_sha256": (None, [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p]),
        "mk_cobs_encode": (ctypes.c_size_t, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]),
        "mk_cobs_decode": (ctypes.c_long, [ctypes.c_void_p, ctypes.c_size_t]),
        "mk_scales_encoded": (ctypes.c_int,
                              [ctypes.c_int32, ctypes.c_int32] + [ctypes.c_uint32] * 3),
        "fw_text_format": (ctypes.c_uint32, [ctypes.c_char_p, ctypes.c_uint32, ctypes.c_uint64,
                                             ctypes.c_uint32]),
        "fw_device_new": (ctypes.c_void_p, [ctypes.c_uint32] * 4 + [
            ctypes.c_char_p, ctypes.c_int64, ctypes.c_uint32, ctypes.c_char_p, ctypes.c_uint32]),
        "fw_device_free": (None, [ctypes.c_void_p]),
        "fw_device_receive": (ctypes.c_int64, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint32,
                                               ctypes.POINTER(_u8p)]),
        "fw_device_cut": (None, [ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint32]),
        "fw_device_power_cycle": (None, [ctypes.c_void_p]),
        "fw_device_new_session": (None, [ctypes.c_void_p]),
        "fw_device_flash": (_u8p, [ctypes.c_void_p, _u32p]),
        "fw_device_erases": (_u32p, [ctypes.c_void_p, _u32p]),
        "fw_device_flash_ops": (ctypes.c_uint64, [ctypes.c_void_p]),
        "fw_device_load_flash": (None, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]),
    }
    for name, (restype, argtypes) in sig.items():
        fn = getattr(so, name)
        fn.restype, fn.argtypes = restype, argtypes
    return so


# --------------------------------------------------------------------------- engine, loader


def load_package(data: bytes, cap: int = 1024) -> tuple[str, list[int]]:
    """The C loader on ``data``: ("", [n_inputs, n_outputs, ram_bytes, n_layers, head,
    n_classes]) if it accepts it, else (its refusal, cut to ``cap`` bytes, [])."""
    why = ctypes.create_string_buffer(cap)
    n, info = ctypes.c_uint32(), (ctypes.c_uint32 * 6)()
    rc = lib().fw_package_load(data, len(data), why, cap, ctypes.byref(n), info)
    return ("", list(info)) if rc == 0 else (why.raw[: n.value].decode("utf-8"), [])


def peek_package(data: bytes) -> tuple[str, list[int]]:
    """The C ``peek_header``: ("", [total_size, n_inputs, n_outputs, ram_bytes]), or
    (its refusal, [])."""
    why = ctypes.create_string_buffer(1024)
    n, info = ctypes.c_uint32(), (ctypes.c_uint32 * 4)()
    rc = lib().fw_package_peek(data, len(data), why, 1024, ctypes.byref(n), info)
    return ("", list(info)) if rc == 0 else (why.raw[: n.value].decode("utf-8"), [])


PATHS = {"reference": 0, "portable": 1, "dsp": 2}
"""The engine's dense kernels (``MK_PATH_*``): the C99 reference, the portable path of cores
without the DSP extension, and the DSP path (its instructions emulated in C on the host)."""


def run(data: bytes, x_q: np.ndarray, *, path: str, rounding: int = -1
        ) -> tuple[np.ndarray, np.ndarray, int]:
    """The C engine on int8 inputs (n, n_inputs): outputs, classes (``decide``), cycle estimate.
    ``rounding``: -1 the package's own, else every dense layer's mode (0 single, 1 double)."""
    err, info = load_package(data)
    assert not err, err
    x = np.ascontiguousarray(x_q, dtype=np.int8)
    y = np.zeros((len(x), info[1]), np.int8)
    classes = np.zeros(len(x), np.uint32)
    cycles = ctypes.c_uint64()
    rc = lib().fw_run(data, len(data), x.ctypes.data, len(x), y.ctypes.data, classes.ctypes.data,
                      PATHS[path], rounding, ctypes.byref(cycles))
    assert rc == 0
    return y, classes.astype(np.int64), cycles.value


def text_format(big: int, small: int) -> str:
    """The firmware's formatting of two values (``fw_text_format`` in ``tests/shim.c``)."""
    out = ctypes.create_string_buffer(256)
    n = lib().fw_text_format(out, 256, big, small)
    return out.raw[:n].decode()


def catalog_texts() -> list[str]:
    """Every text of the firmware's catalog (``src/texts.def``) as the firmware expands it from
    its packed form, in the catalog's order."""
    texts = []
    for k in range(lib().fw_text_count()):
        out = ctypes.create_string_buffer(4096)
        n = lib().fw_text_catalog(k, out)
        texts.append(out.raw[:n].decode("ascii"))
    return texts


def sha256(data: bytes) -> bytes:
    """The firmware's SHA-256 of ``data``."""
    out = ctypes.create_string_buffer(32)
    lib().mk_sha256(data, len(data), ctypes.addressof(out))
    return out.raw


def cobs_encode(raw: bytes) -> bytes:
    """The firmware's COBS encoding of ``raw`` with its delimiter, made in place: the frame
    lies ``MK_COBS_SHIFT`` bytes into the buffer it is encoded to, as the device builds
    replies."""
    shift = 1 + len(raw) // 254
    buf = ctypes.create_string_buffer(len(raw) + shift + 1)
    ctypes.memmove(ctypes.addressof(buf) + shift, raw, len(raw))
    n = lib().mk_cobs_encode(ctypes.addressof(buf), ctypes.addressof(buf) + shift, len(raw))
    return buf.raw[:n]


def cobs_decode(encoded: bytes) -> bytes | None:
    """The firmware's COBS decoding (in place), or ``None`` where it refuses the bytes."""
    buf = ctypes.create_string_buffer(encoded, len(encoded))
    n = lib().mk_cobs_decode(ctypes.addressof(buf), len(encoded))
    return None if n < 0 else buf.raw[:n]


# --------------------------------------------------------------------------- a whole device


class CDevice:
    """The firmware's device on an in-memory flash, in this process: the part of
    :class:`firmware_sim.device.Device`'s interface the tests compare (``receive``, power
    cycles, the flash and its wear), plus a power cut inside any flash operation."""

    def __init__(self, config: DeviceConfig, protocol_version: int = P.PROTOCOL_VERSION) -> None:
        why = ctypes.create_string_buffer(200)
        self.config = config
        self._lib = lib()
        self._dev = self._lib.fw_device_new(
            config.flash_bytes, config.page_bytes, config.ram_bytes, config.max_payload,
            config.name.encode(), config.endurance, protocol_version, why, 200)
        if not self._dev:
            raise ValueError(why.value.decode())

    def close(self) -> None:
        if self._dev:
            self._lib.fw_device_free(self._dev)
            self._dev = None

    def __del__(self) -> None:
        self.close()

    def receive(self, data: bytes) -> bytes:
        """The encoded replies to the frames ``data`` completes; ``PowerCut`` if the power went."""
        out = _u8p()
        n = self._lib.fw_device_receive(self._dev, bytes(data), len(data), ctypes.byref(out))
        if n < 0:
            raise PowerCut("the power was cut during a flash operation")
        return ctypes.string_at(out, n) if n else b""

    def cut(self, op: int, keep: int) -> None:
        """Cut the power ``keep`` bytes into flash operation ``op`` (from power-on)."""
        self._lib.fw_device_cut(self._dev, op, keep)

    def power_cycle(self) -> CDevice:
        """Power off and on (RAM forgotten, flash kept); the same object."""
        self._lib.fw_device_power_cycle(self._dev)
        return self

    def new_session(self) -> None:
        self._lib.fw_device_new_session(self._dev)

    @property
    def ops(self) -> int:
        """Flash erases and writes since power-on."""
        return int(self._lib.fw_device_flash_ops(self._dev))

    def flash(self) -> tuple[bytes, list[int]]:
        """The flash contents and each page's erase count."""
        size, pages = ctypes.c_uint32(), ctypes.c_uint32()
        mem = self._lib.fw_device_flash(self._dev, ctypes.byref(size))
        erases = self._lib.fw_device_erases(self._dev, ctypes.byref(pages))
        return ctypes.string_at(mem, size.value), list(erases[: pages.value])

    def load_flash(self, contents: bytes, erases: list[int]) -> None:
        """Put ``contents`` and erase counts into the flash and boot from it."""
        assert len(contents) == self.config.flash_bytes
        self._lib.fw_device_load_flash(self._dev, contents,
                                       np.asarray(erases, "<u4").tobytes())


class PowerCut(Exception):
    """The test library's device lost power in a flash operation (see :meth:`CDevice.cut`)."""
