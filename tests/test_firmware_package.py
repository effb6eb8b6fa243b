"""The C firmware's package loader, its Python-compatible formatting, CRC-32, SHA-256 and COBS,
against their Python definitions: every package the loader refuses is refused with the text of
``export.package.PackageError``, word for word, and every package it accepts is one
``decode_package`` accepts."""

from __future__ import annotations

import hashlib
import importlib.util
import struct
import subprocess
import sys
import zlib
from collections import Counter
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest

from export.contract import protocol as P
from export.contract.cobs import CobsError, cobs_decode, cobs_encode
from export.contract.package import (
    PackageError,
    decode_package,
    encode_package,
    peek_header,
    scales_encoded,
)
from firmware_sim import firmware
from firmware_sim.device import NAK_TEXT_MAX, clip_text
from tests import firmware_lib as fw
from tests.int8_models import tiny_package
from tests.test_fuzz import mutate_package, package_corpus, seal

PACK_TEXTS = firmware.C_DIR / "tools" / "pack_texts.py"


@pytest.fixture(scope="module", autouse=True)
def _library():
    fw.require_host_build()
    fw.lib()


def python_verdict(data: bytes, cap: int = 1024) -> tuple[str, list[int]]:
    """What ``decode_package`` says, in the form of :func:`tests.firmware_lib.load_package`."""
    try:
        pkg = decode_package(data)
    except PackageError as exc:
        return clip_text(str(exc), cap), []
    return "", [pkg.n_inputs, pkg.n_outputs, pkg.ram_bytes, len(pkg.layers), pkg.head,
                len(pkg.classes)]


def test_the_corpus_and_the_documented_example_load_alike():
    for data in package_corpus():
        assert fw.load_package(data) == python_verdict(data) != ("", [])[:0]
    tiny = encode_package(tiny_package())
    assert fw.load_package(tiny) == ("", [3, 2, 8, 1, 0, 2])  # docs/PACKAGE.md's example


def test_mutated_packages_get_the_simulators_words():
    rng = np.random.default_rng(21)
    corpus = package_corpus()
    kinds = set()
    for _ in range(3000):
        data = mutate_package(corpus[int(rng.integers(len(corpus)))], rng)
        want = python_verdict(data)
        assert fw.load_package(data) == want, data.hex()
        kinds.add(want[0].split(":")[0][:24])
    assert len(kinds) > 40, kinds  # the mutations reach many different checks


# --------------------------------------------------------------------------- targeted refusals


def _payload_start(data: bytes) -> int:
    pos = 80 + 32 * data[0x2E]
    for _ in range(struct.unpack_from("<H", data, 0x36)[0]):
        pos += 1 + data[pos]
    return (pos + 3) & ~3


def _patched(data: bytes, *edits: tuple[int, bytes]) -> bytes:
    buf = bytearray(data)
    for at, raw in edits:
        buf[at : at + len(raw)] = raw
    return seal(buf)


def _dense_arrays(data: bytes, layer: int = 0) -> dict[str, int]:
    """Offsets of a dense layer's arrays in the package."""
    n_in, n_out = struct.unpack_from("<II", data, 80 + 32 * layer + 4)
    start = _payload_start(data) + struct.unpack_from("<I", data, 80 + 32 * layer + 24)[0]
    w = (n_in * n_out + 3) & ~3
    return {"weights": start, "bias": start + w, "multiplier": start + w + 4 * n_out,
            "shift": start + w + 8 * n_out, "weight_scale": start + w + 12 * n_out,
            "entry": 80 + 32 * layer}


def _named(classes: tuple[str, ...]) -> bytes:
    return encode_package(replace(tiny_package(), classes=classes))


def _targeted() -> dict[str, bytes]:
    tiny = encode_package(tiny_package())
    d = _dense_arrays(tiny)
    i32 = lambda v: struct.pack("<i", v)  # noqa: E731
    f32 = lambda v: struct.pack("<f", v)  # noqa: E731
    markI = package_corpus()[2]
    step_entry = 80 + 32 * 1
    step_n_out = struct.unpack_from("<I", markI, step_entry + 8)[0]
    step = _payload_start(markI) + struct.unpack_from("<I", markI, step_entry + 24)[0]
    ptr = [struct.unpack_from("<I", markI, step + 4 * k)[0] for k in range(step_n_out + 1)]
    cols = step + 4 * (step_n_out + 1) + 4 * step_n_out
    values = cols + ((2 * ptr[-1] + 3) & ~3)
    thr_entry = 80
    thr = _payload_start(markI) + struct.unpack_from("<I", markI, thr_entry + 24)[0]
    codebook = _payload_start(markI) + sum(
        struct.unpack_from("<I", markI, 80 + 32 * k + 28)[0] for k in range(markI[0x2E]))
    dup_unicode = _named(("\u00e9\u00e9", "xyzw"))  # names at 112: 1 + 4 bytes, 1 + 4 bytes
    return {
        "magic": b"\x89PNG" + tiny[4:],
        "short magic": b"M1",
        "short header": tiny[:50],
        "version": _patched(tiny, (4, b"\x03\x00")),
        "version 2 header size": _patched(tiny, (4, b"\x02\x00"), (6, b"\x40\x00")),
        "rounding code": _patched(tiny, (4, b"\x02\x00"), (0x3D, b"\x02")),
        "version 2 reserved": _patched(tiny, (4, b"\x02\x00"), (0x3E, b"\x00\x07")),
        "header size": _patched(tiny, (6, b"\x40\x00")),
        "truncated": tiny[:-1],
        "trailing": tiny + b"\0\0",
        "crc": tiny[:-1] + bytes([tiny[-1] ^ 1]),
        "model id": tiny[:20] + bytes([tiny[20] ^ 1]) + tiny[21:-4] + struct.pack(
            "<I", zlib.crc32(tiny[:20] + bytes([tiny[20] ^ 1]) + tiny[21:-4])),
        "reserved": _patched(tiny, (0x3D, b"\x01\x00\xab")),
        "source": _patched(tiny, (0x2C, b"\x07")),
        "head": _patched(tiny, (0x2D, b"\x02")),
        "layers": _patched(tiny, (0x2E, b"\x00")),
        "rank": _patched(tiny, (0x2F, b"\x00")),
        "unused dim": _patched(tiny, (0x32, b"\x05\x00")),
        "input size": _patched(tiny, (0x2F, b"\x02"), (0x30, struct.pack("<HH", 300, 300))),
        "input scale": _patched(tiny, (0x38, f32(float("-inf")))),
        "input scale nan": _patched(tiny, (0x38, f32(float("nan")))),
        "header n_inputs": _patched(tiny, (0x40, i32(4))),
        "header n_outputs": _patched(tiny, (0x44, i32(9))),
        "header ram": _patched(tiny, (0x48, i32(12))),
        "layer type": _patched(tiny, (d["entry"], b"\x07")),
        "layer flags": _patched(tiny, (d["entry"] + 1, b"\x82")),
        "layer reserved": _patched(tiny, (d["entry"] + 22, b"\x01\x00")),
        "layer n_in": _patched(tiny, (d["entry"] + 4, i32(0))),
        "layer offset": _patched(tiny, (d["entry"] + 24, i32(4))),
        "output scale nan": _patched(tiny, (d["entry"] + 16, f32(float("nan")))),
        "act_min": _patched(tiny, (d["entry"] + 20, b"\x05")),
        "weights": _patched(tiny, (d["weights"], b"\x80")),
        "multiplier negative": _patched(tiny, (d["multiplier"] + 4, i32(-5))),
        "multiplier small": _patched(tiny, (d["multiplier"], i32(5))),
        "shift": _patched(tiny, (d["shift"], i32(31))),
        "shift low": _patched(tiny, (d["shift"] + 4, i32(-40))),
        "zero multiplier": _patched(tiny, (d["multiplier"] + 4, i32(0))),
        "weight scale": _patched(tiny, (d["weight_scale"], f32(0.0))),
        "scales": _patched(tiny, (d["weight_scale"] + 4, f32(0.0025))),
        "subnormal scale": _patched(tiny, (d["weight_scale"] + 4, f32(1e-44))),
        "accumulator": _patched(tiny, (d["bias"], i32(2**31 - 1))),
        "threshold": _patched(markI, (thr + 2, struct.pack("<h", 200))),
        "row_ptr": _patched(markI, (step + 4, struct.pack("<I", 4294967295))),
        "cols": _patched(markI, (cols, struct.pack("<H", 65535))),
        "values -128": _patched(markI, (values + 1, b"\x80")),
        "value 0": _patched(markI, (values + 2, b"\x00")),
        "cols order": _patched(markI, (cols, struct.pack("<HH", 7, 7))),
        "codebook": _patched(markI, (codebook + 1, b"\x02")),
        "codebook zero": _patched(markI, (codebook + 3, b"\x00")),
        "names repeat": _patched(dup_unicode, (118, "\u00e9\u00e9".encode())),
        "invalid start byte": _patched(tiny, (0x71, b"\xff")),
        "invalid continuation": _patched(tiny, (0x71, b"\xe0\x80")),
        "surrogate": _patched(tiny, (0x71, b"\xed\xa0\x80")),
        "unexpected end": _patched(tiny, (0x74, b"\x02\xe2\x82")),
        "names padding": _patched(tiny, (0x77, b"\x01")),
    }


def test_each_check_refuses_with_the_simulators_words():
    cases = _targeted()
    texts = {}
    for name, data in cases.items():
        want = python_verdict(data)
        assert want[0], f"{name}: the case is not refused by decode_package"
        assert fw.load_package(data) == want, name
        texts[name] = want[0]
    # each case reaches a check of its own (a surrogate is an invalid continuation byte too,
    # and a subnormal weight scale gives the multiplier check's words)
    assert len(set(texts.values())) == len(texts) - 2
    # numbers are whole numbers and bits, never floats
    assert texts["row_ptr"].endswith("never decrease; row_ptr[2] = 24")  # 4294967295 before it
    assert texts["names repeat"] == "class name 1 repeats class name 0"
    assert texts["output scale nan"] == "layer 0: output_scale is NaN"
    assert texts["input scale"] == "input_scale is infinite: must be a positive finite float32"
    assert "multiplier[1]/shift[1] = " in texts["scales"]
    assert texts["magic"].startswith("not a weight package: magic 89504e47, expected 4d315750")
    assert texts["unexpected end"].endswith("(unexpected end of data)")


def test_version_2_packages_load_alike_and_carry_their_rounding():
    """Both roundings in version 2 and a version-2 header on a single-rounding package load as
    decode_package loads them; the engine then runs the package's own rounding."""
    tiny = tiny_package()
    single, double = encode_package(tiny), encode_package(replace(tiny, rounding="double"))
    relabelled = _patched(single, (4, b"\x02\x00"))
    for data in (double, relabelled):
        assert fw.load_package(data) == python_verdict(data) == ("", [3, 2, 8, 1, 0, 2])
    x_q = np.random.default_rng(4).integers(-128, 128, (4000, 3)).astype(np.int8)
    from export.contract.golden import golden_forward

    for path in fw.PATHS:
        y_double = fw.run(double, x_q, path=path)[0]
        y_single = fw.run(relabelled, x_q, path=path)[0]
        np.testing.assert_array_equal(y_double, golden_forward(decode_package(double), x_q))
        np.testing.assert_array_equal(y_single, golden_forward(tiny, x_q))
        assert (y_double != y_single).any()


def test_peek_header_alike():
    tiny = encode_package(tiny_package())
    for data in (tiny, tiny[:80], tiny[:10], b"M1", b"XXXX" + tiny[4:], _targeted()["version"]):
        try:
            h = peek_header(data)
            want = ("", [h.total_size, h.n_inputs, h.n_outputs, h.ram_bytes])
        except PackageError as exc:
            want = (str(exc), [])
        assert fw.peek_package(data) == want


# --------------------------------------------------------------------------- formatting


def test_numbers_are_printed_as_python_prints_them():
    rng = np.random.default_rng(0)
    cases = [(0, 0), (2**64 - 1, 2**32 - 1), (10**19, 2**31), (1, 2**31 - 1), (9, 2**31 + 1)]
    cases += [(int(a), int(c)) for a, c in zip(
        rng.integers(0, 2**63, 2000, dtype=np.uint64) * 2 + rng.integers(0, 2, 2000),
        rng.integers(0, 2**32, 2000))]
    for big, small in cases:
        signed_small = small - 2**32 if small >= 2**31 else small
        want = (f"{small} {signed_small} {big} {small:x} {small:08x} "
                f"{big.to_bytes(8, 'little').hex()} end%")
        assert fw.text_format(big, small) == want


def _pack_texts():
    """The text packer, firmware_sim/c/tools/pack_texts.py (a script of the C build)."""
    spec = importlib.util.spec_from_file_location("pack_texts", PACK_TEXTS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_catalog_text_comes_back_unchanged_from_the_packing():
    """The firmware expands each text of its catalog (src/texts.def) from the packed bytes to
    exactly the catalog's text, and so does the packer's own definition of the decoding."""
    packer = _pack_texts()
    entries = packer.read_catalog(packer.CATALOG.read_text())
    texts = [text for _, text in entries]
    # each text once, but the loader's words, which a NAK sends under two codes (texts.def)
    assert len(texts) > 90 and [t for t, n in Counter(texts).items() if n > 1] == ["%s"]
    assert fw.catalog_texts() == texts
    packing = packer.pack(texts)
    assert [packer.unpack(packing, codes) for codes in packing.texts] == texts
    assert packing.size < 0.55 * sum(len(text) + 1 for text in texts)


def test_the_packed_texts_are_what_the_catalog_gives():
    """src/texts_packed.h is generated: running the packer again gives it byte for byte (a
    text changed in texts.def without running the packer, or an edit by hand, fails here)."""
    res = subprocess.run([sys.executable, str(PACK_TEXTS), "--check"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    packer = _pack_texts()
    catalog = packer.CATALOG.read_text()
    want = packer.render(packer.read_catalog(catalog), packer.test_only(catalog))
    assert packer.PACKED.read_text() == want


def _f32(value: float) -> int:
    return struct.unpack("<I", struct.pack("<f", value))[0]


def test_the_scale_check_is_exact_and_the_same_in_both():
    """``scales_encoded`` (exact rationals) and the firmware's integer version agree, right at
    the 2^-28 bound, for subnormal scales and for zero multipliers."""
    rng = np.random.default_rng(8)
    f32 = np.float32
    checked = Counter()
    for _ in range(4000):
        s_in, w, s_out = (f32(v) for v in np.exp(rng.uniform(-30, 8, 3)))
        if rng.random() < 0.1:
            w = f32(np.frombuffer(rng.integers(1, 2**23, dtype=np.uint32).tobytes(), np.float32)[0])
        real = Fraction(float(s_in)) * Fraction(float(w)) / Fraction(float(s_out))
        shift = max(-31, min(30, int(np.floor(np.log2(float(real)))) + 1))
        exact = real / Fraction(2) ** (shift - 31)
        for mult in {int(exact), int(exact) + 1, int(exact * (1 + Fraction(1, 2**28))),
                     int(exact * (1 - Fraction(1, 2**28))) + 1, 0}:
            if mult and not 2**30 <= mult < 2**31:
                continue
            want = scales_encoded(mult, shift if mult else 0, s_in, w, s_out)
            got = fw.lib().mk_scales_encoded(mult, shift if mult else 0, _f32(s_in), _f32(w),
                                             _f32(s_out))
            assert bool(got) == want, (mult, shift, s_in, w, s_out)
            checked[want] += 1
    assert checked[True] > 1000 and checked[False] > 1000


def test_texts_are_cut_where_the_simulator_cuts_them():
    assert fw.lib().fw_text_max() == NAK_TEXT_MAX
    cases = _targeted()
    for name in ("scales", "layer offset", "names repeat"):
        full = python_verdict(cases[name])[0]
        for cap in (1, 7, len(full) // 2, len(full) - 1, len(full), NAK_TEXT_MAX):
            assert fw.load_package(cases[name], cap) == python_verdict(cases[name], cap)
    assert max(len(python_verdict(data)[0].encode()) for data in cases.values()) < NAK_TEXT_MAX


# --------------------------------------------------------------------------- CRC, SHA, COBS


def test_crc32_is_zlibs():
    lib = fw.lib()
    assert lib.mk_crc32(0, b"123456789", 9) == 0xCBF43926
    rng = np.random.default_rng(2)
    for n in (0, 1, 3, 4, 255, 1000, 4097):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert lib.mk_crc32(0, data, n) == zlib.crc32(data)
        assert lib.mk_crc32(lib.mk_crc32(0, data[:7], 7), data[7:], max(n - 7, 0)) == \
            zlib.crc32(data) or n < 7


def test_sha256_matches_the_standards_vectors():
    vectors = {  # FIPS 180-2, appendix B
        b"abc": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        b"": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq":
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
        b"a" * 1_000_000: "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
    }
    for data, digest in vectors.items():
        assert fw.sha256(data).hex() == digest
    rng = np.random.default_rng(3)
    for n in (1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 1000):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert fw.sha256(data) == hashlib.sha256(data).digest()


def test_cobs_is_the_protocols():
    rng = np.random.default_rng(4)
    samples = [b"", b"\0", b"\0\0", b"\x01" * 253, b"\x01" * 254, b"\x01" * 255, b"\x01" * 508,
               b"\x01" * 254 + b"\0", b"\0" + b"\x05" * 600]
    for _ in range(500):
        n = int(rng.integers(0, 1200))
        zeros = rng.random(n) < rng.choice([0.0, 0.01, 0.3])
        samples.append(np.where(zeros, 0, rng.integers(1, 256, n)).astype(np.uint8).tobytes())
    for raw in samples:
        encoded = fw.cobs_encode(raw)
        assert encoded == cobs_encode(raw) + P.DELIMITER
        assert fw.cobs_decode(encoded[:-1]) == raw == cobs_decode(encoded[:-1])
    for bad in (b"\x00\x01", b"\x05\x01\x02", b"\x03\x01"):
        with pytest.raises(CobsError):
            cobs_decode(bad)
        assert fw.cobs_decode(bad) is None
