"""The weight package: exact round trips, and every corrupted field refused with its name."""

from __future__ import annotations

import hashlib
import re
import struct
import zlib
from dataclasses import replace

import numpy as np
import pytest

from export.contract.package import (
    HEADER,
    HEADER_OFFSETS,
    LAYER_ENTRY,
    LAYER_OFFSETS,
    Package,
    PackageError,
    decode_package,
    encode_package,
    peek_header,
)
from export.int8.quantize import quantize_machine, quantize_mlp
from tests.conftest import ROOT
from tests.int8_models import random_checkpoint, random_machine, tiny_package


@pytest.fixture(scope="module")
def mlp_pkg() -> Package:
    rng = np.random.default_rng(3)
    return quantize_mlp(random_checkpoint(rng, [400, 16, 8, 3]), rng.uniform(size=(40, 400)))


@pytest.fixture(scope="module")
def markI_pkg() -> Package:
    rng = np.random.default_rng(4)
    return quantize_machine(random_machine(rng), rng.uniform(size=(40, 400)))


def _same(a: Package, b: Package) -> None:
    assert (a.input_shape, a.classes, a.source, a.input_scale, a.input_zero_point) == (
        b.input_shape, b.classes, b.source, b.input_scale, b.input_zero_point
    )
    assert len(a.layers) == len(b.layers)
    for la, lb in zip(a.layers, b.layers):
        assert type(la) is type(lb)
        for name, value in vars(la).items():
            other = getattr(lb, name)
            if isinstance(value, np.ndarray):
                assert value.dtype == other.dtype and np.array_equal(value, other), name
            else:
                assert value == other, name
    assert (a.codebook is None) == (b.codebook is None)
    if a.codebook is not None:
        np.testing.assert_array_equal(a.codebook, b.codebook)


@pytest.mark.parametrize("which", ["mlp_pkg", "markI_pkg", "tiny"])
def test_round_trip_is_exact(which, request):
    pkg = tiny_package() if which == "tiny" else request.getfixturevalue(which)
    data = encode_package(pkg)
    back = decode_package(data)
    _same(pkg, back)
    assert encode_package(back) == data
    assert back.model_id == pkg.model_id == hashlib.sha256(data[44:-4]).digest()
    assert len(data) % 4 == 0
    head = peek_header(data[:80])
    assert (head.total_size, head.model_id, head.n_inputs, head.n_outputs, head.ram_bytes) == (
        len(data), pkg.model_id, pkg.n_inputs, pkg.n_outputs, pkg.ram_bytes
    )
    assert decode_package(bytearray(data)).model_id == decode_package(memoryview(data)).model_id


def test_model_id_follows_content(mlp_pkg):
    layer = mlp_pkg.layers[1]
    w = layer.weights.copy()
    w[0, 0] = -w[0, 0] if w[0, 0] else 1
    changed = replace(mlp_pkg, layers=(mlp_pkg.layers[0], replace(layer, weights=w),
                                       mlp_pkg.layers[2]))
    assert changed.model_id != mlp_pkg.model_id
    assert replace(mlp_pkg).model_id == mlp_pkg.model_id


def test_ram_is_two_ping_pong_buffers(mlp_pkg, markI_pkg):
    # 400 in -> 16 -> 8 -> 3: buffer 0 holds 400 and 8, buffer 1 holds 16 and 3
    assert mlp_pkg.ram_bytes == 400 + 16
    # 400 -> 400 (S) -> 48 (A) -> 6 (R): buffer 0 holds 400 and 48, buffer 1 holds 400 and 6
    assert markI_pkg.ram_bytes == 400 + 400
    assert tiny_package().ram_bytes == 4 + 4


def test_every_flipped_bit_is_refused():
    data = encode_package(tiny_package())
    for pos in range(len(data)):
        for bit in (0, 7):
            bad = bytearray(data)
            bad[pos] ^= 1 << bit
            with pytest.raises(PackageError):
                decode_package(bytes(bad))


def test_truncated_and_trailing_bytes_are_refused(mlp_pkg):
    data = encode_package(tiny_package())
    for n in range(len(data)):
        with pytest.raises(PackageError, match="truncated|magic"):
            decode_package(data[:n])
    with pytest.raises(PackageError, match="trailing"):
        decode_package(data + b"\0")
    big = encode_package(mlp_pkg)
    with pytest.raises(PackageError, match="truncated"):
        decode_package(big[: len(big) // 2])


def test_bad_crc_is_refused():
    data = bytearray(encode_package(tiny_package()))
    data[-1] ^= 0xFF
    with pytest.raises(PackageError, match="CRC-32 mismatch"):
        decode_package(bytes(data))
    with pytest.raises(TypeError, match="bytes"):
        decode_package("M1WP")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- corrupted fields
# Each edit is applied and the package resealed (model id and CRC recomputed), so the field's
# own check -- not the CRC -- has to catch it.


def _reseal(data: bytearray) -> bytes:
    data[12:44] = hashlib.sha256(bytes(data[44:-4])).digest()
    data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[:-4])))
    return bytes(data)


def _put(data: bytearray, offset: int, fmt: str, value) -> None:
    struct.pack_into("<" + fmt, data, offset, *(value if isinstance(value, tuple) else (value,)))


def _header(field, fmt, value):
    return lambda d: _put(d, HEADER_OFFSETS[field], fmt, value)


def _entry(i, field, fmt, value):
    return lambda d: _put(d, HEADER.size + i * LAYER_ENTRY.size + LAYER_OFFSETS[field], fmt, value)


def _payload(offset, fmt, value):
    """Edit at ``offset`` bytes into the payload (which ends 4 bytes before the end)."""
    def edit(d):
        (size,) = struct.unpack_from("<I", d, HEADER_OFFSETS["payload_size"])
        _put(d, len(d) - 4 - size + offset, fmt, value)
    return edit


def _grow(extra: bytes, size_field_delta: int = 0):
    """Insert bytes before the CRC and grow total_size (and payload_size by the delta)."""
    def edit(d):
        d[-4:-4] = extra
        total, = struct.unpack_from("<I", d, HEADER_OFFSETS["total_size"])
        _put(d, HEADER_OFFSETS["total_size"], "I", total + len(extra))
        size, = struct.unpack_from("<I", d, HEADER_OFFSETS["payload_size"])
        _put(d, HEADER_OFFSETS["payload_size"], "I", size + size_field_delta)
    return edit


# tiny package: one dense layer 3 -> 2; payload = weights (6 + 2 padding), bias at 8,
# multiplier at 16, shift at 24, weight_scale at 32; names "yes", "no" at 112.
TINY = [
    ("magic", _header("magic", "4s", b"M1WQ"), "magic"),
    ("format version", _header("format_version", "H", 3), "format version 3"),
    ("format version 0", _header("format_version", "H", 0), "format version 0"),
    ("header size", _header("header_size", "H", 64), "header size 64"),
    ("total size larger", _header("total_size", "I", 10_000), "truncated"),
    ("total size smaller", _header("total_size", "I", 100), "trailing"),
    ("source", _header("source", "B", 9), "source code 9"),
    ("head", _header("head", "B", 7), "head code 7"),
    ("head says codebook", _header("head", "B", 1), "codebook"),
    ("no layers", _header("n_layers", "B", 0), "0 layers"),
    ("too many layers", _header("n_layers", "B", 17), "17 layers"),
    ("one layer too many", _header("n_layers", "B", 2), "layer|class name"),
    ("rank 0", _header("input_rank", "B", 0), "rank 0"),
    ("rank 4", _header("input_rank", "B", 4), "rank 4"),
    ("unused dim set", _header("input_shape", "3H", (3, 0, 5)), "unused dims 0"),
    ("input shape", _header("input_shape", "3H", (4, 0, 0)), "takes 3 inputs but receives 4"),
    ("class count", _header("n_classes", "H", 3), "class"),
    ("class count zero", _header("n_classes", "H", 0), "payload size|number of classes"),
    ("input scale NaN", _header("input_scale", "f", float("nan")), "input_scale"),
    ("input scale zero", _header("input_scale", "f", 0.0), "input_scale"),
    ("input scale negative", _header("input_scale", "f", -0.1), "input_scale"),
    ("input scale changed", _header("input_scale", "f", 0.5), "input quantization"),
    ("input zero point", _header("input_zero_point", "b", 0), "input quantization"),
    ("header reserved", _header("reserved", "2s", b"\1\0"), "reserved bytes"),
    ("rounding byte in version 1", _header("rounding", "B", 1), "reserved bytes are 010000"),
    ("n_inputs", _header("n_inputs", "I", 4), "n_inputs = 4"),
    ("n_outputs", _header("n_outputs", "I", 3), "n_outputs = 3"),
    ("ram_bytes", _header("ram_bytes", "I", 4), "ram_bytes = 4"),
    ("payload size", _header("payload_size", "I", 36), "payload size 36"),
    ("layer type", _entry(0, "type", "B", 9), "layer type 9"),
    ("layer flags", _entry(0, "flags", "B", 2), "flags 0x02"),
    ("relu flag vs act_min", _entry(0, "flags", "B", 1), "inconsistent"),
    ("layer input zp", _entry(0, "input_zero_point", "b", 5), "input quantization"),
    ("layer n_in", _entry(0, "n_in", "I", 4), "takes 4 inputs but receives 3"),
    ("layer n_in zero", _entry(0, "n_in", "I", 0), "n_in = 0"),
    ("layer n_out", _entry(0, "n_out", "I", 1), "padding|data size"),
    ("layer n_out huge", _entry(0, "n_out", "I", 70000), "n_out = 70000"),
    ("layer input scale", _entry(0, "input_scale", "f", 0.25), "multiplier|input quantization"),
    ("layer output scale", _entry(0, "output_scale", "f", 0.02), "multiplier"),
    ("layer output scale inf", _entry(0, "output_scale", "f", float("inf")), "output_scale"),
    ("act_min", _entry(0, "act_min", "b", 0), "inconsistent"),
    ("act_max", _entry(0, "act_max", "b", 100), "inconsistent"),
    ("layer reserved", _entry(0, "reserved", "H", 1), "reserved field"),
    ("data offset", _entry(0, "data_offset", "I", 4), "expected offset 0"),
    ("data size odd", _entry(0, "data_size", "I", 38), "multiple of 4"),
    ("data size short", _entry(0, "data_size", "I", 36), "too small|data size"),
    ("class name length", lambda d: _put(d, 112, "B", 200), "class name 0"),
    ("class name UTF-8", lambda d: _put(d, 113, "B", 0xFF), "UTF-8"),
    ("class name empty", lambda d: _put(d, 112, "8s", b"\0\3noo\0\0\0"), "class 0 name"),
    ("class names repeat", lambda d: _put(d, 112, "8s", b"\2no\2no\0\0"), "repeat"),
    ("names padding", lambda d: _put(d, 119, "B", 1), "padding after the class names"),
    ("weight -128", _payload(0, "b", -128), "weights holds -128"),
    ("weights padding", _payload(6, "B", 1), "padding"),
    ("bias overflow", _payload(8, "i", 2**31 - 1), "accumulator"),
    ("multiplier small", _payload(16, "i", 2**29), "multiplier\\[0\\]"),
    ("multiplier negative", _payload(16, "i", -(2**30)), "multiplier holds"),
    ("multiplier off", _payload(16, "i", 2**31 - 1), "encode"),
    ("shift range", _payload(24, "i", 31), "shift holds 31"),
    ("shift off", _payload(24, "i", -3), "encode"),
    ("weight scale NaN", _payload(32, "f", float("nan")), "weight_scale"),
    ("weight scale zero", _payload(32, "f", 0.0), "weight_scale"),
    ("weight scale off", _payload(32, "f", 0.5), "encode"),
    ("unused payload", _grow(b"\0\0\0\0", 4), "unused bytes"),
    ("bytes outside payload", _grow(b"\0\0\0\0"), "payload size"),
]


@pytest.mark.parametrize("name, edit, message", TINY, ids=[t[0] for t in TINY])
def test_each_corrupted_field_of_a_dense_package_is_named(name, edit, message):
    data = bytearray(encode_package(tiny_package()))
    edit(data)
    with pytest.raises(PackageError, match=message):
        decode_package(_reseal(data))


def _markI_edits(pkg: Package) -> list:
    """Edits to the Mark I package: S (threshold), A (sparse step) and codebook fields."""
    s, a, r = pkg.layers
    thr_at = 0
    a_at = s.n_in * 2  # 800 bytes of int16 thresholds
    ptr_at, athr_at = a_at, a_at + 4 * (a.n_out + 1)
    cols_at = athr_at + 4 * a.n_out
    nnz = int(a.row_ptr[-1])
    vals_at = cols_at + ((2 * nnz + 3) & ~3)
    ptr = a.row_ptr.astype(np.int64)
    row = int(np.nonzero((np.diff(ptr) >= 2) & (ptr[:-1] > 0))[0][0])
    first = int(a.row_ptr[row])
    return [
        ("threshold above 128", _payload(thr_at, "h", 129), "threshold holds 129"),
        ("threshold below -128", _payload(thr_at, "h", -129), "threshold holds -129"),
        ("threshold layer n_out", _entry(0, "n_out", "I", 399), "as many outputs as inputs"),
        ("threshold with relu", _entry(0, "flags", "B", 1), "flags 0x01"),
        ("threshold output scale", _entry(0, "output_scale", "f", 0.5),
         "output_scale of a threshold"),
        ("row_ptr start", _payload(ptr_at, "I", 1), "row_ptr must start at 0"),
        ("row_ptr decreasing", _payload(ptr_at + 4 * (row + 1), "I", first - 1), "row_ptr"),
        ("row_ptr count", _payload(ptr_at + 4 * a.n_out, "I", nnz + 1000), "data size|too small"),
        ("column out of range", _payload(cols_at + 2 * first, "H", 400), "cols holds 400"),
        ("column repeated", _payload(cols_at + 2 * first + 2, "H", int(a.cols[first])),
         "strictly increasing"),
        ("connection count 0", _payload(vals_at + first, "b", 0), "is 0"),
        ("connection count -128", _payload(vals_at + first, "b", -128), "values holds -128"),
        ("step input scale", _entry(1, "input_scale", "f", 0.5), "input quantization"),
        ("dense after step zp", _entry(2, "input_zero_point", "b", 1), "input quantization"),
        ("codebook entry 0", lambda d: _put(d, len(d) - 4 - 4 * 6, "b", 0), "codebook"),
        ("codebook entry 2", lambda d: _put(d, len(d) - 4 - 4 * 6, "b", 2), "codebook holds 2"),
        ("argmax head", _header("head", "B", 0), "class names for 6 outputs|unused bytes"),
    ]


def test_each_corrupted_field_of_a_markI_package_is_named(markI_pkg):
    good = encode_package(markI_pkg)
    assert len(markI_pkg.classes) == 4 and markI_pkg.n_outputs == 6  # the codebook is 24 bytes
    for name, edit, message in _markI_edits(markI_pkg):
        data = bytearray(good)
        edit(data)
        with pytest.raises(PackageError, match=message):
            decode_package(_reseal(data))
            pytest.fail(f"{name}: not refused")


def test_a_relu_layer_whose_clamp_is_not_its_zero_point_is_refused(mlp_pkg):
    data = bytearray(encode_package(mlp_pkg))
    _entry(0, "output_zero_point", "b", -100)(data)
    with pytest.raises(PackageError, match="layer 0: output quantization .* inconsistent"):
        decode_package(_reseal(data))


def test_a_model_id_that_does_not_match_is_refused():
    data = bytearray(encode_package(tiny_package()))
    data[20] ^= 1
    data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[:-4])))
    with pytest.raises(PackageError, match="model id"):
        decode_package(bytes(data))


# --------------------------------------------------------------------------- encoding


def _with_dense(pkg: Package, **changes) -> Package:
    return replace(pkg, layers=(replace(pkg.layers[0], **changes),))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: _with_dense(p, weights=np.array([[-128, 0, 0], [0, 0, 0]])), "-128"),
        (lambda p: _with_dense(p, bias=np.array([1.5, 2.0])), "integers"),
        (lambda p: _with_dense(p, multiplier=np.array([2**30, 2**30], np.int32)), "encode"),
        (lambda p: _with_dense(p, weight_scale=np.array([0.1, 0.1])), "float32"),
        (lambda p: _with_dense(p, input_scale=0.1), "float32"),
        (lambda p: replace(p, classes=("a",)), "1 class names for 2 outputs"),
        (lambda p: replace(p, classes=("a", "a")), "repeat"),
        (lambda p: replace(p, classes=("a", "b" * 256)), "at most 255"),
        (lambda p: replace(p, input_shape=(2, 2)), "takes 3 inputs but receives 4"),
        (lambda p: replace(p, input_shape=(1, 1, 1, 3)), "rank"),
        (lambda p: replace(p, source="cnn"), "source 'cnn'"),
        (lambda p: replace(p, layers=()), "0 layers"),
        (lambda p: replace(p, codebook=np.array([[1, 0], [1, 1]])), "-1 or \\+1"),
        (lambda p: replace(p, codebook=np.ones((3, 2), np.int8)), "shape"),
    ],
)
def test_encode_refuses_an_invalid_package(change, message):
    with pytest.raises(PackageError, match=message):
        encode_package(change(tiny_package()))


# --------------------------------------------------------------------------- the spec


def test_worked_example_in_the_spec_is_the_real_encoding():
    text = (ROOT / "docs" / "PACKAGE.md").read_text(encoding="utf-8")
    block = text.split("<!-- example-hex -->")[1].split("```")[1]
    lines = [ln for ln in block.splitlines() if re.match(r"^[0-9a-f]{4}:", ln)]
    raw = bytes.fromhex("".join(ln.split(":", 1)[1].split("|")[0] for ln in lines))
    assert raw == encode_package(tiny_package())
    pkg = decode_package(raw)
    assert pkg.classes == ("yes", "no") and pkg.n_inputs == 3


@pytest.mark.parametrize("which", ["mlp_pkg", "markI_pkg"])
def test_random_resealed_corruption_is_refused_or_decodes_cleanly(which, request):
    """Bytes changed anywhere (CRC and id recomputed) never crash the loader: every outcome is
    a PackageError or a package that re-encodes to the same bytes (a version-2 header on a
    package that rounds once re-encodes as version 1, its lowest version)."""
    data = encode_package(request.getfixturevalue(which))
    rng = np.random.default_rng(9)
    hot = list(range(HEADER.size + 3 * LAYER_ENTRY.size + 64))  # header, table, names
    refused = 0
    for trial in range(400):
        bad = bytearray(data)
        where = hot if trial % 2 else range(HEADER_OFFSETS["source"], len(data) - 4)
        for pos in rng.choice(where, size=int(rng.integers(1, 4))):
            bad[pos] = int(rng.integers(0, 256))
        sealed = _reseal(bad)
        try:
            pkg = decode_package(sealed)
        except PackageError:
            refused += 1
            continue
        if pkg.rounding == "single" and sealed[4:6] == b"\2\0":
            sealed = _reseal(bytearray(sealed[:4] + b"\1\0" + sealed[6:]))
        assert encode_package(pkg) == sealed
    assert refused > 100


# --------------------------------------------------------------------------- format version 2


def test_single_rounding_is_written_as_version_1_and_double_as_version_2():
    single = tiny_package()
    double = replace(single, rounding="double")
    a, b = encode_package(single), encode_package(double)
    assert struct.unpack_from("<H", a, HEADER_OFFSETS["format_version"]) == (1,)
    assert struct.unpack_from("<H", b, HEADER_OFFSETS["format_version"]) == (2,)
    assert a[HEADER_OFFSETS["rounding"]] == 0 and b[HEADER_OFFSETS["rounding"]] == 1
    assert (single.format_version, double.format_version) == (1, 2)
    got = decode_package(b)
    assert got.rounding == "double" and got.model_id == double.model_id != single.model_id
    assert decode_package(a).rounding == "single"
    assert (peek_header(b).format_version, peek_header(b).rounding) == (2, "double")
    assert (peek_header(a).format_version, peek_header(a).rounding) == (1, "single")
    same = [(0, 4), (6, HEADER_OFFSETS["model_id"]), (HEADER_OFFSETS["source"],
                                                      HEADER_OFFSETS["rounding"])]
    assert all(a[i:j] == b[i:j] for i, j in same)  # only the version, the id and the rounding


def test_a_version_2_package_that_rounds_once_is_read_as_version_1():
    data = bytearray(encode_package(tiny_package()))
    _header("format_version", "H", 2)(data)
    got = decode_package(_reseal(data))
    assert got.rounding == "single" and got.model_id == tiny_package().model_id


@pytest.mark.parametrize("edit, message", [
    (_header("rounding", "B", 2), "rounding code 2 unknown"),
    (_header("rounding", "B", 255), "rounding code 255 unknown"),
    (_header("reserved", "2s", b"\0\1"), "reserved bytes are 0001"),
])
def test_version_2_header_fields_are_checked(edit, message):
    data = bytearray(encode_package(replace(tiny_package(), rounding="double")))
    edit(data)
    with pytest.raises(PackageError, match=message):
        decode_package(_reseal(data))


def test_an_unknown_rounding_is_not_written():
    with pytest.raises(PackageError, match="rounding 'even' is not one of single, double"):
        encode_package(replace(tiny_package(), rounding="even"))
