"""The simulated microcontroller's message handler: uploads, refusals, commit, read, infer,
resets, power cycles and malformed frames. (Random and mutated frames: `test_fuzz.py`; power cut
at every flash step: `test_power_loss.py`.)"""

from __future__ import annotations

import dataclasses
import hashlib
import zlib

import numpy as np

from export.contract import protocol as P
from export.contract.golden import golden_forward
from export.contract.package import decode_package
from firmware_sim.device import MAX_AHEAD, PRESETS, Device
from firmware_sim.engine import Engine
from tests.device_helpers import SMALL, ask, image, upload


def _status(dev: Device) -> P.Status:
    reply = ask(dev, P.Msg.STATUS)
    assert isinstance(reply, P.Status)
    return reply


def _nak(reply: P.Payload, code: P.Err) -> P.Nak:
    assert isinstance(reply, P.Nak), reply
    assert reply.code == code, reply
    return reply


def test_hello_reports_the_limits_and_a_blank_part_has_no_model():
    dev = Device(SMALL)
    info = ask(dev, P.Hello())
    assert info == P.Info(P.PROTOCOL_VERSION, 512, 16384, 512, 7680, 4096, 80_000_000,
                          "test part")
    st_ = _status(dev)
    assert (st_.active_slot, st_.upload_slot, st_.runnable, st_.model_id) == (0xFF, 0xFF, 0, b"")
    assert set(PRESETS) == {"cortex-m4", "cortex-m4-small"}  # the CLI's --preset choices


def test_upload_commit_and_inference_bit_exact_with_golden():
    dev = Device(SMALL)
    img = image()
    pkg = decode_package(img)
    done = upload(dev, img)
    assert done == P.Ack(P.Msg.COMMIT, 0, zlib.crc32(img))
    st_ = _status(dev)
    assert (st_.active_slot, st_.active_size, st_.active_crc32) == (0, len(img), zlib.crc32(img))
    assert (st_.runnable, st_.n_inputs, st_.n_outputs) == (1, 400, 10)
    assert st_.model_id == pkg.model_id
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, size=(12, 400)).astype(np.int8)
    x[0] = -128
    x[1] = 127
    want = golden_forward(pkg, x)
    _, cycles = Engine(pkg).infer(x[0])
    for i, row in enumerate(x):
        res = ask(dev, P.Infer(row.tobytes()), seq=100 + i)
        assert isinstance(res, P.Result)
        np.testing.assert_array_equal(np.frombuffer(res.data, np.int8), want[i])
        assert res.cycles == cycles
    # the next upload goes to the other slot, and the pages it used were erased once each
    img2 = image(seed=1)
    assert upload(dev, img2) == P.Ack(P.Msg.COMMIT, 1, zlib.crc32(img2))
    assert _status(dev).active_slot == 1 and _status(dev).max_erase_count == 1


def test_too_large_models_are_refused_at_begin_with_the_numbers():
    dev = Device(SMALL)
    big = image(hidden=24)
    nak = _nak(upload(dev, big), P.Err.TOO_LARGE_FLASH)
    assert (nak.a, nak.b) == (len(big), 7680)
    assert f"{len(big)} bytes" in nak.text and "7680-byte" in nak.text
    nak = _nak(ask(dev, P.Begin(1000, 0, 5000)), P.Err.TOO_LARGE_RAM)
    assert (nak.a, nak.b) == (5000, 4096) and "5000" in nak.text and "4096" in nak.text
    assert _status(dev).upload_slot == 0xFF and dev.flash.ops == 0  # nothing written


def test_the_package_header_is_checked_as_soon_as_it_arrives():
    tight = Device(dataclasses.replace(SMALL, ram_bytes=256))
    img = image()
    nak = _nak(upload(tight, img, ram=0), P.Err.TOO_LARGE_RAM)  # BEGIN understated the RAM
    assert (nak.a, nak.b) == (decode_package(img).ram_bytes, 256)
    assert _status(tight).upload_slot == 0xFF
    junk = bytes(range(256)) * 2
    nak = _nak(upload(Device(SMALL), junk), P.Err.BAD_PACKAGE)
    assert "magic" in nak.text
    nak = _nak(upload(Device(SMALL), img + b"\0\0\0\0"), P.Err.BAD_PACKAGE)
    assert f"header says {len(img)} bytes" in nak.text


def test_slots():
    dev = Device(SMALL)
    upload(dev, image())
    nak = _nak(ask(dev, P.Begin(100, 0, 0, slot=0)), P.Err.BAD_SLOT)
    assert "running model" in nak.text
    _nak(ask(dev, P.Begin(100, 0, 0, slot=7)), P.Err.BAD_SLOT)
    assert ask(dev, P.Begin(100, 0, 0, slot=1)) == P.Ack(P.Msg.BEGIN, 0, 1)


def test_data_out_of_order_duplicates_and_overlap():
    dev = Device(SMALL)
    img = image()
    assert ask(dev, P.Begin(len(img), zlib.crc32(img), 0)) == P.Ack(P.Msg.BEGIN, 0, 0)
    assert ask(dev, P.Data(0, img[:256])) == P.Ack(P.Msg.DATA, 256, 256)
    # past a lost frame: written all the same (ACK: bytes in order, bytes in flash)
    assert ask(dev, P.Data(600, img[600:900])) == P.Ack(P.Msg.DATA, 256, 556)
    assert dev.flash.erase_counts[dev.store.slot_page(0, 1)] == 1  # its page, erased once
    ops = dev.flash.ops
    assert ask(dev, P.Data(0, img[:256])) == P.Ack(P.Msg.DATA, 256, 556)  # a duplicate
    assert ask(dev, P.Data(700, img[700:800])) == P.Ack(P.Msg.DATA, 256, 556)
    assert dev.flash.ops == ops  # ... is not written again
    st_ = _status(dev)
    assert (st_.upload_received, st_.upload_durable) == (256, 556)
    _nak(ask(dev, P.Read(0, 600, 10)), P.Err.RANGE)  # read-back: only what is in order
    # the lost frame, overlapping what came before and after it: only the gap is written
    assert ask(dev, P.Data(200, img[200:650])) == P.Ack(P.Msg.DATA, 900, 900)
    assert dev.flash.ops == ops + 2  # 256..512 and 512..600, one write per page
    assert ask(dev, P.Read(0, 0, 500)) == P.ReadData(0, img[:500])
    assert upload(dev, img, start=900) == P.Ack(P.Msg.COMMIT, 0, zlib.crc32(img))
    _nak(ask(dev, P.Data(0, b"x")), P.Err.NO_UPLOAD)


def test_a_full_table_of_out_of_order_ranges_sends_the_host_back():
    dev = Device(SMALL)
    img = image()
    ask(dev, P.Begin(len(img), zlib.crc32(img), 0))
    starts = range(100, 100 + 20 * MAX_AHEAD, 20)  # every other 10 bytes lost
    for k, off in enumerate(starts):
        reply = ask(dev, P.Data(off, img[off : off + 10]))
        if k < MAX_AHEAD:
            assert reply == P.Ack(P.Msg.DATA, 0, 10 * (k + 1))
        else:
            nak = _nak(reply, P.Err.OFFSET)
            assert (nak.a, nak.b) == (0, off) and f"{MAX_AHEAD} ranges" in nak.text
    assert ask(dev, P.Data(110, img[110:120])) == P.Ack(P.Msg.DATA, 0, 10 * MAX_AHEAD + 10)
    assert upload(dev, img, start=0) == P.Ack(P.Msg.COMMIT, 0, zlib.crc32(img))  # fills it


def test_begin_resumes_the_same_upload_and_restarts_another():
    dev = Device(SMALL)
    img = image()
    upload(dev, img[:1000] + img[1000:], commit=False)  # everything sent, not committed
    assert ask(dev, P.Begin(len(img), zlib.crc32(img), 0)) == P.Ack(P.Msg.BEGIN, len(img), 0)
    assert ask(dev, P.Begin(len(img), 12345, 0)) == P.Ack(P.Msg.BEGIN, 0, 0)
    assert _status(dev).upload_received == 0


def test_commit_checks_completeness_crc_and_package():
    dev = Device(SMALL)
    img = image()
    crc = zlib.crc32(img)
    ask(dev, P.Begin(len(img), crc, 0))
    ask(dev, P.Data(0, img[:300]))
    nak = _nak(ask(dev, P.Commit(len(img), crc)), P.Err.INCOMPLETE)
    assert (nak.a, nak.b) == (300, len(img))
    _nak(ask(dev, P.Commit(len(img), crc ^ 1)), P.Err.CRC_MISMATCH)  # not what BEGIN said
    # a BEGIN that announced the wrong CRC: caught at commit from what is in flash
    dev_wrong = Device(SMALL)
    nak = _nak(_commit_with(dev_wrong, img, crc ^ 0xFF), P.Err.CRC_MISMATCH)
    assert (nak.a, nak.b) == (crc, crc ^ 0xFF)
    assert _status(dev_wrong).upload_slot == 0xFF  # dropped: the host must start again
    # a damaged package whose CRC the host computed on the damaged bytes
    bad = bytearray(img)
    bad[200] ^= 0x40
    nak = _nak(upload(Device(SMALL), bytes(bad)), P.Err.BAD_PACKAGE)
    assert "CRC-32 mismatch" in nak.text
    # worn-out flash: programming fails, the CRC check refuses to switch
    worn = Device(dataclasses.replace(SMALL, endurance=0))
    _nak(upload(worn, img), P.Err.CRC_MISMATCH)
    assert _status(worn).active_slot == 0xFF


def _commit_with(dev: Device, img: bytes, announced_crc: int) -> P.Payload:
    ask(dev, P.Begin(len(img), announced_crc, 0))
    for off in range(0, len(img), 400):
        ask(dev, P.Data(off, img[off : off + 400]))
    return ask(dev, P.Commit(len(img), announced_crc))


def test_repeat_commit_abort_reset_and_power_cycle_keep_the_model(tmp_path):
    state = tmp_path / "flash.bin"
    dev = Device(SMALL, state_path=state)
    img = image()
    crc = zlib.crc32(img)
    upload(dev, img)
    sha = hashlib.sha256(img).digest()
    assert ask(dev, P.Commit(len(img), crc, sha)) == P.Ack(P.Msg.COMMIT, 0, crc)  # reply lost
    ask(dev, P.Begin(len(img), crc, 0))
    ask(dev, P.Data(0, img[:256]))
    assert ask(dev, P.Msg.ABORT) == P.Ack(P.Msg.ABORT)
    assert _status(dev).upload_slot == 0xFF
    ask(dev, P.Begin(len(img), crc, 0))
    assert ask(dev, P.Msg.RESET) == P.Ack(P.Msg.RESET)
    st_ = _status(dev)
    assert (st_.upload_slot, st_.active_slot, st_.runnable) == (0xFF, 0, 1)
    dev.flash.close()
    reborn = Device(SMALL, state_path=state)  # power off, power on
    st2 = _status(reborn)
    assert (st2.active_slot, st2.active_crc32, st2.model_id) == (0, crc, st_.model_id)
    assert st2.total_erases == st_.total_erases
    reborn.flash.close()


def test_read_back_limits():
    dev = Device(SMALL)
    img = image()
    _nak(ask(dev, P.Read(0xFF, 0, 4)), P.Err.NO_MODEL)
    upload(dev, img)
    assert ask(dev, P.Read(0xFF, 0, 100)) == P.ReadData(0, img[:100])
    assert ask(dev, P.Read(0, len(img) - 8, 8)) == P.ReadData(len(img) - 8, img[-8:])
    nak = _nak(ask(dev, P.Read(0xFF, len(img) - 4, 8)), P.Err.RANGE)
    assert (nak.a, nak.b) == (len(img) + 4, len(img))
    ask(dev, P.Begin(len(img), zlib.crc32(img), 0))
    ask(dev, P.Data(0, img[:256]))
    assert ask(dev, P.Read(1, 0, 256)) == P.ReadData(0, img[:256])
    _nak(ask(dev, P.Read(1, 200, 100)), P.Err.RANGE)  # past what this upload wrote
    _nak(ask(dev, P.Read(2, 0, 4)), P.Err.BAD_SLOT)
    _nak(ask(dev, P.Read(0, 0, 509)), P.Err.BAD_PAYLOAD)  # more than one reply carries


def test_infer_refusals():
    dev = Device(SMALL)
    nak = _nak(ask(dev, P.Infer(bytes(400))), P.Err.NO_MODEL)
    assert "no model" in nak.text
    upload(dev, image())
    nak = _nak(ask(dev, P.Infer(bytes(399))), P.Err.BAD_INPUT)
    assert (nak.a, nak.b) == (399, 400)


def test_unknown_and_malformed_requests():
    dev = Device(SMALL)
    assert _nak(ask(dev, P.Frame(0x42, 1)), P.Err.UNKNOWN_TYPE).a == 0x42
    _nak(ask(dev, P.Ack(P.Msg.DATA, 1, 1)), P.Err.UNKNOWN_TYPE)  # a reply sent to the device
    _nak(ask(dev, P.Frame(int(P.Msg.STATUS), 1, b"x")), P.Err.BAD_PAYLOAD)
    _nak(ask(dev, P.Frame(int(P.Msg.BEGIN), 1, b"\x01\x02")), P.Err.BAD_PAYLOAD)
    _nak(ask(dev, P.Begin(0, 0, 0)), P.Err.BAD_PAYLOAD)
    ask(dev, P.Begin(100, 0, 0))
    _nak(ask(dev, P.Data(90, b"x" * 20)), P.Err.BAD_PAYLOAD)  # past the image end
    assert dev.faults == 0


def _flip_a_bit(dev: Device, slot: int) -> None:
    """Damage the first page of ``slot`` in flash (one bit, as wear or a stray write would)."""
    page = dev.store.slot_page(slot, 0)
    raw = bytearray(dev.flash.read(page * SMALL.page_bytes, SMALL.page_bytes))
    raw[100] ^= 0x04
    dev.flash.erase(page)
    dev.flash.write(page * SMALL.page_bytes, bytes(raw))


def test_boot_never_runs_a_complete_image_that_was_never_committed():
    """Every package has the same CRC-32 (the residue 0x2144DF1C), so size and CRC cannot tell
    two packages of one size apart: the commit record names its image by its SHA-256."""
    a, b, c, d = (image(seed=k) for k in range(4))
    assert len({len(a), len(b), len(c), len(d)}) == 1
    assert len({zlib.crc32(x) for x in (a, b, c, d)}) == 1
    dev = Device(SMALL)
    for img in (a, b, c):  # slots A, B, A: the record of b (slot B) is the one before the last
        assert isinstance(upload(dev, img), P.Ack)
    upload(dev, d, commit=False)  # d is in slot B, complete, and never committed
    assert dev.store.read_slot(1, 0, len(d)) == d
    _flip_a_bit(dev, 0)  # the running model c is damaged
    again = dev.power_cycle()
    st_ = _status(again)  # the record before names slot B, but b is no longer there
    assert (st_.active_slot, st_.runnable, st_.model_id) == (0xFF, 0, b"")
    _nak(ask(again, P.Infer(bytes(400))), P.Err.NO_MODEL)
    # with b still in slot B, the fallback to the record before is what it was
    dev = Device(SMALL)
    for img in (a, b, c):
        upload(dev, img)
    _flip_a_bit(dev, 0)
    st_ = _status(dev.power_cycle())
    assert (st_.active_slot, st_.model_id) == (1, decode_package(b).model_id)


def test_a_commit_with_no_upload_is_acknowledged_only_for_the_image_it_names(tmp_path):
    a, b = image(), image(seed=1)  # the same size and the same CRC-32
    crc = zlib.crc32(a)
    sha_a, sha_b = hashlib.sha256(a).digest(), hashlib.sha256(b).digest()
    dev = Device(SMALL, state_path=tmp_path / "flash.bin")
    upload(dev, a)
    # not a repeat of the commit of a: a COMMIT naming no image, or another one
    for named in (b"", sha_b):
        nak = _nak(ask(dev, P.Commit(len(b), crc, named)), P.Err.NO_UPLOAD)
        assert "no upload" in nak.text
    nak = _nak(ask(dev, P.Commit(len(a), crc, sha_a[:8])), P.Err.BAD_PAYLOAD)
    assert "32 bytes" in nak.text
    assert ask(dev, P.Commit(len(a), crc, sha_a)) == P.Ack(P.Msg.COMMIT, 0, crc)  # a repeat
    # an upload of b in progress: a COMMIT naming a is still a repeat, one naming b commits b
    ask(dev, P.Begin(len(b), crc, 0, P.AUTO_SLOT, sha_b))
    for off in range(0, len(b), 500):
        ask(dev, P.Data(off, b[off : off + 500]))
    assert ask(dev, P.Commit(len(a), crc, sha_a)) == P.Ack(P.Msg.COMMIT, 0, crc)
    assert _status(dev).upload_received == len(b)  # ... and leaves the upload alone
    assert ask(dev, P.Commit(len(b), crc, sha_b)) == P.Ack(P.Msg.COMMIT, 1, crc)
    dev.flash.close()
    again = Device(SMALL, state_path=tmp_path / "flash.bin")  # power lost before the ACK left
    assert ask(again, P.Commit(len(b), crc, sha_b)) == P.Ack(P.Msg.COMMIT, 1, crc)
    _nak(ask(again, P.Commit(len(a), crc, sha_a)), P.Err.NO_UPLOAD)
    again.flash.close()


def test_commit_checks_the_image_against_the_sha256_named_at_begin():
    a, b = image(), image(seed=1)  # the same size and CRC-32: only the SHA-256 tells them apart
    crc, sha_a = zlib.crc32(a), hashlib.sha256(a).digest()
    dev = Device(SMALL)
    ask(dev, P.Begin(len(a), crc, 0, P.AUTO_SLOT, sha_a))
    for off in range(0, len(b), 500):  # ... but b's bytes arrive
        ask(dev, P.Data(off, b[off : off + 500]))
    nak = _nak(ask(dev, P.Commit(len(a), crc, sha_a)), P.Err.CRC_MISMATCH)
    assert "SHA-256" in nak.text
    assert _status(dev).active_slot == 0xFF and dev.store.active() is None
    assert _status(dev).upload_slot == 0xFF  # dropped: the host must start again
