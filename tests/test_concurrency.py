"""Two hosts and one device: the device serves one session at a time and tells the other host
clearly (exit status 8); the session in progress -- an inference, a push -- goes on undisturbed
and nothing is corrupted. Over TCP (the device answers ``NAK BUSY``) and over a pty (the port
is locked), in process and through the CLI, against the simulator and the C firmware's host
port; and a host killed mid-push frees the device."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib

import numpy as np
import pytest

from export.contract import protocol as P
from export.contract.golden import golden_forward
from export.contract.package import decode_package
from export.serial.errors import DeviceBusy, NoDevice
from export.serial.infer import active_package, run_inference
from export.serial.link import connect
from export.serial.push import push
from export.serial.report import PushReport
from export.serial.settings import LinkSettings
from firmware_sim.device import Device
from firmware_sim.serve import LinkTiming, PtyServer
from tests.conftest import ROOT, run_cli
from tests.device_helpers import (  # noqa: F401 - no_thread_leaks: a fixture
    SMALL,
    image,
    no_thread_leaks,
    serve,
    upload,
    with_model,
)

FAST = LinkSettings(baud=460800, timeout_s=0.2, retries=2, reconnects=2,
                    reconnect_delay_s=0.02)
PACED = LinkTiming(baud=460800)
"""Fast enough for a test, slow enough that a session is still running when the other host
arrives (100 inferences take about a second)."""


def _device() -> Device:
    dev = Device(SMALL)
    upload(dev, image())
    return dev


def _until_free(fn, *args, patience: float = 2.0,
                retry_on: tuple[type[Exception], ...] = (DeviceBusy,), **kwargs):
    """``fn`` retried while the device still finishes the previous session (at most
    ``patience`` seconds)."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return fn(*args, **kwargs)
        except retry_on:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.parametrize("pty", [False, True], ids=["tcp", "pty"])
def test_a_push_during_an_inference_is_told_busy_and_changes_nothing(kind, pty, tmp_path):
    pkg = decode_package(image())
    x = np.random.default_rng(0).integers(-128, 128, (100, 400)).astype(np.int8)
    out: dict = {}
    state = with_model(SMALL, tmp_path / "flash.bin", image())
    with serve(kind, pty=pty, timing=PACED, state=state) as srv:
        with connect(srv.url, FAST) as link:
            running = threading.Event()

            def infer() -> None:
                out["y"], _ = run_inference(link, x, done=lambda k: running.set())

            t = threading.Thread(target=infer)
            t.start()
            assert running.wait(10)
            refusals = []
            while t.is_alive():  # the second host keeps trying while the first one works
                with pytest.raises(DeviceBusy) as err:
                    push(srv.url, image(seed=1), settings=FAST)
                refusals.append(str(err.value))
            t.join()
        assert refusals and all("busy" in r for r in refusals)
        assert "serving another host" in refusals[0] or "in use by another program" in \
            refusals[0]
        np.testing.assert_array_equal(out["y"], golden_forward(pkg, x))  # undisturbed
        st = _until_free(srv.status)
        assert (st.active_crc32, st.model_id, st.upload_slot) == (
            zlib.crc32(image()), pkg.model_id, 0xFF)  # nothing begun, nothing changed
        rep = _until_free(push, srv.url, image(seed=1), settings=FAST)  # now it is free
        assert _until_free(srv.status).model_id == decode_package(
            image(seed=1)).model_id == bytes.fromhex(rep.model_id)


def _send_what_it_takes(sock: socket.socket, data: bytes) -> int:
    """Send as much of ``data`` as the connection takes without blocking (at most 2,000
    tries of 5 ms); the bytes sent. The socket is left non-blocking."""
    sock.setblocking(False)
    sent, tries = 0, 0
    while sent < len(data) and tries < 2000:
        tries += 1
        try:
            sent += sock.send(data[sent : sent + 65536])
        except BlockingIOError:
            time.sleep(0.005)
    return sent


def test_two_pushes_at_once_one_wins_the_other_is_told(kind, tmp_path):
    """The second host arrives while the first is uploading (it is let in from the first's
    progress, and the first waits for its answer, so a loaded machine cannot reorder them):
    the first finishes, the second is told the device is busy."""
    a, b = image(seed=1), image(hidden=9, seed=2)
    results: dict = {}
    second_answered = threading.Event()
    state = with_model(SMALL, tmp_path / "flash.bin", image())
    with serve(kind, timing=PACED, state=state) as srv:
        def go(name: str, img: bytes, progress=None) -> None:
            try:
                results[name] = push(srv.url, img, settings=FAST, progress=progress)
            except DeviceBusy as exc:
                results[name] = exc
            finally:
                if name == "b":
                    second_answered.set()

        second = threading.Thread(target=go, args=("b", b))

        def first_bytes_acknowledged(_: int) -> None:
            if not second.is_alive() and not second_answered.is_set():
                second.start()
                second_answered.wait(10)

        first = threading.Thread(target=go, args=("a", a, first_bytes_acknowledged))
        first.start()
        first.join(60)
        second.join(60)
        assert isinstance(results["a"], PushReport), results
        assert isinstance(results["b"], DeviceBusy), results
        assert _until_free(srv.status).model_id == decode_package(a).model_id


@pytest.mark.parametrize("pty", [False, True], ids=["tcp", "pty"])
def test_the_cli_tells_a_second_host_the_device_is_busy(kind, pty, tmp_path):
    model = tmp_path / "m.m1w"
    model.write_bytes(image(seed=1))
    state = with_model(SMALL, tmp_path / "flash.bin", image())
    with serve(kind, pty=pty, state=state) as srv:
        with connect(srv.url, FAST):  # the first host holds the session
            for args in (("push", str(model)), ("infer", "--task", "digits", "--n", "3")):
                res = run_cli(*args, "--port", srv.url)
                assert res.returncode == 8, res.stderr
                assert res.stderr.count("\n") == 1 and "busy" in res.stderr
                assert "Traceback" not in res.stderr
        assert _until_free(srv.status).model_id == decode_package(image()).model_id


def test_a_host_killed_mid_push_leaves_the_device_usable(tmp_path):
    """`mark1 push` killed (SIGKILL) in the middle of its upload: the port is freed, the old
    model runs, and the next push of the same model resumes where the killed one stopped."""
    dev = _device()
    new = image(hidden=16)
    model = tmp_path / "new.m1w"
    model.write_bytes(new)
    with PtyServer(dev, LinkTiming(baud=38400)) as srv:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen([sys.executable, "-m", "mark1.cli", "push", str(model),
                                 "--port", srv.url, "--baud", "38400", "-q"],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while dev.status().upload_received < 1000 and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=20)
        time.sleep(1.0)  # what the killed host had written is handled
        got = dev.status().upload_received
        assert 1000 <= got < len(new)
        assert dev.status().model_id == decode_package(image()).model_id
        # the frames the killed host had in flight are still being handled: default patience
        rep = _until_free(push, srv.url, new, settings=LinkSettings(baud=38400))
    assert rep.resumed_from == [got] and rep.data_bytes_sent == len(new) - got
    assert dev.store.read_slot(dev.store.active().slot, 0, len(new)) == new


def _silent_host(host: str, port: int) -> socket.socket:
    """A host that opens a session, shakes hands and then says nothing more, without closing
    its connection (its machine lost power, its cable was pulled, it hangs)."""
    sock = socket.create_connection((host, port), timeout=10)
    sock.sendall(P.encode_frame(P.Hello().frame(1)))
    reply = P.FrameDecoder().feed(sock.recv(4096))
    assert reply and isinstance(P.parse_reply(reply[0]), P.Info)
    return sock


def _closed_by_the_device(sock: socket.socket) -> bool:
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True


def test_a_silent_host_loses_the_session_after_the_idle_timeout(kind, tmp_path):
    new = image(seed=1)
    state = with_model(SMALL, tmp_path / "flash.bin", image())
    with serve(kind, idle_timeout_s=1.0, state=state) as srv:
        silent = _silent_host(*srv.address)
        try:
            with pytest.raises(DeviceBusy):  # within the idle time the session is its own
                push(srv.url, new, settings=FAST)
            rep = _until_free(push, srv.url, new, settings=FAST, patience=20.0)
            assert _closed_by_the_device(silent)
        finally:
            silent.close()
        if srv.server is not None:
            assert srv.server.sessions == 2 and srv.server.refused >= 1
            assert srv.server.idle_ends == 1
        assert rep.verified_bytes == len(new)
        assert _until_free(srv.status).model_id == decode_package(new).model_id


def test_the_device_cli_takes_an_idle_timeout(kind, tmp_path):
    for bad in ("-1", "nan", "soon"):
        res = run_cli("device", "--firmware", kind, "--listen", "127.0.0.1:0",
                      "--idle-timeout", bad)
        assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
        assert "--idle-timeout" in res.stderr and "or 0 (never)" in res.stderr
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "mark1.cli", "device", "--firmware", kind, "--listen",
         "127.0.0.1:0", "--flash", "16K", "--page", "512", "--ram", "4K", "--max-payload",
         "512", "--idle-timeout", "0.5"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("socket://127.0.0.1:"), proc.stderr.read()
        host, port = url.removeprefix("socket://").rsplit(":", 1)
        silent = _silent_host(host, int(port))
        try:
            rep = _until_free(push, url, image(), settings=FAST, patience=20.0)
            assert rep.verified_bytes == len(image()) and _closed_by_the_device(silent)
        finally:
            silent.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        proc.stdout.close()
        err = proc.stderr.read()
        proc.stderr.close()
    assert "idle timeout 0.5 s" in err


def test_replies_to_a_host_that_died_on_a_pty_never_reach_the_next_one(kind, tmp_path):
    """On a pty nothing tells the device that a host has gone: its lock goes with it, but the
    replies to what it had sent are still on their way out. The next host's ``HELLO`` starts a
    new conversation: the device drops the replies it has not sent yet, so that none of them is
    taken for the answer to a request of the next host (they number their requests alike)."""
    pkg = decode_package(image())
    x = np.random.default_rng(1).integers(-128, 128, (5, 400)).astype(np.int8)
    state = with_model(SMALL, tmp_path / "flash.bin", image())
    with serve(kind, pty=True, timing=LinkTiming(baud=115200), state=state) as srv:
        fd = os.open(srv.url, os.O_RDWR | os.O_NOCTTY)
        stale = [P.Read(P.ACTIVE_SLOT, 100, 500).frame(seq) for seq in range(1, 61)]
        os.write(fd, b"".join(P.encode_frame(f) for f in stale))
        os.close(fd)  # gone, with 30 KB of replies (2.6 s of line) still to come
        with connect(srv.url, FAST) as link:
            got, st = active_package(link)  # STATUS and a read-back of the whole model
            y, _ = run_inference(link, x)
        assert got.model_id == pkg.model_id and st.model_id == pkg.model_id
        np.testing.assert_array_equal(y, golden_forward(pkg, x))


@pytest.mark.parametrize("what", ["frames", "noise"])
def test_every_device_drops_the_unread_megabyte_of_a_host_that_left(kind, what, tmp_path):
    """The same through the link alone, for the simulator and the C firmware's host port: a
    host floods a paced device (57,600 baud) with a megabyte (STATUS frames, or noise that
    gets no reply) that is three minutes of line, and closes; the next push is served within
    seconds (it used to be told busy for three minutes), and the device handled only part of
    the flood."""
    frame = P.encode_frame(P.Frame(int(P.Msg.STATUS), 1))
    flood = (frame if what == "frames" else b"\x01" * 64) * (1_000_000 // len(frame))
    state = with_model(SMALL, tmp_path / "flash.bin", image())
    with serve(kind, timing=LinkTiming(baud=57600), state=state) as srv:
        host, _, port = srv.url.removeprefix("socket://").rpartition(":")
        client = socket.create_connection((host, int(port)))
        sent = _send_what_it_takes(client, flood)
        time.sleep(0.5)  # the device is at work on the flood
        with_replies = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := client.recv(1 << 20):  # read what came back: the close is a FIN
                with_replies += chunk
        client.close()
        new = image(seed=1)
        # the device may still be sending its replies to the frames it had taken (57,600
        # baud) when the next host's first HELLOs (0.2 s each) come: retried, within seconds
        rep = _until_free(push, srv.url, new, settings=FAST, patience=10.0,
                          retry_on=(DeviceBusy, NoDevice))
        with connect(srv.url, FAST) as link:
            st = link.status()
    assert sent > 500_000
    assert rep.verified_bytes == len(new) and st.model_id == decode_package(new).model_id
    assert st.frames_ok < len(flood) // len(frame) // 2


@pytest.mark.parametrize("what", ["frames", "noise"])
def test_a_host_that_sends_a_megabyte_and_leaves_frees_the_device_at_once(what):
    """What a host sent and the device has not received yet goes with the host: a paced device
    (57,600 baud: a megabyte is three minutes of line) handles a few of the flood's frames, not
    all of them, and the next host gets the device."""
    from firmware_sim.serve import TcpServer

    dev = _device()
    flood = P.encode_frame(P.Frame(int(P.Msg.STATUS), 1)) if what == "frames" else b"\x01" * 64
    flood *= 1_000_000 // len(flood)
    with TcpServer(dev, timing=LinkTiming(baud=57600)) as srv:
        host = socket.create_connection((srv.host, srv.port))
        sent = _send_what_it_takes(host, flood)
        for _ in range(1000):  # the device has taken the connection (at most 10 s)
            if srv.sessions:
                break
            time.sleep(0.01)
        host.close()
        for _ in range(1000):  # the session ends with its host (at most 10 s)
            if not srv.serving:
                break
            time.sleep(0.01)
        assert not srv.serving
        handled = dev.status().frames_ok
        new = image(seed=1)
        rep = push(srv.url, new, settings=FAST)
        assert srv.sessions == 2 and srv.refused == 0
    assert sent > 500_000
    assert handled < sent // len(P.encode_frame(P.Frame(int(P.Msg.STATUS), 1))) // 10
    assert rep.verified_bytes == len(new)
    assert dev.status().model_id == decode_package(new).model_id
