"""Shared by the device and push tests: small real weight packages, request helpers, and the
devices of each kind (simulator, C firmware) served on a real port."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from export.contract import protocol as P
from export.contract.package import encode_package
from export.int8.quantize import quantize_mlp
from export.serial.errors import DeviceBusy
from firmware_sim import firmware
from firmware_sim.device import Device, DeviceConfig
from firmware_sim.serve import IDLE_TIMEOUT_S, LinkTiming, PtyServer, TcpServer
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


# --------------------------------------------------------------------------- devices by kind

UNPACED = LinkTiming()


@dataclass
class Served:
    """A device serving one URL: the simulator in this process, or the firmware in a process
    (the host port, or QEMU behind its launcher)."""

    kind: str
    url: str
    device: Device | None = None
    """The simulated part (kind ``sim``), for checks the protocol cannot make."""
    server: TcpServer | PtyServer | None = None
    process: subprocess.Popen | None = None
    """The firmware's process (kinds ``host``, ``m3``, ``m4``)."""

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) of a TCP device."""
        host, port = self.url.removeprefix("socket://").rsplit(":", 1)
        return host, int(port)

    def status(self) -> P.Status:
        """``STATUS`` asked over the device's port with a bare frame (no handshake, so also of
        a device that speaks another protocol version); ``DeviceBusy`` while another host
        holds its session."""
        frame = P.encode_frame(P.Frame(int(P.Msg.STATUS), 1))
        if self.url.startswith("socket://"):
            with socket.create_connection(self.address, timeout=5) as sock:
                sock.sendall(P.DELIMITER + frame)
                replies = _read_frames(lambda: sock.recv(4096))
                sock.shutdown(socket.SHUT_WR)  # and wait until the device has ended the session
                while sock.recv(4096):
                    pass
        else:
            fd = os.open(self.url, os.O_RDWR | os.O_NOCTTY)
            try:
                os.write(fd, P.DELIMITER + frame)
                replies = _read_frames(lambda: os.read(fd, 4096)
                                       if select.select([fd], [], [], 5)[0] else b"")
            finally:
                os.close(fd)
        reply = P.parse_reply(replies[-1])
        if isinstance(reply, P.Nak) and reply.code == P.Err.BUSY:
            raise DeviceBusy(reply.text)
        assert isinstance(reply, P.Status), reply
        return reply

    def stopped(self, timeout: float = 20.0) -> int | None:
        """Wait until the device has stopped by itself (a power cut); its exit status (0 for the
        simulator, which stops serving), or ``None`` if it is still running."""
        if self.process is not None:
            try:
                return self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return None
        deadline = time.monotonic() + timeout
        while not self.server.power_lost and time.monotonic() < deadline:
            time.sleep(0.02)
        return 0 if self.server.power_lost else None


def _read_frames(read) -> list[P.Frame]:
    decoder, frames = P.FrameDecoder(), []
    deadline = time.monotonic() + 5
    while not frames and time.monotonic() < deadline:
        frames = decoder.feed(read())
    assert frames, "the device did not answer"
    return frames


def with_model(config: DeviceConfig, state: Path, model: bytes) -> Path:
    """A flash state file holding ``model``, committed by the simulator."""
    dev = Device(config, state_path=state)
    assert isinstance(upload(dev, model), P.Ack)
    dev.flash.close()
    return state


@contextmanager
def mark1_device(*args: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """``mark1 device ARGS`` in a subprocess: (the URL it prints, the process), stopped with
    SIGTERM at the end if it still runs."""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "mark1.cli", "device", *args], cwd=root,
                            env=dict(os.environ, PYTHONPATH=str(root)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url, proc.stderr.read()
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        proc.stdout.close()
        proc.stderr.close()


@contextmanager
def serve(kind: str, config: DeviceConfig = SMALL, *, pty: bool = False,
          timing: LinkTiming = UNPACED, idle_timeout_s: float = IDLE_TIMEOUT_S,
          state: Path | None = None, protocol_version: int = P.PROTOCOL_VERSION,
          cut: tuple[int, int] | None = None, **board: int) -> Iterator[Served]:
    """A device of ``kind`` (``sim``, ``host``, or a core under QEMU: ``m3``, ``m4``) serving a
    pty or a TCP port on 127.0.0.1, with its flash in ``state`` (kept) or in memory; ``cut`` =
    (operation, bytes): the power goes that many bytes into that flash operation (counted from
    start-up). ``board``: options of the firmware under QEMU (``erase_ms``, ``rx_ring``)."""
    if kind == "sim":
        dev = Device(config, state_path=state, protocol_version=protocol_version)
        if cut is not None:
            dev.flash.hook = lambda op: cut[1] if op.index == cut[0] else None
        server = PtyServer(dev, timing, idle_timeout_s) if pty else TcpServer(
            dev, timing=timing, idle_timeout_s=idle_timeout_s)
        try:
            with server:
                yield Served(kind, server.url, device=dev, server=server)
        finally:
            dev.flash.close()
        return
    options = dict(
        listen=None if pty else "127.0.0.1:0", pty=pty, flash_bytes=config.flash_bytes,
        page_bytes=config.page_bytes, ram_bytes=config.ram_bytes,
        max_payload=config.max_payload, name=config.name, state=state,
        idle_timeout_s=idle_timeout_s, endurance=config.endurance,
        cut_after=None if cut is None else f"{cut[0]}+{cut[1]}",
        protocol_version=protocol_version, baud=timing.baud)
    cmd = firmware.host_command(**options, turnaround_ms=1000.0 * timing.turnaround_s) \
        if kind == "host" else firmware.qemu_command(kind, **options, **board)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url, proc.stderr.read()
        yield Served(kind, url, process=proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0, "the firmware did not stop cleanly"
        proc.stdout.close()
        proc.stderr.close()

