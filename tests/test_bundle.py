"""The device bundle: contents, the standalone runner (really run), Python 3.6, bad input."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from export.onnx.bundle import export_bundle, py36_problems, template_text
from export.onnx.checkpoint import save_checkpoint
from export.onnx.markI_onnx import save_machine_file
from export.onnx.mlp import train_mlp
from export.onnx.parity import run_onnx, task_test_inputs
from mark1.images import to_retina
from tests.conftest import ROOT
from tests.test_markI_onnx import synthetic_machine

RUNNER = ROOT / "export" / "onnx" / "templates" / "run_onnx.py"


def _runner_module():
    """The runner imported as a module (no bytecode written into the templates folder)."""
    spec = importlib.util.spec_from_file_location("run_onnx_under_test", RUNNER)
    module = importlib.util.module_from_spec(spec)
    before, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = before
    return module


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small digits MLP, its checkpoint file and its fp32 and fp16 TX2 bundles."""
    root = tmp_path_factory.mktemp("bundle")
    ckpt = train_mlp("digits", hidden=(32,), epochs=5, seed=0, progress=False)
    src = save_checkpoint(ckpt, root / "mlp.pt")
    meta32 = export_bundle(src, "jetson-tx2", root / "b32")
    meta16 = export_bundle(src, "jetson-tx2", root / "b16", fp16=True)
    return {"root": root, "ckpt": ckpt, "src": src, "meta32": meta32, "meta16": meta16}


def run_runner(bundle: Path, *args: str, python: str = sys.executable):
    return subprocess.run(
        [python, str(bundle / "run_onnx.py"), "--provider", "cpu", *args],
        capture_output=True, text=True, timeout=120, cwd=bundle.parent,
    )


def printed_classes(stdout: str) -> list[str]:
    return [line.split("\t")[1] for line in stdout.splitlines()]


# ----------------------------------------------------------------------------- contents


def test_bundle_contents_and_model_json(trained):
    b32 = trained["root"] / "b32"
    assert sorted(p.name for p in b32.iterdir()) == [
        "README.md", "build_engine.sh", "model.json", "model.onnx", "parity.png", "report.json",
        "run_onnx.py",
    ]
    meta = json.loads((b32 / "model.json").read_text())
    assert meta == trained["meta32"]
    assert meta["sha256"] == hashlib.sha256((b32 / "model.onnx").read_bytes()).hexdigest()
    assert (meta["target"], meta["opset"], meta["ir_version"]) == ("jetson-tx2", 13, 7)
    assert meta["inputs"] == [{"name": "image", "shape": ["batch", 400], "dtype": "float32"}]
    assert meta["outputs"] == [{"name": "logits", "shape": ["batch", 10], "dtype": "float32"}]
    assert meta["classes"] == [str(d) for d in range(10)]
    assert meta["preprocessing"]["shape"] == [20, 20]
    parity = meta["parity"]
    assert parity["passed"] and parity["n_samples"] == 449
    assert parity["max_abs_diff"] <= 1e-5 and parity["argmax_agreement"] == 1.0
    p16 = trained["meta16"]["parity"]
    assert trained["meta16"]["precision"] == "fp16" and p16["passed"]
    assert p16["max_abs_diff"] <= 1e-2 and p16["argmax_agreement"] >= 0.995
    report = json.loads((b32 / "report.json").read_text())
    assert report["export_time_s"] > 0 and report["parity"] == parity
    readme = (b32 / "README.md").read_text()
    assert "python3 run_onnx.py" in readme and "@" not in readme.replace("nvidia@jetson", "")
    assert os.access(b32 / "build_engine.sh", os.X_OK)


def test_build_engine_script_runs_trtexec_with_fp16_and_dynamic_batch(trained, tmp_path):
    script = trained["root"] / "b16" / "build_engine.sh"
    assert subprocess.run(["sh", "-n", str(script)]).returncode == 0
    fake = tmp_path / "trtexec"
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    res = subprocess.run(["sh", str(script)], capture_output=True, text=True,
                         env=dict(os.environ, TRTEXEC=str(fake), MAX_BATCH="64"))
    assert res.returncode == 0, res.stderr
    args = res.stdout.splitlines()[0].split()
    assert args == ["--onnx=model.onnx", "--saveEngine=model_fp16.engine", "--fp16",
                    "--minShapes=image:1x400", "--optShapes=image:1x400",
                    "--maxShapes=image:64x400", "--workspace=1024"]
    res = subprocess.run(["sh", str(script)], capture_output=True, text=True,
                         env=dict(os.environ, TRTEXEC="/nonexistent", PATH="/usr/bin:/bin"))
    assert res.returncode == 1 and "trtexec not found" in res.stderr


# ----------------------------------------------------------------------------- Python 3.6


def test_runner_is_python36_code():
    assert py36_problems(template_text("run_onnx.py")) == []
    assert template_text("run_onnx.py") == RUNNER.read_text()


@pytest.mark.parametrize(
    "snippet, problem",
    [
        ("if (n := 3):\n    pass\n", "Assignment expressions"),
        ("def f(a, /):\n    pass\n", "Positional-only"),
        ("x = f'{1}'\n", "f-string"),
        ("def f(a: int):\n    pass\n", "annotation"),
        ("def f() -> list[int]:\n    pass\n", "annotation"),
        ("from __future__ import annotations\n", "from __future__"),
        ("import dataclasses\n", "import dataclasses"),
        ("import subprocess\n", "import subprocess"),
        ("print(run(['ls'], capture_output=True))\n", "keyword capture_output="),
        ("'abc'.removeprefix('a')\n", ".removeprefix"),
        ("import numpy as np\nrng = np.random.default_rng(0)\n", ".default_rng"),
        ("with (open('a') as f, open('b') as g):\n    pass\n", "Parenthesized context managers"),
        ("with (open('a') as f):\n    pass\n", "Parenthesized context managers"),
        ("match x:\n    case 1:\n        pass\n", "Pattern matching"),
    ],
)
def test_python36_check_catches_newer_code(snippet, problem):
    problems = py36_problems(snippet)
    assert problems and any(problem in p for p in problems), problems


@pytest.mark.parametrize(
    "snippet",
    [
        "with (open('a')) as f:\n    pass\n",
        "with open('a') as f, open('b') as g:\n    pass\n",
        "x = '{} {}'.format(1, 2)\nprint(x, file=None)\n",
        "import numpy as np\na = np.zeros(3).argmax()\n",
    ],
)
def test_python36_check_passes_python36_code(snippet):
    assert py36_problems(snippet) == []


def _python36() -> str | None:
    """A Python 3.6: $MARK1_PY36, python3.6 on PATH, or a pyenv 3.6 -- if it runs."""
    candidates = [os.environ.get("MARK1_PY36"), shutil.which("python3.6")]
    candidates += sorted(str(p) for p in Path.home().glob(".pyenv/versions/3.6*/bin/python3.6"))
    for candidate in filter(None, candidates):
        res = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True)
        if res.returncode == 0 and res.stdout.strip() == "(3, 6)":
            return candidate
    return None


def test_runner_compiles_on_a_real_python36():
    python = _python36()
    if python is None:
        pytest.skip("no Python 3.6 here (set MARK1_PY36=/path/to/python3.6)")
    code = "import sys; compile(open(sys.argv[1]).read(), sys.argv[1], 'exec')"
    res = subprocess.run([python, "-c", code, str(RUNNER)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_runner_runs_on_a_real_python36(trained):
    """With numpy and onnxruntime installed for Python 3.6 (e.g. numpy 1.19, onnxruntime 1.10)."""
    python = _python36()
    if python is None or subprocess.run([python, "-c", "import numpy, onnxruntime"],
                                        capture_output=True).returncode != 0:
        pytest.skip("no Python 3.6 with numpy and onnxruntime (set MARK1_PY36)")
    X, _ = task_test_inputs("digits", 0)
    npy = trained["root"] / "py36.npy"
    np.save(npy, X[:40].reshape(-1, 20, 20))
    b16 = trained["root"] / "b16"
    res = run_runner(b16, str(npy), python=python)
    assert res.returncode == 0, res.stderr
    expected = run_onnx(b16 / "model.onnx", X[:40])["logits"].argmax(1)
    assert printed_classes(res.stdout) == [str(k) for k in expected]


# ----------------------------------------------------------------------------- the runner


def _png(rows: np.ndarray, colour: int, depth: int = 8, palette: bytes | None = None,
         width: int | None = None) -> bytes:
    """A PNG written here (rows of samples or bytes), cycling rows through all five filters."""
    h = rows.shape[0]
    raw = rows.reshape(h, -1).astype(np.int64)
    stride = raw.shape[1]
    bpp = max(1, {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour] * depth // 8)
    out = bytearray()
    prev = np.zeros(stride, np.int64)
    for y in range(h):
        kind = y % 5
        cur = raw[y]
        left = np.concatenate([np.zeros(bpp, np.int64), cur[:-bpp]])
        corner = np.concatenate([np.zeros(bpp, np.int64), prev[:-bpp]])
        if kind == 0:
            pred = np.zeros(stride, np.int64)
        elif kind == 1:
            pred = left
        elif kind == 2:
            pred = prev
        elif kind == 3:
            pred = (left + prev) // 2
        else:
            p = left + prev - corner
            pa, pb, pc = np.abs(p - left), np.abs(p - prev), np.abs(p - corner)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, corner))
        out += bytes([kind]) + bytes(((cur - pred) % 256).astype(np.uint8))
        prev = cur

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    width = rows.shape[1] if width is None else width
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, h, depth,
                                                            colour, 0, 0, 0))
    if palette is not None:
        data += chunk(b"PLTE", palette)
    return data + chunk(b"IDAT", zlib.compress(bytes(out))) + chunk(b"IEND", b"")


def test_host_and_jetson_runner_turn_a_colour_png_into_the_same_grey(tmp_path):
    """One colour-to-grey rule: ``mark1 infer`` (``mark1.images``) and the bundle's runner give
    the same grey levels on the same colour PNG -- BT.601 luma, not the mean of R, G, B."""
    from mark1.images import LUMA_BT601, read_images

    run = _runner_module()
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (11, 13, 3)).astype(np.uint8)
    rgb[0, :3] = [[255, 0, 0], [0, 255, 0], [0, 0, 255]]  # pure red, green, blue
    alpha = rng.integers(0, 256, (11, 13, 1)).astype(np.uint8)
    wide = (rgb.astype(np.uint16) * 257).astype(">u2")
    palette = rng.integers(0, 256, (256, 3)).astype(np.uint8)
    index = rng.integers(0, 256, (11, 13)).astype(np.uint8)
    files = {"rgb8": _png(rgb, 2), "rgba8": _png(np.concatenate([rgb, alpha], -1), 6),
             "rgb16": _png(wide.view(np.uint8).reshape(11, 78), 2, depth=16, width=13),
             "palette": _png(index, 3, palette=palette.tobytes())}
    luma = rgb.astype(np.float64) @ np.array(LUMA_BT601) / 255.0
    for name, data in files.items():
        path = tmp_path / f"{name}.png"
        path.write_bytes(data)
        _, host = read_images([str(path)])
        jetson = run.read_png(str(path))
        np.testing.assert_allclose(host[0], jetson, atol=1e-6, err_msg=name)
        want = (palette[index].astype(np.float64) @ np.array(LUMA_BT601) / 255.0
                if name == "palette" else luma)
        np.testing.assert_allclose(host[0], want, atol=1e-6, err_msg=name)
    _, host = read_images([str(tmp_path / "rgb8.png")])
    np.testing.assert_allclose(host[0, 0, :3], LUMA_BT601, atol=1e-6)  # red, green, blue


def test_runner_reads_every_png_filter_and_layout(tmp_path):
    run = _runner_module()
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (9, 7)).astype(np.uint8)
    cases = {
        "grey8": (_png(grey, 0), grey / 255.0),
        "rgb8": (_png(np.stack([grey] * 3, -1), 2), grey / 255.0),
        "rgba8": (_png(np.dstack([grey] * 3 + [255 - grey]), 6), grey / 255.0),
        "greyalpha": (_png(np.dstack([grey, grey]), 4), grey / 255.0),
    }
    wide = (grey.astype(np.uint16) * 257).astype(">u2")
    cases["grey16"] = (_png(wide.view(np.uint8).reshape(9, 14), 0, depth=16, width=7), grey / 255.0)
    palette = bytes(np.repeat(np.arange(256, dtype=np.uint8), 3))
    cases["palette"] = (_png(grey, 3, palette=palette), grey / 255.0)
    bits = rng.integers(0, 2, (9, 16)).astype(np.uint8)
    cases["grey1"] = (_png(np.packbits(bits, axis=1), 0, depth=1, width=16), bits.astype(float))
    for name, (data, expected) in cases.items():
        path = tmp_path / f"{name}.png"
        path.write_bytes(data)
        np.testing.assert_allclose(run.read_png(str(path)), expected, atol=1e-12, err_msg=name)
    damaged = bytearray(cases["grey8"][0])
    damaged[40] ^= 0xFF
    (tmp_path / "bad.png").write_bytes(bytes(damaged))
    with pytest.raises(run.InputError, match="CRC"):
        run.read_png(str(tmp_path / "bad.png"))


def test_runner_reads_pgm_ppm_npy_and_resamples_like_the_retina(tmp_path):
    run = _runner_module()
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (30, 45)).astype(np.uint8)
    (tmp_path / "a.pgm").write_bytes(b"P5\n# comment\n45 30\n255\n" + img.tobytes())
    text = " ".join(str(v) for v in img.ravel())
    (tmp_path / "b.pgm").write_bytes(f"P2\n45 30\n255\n{text}\n".encode())
    rgb = np.stack([img] * 3, -1)
    (tmp_path / "c.ppm").write_bytes(b"P6 45 30 255\n" + rgb.tobytes())
    for name in ("a.pgm", "b.pgm", "c.ppm"):
        np.testing.assert_allclose(run.read_pnm(str(tmp_path / name)), img / 255.0, atol=1e-12)
    np.testing.assert_allclose(run.to_retina(img / 255.0, (20, 20)),
                               to_retina((img / 255.0)[None])[0], atol=1e-12)
    np.save(tmp_path / "flat.npy", rng.uniform(size=(3, 400)))
    assert len(run.read_npy(str(tmp_path / "flat.npy"))) == 3
    np.save(tmp_path / "big.npy", np.full((2, 2), 7.0))
    with pytest.raises(run.InputError, match=r"in \[0, 1\]"):
        run.read_npy(str(tmp_path / "big.npy"))


def test_runner_prints_the_models_classes_for_npy_png_and_pgm(trained, tmp_path):
    """run_onnx.py in a subprocess, CPU provider, against onnxruntime in this process."""
    X, _ = task_test_inputs("digits", 0)
    X = X[:30]
    np.save(tmp_path / "batch.npy", X.reshape(-1, 20, 20))
    files = [str(tmp_path / "batch.npy")]
    images = []
    for i in range(3):  # 60 x 60 8-bit pictures of three test images
        big = np.round(np.kron(X[i].reshape(20, 20), np.ones((3, 3))) * 255).astype(np.uint8)
        images.append(big / 255.0)
        (tmp_path / f"img{i}.png").write_bytes(_png(big, 0))
        files.append(str(tmp_path / f"img{i}.png"))
    (tmp_path / "img3.pgm").write_bytes(b"P5 60 60 255\n" + (images[0] * 255).round()
                                        .astype(np.uint8).tobytes())
    files.append(str(tmp_path / "img3.pgm"))
    images.append(images[0])
    for key in ("b32", "b16"):
        bundle = trained["root"] / key
        res = run_runner(bundle, *files, "--scores")
        assert res.returncode == 0, res.stderr
        assert "CPUExecutionProvider" in res.stderr
        inputs = np.concatenate([X, to_retina(np.array(images)).reshape(-1, 400)])
        expected = run_onnx(bundle / "model.onnx", inputs)["logits"].argmax(1)
        assert printed_classes(res.stdout) == [str(k) for k in expected]
        labels = [line.split("\t")[0] for line in res.stdout.splitlines()]
        assert labels[0].endswith("batch.npy[0]") and labels[-1].endswith("img3.pgm")


def test_runner_refuses_bad_input_and_a_tampered_model(trained, tmp_path):
    bundle = tmp_path / "copy"
    shutil.copytree(trained["root"] / "b32", bundle)
    (tmp_path / "notes.txt").write_text("hello")
    res = run_runner(bundle, str(tmp_path / "notes.txt"))
    assert res.returncode == 2 and "not a PNG, PGM/PPM or .npy file" in res.stderr
    res = run_runner(bundle, str(tmp_path / "missing.png"))
    assert res.returncode == 2 and "no such file" in res.stderr
    with open(bundle / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    np.save(tmp_path / "x.npy", np.zeros((20, 20)))
    res = run_runner(bundle, str(tmp_path / "x.npy"))
    assert res.returncode == 2 and "SHA-256 differs" in res.stderr


# ----------------------------------------------------------------------------- the CLI


def test_cli_exports_the_mark_i_machine_and_the_runner_agrees(cli, tmp_path):
    m = synthetic_machine("left-right", seed=3, n_train=80)
    src = save_machine_file(m, tmp_path / "machine.npz")
    out = tmp_path / "markI_bundle"
    res = cli("export", "onnx", str(src), "--target", "jetson-tx2", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "export onnx: markI" in res.stdout and "class agreement 1.0000" in res.stdout
    meta = json.loads((out / "model.json").read_text())
    assert meta["kind"] == "markI" and meta["class_output"] == "scores"
    assert [o["name"] for o in meta["outputs"]] == ["scores", "class_index", "r_sum"]
    assert meta["parity"]["n_samples"] == 200 and meta["parity"]["n_class_mismatches"] == 0
    X, _ = task_test_inputs("left-right", 3)
    np.save(tmp_path / "x.npy", X[:25])
    res = run_runner(out, str(tmp_path / "x.npy"))
    assert res.returncode == 0, res.stderr
    assert printed_classes(res.stdout) == [m.classes[k] for k in m.decide(X[:25])[0]]


def _bad_inputs(tmp_path: Path, trained: dict) -> list[tuple[list[str], str]]:
    good = trained["src"].read_bytes()
    (tmp_path / "half.pt").write_bytes(good[: len(good) // 2])
    (tmp_path / "card.png").write_bytes(_png(np.zeros((4, 4), np.uint8), 0))
    (tmp_path / "notes.txt").write_text("weights: 1 2 3\n")
    m = synthetic_machine("left-right", n_train=20, n_test=4)
    m.codebook = np.zeros_like(m.codebook)
    save_machine_file(m, tmp_path / "broken.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    target = ["--target", "jetson-tx2"]
    return [
        ([str(tmp_path / "nope.pt"), *target], "checkpoint not found"),
        ([str(tmp_path / "half.pt"), *target], "damaged or truncated zip archive"),
        ([str(tmp_path / "card.png"), *target], "it is a PNG image"),
        ([str(tmp_path / "notes.txt"), *target], "it is a text file"),
        ([str(tmp_path / "broken.npz"), *target], "codebook entries must be -1 or +1"),
        ([str(tmp_path / "other.npz"), *target], "zip archive of something else"),
        ([str(trained["src"]), "--target", "jetson-nano"], "invalid choice: 'jetson-nano'"),
    ]


def test_cli_bad_input_is_one_line_exit_2_and_no_bundle(cli, trained, tmp_path):
    for args, message in _bad_inputs(tmp_path, trained):
        out = tmp_path / "bundle"
        res = cli("export", "onnx", *args, "--out", str(out))
        assert res.returncode == 2, (args, res.stderr)
        assert res.stderr.count("\n") == 1 and message in res.stderr, res.stderr
        assert "Traceback" not in res.stderr and res.stdout == ""
        assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle")]


def test_refusal_leaves_an_earlier_bundle_untouched(cli, trained, tmp_path):
    out = tmp_path / "bundle"
    shutil.copytree(trained["root"] / "b32", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (tmp_path / "notes.txt").write_text("not a model")
    res = cli("export", "onnx", str(tmp_path / "notes.txt"), "--out", str(out))
    assert res.returncode == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_torch_file_of_another_kind_is_refused_before_anything_is_written(tmp_path):
    import torch

    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: no Linear layer found"):
        export_bundle(tmp_path / "other.pt", "jetson-tx2", tmp_path / "bundle")
    with pytest.raises(ValueError, match="unknown target 'tx1'"):
        export_bundle(tmp_path / "other.pt", "tx1", tmp_path / "bundle")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.pt"]
