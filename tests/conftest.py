"""Shared test helpers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def require(*programs: str) -> None:
    """Skip the calling test when a program is missing and ``CI`` is unset; in CI, fail."""
    missing = [p for p in programs if shutil.which(p) is None]
    if not missing:
        return
    why = f"needs {', '.join(missing)}, which is not installed"
    if os.environ.get("CI"):
        pytest.fail(f"{why}: CI must run this test (.ci/run installs it)")
    pytest.skip(why)


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run ``mark1 ARGS`` in a fresh interpreter, as a user would, capturing its output."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    return subprocess.run(
        [sys.executable, "-m", "mark1.cli", *args],
        cwd=cwd or ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(params=("sim", "host", "m4"))
def kind(request) -> str:
    """Each kind of device in turn, for tests that serve one (``tests.device_helpers.serve``):
    the simulator, the C firmware's host port (which needs make and a C compiler), and the C
    firmware on the Cortex-M4 board under QEMU (qemu-system-arm, gcc-arm-none-eabi)."""
    if request.param == "host":
        from tests.firmware_lib import require_host_build

        require_host_build()
    if request.param == "m4":
        from tests.firmware_lib import require_qemu

        require_qemu()
    return request.param
