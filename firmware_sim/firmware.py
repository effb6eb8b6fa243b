"""Building the C firmware (``firmware_sim/c``) and the command line of its host port.

``mark1 device --firmware host`` builds the host port with the system's C compiler and
``make`` when its sources changed (``make`` decides), then runs it in place of the simulator:
it serves the same protocol on a pty or a TCP port, keeps its flash in the simulator's
state-file format and prints the URL to open first, as ``mark1 device`` does.

The build goes to ``firmware_sim/c/build``, or, where the sources are not writable (an
installed package), to ``$XDG_CACHE_HOME/mark1-kit/firmware`` (``MARK1_FIRMWARE_BUILD``
overrides both). Builds are serialised with a lock file, so parallel runs do not race.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

C_DIR = Path(__file__).resolve().parent / "c"
"""The firmware's sources and Makefile."""
HOST_BINARY = "host/mark1-fw-host"
TEST_LIBRARY = "host/libmark1fw.so"

TOOLS: tuple[tuple[str, str], ...] = (("make", "make"), ("cc", "gcc"))
"""(program, Debian package that provides it) the host build needs."""


def build_dir() -> Path:
    """Where the firmware is built (see the module docstring)."""
    override = os.environ.get("MARK1_FIRMWARE_BUILD")
    if override:
        return Path(override)
    if os.access(C_DIR, os.W_OK):
        return C_DIR / "build"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "mark1-kit" / "firmware"


def missing_tool() -> str:
    """A one-line instruction naming the package to install, or ``""`` if the tools are there."""
    for program, package in TOOLS:
        if shutil.which(os.environ.get("CC", "cc") if program == "cc" else program) is None:
            return (f"building the firmware needs {program!r}, which is not installed: "
                    f"install the Debian package {package} (apt-get install {package})")
    return ""


def build(*targets: str) -> Path:
    """Run ``make TARGETS`` for the firmware (only what changed is rebuilt); the build folder.

    Raises ``ValueError`` with one line when a tool is missing or the build fails.
    """
    problem = missing_tool()
    if problem:
        raise ValueError(problem)
    out = build_dir()
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        res = subprocess.run(
            ["make", "-C", str(C_DIR), f"BUILD={out}", *targets],
            capture_output=True, text=True, check=False,
        )
    if res.returncode != 0:
        lines = [ln for ln in (res.stderr + res.stdout).splitlines() if "error" in ln.lower()]
        why = lines[0].strip() if lines else f"make exited with status {res.returncode}"
        raise ValueError(f"building the firmware failed: {why}")
    return out


@lru_cache(maxsize=1)
def host_binary() -> Path:
    """The host port, built if needed (once per process)."""
    return build("host") / HOST_BINARY


def host_command(
    *, listen: str | None = None, pty: bool = False, flash_bytes: int, page_bytes: int,
    ram_bytes: int, max_payload: int, name: str, state: str | os.PathLike[str] | None = None,
    idle_timeout_s: float | None = None, endurance: int | None = None,
    cut_after: str | None = None, protocol_version: int | None = None, baud: int = 0,
    turnaround_ms: float = 0.0,
) -> list[str]:
    """The host port's command line (the binary is built if needed)."""
    if pty == (listen is not None):
        raise ValueError("give one of pty=True and listen='HOST:PORT'")
    cmd = [str(host_binary())] + (["--pty"] if listen is None else ["--listen", listen])
    cmd += ["--flash", str(flash_bytes), "--page", str(page_bytes), "--ram", str(ram_bytes),
            "--max-payload", str(max_payload), "--name", name]
    for flag, value in (("--state", state), ("--idle-timeout", idle_timeout_s),
                        ("--endurance", endurance), ("--cut-after", cut_after),
                        ("--protocol-version", protocol_version), ("--baud", baud or None),
                        ("--turnaround", turnaround_ms or None)):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd


def qemu_command(
    core: str, *, listen: str | None = None, pty: bool = False, flash_bytes: int,
    page_bytes: int, ram_bytes: int, max_payload: int, name: str,
    state: str | os.PathLike[str] | None = None, idle_timeout_s: float | None = None,
    endurance: int | None = None, cut_after: str | None = None,
    protocol_version: int | None = None, baud: int = 0, erase_ms: int = 0, rx_ring: int = 0,
) -> list[str]:
    """The command line of the firmware under QEMU (``firmware_sim.qemu``) with the options of
    :func:`host_command`, plus a flash erase time and a smaller receive ring."""
    if pty == (listen is not None):
        raise ValueError("give one of pty=True and listen='HOST:PORT'")
    cmd = [sys.executable, "-m", "firmware_sim.qemu", "--core", core]
    cmd += ["--pty"] if listen is None else ["--listen", listen]
    cmd += ["--flash", str(flash_bytes), "--page", str(page_bytes), "--ram", str(ram_bytes),
            "--max-payload", str(max_payload), "--name", name]
    for flag, value in (("--state", state), ("--idle-timeout", idle_timeout_s),
                        ("--endurance", endurance), ("--cut-after", cut_after),
                        ("--protocol-version", protocol_version), ("--baud", baud or None),
                        ("--erase-ms", erase_ms or None), ("--rx-ring", rx_ring or None)):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd
