"""Bad input everywhere: every CLI command and the main public functions, given wrong types,
shapes, NaN and infinity, empty data, files of another kind (a PNG as a checkpoint, a truncated
package, an ONNX model from elsewhere), missing and busy ports.

Each case of :data:`CLI_CASES` runs ``mark1`` in a workspace of real files (a PNG, a text file,
a trained-format checkpoint, a machine file, packages whole and damaged, a foreign ONNX model,
output paths that already hold the user's files) next to a running simulated device. It must
answer one line on stderr naming the problem, with the documented exit status (2 for bad input;
8 for a busy device), no traceback or warning, and leave the workspace exactly as it was: no new
file, no partial file, nothing of the user's changed. Each case of :data:`API_CASES` must raise
``ValueError``/``TypeError`` with a one-line message naming the problem.

``python -m tests.test_bad_input --markdown`` runs every case and prints the table of what was
tried and what it answered (``docs/RELIABILITY.md`` holds it).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import re
import struct
import sys
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- the workspace


def png_bytes(h: int = 8, w: int = 8) -> bytes:
    """A real 8-bit greyscale PNG (a diagonal line), written with zlib alone."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(255 if i == j else 0 for j in range(w)) for i in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def foreign_onnx() -> bytes:
    """An ONNX model from elsewhere: y = x + x on a 3-vector."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"])], "elsewhere",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def onnx_mlp(n_in: int, hidden: int = 4, conv: bool = False) -> bytes:
    """An ONNX MLP (Gemm, Relu, Gemm) on ``n_in`` inputs; with ``conv`` a Conv first."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    width = 2 * 6 * 6 if conv else n_in
    inits = {"w1": rng.normal(size=(hidden, width)), "b1": np.zeros(hidden),
             "w2": rng.normal(size=(3, hidden)), "b2": np.zeros(3),
             "k": rng.normal(size=(2, 1, 3, 3))}
    nodes = [helper.make_node("Gemm", ["f" if conv else "x", "w1", "b1"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1)]
    if conv:
        nodes[:0] = [helper.make_node("Conv", ["x", "k"], ["c"], name="conv"),
                     helper.make_node("Flatten", ["c"], ["f"])]
    else:
        del inits["k"]
    shape = ["n", 1, 8, 8] if conv else ["n", n_in]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]
                             ).SerializeToString()


def _torch_bytes(obj: Any) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _files(ws: Path) -> dict[str, bytes]:
    from export.onnx.checkpoint import save_checkpoint
    from tests.device_helpers import image
    from tests.int8_models import random_checkpoint, random_machine, save_machine

    rng = np.random.default_rng(0)
    ckpt = random_checkpoint(rng, [400, 8, 10])
    ckpt.classes = [str(k) for k in range(10)]
    save_checkpoint(ckpt, ws / "mlp.pt")
    machine = random_machine(rng, n_a=16, n_r=4, n_classes=3)
    save_machine(machine, ws / "machine.npz")
    nan_machine = dict(machine, weights=np.full_like(machine["weights"], np.nan))
    save_machine(nan_machine, ws / "nan_machine.npz")
    np.savez(ws / "pickled.npz", format=np.array([{"a": 1}], dtype=object))
    pkg = image()
    flipped = bytearray(pkg)
    flipped[300] ^= 0x10
    mlp = (ws / "mlp.pt").read_bytes()
    return {**_tflite_files(pkg, machine),
        "picture.png": png_bytes(), "notes.txt": b"these are not weights\n", "empty.bin": b"",
        "model.m1w": pkg, "other.m1w": image(seed=1), "truncated.m1w": pkg[: len(pkg) // 2],
        "flipped.m1w": bytes(flipped),
        "elsewhere.onnx": foreign_onnx(), "truncated.pt": mlp[: len(mlp) // 2],
        "nan.npy": _npy(np.full((2, 20, 20), np.nan)), "inf.npy": _npy(np.full((20, 20), np.inf)),
        "negative.npy": _npy(-np.ones((20, 20))), "empty.npy": _npy(np.zeros((0, 20, 20))),
        "cube.npy": _npy(np.zeros((2, 3, 4, 5))), "text.npy": _npy(np.array(["a", "b"])),
        "bright.png": png_bytes(),
        "conv.onnx": onnx_mlp(64, conv=True), "wide.onnx": onnx_mlp(70_000, hidden=2),
        "features.onnx": onnx_mlp(64), "calib64.npy": _npy(np.random.default_rng(2).uniform(
            size=(20, 64))), "short.npy": _npy(np.zeros((5, 30))),
        "words.npy": _npy(np.array(["cat"] * 20)), "conv.pt": _conv_module(),
        "out/keep.txt": b"the user's file in an output folder\n",
        "existing.m1w": b"the user's earlier package\n",
        "flash.bin": b"the user's file, not a flash state\n",
        "blocked/report.json/keep.txt": b"the user's file in a folder named like an output\n",
        "huge.png": huge_png(60000, 60000),
        "complex.npy": _npy(np.zeros((20, 20), dtype=complex)),
        "damaged.bin": damaged_state(),
    }


def huge_png(w: int, h: int) -> bytes:
    """A PNG whose header says ``w`` x ``h`` grey pixels, with its first rows of data (a
    decoder would need w*h bytes before it found the rest missing)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\x00" * (w + 1) * 16)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def damaged_state() -> bytes:
    """The state file of ``mark1 device``'s default part, holding a model, with page 127's
    erase counter damaged (0xFFFFFFFF)."""
    import tempfile

    from firmware_sim.device import PRESETS, Device
    from firmware_sim.flash import FILE_HEADER
    from tests.device_helpers import image, upload

    with tempfile.TemporaryDirectory() as tmp:
        dev = Device(PRESETS["cortex-m4"], state_path=Path(tmp) / "flash.bin")
        upload(dev, image())
        dev.flash.close()
        raw = bytearray((Path(tmp) / "flash.bin").read_bytes())
    raw[FILE_HEADER.size + 4 * 127 : FILE_HEADER.size + 4 * 128] = b"\xff" * 4
    return bytes(raw)


SPARSE_BYTES = 30 * 2**30
"""Size of the sparse state file of the workspace (30 GiB, a few KiB on disk)."""


TENSORFLOW_MADE = ("float.tflite", "conv2d.tflite", "uint8_io.tflite")
"""Bad .tflite files that TensorFlow's converter makes (tests/tflite_fixtures.py)."""


def _tflite_files(pkg: bytes, machine: dict) -> dict[str, bytes]:
    """An exported .tflite, one cut in half, a text file named .tflite, a Mark I package, and
    (where TensorFlow is installed) a float model, a CONV_2D model and a uint8 one."""
    from export.contract.package import decode_package, encode_package
    from export.int8.quantize import quantize_machine
    from export.tflite.write import tflite_bytes
    from tests.tflite_fixtures import fixture_dir, tensorflow_missing

    exported = tflite_bytes(decode_package(pkg))
    markI = quantize_machine(machine, np.random.default_rng(1).uniform(size=(20, 400)))
    files = {"mlp.tflite": exported, "truncated.tflite": exported[: len(exported) // 2],
             "text.tflite": b"these are not weights either\n",
             "markI.m1w": encode_package(markI)}
    if not tensorflow_missing():
        files.update({name: (fixture_dir() / name).read_bytes() for name in TENSORFLOW_MADE})
    return files


def _conv_module() -> bytes:
    """A whole torch module holding a class that is no part of an MLP (Conv2d)."""
    from torch import nn

    return _torch_bytes(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 3)))


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def snapshot(ws: Path) -> dict[str, str]:
    """Every file and folder under ``ws`` (symlinks as such) with a hash of a file's content
    (of a sparse giant, its size and time)."""
    out = {}
    for p in sorted(ws.rglob("*")):
        key = str(p.relative_to(ws))
        if p.is_symlink():
            out[key] = "-> " + os.readlink(p)
        elif p.is_dir():
            out[key] = "folder"
        elif p.stat().st_size > 2**26:
            out[key] = f"{p.stat().st_size} bytes, modified {p.stat().st_mtime_ns}"
        else:
            out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@dataclass
class Workspace:
    path: Path
    device: str
    """pty of a running simulated device with a model."""
    busy_pty: str
    """pty of a device whose port another host holds."""
    busy_tcp: str
    """socket:// URL of a device serving another host."""
    closed_tcp: str
    """socket:// URL where nothing listens."""

    @property
    def busy_listen(self) -> str:
        """HOST:PORT another program (a device) listens on."""
        return self.busy_tcp.removeprefix("socket://")


@contextlib.contextmanager
def workspace(root: Path) -> Iterator[Workspace]:
    """Files, a running device, two busy devices and a closed port."""
    import socket

    from export.serial.link import connect
    from export.serial.settings import LinkSettings
    from firmware_sim.device import PRESETS, Device
    from firmware_sim.flash import FILE_HEADER, Flash
    from firmware_sim.serve import PtyServer, TcpServer
    from tests.device_helpers import SMALL, upload

    for name, data in _files(root).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    with open(root / "sparse.bin", "wb") as fh:  # a state file's header, then 30 GiB of hole
        fh.write(FILE_HEADER.pack(b"M1FLASH1", 256 * 1024, 2048))
        fh.truncate(SPARSE_BYTES)
    (root / "link.pt").symlink_to("mlp.pt")
    (root / "link.m1w").symlink_to("model.m1w")
    part = PRESETS["cortex-m4"]
    locked = Flash(part.flash_bytes, part.page_bytes, path=root / "locked.bin")  # a device's
    devices = []
    for _ in range(3):
        dev = Device(SMALL)
        upload(dev, (root / "model.m1w").read_bytes())
        devices.append(dev)
    probe = socket.create_server(("127.0.0.1", 0))
    closed = f"socket://127.0.0.1:{probe.getsockname()[1]}"
    probe.close()
    quick = LinkSettings(timeout_s=0.2)
    try:
        with PtyServer(devices[0]) as free, PtyServer(devices[1]) as pty, \
                TcpServer(devices[2]) as tcp, connect(pty.url, quick), connect(tcp.url, quick):
            yield Workspace(root, free.url, pty.url, tcp.url, closed)
    finally:
        locked.close()


# --------------------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Case:
    """One bad input: ``args`` for ``mark1`` (``{ws}``, ``{device}``, ``{busy_pty}``,
    ``{busy_tcp}``, ``{closed_tcp}`` are filled in) and what the answer must hold."""

    what: str
    """What was tried, in words."""
    args: tuple[str, ...]
    says: str
    """Regular expression the one-line message must match."""
    code: int = 2

    @property
    def command(self) -> str:
        return " ".join(self.args[:2]) if self.args[0] == "export" else self.args[0]


def C(what: str, args: str, says: str, code: int = 2) -> Case:
    return Case(what, tuple(args.split()), says, code)


CLI_CASES: tuple[Case, ...] = (
    # tasks, simulate, replay
    C("an unknown option", "tasks --colour", "unrecognized arguments: --colour"),
    C("an unknown task", "simulate --task chess --out {ws}/run", "unknown task 'chess'"),
    C("zero epochs", "simulate --task digits --epochs 0 --out {ws}/run",
      "argument --epochs: 0 is out of range"),
    C("a negative seed", "simulate --task digits --seed -3 --out {ws}/run",
      r"argument --seed: -3 is out of range \(allowed: whole numbers 0 to 4294967295\)"),
    C("an unknown preset", "simulate --task digits --preset steam --out {ws}/run", "steam"),
    C("an unknown learning rule", "simulate --task digits --rule magic --out {ws}/run", "magic"),
    C("zero A-units", "simulate --task digits --n-a 0 --out {ws}/run",
      "argument --n-a: 0 is out of range"),
    C("a parameter set to NaN", "simulate --task digits --set read_noise=nan --out {ws}/run",
      "read_noise"),
    C("a parameter that does not exist", "simulate --task digits --set warp=9 --out {ws}/run",
      "warp"),
    C("a file as the output folder", "simulate --task digits --out {ws}/picture.png",
      "exists and is not a folder"),
    C("a file as the output folder", "replay --quick --out {ws}/picture.png",
      "exists and is not a folder"),
    C("a negative seed", "replay --quick --seed -1", "seed"),
    # playground (refused before anything listens)
    C("no tabs at all", "playground --no-browser --max-tabs 0",
      r"--max-tabs: 0 is out of range \(allowed: whole numbers 1 to 10000 tabs\)"),
    C("a port beyond 65535", "playground --no-browser --port 70000",
      r"--port: 70000 is out of range \(allowed: whole numbers 1 to 65535, or 0"),
    C("a negative number of workers", "playground --no-browser --port 0 --workers -1",
      r"--workers: -1 is out of range \(allowed: whole numbers 0 to 64 processes\)"),
    # sweep
    C("a parameter that does not exist", "sweep --task e-f --grid warp=1,2 --out {ws}/run",
      "unknown parameter 'warp'"),
    C("an empty grid", "sweep --task e-f --grid read_noise= --out {ws}/run",
      "the grid of read_noise is empty"),
    C("a grid value out of its part's range",
      "sweep --task e-f --grid stuck_fraction=0,1.5 --out {ws}/run",
      r"stuck_fraction = 1.5 is out of range \(allowed: \[0, 1\)\)"),
    C("zero seeds", "sweep --task e-f --seeds 0 --out {ws}/run", "at least 1"),
    C("a text file as the spec", "sweep --spec {ws}/notes.txt --out {ws}/run",
      "notes.txt: not a valid TOML spec"),
    C("a file as the output folder", "sweep --task e-f --out {ws}/picture.png",
      "exists and is not a folder"),
    C("a hundred trillion seeds", "sweep --task xor --seeds 99999999999999 --out {ws}/run",
      "seeds: 99,999,999,999,999 is more than a sweep holds"),
    C("ten million grid values", "sweep --task xor --grid read_noise=0:1:10000000 --out "
      "{ws}/run", "the count of values: 10,000,000 is more than a sweep holds"),
    C("a setting that fails the first run", "sweep --task xor --n-train 1 --n-a 16 --epochs 1 "
      "--workers 0 --out {ws}/run", "needs? samples of at least 2 classes"),
    C("a device as the spec", "sweep --spec /dev/zero --out {ws}/run",
      "--spec '/dev/zero' is not a regular file"),
    C("an output folder where none can be made", "sweep --task xor --out /proc/x",
      "--out '/proc/x': cannot write there"),
    C("a negative number of workers", "sweep --task xor --workers -1 --out {ws}/run",
      "argument --workers: -1 is out of range"),
    # train-mlp
    C("hidden sizes that are not numbers", "train-mlp --hidden 64,x --out {ws}/run",
      "hidden layer sizes must be positive whole numbers"),
    C("an unknown task", "train-mlp --task chess --out {ws}/run", "unknown task 'chess'"),
    C("zero epochs", "train-mlp --epochs 0 --out {ws}/run", "epochs"),
    C("a NaN learning rate", "train-mlp --lr nan --out {ws}/run", "lr"),
    C("a negative learning rate", "train-mlp --lr -1 --out {ws}/run", "lr"),
    C("an infinite learning rate", "train-mlp --lr inf --out {ws}/run", "lr"),
    C("a zero batch size", "train-mlp --batch-size 0 --out {ws}/run", "batch"),
    C("no training images", "train-mlp --n-train 0 --out {ws}/run", "n.train"),
    C("a file as the output folder", "train-mlp --out {ws}/picture.png",
      "exists and is not a folder"),
    # export onnx
    C("a PNG as the checkpoint", "export onnx {ws}/picture.png --out {ws}/out", "PNG image"),
    C("a text file as the checkpoint", "export onnx {ws}/notes.txt --out {ws}/out", "notes.txt"),
    C("an empty file as the checkpoint", "export onnx {ws}/empty.bin --out {ws}/out",
      "empty.bin"),
    C("a truncated checkpoint", "export onnx {ws}/truncated.pt --out {ws}/out", "truncated.pt"),
    C("an ONNX model from elsewhere as the checkpoint",
      "export onnx {ws}/elsewhere.onnx --out {ws}/out", "ONNX"),
    C("a weight package as the checkpoint", "export onnx {ws}/model.m1w --out {ws}/out",
      "model.m1w"),
    C("a machine file with NaN weights", "export onnx {ws}/nan_machine.npz --out {ws}/out",
      "weights must be finite"),
    C("a machine file holding pickled objects", "export onnx {ws}/pickled.npz --out {ws}/out",
      "pickled.npz"),
    C("a missing checkpoint", "export onnx {ws}/nothing.pt --out {ws}/out", "not found"),
    C("an unknown target", "export onnx {ws}/mlp.pt --target jetson-nano --out {ws}/out",
      "invalid choice: 'jetson-nano'"),
    C("a file as the output folder", "export onnx {ws}/mlp.pt --out {ws}/picture.png",
      "exists and is not a folder"),
    C("an ONNX model with a Conv", "export onnx {ws}/conv.onnx --out {ws}/out",
      r"node 'conv' \(Conv\)"),
    C("evaluation data of the wrong shape", "export onnx {ws}/features.onnx --eval-data "
      "{ws}/short.npy --out {ws}/out", r"shape \(5, 30\)"),
    C("--fp16 for an ONNX model", "export onnx {ws}/features.onnx --fp16 --out {ws}/out",
      "--fp16 applies to models the kit writes"),
    C("an int8 .tflite as the checkpoint", "export onnx {ws}/mlp.tflite --out {ws}/out",
      "quantized already, not a float MLP"),
    # export tflite
    C("a Mark I package", "export tflite {ws}/markI.m1w --out {ws}/m.tflite",
      "TensorFlow Lite has no operator for them"),
    C("a truncated package", "export tflite {ws}/truncated.m1w --out {ws}/m.tflite",
      "not a valid weight package: package truncated"),
    C("a .tflite as the package", "export tflite {ws}/mlp.tflite --out {ws}/m.tflite",
      "not a valid weight package"),
    C("a missing package", "export tflite {ws}/nothing.m1w --out {ws}/m.tflite", "not found"),
    C("a folder as the output file", "export tflite {ws}/model.m1w --out {ws}/out",
      "is a folder"),
    C("evaluation data of the wrong shape", "export tflite {ws}/model.m1w --eval-data "
      "{ws}/short.npy --out {ws}/m.tflite", r"shape \(5, 30\)"),
    C("the package as the .tflite", "export tflite {ws}/model.m1w --out {ws}/model.m1w",
      "--out '.*model.m1w' would overwrite MODEL '.*model.m1w', which this command reads"),
    C("the evaluation data as the .tflite", "export tflite {ws}/model.m1w --eval-data "
      "{ws}/calib64.npy --out {ws}/calib64.npy", "--out '.*calib64.npy' would overwrite "
      "--eval-data"),
    C("a symlink to the package as the .tflite", "export tflite {ws}/model.m1w --out "
      "{ws}/link.m1w", "--out '.*link.m1w' would overwrite MODEL"),
    C("a .tflite where none can be written", "export tflite {ws}/model.m1w --out "
      "/proc/x.tflite", "--out '/proc/x.tflite': cannot write there"),
    C("an empty output path", "export tflite {ws}/model.m1w --out {empty}",
      "--out '': an empty path"),
    C("a folder as the package", "export tflite {ws}/out --out {ws}/m.tflite",
      "MODEL '.*out' is a folder"),
    C("a device as the package", "export tflite /dev/zero --out {ws}/m.tflite",
      "MODEL '/dev/zero' is not a regular file"),
    C("a negative seed", "export tflite {ws}/model.m1w --seed -1 --out {ws}/m.tflite",
      "argument --seed: -1 is out of range"),
    # quantize
    C("a PNG as the checkpoint", "quantize {ws}/picture.png --out {ws}/existing.m1w",
      "PNG image"),
    C("an ONNX model from elsewhere as the checkpoint",
      "quantize {ws}/elsewhere.onnx --out {ws}/existing.m1w", "ONNX"),
    C("a truncated checkpoint", "quantize {ws}/truncated.pt --out {ws}/existing.m1w",
      "truncated.pt"),
    C("a machine file with NaN weights", "quantize {ws}/nan_machine.npz --out {ws}/q.m1w",
      "weights must be finite"),
    C("a missing checkpoint", "quantize {ws}/nothing.pt --out {ws}/q.m1w", "not found"),
    C("zero calibration images", "quantize {ws}/mlp.pt --calib 0 --out {ws}/q.m1w",
      "--calib must be a positive whole number"),
    C("calibration images that are not a number", "quantize {ws}/mlp.pt --calib lots "
      "--out {ws}/q.m1w", "--calib must be a positive whole number"),
    C("an unknown task", "quantize {ws}/mlp.pt --task chess --out {ws}/q.m1w", "chess"),
    C("a folder as the output file", "quantize {ws}/mlp.pt --out {ws}/out", "out"),
    C("an ONNX model with a Conv", "quantize {ws}/conv.onnx --calib-data {ws}/calib64.npy "
      "--out {ws}/q.m1w", r"node 'conv' \(Conv\) is not part of an MLP"),
    C("a model with 70,000 inputs", "quantize {ws}/wide.onnx --out {ws}/q.m1w",
      "takes 70000 inputs; a weight package holds at most 65535"),
    C("calibration data of the wrong shape", "quantize {ws}/features.onnx --calib-data "
      "{ws}/short.npy --out {ws}/q.m1w", r"shape \(5, 30\): the model takes 64 values per input"),
    C("a model of its own inputs and no data", "quantize {ws}/features.onnx --out {ws}/q.m1w",
      "names no built-in task: give --calib-data"),
    C("a task whose classes differ from the model's", "quantize {ws}/mlp.pt --task letters "
      "--out {ws}/q.m1w", "task 'letters' has 26 classes"),
    C("labels that are not the model's classes", "quantize {ws}/features.onnx --calib-data "
      "{ws}/calib64.npy --eval-data {ws}/calib64.npy {ws}/words.npy --out {ws}/q.m1w",
      "holds the label 'cat'"),
    C("three evaluation files", "quantize {ws}/features.onnx --calib-data {ws}/calib64.npy "
      "--eval-data {ws}/calib64.npy {ws}/words.npy {ws}/short.npy --out {ws}/q.m1w",
      "takes X.npy and optionally y.npy"),
    C("a pickled module with a class outside an MLP", "quantize {ws}/conv.pt --out {ws}/q.m1w",
      "pickles Python objects of class torch.nn.modules.conv.Conv2d"),
    C("a float .tflite (not quantized)", "quantize {ws}/float.tflite --out {ws}/q.m1w",
      "operator 0 FULLY_CONNECTED: weights tensor .* is float32: this is a float"),
    C("a .tflite with a CONV_2D", "quantize {ws}/conv2d.tflite --out {ws}/q.m1w",
      "operator 0 CONV_2D is not supported"),
    C("a .tflite quantized with a uint8 interface", "quantize {ws}/uint8_io.tflite --out "
      "{ws}/q.m1w", "operator 0 QUANTIZE: input tensor .* is uint8: the kit imports int8"),
    C("a truncated .tflite", "quantize {ws}/truncated.tflite --out {ws}/q.m1w",
      "truncated.tflite: not a readable TensorFlow Lite flatbuffer"),
    C("a text file named .tflite", "quantize {ws}/text.tflite --out {ws}/q.m1w",
      "not a TensorFlow Lite flatbuffer"),
    C("calibration data for a .tflite", "quantize {ws}/mlp.tflite --calib-data "
      "{ws}/calib64.npy --out {ws}/q.m1w", "quantized already: .* --calib-data"),
    C("the .tflite as the package", "quantize {ws}/mlp.tflite --out {ws}/mlp.tflite",
      "--out '.*mlp.tflite' would overwrite MODEL '.*mlp.tflite', which this command reads"),
    C("one file for a .tflite's package and its ONNX", "quantize {ws}/mlp.tflite --out "
      "{ws}/q.m1w --onnx {ws}/q.m1w", "--onnx '.*q.m1w' and --out '.*q.m1w' name the same file"),
    C("the evaluation data as a .tflite's report", "quantize {ws}/mlp.tflite --eval-data "
      "{ws}/calib64.npy --out {ws}/q.m1w --report {ws}/calib64.npy",
      "--report '.*calib64.npy' would overwrite --eval-data"),
    C("a .tflite's package where none can be written", "quantize {ws}/mlp.tflite --out "
      "/proc/x.m1w", "--out '/proc/x.m1w': cannot write there"),
    C("a .tflite's report under a file", "quantize {ws}/mlp.tflite --out {ws}/q.m1w --report "
      "{ws}/picture.png/r.json", "--report '.*r.json': a part of the path is a file"),
    C("a negative seed for a .tflite", "quantize {ws}/mlp.tflite --seed -1 --out {ws}/q.m1w",
      "argument --seed: -1 is out of range"),
    C("an unknown rounding", "quantize {ws}/mlp.pt --rounding even --out {ws}/q.m1w",
      "invalid choice: 'even'"),
    # push
    C("a PNG as the package", "push {ws}/picture.png --port {device}",
      "not a valid weight package: not a weight package: magic"),
    C("a truncated package", "push {ws}/truncated.m1w --port {device}", "package truncated"),
    C("a package with a flipped bit", "push {ws}/flipped.m1w --port {device}",
      "CRC-32 mismatch"),
    C("an ONNX model from elsewhere as the package", "push {ws}/elsewhere.onnx --port {device}",
      "not a weight package"),
    C("an empty file as the package", "push {ws}/empty.bin --port {device}", "truncated"),
    C("a missing package", "push {ws}/nothing.m1w --port {device}", "not found"),
    C("a missing port", "push {ws}/model.m1w --port /dev/ttyUSB9", "cannot open port"),
    C("a closed TCP port", "push {ws}/model.m1w --port {closed_tcp}", "cannot open port"),
    C("a port that is not a URL pyserial knows", "push {ws}/model.m1w --port carrier://pigeon",
      "the scheme carrier:// is not one the kit opens"),
    C("a port another host holds (pty)", "push {ws}/model.m1w --port {busy_pty}",
      "busy: the port is in use by another program", 8),
    C("a device serving another host (TCP)", "push {ws}/model.m1w --port {busy_tcp}",
      "busy.*serving another host", 8),
    C("zero frames in flight", "push {ws}/model.m1w --port {device} --window 0",
      "argument --window: 0 is out of range"),
    C("a zero baud rate", "push {ws}/model.m1w --port {device} --baud 0",
      "argument --baud: 0 is out of range"),
    C("a NaN timeout", "push {ws}/model.m1w --port {device} --timeout nan",
      "argument --timeout: nan is not a number"),
    C("a negative number of retries", "push {ws}/model.m1w --port {device} --retries -1",
      "argument --retries: -1 is out of range"),
    C("a slot that does not exist", "push {ws}/model.m1w --port {device} --slot C",
      "invalid choice: 'C'"),
    C("a folder as the JSON report", "push {ws}/model.m1w --port {device} --json {ws}/out",
      "--json '.*out' is a folder"),
    # infer
    C("neither images nor a task", "infer --port {device}", "give image files or --task"),
    C("zero images", "infer --port {device} --task digits --n 0",
      "argument --n: 0 is out of range"),
    C("an unknown task", "infer --port {device} --task chess", "chess"),
    C("a task the device's model does not know", "infer --port {device} --task xor",
      "the device's model knows classes"),
    C("a text file as an image", "infer {ws}/notes.txt --port {device}", "notes.txt"),
    C("NaN images", "infer {ws}/nan.npy --port {device}", "NaN"),
    C("an infinite image", "infer {ws}/inf.npy --port {device}", "NaN or infinity"),
    C("a negative image", "infer {ws}/negative.npy --port {device}", r"\[0, 1\]"),
    C("an empty array of images", "infer {ws}/empty.npy --port {device}", "empty"),
    C("an array of the wrong rank", "infer {ws}/cube.npy --port {device}", "shape"),
    C("an array of strings", "infer {ws}/text.npy --port {device}", "text.npy"),
    C("a missing image", "infer {ws}/nothing.png --port {device}", "not found"),
    C("a PNG as the model file", "infer {ws}/bright.png --port {device} --model {ws}/picture.png",
      "not a weight package"),
    C("a damaged package as the model file",
      "infer {ws}/bright.png --port {device} --model {ws}/flipped.m1w", "CRC-32 mismatch"),
    C("the model file as the JSON report", "infer {ws}/bright.png --port {device} --model "
      "{ws}/model.m1w --json {ws}/model.m1w", "--json '.*model.m1w' would overwrite --model"),
    C("a JSON report where none can be written", "infer --port {device} --task digits --json "
      "/proc/x.json", "--json '/proc/x.json': cannot write there"),
    C("a folder as the JSON report", "infer {ws}/bright.png --port {device} --json {ws}/out",
      "--json '.*out' is a folder"),
    C("an empty JSON report path", "infer {ws}/bright.png --port {device} --json {empty}",
      "--json '': an empty path"),
    C("another model than the device runs as the model file",
      "infer {ws}/bright.png --port {device} --model {ws}/other.m1w",
      "is not the device's active model"),
    C("a port another host holds (pty)", "infer {ws}/bright.png --port {busy_pty}", "busy", 8),
    C("a device serving another host (TCP)", "infer {ws}/bright.png --port {busy_tcp}", "busy",
      8),
    C("a missing port", "infer {ws}/bright.png --port /dev/ttyUSB9", "cannot open port"),
    C("a folder as the trace", "infer --port {device} --task digits --trace {ws}/out",
      "--trace .* is a folder"),
    C("a folder as the trace", "push {ws}/model.m1w --port {device} --trace {ws}/out",
      "--trace .* is a folder"),
    # ports, info, status, rollback
    C("an unknown option", "ports --colour", "unrecognized arguments: --colour"),
    C("a folder as the JSON list", "ports --json {ws}/out", "--json .* is a folder"),
    C("a missing package", "info {ws}/nothing.m1w", "model file not found"),
    C("a PNG as the package", "info {ws}/picture.png", "picture.png is not a weight package"),
    C("a truncated package", "info {ws}/truncated.m1w", "package truncated"),
    C("a package with a flipped bit", "info {ws}/flipped.m1w", "CRC-32 mismatch"),
    C("an empty file as the package", "info {ws}/empty.bin", "truncated"),
    C("a missing port", "status --port /dev/ttyUSB9", "cannot open port"),
    C("a port another host holds (pty)", "status --port {busy_pty}", "busy", 8),
    C("a device serving another host (TCP)", "status --port {busy_tcp}", "busy", 8),
    C("a folder as the trace", "status --port {device} --trace {ws}/out",
      "--trace .* is a folder"),
    C("a slot that does not exist", "rollback --port {device} --slot C", "invalid choice: 'C'"),
    C("a rollback to a slot with no committed model", "rollback --port {device}",
      "slot B holds no committed model", 9),
    C("a missing port", "rollback --port /dev/ttyUSB9", "cannot open port"),
    C("a folder as the JSON report", "rollback --port {device} --check --json {ws}/out",
      "--json .* is a folder"),
    # their outputs, checked before any byte goes to a device
    C("the package as its JSON report", "info {ws}/model.m1w --json {ws}/model.m1w",
      "would overwrite MODEL"),
    C("a JSON list where none can be written", "ports --json /proc/x.json", "cannot write there"),
    C("a trace where none can be written", "status --port {device} --trace /proc/x.log",
      "cannot write there"),
    C("one file for the JSON report and the trace", "rollback --port {device} --check --json "
      "{ws}/r.json --trace {ws}/r.json", "name the same file"),
    C("the package as the trace", "push {ws}/model.m1w --port {device} --trace {ws}/model.m1w",
      "would overwrite MODEL"),
    C("the image as the trace", "infer {ws}/bright.png --port {device} --trace {ws}/bright.png",
      "would overwrite IMAGES"),
    C("a trace where none can be written", "push {ws}/other.m1w --port {device} --trace "
      "/proc/x.log", "cannot write there"),
    C("a text file as an image, traced (refused before the device is asked anything)",
      "infer {ws}/notes.txt --port {device} --trace {ws}/t.log", "not a readable image"),
    C("a PNG as the package, traced (refused before the device is asked anything)",
      "push {ws}/picture.png --port {device} --trace {ws}/t.log", "not a valid weight package"),
    # export c
    C("a missing package", "export c {ws}/nothing.m1w --out {ws}/csrc", "model file not found"),
    C("a PNG as the package", "export c {ws}/picture.png --out {ws}/csrc",
      "picture.png is not a valid weight package"),
    C("a folder as the package", "export c {ws}/out --out {ws}/csrc", "is a folder"),
    C("the package as the output folder", "export c {ws}/model.m1w --out {ws}/model.m1w",
      "exists and is not a folder"),
    C("a folder that is not empty as the output", "export c {ws}/model.m1w --out {ws}/blocked",
      "exists and is not an empty folder"),
    C("an output folder where none can be made", "export c {ws}/model.m1w --out /proc/x",
      "cannot write there"),
    # device
    C("a flash that is not a whole number of pages", "device --pty --flash 1000",
      "multiple of the page size"),
    C("a page size that is not a power of two", "device --pty --page 1000", "power of two"),
    C("frames too small for any request", "device --pty --max-payload 10",
      "argument --max-payload: 10 is out of range .*64 to 65535"),
    C("a size that is not a size", "device --pty --ram lots", "size 'lots' is not a number"),
    C("a zero RAM arena", "device --pty --ram 0", "argument --ram: 0 is out of range"),
    C("a negative baud rate", "device --pty --baud -9600",
      "argument --baud: -9600 is out of range .*or 0 \\(unpaced\\)"),
    C("a negative turnaround", "device --pty --turnaround -5", "turnaround"),
    C("a NaN turnaround", "device --pty --turnaround nan", "turnaround"),
    C("the user's file as the flash state", "device --pty --state {ws}/flash.bin",
      "not a mark1-kit flash state file"),
    C("a port number out of range", "device --listen 127.0.0.1:99999", "99999"),
    C("a TCP port another program listens on", "device --listen {busy_listen}",
      "cannot listen on 127.0.0.1"),
    C("a folder as the flash state", "device --pty --state {ws}/out", "out"),
    C("a TCP port another program listens on, with a new state file", "device --listen "
      "{busy_listen} --state {ws}/new.bin", "cannot listen on 127.0.0.1"),
    C("a TCP port another program listens on, for the C firmware", "device --firmware host "
      "--listen {busy_listen} --state {ws}/new.bin", "cannot listen on 127.0.0.1"),
    C("neither --pty nor --listen", "device", "one of the arguments --pty --listen"),
    # outputs that are inputs or each other (resolved through symlinks), refused before any work
    C("the checkpoint as the package", "quantize {ws}/mlp.pt --out {ws}/mlp.pt",
      "--out '.*mlp.pt' would overwrite MODEL '.*mlp.pt', which this command reads"),
    C("one file for the package and its ONNX",
      "quantize {ws}/mlp.pt --out {ws}/q.m1w --onnx {ws}/q.m1w",
      "--onnx '.*q.m1w' and --out '.*q.m1w' name the same file"),
    C("one file for the package and its report",
      "quantize {ws}/mlp.pt --out {ws}/q.m1w --report {ws}/q.m1w",
      "--report '.*q.m1w' and --out '.*q.m1w' name the same file"),
    C("a symlink to the checkpoint as the package", "quantize {ws}/mlp.pt --out {ws}/link.pt",
      "--out '.*link.pt' would overwrite MODEL"),
    C("the package as its JSON report", "push {ws}/model.m1w --port {device} --json "
      "{ws}/model.m1w", "--json '.*model.m1w' would overwrite MODEL"),
    C("the image as the JSON report", "infer {ws}/bright.png --port {device} --json "
      "{ws}/bright.png", "--json '.*bright.png' would overwrite IMAGES"),
    C("a JSON report where none can be written", "push {ws}/other.m1w --port {device} --json "
      "/proc/x.json", "--json '/proc/x.json': cannot write there"),
    # outputs where nothing can be written: found before the work, named as the user gave them
    C("an output folder where none can be made", "train-mlp --epochs 60 --out /proc/x",
      "--out '/proc/x': cannot write there"),
    C("an output folder where none can be made", "export onnx {ws}/mlp.pt --out /proc/x",
      "--out '/proc/x': cannot write there"),
    C("an output file where none can be made", "quantize {ws}/mlp.pt --out /proc/x.m1w",
      "--out '/proc/x.m1w': cannot write there"),
    C("an output folder where none can be made", "simulate --task digits --out /proc/x",
      "--out '/proc/x': cannot write there"),
    C("an output folder where none can be made", "replay --quick --out /proc/x",
      "--out '/proc/x': cannot write there"),
    C("an empty output path", "simulate --task digits --out {empty}",
      "--out '': an empty path"),
    C("an output folder under a file", "train-mlp --out {ws}/picture.png/run",
      "a part of the path is a file"),
    C("a folder where the run writes its report", "simulate --task xor --n-a 16 --out "
      "{ws}/blocked", "report.json in --out '.*blocked' is a folder, link or device"),
    C("a folder as the checkpoint", "export onnx {ws}/out --out {ws}/bundle",
      "MODEL '.*out' is a folder"),
    C("a folder as the checkpoint", "quantize {ws}/out --out {ws}/q.m1w",
      "MODEL '.*out' is a folder"),
    # the device owns its state file
    C("a state file another device holds", "device --listen 127.0.0.1:0 --state "
      "{ws}/locked.bin", "flash state '.*locked.bin' is in use by another device"),
    C("a device as the state file", "device --pty --state /dev/zero",
      "flash state '/dev/zero' is not a regular file"),
    C("a state file another device holds, for the firmware under QEMU", "device --firmware m3 "
      "--pty --state {ws}/locked.bin", "flash state '.*locked.bin' is in use by another device"),
    C("a device as the state file, for the firmware under QEMU",
      "device --firmware m4 --pty --state /dev/zero", "is not a regular file"),
    C("a state file another device holds, for the C firmware", "device --firmware host --pty "
      "--state {ws}/locked.bin", "flash state '.*locked.bin' is in use by another device"),
    C("a damaged state file, for the C firmware", "device --firmware host --pty --state "
      "{ws}/damaged.bin", "damaged: the erase counter of page 127"),
    C("a 30 GiB sparse state file", "device --pty --state {ws}/sparse.bin",
      "sparse.bin is 32,212,254,720 bytes, expected 262,672: truncated or damaged"),
    C("a damaged erase counter in the state file", "device --pty --state {ws}/damaged.bin",
      "damaged: the erase counter of page 127 reads 4,294,967,295"),
    # sizes and ranges from what the machine can hold
    C("a 60000 x 60000 PNG", "infer {ws}/huge.png --port {device}",
      "an image of 60000 x 60000 pixels; allowed at most 16,777,216"),
    C("a hundred million A-units", "simulate --task digits --n-a 100000000 --out {ws}/run",
      "argument --n-a: 100000000 is out of range"),
    C("ten billion training images", "simulate --task digits --n-train 10000000000 "
      "--out {ws}/run", "argument --n-train: 10000000000 is out of range"),
    C("more memory than the computer has", "simulate --task square-circle --n-a 65536 "
      "--n-train 10000000 --out {ws}/run", "would need about .* GiB of memory"),
    C("a run past the machine clock", "simulate --task digits --n-a 65536 --n-r 64 --set "
      "step_s=3600 --set max_running=1 --set steps_per_correction=1000 --out {ws}/run",
      "could run past the machine clock's 292,271 years"),
    C("a dwell time of three million years", "simulate --task digits --set dwell_s=1e14 "
      "--out {ws}/run", r"dwell_s: 1e14 is out of range \(allowed: \[0, 3600\] s\)"),
    C("a change time of three million years", "simulate --task digits --set change_s=1e14 "
      "--out {ws}/run", "change_s: 1e14 is out of range"),
    C("a motor step of three million years", "simulate --task digits --set step_s=1e14 "
      "--out {ws}/run", "step_s: 1e14 is out of range"),
    C("contact noise of 1e308", "simulate --task digits --set read_noise=1e308 --out {ws}/run",
      "read_noise: 1e308 is out of range"),
    C("a threshold spread of 1e308", "simulate --task digits --set a_theta_spread=1e308 "
      "--out {ws}/run", "a_theta_spread: 1e308 is out of range"),
    C("an infinite gamma", "simulate --task digits --set gamma=inf --out {ws}/run",
      r"gamma: inf is out of range \(allowed: \(0, 5\]\)"),
    C("an infinite lamp", "simulate --task digits --set lamp_lux=inf --out {ws}/run",
      "lamp_lux: inf is out of range"),
    C("a gamma of a billion", "simulate --task digits --set gamma=1e9 --out {ws}/run",
      "gamma: 1e9 is out of range"),
    C("an end stop at 1e308", "simulate --task digits --set w_max=1e308 --out {ws}/run",
      r"w_max: 1e308 is out of range .*or inf \(no end stop\)"),
    C("a hidden layer of a hundred million units", "train-mlp --hidden 100000000 --out "
      "{ws}/run", "hidden layer size 100000000 .* is out of range"),
    C("a hidden layer of zero units", "train-mlp --hidden 0 --out {ws}/run",
      "hidden layer size 0 .* is out of range .*none for no hidden layer"),
    C("layers too wide for the memory", "train-mlp --hidden 65536,65536,65536 --out {ws}/run",
      "would need about .* GiB of memory"),
    C("a baud rate of 1e14", "push {ws}/model.m1w --port {device} --baud 99999999999999",
      "argument --baud: 99999999999999 is out of range"),
    C("a baud rate of 1e14", "infer {ws}/bright.png --port {device} --baud 99999999999999",
      "argument --baud: 99999999999999 is out of range"),
    C("a baud rate of 9", "push {ws}/model.m1w --port {closed_tcp} --baud 9",
      r"argument --baud: 9 is out of range \(allowed: whole numbers 1200 to"),
    C("a complex array of images", "infer {ws}/complex.npy --port {device}",
      "complex.npy: an array of complex128; images are real numbers"),
    # ports: one line saying what a port must look like
    C("a pyserial URL the kit does not open", "push {ws}/model.m1w --port "
      "alt:///dev/ttyS9?class=PosixPollSerial", "the scheme alt:// is not one the kit opens"),
    C("a socket URL without a port", "push {ws}/model.m1w --port socket://127.0.0.1",
      "expected socket://HOST:PORT with a port number"),
    C("an RFC 2217 URL without a port", "push {ws}/model.m1w --port rfc2217://garbage",
      "expected rfc2217://HOST:PORT with a port number"),
    C("an empty port", "push {ws}/model.m1w --port {empty}", "port '' is empty"),
)
"""What ``mark1`` is given, and what its one-line answer must say."""


def _fill(case: Case, ws: Workspace) -> list[str]:
    values = {"ws": str(ws.path), "device": ws.device, "busy_pty": ws.busy_pty,
              "busy_tcp": ws.busy_tcp, "closed_tcp": ws.closed_tcp,
              "busy_listen": ws.busy_listen, "empty": ""}
    return [a.format(**values) for a in case.args]


@dataclass
class Answer:
    code: int
    stderr: str
    stdout: str

    @property
    def line(self) -> str:
        return self.stderr.strip()


def run_in_process(argv: list[str]) -> Answer:
    """``mark1 ARGV`` in this interpreter (the same code path as the console script, much
    faster than a subprocess per case); warnings count as lines on stderr."""
    from mark1.cli import main

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    for w in caught:
        if not issubclass(w.category, DeprecationWarning):
            err.write(f"{w.category.__name__}: {w.message}\n")
    return Answer(int(code), err.getvalue(), out.getvalue())


def check(case: Case, answer: Answer) -> None:
    """The answer is one line, no traceback, the documented code, naming the problem."""
    assert answer.code == case.code, (case.what, answer)
    lines = answer.stderr.strip().splitlines()
    assert len(lines) == 1, (case.what, answer.stderr)
    assert "Traceback" not in answer.stderr
    assert re.search(case.says, lines[0]), (case.what, lines[0])


def _needs_tensorflow(case: Case) -> None:
    """Skip a case on a file that TensorFlow makes where it is not installed (never in CI)."""
    from tests.tflite_fixtures import tensorflow_missing

    why = tensorflow_missing()
    if why and any(name in arg for arg in case.args for name in TENSORFLOW_MADE):
        if os.environ.get("CI"):
            pytest.fail(f"CI must run this case: {why}")
        pytest.skip(why)


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Iterator[Workspace]:
    with workspace(tmp_path_factory.mktemp("bad-input")) as w:
        yield w


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda c: f"{c.command}: {c.what}")
def test_cli_bad_input_is_one_line_and_leaves_the_files_alone(case, ws, monkeypatch):
    _needs_tensorflow(case)
    monkeypatch.chdir(ws.path)
    before = snapshot(ws.path)
    answer = run_in_process(_fill(case, ws))
    check(case, answer)
    assert snapshot(ws.path) == before, "a file was written, changed or left behind"


@pytest.mark.parametrize("case", [c for c in CLI_CASES if c.args[0] in (
    "export", "push", "device")][::6], ids=lambda c: f"{c.command}: {c.what}")
def test_the_same_answers_from_a_real_process(case, ws):
    from tests.conftest import run_cli

    before = snapshot(ws.path)
    res = run_cli(*_fill(case, ws), cwd=ws.path, timeout=120)
    check(case, Answer(res.returncode, res.stderr, res.stdout))
    assert snapshot(ws.path) == before


BAD_STATE_FILES: tuple[tuple[str, ...], ...] = (
    ("--state", "{ws}/locked.bin"), ("--state", "{ws}/damaged.bin"),
    ("--state", "{ws}/sparse.bin"), ("--state", "/dev/zero"), ("--state", "{ws}/flash.bin"),
    ("--state", "{ws}/out"), ("--state", "{ws}/notes.txt/flash.bin"),
    ("--state", "/proc/x.bin"), ("--state", "{empty}"),
    ("--flash", "128K", "--state", "{ws}/damaged.bin"),
)
"""State files a device must refuse: held by another device, damaged, 30 GiB, a device file,
the user's file, a folder, under a file, where none can be made, no name, another geometry."""


@pytest.mark.parametrize("firmware", ["host", "m3"])
@pytest.mark.parametrize("state", BAD_STATE_FILES, ids=lambda a: " ".join(a).replace("{ws}/", ""))
def test_the_c_firmware_refuses_a_state_file_with_the_simulators_words(state, firmware, ws):
    """``device --firmware host`` (and ``m3``, under QEMU) checks and locks its state file as
    the simulator does, before the firmware is built or QEMU looked for: the same one line,
    exit 2, the file left as it was."""
    from tests.conftest import run_cli

    argv = _fill(Case("", ("device", "--pty", *state), ""), ws)
    before = snapshot(ws.path)
    sim = run_in_process(argv)
    host = run_cli(*argv[:1], "--firmware", firmware, *argv[1:], cwd=ws.path, timeout=120)
    assert sim.code == 2 and len(sim.stderr.strip().splitlines()) == 1, sim
    assert (host.returncode, host.stderr) == (sim.code, sim.stderr)
    assert "Traceback" not in host.stderr and host.stdout == ""
    assert snapshot(ws.path) == before


def test_every_command_is_in_the_table():
    from mark1.cli import build_parser

    parser = build_parser()
    commands = set(parser._subparsers._group_actions[0].choices)  # noqa: SLF001
    assert commands <= {c.args[0] for c in CLI_CASES}, commands


# --------------------------------------------------------------------------- public functions


@dataclass(frozen=True)
class ApiCase:
    what: str
    call: str
    """Python expression, evaluated with the names of :func:`_api_names`."""
    says: str
    error: type = ValueError


def A(what: str, call: str, says: str, error: type = ValueError) -> ApiCase:
    return ApiCase(what, call, says, error)


API_CASES: tuple[ApiCase, ...] = (
    A("a string as package bytes", "decode_package('M1WP')", "a package is bytes", TypeError),
    A("no bytes", "decode_package(b'')", "package truncated"),
    A("a PNG as a package", "decode_package(png)", "not a weight package: magic"),
    A("a truncated package", "decode_package(pkg_bytes[:-10])", "package truncated"),
    A("a package with trailing bytes", "decode_package(pkg_bytes + b'x')", "trailing bytes"),
    A("something else to encode", "encode_package('model')", "expected a Package", TypeError),
    A("float inputs to the golden reference", "golden_forward(pkg, np.zeros((1, 400)))",
      "must hold integers", TypeError),
    A("inputs of the wrong width", "golden_forward(pkg, np.zeros((1, 399), np.int8))",
      r"shape \(1, 399\)"),
    A("inputs out of the int8 range", "golden_forward(pkg, np.full((1, 400), 300))",
      r"\[-128, 127\]"),
    A("NaN inputs to quantize", "quantize_input(pkg, np.full((2, 400), np.nan))",
      "NaN or infinity"),
    A("infinite inputs to quantize", "quantize_input(pkg, np.full((2, 400), np.inf))",
      "NaN or infinity"),
    A("strings to quantize", "quantize_input(pkg, np.array([['a'] * 400]))", "real numbers",
      TypeError),
    A("a wrong-sized input to the engine", "Engine(pkg).infer(np.zeros(7, np.int8))",
      r"shape \(7,\)"),
    A("NaN images", "to_retina(np.full((2, 20, 20), np.nan))", "NaN or infinity"),
    A("no images", "to_retina(np.zeros((0, 20, 20)))", "empty"),
    A("images of the wrong rank", "to_retina(np.zeros(5))", r"shape \(5,\)"),
    A("8-bit images", "to_retina(np.full((1, 20, 20), 200.0))", "divide 8-bit images by 255"),
    A("text as images", "to_retina('retina')", "must hold numbers", TypeError),
    A("ragged images", "to_retina([[0.1, 0.2], [0.3]])", "array of images", TypeError),
    A("an unknown task", "make_task('chess')", "chess"),
    A("NaN training images", "MarkI(random_state=0).fit(np.full((4, 400), np.nan), [0, 1, 0, 1])",
      "NaN"),
    A("labels of the wrong length", "MarkI(random_state=0).fit(np.zeros((4, 400)), [0, 1])",
      "4"),
    A("a single class", "MarkI(random_state=0).fit(np.zeros((4, 400)), [1, 1, 1, 1])", "class"),
    A("zero A-units", "MarkI(n_a=0, random_state=0).fit(np.zeros((2, 400)), [0, 1])", "n_a"),
    A("predict before fit", "MarkI().predict(np.zeros((1, 400)))", "fit"),
    A("features outside the light range", "MarkI().fit(np.full((2, 3), 7.0), [0, 1])",
      "scaling='clip' or 'logistic'"),
    A("complex features", "MarkI().fit(np.zeros((2, 3)) + 1j, [0, 1])",
      "Complex data not supported"),
    A("an object that is not a number", "MarkI().fit(np.array([[0.5, {}]] * 2), [0, 1])",
      r"X\[0, 1\] is \{\}", TypeError),
    A("a sparse matrix", "MarkI().fit(sparse.csr_matrix(np.zeros((2, 3))), [0, 1])",
      "sparse input is not supported", TypeError),
    A("continuous labels", "MarkI().fit(np.zeros((3, 3)), [0.1, 0.2, 0.3])", "continuous"),
    A("28x28 images after 8x8 ones",
      "MarkI(n_a=8, random_state=0).fit(np.zeros((2, 8, 8)), [0, 1]).predict(np.zeros((1, 28, "
      "28)))", "fitted on 8x8"),
    A("half a presentation", "MarkI().fit(np.zeros((2, 3)), [0, 1], sample_weight=[0.5, 1])",
      "a whole number >= 0"),
    A("an unknown machine parameter", "MarkI(machine={'gama': 0.6}).fit(np.zeros((2, 3)), [0, 1])",
      "unknown machine parameter 'gama'"),
    A("a PNG as a checkpoint", "load_checkpoint(ws / 'picture.png')", "picture.png"),
    A("a truncated checkpoint", "load_checkpoint(ws / 'truncated.pt')", "truncated.pt"),
    A("a PNG as a machine file", "load_machine(ws / 'picture.png')", "picture.png"),
    A("a machine file with pickled objects", "load_machine(ws / 'pickled.npz')", "pickled.npz"),
    A("a machine file with NaN weights", "load_machine(ws / 'nan_machine.npz')",
      "weights must be finite"),
    A("NaN calibration images", "quantize_mlp(ckpt, np.full((4, 400), np.nan))", "NaN"),
    A("an ONNX graph with a Conv as an MLP", "load_mlp(ws / 'conv.onnx')", r"\(Conv\)"),
    A("features of the wrong width", "feature_rows(np.zeros((5, 30)), (64,), 'X')",
      r"shape \(5, 30\)"),
    A("an unknown export target", "export_bundle(ws / 'mlp.pt', 'jetson-nano', ws / 'x')",
      "jetson-nano"),
    A("a PNG to export", "export_bundle(ws / 'picture.png', 'jetson-tx2', ws / 'x')",
      "PNG image"),
    A("an unknown task to train on", "train_mlp_to_dir(ws / 'x', task='chess')", "chess"),
    A("a NaN learning rate", "train_mlp_to_dir(ws / 'x', task='digits', lr=float('nan'))",
      "lr"),
    A("an empty package to push", "push('loop://', b'')", "package truncated"),
    A("a string to push", "push('loop://', 'model.m1w')", "bytes", TypeError),
    A("zero frames in flight", "LinkSettings(window=0)", "window = 0"),
    A("a NaN timeout", "LinkSettings(timeout_s=float('nan'))", "timeout_s = nan is not a number"),
    A("a baud rate as text", "LinkSettings(baud='fast')", "baud = 'fast' is not a whole number",
      TypeError),
    A("a flash page that is not a power of two", "DeviceConfig(page_bytes=1000)",
      "power of two"),
    A("frames too small", "DeviceConfig(max_payload=10)", "max_payload = 10"),
    A("a flash size as text", "Flash('16K', 512)", "flash size must be an int", TypeError),
    A("a negative baud rate for the line", "LinkTiming(baud=-1)", "baud = -1"),
    A("a bit error rate above 1", "LineFaults(ber=2.0)", "ber = 2.0"),
    A("a hundred million A-units", "MarkI(n_a=100_000_000).fit(np.zeros((2, 400)), [0, 1])",
      "n_a = 100000000 is out of range"),
    A("a machine parameter of 1e308", "CdSCells(gamma=1e308)", r"gamma = 1e\+308 is out of range"),
    A("a baud rate past the fastest UART", "LinkSettings(baud=99_999_999)",
      "baud = 99999999 is out of range"),
    A("a flash larger than the simulator holds", "DeviceConfig(flash_bytes=2**31)",
      "flash_bytes = 2147483648 is out of range"),
    A("zero calibration images", "quantize_file(ws / 'mlp.pt', ws / 'q.m1w', calib=0)",
      "calib = 0 is out of range"),
    A("an output that is the input", "plan(ws / 'mlp.pt', ws / 'mlp.pt')",
      "would overwrite CHECKPOINT"),
    A("an output where none can be made", "plan(ws / 'mlp.pt', '/proc/x')",
      "--out '/proc/x': cannot write there"),
    A("a port URL without a port", "check_port('socket://127.0.0.1')",
      "expected socket://HOST:PORT"),
    A("a 60000 x 60000 PNG", "read_images([str(ws / 'huge.png')])", "60000 x 60000 pixels"),
    A("a device as the flash state", "claim_state_file('/dev/zero', 2048, 256)",
      "not a regular file"),
    A("a sparse 30 GiB flash state", "claim_state_file(ws / 'sparse.bin', 256 * 1024, 2048)",
      "is 32,212,254,720 bytes"),
    A("a flash state another device holds",
      "claim_state_file(ws / 'locked.bin', 256 * 1024, 2048)", "in use by another device"),
)
"""Public functions and what their error must say."""


def _api_names(ws: Path) -> dict[str, Any]:
    from scipy import sparse

    from export.contract.golden import golden_forward, quantize_input
    from export.contract.package import decode_package, encode_package
    from export.int8.quantize import quantize_file, quantize_mlp
    from export.onnx.bundle import export_bundle
    from export.onnx.checkpoint import load_checkpoint
    from export.onnx.mlp import train_mlp_to_dir
    from export.serial.link import check_port
    from export.serial.push import push
    from export.serial.settings import LinkSettings
    from export.sources.dispatch import load_mlp
    from export.sources.user_data import feature_rows
    from firmware_sim.device import DeviceConfig
    from firmware_sim.engine import Engine
    from firmware_sim.flash import Flash, claim_state_file
    from firmware_sim.lossy_link import LineFaults
    from firmware_sim.serve import LinkTiming
    from mark1.images import read_images, to_retina
    from mark1.io import OutputPlan
    from mark1.machine import MarkI, load_machine
    from mark1.retina import CdSCells
    from mark1.stimuli import make_task

    def plan(source: Path, out: str | Path) -> None:
        """A command's plan reading ``source`` and writing ``out``, checked."""
        p = OutputPlan()
        p.read("CHECKPOINT", source)
        p.write_file("--out", out)
        with p:
            pass

    pkg_bytes = (ws / "model.m1w").read_bytes()
    functions = (export_bundle, load_checkpoint, golden_forward, quantize_input,
                 train_mlp_to_dir, decode_package, encode_package, quantize_mlp, LinkSettings,
                 push, DeviceConfig, Engine, Flash, LineFaults, LinkTiming, to_retina, MarkI,
                 load_machine, make_task, quantize_file, check_port, claim_state_file,
                 read_images, CdSCells, plan, load_mlp, feature_rows)
    return {**{f.__name__: f for f in functions}, "np": np, "sparse": sparse, "ws": ws,
            "png": png_bytes(),
            "pkg_bytes": pkg_bytes, "pkg": decode_package(pkg_bytes),
            "ckpt": load_checkpoint(ws / "mlp.pt")}


def api_answer(case: ApiCase, names: dict[str, Any]) -> BaseException | None:
    try:
        eval(case.call, {}, dict(names))  # noqa: S307 - our own table
    except Exception as exc:  # noqa: BLE001 - what it raised is the answer
        return exc
    return None


@pytest.fixture(scope="module")
def api_names(ws) -> dict[str, Any]:
    return _api_names(ws.path)


@pytest.mark.parametrize("case", API_CASES, ids=lambda c: c.what)
def test_public_functions_name_the_problem(case, api_names, ws):
    before = snapshot(ws.path)
    exc = api_answer(case, api_names)
    assert isinstance(exc, case.error), (case.call, repr(exc))
    text = str(exc)
    assert text and "\n" not in text.strip(), text
    assert re.search(case.says, text), (case.call, text)
    assert snapshot(ws.path) == before


# --------------------------------------------------------------------------- the table


def _short(text: str, ws: Workspace) -> str:
    text = text.replace(str(ws.path) + "/", "").replace(str(ws.path), ".")
    for url, name in ((ws.device, "/dev/pts/N"), (ws.busy_pty, "/dev/pts/M"),
                      (ws.busy_tcp, "socket://127.0.0.1:PORT"),
                      (ws.busy_listen, "127.0.0.1:PORT"),
                      (ws.closed_tcp, "socket://127.0.0.1:CLOSED")):
        text = text.replace(url, name)
    text = text.replace(f"('127.0.0.1', {ws.busy_listen.rpartition(':')[2]})",
                        "('127.0.0.1', PORT)")
    text = re.sub(r"^mark1( [\w-]+)*: error: ", "", text)
    return text.replace("|", "\\|")


def markdown(root: Path) -> str:
    """The table of every case and its answer, run now."""
    rows = ["| command | what was tried | exit | answer (stderr, one line) |",
            "|---|---|---:|---|"]
    with workspace(root) as ws:
        cwd = os.getcwd()
        os.chdir(ws.path)
        try:
            for case in CLI_CASES:
                before = snapshot(ws.path)
                ans = run_in_process(_fill(case, ws))
                same = snapshot(ws.path) == before
                line = _short(ans.line, ws) + ("" if same else " **(files changed!)**")
                args = " ".join(_short(a, ws) or "''" for a in _fill(case, ws))
                rows.append(f"| `mark1 {args}` | {case.what} | {ans.code} | {line} |")
        finally:
            os.chdir(cwd)
        names = _api_names(ws.path)
        rows += ["", "| function | what was tried | raises |", "|---|---|---|"]
        for case in API_CASES:
            exc = api_answer(case, names)
            said = "nothing" if exc is None else f"`{type(exc).__name__}`: " + _short(
                str(exc), ws)
            rows.append(f"| `{case.call}` | {case.what} | {said} |")
    return "\n".join(rows) + "\n"


BEGIN, END = "<!-- bad-input:begin -->\n", "<!-- bad-input:end -->"
"""Markers of the generated table in ``docs/RELIABILITY.md``."""
DOC = ROOT / "docs" / "RELIABILITY.md"


def shown_args(case: Case) -> str:
    """The command line of ``case`` as the table shows it."""
    fake = Workspace(Path("WS"), "/dev/pts/N", "/dev/pts/M", "socket://127.0.0.1:PORT",
                     "socket://127.0.0.1:CLOSED")
    return " ".join(a.replace("WS/", "") or "''" for a in _fill(case, fake))


def test_the_table_in_the_doc_has_every_case():
    doc = DOC.read_text()
    table = doc[doc.index(BEGIN) : doc.index(END)]
    for case in CLI_CASES:
        assert f"| `mark1 {shown_args(case)}` | {case.what} | {case.code} |" in table, case
    for case in API_CASES:
        assert f"| `{case.call}` | {case.what} |" in table, case


def main(argv: list[str] | None = None) -> int:
    import tempfile

    ap = argparse.ArgumentParser(description="Run the bad-input table.")
    ap.add_argument("--markdown", action="store_true", help="print the table as markdown")
    ap.add_argument("--update", action="store_true",
                    help=f"write it, and the ranges table, into {DOC.relative_to(ROOT)} "
                    "between their markers")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        table = markdown(Path(tmp))
    if args.markdown:
        print(table, end="")
    if args.update:
        from mark1.io import atomic_write_text
        from tests import test_limits

        doc = DOC.read_text()
        for begin, end, text in ((BEGIN, END, table),
                                 (test_limits.BEGIN, test_limits.END, test_limits.markdown())):
            start, stop = doc.index(begin) + len(begin), doc.index(end)
            doc = doc[:start] + text + doc[stop:]
        atomic_write_text(DOC, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
