"""Images onto the retina, task generation, atomic output and the CLI's manners."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from mark1.images import check_images, resample, to_retina
from mark1.io import staged_output_dir, write_json
from mark1.stimuli import TASKS, make_task
from tests.conftest import ROOT


def test_resample_preserves_mean_light_and_identity():
    rng = np.random.default_rng(0)
    img = rng.uniform(size=(3, 8, 8))
    out = resample(img, (20, 20))
    # area projection conserves the mean illuminance of each image
    np.testing.assert_allclose(out.mean(axis=(1, 2)), img.mean(axis=(1, 2)), rtol=1e-12)
    same = rng.uniform(size=(2, 20, 20))
    np.testing.assert_array_equal(resample(same), same)
    # a 40x40 image of 2x2 blocks averages each block into its cell
    big = np.kron(same, np.ones((2, 2)))
    np.testing.assert_allclose(resample(big), same, atol=1e-12)


def test_to_retina_accepts_flat_and_square_shapes():
    x = np.linspace(0, 1, 400)
    np.testing.assert_array_equal(to_retina(x[None, :]), x.reshape(1, 20, 20))
    assert to_retina(np.zeros((5, 28, 28))).shape == (5, 20, 20)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((3, 64)), "400 columns"),
        (np.zeros(400), "expected"),
        (np.zeros((0, 20, 20)), "empty"),
        (np.full((1, 400), np.nan), "NaN"),
        (np.full((1, 400), 255.0), "divide 8-bit images by 255"),
        (np.full((1, 400), -0.5), "[0, 1]"),
        (np.array([["a"] * 400]), "numbers"),
    ],
)
def test_bad_images_are_named(bad, message):
    with pytest.raises((ValueError, TypeError), match=None) as info:
        check_images(bad)
    assert message in str(info.value)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_tasks_are_seeded_labelled_and_in_range(name):
    kwargs = {} if name == "digits" else {"n_train": 30, "n_test": 20}
    a = make_task(name, seed=5, **kwargs)
    b = make_task(name, seed=5, **kwargs)
    c = make_task(name, seed=6, **kwargs)
    np.testing.assert_array_equal(a.X_train, b.X_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.X_train, c.X_train)
    for X, y in ((a.X_train, a.y_train), (a.X_test, a.y_test)):
        assert X.shape[1:] == (20, 20) and X.shape[0] == y.shape[0]
        assert X.min() >= 0.0 and X.max() <= 1.0
        assert y.min() >= 0 and y.max() < len(a.classes)
    # every class appears in training (balanced generators; digits has all ten)
    assert len(np.unique(a.y_train)) == min(len(a.classes), a.n_train)


def test_test_set_does_not_depend_on_training_size():
    a = make_task("square-circle", seed=1, n_train=10, n_test=15)
    b = make_task("square-circle", seed=1, n_train=40, n_test=15)
    np.testing.assert_array_equal(a.X_test, b.X_test)


def test_shapes_have_equal_light_so_brightness_gives_nothing_away():
    t = make_task("square-circle", seed=0, n_train=400, n_test=1)
    light = t.X_train.sum(axis=(1, 2))
    sq, ci = light[t.y_train == 0].mean(), light[t.y_train == 1].mean()
    assert abs(sq - ci) / sq < 0.05


def test_letter_holes_are_dark():
    t = make_task("letters", seed=0, n_train=26, n_test=1, typefaces=("sans",), shift=0.0,
                  height=(14.0, 14.0))
    o = t.X_train[t.y_train == t.classes.index("O")][0]
    assert o[10, 10] == 0.0  # the counter of the O, at the centre of the retina
    assert o.max() == 1.0


def test_xor_is_the_four_points_without_noise():
    t = make_task("xor", seed=0, n_train=8, n_test=4, noise=0.0)
    left, right = t.X_train[:, 0, 0], t.X_train[:, 0, -1]
    np.testing.assert_array_equal(t.y_train, (left != right).astype(int))
    assert {(int(a), int(b)) for a, b in zip(left, right)} == {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_unknown_task_and_bad_sizes():
    with pytest.raises(ValueError, match="unknown task 'nope'; allowed: left-right"):
        make_task("nope")
    with pytest.raises(ValueError, match="n_train must be a positive"):
        make_task("xor", n_train=0)


def test_staged_output_keeps_user_files_and_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with staged_output_dir(out) as stage:
        write_json(stage / "report.json", {"a": np.int64(1), "b": np.arange(2)})
    assert (out / "report.json").read_text().count('"a": 1') == 1
    assert (out / "mine.txt").read_text() == "keep me"
    with pytest.raises(RuntimeError):
        with staged_output_dir(tmp_path / "failed") as stage:
            (stage / "half.json").write_text("{")
            raise RuntimeError("boom")
    assert not (tmp_path / "failed").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


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


def test_cli_usage_error_is_one_line(cli):
    res = cli("tasks", "--bogus")
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "unrecognized arguments: --bogus" in res.stderr


def test_atomic_files_get_the_usual_mode(tmp_path):
    import os

    from mark1.io import atomic_write_bytes

    mask = os.umask(0o022)
    try:
        p = atomic_write_bytes(tmp_path / "a.bin", b"x")
    finally:
        os.umask(mask)
    assert (p.stat().st_mode & 0o777) == 0o644
    assert [q.name for q in tmp_path.iterdir()] == ["a.bin"]
