"""Training MLPs on the retina tasks: determinism, XOR, the checkpoint and the run folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from export.onnx.checkpoint import load_checkpoint
from export.onnx.cli import parse_hidden
from export.onnx.mlp import build_module, retina_inputs, train_mlp, train_mlp_to_dir
from mark1.stimuli import make_task
from tests.conftest import run_cli_on_terminal


def test_parse_hidden():
    assert parse_hidden("64,32") == (64, 32)
    assert parse_hidden(" 8 ") == (8,)
    assert parse_hidden("none") == parse_hidden("") == ()
    for bad in ("64,,32", "a", "-3", "4.5"):
        with pytest.raises(ValueError, match="hidden layer sizes must be positive"):
            parse_hidden(bad)
    for bad in ("64,0", "0", "100000000"):  # zero is no size: "none" means no hidden layer
        with pytest.raises(ValueError, match=r"size \d+ in .* is out of range.*none for no"):
            parse_hidden(bad)
    with pytest.raises(ValueError, match="17 hidden layers"):
        parse_hidden(",".join(["4"] * 17))


def test_same_seed_same_weights_other_seed_other_weights():
    kw = dict(task="left-right", hidden=(16,), epochs=3, n_train=40, n_test=20, progress=False)
    a, b, c = train_mlp(seed=3, **kw), train_mlp(seed=3, **kw), train_mlp(seed=4, **kw)
    for wa, wb in zip(a.weights + a.biases, b.weights + b.biases):
        np.testing.assert_array_equal(wa, wb)
    assert a.metrics["loss_curve"] == b.metrics["loss_curve"]
    assert not np.array_equal(a.weights[0], c.weights[0])


def test_xor_needs_a_hidden_layer():
    """The four XOR points: 100 % with a hidden layer, at most 3 of 4 with a single layer."""
    mlp = train_mlp("xor", hidden=(8,), epochs=60, seed=0, progress=False)
    single = train_mlp("xor", hidden=(), epochs=60, seed=0, progress=False)
    assert mlp.metrics["n_train"] == 4 and mlp.task_options == {"n_train": 4, "noise": 0.0}
    assert mlp.metrics["train_accuracy"] == 1.0 and mlp.metrics["test_accuracy"] == 1.0
    assert single.metrics["train_accuracy"] <= 0.75
    assert single.layer_sizes == [400, 2]


def test_label_smoothing_keeps_logits_within_float16_reach():
    """Without smoothing the logits of separable data grow on; with it they settle near the
    smoothed optimum (two classes, eps = 0.1: a gap of log(0.95 / 0.05), about 2.9)."""
    task = make_task("e-f", seed=0, n_train=100, n_test=20)
    X = retina_inputs(task.X_train)
    peaks = {}
    for eps in (0.0, 0.1):
        ckpt = train_mlp("e-f", hidden=(32,), epochs=60, n_train=100, n_test=20,
                         label_smoothing=eps, progress=False)
        logits = ckpt.forward(X)
        assert ckpt.metrics["train_accuracy"] == 1.0
        assert ckpt.metrics["label_smoothing"] == eps
        peaks[eps] = float(np.abs(logits[:, 0] - logits[:, 1]).max())
    assert peaks[0.1] < 6.0 < 2 * peaks[0.1] < peaks[0.0]


def test_module_computes_the_checkpoint_logits():
    ckpt = train_mlp("left-right", hidden=(12, 6), epochs=2, n_train=30, n_test=10,
                     progress=False)
    X = retina_inputs(make_task("left-right", seed=9, n_train=5, n_test=5).X_test)
    import torch

    with torch.no_grad():
        logits = build_module(ckpt)(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(logits, ckpt.forward(X), atol=1e-5)
    assert ckpt.layer_sizes == [400, 12, 6, 2] and ckpt.classes == ["left", "right"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"epochs": 0}, "epochs = 0 is out of range (allowed: whole numbers 1 to"),
        ({"lr": -1.0}, "lr = -1.0 is out of range (allowed: (0, 10])"),
        ({"lr": float("nan")}, "lr = nan is not a number"),
        ({"batch_size": 2.5}, "batch_size = 2.5 is not a whole number"),
        ({"hidden": (8, 0)}, "hidden[1] = 0 is out of range"),
        ({"task": "chess"}, "unknown task 'chess'"),
        ({"label_smoothing": 1.0}, "label_smoothing = 1.0 is out of range (allowed: [0, 1))"),
        ({"hidden": (65536, 65536)}, "would need about"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    args = {"task": "xor", "epochs": 1, "progress": False, **kwargs}
    with pytest.raises((ValueError, TypeError)) as info:
        train_mlp(**args)
    assert message in str(info.value)


def test_run_folder_holds_checkpoint_report_and_figure(tmp_path):
    out = tmp_path / "run"
    report = train_mlp_to_dir(out, task="xor", hidden=(8,), epochs=40, seed=2, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["mlp.pt", "report.json", "training.png"]
    on_disk = json.loads((out / "report.json").read_text())
    for key in ("train_accuracy", "test_accuracy", "loss_curve", "epochs", "wall_time_s"):
        assert key in on_disk
    assert on_disk["epochs"] == 40 and len(on_disk["loss_curve"]) == 40
    assert on_disk["loss_curve"][-1] < on_disk["loss_curve"][0]
    assert report["test_accuracy"] == on_disk["test_accuracy"]
    assert (out / "training.png").read_bytes().startswith(b"\x89PNG")
    ckpt = load_checkpoint(out / "mlp.pt")
    assert ckpt.task == "xor" and ckpt.seed == 2 and ckpt.task_options["noise"] == 0.0
    assert ckpt.metrics["train_accuracy"] == on_disk["train_accuracy"]


def test_cli_trains_and_refuses_bad_input(cli, tmp_path):
    out = tmp_path / "run"
    res = run_cli_on_terminal("train-mlp", "--task", "xor", "--hidden", "8", "--epochs", "30",
                              "--seed", "1", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "train-mlp xor: layers 400-8-2" in res.stdout
    assert "epoch" in res.stderr and "\r" in res.stderr  # the progress bar, on a terminal
    assert (out / "mlp.pt").is_file()
    for args, message in [
        (("--hidden", "64,x"), "hidden layer sizes must be positive whole numbers"),
        (("--task", "chess"), "unknown task 'chess'"),
    ]:
        bad_out = tmp_path / "bad"
        res = cli("train-mlp", "--epochs", "1", "--out", str(bad_out), *args)
        assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
        assert message in res.stderr and "Traceback" not in res.stderr
        assert not bad_out.exists()
