"""The C firmware on emulated boards under QEMU (``firmware_sim/qemu.py``): the Cortex-M3
(mps2-an385, portable engine) and the Cortex-M4 (mps2-an386, DSP engine) compute every int8
test model bit-exactly and measure what each inference costs; the DSP image really uses the
DSP extension (it faults on the M3); a power cut under QEMU leaves the old or the new model; a
flash file moves between the simulator, the host port and QEMU; a receive ring overrun costs
frames, never the session.

Each test starts QEMU (about a second); the push/infer/session tests of ``tests/test_push.py``
and ``tests/test_concurrency.py`` run against QEMU too (the ``kind`` fixture)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zlib
from collections import Counter

import numpy as np
import pytest

from export.contract import protocol as P
from export.contract.golden import decide, golden_forward
from export.contract.package import decode_package
from export.serial.errors import LinkLost
from export.serial.link import connect
from export.serial.push import push
from export.serial.settings import LinkSettings
from firmware_sim.device import Device, DeviceConfig
from firmware_sim.engine import Engine
from firmware_sim.qemu import CORES, Board, QemuPart
from firmware_sim.serve import TcpServer
from tests import firmware_lib as fw
from tests.conftest import ROOT
from tests.device_helpers import (  # noqa: F401 - no_thread_leaks: a fixture
    SMALL,
    image,
    no_thread_leaks,
    serve,
    with_model,
)
from tests.test_firmware_engine import MODELS
from tests.test_firmware_engine import packages as packages  # noqa: F401 - a fixture
from tests.test_power_loss import CASES

FAST = LinkSettings(timeout_s=0.5, retries=3, reconnects=0, reconnect_delay_s=0.02)
DOOMED = LinkSettings(timeout_s=0.5, retries=0, reconnects=0)
"""A push that the power cut ends: one try, no reconnection (the handshake given time enough
on a busy machine)."""


@pytest.fixture(autouse=True)
def _tools():
    fw.require_qemu()


@pytest.mark.parametrize("core", list(CORES))
def test_every_int8_model_runs_bit_exact_under_qemu(packages, core):  # noqa: F811
    """Every model of the engine tests, pushed to the board and run on random inputs with the
    extremes: the outputs are golden's, and the device reports the instructions it took (the
    same count every time, to within 0.2 %), on the M4 within 5 % of the cycle model (models of
    300 MACs and more)."""
    with QemuPart(core, Board(name=f"test {core}")) as part, TcpServer(part) as srv:
        for name in MODELS:
            data = packages[name]
            pkg = decode_package(data)
            rep = push(srv.url, data, settings=FAST)
            assert rep.verified_bytes == len(data)
            rng = np.random.default_rng(len(name))
            x = rng.integers(-128, 128, (40, pkg.n_inputs)).astype(np.int8)
            x[0], x[1] = -128, 127
            with connect(srv.url, FAST) as link:
                y, counts = link.infer(x)
            want = golden_forward(pkg, x)
            np.testing.assert_array_equal(y, want, err_msg=f"{core} {name}")
            np.testing.assert_array_equal(decide(pkg, y), decide(pkg, want))
            spread = counts.max() - counts.min()
            assert counts.min() > 0 and spread <= max(80, counts.min() // 500), (name, counts)
            if core == "m4" and pkg.macs >= 300:  # the cycle model is fitted to these counts
                model = Engine(pkg).cycles  # (a model of 6 MACs is all overhead: not fitted)
                assert abs(np.median(counts) / model - 1) <= 0.05, (name, counts, model)


def test_a_board_runs_the_product_image_unless_it_asks_for_test_machinery():
    """What a user flashes is what runs and is measured: a board with the usual options gets
    the product image (no test machinery); a power cut, another endurance, an erase time, a
    smaller receive ring or another protocol version needs the test image."""
    def elf(core: str, board: Board) -> str:
        part = QemuPart(core, board)  # not started: the image is chosen (and built)
        part.close()
        return part.elf.name

    def numbers(board: Board) -> int:  # the first number of the command line: how many
        return bytes.fromhex(board.append())[0]

    for core in CORES:
        assert elf(core, Board()) == f"mark1-fw-{core}.elf"
        for option in ({"cut_after": (1, 0)}, {"endurance": 0}, {"erase_ms": 5},
                       {"rx_ring": 512}, {"protocol_version": 1}):
            board = Board(**option)  # type: ignore[arg-type]
            assert elf(core, board) == f"mark1-fw-{core}-test.elf", option
            assert numbers(board) == 10  # the test machinery's options too
    assert numbers(Board()) == 4


def test_a_board_refuses_what_the_firmware_command_line_cannot_carry():
    """The options travel as 32-bit numbers and NUL-ended texts (``Board.append``): what does
    not fit is refused at once, in one line naming the value and what is allowed."""
    for options, allowed in (({"name": "a\0b"}, "no NUL"),
                             ({"state": "/" + "x" * 300}, "at most 255 bytes"),
                             ({"protocol_version": 70_000}, "0 .. 65535"),
                             ({"cut_after": (2**32 - 1, 0)}, "below 4294967295")):
        with pytest.raises(ValueError, match=allowed) as info:
            Board(**options)  # type: ignore[arg-type]
        assert "\n" not in str(info.value)


def test_the_firmware_takes_its_options_as_one_word_of_hex_and_refuses_anything_else(
        tmp_path):
    """QEMU passes the board's options as one word of hex (``Board.append``): a name and a
    state file path with spaces and UTF-8 arrive whole. Anything else (options as words, a
    digit short, capitals, the test image's options to the product image) ends the firmware
    at start-up: exit status 2, one line saying so."""
    from firmware_sim import qemu

    state = tmp_path / "a path with spaces, é.bin"
    board = Board(flash_bytes=64 * 1024, page_bytes=1024, ram_bytes=32 * 1024,
                  max_payload=512, name="a board, ü", state=str(state))
    os.close(qemu.claim_state(state, board.flash_bytes, board.page_bytes))  # an erased flash
    with QemuPart("m4", board) as part, TcpServer(part) as srv:
        push(srv.url, image(hidden=4), settings=FAST)
        with connect(srv.url, FAST) as link:
            assert link.info is not None
            assert (link.info.name, link.info.max_payload, link.info.flash_bytes,
                    link.info.page_bytes, link.info.ram_bytes) == (
                board.name, 512, 64 * 1024, 1024, 32 * 1024)
    sim = Device(DeviceConfig(flash_bytes=64 * 1024, page_bytes=1024), state_path=state)
    assert sim.status().runnable == 1  # the push went into the file
    sim.flash.close()
    good = board.append()
    for core in CORES:
        for append in ("--flash 262144 --page 2048", good[:-1], good.upper(),
                       Board(endurance=5).append(), ""):
            cmd = qemu.qemu_command(core, qemu.image(core), str(tmp_path / "uart"), Board())
            res = subprocess.run(cmd[:-1] + [append], capture_output=True, text=True,
                                 timeout=60)
            assert (res.returncode, res.stderr) == (
                2, "mark1 device: error: the command line is not the board's options in hex\n"
            ), (core, append)


def test_the_dsp_image_faults_on_the_cortex_m3_board(tmp_path):
    """The M4 image's dense kernel is SMLAD/SXTB16 code: on the AN385's Cortex-M3 (no DSP
    extension) the first inference is an undefined instruction, a fault that ends QEMU (exit
    status 70); everything before it (handshake, upload, commit) ran on plain Thumb-2."""
    from firmware_sim import qemu

    m4_elf = qemu.image("m4")
    board = Board(name="m4 image on an m3")
    uart = str(tmp_path / "uart")
    cmd = qemu.qemu_command("m3", m4_elf, uart, board)  # the M3 board, the M4 image
    assert CORES["m3"].machine in cmd and str(m4_elf) in cmd

    class WrongBoard(QemuPart):
        def start(self) -> QemuPart:
            self.elf = m4_elf
            return super().start()

    with WrongBoard("m3", board) as part, TcpServer(part) as srv:
        push(srv.url, image(), settings=FAST)  # handshake, upload and commit work
        with pytest.raises(LinkLost), connect(srv.url, FAST) as link:
            link.infer(np.zeros((1, 400), np.int8))
        assert part.wait(10) == qemu.FAULT_EXIT


# --------------------------------------------------------------------------- flash files


def test_a_flash_file_moves_between_the_simulator_the_host_port_and_qemu(tmp_path):
    """The same pushes to the simulator, the host port and the firmware under QEMU leave
    byte-identical state files (contents and wear), and each boots the others' files."""
    fw.require_host_build()
    a, b = image(), image(hidden=9, seed=1)
    kinds = ("sim", "host", "m4")
    files = {kind: tmp_path / f"{kind}.bin" for kind in kinds}
    for kind in kinds:
        with serve(kind, state=files[kind]) as srv:
            push(srv.url, a, settings=FAST)
            push(srv.url, b, settings=FAST)
    assert files["sim"].read_bytes() == files["host"].read_bytes() == files["m4"].read_bytes()
    x = np.random.default_rng(2).integers(-128, 128, (6, 400)).astype(np.int8)
    for writer, reader in (("sim", "m4"), ("m4", "sim"), ("host", "m4"), ("m4", "host")):
        state = tmp_path / f"{writer}-to-{reader}.bin"
        shutil.copy(files[writer], state)
        with serve(reader, state=state) as srv:
            st = srv.status()
            assert (st.active_slot, st.model_id, st.runnable) == (
                1, decode_package(b).model_id, 1), (writer, reader)
            with connect(srv.url, FAST) as link:
                y, _ = link.infer(x)
            np.testing.assert_array_equal(y, golden_forward(decode_package(b), x))
            assert push(srv.url, a, settings=FAST).slot == 0  # and carries on from there


# --------------------------------------------------------------------------- power cuts


def qemu_cut_points(sample: int) -> list[tuple[int, int]]:
    """Cuts of the representative upload: before the first and the last operation, in the
    middle of the commit record (the write that decides), after it, and ``sample`` seeded
    points inside the other operations."""
    ops = CASES["log with room"].ops()
    last = ops[-1]
    points = [(0, 0), (last.index, 0), (last.index, 16), (last.index, last.length)]
    rng = np.random.default_rng(14)
    for k in rng.choice(len(ops) - 1, size=sample, replace=False):
        points.append((ops[k].index, int(rng.integers(0, ops[k].length + 1))))
    return points


def qemu_cuts(tmp_path, sample: int) -> Counter:
    """QEMU killed by the firmware itself at each cut point (``SYS_EXIT`` 3 with the flash file
    as the cut left it), restarted on the same file: the old or the new model, never a mix."""
    case = CASES["log with room"]
    base = with_model(case.config, tmp_path / "base.bin", case.old)
    outcomes: Counter = Counter()
    for k, (op_index, keep) in enumerate(qemu_cut_points(sample)):
        state = tmp_path / f"cut{k}.bin"
        shutil.copy(base, state)
        with serve("m4", case.config, state=state, cut=(op_index, keep)) as srv:
            with pytest.raises(LinkLost):
                push(srv.url, case.new, settings=DOOMED)
            assert srv.stopped() == 3
        committed = op_index == len(case.ops()) - 1 and keep == 32
        with serve("m4", case.config, state=state) as srv:
            st = srv.status()
            running = case.new if st.active_size == len(case.new) else case.old
            assert st.model_id == decode_package(running).model_id and st.runnable == 1
            assert (running == case.new) == committed, (op_index, keep)
            outcomes["new" if committed else "old"] += 1
            assert push(srv.url, case.new, settings=FAST).verified_bytes == len(case.new)
        sim = Device(case.config, state_path=state)  # the simulator agrees
        assert sim.status().model_id == decode_package(case.new).model_id
        sim.flash.close()
    return outcomes


def test_a_sample_of_power_cuts_under_qemu_restarts_old_or_new(tmp_path):
    outcomes = qemu_cuts(tmp_path, sample=2)
    assert outcomes["new"] == 1 and outcomes["old"] == 5


@pytest.mark.slow
def test_soak_power_cuts_under_qemu(tmp_path):
    outcomes = qemu_cuts(tmp_path, sample=24)
    assert outcomes["new"] == 1 and outcomes["old"] >= 27


# --------------------------------------------------------------------------- receive overruns

SLOW_FLASH = DeviceConfig(flash_bytes=16 * 1024, page_bytes=512, ram_bytes=4096,
                          max_payload=512, name="slow flash")


def test_a_receive_overrun_costs_frames_not_the_session():
    """A page erase that keeps the processor waiting 20 ms (as NOR flash does) while the host
    keeps its window of frames coming: with the ring sized for the window nothing is lost;
    with a ring of 300 bytes it overruns, the frames it cut are dropped and counted as receive
    errors, the host sends them again, and the upload completes and verifies."""
    img = image(hidden=16)
    for ring, lost in ((0, False), (300, True)):
        with serve("m4", SLOW_FLASH, erase_ms=20, rx_ring=ring) as srv:
            rep = push(srv.url, img, settings=FAST)
            st = srv.status()
            assert rep.verified_bytes == len(img) and st.active_crc32 == zlib.crc32(img)
            assert (st.frames_bad > 0) == lost, st
            # what was lost was sent again: after a timeout, or at once when the device's
            # reply to a later frame showed the gap
            assert rep.timeouts + rep.resends > 0 or not lost
            with connect(srv.url, FAST) as link:  # and the session goes on
                assert isinstance(link.status(), P.Status)


# --------------------------------------------------------------------------- the command line


def test_a_missing_qemu_is_named_with_its_package(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for program in ("make", "arm-none-eabi-gcc"):
        (bin_dir / program).symlink_to(shutil.which(program))
    env = dict(os.environ, PYTHONPATH=str(ROOT), PATH=str(bin_dir))
    res = subprocess.run([sys.executable, "-m", "mark1.cli", "device", "--firmware", "m4",
                          "--listen", "127.0.0.1:0"], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "apt-get install qemu-system-arm" in res.stderr and "Traceback" not in res.stderr
