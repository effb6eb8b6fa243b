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


def run_cli_on_terminal(
    *args: str, cwd: Path | None = None, timeout: float = 600, columns: int = 100
) -> subprocess.CompletedProcess:
    """``mark1 ARGS`` with stderr on a terminal (a pty ``columns`` wide), as a user at a shell
    runs it: ``stderr`` is what the terminal showed, progress bars and all."""
    import fcntl
    import select
    import struct
    import tempfile
    import termios
    import time

    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    shown = b""
    try:
        with tempfile.TemporaryFile() as out:
            proc = subprocess.Popen([sys.executable, "-m", "mark1.cli", *args], cwd=cwd or ROOT,
                                    env=env, stdout=out, stderr=slave)
            os.close(slave)
            slave = -1
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:  # read as it writes: a full pty would block it
                if not select.select([master], [], [], 0.1)[0]:
                    continue
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every holder of the terminal's other end has closed it
                    chunk = b""
                if not chunk:
                    break
                shown += chunk
            else:
                proc.kill()
            code = proc.wait(timeout=30)
            out.seek(0)
            stdout = out.read().decode()
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    return subprocess.CompletedProcess(args, code, stdout, shown.decode(errors="replace"))


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
