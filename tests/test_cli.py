"""The command line's manners: a fast --help that loads no heavy module, one-line usage errors."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


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
