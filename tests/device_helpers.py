"""Shared by the device and push tests: small real weight packages and request helpers."""

from __future__ import annotations

import threading
import zlib
from functools import lru_cache

import numpy as np
import pytest

from export.contract import protocol as P
from export.contract.package import encode_package
from export.int8.quantize import quantize_mlp
from firmware_sim.device import Device, DeviceConfig
from tests.int8_models import random_checkpoint

DIGITS = tuple(str(k) for k in range(10))
"""Class names of the ``digits`` task."""

SMALL = DeviceConfig(flash_bytes=16 * 1024, page_bytes=512, ram_bytes=4096, max_payload=512,
                     name="test part")
"""A small part: two 7.5 KiB slots, 512-byte pages, a 4 KiB arena and 512-byte frames."""


@lru_cache(maxsize=8)
def image(hidden: int = 8, seed: int = 0) -> bytes:
    """A real package: a random 400-hidden-10 MLP quantized for the ``digits`` classes."""
    rng = np.random.default_rng(seed)
    ckpt = random_checkpoint(rng, [400, hidden, 10])
    ckpt.classes = list(DIGITS)
    return encode_package(quantize_mlp(ckpt, rng.uniform(size=(40, 400))))


def ask(device: Device, msg: P.Payload | P.Msg | P.Frame, seq: int = 1) -> P.Payload:
    """Send one request through the device's byte stream; its parsed reply."""
    if isinstance(msg, P.Frame):
        frame = msg
    else:
        frame = P.Frame(int(msg), seq) if isinstance(msg, P.Msg) else msg.frame(seq)
    out = device.receive(P.encode_frame(frame))
    frames = P.FrameDecoder().feed(out)
    assert len(frames) == 1 and frames[0].seq == frame.seq, frames
    return P.parse_reply(frames[0])


def upload(device: Device, data: bytes, chunk: int = 256, slot: int = P.AUTO_SLOT,
           ram: int = 0, start: int | None = None, commit: bool = True) -> P.Payload:
    """BEGIN, every DATA frame in order and COMMIT; returns the last reply (or the first NAK)."""
    reply = ask(device, P.Begin(len(data), zlib.crc32(data), ram, slot))
    if not isinstance(reply, P.Ack):
        return reply
    offset = reply.a if start is None else start
    while offset < len(data):
        reply = ask(device, P.Data(offset, data[offset : offset + chunk]))
        if not isinstance(reply, P.Ack):
            return reply
        offset = reply.a
    if not commit:
        return reply
    return ask(device, P.Commit(len(data), zlib.crc32(data)))


@pytest.fixture(autouse=True)
def no_thread_leaks():
    """Every thread a test starts (servers, relays, sessions) has ended when it returns.
    Autouse in the modules that import it."""
    before = set(threading.enumerate())
    yield
    left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not left, f"threads left running: {left}"
