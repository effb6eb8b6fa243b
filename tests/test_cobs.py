"""COBS, the framing of the wire protocol: reference vectors, round trips, malformed input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from export.contract.cobs import CobsError, cobs_decode, cobs_encode, cobs_max_len

# Examples of Cheshire & Baker's COBS, as tabulated in the literature (input -> encoding).
COBS_VECTORS = [
    (b"", b"\x01"),
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x00\x11\x00", b"\x01\x02\x11\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255))),
    (bytes(range(0, 255)), b"\x01\xff" + bytes(range(1, 255))),
    (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
    (bytes(range(2, 256)) + b"\x00", b"\xff" + bytes(range(2, 256)) + b"\x01\x01"),
    (bytes(range(3, 256)) + b"\x00\x01", b"\xfe" + bytes(range(3, 256)) + b"\x02\x01"),
]


@pytest.mark.parametrize("raw, encoded", COBS_VECTORS)
def test_cobs_reference_vectors(raw, encoded):
    assert cobs_encode(raw) == encoded
    assert cobs_decode(encoded) == raw


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1200) | st.lists(st.sampled_from([0, 1, 255]), max_size=700).map(bytes))
def test_cobs_round_trip_has_no_zero_and_bounded_overhead(data):
    enc = cobs_encode(data)
    assert 0 not in enc
    assert len(enc) <= cobs_max_len(len(data))
    assert cobs_decode(enc) == data


@pytest.mark.parametrize("bad, why", [(b"\x03\x11\x00", "zero"), (b"\x05\x11\x22", "past the end"),
                                      (b"\x00", "zero")])
def test_cobs_decode_rejects_malformed(bad, why):
    with pytest.raises(CobsError, match=why):
        cobs_decode(bad)
