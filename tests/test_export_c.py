"""``mark1 export c``: the model as C source with the firmware's engine. The folder compiles with
the host's C compiler (-Wall -Wextra -Werror) and its example gives the golden reference's
outputs and classes, byte for byte; the sources compile for a Cortex-M4 (DSP path) and a
Cortex-M3; bad input exits 2 and leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace

import numpy as np
import pytest

from export.contract.golden import decide, golden_forward
from export.contract.package import decode_package, encode_package
from firmware_sim.export_c import ENGINE_SOURCES, export_c
from tests import firmware_lib as fw
from tests.conftest import run_cli
from tests.test_firmware_engine import packages as packages  # noqa: F401 - a fixture


def _demo(folder) -> None:  # noqa: ANN001 - a Path
    subprocess.run(["make", "-s", "-C", str(folder)], check=True, capture_output=True)


@pytest.mark.parametrize("name", ["odd widths", "markI", "saturating", "double rounding"])
def test_the_exported_model_compiles_and_matches_golden(packages, name, tmp_path):  # noqa: F811
    fw.require_host_build()
    data = packages["mlp" if name == "double rounding" else name]
    if name == "double rounding":
        data = encode_package(replace(decode_package(data), rounding="double"))
    pkg = decode_package(data)
    written = export_c(data, str(tmp_path / "out"))
    assert {"model.h", "model.c", "main.c", "Makefile", "README.md"} <= set(written)
    _demo(tmp_path / "out")
    x = np.random.default_rng(7).integers(-128, 128, (300, pkg.n_inputs)).astype(np.int8)
    x[0], x[1] = -128, 127
    res = subprocess.run([str(tmp_path / "out" / "model_demo")], input=x.tobytes(),
                         capture_output=True, check=True)
    rows = [line.split(" ") for line in res.stdout.decode().splitlines()]
    assert len(rows) == len(x)
    y = np.array([[int(v) for v in row[2:]] for row in rows], np.int8)
    k = np.array([int(row[0]) for row in rows])
    want = golden_forward(pkg, x)
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(k, decide(pkg, want))
    assert [row[1] for row in rows] == [pkg.classes[i] for i in k]


def test_the_exported_sources_compile_for_cortex_m(packages, tmp_path):  # noqa: F811
    """Objects for a Cortex-M4 (the DSP path: SMLAD in the code) and a Cortex-M3, freestanding,
    warnings as errors; the model's package is a const array (in flash, .rodata)."""
    fw.require("arm-none-eabi-gcc", "arm-none-eabi-objdump")
    out = tmp_path / "out"
    export_c(packages["digits mlp"], str(out))
    sources = ["model.c"] + [f"mark1/{n}" for n in ENGINE_SOURCES if n.endswith(".c")]
    for cpu in ("cortex-m4", "cortex-m3"):
        objects = []
        for src in sources:
            obj = tmp_path / cpu / (src.replace("/", "_") + ".o")
            obj.parent.mkdir(exist_ok=True)
            subprocess.run(["arm-none-eabi-gcc", f"-mcpu={cpu}", "-mthumb", "-std=c99", "-Os",
                            "-Wall", "-Wextra", "-Werror", "-ffreestanding",
                            "-DMK_ENGINE_ONE_PATH=1", "-Imark1", "-I.", "-c", src, "-o", str(obj)],
                           cwd=out, check=True, capture_output=True)
            objects.append(str(obj))
        dump = subprocess.run(["arm-none-eabi-objdump", "-d", *objects], capture_output=True,
                              text=True, check=True).stdout
        assert ("\tsmlad\t" in dump) == (cpu == "cortex-m4")  # the instruction itself
        rodata = subprocess.run(["arm-none-eabi-objdump", "-h", objects[0]], capture_output=True,
                                text=True, check=True).stdout
        assert ".rodata" in rodata


def test_export_c_refuses_bad_input_and_keeps_what_was_there(packages, tmp_path):  # noqa: F811
    good = tmp_path / "m.m1w"
    good.write_bytes(packages["tiny"])
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.c").write_text("int main(void) { return 0; }\n")
    res = run_cli("export", "c", str(good), "--out", str(busy))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "is not an empty folder" in res.stderr
    assert os.listdir(busy) == ["mine.c"]
    bad = tmp_path / "bad.m1w"
    bad.write_bytes(packages["tiny"][:-1] + bytes([packages["tiny"][-1] ^ 1]))
    res = run_cli("export", "c", str(bad), "--out", str(tmp_path / "new"))
    assert res.returncode == 2 and "not a valid weight package" in res.stderr
    assert not (tmp_path / "new").exists()
    assert sorted(os.listdir(tmp_path)) == ["bad.m1w", "busy", "m.m1w"]  # no folder left half
    res = run_cli("export", "c", str(good), "--out", str(tmp_path / "new"))
    assert res.returncode == 0, res.stderr
    assert "export c:" in res.stdout and (tmp_path / "new" / "model.c").is_file()
