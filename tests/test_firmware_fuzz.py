"""Fuzzing the C firmware under AddressSanitizer and UndefinedBehaviorSanitizer with libFuzzer
(``firmware_sim/c/fuzz``): the frame decoder and message handler of a device with a model
(every reply well-formed, HELLO answered after every input), and the package loader (every
refusal in words, every accepted package run by both engine paths alike). Any sanitizer report
fails the run. The fast suite runs each for a few seconds; the slow one a million inputs each.
The seed corpus is the protocol's requests and the package corpus of ``tests/test_fuzz.py``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from export import protocol as P
from firmware_sim import firmware
from tests import firmware_lib as fw
from tests.test_fuzz import _requests, package_corpus

CLANG = os.environ.get("CLANG", "clang-16")


def run_fuzzer(name: str, runs: int, tmp_path: Path, seed: int = 1) -> int:
    """Build and run one fuzz target for ``runs`` inputs from the seed corpus; the inputs run."""
    fw.require("make", CLANG)
    target = firmware.build("fuzz", f"CLANG={CLANG}") / "fuzz" / name
    corpus = tmp_path / f"{name}-corpus"
    corpus.mkdir()
    if name == "fuzz_frames":
        seeds = [P.encode_frame(f) for f in _requests(0)]
        max_len = 4096
    else:
        seeds = [b"\x01" + p for p in package_corpus()]  # sealed by the target: first bit set
        max_len = 8192
    for i, data in enumerate(seeds):
        (corpus / f"seed{i}").write_bytes(data)
    env = dict(os.environ, UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    symbolizer = shutil.which("llvm-symbolizer-16") or shutil.which("llvm-symbolizer")
    if symbolizer:
        env["ASAN_SYMBOLIZER_PATH"] = symbolizer
    res = subprocess.run(
        [str(target), f"-runs={runs}", f"-seed={seed}", f"-max_len={max_len}",
         "-print_final_stats=1", f"-artifact_prefix={tmp_path}/", str(corpus)],
        capture_output=True, text=True, timeout=3600, env=env)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    for report in ("ERROR: AddressSanitizer", "runtime error:", "ERROR: libFuzzer"):
        assert report not in out, out[-3000:]
    done = int(re.search(r"stat::number_of_executed_units:\s+(\d+)", out).group(1))
    assert done >= runs
    print(f"{name}: {done} inputs", file=sys.stderr)
    return done


@pytest.mark.parametrize("name, runs", [("fuzz_frames", 20_000), ("fuzz_package", 10_000)])
def test_a_short_fuzz_run_finds_nothing(name, runs, tmp_path):
    run_fuzzer(name, runs, tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(3600)  # 5 to 20 minutes each, on 2 cores
@pytest.mark.parametrize("name", ["fuzz_frames", "fuzz_package"])
def test_soak_a_million_fuzz_inputs_find_nothing(name, tmp_path):
    assert run_fuzzer(name, 1_000_000, tmp_path, seed=7) >= 1_000_000


def test_the_frame_fuzzers_model_is_the_corpus_package():
    sys.path.insert(0, str(firmware.C_DIR / "tools"))
    try:
        from gen_fuzz_seed import render
    finally:
        sys.path.pop(0)
    header = (firmware.C_DIR / "fuzz" / "seed_package.h").read_text()
    assert header == render(package_corpus()[2])
