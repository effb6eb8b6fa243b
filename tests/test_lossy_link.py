"""Pushing through a lossy line: bit errors, lost, doubled and inserted bytes, stalls and cuts
between host and device (a real TCP relay, `firmware_sim.lossy_link`). Every push completes and
verifies or fails with a clear error; the device never commits a damaged model. The soak
versions are `benchmarks/soak_reliability.py` and the `slow` tests at the end."""

from __future__ import annotations

import dataclasses
import hashlib
import zlib
from collections.abc import Callable

import numpy as np
import pytest

from export.contract import protocol as P
from export.serial.errors import LinkLost, NoDevice
from export.serial.push import push
from export.serial.settings import LinkSettings
from firmware_sim.device import Device
from firmware_sim.lossy_link import (
    CLEAN,
    NOISY,
    VERY_NOISY,
    FaultCounts,
    FaultyStream,
    LineFaults,
    LossyLink,
)
from firmware_sim.serve import TcpServer
from tests.device_helpers import SMALL, ask, image, no_thread_leaks  # noqa: F401 - fixture

QUICK = LinkSettings(baud=1_000_000, timeout_s=0.1, reconnect_delay_s=0.02)
"""Host settings for an unpaced local line: timeouts sized for a fast link."""
CHUNK = SMALL.max_payload - P.Data.FIXED.size
"""Image bytes in a full ``DATA`` frame to the small part."""


def _pair() -> tuple[bytes, bytes]:
    """Two different packages of the same size (so also the same whole-image CRC-32)."""
    a, b = image(hidden=16), image(hidden=16, seed=1)
    assert len(a) == len(b) and a != b
    return a, b


def active_image(dev: Device) -> bytes | None:
    """The bytes the device runs, read straight from its flash."""
    act = dev.store.active()
    return None if act is None else dev.store.read_slot(act.slot, 0, act.size)


# --------------------------------------------------------------------------- the line itself


def _run(stream: FaultyStream, chunks: list[bytes]) -> tuple[bytes, list[float]]:
    out, stalls = bytearray(), []
    for chunk in chunks:
        pieces, cut = stream.apply(chunk)
        assert not cut
        for piece, stall in pieces:
            out += piece
            if stall:
                stalls.append(stall)
    return bytes(out), stalls


def test_the_damage_depends_on_the_stream_position_not_on_the_chunking():
    faults = LineFaults(ber=1e-3, drop=1e-3, duplicate=1e-3, garbage=1e-3, stall=1e-3)
    data = np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes()
    whole = _run(FaultyStream(faults, np.random.default_rng(7)), [data])
    cuts = np.sort(np.random.default_rng(1).integers(0, len(data), 60))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
    chunked = _run(FaultyStream(faults, np.random.default_rng(7)), pieces)
    assert whole == chunked and whole[0] != data and len(whole[1]) > 5
    other = _run(FaultyStream(faults, np.random.default_rng(8)), [data])
    assert other[0] != whole[0]


@pytest.mark.parametrize("name", ["ber", "drop", "duplicate", "garbage", "stall", "cut"])
def test_each_fault_happens_at_its_rate(name):
    p, n = 1e-3, 200_000
    stream = FaultyStream(LineFaults(**{name: p}), np.random.default_rng(3))
    events = 0
    data = bytes(1000)
    while stream.counts.bytes_in < n:
        pieces, cut = stream.apply(data)
        events += cut
        if name == "ber":  # a flipped bit in a zero byte leaves a one bit
            events += sum(bin(b).count("1") for piece, _ in pieces for b in piece)
    c = stream.counts
    got = {"ber": c.bit_flips, "drop": c.dropped, "duplicate": c.duplicated,
           "garbage": c.garbage_bytes, "stall": c.stalls, "cut": c.cuts}[name]
    trials = 8 * c.bytes_in if name == "ber" else c.bytes_in
    mean = p * trials * ((1 + 16) / 2 if name == "garbage" else 1)
    assert abs(got - mean) < 6 * np.sqrt(mean) * (4 if name == "garbage" else 1), (got, mean)
    if name in ("ber", "cut"):
        assert events == got
    if name == "drop":
        assert c.bytes_out == c.bytes_in - c.dropped


@pytest.mark.parametrize("kwargs, message", [
    ({"ber": 1.5}, "ber = 1.5: a probability"), ({"drop": -0.1}, "drop = -0.1"),
    ({"garbage_max": 0}, "garbage_max = 0"), ({"stall_s": (1.0, 0.5)}, "stall_s"),
    ({"cut": True}, "cut = True"),
])
def test_line_faults_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LineFaults(**kwargs)
    assert CLEAN.clean and not NOISY.clean


# --------------------------------------------------------------------------- pushes


def test_pushes_over_a_noisy_line_complete_verify_and_never_commit_damage():
    a, b = _pair()
    dev = Device(SMALL)
    with TcpServer(dev) as srv, LossyLink((srv.host, srv.port), NOISY, seed=11) as line:
        for k, img in enumerate((a, b, a)):
            rep = push(line.url, img, settings=QUICK)
            assert rep.verified_bytes == len(img)
            assert active_image(dev) == img, k
        damaged = line.counts()
    assert damaged["to_device"].bit_flips > 5 and damaged["to_host"].bit_flips > 5
    assert dev.status().frames_bad > 0 and dev.faults == 0


@pytest.mark.parametrize("faults", [
    LineFaults(drop=2e-4), LineFaults(duplicate=2e-4), LineFaults(garbage=2e-4),
    LineFaults(stall=5e-5, stall_s=(0.05, 0.4)), LineFaults(cut=4e-5),
], ids=["drop", "duplicate", "garbage", "stall", "cut"])
def test_each_kind_of_fault_is_survived(faults):
    a, b = _pair()
    dev = Device(SMALL)
    with TcpServer(dev) as srv, LossyLink((srv.host, srv.port), faults, seed=5) as line:
        for img in (a, b):
            push(line.url, img, settings=dataclasses.replace(QUICK, reconnects=5))
            assert active_image(dev) == img
        counts = line.counts()
    assert any(dataclasses.astuple(c)[2:] != dataclasses.astuple(FaultCounts())[2:]
               for c in counts.values())  # the line did damage something
    assert dev.faults == 0


def test_short_frames_get_through_where_long_ones_cannot():
    img = image()
    dev = Device(SMALL)
    with TcpServer(dev) as srv, LossyLink((srv.host, srv.port), VERY_NOISY, seed=2) as line:
        rep = push(line.url, img, settings=QUICK)
        assert active_image(dev) == img and rep.resends > 5
    # a fresh line, so the fault stream does not depend on how the push above was timed
    fixed = dataclasses.replace(QUICK, adapt=False, retries=1, reconnects=0)
    with TcpServer(dev) as srv, LossyLink((srv.host, srv.port), VERY_NOISY, seed=3) as line:
        with pytest.raises(LinkLost, match=r"link to socket://.* lost \(.*\); gave up after 0"):
            push(line.url, image(seed=1), settings=fixed)
    assert active_image(dev) == img  # the failed push left the model as it was


def test_a_line_that_lets_nothing_through_is_named_as_such():
    dev = Device(SMALL)
    noisy_replies = LineFaults(ber=0.05)  # the requests arrive, no reply comes back intact
    with TcpServer(dev) as srv, LossyLink((srv.host, srv.port), CLEAN, noisy_replies) as line:
        with pytest.raises(NoDevice, match=r"no intact reply .* damaged frames came back: a "
                                           r"noisy line or a wrong baud rate"):
            push(line.url, image(), settings=dataclasses.replace(QUICK, retries=1))
    assert dev.status().frames_ok == 2 and dev.store.active() is None


@pytest.mark.parametrize("cuts", [(1500,), (700, 2900), (300, 301, 6000)])
def test_a_resumed_upload_resends_at_most_the_frames_in_flight(cuts):
    img = image(hidden=16)
    dev = Device(SMALL)
    with TcpServer(dev) as srv, LossyLink((srv.host, srv.port), seed=0, cut_after=cuts) as line:
        rep = push(line.url, img, settings=dataclasses.replace(QUICK, reconnects=len(cuts)))
        assert line.connections == len(cuts) + 1
    assert rep.reconnects == len(cuts) and len(rep.resumed_from) == len(cuts) + 1
    assert rep.data_bytes_sent - len(img) <= len(cuts) * QUICK.window * CHUNK
    assert active_image(dev) == img


# --------------------------------------------------------------------------- regressions


def test_a_stale_upload_of_another_package_of_the_same_size_is_not_resumed():
    a, b = _pair()
    crc = zlib.crc32(a)
    assert crc == zlib.crc32(b) == 0x2144DF1C  # the CRC-32 residue: every package has it
    dev = Device(SMALL)
    assert ask(dev, P.Begin(len(a), crc, 0, P.AUTO_SLOT, hashlib.sha256(a).digest())).a == 0
    ask(dev, P.Data(0, a[:CHUNK]))
    same = ask(dev, P.Begin(len(a), crc, 0, P.AUTO_SLOT, hashlib.sha256(a).digest()))
    other = ask(dev, P.Begin(len(b), crc, 0, P.AUTO_SLOT, hashlib.sha256(b).digest()))
    assert (same.a, other.a) == (CHUNK, 0)
    too_long = ask(dev, P.Begin(len(b), crc, 0, P.AUTO_SLOT, bytes(33)))
    assert isinstance(too_long, P.Nak) and too_long.code == P.Err.BAD_PAYLOAD
    # through the host: a push cut short, then a push of another model of the same size
    with TcpServer(dev) as srv:
        with LossyLink((srv.host, srv.port), cut_after=(3000,)) as line:
            with pytest.raises(LinkLost):
                push(line.url, a, settings=dataclasses.replace(QUICK, reconnects=0))
        rep = push(srv.url, b, settings=QUICK)
    assert rep.resumed_from == [0] and active_image(dev) == b


class _DropFrames:
    """A stream that loses the first ``limit`` frames for which ``lost(frame)`` is true."""

    def __init__(self, lost: Callable[[P.Frame], bool], limit: int = 1) -> None:
        self.lost, self.limit, self.dropped, self.buf = lost, limit, 0, bytearray()
        self.counts = FaultCounts()

    def apply(self, data: bytes) -> tuple[list[tuple[bytes, float]], bool]:
        self.buf += data
        *frames, self.buf = self.buf.split(P.DELIMITER)
        out = bytearray()
        for raw in frames:
            if raw and self.dropped < self.limit and self.lost(P.decode_frame(bytes(raw))):
                self.dropped += 1
                continue
            out += raw + P.DELIMITER
        return [(bytes(out), 0.0)], False


def _last_data(size: int) -> Callable[[P.Frame], bool]:
    """True for a ``DATA`` frame that ends at byte ``size``."""

    def last(f: P.Frame) -> bool:
        if f.type != P.Msg.DATA:
            return False
        d = P.Data.unpack(f.payload)
        return d.offset + len(d.data) == size

    return last


def _data_at(offset: int) -> Callable[[P.Frame], bool]:
    """True for a ``DATA`` frame that starts at ``offset``."""
    return lambda f: f.type == P.Msg.DATA and P.Data.unpack(f.payload).offset == offset


def test_a_lost_data_frame_is_sent_again_by_itself():
    """Selective repeat: the frames after a lost one are taken (written out of order), and the
    host, seeing their acknowledgements, sends the lost frame again -- alone, and at once."""
    img = image(hidden=16)
    dev = Device(SMALL)
    with TcpServer(dev) as srv, LossyLink((srv.host, srv.port)) as line:
        line.up = _DropFrames(_data_at(2 * CHUNK))  # the third frame, behind two
        rep = push(line.url, img, settings=QUICK)
        assert line.up.dropped == 1
    assert (rep.resends, rep.go_backs, rep.timeouts) == (1, 0, 0)
    assert rep.data_bytes_sent == len(img) + CHUNK  # the lost frame's bytes, nothing more
    assert active_image(dev) == img


def _read_data_at(offset: int) -> Callable[[P.Frame], bool]:
    """True for a ``READ_DATA`` reply of the bytes at ``offset``."""
    return lambda f: f.type == P.Msg.READ_DATA and P.ReadData.unpack(f.payload).offset == offset


def test_a_lost_read_back_reply_is_asked_for_again_by_itself():
    img = image(hidden=16)
    fixed = dataclasses.replace(QUICK, adapt=False)  # frame sizes stay put: counts compare
    frames = []
    for lose in (0, 1):
        dev = Device(SMALL)
        with TcpServer(dev) as srv, LossyLink((srv.host, srv.port)) as line:
            line.down = _DropFrames(_read_data_at(2 * CHUNK), limit=lose)
            rep = push(line.url, img, settings=fixed)
        frames.append(dev.status().frames_ok)
        assert (rep.timeouts, rep.verified_bytes) == (0, len(img)) and active_image(dev) == img
    assert frames[1] == frames[0] + 1  # one READ more: the lost one, not those behind it


def _commit_ack(f: P.Frame) -> bool:
    return f.type == P.Msg.ACK and P.Ack.unpack(f.payload).of == P.Msg.COMMIT


def test_a_lost_last_data_frame_costs_one_timeout_not_a_storm_of_reads():
    img = image(hidden=16)
    dev = Device(SMALL)
    with TcpServer(dev) as srv, LossyLink((srv.host, srv.port)) as line:
        line.up = _DropFrames(_last_data(len(img)))
        rep = push(line.url, img, settings=QUICK)
        assert line.up.dropped == 1
    # the READ behind the lost frame is refused (RANGE); the host must wait for the DATA to
    # be resent rather than ask again and again, each refusal resetting its timer
    assert rep.timeouts == 1 and active_image(dev) == img
    assert dev.status().frames_ok < 4 * len(img) // CHUNK + 20


def test_a_commit_whose_replies_were_all_lost_is_confirmed_after_reconnecting():
    """The device committed, every ``ACK`` of the ``COMMIT`` was lost and the host reopened the
    link: it repeats the ``COMMIT`` (naming the image), which the device acknowledges again
    because that image is now the active one -- no second upload."""
    a, b = _pair()
    dev = Device(SMALL)
    with TcpServer(dev) as srv:
        push(srv.url, a, settings=QUICK)
        with LossyLink((srv.host, srv.port)) as line:
            line.down = _DropFrames(_commit_ack, limit=QUICK.retries + 1)
            rep = push(line.url, b, settings=QUICK)
            assert line.down.dropped == QUICK.retries + 1
    assert rep.reconnects == 1 and rep.resumed_from == [0]  # one BEGIN: nothing sent again
    assert rep.data_bytes_sent == len(b) and active_image(dev) == b
    assert len(dev.store.records()) == 2  # committed once


def test_a_commit_after_the_device_lost_the_upload_sends_it_again():
    """A reset between the last ``DATA`` and ``COMMIT``: the device has no upload and the active
    model is another one of the same size (and CRC). The ``COMMIT`` is refused, not taken for a
    repeat, and the host uploads again."""
    a, b = _pair()
    dev = Device(SMALL)
    with TcpServer(dev) as srv:
        push(srv.url, a, settings=QUICK)

        resets = []

        def reset_before_the_first_commit(f: P.Frame) -> bool:
            if f.type == P.Msg.COMMIT and not resets:
                with dev.lock:  # every earlier frame is handled: the host saw their replies
                    dev.boot()  # as a watchdog reset would: the upload in RAM is gone
                resets.append(f.seq)
            return False

        with LossyLink((srv.host, srv.port)) as line:
            line.up = _DropFrames(reset_before_the_first_commit)
            rep = push(line.url, b, settings=QUICK)
    assert len(resets) == 1
    assert rep.reconnects == 1 and rep.resumed_from == [0, 0]
    assert rep.data_bytes_sent == 2 * len(b) and active_image(dev) == b


# --------------------------------------------------------------------------- soak


@pytest.mark.slow
@pytest.mark.parametrize("faults", [NOISY, VERY_NOISY, LineFaults(
    ber=2e-5, drop=5e-5, duplicate=5e-5, garbage=5e-5, stall=2e-5, cut=2e-5)],
    ids=["ber-1e-4", "ber-1e-3", "rough"])
def test_soak_many_pushes(faults):
    from benchmarks.soak_reliability import lossy_soak

    result = lossy_soak(faults, n=30 if faults is not VERY_NOISY else 8, seed=1)
    assert result["corrupted_commits"] == 0
    assert result["unclear_failures"] == 0
    assert result["completed"] == result["n"]
