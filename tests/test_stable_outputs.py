"""The files and wire traffic a user's runs produce stay the same, byte for byte, for a seed.

Each expected digest below was recorded before a restructuring of the code (2026-12-07); a change
to any of them is a change of behaviour and must be deliberate: say so in the commit and update
the digest here together with the format's documentation.
"""

from __future__ import annotations

import hashlib
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from export.contract import protocol as P
from export.contract.package import encode_package
from export.int8.quantize import quantize_machine, quantize_mlp
from export.serial.push import push
from firmware_sim.device import DeviceConfig
from mark1 import MarkI, make_task
from tests.device_helpers import serve
from tests.int8_models import random_checkpoint, task_data, trained_machine

EXPECTED = {
    "machine_ideal": "c75d64c84392e9a6",
    "machine_cds-1960": "1b70bc78a729b163",
    "package_mlp": "f383e786d86265b1",
    "package_machine": "491a50f2bca6710a",
    "push_host_to_device": "b4170938c8be0a56",
    "push_device_to_host": "49a8469ca1afaefc",
}


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def mlp_package() -> bytes:
    rng = np.random.default_rng(5)
    ckpt = random_checkpoint(rng, [400, 24, 10])
    ckpt.classes = [str(k) for k in range(10)]
    return encode_package(quantize_mlp(ckpt, rng.uniform(size=(64, 400))))


@pytest.mark.parametrize("preset", ["ideal", "cds-1960"])
def test_a_trained_machine_file_is_the_same_bytes_for_the_same_seed(preset, tmp_path: Path):
    task = make_task("e-f", seed=0)
    machine = MarkI(preset=preset, random_state=3, max_iter=3).fit(task.X_train, task.y_train)
    path = machine.save(tmp_path / "machine.npz", task="e-f")
    assert digest(path.read_bytes()) == EXPECTED[f"machine_{preset}"]


def test_the_int8_packages_of_an_mlp_and_a_mark_i_are_the_same_bytes():
    assert digest(mlp_package()) == EXPECTED["package_mlp"]
    X = task_data("digits")[0][:64]
    machine = encode_package(quantize_machine(trained_machine("digits", n_a=96), X))
    assert digest(machine) == EXPECTED["package_machine"]


def _recording_relay(target: tuple[str, int]) -> tuple[socket.socket, bytearray, bytearray,
                                                         threading.Thread]:
    """A TCP relay in front of ``target`` that records both directions."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)
    to_device, to_host = bytearray(), bytearray()

    def pump(src: socket.socket, dst: socket.socket, record: bytearray) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            record += data
            dst.sendall(data)

    def relay() -> None:
        host, _ = listener.accept()
        device = socket.create_connection(target, timeout=30)
        back = threading.Thread(target=pump, args=(device, host, to_host))
        back.start()
        pump(host, device, to_device)
        back.join()
        host.close()
        device.close()

    thread = threading.Thread(target=relay)
    thread.start()
    return listener, to_device, to_host, thread


def _frames_by_seq(stream: bytes) -> bytes:
    """The frames of a byte stream in sequence-number order (the device answers a window of
    requests in an order that depends on timing; the frames themselves do not)."""
    frames = P.FrameDecoder().feed(stream)
    return b"".join(P.encode_frame(f) for f in sorted(frames, key=lambda f: f.seq))


def test_a_push_sends_and_receives_the_same_frames(kind):
    """... from the simulator and from the C firmware (named as the simulator names itself)."""
    with serve(kind, DeviceConfig()) as server:
        listener, to_device, to_host, thread = _recording_relay(server.address)
        try:
            push(f"socket://127.0.0.1:{listener.getsockname()[1]}", mlp_package())
        finally:
            thread.join(timeout=30)
            listener.close()
    assert digest(bytes(to_device)) == EXPECTED["push_host_to_device"]
    assert digest(_frames_by_seq(bytes(to_host))) == EXPECTED["push_device_to_host"]
