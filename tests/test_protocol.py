"""The wire protocol: frames, the stream decoder, payloads and the spec's worked example."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from export.contract import protocol as P
from export.contract.cobs import cobs_encode
from tests.conftest import ROOT


def test_frame_layout_crc_and_round_trip():
    frame = P.Data(0x01020304, b"\x00\xffab").frame(0xBEEF)
    raw = P.frame_bytes(frame)
    assert raw[:5] == bytes([P.Msg.DATA, 0xEF, 0xBE, 8, 0])
    assert raw[5:13] == b"\x04\x03\x02\x01\x00\xffab"
    assert int.from_bytes(raw[-4:], "little") == zlib.crc32(raw[:-4])
    wire = P.encode_frame(frame)
    assert wire.endswith(b"\x00") and 0 not in wire[:-1]
    assert P.decode_frame(wire[:-1]) == frame


def test_every_single_bit_error_is_caught():
    wire = P.encode_frame(P.Begin(27604, 0x2144DF1C, 464, 0xFF).frame(7))
    for i in range(len(wire) - 1):
        for bit in range(8):
            bad = bytearray(wire)
            bad[i] ^= 1 << bit
            dec = P.FrameDecoder()
            assert dec.feed(bytes(bad)) == [], (i, bit)
            assert dec.errors >= 1


def test_frame_field_limits():
    with pytest.raises(P.ProtocolError, match="sequence number"):
        P.frame_bytes(P.Frame(1, 70000))
    with pytest.raises(P.ProtocolError, match="not a byte"):
        P.frame_bytes(P.Frame(256, 0))
    with pytest.raises(P.ProtocolError, match="shorter"):
        P.decode_frame(cobs_encode(b"\x01\x02"))
    body = bytes([1, 1, 0, 9, 0]) + b"ab"  # length field says 9, payload has 2
    with pytest.raises(P.ProtocolError, match="length field"):
        P.decode_frame(cobs_encode(body + zlib.crc32(body).to_bytes(4, "little")))


def test_decoder_handles_any_split_noise_and_oversize():
    frames = [P.Hello().frame(1), P.Data(5, bytes(range(256)) * 3).frame(2),
              P.Frame(int(P.Msg.STATUS), 3)]
    stream = b"".join(P.encode_frame(f) for f in frames)
    rng = np.random.default_rng(0)
    for _ in range(30):
        cuts = sorted(rng.integers(0, len(stream), size=rng.integers(1, 12)))
        dec = P.FrameDecoder()
        got = []
        for a, b in zip([0, *cuts], [*cuts, len(stream)]):
            got += dec.feed(stream[a:b])
        assert got == frames and dec.errors == 0
    # garbage before, a frame too long for the receiver, then a good frame
    dec = P.FrameDecoder(max_payload=64)
    junk = b"\x13\x37garbage\x00"
    too_long = P.encode_frame(P.Data(0, b"x" * 200).frame(9))
    assert dec.feed(junk + too_long + P.encode_frame(frames[0])) == [frames[0]]
    assert dec.errors == 2 and "longer" in dec.last_error
    assert dec.feed(b"\x00\x00") == []  # empty chunks are not errors
    assert dec.errors == 2
    dec.feed(b"\x05partial")
    dec.reset()  # a new connection: the partial frame is forgotten, the counts are kept
    assert dec.feed(P.encode_frame(frames[0])) == [frames[0]] and dec.frames == 2


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_decoder_never_raises_on_random_bytes(data):
    dec = P.FrameDecoder(max_payload=128)
    for f in dec.feed(data):
        assert isinstance(f, P.Frame)


PAYLOADS = [
    P.Hello(1),
    P.Info(1, 1024, 262144, 2048, 129024, 65536, 80_000_000, "név"),
    P.Begin(10, 0xFFFFFFFF, 464, 1),
    P.Data(3, b"\x00\x01"),
    P.Commit(10, 1),
    P.Read(0xFF, 7, 1020),
    P.ReadData(7, b"abc"),
    P.Infer(bytes(range(256))),
    P.Result(123456, b"\x80\x7f"),
    P.Ack(P.Msg.DATA, 8, 8),
    P.Nak(P.Msg.BEGIN, P.Err.TOO_LARGE_FLASH, 200000, 129024, "does not fit"),
    P.Status(*range(15), model_id=b"\x01" * 32),
]


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: type(p).__name__)
def test_payload_round_trip_and_length_checks(payload):
    packed = payload.pack()
    assert type(payload).unpack(packed) == payload
    frame = payload.frame(42)
    assert frame.type == payload.TYPE and frame.seq == 42
    if payload.TAIL is None:
        with pytest.raises(P.ProtocolError, match="payload of"):
            type(payload).unpack(packed + b"\x00")
    if type(payload).FIXED.size:
        with pytest.raises(P.ProtocolError, match="payload of"):
            type(payload).unpack(packed[: type(payload).FIXED.size - 1])


def test_payload_errors_are_protocol_errors():
    with pytest.raises(P.ProtocolError, match="not UTF-8"):
        P.Nak.unpack(P.Nak(1, 2).pack() + b"\xff\xfe")
    with pytest.raises(P.ProtocolError, match="Begin"):
        P.Begin(-1, 0, 0).pack()
    with pytest.raises(P.ProtocolError, match="not a reply"):
        P.parse_reply(P.Hello().frame(1))
    assert P.Nak(1, P.Err.OFFSET, 5, 9).describe() == "OFFSET (a=5, b=9)"
    assert P.Nak(1, 99).describe().startswith("error 99")


def test_spec_example_is_generated_from_the_code():
    doc = (ROOT / "docs" / "PROTOCOL.md").read_text()
    start = doc.index("<!-- example:begin -->\n") + len("<!-- example:begin -->\n")
    end = doc.index("<!-- example:end -->")
    assert doc[start:end] == P.render_example()
    for name in [m.name for m in P.Msg] + [e.name for e in P.Err]:
        assert f"`{name}`" in doc, name
    for e in P.Err:
        assert f"| {int(e)} " in doc and f"`{e.name}`" in doc
    assert f"payload ({P.Status.FIXED.size} bytes, then the model id)" in doc
    # the example's device is the simulator's default part, figure for figure
    from firmware_sim.device import Device

    info = [f for who, f in P.example_exchange() if P.Msg(f.type) == P.Msg.INFO][0]
    assert P.Info.unpack(info.payload) == Device().info()
