"""The retina tasks: seeded, labelled, in range, and free of give-aways."""

from __future__ import annotations

import numpy as np
import pytest

from mark1.stimuli import TASKS, make_task


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_is_seeded_labelled_and_in_range(name):
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


def test_the_test_set_does_not_depend_on_the_training_size():
    a = make_task("square-circle", seed=1, n_train=10, n_test=15)
    b = make_task("square-circle", seed=1, n_train=40, n_test=15)
    np.testing.assert_array_equal(a.X_test, b.X_test)


def test_shapes_have_equal_light_so_brightness_gives_nothing_away():
    t = make_task("square-circle", seed=0, n_train=400, n_test=1)
    light = t.X_train.sum(axis=(1, 2))
    sq, ci = light[t.y_train == 0].mean(), light[t.y_train == 1].mean()
    assert abs(sq - ci) / sq < 0.05


def test_the_holes_of_letters_are_dark():
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


def test_an_unknown_task_and_bad_sizes_are_named():
    with pytest.raises(ValueError, match="unknown task 'nope'; allowed: left-right"):
        make_task("nope")
    with pytest.raises(ValueError, match=r"n_train = 0 is out of range \(allowed: whole numbers"):
        make_task("xor", n_train=0)
