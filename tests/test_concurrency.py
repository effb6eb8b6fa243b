"""Two hosts and one device: the device serves one session at a time and tells the other host
clearly (exit status 8); the session in progress -- an inference, a push -- goes on undisturbed
and nothing is corrupted. Over TCP (the device answers ``NAK BUSY``) and over a pty (the port
is locked), in process and through the CLI; and a host killed mid-push frees the device."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import zlib

import numpy as np
import pytest

from export.golden import golden_forward
from export.package import decode_package
from export.serial_host import DeviceBusy, LinkSettings, connect, push, run_inference
from firmware_sim.device import Device
from firmware_sim.serve import LinkTiming, PtyServer, TcpServer
from tests.conftest import ROOT, run_cli
from tests.device_helpers import (  # noqa: F401 - no_thread_leaks: a fixture
    SMALL,
    image,
    no_thread_leaks,
    upload,
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


def _until_free(fn, *args, **kwargs):
    """``fn`` retried while the device still finishes the previous session (at most 2 s)."""
    deadline = time.monotonic() + 2.0
    while True:
        try:
            return fn(*args, **kwargs)
        except DeviceBusy:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.parametrize("server", [TcpServer, PtyServer], ids=["tcp", "pty"])
def test_a_push_during_an_inference_is_told_busy_and_changes_nothing(server):
    dev = _device()
    pkg = decode_package(image())
    x = np.random.default_rng(0).integers(-128, 128, (100, 400)).astype(np.int8)
    out: dict = {}
    with server(dev, timing=PACED) as srv:
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
        st = dev.status()
        assert (st.active_crc32, st.model_id, st.upload_slot) == (
            zlib.crc32(image()), pkg.model_id, 0xFF)  # nothing begun, nothing changed
        rep = _until_free(push, srv.url, image(seed=1), settings=FAST)  # now it is free
    assert dev.status().model_id == decode_package(image(seed=1)).model_id == bytes.fromhex(
        rep.model_id)


def test_two_pushes_at_once_one_wins_the_other_is_told():
    dev = _device()
    a, b = image(seed=1), image(hidden=9, seed=2)
    results: dict = {}
    with TcpServer(dev, timing=PACED) as srv:
        def go(name: str, img: bytes) -> None:
            try:
                results[name] = push(srv.url, img, settings=FAST)
            except DeviceBusy as exc:
                results[name] = exc

        threads = [threading.Thread(target=go, args=(n, i)) for n, i in (("a", a), ("b", b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    kinds = sorted(type(r).__name__ for r in results.values())
    assert kinds == ["DeviceBusy", "PushReport"], results
    winner = a if not isinstance(results["a"], DeviceBusy) else b
    act = dev.store.active()
    assert dev.store.read_slot(act.slot, 0, act.size) == winner


def test_the_cli_tells_a_second_host_the_device_is_busy(tmp_path):
    model = tmp_path / "m.m1w"
    model.write_bytes(image(seed=1))
    for server in (TcpServer, PtyServer):
        dev = _device()
        with server(dev) as srv, connect(srv.url, FAST):  # the first host holds the session
            for args in (("push", str(model)), ("infer", "--task", "digits", "--n", "3")):
                res = run_cli(*args, "--port", srv.url)
                assert res.returncode == 8, res.stderr
                assert res.stderr.count("\n") == 1 and "busy" in res.stderr
                assert "Traceback" not in res.stderr
        assert dev.status().model_id == decode_package(image()).model_id


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
