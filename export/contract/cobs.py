"""Consistent Overhead Byte Stuffing (Cheshire & Baker 1999): the framing of the wire protocol.

An encoding holds no zero byte, so a ``0x00`` can end every frame on the wire. Each block starts
with a code byte ``n`` (1..255): ``n - 1`` data bytes follow, then an implied zero unless
``n == 255``. The implied zero after the last block is not data.
"""

from __future__ import annotations


class CobsError(ValueError):
    """Bytes that are not a COBS encoding."""


def cobs_encode(data: bytes) -> bytes:
    """``data`` COBS-encoded: the result holds no zero byte."""
    out = bytearray()
    data = bytes(data)
    start = 0
    n = len(data)
    while True:
        end = data.find(0, start, min(n, start + 254))
        if end < 0:
            end = min(n, start + 254)
            out.append(end - start + 1)
            out += data[start:end]
            if end == n:
                return bytes(out)
            start = end  # block of 254 non-zero bytes, no zero consumed
        else:
            out.append(end - start + 1)
            out += data[start:end]
            start = end + 1


def cobs_decode(data: bytes) -> bytes:
    """Invert :func:`cobs_encode`; :class:`CobsError` on a zero byte or a block past the end."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise CobsError(f"COBS data holds a zero byte at position {i}")
        end = i + code
        if end > n:
            raise CobsError(f"COBS block at position {i} runs past the end ({code} > {n - i})")
        block = data[i + 1 : end]
        if 0 in block:
            raise CobsError("COBS data holds a zero byte")
        out += block
        i = end
        if code != 255 and i < n:
            out.append(0)
    return bytes(out)


def cobs_max_len(n: int) -> int:
    """Longest COBS encoding of ``n`` bytes (one code byte per 254 data bytes, at least one)."""
    return n + n // 254 + 1
