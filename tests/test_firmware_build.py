"""Building the C firmware: the host port and the MPS2 images compile without a warning
(-Wall -Wextra -Werror), without a C library, and report their sizes; the Cortex-M4 image uses
the DSP instructions and the Cortex-M3 image does not; the product images lack the test
machinery that the test images carry; `mark1 device --firmware host` names the
package to install when a tool is missing; `--cut-after` cuts the power of either kind of device."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from export.serial.errors import LinkLost
from export.serial.push import push
from export.serial.settings import LinkSettings
from firmware_sim import firmware
from tests import firmware_lib as fw
from tests.conftest import ROOT, run_cli
from tests.device_helpers import image, mark1_device


def make(tmp_path, *targets: str) -> str:
    res = subprocess.run(["make", "-C", str(firmware.C_DIR), f"BUILD={tmp_path}", *targets],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def test_the_host_port_builds_without_warnings_and_prints_its_sizes(tmp_path):
    fw.require_host_build()
    out = make(tmp_path, "host")
    assert "-Werror" in out and "-Wextra" in out
    sizes = re.search(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s+\d+\s+\w+\s+\S*mark1-fw-host", out, re.M)
    text, _, bss = map(int, sizes.groups())
    assert 0 < text < 200_000 and bss > 64 * 1024  # the activation arena is static


TEXT_BUDGET = 15_800
"""Code and constants of an MPS2 product image, in bytes: the size as measured (15,724 B on the
M4, 15,724 B on the M3) with a little room, so that growth is noticed; below the goal of 16 KB,
16,384 B (docs/SPEED.md, "Firmware size")."""
STATIC_RAM_GOAL = 8 * 1024
"""Static RAM of an image besides the activation arena and the receive ring, in bytes."""


def test_the_cortex_m_images_build_without_a_c_library_within_their_sizes(tmp_path):
    fw.require("make", "arm-none-eabi-gcc", "arm-none-eabi-objdump", "arm-none-eabi-nm")
    out = make(tmp_path, "cortex-m")
    sizes = {m.group(1): (int(m.group(2)), int(m.group(3)), int(m.group(4)), int(m.group(5)))
             for m in re.finditer(r"mark1-fw-(m\d)\.elf: text (\d+) B \(flash\), static RAM "
                                  r"(\d+) B .*receive ring (\d+) B, arena (\d+) B", out)}
    assert set(sizes) == {"m3", "m4"}, out
    for core, (text, static_ram, ring, arena) in sizes.items():
        assert 4096 < text <= TEXT_BUDGET and static_ram <= STATIC_RAM_GOAL, (core, sizes)
        assert ring >= 4 * (1024 + 9) and arena == 64 * 1024  # the window's frames; the arena
    # no C library: no newlib header was read, no newlib or floating-point routine linked
    for dep in tmp_path.rglob("*.d"):
        assert "arm-none-eabi/include" not in dep.read_text(), dep
    for core in ("m3", "m4"):
        elf = tmp_path / core / f"mark1-fw-{core}.elf"
        symbols = subprocess.run(["arm-none-eabi-nm", str(elf)],
                                 capture_output=True, text=True, check=True).stdout
        assert not re.search(r" (malloc|printf|_sbrk|__aeabi_d\w+|__aeabi_f\w+)$", symbols,
                             re.M), core

    def used(core: str, op: str) -> bool:
        code = subprocess.run(["arm-none-eabi-objdump", "-d",
                               str(tmp_path / core / f"mark1-fw-{core}.elf")],
                              capture_output=True, text=True, check=True).stdout
        return re.search(rf"\t{op}\t", code) is not None

    assert all(used("m4", op) for op in ("smlad", "sxtb16", "sxtab16"))
    assert not any(used("m3", op) for op in ("smlad", "sxtb16", "sxtab16"))  # no DSP on the M3
    # the test images: the same firmware with the test machinery, which the product images lack
    tests = {m.group(1): int(m.group(2)) for m in re.finditer(
        r"mark1-fw-(m\d)-test\.elf: text (\d+) B", out)}
    assert set(tests) == {"m3", "m4"}, out
    for core in ("m3", "m4"):
        assert tests[core] > sizes[core][0], (core, tests, sizes)
        for target, hooks in ((core, False), (f"{core}-test", True)):
            symbols = subprocess.run(["arm-none-eabi-nm", str(tmp_path / target /
                                                              f"mark1-fw-{target}.elf")],
                                     capture_output=True, text=True, check=True).stdout
            assert bool(re.search(r" (power_cut|slow_erase|cut_point)", symbols)) == hooks, target


def test_a_missing_tool_is_named_with_its_package(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT), PATH=str(empty))
    for extra, package in (({}, "make"), ({"PATH": os.environ["PATH"], "CC": "no-such-cc"},
                                          "gcc")):
        res = subprocess.run([sys.executable, "-m", "mark1.cli", "device", "--firmware", "host",
                              "--listen", "127.0.0.1:0"], env={**env, **extra}, cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
        assert f"apt-get install {package}" in res.stderr and "Traceback" not in res.stderr


def test_the_device_cli_cuts_the_power_of_either_kind(kind, tmp_path):
    res = run_cli("device", "--firmware", kind, "--listen", "127.0.0.1:0", "--cut-after", "x+1")
    assert res.returncode == 2 and "--cut-after" in res.stderr
    state = tmp_path / "flash.bin"
    with mark1_device("--firmware", kind, "--listen", "127.0.0.1:0", "--flash", "16K", "--page",
                      "512", "--ram", "4K", "--max-payload", "512", "--state", str(state),
                      "--cut-after", "1+100") as (url, proc):
        with pytest.raises(LinkLost):
            push(url, image(), settings=LinkSettings(timeout_s=0.1, retries=1, reconnects=0))
        assert proc.wait(timeout=20) == 3
        assert "power cut after 100 bytes of flash operation 1" in proc.stderr.read()
    raw = state.read_bytes()  # slot A's first page erased, then 100 bytes of the first write
    counts = [int.from_bytes(raw[16 + 4 * k : 20 + 4 * k], "little") for k in range(32)]
    page = 16 + 4 * 32 + 2 * 512
    assert counts[2] == sum(counts) == 1
    assert raw[page : page + 100] == image()[:100] and raw[page + 100 : page + 512] == b"\xff" * 412
