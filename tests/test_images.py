"""Images onto the retina: resampling, accepted shapes, and bad images named."""

from __future__ import annotations

import numpy as np
import pytest

from mark1.images import check_images, grid_shape, lay_out, resample, to_light, to_retina


def test_resampling_keeps_each_images_mean_light_and_leaves_20x20_alone():
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


def test_the_retina_takes_flat_and_square_images_of_any_size():
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
def test_bad_images_are_refused_with_what_is_wrong(bad, message):
    with pytest.raises((ValueError, TypeError), match=None) as info:
        check_images(bad)
    assert message in str(info.value)


def test_features_are_laid_out_on_the_smallest_near_square_grid():
    shapes = {k: grid_shape(k) for k in (1, 2, 3, 10, 64, 400, 401, 784)}
    assert shapes == {1: (1, 1), 2: (1, 2), 3: (2, 2), 10: (3, 4), 64: (8, 8), 400: (20, 20),
                      401: (20, 21), 784: (28, 28)}
    for k, (h, w) in shapes.items():
        assert h * w >= k > (h - 1) * w  # no empty row
    light = lay_out(np.arange(1, 11, dtype=float)[None] / 10, (3, 4))
    np.testing.assert_array_equal(light[0], [[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8],
                                             [0.9, 1.0, 0.0, 0.0]])


def test_scalings_give_light_levels_in_0_to_1_from_any_finite_value():
    x = np.array([[-1e308, -800.0, -1.0, 0.0, 0.25, 1.0, 3.0, 800.0, 1e308]])
    with np.errstate(all="raise"):  # no overflow on the way
        logistic = to_light(x, "logistic")
    np.testing.assert_allclose(logistic[0, 2:7], 1 / (1 + np.exp(-x[0, 2:7])), rtol=1e-15)
    assert logistic[0, 0] == 0.0 and logistic[0, -1] == 1.0
    np.testing.assert_array_equal(to_light(x, "clip"), [[0, 0, 0, 0, 0.25, 1, 1, 1, 1]])
    np.testing.assert_array_equal(to_light(x[:, 3:6], "none"), x[:, 3:6])  # as they are
    with pytest.raises(ValueError, match=r"got range \[-1e\+308, 1e\+308\]"):
        to_light(x, "none")
