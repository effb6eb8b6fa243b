"""Pushing over real links: a pty pair and TCP sockets to the simulated device (served in a
thread) and to the C firmware's host port (a process), and to `mark1 device --firmware
sim|host` in a subprocess; resume after a cut link, refusals, power loss. The host cannot tell
the two kinds of device apart."""

from __future__ import annotations

import dataclasses
import select
import signal
import socket
import threading
import zlib

import numpy as np
import pytest

from export.contract import protocol as P
from export.contract.golden import golden_forward
from export.contract.package import decode_package
from export.serial.errors import (
    EXIT_CODES,
    DeviceBusy,
    DeviceRefused,
    LinkLost,
    ModelTooLarge,
    NoDevice,
    VerifyFailed,
    VersionMismatch,
)
from export.serial.infer import active_package, run_inference
from export.serial.link import connect
from export.serial.push import push
from export.serial.settings import LinkSettings
from firmware_sim.serve import LinkTiming
from tests.conftest import ROOT, run_cli
from tests.device_helpers import (  # noqa: F401 - no_thread_leaks: a fixture
    SMALL,
    image,
    mark1_device,
    no_thread_leaks,
    serve,
)

FAST = LinkSettings(timeout_s=0.2, retries=2, reconnects=2, reconnect_delay_s=0.02)


def test_push_and_infer_over_a_real_pty(kind):
    img = image()
    with serve(kind, pty=True) as srv:
        assert srv.url.startswith("/dev/pts/")
        rep = push(srv.url, img, settings=FAST)
        assert (rep.slot, rep.size, rep.verified_bytes) == (0, len(img), len(img))
        assert rep.crc32 == zlib.crc32(img) and rep.device == "test part"
        assert rep.timeouts == rep.go_backs == rep.reconnects == 0
        assert rep.wire_bytes_out > len(img) and rep.wire_bytes_in > len(img)  # read back
        with connect(srv.url, FAST) as link:
            with pytest.raises(DeviceBusy, match="in use by another program"):
                connect(srv.url, FAST)  # one host at a time: the port is locked
            pkg, st = active_package(link)  # read back from the device, decoded
            assert st.active_slot == 0 and pkg.model_id == decode_package(img).model_id
            x = np.random.default_rng(0).integers(-128, 128, (25, 400)).astype(np.int8)
            y, cycles = run_inference(link, x)
            np.testing.assert_array_equal(y, golden_forward(pkg, x))
            # the same count every time (a modelled one), or within 1 % (one measured under QEMU)
            assert cycles.min() > 400 * 8 and cycles.max() - cycles.min() <= cycles.min() // 100
        rep2 = push(srv.url, image(seed=1), settings=FAST)  # the other slot this time
        assert rep2.slot == 1
        assert srv.status().active_slot == 1


def test_push_over_a_real_socket_and_one_session_at_a_time(kind):
    with serve(kind) as srv:
        assert srv.url.startswith("socket://127.0.0.1:")
        rep = push(srv.url, image(), settings=FAST)
        assert rep.slot == 0 and rep.verified_bytes == rep.size
        with connect(srv.url, FAST) as first:
            with pytest.raises(DeviceBusy, match="serving another host"):
                connect(srv.url, FAST)
            assert first.status().active_slot == 0  # the first host is not disturbed
        if srv.server is not None:
            assert srv.server.refused == 1


def test_paced_line_respects_the_line_rate(kind):
    img = image()
    with serve(kind, pty=True, timing=LinkTiming(baud=115200, turnaround_s=0.002)) as srv:
        rep = push(srv.url, img, settings=dataclasses.replace(FAST, baud=115200))
    # a paced line cannot move the wire bytes faster than 10 bits each at 115200 bit/s
    assert rep.seconds >= max(rep.wire_bytes_out, rep.wire_bytes_in) * 10 / 115200
    assert rep.line_bound_s == pytest.approx(len(img) * 10 / 115200)
    assert 0 < rep.efficiency < 1


class CuttingProxy:
    """A TCP relay to the device that drops its first connection after ``cut_after`` bytes
    from the host (a cable pulled mid-upload); later connections are relayed in full."""

    def __init__(self, target: tuple[str, int], cut_after: int) -> None:
        self.target, self.cut_after = target, cut_after
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"socket://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        relays = []
        while not self.stop.is_set():
            if not select.select([self.listener], [], [], 0.05)[0]:
                continue
            host, _ = self.listener.accept()
            dev = socket.create_connection(self.target)
            limit = self.cut_after if self.connections == 0 else None
            self.connections += 1
            t = threading.Thread(target=self._relay, args=(host, dev, limit), daemon=True)
            t.start()
            relays.append(t)
        for t in relays:
            t.join()

    def _relay(self, host: socket.socket, dev: socket.socket, limit: int | None) -> None:
        passed = 0
        try:
            while not self.stop.is_set():
                ready = select.select([host, dev], [], [], 0.05)[0]
                for src in ready:
                    data = src.recv(4096)
                    if not data:
                        return
                    if src is host and limit is not None:
                        data = data[: max(0, limit - passed)]
                        passed += len(data)
                    (dev if src is host else host).sendall(data)
                    if limit is not None and passed >= limit:
                        return  # cut: both connections are dropped
        except OSError:
            return
        finally:
            host.close()
            dev.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.listener.close()


def test_upload_resumes_from_the_last_acknowledged_offset_after_a_cut(kind):
    img = image(hidden=16)  # 7 KB: 14 frames of 508 bytes
    with serve(kind) as srv:
        proxy = CuttingProxy(srv.address, cut_after=len(img) // 2)
        try:
            rep = push(proxy.url, img, settings=FAST)
        finally:
            proxy.close()
        assert srv.status().active_crc32 == zlib.crc32(img)
    assert rep.reconnects == 1 and proxy.connections == 2
    first, resumed = rep.resumed_from
    assert first == 0 and 0 < resumed < len(img)
    chunk = SMALL.max_payload - 4
    # only the frames in flight when the link was cut are sent again
    assert rep.data_bytes_sent - len(img) <= FAST.window * chunk
    assert rep.verified_bytes == len(img)


def test_refusals_reach_the_host_as_clear_errors(kind):
    big = image(hidden=24)
    with serve(kind) as srv:
        with pytest.raises(ModelTooLarge, match=f"model of {len(big)} bytes does not fit a "
                                                "7680-byte flash slot"):
            push(srv.url, big, settings=FAST)
    for other in (1, P.PROTOCOL_VERSION + 1):  # the version before (no image id in COMMIT)
        with serve(kind, protocol_version=other) as srv:
            with pytest.raises(VersionMismatch,
                               match=f"version {other}; this host speaks {P.PROTOCOL_VERSION}"):
                push(srv.url, image(), settings=FAST)
            st = srv.status()  # refused before anything was sent
            assert (st.active_slot, st.upload_slot, st.total_erases) == (0xFF, 0xFF, 0)
    with serve(kind, dataclasses.replace(SMALL, endurance=0)) as srv:
        with pytest.raises(VerifyFailed, match="read-back differs from the file at byte"):
            push(srv.url, image(), settings=FAST)
    silent = socket.create_server(("127.0.0.1", 0))  # accepts connections, never answers
    try:
        port = silent.getsockname()[1]
        with pytest.raises(NoDevice, match="no device answering"):
            push(f"socket://127.0.0.1:{port}", image(),
                 settings=dataclasses.replace(FAST, retries=1, timeout_s=0.05))
    finally:
        silent.close()
    with pytest.raises(ValueError, match="cannot open port"):
        push("/dev/does-not-exist", image(), settings=FAST)
    errors = (NoDevice, VersionMismatch, ModelTooLarge, VerifyFailed, LinkLost, DeviceBusy,
              DeviceRefused)
    assert sorted(e.exit_code for e in errors) == sorted(set(EXIT_CODES) - {0, 2})
    readme = (ROOT / "docs" / "DEVICE.md").read_text()  # the exit-code table
    for code in EXIT_CODES:
        assert f"| {code} |" in readme


def test_power_cut_mid_upload_keeps_the_old_model(kind, tmp_path):
    state = tmp_path / "flash.bin"
    old, new = image(), image(seed=1)
    with serve(kind, state=state) as srv:
        push(srv.url, old, settings=FAST)
    with serve(kind, state=state, cut=(6, 100)) as srv:  # inside the 7th erase or write
        with pytest.raises(LinkLost):
            push(srv.url, new, settings=dataclasses.replace(FAST, reconnects=1))
        assert srv.stopped() == (0 if kind == "sim" else 3)  # the part stayed off
    with serve(kind, state=state) as srv:  # power back on: flash from the state file
        assert srv.status().active_crc32 == zlib.crc32(old)
        rep = push(srv.url, new, settings=FAST)
        assert rep.slot == 1 and srv.status().active_crc32 == zlib.crc32(new)


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def device_process(tmp_path, kind):
    """`mark1 device --firmware KIND --pty` in a subprocess (small flash); yields (path,
    process)."""
    with mark1_device("--firmware", kind, "--pty", "--flash", "16K", "--page", "512", "--ram",
                      "4K", "--max-payload", "512", "--state", str(tmp_path / "f.bin")) as (
                          path, proc):
        assert path.startswith("/dev/pts/")
        yield path, proc


def test_cli_device_push_and_infer_over_a_pty(device_process, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    path, proc = device_process
    model = tmp_path / "m.m1w"
    model.write_bytes(image())
    res = run_cli("push", str(model), "--port", path, "-q")
    assert res.returncode == 0, res.stderr
    assert "pushed m.m1w" in res.stdout and "now running from slot A" in res.stdout
    res = run_cli("infer", "--port", path, "--task", "digits", "--n", "15", "--show", "2")
    assert res.returncode == 0, res.stderr
    assert "bit-exact 15/15 (100.0 %)" in res.stdout and "cycles" in res.stdout
    plt.imsave(tmp_path / "a.png", np.eye(20), cmap="gray")
    np.save(tmp_path / "b.npy", np.zeros((2, 20, 20)))
    res = run_cli("infer", "--port", path, str(tmp_path / "a.png"), str(tmp_path / "b.npy"),
                  "--model", str(model))
    assert res.returncode == 0, res.stderr
    assert "a.png" in res.stdout and "b.npy[1]" in res.stdout and "bit-exact 3/3" in res.stdout
    big = tmp_path / "big.m1w"
    big.write_bytes(image(hidden=24))
    res = run_cli("push", str(big), "--port", path, "-q")
    assert res.returncode == 5 and res.stderr.count("\n") == 1
    assert f"{big.stat().st_size} bytes does not fit a 7680-byte flash slot" in res.stderr
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0


def test_cli_errors_are_one_line_with_documented_codes(tmp_path):
    model = tmp_path / "m.m1w"
    model.write_bytes(image())
    not_a_model = tmp_path / "x.m1w"
    not_a_model.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    res = run_cli("push", str(not_a_model), "--port", "loop://")
    assert res.returncode == 2 and "not a valid weight package" in res.stderr
    res = run_cli("push", str(model), "--port", "/dev/does-not-exist")
    assert res.returncode == 2 and "cannot open port" in res.stderr
    assert res.stderr.count("\n") == 1
    res = run_cli("push", str(model), "--port", "loop://", "--timeout", "0.05", "--retries", "1")
    assert res.returncode == 3 and "no device answering on loop://" in res.stderr
    res = run_cli("push", "--help")
    assert res.returncode == 0 and "exit status" in res.stdout


def test_a_push_refused_for_its_report_sends_nothing_to_the_device(tmp_path):
    """A report that cannot be written is found before the first byte goes out: the device
    runs its old model and has seen no frame (it used to run the new model, then "bad input")."""
    from firmware_sim.device import Device
    from firmware_sim.serve import TcpServer
    from tests.test_bad_input import run_in_process

    dev = Device(SMALL)
    old, new = image(), image(seed=1)
    (tmp_path / "new.m1w").write_bytes(new)
    with TcpServer(dev) as srv:
        push(srv.url, old, settings=FAST)
        frames = dev.status().frames_ok
        for report in ("/proc/x.json", str(tmp_path / "new.m1w"), str(tmp_path),
                       str(tmp_path / "new.m1w" / "r.json"), ""):
            answer = run_in_process(["push", str(tmp_path / "new.m1w"), "--port", srv.url,
                                     "--json", report, "-q"])
            assert answer.code == 2 and answer.line.count("\n") == 0, answer
            assert "--json" in answer.line and ".part" not in answer.line, answer
        assert srv.sessions == 1  # none of the refused pushes even connected
    st = dev.status()
    assert st.frames_ok == frames and st.model_id == decode_package(old).model_id
    assert st.upload_slot == 0xFF and (tmp_path / "new.m1w").read_bytes() == new
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.m1w"]


def test_status_erase_totals_saturate_instead_of_faulting_the_device(tmp_path):
    """Counters that sum past what STATUS's u32 fields hold (a worn-out part) are reported as
    0xFFFFFFFF: the device keeps answering."""
    import struct

    from firmware_sim.device import Device, DeviceConfig
    from firmware_sim.flash import FILE_HEADER, MAX_ERASES
    from firmware_sim.serve import TcpServer

    part = DeviceConfig(flash_bytes=64 * 1024, page_bytes=1024, ram_bytes=4096, max_payload=512)
    path = tmp_path / "flash.bin"
    Device(part, state_path=path).flash.close()
    raw = bytearray(path.read_bytes())
    raw[FILE_HEADER.size : FILE_HEADER.size + 4 * 64] = struct.pack("<64I", *[MAX_ERASES] * 64)
    path.write_bytes(bytes(raw))
    worn = Device(part, state_path=path)
    with TcpServer(worn) as srv, connect(srv.url, FAST) as link:
        st = link.status()
    worn.flash.close()
    assert (st.max_erase_count, st.total_erases) == (MAX_ERASES, 0xFFFFFFFF)
    assert worn.faults == 0
