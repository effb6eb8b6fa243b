"""The distribution as a user gets it: its metadata (an SPDX license, the LICENSE file,
classifiers PyPI knows, the extras), a source distribution that holds every file under version
control and whose tests collect and pass, and an install without the ``export`` extra in which
every command either works or says which extra to install.

The source distribution is built here as CI builds it (``python -m build --sdist``, without
isolation: the build backend is the one ``build-system.requires`` names, installed by
``[dev]``). Without the extra: the fast suite hides torch, onnx and onnxruntime (and the
``fast`` and ``sweep`` extras' modules) from a child interpreter by an import blocker; the slow
suite makes a real virtual environment with ``pip install -e .`` alone.
"""

from __future__ import annotations

import email
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from tests.conftest import ROOT

EXPORT_MODULES = ("torch", "onnx", "onnxruntime", "tflite", "flatbuffers")
"""What ``pip install mark1-kit`` leaves out and ``mark1-kit[export]`` brings."""
HIDDEN = (*EXPORT_MODULES, "onnxscript", "skl2onnx", "numba", "pyarrow", "dask", "distributed")
"""Modules the child interpreter of the fast check cannot import."""
SUBSET = ("tests/test_protocol.py", "tests/test_package.py", "tests/test_cobs.py",
          "tests/test_docs.py", "tests/test_import_graph.py")
"""Tests run from the unpacked source distribution: the specs in docs/ against the code, the
helpers, the package list of pyproject.toml."""


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> Iterator[tuple[Path, Path]]:
    """(the .tar.gz built from the working tree, the folder it unpacks to)."""
    out = tmp_path_factory.mktemp("dist")
    res = subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation",
                          "--outdir", str(out), str(ROOT)], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    (archive,) = out.glob("mark1_kit-*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(out, filter="data")
    (unpacked,) = (p for p in out.iterdir() if p.is_dir())
    yield archive, unpacked


# --------------------------------------------------------------------------- metadata


def test_the_metadata_names_the_license_classifiers_and_extras(sdist):
    from packaging.requirements import Requirement
    from trove_classifiers import classifiers as known

    _, unpacked = sdist
    meta = email.message_from_string((unpacked / "PKG-INFO").read_text())
    assert meta["License-Expression"] == "MIT" and meta.get_all("License-File") == ["LICENSE"]
    assert (unpacked / "LICENSE").read_text().startswith("MIT License")
    shown = meta.get_all("Classifier")
    assert shown and set(shown) <= known, set(shown) - known
    assert not [c for c in shown if c.startswith("License ::")]  # the expression says it
    requires = [Requirement(r) for r in meta.get_all("Requires-Dist")]

    def of(extra: str) -> set[str]:
        return {r.name for r in requires if r.marker is not None and "extra" in str(r.marker)
                and r.marker.evaluate({"extra": extra})}

    core = {r.name for r in requires if r.marker is None or "extra" not in str(r.marker)}
    assert core == {"numpy", "matplotlib", "scikit-learn", "threadpoolctl", "tqdm", "pyserial",
                    "tomli"}
    assert {"export", "fast", "sweep", "dev"} <= set(meta.get_all("Provides-Extra"))
    assert of("export") == set(EXPORT_MODULES)


def test_the_extras_module_and_pyproject_agree():
    """Every module ``mark1.extras`` sends a user to an extra for is installed by that extra,
    and ``[dev]`` (what ``make test`` installs) holds every extra."""
    from mark1.extras import COMMANDS, EXTRAS, PURPOSE

    extras = pyproject()["project"]["optional-dependencies"]
    for module, extra in EXTRAS.items():
        names = [r.split(">")[0].split("[")[0].strip() for r in extras[extra]]
        assert module in names or (module == "distributed" and "dask" in names), module
    assert set(PURPOSE) == set(EXTRAS.values()) and set(COMMANDS.values()) <= set(PURPOSE)
    assert f"mark1-kit[{','.join(sorted(PURPOSE))}]" in extras["dev"]
    build = pyproject()["build-system"]["requires"]
    assert build == ["setuptools>=77"]  # the first with license expressions (PEP 639)


# --------------------------------------------------------------------------- the sdist


def test_the_sdist_holds_every_file_under_version_control(sdist):
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing to compare the sdist with")
    archive, _ = sdist
    res = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    tracked = {p for p in res.stdout.splitlines() if (ROOT / p).exists()}
    with tarfile.open(archive) as tar:
        held = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    missing = sorted(tracked - held - {".gitignore"})
    assert not missing, missing
    assert not [n for n in held if "__pycache__" in n or n.endswith((".pyc", ".so", ".o"))]


def test_the_sdists_tests_collect_and_a_subset_passes(sdist):
    """From the unpacked source distribution, by itself: every test module collects (none
    fails to import its helpers or fixtures), and the tests that read the specs in docs/ pass."""
    _, unpacked = sdist
    env = dict(os.environ, PYTHONPATH=str(unpacked))
    env.pop("PYTEST_ADDOPTS", None)
    where = subprocess.run(
        [sys.executable, "-c", "import mark1, export, firmware_sim, tests.conftest; "
         "print(mark1.__file__, export.__file__, firmware_sim.__file__, "
         "tests.conftest.__file__)"], cwd=unpacked, env=env, capture_output=True, text=True)
    assert where.returncode == 0, where.stderr
    assert all(Path(p).is_relative_to(unpacked) for p in where.stdout.split()), where.stdout

    res = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                          "-p", "no:cacheprovider"], cwd=unpacked, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    modules = {line.split("::")[0] for line in res.stdout.splitlines() if "::" in line}
    on_disk = {f"tests/{p.name}" for p in (unpacked / "tests").glob("test_*.py")}
    assert modules == on_disk, on_disk - modules

    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          *SUBSET], cwd=unpacked, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert " passed" in res.stdout.splitlines()[-1] and "skipped" not in res.stdout


# --------------------------------------------------------------------------- without [export]

CHILD = """
import contextlib, importlib.abc, io, json, sys, traceback

HIDDEN = set(sys.argv[1].split(","))


class Hidden(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Hidden())
from mark1.cli import main

answers = []
for argv in json.loads(sys.argv[2]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
        except BaseException:
            code = "crash"
            err.write(traceback.format_exc())
    answers.append({"argv": argv, "code": code, "out": out.getvalue(), "err": err.getvalue()})
print(json.dumps(answers))
"""

NEEDS_EXPORT = (
    "train-mlp --task digits --epochs 1 --out {ws}/mlp-run",
    "export onnx {ws}/mlp.pt --target jetson-tx2 --out {ws}/tx2",
    "quantize {ws}/mlp.pt --out {ws}/from-mlp.m1w",
    "quantize {ws}/model.onnx --calib-data {ws}/x.npy --out {ws}/from-onnx.m1w",
    "quantize {ws}/run/machine.npz --task e-f --out {ws}/from-machine.m1w",
    "quantize {ws}/model.tflite --out {ws}/from-tflite.m1w",
    "export tflite {ws}/a.m1w --out {ws}/from-package.tflite",
)
"""Commands of the ``export`` extra, with inputs they would otherwise take."""
WORKS = (
    "tasks",
    "simulate --task e-f --epochs 1 --n-a 16 --quiet --out {ws}/run",
    "info {ws}/a.m1w",
    "ports",
    "push {ws}/a.m1w --port {port} -q",
    "push {ws}/b.m1w --port {port} -q --trace {ws}/push.trace",
    "infer --port {port} --task digits --n 5",
    "status --port {port}",
    "rollback --port {port}",
)
"""Commands of the core install, in order (simulate's machine file feeds a quantize above)."""


def workspace_files(ws: Path) -> None:
    """The inputs the commands take: an MLP checkpoint, an ONNX MLP, a .tflite, data, two
    packages."""
    import numpy as np

    from export.contract.package import decode_package
    from export.onnx.checkpoint import save_checkpoint
    from export.tflite.write import tflite_bytes
    from tests.device_helpers import image
    from tests.int8_models import random_checkpoint
    from tests.test_bad_input import onnx_mlp

    rng = np.random.default_rng(0)
    ckpt = random_checkpoint(rng, [400, 8, 10])
    ckpt.classes = [str(k) for k in range(10)]
    save_checkpoint(ckpt, ws / "mlp.pt")
    (ws / "model.onnx").write_bytes(onnx_mlp(20))
    np.save(ws / "x.npy", rng.uniform(size=(16, 20)).astype(np.float32))
    (ws / "a.m1w").write_bytes(image())
    (ws / "b.m1w").write_bytes(image(hidden=9, seed=1))
    (ws / "model.tflite").write_bytes(tflite_bytes(decode_package(image(seed=2))))


def check_answers(answers: list[dict], ws: Path) -> None:
    """Each command of the export extra: one line naming the extra, exit status 2, nothing
    written; each other command: it worked."""
    for a in answers:
        argv = " ".join(a["argv"])
        if a["argv"][0] in ("train-mlp", "export", "quantize"):
            assert a["code"] == 2 and a["err"].count("\n") == 1, (argv, a)
            assert "pip install 'mark1-kit[export]'" in a["err"], (argv, a["err"])
            assert "Traceback" not in a["err"]
        else:
            assert a["code"] == 0, (argv, a)
    assert not [p.name for p in ws.iterdir() if p.name.startswith(("mlp-run", "tx2", "from-"))]
    assert (ws / "push.trace").is_file()


def test_without_the_export_extra_each_command_works_or_names_the_extra(tmp_path):
    """In a child interpreter that cannot import torch, onnx or onnxruntime (nor numba,
    pyarrow, dask): the simulator, the packages and the device operations work, against a
    simulated device on a real pty; train-mlp, export and quantize say which extra to install."""
    from firmware_sim.device import Device
    from firmware_sim.serve import PtyServer
    from tests.device_helpers import SMALL

    workspace_files(tmp_path)
    dev = Device(SMALL)
    try:
        with PtyServer(dev) as srv:
            commands = [c.format(ws=tmp_path, port=srv.url).split()
                        for c in WORKS + NEEDS_EXPORT]
            res = subprocess.run([sys.executable, "-c", CHILD, ",".join(HIDDEN),
                                  json.dumps(commands)], cwd=ROOT, capture_output=True,
                                 text=True, timeout=600,
                                 env=dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg"))
    finally:
        dev.flash.close()
    assert res.returncode == 0, res.stderr[-3000:]
    check_answers(json.loads(res.stdout), tmp_path)


@pytest.fixture(scope="module")
def bare_venv(tmp_path_factory) -> Path:
    """A virtual environment with ``pip install -e .`` alone (no extra)."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    res = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-e", str(ROOT)],
                         capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    return venv


@pytest.mark.slow
def test_a_fresh_install_without_the_export_extra(bare_venv, tmp_path):
    """``pip install -e .`` in a new virtual environment: torch, onnx and onnxruntime are not
    there, and every command works or names the extra -- ``mark1 device`` started from it, the
    other commands run by its ``mark1`` script."""
    python, script = bare_venv / "bin" / "python", bare_venv / "bin" / "mark1"
    for module in EXPORT_MODULES:
        res = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True)
        assert res.returncode != 0, f"{module} is installed"
    workspace_files(tmp_path)
    env = dict(os.environ, MPLBACKEND="Agg")
    env.pop("PYTHONPATH", None)
    device = subprocess.Popen([str(script), "device", "--pty"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
    try:
        port = device.stdout.readline().strip()
        assert port.startswith("/dev/"), device.stderr.read()
        answers = []
        for command in WORKS + NEEDS_EXPORT + ("replay --quick --out {ws}/replay",):
            argv = command.format(ws=tmp_path, port=port).split()
            res = subprocess.run([str(script), *argv], capture_output=True, text=True,
                                 timeout=600, env=env, cwd=tmp_path)
            answers.append({"argv": argv, "code": res.returncode, "out": res.stdout,
                            "err": res.stderr})
    finally:
        device.terminate()
        device.wait(timeout=20)
        device.stdout.close()
        device.stderr.close()
    check_answers(answers, tmp_path)
    size = sum(f.stat().st_size for f in bare_venv.rglob("*") if f.is_file())
    print(f"bare install: {size / 2**20:.0f} MiB")
    shutil.rmtree(tmp_path / "replay", ignore_errors=True)
