"""The command line's manners: a fast --help that loads no heavy module, one-line usage errors."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT, run_cli, run_cli_on_terminal


def test_help_imports_no_heavy_module():
    code = (
        "import sys, contextlib, io\n"
        "from mark1.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try: main(['--help'])\n"
        "    except SystemExit: pass\n"
        "heavy = [m for m in ('torch', 'onnxruntime', 'onnx', 'matplotlib', 'sklearn', 'serial',"
        " 'dask', 'distributed', 'pyarrow', 'pandas', 'starlette', 'uvicorn', 'websockets')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_a_usage_error_is_one_line_and_exit_status_2(cli):
    res = cli("tasks", "--bogus")
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "unrecognized arguments: --bogus" in res.stderr


def test_a_reader_that_went_away_ends_the_command_quietly():
    """``mark1 tasks -v | head``: stdout's reader is gone; the command stops without a word and
    with the status of a program ended by SIGPIPE (141), as other command-line tools do."""
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone before the first line
    try:
        res = subprocess.run([sys.executable, "-m", "mark1.cli", "tasks", "-v"], cwd=ROOT,
                             stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert (res.returncode, res.stderr) == (141, "")


def test_progress_bars_are_drawn_on_a_terminal_only(tmp_path):
    """The push's progress bar goes to stderr when it is a terminal (a pty of 100 columns
    here), and nothing when it is a pipe or a file."""
    from firmware_sim.device import Device
    from firmware_sim.serve import PtyServer
    from tests.device_helpers import SMALL, image

    model = tmp_path / "a.m1w"
    model.write_bytes(image())
    cmd = ["push", str(model), "--timeout", "0.2"]
    dev = Device(SMALL)
    try:
        with PtyServer(dev) as srv:
            res = run_cli(*cmd, "--port", srv.url)
            assert res.returncode == 0 and res.stderr == "", res.stderr
            res = run_cli_on_terminal(*cmd, "--port", srv.url, timeout=120)
            assert res.returncode == 0 and "push a.m1w" in res.stderr and "\r" in res.stderr
    finally:
        dev.flash.close()
