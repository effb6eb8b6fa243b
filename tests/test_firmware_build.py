"""Building the C firmware: the host port and the Cortex-M objects compile without a warning
(-Wall -Wextra -Werror) and report their sizes; the Cortex-M4 build uses the DSP instructions
and the Cortex-M3 build does not; `mark1 device --firmware host` names the package to install
when a tool is missing; `--cut-after` cuts the power of either kind of device."""

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


def test_the_portable_code_compiles_for_cortex_m4_with_dsp_and_for_cortex_m3(tmp_path):
    fw.require("make", "arm-none-eabi-gcc", "arm-none-eabi-objdump")
    out = make(tmp_path, "cortex-m")
    sizes = re.findall(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s+\d+\s+\w+\s+\(TOTALS\)", out, re.M)
    assert len(sizes) == 2 and all(int(text) > 0 for text, _, _ in sizes), out

    def instructions(core: str) -> str:
        return subprocess.run(["arm-none-eabi-objdump", "-d", str(tmp_path / core /
                                                                   "engine_dsp.o")],
                              capture_output=True, text=True, check=True).stdout

    def used(core: str, op: str) -> bool:
        return re.search(rf"\t{op}\t", instructions(core)) is not None

    assert all(used("m4", op) for op in ("smlad", "sxtb16", "sxtab16"))
    assert not used("m3", "smlad")  # the M3 has no DSP extension: the same C, emulated


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
