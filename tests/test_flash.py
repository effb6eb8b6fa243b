"""Flash pages, wear, the state file, power cuts and the A/B model store's commit log."""

from __future__ import annotations

import hashlib
import struct
import zlib

import pytest

from firmware_sim.flash import (
    FILE_HEADER,
    LEGACY_ID,
    MAX_ERASES,
    RECORD,
    CommitRecord,
    Flash,
    FlashError,
    ModelStore,
    PowerLoss,
    claim_state_file,
    image_id,
    state_file_bytes,
)


def test_erase_before_write_and_wear_counts():
    f = Flash(4096, 512)
    assert f.n_pages == 8 and f.read(0, 4) == b"\xff" * 4
    f.write(10, b"abc")
    assert f.read(9, 5) == b"\xffabc\xff"
    with pytest.raises(FlashError, match="not erased"):
        f.write(11, b"x")
    f.write(13, b"d")  # erased bytes next to programmed ones are fine
    f.erase(0)
    f.erase(0)
    assert f.read(10, 4) == b"\xff" * 4
    assert f.erase_counts[:2] == [2, 0] and f.ops == 4
    with pytest.raises(FlashError, match="crosses the end of page 0"):
        f.write(510, b"abc")
    with pytest.raises(FlashError, match="outside"):
        f.read(4095, 2)
    with pytest.raises(FlashError, match="does not exist"):
        f.erase(8)


@pytest.mark.parametrize("size, page, message", [
    (4096, 500, "power of two"), (4096, 16, "power of two"), (1000, 256, "multiple"),
    (1024, 512, "at least 4 pages"),
])
def test_bad_geometry_is_named(size, page, message):
    with pytest.raises(ValueError, match=message):
        Flash(size, page)


def test_state_file_keeps_contents_and_wear(tmp_path):
    path = tmp_path / "flash.bin"
    f = Flash(2048, 256, path=path)
    f.erase(3)
    f.write(3 * 256, b"kept")
    again = f.power_cycle()
    assert again.read(3 * 256, 4) == b"kept" and again.erase_counts[3] == 1
    again.close()
    reopened = Flash(2048, 256, path=path)
    assert reopened.read(3 * 256, 4) == b"kept"
    reopened.close()
    with pytest.raises(ValueError, match="4096 bytes in 256-byte pages"):
        Flash(4096, 256, path=path)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match="truncated"):
        Flash(2048, 256, path=path)
    other = tmp_path / "other.bin"
    other.write_bytes(b"PNG....")
    with pytest.raises(ValueError, match="not a mark1-kit flash state file"):
        Flash(2048, 256, path=other)


@pytest.mark.parametrize("backed", [False, True])
def test_power_cut_inside_a_write_and_an_erase(tmp_path, backed):
    path = tmp_path / "f.bin" if backed else None
    f = Flash(2048, 256, path=path)
    f.write(0, b"old-data")

    def cut_fourth_byte_of_the_next_write(op):
        return 3 if op.kind == "write" else None

    f.hook = cut_fourth_byte_of_the_next_write
    with pytest.raises(PowerLoss):
        f.write(256, b"new-data")
    assert not f.powered
    assert f.read(0, 3) == b"old"  # what was written stays readable
    with pytest.raises(PowerLoss):
        f.erase(0)  # but nothing more is done without power
    after = f.power_cycle()
    assert after.read(256, 8) == b"new\xff\xff\xff\xff\xff"
    after.hook = lambda op: op.length // 2 if op.kind == "erase" else None
    with pytest.raises(PowerLoss):
        after.erase(0)
    torn = after.power_cycle()
    assert torn.read(0, 8) == b"\xff" * 8 and torn.read(128, 1) == b"\xff"
    assert torn.erase_counts[0] == 1  # a torn erase still wears the page
    torn.close()


def test_worn_out_pages_no_longer_program():
    f = Flash(2048, 256, endurance=1)
    f.erase(1)
    f.write(256, b"\x01")
    f.erase(1)
    f.write(256, b"\x01")  # second erase: past the rated one
    assert f.read(256, 1) == b"\x81"


def _store(pages: int = 12, page: int = 128) -> ModelStore:
    return ModelStore(Flash(pages * page, page))


def _put_image(store: ModelStore, slot: int, data: bytes) -> None:
    page = store.flash.page_bytes
    for i in range(0, len(data), page):
        store.erase_page(slot, i // page)
        store.write_slot(slot, i, data[i : i + page])


def _commit(store: ModelStore, slot: int, img: bytes) -> CommitRecord:
    return store.commit(slot, len(img), zlib.crc32(img), image_id(img))


def test_layout_and_commit_record_format():
    s = _store()
    assert s.slot_pages == 5 and s.slot_bytes == 640
    assert s.slot_page(0, 0) == 2 and s.slot_page(1, 4) == 11
    assert RECORD.size == 32
    rec = CommitRecord(7, 1, 300, 0xDEADBEEF, image_id(b"the image"))
    raw = rec.pack()
    assert raw[:4] == b"M1CR" and CommitRecord.unpack(raw) == rec
    assert raw[20:28] == hashlib.sha256(b"the image").digest()[:8]
    assert struct.unpack_from("<IIBxxxII", raw) == (0x5243314D, 7, 1, 300, 0xDEADBEEF)
    for i in range(32):
        torn = bytearray(raw)
        torn[i] ^= 0x10
        assert CommitRecord.unpack(bytes(torn)) is None
    assert CommitRecord.unpack(b"\xff" * 32) is None


def test_newest_valid_record_wins_and_damaged_images_fall_back():
    s = _store()
    assert s.active() is None
    a, b = b"A" * 300, b"B" * 500
    _put_image(s, 0, a)
    _commit(s, 0, a)
    _put_image(s, 1, b)
    rec = _commit(s, 1, b)
    assert s.active() == rec and rec.seq == 2
    _damage(s, 1)  # slot B's image damaged (a bit flip in flash): the previous model is used
    assert s.active().slot == 0


def test_commit_log_rolls_over_between_its_two_pages():
    s = _store(page=128)  # four records per log page
    img = b"x" * 100
    _put_image(s, 0, img)
    for k in range(1, 11):
        rec = _commit(s, 0, img)
        assert rec.seq == k and s.active() == rec
    counts = s.flash.erase_counts[:2]
    # records 1-4 on page 0, 5-8 on page 1 (erased once), 9-10 on page 0 (erased once)
    assert counts == [1, 1]
    assert [r.seq for r in s.records()] == [10, 9, 8, 7, 6, 5]


def test_a_torn_record_is_skipped_and_the_log_continues():
    s = _store()
    img = b"m" * 64
    _put_image(s, 0, img)
    _commit(s, 0, img)
    s.flash.hook = lambda op: 10  # the next record write stops after 10 of its 32 bytes
    with pytest.raises(PowerLoss):
        _commit(s, 0, img)
    s2 = ModelStore(s.flash.power_cycle())
    assert s2.active().seq == 1
    rec = _commit(s2, 0, img)
    assert rec.seq == 2 and s2.active() == rec
    assert s2.flash.read(2 * RECORD.size, RECORD.size) == rec.pack()  # after the torn entry


def _with_residue(body: bytes) -> bytes:
    """``body`` followed by its CRC-32, as a package ends: the whole has the CRC-32 residue."""
    return body + struct.pack("<I", zlib.crc32(body))


def test_a_record_names_its_image_not_only_its_size_and_crc():
    s = _store()
    a, b, c, d = (_with_residue(bytes([k]) * 296) for k in b"abcd")
    assert len({zlib.crc32(x) for x in (a, b, c, d)}) == 1  # 0x2144DF1C, the residue
    _commit(s, 0, _put(s, 0, a))
    rec_b = _commit(s, 1, _put(s, 1, b))
    _commit(s, 0, _put(s, 0, c))
    _put(s, 1, d)  # complete in slot B, never committed
    _damage(s, 0)
    assert s.records()[1] == rec_b and s.active() is None  # not d
    _put(s, 1, b)
    assert s.active() == rec_b  # the image the record names: the fallback is as before


def test_records_of_the_earlier_layout_are_trusted_only_as_the_newest():
    """Records written before records named their image (zero id) keep the model running
    after the update; a fallback past a newer record to one of them is not taken."""
    s = _store()
    a, b = _with_residue(b"a" * 296), _with_residue(b"b" * 296)
    _put(s, 0, a)
    _put(s, 1, b)
    old = [CommitRecord(k, slot, 300, zlib.crc32(a), LEGACY_ID) for k, slot in ((1, 1), (2, 0))]
    for k, rec in enumerate(old):
        s.flash.write(k * RECORD.size, rec.pack())
    assert s.active() == old[1]  # the newest record, of the earlier layout
    _damage(s, 0)
    assert s.active() is None  # the one before it (slot B) is not trusted without an id
    rec = _commit(s, 1, b)
    assert s.active() == rec and rec.seq == 3 and rec.image_id == image_id(b)


def _put(store: ModelStore, slot: int, data: bytes) -> bytes:
    _put_image(store, slot, data)
    return data


def _damage(store: ModelStore, slot: int) -> None:
    """Flip one bit of the first page of ``slot``."""
    page = store.slot_page(slot, 0)
    size = store.flash.page_bytes
    raw = bytearray(store.flash.read(page * size, size))
    raw[5] ^= 1
    store.flash.erase(page)
    store.flash.write(page * size, bytes(raw))


def test_one_device_owns_its_state_file(tmp_path):
    path = tmp_path / "flash.bin"
    first = Flash(2048, 256, path=path)
    first.erase(2)
    with pytest.raises(ValueError, match="flash.bin' is in use by another device"):
        Flash(2048, 256, path=path)
    again = first.power_cycle()  # the same device restarting takes it back
    with pytest.raises(ValueError, match="in use by another device"):
        claim_state_file(path, 2048, 256)
    again.close()
    second = Flash(2048, 256, path=path)  # free once the first has gone
    assert second.erase_counts[2] == 1
    second.close()


def test_a_state_file_of_the_wrong_kind_or_size_is_refused_before_it_is_read(tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "folder").mkdir()
    sparse = tmp_path / "sparse.bin"
    with open(sparse, "wb") as fh:
        fh.write(FILE_HEADER.pack(b"M1FLASH1", 2048, 256))
        fh.truncate(30 * 2**30)  # 30 GiB, a few bytes on disk
    cases = [("/dev/zero", "is not a regular file"), (tmp_path / "pipe", "is not a regular file"),
             (tmp_path / "folder", "is a folder"),
             (sparse, "is 32,212,254,720 bytes, expected 2,096: truncated or damaged"),
             ("", "path is empty")]
    for path, says in cases:
        with pytest.raises(ValueError, match=says):
            Flash(2048, 256, path=path)
    assert sparse.stat().st_size == 30 * 2**30 and sparse.stat().st_blocks < 64
    assert state_file_bytes(2048, 256) == 2096


def test_a_damaged_erase_counter_is_reported_and_the_file_left_as_it_was(tmp_path):
    path = tmp_path / "flash.bin"
    Flash(2048, 256, path=path).close()
    raw = bytearray(path.read_bytes())
    raw[FILE_HEADER.size + 4 * 5 : FILE_HEADER.size + 4 * 6] = struct.pack("<I", 0xFFFFFFFF)
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"flash.bin is damaged: the erase counter of page 5 "
                                         r"reads 4,294,967,295 \(at most 100,000,000\)"):
        Flash(2048, 256, path=path)
    assert path.read_bytes() == bytes(raw)
    raw[FILE_HEADER.size + 4 * 5 : FILE_HEADER.size + 4 * 6] = struct.pack("<I", MAX_ERASES)
    path.write_bytes(bytes(raw))
    worn = Flash(2048, 256, path=path)  # the most a counter may say: accepted
    assert worn.erase_counts[5] == MAX_ERASES
    worn.close()


def test_a_state_file_made_now_is_removed_again_when_its_device_cannot_start(tmp_path):
    with pytest.raises(ValueError):
        Flash(2048, 256, path=tmp_path / "no" / "flash.bin")
    assert list(tmp_path.iterdir()) == []
