"""Power cut at every flash step of an upload: before, inside and after every page erase and
every page write, the commit record's included, with the commit log in each of its states (room
left, full so that the commit erases the blank other page, full so that it erases the page of
the oldest records). After each cut the part restarts with its flash as the cut left it: it
answers ``HELLO``, runs exactly the old model or exactly the new one -- never a mix -- with
outputs bit-exact with the golden reference, and takes the new model on the next try.

The CI version cuts at both ends of every operation and at seeded random bytes inside each; the
slow version (and ``benchmarks/soak_reliability.py``) at every byte of every operation. And a
real process: ``mark1 device --state`` killed in the middle of an upload and started again."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from export.contract import protocol as P
from export.contract.golden import golden_forward
from export.contract.package import decode_package
from export.serial.errors import LinkLost
from export.serial.link import connect
from export.serial.push import push
from export.serial.settings import LinkSettings
from firmware_sim.device import Device, DeviceConfig
from firmware_sim.flash import FlashOp, PowerLoss
from mark1.errors import Mark1Error
from tests.conftest import ROOT
from tests.device_helpers import SMALL, ask, image, upload

CHUNK = SMALL.max_payload - P.Data.FIXED.size
"""Image bytes per DATA frame, as ``mark1 push`` sends them to the small part (508: frames
straddle the 512-byte pages, so writes of one frame are split at page ends)."""
PROBE = (np.arange(400) * 37 % 256 - 128).astype(np.int8)
"""An input that exercises every weight."""


@dataclass(frozen=True)
class Upload:
    """A representative upload: an old model committed, a new one of another size pushed."""

    config: DeviceConfig
    old: bytes
    new: bytes
    log_fill: int = 0
    """Extra commit records written after the old model's (to put the commit log in a state)."""
    chunk: int = CHUNK

    def base(self) -> Device:
        """The part before the upload, freshly booted."""
        dev = Device(self.config)
        assert upload(dev, self.old, chunk=self.chunk) == P.Ack(P.Msg.COMMIT, 0,
                                                                  zlib.crc32(self.old))
        act = dev.store.active()
        for _ in range(self.log_fill):
            dev.store.commit(act.slot, act.size, act.crc32, act.image_id)
        return Device(self.config, dev.flash.power_cycle())

    def ops(self) -> list[FlashOp]:
        """The erases and writes of the upload, in order (indices from 0)."""
        dev = self.base()
        start, seen = dev.flash.ops, []

        def record(op: FlashOp) -> None:
            seen.append(FlashOp(op.kind, op.page, op.address, op.length, op.index - start))

        dev.flash.hook = record
        assert isinstance(upload(dev, self.new, chunk=self.chunk), P.Ack)
        return seen


def crash_points(ops: list[FlashOp], inside: int | None, seed: int = 0) -> list[tuple[int, int]]:
    """(operation, bytes completed) pairs: each operation cut before its first byte and after
    its last, and at ``inside`` seeded random bytes within it (``None``: at every byte)."""
    rng = np.random.default_rng(seed)
    points = []
    for op in ops:
        if inside is None or op.length <= inside + 1:
            keeps = range(op.length + 1)
        else:
            keeps = sorted({0, op.length, *rng.integers(1, op.length, inside).tolist()})
        points += [(op.index, int(keep)) for keep in keeps]
    return points


def cut_power(dev: Device, op_index: int, keep: int, new: bytes, chunk: int) -> None:
    """Upload ``new`` to ``dev`` and cut the power ``keep`` bytes into operation ``op_index``."""
    start = dev.flash.ops
    dev.flash.hook = lambda op: keep if op.index - start == op_index else None
    with pytest.raises(PowerLoss):
        upload(dev, new, chunk=chunk)
    assert not dev.flash.powered


@lru_cache(maxsize=8)
def _golden(img: bytes) -> bytes:
    return golden_forward(decode_package(img), PROBE[None])[0].tobytes()


def check_restarted(dev: Device, old: bytes, new: bytes) -> bytes:
    """The restarted part runs exactly ``old`` or ``new``, correctly; returns which."""
    assert isinstance(ask(dev, P.Hello()), P.Info)
    st = ask(dev, P.Msg.STATUS)
    act = dev.store.active()
    assert act is not None and st.runnable == 1
    running = dev.store.read_slot(act.slot, 0, act.size)
    assert running in (old, new), "a mixed or damaged image is active"
    assert (st.active_size, st.model_id) == (len(running), decode_package(running).model_id)
    assert ask(dev, P.Infer(PROBE.tobytes())).data == _golden(running)
    return running


def run_crash(case: Upload, base: Device, op_index: int, keep: int, n_ops: int,
              retry: bool = True) -> bool:
    """Cut, restart, check; True if the new model survived. With ``retry`` the restarted part
    then takes the new model."""
    dev = base.power_cycle()
    cut_power(dev, op_index, keep, case.new, case.chunk)
    again = Device(case.config, dev.flash.power_cycle())
    running = check_restarted(again, case.old, case.new)
    committed = op_index == n_ops - 1 and keep == RECORD_BYTES
    assert (running == case.new) == committed, (op_index, keep)
    if retry:  # the cut left nothing that stands in the way of the next upload
        reply = upload(again, case.new, chunk=case.chunk)
        assert isinstance(reply, P.Ack) and reply.of == P.Msg.COMMIT, reply
        assert check_restarted(again, case.old, case.new) == case.new
    return committed


RECORD_BYTES = 32

CASES = {
    "log with room": Upload(SMALL, image(), image(hidden=9, seed=1)),
    "log full, other page blank": Upload(SMALL, image(), image(hidden=9, seed=1), log_fill=15),
    "log full, other page holds the oldest records": Upload(
        SMALL, image(), image(hidden=9, seed=1), log_fill=31),
}


@pytest.mark.parametrize("name", list(CASES))
def test_power_cut_at_every_flash_step_leaves_old_or_new_never_mixed(name):
    case = CASES[name]
    ops = case.ops()
    kinds = [op.kind for op in ops]
    pages = -(-len(case.new) // SMALL.page_bytes)
    record_erase = 1 if case.log_fill == 15 or case.log_fill == 31 else 0
    assert kinds.count("erase") == pages + record_erase
    assert ops[-1].kind == "write" and ops[-1].length == RECORD_BYTES
    assert sum(op.length for op in ops if op.kind == "write") == len(case.new) + RECORD_BYTES
    base = case.base()
    points = crash_points(ops, inside=3, seed=len(name))
    outcomes = [run_crash(case, base, k, keep, len(ops)) for k, keep in points]
    assert len(points) >= 4 * len(ops) - 2 and outcomes.count(True) == 1


@dataclass(frozen=True)
class Rollback:
    """A rollback: ``back`` committed in slot A, then ``running`` in slot B; the commit log
    holds ``log_fill`` more records, alternating between the slots and ending with B's, as
    pushes and rollbacks write them (each makes the slot that was not active active)."""

    config: DeviceConfig
    back: bytes
    running: bytes
    log_fill: int = 0

    def base(self) -> Device:
        """The part before the rollback, freshly booted, running ``running`` from slot B."""
        dev = Device(self.config)
        for img in (self.back, self.running):
            assert isinstance(upload(dev, img, chunk=CHUNK), P.Ack)
        newest = {rec.slot: rec for rec in reversed(dev.store.records())}
        for k in range(self.log_fill):
            rec = newest[(self.log_fill - k) % 2]
            dev.store.commit(rec.slot, rec.size, rec.crc32, rec.image_id)
        return Device(self.config, dev.flash.power_cycle())

    def ops(self) -> list[FlashOp]:
        """The erases and writes of ``ROLLBACK`` to slot A, in order (indices from 0)."""
        dev = self.base()
        start, seen = dev.flash.ops, []
        dev.flash.hook = lambda op: seen.append(
            FlashOp(op.kind, op.page, op.address, op.length, op.index - start))
        assert ask(dev, P.Rollback(0)) == P.Ack(P.Msg.ROLLBACK, 0, zlib.crc32(self.back))
        return seen


ROLLBACKS = {
    "log with room": Rollback(SMALL, image(), image(hidden=9, seed=1)),
    "log full, other page blank": Rollback(SMALL, image(), image(hidden=9, seed=1), 14),
    "log full, other page holds the oldest records": Rollback(
        SMALL, image(), image(hidden=9, seed=1), 30),
}


def rollback_cut(case: Rollback, base: Device, op_index: int, keep: int) -> bytes:
    """``ROLLBACK`` to slot A with the power cut ``keep`` bytes into its operation
    ``op_index``; the restarted part runs the old model or the one rolled back to, never
    neither, and rolls back on the next try. Returns what ran after the cut."""
    dev = base.power_cycle()
    start = dev.flash.ops
    dev.flash.hook = lambda op: keep if op.index - start == op_index else None
    with pytest.raises(PowerLoss):
        ask(dev, P.Rollback(0))
    again = Device(case.config, dev.flash.power_cycle())
    running = check_restarted(again, case.running, case.back)
    assert ask(again, P.Rollback(0)) == P.Ack(P.Msg.ROLLBACK, 0, zlib.crc32(case.back))
    assert check_restarted(again, case.running, case.back) == case.back
    return running


@pytest.mark.parametrize("name", list(ROLLBACKS))
def test_power_cut_at_every_byte_of_a_rollback_leaves_one_model_or_the_other(name):
    case = ROLLBACKS[name]
    ops = case.ops()
    assert [op.kind for op in ops] == ["erase"] * (case.log_fill > 0) + ["write"]
    assert ops[-1].length == RECORD_BYTES
    base = case.base()
    points = crash_points(ops, inside=None)
    ran = [rollback_cut(case, base, k, keep) for k, keep in points]
    assert ran.count(case.back) == 1 and ran[-1] == case.back  # only the whole record switches


def test_power_cut_with_the_flash_in_a_state_file(tmp_path):
    """The same through the state file of ``mark1 device --state``: what a torn operation wrote
    is what the restarted part reads."""
    case = CASES["log with room"]
    first = tmp_path / "base.bin"
    dev = Device(SMALL, state_path=first)
    upload(dev, case.old, chunk=case.chunk)
    before = dev.flash.erase_counts
    dev.flash.close()
    ops = case.ops()
    for op in ops:
        path = tmp_path / f"op{op.index}.bin"
        shutil.copy(first, path)
        dev = Device(SMALL, state_path=path)
        cut_power(dev, op.index, op.length // 2, case.new, case.chunk)
        dev.flash.close()
        again = Device(SMALL, state_path=path)  # power on: the flash read back from the file
        assert check_restarted(again, case.old, case.new) == case.old
        erased = sum(o.kind == "erase" for o in ops[: op.index + 1] if o.page == op.page)
        assert again.flash.erase_counts[op.page] == before[op.page] + erased  # torn ones too
        again.flash.close()


def _start_device(state: Path, kind: str) -> tuple[subprocess.Popen, str]:
    """`mark1 device --firmware KIND --pty` on the small part's geometry, paced, flash kept in
    ``state``."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "mark1.cli", "device", "--firmware", kind, "--pty", "--flash",
         "16K", "--page", "512", "--ram", "4K", "--max-payload", "512", "--baud", "38400",
         "--state", str(state)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return proc, proc.stdout.readline().strip()


def test_the_device_process_killed_mid_upload_restarts_with_the_old_model(kind, tmp_path):
    """Power cut as a real process dies: `mark1 device` (the simulator or the firmware) killed
    (SIGKILL) during an upload, restarted on its state file. Nothing it started outlives it
    (QEMU would keep the state file open)."""
    import psutil

    state = tmp_path / "flash.bin"
    old, new = image(), image(hidden=9, seed=1)
    settings = LinkSettings(baud=38400, timeout_s=0.2, retries=1, reconnects=0)
    proc, port = _start_device(state, kind)
    try:
        push(port, old, settings=settings)
        errors: list[BaseException] = []

        def pushing() -> None:
            try:
                push(port, new, settings=settings)
            except Mark1Error as exc:
                errors.append(exc)

        t = threading.Thread(target=pushing)
        t.start()
        time.sleep(0.6)  # about a third of the upload at 38,400 baud
        started = psutil.Process(proc.pid).children(recursive=True)
        assert len(started) == (1 if kind in ("m3", "m4") else 0), started
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=20)
        t.join()
        assert errors and isinstance(errors[0], LinkLost)
        _, alive = psutil.wait_procs(started, timeout=10)
        assert not alive, f"{alive} outlived the killed device"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    proc, port = _start_device(state, kind)  # power on again
    try:
        with connect(port, settings) as link:
            st = link.status()
            assert (st.active_size, st.model_id) == (len(old), decode_package(old).model_id)
        rep = push(port, new, settings=settings)
        assert rep.verified_bytes == len(new)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        proc.stdout.close()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_soak_power_cut_at_every_byte_of_every_flash_step(name):
    case = CASES[name]
    ops = case.ops()
    base = case.base()
    points = crash_points(ops, inside=None)
    assert len(points) == sum(op.length + 1 for op in ops)
    outcomes = [run_crash(case, base, k, keep, len(ops), retry=False) for k, keep in points]
    assert outcomes.count(True) == 1
