"""Device operations as a user runs them: ``mark1 status``, ``mark1 rollback``, ``mark1 info``,
``mark1 ports`` and ``--trace`` of push and infer, each against a device served on a real pty
-- the simulator and the C firmware's host port alike -- and compared with what the device
holds (its STATUS, its flash, the packages pushed)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from export.contract import protocol as P
from export.contract.package import decode_package, encode_package
from export.serial.link import connect
from export.serial.push import push
from export.serial.settings import LinkSettings
from firmware_sim.device import Device
from firmware_sim.lossy_link import LineFaults, LossyLink
from firmware_sim.serve import PtyServer, TcpServer
from tests.device_helpers import SMALL, image, no_thread_leaks, serve  # noqa: F401
from tests.int8_models import random_machine, tiny_package

FAST = LinkSettings(timeout_s=1.0, retries=3, reconnects=0)
QUICK = ("--timeout", "1", "--retries", "3")
"""Link options of the commands under test: a local device answers at once, unless the machine
is busy (a resend costs a second only where a reply is late)."""
NOISY = ("--timeout", "0.2", "--retries", "2")
"""Link options over a line that loses frames on purpose: a lost reply costs 0.2 s."""


@dataclass
class Run:
    code: int
    out: str
    err: str


def mark1(*args: str) -> Run:
    """``mark1 ARGS`` in this process (the console script's code path)."""
    from mark1.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return Run(code, out.getvalue(), err.getvalue())


@pytest.fixture
def packages(tmp_path) -> dict[str, Path]:
    """Three real packages as files; b rounds as TensorFlow Lite does (package format 2)."""
    from dataclasses import replace

    double = encode_package(replace(decode_package(image(hidden=9, seed=1)), rounding="double"))
    files = {}
    for name, data in (("a", image()), ("b", double), ("c", image(hidden=10, seed=2))):
        files[name] = tmp_path / f"{name}.m1w"
        files[name].write_bytes(data)
    return files


def model_id(path: Path) -> str:
    return decode_package(path.read_bytes()).model_id.hex()


def status_json(url: str, tmp_path: Path) -> dict:
    out = tmp_path / "status.json"
    run = mark1("status", "--port", url, *QUICK, "--json", str(out))
    assert run.code == 0 and not run.err, run
    return json.loads(out.read_text()) | {"text": run.out}


# --------------------------------------------------------------------------- status


def test_status_shows_the_device_its_slots_the_upload_and_the_wear(kind, tmp_path, packages):
    with serve(kind, pty=True) as srv:
        st = status_json(srv.url, tmp_path)
        dev = st["device"]
        assert (dev["name"], dev["version"], dev["flash_bytes"], dev["slot_bytes"]) == (
            SMALL.name, P.PROTOCOL_VERSION, SMALL.flash_bytes, (SMALL.flash_bytes // 512 - 2)
            // 2 * 512)
        assert st["active_slot"] == "-" and [s["state"] for s in st["slots"]] == ["none", "none"]
        assert "slot A   no committed model" in st["text"]

        for name in "ab":
            push(srv.url, packages[name].read_bytes(), settings=FAST)
        st = status_json(srv.url, tmp_path)
        a, b = st["slots"]
        assert st["active_slot"] == "B" and st["runnable"]
        assert (a["state"], a["model_id"], a["size"], a["crc32"]) == (
            "committed", model_id(packages["a"]), packages["a"].stat().st_size,
            zlib.crc32(packages["a"].read_bytes()))
        assert (b["state"], b["model_id"], b["n_inputs"], b["n_outputs"]) == (
            "active", model_id(packages["b"]), 400, 10)
        assert b["ram_bytes"] == decode_package(packages["b"].read_bytes()).ram_bytes
        assert [(s["format_version"], s["rounding"]) for s in (a, b)] == [(1, "single"),
                                                                          (2, "double")]
        assert f"slot A   committed earlier: model {model_id(packages['a'])[:16]}" in st["text"]
        assert f"slot B   active: model {model_id(packages['b'])[:16]}" in st["text"]
        assert "package format 2, double rounding, runnable" in st["text"]
        device = srv.status()  # what the device itself says, by a bare STATUS frame
        assert (st["max_erase_count"], st["total_erases"]) == (
            device.max_erase_count, device.total_erases) and device.total_erases > 0

        c = packages["c"].read_bytes()  # an upload stopped after 600 bytes (into slot A)
        with connect(srv.url, FAST) as link:
            link.call(P.Begin(len(c), zlib.crc32(c), 0))
            link.call(P.Data(0, c[:300]))
            link.call(P.Data(300, c[300:600]))
        st = status_json(srv.url, tmp_path)
        assert st["upload"] == {"slot": 0, "size": len(c), "received": 600, "durable": 600}
        assert st["slots"][0]["state"] == "uploading"  # its first page is c's now
        assert re.search(r"upload   into slot A: 600 of [\d,]+ B received", st["text"])


# --------------------------------------------------------------------------- rollback


def test_rollback_returns_to_the_model_before_the_last_push_and_back(kind, tmp_path, packages):
    with serve(kind, pty=True) as srv:
        for name in "ab":
            push(srv.url, packages[name].read_bytes(), settings=FAST)
        run = mark1("rollback", "--port", srv.url, *QUICK, "--check")
        assert run.code == 0 and "nothing changed" in run.out
        assert status_json(srv.url, tmp_path)["active_slot"] == "B"

        out = tmp_path / "rollback.json"
        run = mark1("rollback", "--port", srv.url, *QUICK, "--json", str(out))
        assert run.code == 0 and "slot B -> slot A" in run.out, run
        rep = json.loads(out.read_text())
        assert (rep["from_slot"], rep["to_slot"], rep["changed"], rep["model_id"]) == (
            "B", "A", True, model_id(packages["a"]))
        # the device runs a again, bit-exact with the golden reference on its outputs
        run = mark1("infer", "--port", srv.url, *QUICK, "--task", "digits", "--n", "8",
                    "--model", str(packages["a"]))
        assert run.code == 0 and "bit-exact 8/8" in run.out, run

        run = mark1("rollback", "--port", srv.url, *QUICK)  # and forth
        assert run.code == 0 and "slot A -> slot B" in run.out
        run = mark1("rollback", "--port", srv.url, *QUICK, "--slot", "B")
        assert run.code == 0 and "already active" in run.out
        st = status_json(srv.url, tmp_path)
        assert (st["active_slot"], st["slots"][1]["model_id"]) == ("B", model_id(packages["b"]))

        push(srv.url, packages["c"].read_bytes(), settings=FAST)  # into A, over a
        run = mark1("rollback", "--port", srv.url, *QUICK)
        assert run.code == 0 and "slot A -> slot B" in run.out
        st = status_json(srv.url, tmp_path)
        assert [s["model_id"] for s in st["slots"]] == [model_id(packages["c"]),
                                                       model_id(packages["b"])]


def test_rollback_is_refused_where_the_other_slot_holds_no_committed_model(kind, tmp_path,
                                                                          packages):
    with serve(kind, pty=True) as srv:
        push(srv.url, packages["a"].read_bytes(), settings=FAST)
        run = mark1("rollback", "--port", srv.url, *QUICK)
        assert run.code == 9 and run.err.count("\n") == 1, run
        assert "slot B holds no committed model" in run.err
        push(srv.url, packages["b"].read_bytes(), settings=FAST)
        c = packages["c"].read_bytes()
        with connect(srv.url, FAST) as link:  # an upload has begun writing over a
            link.call(P.Begin(len(c), zlib.crc32(c), 0))
            link.call(P.Data(0, c[:100]))
        run = mark1("rollback", "--port", srv.url, *QUICK)
        assert run.code == 9 and "slot A holds no committed model" in run.err
        st = status_json(srv.url, tmp_path)  # nothing changed
        assert (st["active_slot"], st["slots"][1]["model_id"], st["upload"]["received"]) == (
            "B", model_id(packages["b"]), 100)


class _DeviceBeforeRollback(Device):
    """A device whose firmware predates ``ROLLBACK``: it answers the type as unknown."""

    def handle(self, frame: P.Frame) -> P.Frame:
        if frame.type == P.Msg.ROLLBACK:
            return self._nak(frame, P.Err.UNKNOWN_TYPE, frame.type, 0,
                             f"frame type {frame.type:#04x} is not a request")
        return super().handle(frame)


def test_a_device_that_predates_rollback_is_told_apart(tmp_path, packages):
    dev = _DeviceBeforeRollback(SMALL)
    try:
        with PtyServer(dev) as srv:
            for name in "ab":  # pushes work as before
                push(srv.url, packages[name].read_bytes(), settings=FAST)
            run = mark1("rollback", "--port", srv.url, *QUICK)
            assert run.code == 9 and "predates it" in run.err and run.err.count("\n") == 1
            st = status_json(srv.url, tmp_path)
            assert [s["state"] for s in st["slots"]] == ["unknown", "active"]
            assert "slot A   unknown (the device's firmware predates ROLLBACK)" in st["text"]
    finally:
        dev.flash.close()


# --------------------------------------------------------------------------- info


@pytest.mark.parametrize("source", ["mlp", "mlp-double", "markI"])
def test_info_shows_the_layout_checks_and_needs_of_a_package(tmp_path, source):
    from dataclasses import replace

    import numpy as np

    from export.int8.quantize import quantize_machine

    if source == "mlp":
        data = image()
    elif source == "mlp-double":
        data = encode_package(replace(decode_package(image()), rounding="double"))
    else:
        rng = np.random.default_rng(3)
        data = encode_package(quantize_machine(
            random_machine(rng, n_a=24, n_r=4, n_classes=3), rng.uniform(size=(20, 400))))
    path = tmp_path / "model.m1w"
    path.write_bytes(data)
    run = mark1("info", str(path), "--json", str(tmp_path / "info.json"))
    assert run.code == 0 and not run.err, run
    info = json.loads((tmp_path / "info.json").read_text())
    pkg = decode_package(data)
    assert sum(info["sections"].values()) == len(data) == info["needs"]["flash_bytes"]
    assert (info["sections"]["codebook"] > 0) == (pkg.codebook is not None)
    assert info["model_id"] == pkg.model_id.hex() and info["model_id"] in run.out
    assert info["crc32_stored"] == info["crc32_computed"] == int.from_bytes(data[-4:], "little")
    assert info["needs"]["ram_bytes"] == pkg.ram_bytes and info["macs"] == pkg.macs
    assert [(x["type"], x["n_in"], x["n_out"]) for x in info["layers"]] == [
        (layer.kind, layer.n_in, layer.n_out) for layer in pkg.layers]
    assert sum(x["data_bytes"] for x in info["layers"]) == info["sections"]["layer data"]
    # the rounding the package records, and the format version a device must read for it
    assert (info["rounding"], info["format_version"]) == (pkg.rounding, pkg.format_version)
    assert info["format_version"] == int.from_bytes(data[4:6], "little")
    option = "tflite" if pkg.rounding == "double" else "single"
    assert f"rounding  {pkg.rounding} (`mark1 quantize --rounding {option}`)" in run.out
    assert ("a device must read package format 2" in run.out) == (pkg.rounding == "double")
    # the frame size it needs is what the device checks: a part with one byte less refuses it
    need = info["needs"]["max_payload"]
    for max_payload, ok in ((need, True), (need - 1, False)):
        if max_payload < 64:
            continue
        dev = Device(SMALL.__class__(**{**SMALL.__dict__, "max_payload": max_payload}))
        assert (dev._fit_problem(pkg) == "") == ok  # noqa: SLF001


def test_info_of_the_package_spec_example(tmp_path):
    """``docs/PACKAGE.md``'s worked example (164 bytes: one 3 -> 2 dense layer, classes "yes"
    and "no"), section by section as the spec lays it out."""
    data = encode_package(tiny_package())
    (tmp_path / "m.m1w").write_bytes(data)
    run = mark1("info", str(tmp_path / "m.m1w"), "--json", str(tmp_path / "i.json"))
    assert run.code == 0
    info = json.loads((tmp_path / "i.json").read_text())
    assert info["sections"] == {"header": 80, "layer table": 32, "class names": 8,
                                "layer data": 40, "codebook": 0, "CRC-32": 4}
    assert info["needs"] == {"flash_bytes": 164, "ram_bytes": 8, "ram_buffers": [3, 2],
                             "max_payload": 7}
    assert "sections  header 80, layer table 32, class names 8, layer data 40, CRC-32 4" \
        in run.out


# --------------------------------------------------------------------------- ports


def test_ports_lists_what_pyserial_finds(tmp_path):
    from serial.tools.list_ports import comports

    run = mark1("ports", "--json", str(tmp_path / "ports.json"))
    assert run.code == 0
    listed = json.loads((tmp_path / "ports.json").read_text())["ports"]
    assert [p["device"] for p in listed] == sorted(p.device for p in comports())
    assert [line.split()[0] for line in run.out.splitlines()] == [p["device"] for p in listed]
    if not listed:
        assert "no serial ports found" in run.err


# --------------------------------------------------------------------------- traces

LINE = re.compile(r"^\s*(\d+\.\d{6})  (->|<-|!!|--)  (.*)$")


def read_trace(path: Path) -> list[tuple[float, str, str]]:
    """(time, direction, rest) of each line after the heading; every line must parse."""
    lines = path.read_text().splitlines()
    assert lines[0].startswith("#  time (s)")
    rows = []
    for line in lines[1:]:
        m = LINE.match(line)
        assert m, line
        rows.append((float(m[1]), m[2], m[3]))
    times = [t for t, _, _ in rows]
    assert times == sorted(times) and times[0] == 0.0
    return rows


def frames_of(rows: list[tuple[float, str, str]], direction: str) -> list[list[str]]:
    return [rest.split() for _, d, rest in rows if d == direction]


def test_the_trace_of_a_push_and_an_inference_logs_every_frame(kind, tmp_path, packages):
    a = packages["a"].read_bytes()
    with serve(kind, pty=True) as srv:
        before = srv.status().frames_ok
        trace = tmp_path / "logs" / "push.trace"
        run = mark1("push", str(packages["a"]), "--port", srv.url, *QUICK, "-q",
                    "--trace", str(trace))
        assert run.code == 0, run
        rows = read_trace(trace)
        sent, got = frames_of(rows, "->"), frames_of(rows, "<-")
        after = srv.status().frames_ok
        assert len(sent) == after - before - 1  # every frame the device took (not the STATUS)
        assert [f[0] for f in sent[:2]] == ["HELLO", "BEGIN"] and got[0][0] == "INFO"
        begin = dict(w.split("=", 1) for w in sent[1][3:])
        assert (begin["size"], begin["crc32"], begin["slot"]) == (
            str(len(a)), f"{zlib.crc32(a):#010x}", "auto")
        data = [f for f in sent if f[0] == "DATA"]
        assert sum(int(dict(w.split("=", 1) for w in f[3:5])["data"]) for f in data) >= len(a)
        commit_ack = [f for f in got if f[0] == "ACK" and "of=COMMIT" in f]
        assert commit_ack and commit_ack[0][-1] == f"b={zlib.crc32(a):#010x}"
        seqs = {f[1] for f in sent}
        assert all(f[1] in seqs for f in got)  # every reply answers a request sent
        assert rows[0][2].startswith("opened") and rows[-1][2] == "end"

        trace = tmp_path / "infer.trace"
        run = mark1("infer", "--port", srv.url, *QUICK, "--task", "digits", "--n", "5",
                    "--model", str(packages["a"]), "--trace", str(trace))
        assert run.code == 0, run
        rows = read_trace(trace)
        assert [f[0] for f in frames_of(rows, "->")].count("INFER") == 5
        results = [f for f in frames_of(rows, "<-") if f[0] == "RESULT"]
        assert len(results) == 5 and all(f[2] == "14" for f in results)  # 4 + 10 outputs


def test_the_trace_of_a_failed_push_is_kept(tmp_path, packages):
    """Nothing answers on the pty: exit status 3, and the trace shows the unanswered HELLOs."""
    master, slave = os.openpty()
    try:
        trace = tmp_path / "failed.trace"
        run = mark1("push", str(packages["a"]), "--port", os.ttyname(slave), "--timeout",
                    "0.05", "--retries", "1", "--trace", str(trace))
        assert run.code == 3 and run.err.count("\n") == 1
        rows = read_trace(trace)
        assert [f[0] for f in frames_of(rows, "->")] == ["HELLO", "HELLO"]
        assert not frames_of(rows, "<-") and rows[-1][2] == "end"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.m1w", "b.m1w", "c.m1w",
                                                             "failed.trace"]
    finally:
        os.close(master)
        os.close(slave)


def test_the_trace_shows_damaged_frames_and_the_resends(tmp_path, packages):
    """Over a noisy line (a TCP relay that inverts bits): the dropped chunks are logged, and
    the request whose reply was lost is seen twice."""
    dev = Device(SMALL)
    noisy = LineFaults(ber=2e-4)
    try:
        with TcpServer(dev) as srv, LossyLink((srv.host, srv.port), noisy, seed=4) as line:
            trace = tmp_path / "noisy.trace"
            run = mark1("push", str(packages["b"]), "--port", line.url, *NOISY, "-q",
                        "--trace", str(trace))
            assert run.code == 0, run
    finally:
        dev.flash.close()
    rows = read_trace(trace)
    dropped = [rest for _, d, rest in rows if d == "!!"]
    assert dropped and all(r.startswith("dropped") for r in dropped)
    sent = frames_of(rows, "->")
    data = [tuple(f[3:4]) for f in sent if f[0] == "DATA"]
    assert len(data) > len(set(data))  # some DATA frame was sent again
