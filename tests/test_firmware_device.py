"""The C firmware's device against the simulator's, byte for byte: the same request frames get
the same reply frames and leave the same flash (contents and wear), over scripted sessions,
fuzzed frames and uploads of mutated packages; a power cut at any point of an upload leaves
the same flash in both, which boots into exactly the old or the new model; and a flash state
file written by either boots in the other (the firmware's host port, a real process).

The firmware's device runs here in process (``tests/firmware_lib.py``, the portable sources
built as a library, its flash in memory); the host port runs the same sources as a program.
Frames are fed one at a time: the simulator decodes all the frames of one read before it
handles them, so a ``STATUS`` in the middle of a read counts frames the firmware has not seen
yet; frame by frame the two count alike."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import zlib
from collections import Counter

import numpy as np
import pytest

from export.contract import protocol as P
from export.contract.golden import golden_forward
from export.contract.package import decode_package
from export.serial.errors import LinkLost
from export.serial.push import push
from export.serial.settings import LinkSettings
from firmware_sim.device import MAX_AHEAD, Device, DeviceConfig
from firmware_sim.flash import PowerLoss
from tests import firmware_lib as fw
from tests.device_helpers import SMALL, ask, image, serve, upload, with_model
from tests.test_fuzz import _requests, mutate_package, one_case, package_corpus
from tests.test_power_loss import CASES, PROBE, ROLLBACKS, crash_points

FAST = LinkSettings(timeout_s=0.2, retries=2, reconnects=0, reconnect_delay_s=0.02)
DOOMED = LinkSettings(timeout_s=0.05, retries=0, reconnects=0)
"""A push to a part whose power is about to go: it gives up at once."""


@pytest.fixture(scope="module", autouse=True)
def _library():
    fw.require_host_build()
    fw.lib()


def pair(config: DeviceConfig = SMALL, **kw) -> tuple[Device, fw.CDevice]:
    return Device(config, **kw), fw.CDevice(config, **kw)


def frames_of(data: bytes) -> list[bytes]:
    """``data`` cut after each delimiter (the last piece may be a partial frame)."""
    parts = data.split(P.DELIMITER)
    return [p + P.DELIMITER for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def same_replies(sim: Device, c: fw.CDevice, data: bytes) -> bytes:
    """Feed ``data`` to both, a frame at a time; their replies, which must be the same bytes."""
    out = bytearray()
    for piece in frames_of(data):
        want = sim.receive(piece)
        assert c.receive(piece) == want, [P.parse_reply(f) for f in P.FrameDecoder().feed(want)]
        out += want
    return bytes(out)


def same_flash(sim: Device, c: fw.CDevice) -> None:
    contents, erases = c.flash()
    assert contents == sim.flash.read(0, sim.flash.size)
    assert erases == sim.flash.erase_counts


# --------------------------------------------------------------------------- scripted sessions


def scripted_session() -> list[P.Payload | P.Frame | P.Msg]:
    """Requests that walk every message and every refusal of ``docs/PROTOCOL.md``."""
    a, b, big = image(), image(seed=1), image(hidden=24)
    crc_a, crc_b = zlib.crc32(a), zlib.crc32(b)
    sha_a, sha_b = hashlib.sha256(a).digest(), hashlib.sha256(b).digest()
    reqs: list = [P.Hello(), P.Msg.STATUS, P.Read(0xFF, 0, 4), P.Infer(bytes(400)),
                  P.Frame(0x42, 1), P.Frame(0x82, 2, b"abc"), P.Frame(int(P.Msg.STATUS), 3, b"x"),
                  P.Frame(int(P.Msg.BEGIN), 4, b"\x01\x02"), P.Begin(0, 0, 0),
                  P.Begin(len(big), zlib.crc32(big), 0), P.Begin(1000, 0, 5000),
                  P.Begin(100, 0, 0, slot=7), P.Data(0, b"x"), P.Commit(len(a), crc_a),
                  P.Commit(len(a), crc_a, sha_a[:8]),
                  P.Begin(len(a), crc_a, 0, P.AUTO_SLOT, sha_a)]
    reqs += [P.Data(off, a[off : off + 256]) for off in (0, 600, 0, 700)]  # out of order, twice
    reqs += [P.Read(0, 600, 10), P.Data(200, a[200:650]), P.Read(0, 0, 500), P.Read(0, 0, 509),
             P.Commit(len(a), crc_a ^ 1), P.Commit(len(a), crc_a, sha_a),  # incomplete
             P.Data(len(a) - 10, a[-10:] + b"!"), P.Msg.STATUS]
    reqs += [P.Data(off, a[off : off + 400]) for off in range(900, len(a), 400)]
    reqs += [P.Commit(len(a), crc_a, sha_a), P.Commit(len(a), crc_a, sha_a),  # and its repeat
             P.Commit(len(b), crc_b), P.Commit(len(b), crc_b, sha_b), P.Msg.STATUS,
             P.Infer(bytes(399)), P.Infer(PROBE.tobytes()), P.Read(0xFF, 0, 100),
             P.Read(0xFF, len(a) - 4, 8), P.Read(2, 0, 4), P.Begin(100, 0, 0, slot=0)]
    # a table of out-of-order ranges filled to the last entry, and one more
    reqs += [P.Begin(len(b), crc_b, 0, P.AUTO_SLOT, sha_b)]
    reqs += [P.Data(off, b[off : off + 10]) for off in range(100, 100 + 20 * (MAX_AHEAD + 1), 20)]
    reqs += [P.Msg.STATUS, P.Read(1, 0, 8), P.Msg.ABORT, P.Msg.STATUS, P.Data(0, b"x"),
             P.Begin(len(b), crc_b, 0, P.AUTO_SLOT, sha_a)]  # b's bytes, a's name
    reqs += [P.Data(off, b[off : off + 500]) for off in range(0, len(b), 500)]
    reqs += [P.Commit(len(b), crc_b, sha_a), P.Msg.RESET, P.Msg.STATUS, P.Frame(9, 7, b"\0")]
    junk = bytes(range(256)) * 2
    reqs += [P.Begin(len(junk), zlib.crc32(junk), 0), P.Data(0, junk[:100])]  # not a package
    reqs += [P.Begin(len(a) + 4, zlib.crc32(a + bytes(4)), 0), P.Data(0, a[:100])]  # wrong size
    # rollbacks: to a slot an upload has written over, to the running one, refused payloads
    reqs += [P.Rollback(1), P.Rollback(1, P.ROLLBACK_CHECK), P.Rollback(0), P.Rollback(2),
             P.Rollback(0xFF), P.Rollback(1, 0x80), P.Frame(int(P.Msg.ROLLBACK), 5, b"\0")]
    reqs += [P.Begin(len(b), crc_b, 0, P.AUTO_SLOT, sha_b)]
    reqs += [P.Data(off, b[off : off + 500]) for off in range(0, len(b), 500)]
    reqs += [P.Commit(len(b), crc_b, sha_b), P.Rollback(0, P.ROLLBACK_CHECK), P.Msg.STATUS,
             P.Begin(len(a), crc_a, 0, P.AUTO_SLOT, sha_a),  # nothing written yet: slot A
             P.Rollback(0), P.Msg.STATUS, P.Rollback(0),  # back to A, the upload dropped; again
             P.Infer(PROBE.tobytes()), P.Rollback(1), P.Msg.STATUS,  # and forth to B
             P.Begin(len(a), crc_a, 0, P.AUTO_SLOT, sha_a), P.Data(0, a[:100]),
             P.Rollback(0), P.Msg.STATUS, P.Msg.ABORT]  # A's first page is erased: refused
    return reqs


def test_a_scripted_session_gets_the_same_replies_and_leaves_the_same_flash():
    sim, c = pair()
    replies = Counter()
    for seq, req in enumerate(scripted_session(), start=1):
        frame = req if isinstance(req, P.Frame) else (
            P.Frame(int(req), seq) if isinstance(req, P.Msg) else req.frame(seq))
        for f in P.FrameDecoder().feed(same_replies(sim, c, P.encode_frame(frame))):
            reply = P.parse_reply(f)
            replies[type(reply).__name__ if not isinstance(reply, P.Nak)
                    else P.Err(reply.code).name] += 1
    same_flash(sim, c)
    want = {"Info", "Status", "Ack", "ReadData", "Result"} | {
        e.name for e in P.Err if e != P.Err.BUSY and e != P.Err.FLASH}
    assert want <= set(replies), want - set(replies)  # every reply and every refusal
    sim.power_cycle()  # and both boot alike from what they wrote
    same_replies(sim.power_cycle(), c.power_cycle(), P.encode_frame(P.Frame(8, 99)))


def test_a_worn_out_flash_is_refused_alike():
    sim, c = pair(dataclasses.replace(SMALL, endurance=0))
    img = image()
    for req in (P.Begin(len(img), zlib.crc32(img), 0),
                *[P.Data(o, img[o : o + 508]) for o in range(0, len(img), 508)],
                P.Commit(len(img), zlib.crc32(img)), P.Msg.STATUS):
        frame = P.Frame(int(req), 5) if isinstance(req, P.Msg) else req.frame(5)
        same_replies(sim, c, P.encode_frame(frame))
    same_flash(sim, c)


# --------------------------------------------------------------------------- fuzzing


def fuzz_both(n: int, seed: int) -> Counter:
    """``n`` fuzz cases of ``tests/test_fuzz.py`` into both devices (with a model committed):
    the same replies, the same flash; now and then a power cycle of both."""
    rng = np.random.default_rng(seed)
    corpus = _requests(seed)
    sim, c = pair()
    upload(sim, image())
    upload(c, image())
    tally: Counter = Counter()
    for i in range(n):
        for f in P.FrameDecoder().feed(same_replies(sim, c, one_case(rng, corpus))):
            tally[type(P.parse_reply(f)).__name__] += 1
        if i % 100 == 99:
            same_flash(sim, c)
            sim = sim.power_cycle()
            c.power_cycle()
    same_flash(sim, c)
    tally["cases"] = n
    return tally


def test_fuzzed_frames_get_the_same_replies():
    tally = fuzz_both(2000, seed=5)
    assert min(tally[k] for k in ("Info", "Ack", "Nak", "ReadData", "Result", "Status")) > 0


def uploads_both(n: int, seed: int) -> Counter:
    """Mutated packages uploaded to both and committed: the same replies (the loader's refusal
    texts among them) and the same flash."""
    rng = np.random.default_rng(seed)
    corpus = package_corpus()
    sim, c = pair()
    upload(sim, image())
    upload(c, image())
    tally: Counter = Counter()
    for _ in range(n):
        data = mutate_package(corpus[1 + int(rng.integers(2))], rng)
        if not data:
            continue
        got, want = upload(c, data, chunk=508), upload(sim, data, chunk=508)
        assert got == want
        tally[type(want).__name__ if not isinstance(want, P.Nak)
              else P.Err(want.code).name] += 1
    same_flash(sim, c)
    tally["cases"] = n
    return tally


def test_mutated_packages_pushed_to_both_get_the_same_words():
    tally = uploads_both(150, seed=6)
    assert tally["Ack"] > 10 and tally["BAD_PACKAGE"] > 30, tally


@pytest.mark.slow
def test_soak_the_two_devices_agree():
    assert fuzz_both(100_000, seed=15)["cases"] == 100_000
    assert uploads_both(3_000, seed=16)["cases"] == 3_000


# --------------------------------------------------------------------------- power cuts


def running_model(dev: Device | fw.CDevice, old: bytes, new: bytes) -> bytes:
    """Through the protocol only: the part answers ``HELLO``, runs exactly ``old`` or ``new``
    (read back from flash) and computes its outputs bit-exactly; returns which."""
    assert isinstance(ask(dev, P.Hello()), P.Info)
    st = ask(dev, P.Msg.STATUS)
    assert st.runnable == 1 and st.active_size in (len(old), len(new))
    running = b"".join(ask(dev, P.Read(0xFF, o, min(500, st.active_size - o))).data
                       for o in range(0, st.active_size, 500))
    assert running in (old, new), "a mixed or damaged image is active"
    assert st.model_id == decode_package(running).model_id
    want = golden_forward(decode_package(running), PROBE[None])[0].tobytes()
    assert ask(dev, P.Infer(PROBE.tobytes())).data == want
    return running


def cut_both(name: str, inside: int | None, seed: int = 0) -> Counter:
    """Every cut point of an upload (``inside`` bytes within each operation; None: all of them):
    the same flash after the cut in both, and a part that boots into the old or the new
    model and then takes the new one."""
    case = CASES[name]
    ops = case.ops()
    base = case.base()
    contents = base.flash.read(0, base.flash.size)
    erases = base.flash.erase_counts
    c = fw.CDevice(case.config)
    outcomes: Counter = Counter()
    for op_index, keep in crash_points(ops, inside, seed):
        sim = base.power_cycle()
        start = sim.flash.ops
        sim.flash.hook = lambda op, k=op_index + start, b=keep: b if op.index == k else None
        with pytest.raises(PowerLoss):
            upload(sim, case.new, chunk=case.chunk)
        c.load_flash(contents, erases)  # the simulator's flash, booted by the firmware
        c.cut(op_index, keep)
        with pytest.raises(fw.PowerCut):
            upload(c, case.new, chunk=case.chunk)
        same_flash(sim, c)
        running = running_model(c.power_cycle(), case.old, case.new)
        outcomes["new" if running == case.new else "old"] += 1
        committed = op_index == len(ops) - 1 and keep == 32
        assert (running == case.new) == committed, (op_index, keep)
        reply = upload(c, case.new, chunk=case.chunk)  # nothing stands in the way
        assert isinstance(reply, P.Ack) and reply.of == P.Msg.COMMIT
    return outcomes


@pytest.mark.parametrize("name", list(CASES))
def test_a_power_cut_anywhere_leaves_the_same_flash_as_the_simulator(name):
    outcomes = cut_both(name, inside=3, seed=len(name))
    assert outcomes["new"] == 1 and outcomes["old"] > 50


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_soak_a_power_cut_at_every_byte_leaves_the_same_flash(name):
    assert cut_both(name, inside=None)["new"] == 1


@pytest.mark.parametrize("name", list(ROLLBACKS))
def test_a_power_cut_at_every_byte_of_a_rollback_leaves_the_same_flash(name):
    """``ROLLBACK`` cut at every byte of its erase and its record: the same flash in both,
    which boots into the model that ran or the one rolled back to, and rolls back next time."""
    case = ROLLBACKS[name]
    base = case.base()
    contents, erases = base.flash.read(0, base.flash.size), base.flash.erase_counts
    c = fw.CDevice(case.config)
    outcomes: Counter = Counter()
    for op_index, keep in crash_points(case.ops(), inside=None):
        sim = base.power_cycle()
        start = sim.flash.ops
        sim.flash.hook = lambda op, k=op_index + start, b=keep: b if op.index == k else None
        with pytest.raises(PowerLoss):
            ask(sim, P.Rollback(0))
        c.load_flash(contents, erases)
        c.cut(op_index, keep)
        with pytest.raises(fw.PowerCut):
            c.receive(P.encode_frame(P.Rollback(0).frame(1)))
        same_flash(sim, c)
        running = running_model(c.power_cycle(), case.running, case.back)
        outcomes["back" if running == case.back else "kept"] += 1
        assert ask(c, P.Rollback(0)) == P.Ack(P.Msg.ROLLBACK, 0, zlib.crc32(case.back))
    assert outcomes["back"] == 1 and outcomes["kept"] > 30


# --------------------------------------------------------------------------- the host port


def host_cut_points(inside: int) -> list[tuple[int, int]]:
    """Cuts before each flash operation of the representative upload, after the last one, and
    at ``inside`` seeded bytes within each of a spread of operations."""
    ops = CASES["log with room"].ops()
    points = [(op.index, 0) for op in ops] + [(ops[-1].index, ops[-1].length)]
    rng = np.random.default_rng(9)
    for op in ops[:: max(1, len(ops) // 6)] if inside else []:
        points += [(op.index, int(k)) for k in rng.integers(1, op.length, inside)]
    return points


def host_cuts(tmp_path, inside: int) -> Counter:
    """The firmware's host port (a process, flash in a state file the simulator wrote): cut at
    each point, restarted on the same file, it runs the old or the new model, never a mix,
    and takes the new one."""
    case = CASES["log with room"]
    base = with_model(case.config, tmp_path / "base.bin", case.old)
    outcomes: Counter = Counter()
    for k, (op_index, keep) in enumerate(host_cut_points(inside)):
        state = tmp_path / f"cut{k}.bin"
        shutil.copy(base, state)
        # on a pty: closing a socket:// port costs pyserial 0.3 s
        with serve("host", case.config, pty=True, state=state, cut=(op_index, keep)) as srv:
            with pytest.raises(LinkLost):
                push(srv.url, case.new, settings=DOOMED)
            assert srv.stopped() == 3  # the power cut: exit status 3, flash as it left it
        with serve("host", case.config, pty=True, state=state) as srv:
            st = srv.status()
            running = case.new if st.active_size == len(case.new) else case.old
            assert st.model_id == decode_package(running).model_id and st.runnable == 1
            assert (running == case.new) == (keep == 32 and op_index == len(case.ops()) - 1)
            outcomes["new" if running == case.new else "old"] += 1
            rep = push(srv.url, case.new, settings=FAST)  # reads it back as it goes
            assert rep.verified_bytes == len(case.new)
        sim = Device(case.config, state_path=state)  # and the simulator boots the result
        assert sim.status().model_id == decode_package(case.new).model_id
        sim.flash.close()
    return outcomes


def test_the_host_port_cut_at_every_flash_step_restarts_old_or_new(tmp_path):
    fw.require_host_build()
    outcomes = host_cuts(tmp_path, inside=1)
    assert outcomes["new"] == 1 and outcomes["old"] > 20


@pytest.mark.slow
def test_soak_the_host_port_cut_inside_flash_steps(tmp_path):
    assert host_cuts(tmp_path, inside=5)["new"] == 1


def test_a_flash_written_by_either_boots_in_the_other(tmp_path):
    """The same pushes to the simulator and to the firmware leave byte-identical state files,
    and each boots the other's."""
    fw.require_host_build()
    a, b = image(), image(hidden=9, seed=1)
    files = {}
    for kind in ("sim", "host"):
        files[kind] = tmp_path / f"{kind}.bin"
        with serve(kind, state=files[kind]) as srv:
            push(srv.url, a, settings=FAST)
            push(srv.url, b, settings=FAST)
    assert files["sim"].read_bytes() == files["host"].read_bytes()
    x = np.random.default_rng(2).integers(-128, 128, (4, 400)).astype(np.int8)
    for writer, reader in (("sim", "host"), ("host", "sim")):
        with serve(reader, state=files[writer]) as srv:
            st = srv.status()
            assert (st.active_slot, st.model_id, st.runnable) == (
                1, decode_package(b).model_id, 1)
            rep = push(srv.url, a, settings=FAST)  # and carries on from there
            assert rep.slot == 0
    for kind in ("sim", "host"):  # a simulator-written commit log read by the firmware
        dev = Device(SMALL, state_path=files[kind])
        y = P.FrameDecoder().feed(dev.receive(b"".join(
            P.encode_frame(P.Infer(row.tobytes()).frame(i)) for i, row in enumerate(x))))
        assert [P.parse_reply(f).data for f in y] == [
            golden_forward(decode_package(a), row[None])[0].tobytes() for row in x]
        dev.flash.close()
