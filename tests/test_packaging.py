"""The distribution as a user gets it: its metadata (an SPDX license, the LICENSE file,
classifiers PyPI knows, the extras), a source distribution that holds every file under version
control and whose tests collect and pass, and an install without the ``export`` extra in which
every command either works or says which extra to install.

The source distribution is built here as CI builds it (``python -m build --sdist``, without
isolation: the build backend is the one ``build-system.requires`` names, installed by
``[dev]``; nothing is downloaded). Without the extra: the fast suite installs the wheel built
from the source distribution into a new virtual environment with the distributions its core
requirements resolve to, linked from this interpreter's (offline; ``pip check`` finds none
missing), and runs the commands by that environment's ``mark1`` script; the slow suite lets pip
resolve ``pip install .`` from the package index.
"""

from __future__ import annotations

import email
import importlib.metadata
import json
import os
import subprocess
import sys
import tarfile
import zipfile
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
    assert set(PURPOSE) == set(EXTRAS.values())
    assert {m for modules in COMMANDS.values() for m in modules} <= set(EXTRAS)
    assert f"mark1-kit[{','.join(sorted(PURPOSE))}]" in extras["dev"]
    build = pyproject()["build-system"]["requires"]
    assert build == ["setuptools>=77"]  # the first with license expressions (PEP 639)


# --------------------------------------------------------------------------- the sdist


def test_the_sdist_holds_every_file_under_version_control(sdist):
    if not (ROOT / ".git").exists():
        if os.environ.get("CI"):
            pytest.fail("CI runs from a git clone: the sdist is compared with its files")
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
NEEDS_PLAYGROUND = ("playground --port 0 --no-browser",)
"""The command of the ``playground`` extra (it would serve until stopped)."""
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
    "export c {ws}/a.m1w --out {ws}/c-source",
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


def run_commands(venv: Path, ws: Path) -> list[dict]:
    """Every command of :data:`WORKS` and :data:`NEEDS_EXPORT` by the ``mark1`` script of
    ``venv``, from ``ws``, against ``mark1 device --pty`` started from the same script."""
    script = venv / "bin" / "mark1"
    env = dict(os.environ, MPLBACKEND="Agg")
    env.pop("PYTHONPATH", None)
    device = subprocess.Popen([str(script), "device", "--pty"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=ws)
    answers = []
    try:
        port = device.stdout.readline().strip()
        assert port.startswith("/dev/"), device.stderr.read()
        for command in WORKS + NEEDS_EXPORT + NEEDS_PLAYGROUND:
            argv = command.format(ws=ws, port=port).split()
            res = subprocess.run([str(script), *argv], capture_output=True, text=True,
                                 timeout=600, env=env, cwd=ws)
            extra = ("export" if command in NEEDS_EXPORT else
                     "playground" if command in NEEDS_PLAYGROUND else None)
            answers.append({"argv": argv, "code": res.returncode, "out": res.stdout,
                            "err": res.stderr, "extra": extra})
    finally:
        device.terminate()
        device.wait(timeout=20)
        device.stdout.close()
        device.stderr.close()
    return answers


def check_answers(answers: list[dict], ws: Path) -> None:
    """Each command of an extra (export, playground): one line naming the extra, exit status 2,
    nothing written; each other command: it worked."""
    for a in answers:
        argv = " ".join(a["argv"])
        if a["extra"]:
            assert a["code"] == 2 and a["err"].count("\n") == 1, (argv, a)
            assert f"pip install 'mark1-kit[{a['extra']}]'" in a["err"], (argv, a["err"])
            assert "Traceback" not in a["err"]
        else:
            assert a["code"] == 0, (argv, a)
    assert not [p.name for p in ws.iterdir() if p.name.startswith(("mlp-run", "tx2", "from-"))]
    assert (ws / "push.trace").is_file() and (ws / "run" / "machine.npz").is_file()
    assert (ws / "c-source" / "model.c").is_file()
    simulate = next(a for a in answers if a["argv"][0] == "simulate")
    assert json.loads((ws / "run" / "report.json").read_text()), simulate


def check_venv(python: Path) -> None:
    """``mark1`` is imported from ``python``'s own site-packages, and none of the export
    extra's modules can be imported there."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    res = subprocess.run([str(python), "-c", "import mark1, export; print(mark1.__file__)"],
                         capture_output=True, text=True, env=env, cwd=python.parent)
    assert res.returncode == 0, res.stderr
    assert not Path(res.stdout.strip()).is_relative_to(ROOT), res.stdout
    for module in EXPORT_MODULES:
        res = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True,
                             env=env, cwd=python.parent)
        assert res.returncode != 0, f"{module} is installed"


def core_closure(requires: list[str]) -> list[importlib.metadata.Distribution]:
    """The installed distributions ``requires`` needs without any extra, and what they need
    in turn: what ``pip install mark1-kit`` would install."""
    from packaging.requirements import Requirement

    found: dict[str, importlib.metadata.Distribution] = {}
    todo = [Requirement(r) for r in requires]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = req.name.lower().replace("_", "-")
        if key in found:
            continue
        dist = importlib.metadata.distribution(req.name)
        assert dist.version in req.specifier, (req, dist.version)
        found[key] = dist
        todo += [Requirement(r) for r in dist.requires or ()]
    return list(found.values())


def installed_size(root: Path) -> int:
    """Bytes of the files under ``root``, each counted once, with those of the folders it links
    to outside itself (a venv's ``lib64`` names its own ``lib``)."""
    inside = root.resolve()
    linked = [link.resolve() for link in root.rglob("*") if link.is_symlink() and link.is_dir()]
    return sum(f.stat().st_size for top in [root] + [t for t in linked
                                                      if not t.is_relative_to(inside)]
               for f in top.rglob("*") if f.is_file() and not f.is_symlink())


@pytest.fixture(scope="module")
def core_venv(sdist, tmp_path_factory) -> Path:
    """``pip install mark1-kit`` without an extra, offline: the wheel built from the source
    distribution, and the distributions its requirements (no extra) resolve to, linked from
    this interpreter's site-packages; ``pip check`` says nothing is missing."""
    _, unpacked = sdist
    base = tmp_path_factory.mktemp("core")
    res = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation",
                          "--outdir", str(base / "dist"), str(unpacked)], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    (wheel,) = (base / "dist").glob("mark1_kit-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        meta = email.message_from_bytes(zf.read(next(
            n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    (site,) = venv.glob("lib/python*/site-packages")
    for dist in core_closure(meta.get_all("Requires-Dist")):
        top = {Path(f).parts[0] for f in dist.files or () if not str(f).startswith("..")}
        for name in top:
            real = Path(dist.locate_file(name))
            if real.exists() and not (site / name).exists():
                (site / name).symlink_to(real)
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
    res = subprocess.run([*pip, "install", "--no-index", "--no-deps", str(wheel)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    res = subprocess.run([*pip, "check"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "No broken requirements" in res.stdout, res.stdout
    return venv


def test_the_core_install_runs_the_simulator_and_the_device(core_venv, tmp_path):
    """``pip install mark1-kit`` alone (the wheel of the sdist in a new virtual environment,
    offline): torch, onnx, onnxruntime and the TensorFlow Lite schema are not there; the Mark I
    simulation, the packages, the simulated device (its own ``mark1 device``) and every device
    operation work; train-mlp, export and quantize name the extra to install, exit 2."""
    check_venv(core_venv / "bin" / "python")
    workspace_files(tmp_path)
    check_answers(run_commands(core_venv, tmp_path), tmp_path)
    print(f"core install: {installed_size(core_venv) / 2**20:.0f} MiB")


@pytest.mark.slow
def test_a_fresh_install_from_the_package_index_without_the_export_extra(sdist, tmp_path):
    """``pip install mark1-kit`` (the source distribution) in a new virtual environment, its
    requirements resolved by pip from the package index (the internet): the same commands as
    the offline core install."""
    archive, _ = sdist
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    res = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(archive)],
                         capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    check_venv(venv / "bin" / "python")
    ws = tmp_path / "ws"
    ws.mkdir()
    workspace_files(ws)
    check_answers(run_commands(venv, ws), ws)
    print(f"fresh install: {installed_size(venv) / 2**20:.0f} MiB")
