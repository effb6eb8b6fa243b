"""MarkI among scikit-learn's tools: its own estimator checks, pipelines with scalers and PCA,
cross-validation, a grid search over a machine parameter, and bad input named."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.decomposition import PCA
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from mark1.machine import MarkI

# The instances checked: scikit-learn's checks feed arbitrary real numbers (blobs, iris,
# uniform noise times 3), which a Mark I takes only with a rule that makes them light levels;
# its default (scaling="none") refuses values outside [0, 1] (tested below). Small machines
# and few passes keep the checks to seconds.
CHECKED = [
    MarkI(preset="ideal", n_a=64, max_iter=5, random_state=0, scaling="logistic"),
    MarkI(preset="cds-1960", n_a=64, max_iter=3, random_state=0, scaling="clip"),
    MarkI(preset="cds-worn", raw=True, rule="forced-response", max_iter=2, random_state=0,
          scaling="clip"),
]


def expected_failed_checks(estimator: MarkI) -> dict[str, str]:
    """The checks that contradict what a Mark I is, with the reason."""
    return {
        "check_sample_weight_equivalence_on_dense_data": (
            "a perceptron learns trial by trial, so the order of presentation matters: "
            "integer weights present each sample that many times and equal repeating it in "
            "place (test_integer_weights_are_repeated_presentations), but this check also "
            "shuffles the weighted samples; scikit-learn's Perceptron and SGDClassifier are "
            "expected to fail it for the same reason"
        ),
    }


_STRICT = ({"xfail_strict": True}  # scikit-learn >= 1.8: a check listed that passes fails
           if "xfail_strict" in inspect.signature(parametrize_with_checks).parameters else {})
# MarkI has scikit-learn's interface without inheriting from its BaseEstimator (importing
# mark1 must not import scikit-learn), which the checks warn about.
_NOT_INHERITED = "Estimator MarkI does not inherit"

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", _NOT_INHERITED, UserWarning)
    _CHECKS = parametrize_with_checks(CHECKED, expected_failed_checks=expected_failed_checks,
                                      **_STRICT)


@_CHECKS
@pytest.mark.filterwarnings(f"ignore:{_NOT_INHERITED}:UserWarning")
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X, y, train_size=600, test_size=300, random_state=0, stratify=y)


def test_pipelines_with_scalers_and_pca_fit_and_predict(digits):
    X_train, X_test, y_train, y_test = digits
    pipelines = {
        "standard": make_pipeline(StandardScaler(), MarkI(scaling="logistic", random_state=0)),
        "minmax": make_pipeline(MinMaxScaler(), MarkI(scaling="clip", random_state=0)),
        "pca": make_pipeline(PCA(n_components=16, whiten=True, random_state=0),
                             MarkI(scaling="logistic", random_state=0)),
    }
    for name, pipe in pipelines.items():
        pipe.fit(X_train, y_train)
        machine = pipe[-1]
        assert machine.n_features_in_ == (16 if name == "pca" else 64)
        assert machine.input_shape_ == ((4, 4) if name == "pca" else (8, 8))
        assert pipe.predict(X_test).shape == (300,)
        assert pipe.score(X_test, y_test) > 0.75, name  # ten digits: chance is 0.1
    # MinMaxScaler fitted on the training images gives new images values above 1: clipped
    scaled = pipelines["minmax"][0].transform(X_test * 1.5)
    assert scaled.max() > 1.0
    assert pipelines["minmax"].predict(X_test * 1.5).shape == (300,)


def test_cross_val_score_and_a_grid_search_over_a_machine_parameter():
    X, y = load_breast_cancer(return_X_y=True)
    X, y = X[:240], y[:240]
    model = make_pipeline(StandardScaler(),
                          MarkI(n_a=128, max_iter=5, scaling="logistic", random_state=0))
    scores = cross_val_score(model, X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.85
    search = GridSearchCV(model, {"marki__machine__stuck_fraction": [0.0, 0.5, 0.99]}, cv=3)
    search.fit(X, y)
    stuck = [p["marki__machine__stuck_fraction"] for p in search.cv_results_["params"]]
    assert stuck == [0.0, 0.5, 0.99]
    means = search.cv_results_["mean_test_score"]
    assert means[2] < 0.65 < 0.85 < min(means[:2])  # with 99 % of the wipers stuck, near chance
    best = search.best_estimator_[-1]
    assert best.machine == {"stuck_fraction": search.best_params_["marki__machine__stuck_fraction"]}
    assert best.preset_.pots.stuck_fraction == best.machine["stuck_fraction"] < 0.99
    assert model[-1].machine is None  # the searched estimator itself is untouched
    # a value the part does not allow fails its fits with the part's message
    with pytest.raises(ValueError,
                       match=r"pots: stuck_fraction = 1.0 is out of range \(allowed: \[0, 1\)\)"):
        GridSearchCV(model, {"marki__machine__stuck_fraction": [1.0]}, cv=3,
                     error_score="raise").fit(X, y)


def test_input_shape_lays_out_flat_pictures_and_the_grid_rule_lays_out_features():
    rng = np.random.default_rng(0)
    pictures = rng.uniform(size=(30, 10, 30))
    y = np.arange(30) % 2
    a = MarkI(preset="ideal", n_a=64, max_iter=2, random_state=0).fit(pictures, y)
    b = MarkI(preset="ideal", n_a=64, max_iter=2, random_state=0,
              input_shape=(10, 30)).fit(pictures.reshape(30, 300), y)
    assert a.input_shape_ == b.input_shape_ == (10, 30)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    np.testing.assert_array_equal(a.predict(pictures), b.predict(pictures.reshape(30, 300)))
    with pytest.raises(ValueError, match=r"X has 300 features, but input_shape=\(20, 20\) "
                                         "lays out 400"):
        MarkI(input_shape=(20, 20)).fit(pictures.reshape(30, 300), y)
    with pytest.raises(ValueError, match="X holds 10x30 images, but input_shape is 30x10"):
        MarkI(input_shape=(30, 10)).fit(pictures, y)
    with pytest.raises(TypeError, match="input_shape must be None or \\(rows, columns\\)"):
        MarkI(input_shape=400).fit(pictures, y)

    # ten features: a 3 x 4 grid, row by row, the last two cells dark
    features = np.tile(np.linspace(0.1, 1.0, 10), (4, 1))
    m = MarkI(preset="ideal", n_a=16, max_iter=1, random_state=0).fit(features, [0, 1, 0, 1])
    assert m.input_shape_ == (3, 4)
    light = m.to_retina(features[:1])[0]
    assert light.shape == (20, 20)
    assert light[0, 0] == pytest.approx(0.1) and light[-1, -1] == 0.0
    # the projection keeps the picture's mean light: ten features and two dark cells
    assert light.mean() == pytest.approx(features[0].sum() / 12)


def test_scaling_turns_any_real_values_into_light():
    X = np.array([[-3.0, 0.0], [0.5, 7.0]])
    y = [0, 1]
    logistic = MarkI(preset="ideal", n_a=8, max_iter=1, random_state=0, scaling="logistic")
    light = logistic.fit(X, y).to_retina(X)
    np.testing.assert_allclose(light[:, 0, 0], 1 / (1 + np.exp(-X[:, 0])))  # left half
    np.testing.assert_allclose(light[:, 0, -1], 1 / (1 + np.exp(-X[:, 1])))  # right half
    clip = MarkI(preset="ideal", n_a=8, max_iter=1, random_state=0, scaling="clip").fit(X, y)
    np.testing.assert_array_equal(clip.to_retina(X)[:, 0, [0, -1]], [[0.0, 0.0], [0.5, 1.0]])
    with pytest.raises(ValueError, match=r"X values must be relative illuminance in \[0, 1\]; "
                                         r"got range \[-3, 7\]; for features of another range "
                                         "set scaling='clip' or 'logistic'"):
        MarkI().fit(X, y)
    with pytest.raises(ValueError, match="unknown scaling 'minmax'; allowed: none, clip, "
                                         "logistic"):
        MarkI(scaling="minmax").fit(X, y)


def test_integer_weights_are_repeated_presentations():
    rng = np.random.default_rng(1)
    X, y = rng.uniform(size=(15, 30)), rng.integers(0, 3, size=15)
    w = rng.integers(0, 4, size=15)
    for preset in ("ideal", "cds-1960"):  # cells that settle at once, and cells that lag
        weighted = MarkI(preset=preset, n_a=64, max_iter=3, random_state=0).fit(
            X, y, sample_weight=w)
        repeated = MarkI(preset=preset, n_a=64, max_iter=3, random_state=0).fit(
            np.repeat(X, w, axis=0), np.repeat(y, w))
        np.testing.assert_array_equal(weighted.coef_, repeated.coef_)
        assert weighted.machine_time_s == repeated.machine_time_s
        assert weighted.history_["trials"] == repeated.history_["trials"] == [w.sum()] * 3
    ones = MarkI(preset="cds-1960", n_a=64, max_iter=2, random_state=0)
    plain = MarkI(preset="cds-1960", n_a=64, max_iter=2, random_state=0).fit(X, y)
    np.testing.assert_array_equal(ones.fit(X, y, sample_weight=np.ones(15)).coef_, plain.coef_)
    again = MarkI(preset="ideal", n_a=64, random_state=0).partial_fit(
        X, y, classes=[0, 1, 2], sample_weight=w)
    assert again.history_["trials"] == [w.sum()]


@pytest.mark.parametrize("weights, message", [
    (np.full(15, 0.5), r"sample_weight\[0\] is 0.5: a weight is how many times a sample is "
                       "presented in each pass, a whole number >= 0"),
    (-np.ones(15), r"sample_weight\[0\] is -1"),
    (np.zeros(15), "sample_weight is zero for every sample: nothing to present"),
    (np.ones(16), r"sample_weight has shape \(16,\); expected \(15,\): one weight per sample"),
    (np.full(15, 1e9), "sample_weight asks for 15,000,000,000 presentations in each pass; at "
                       "most 10,000,000"),
])
def test_weights_that_are_not_presentations_are_refused(weights, message):
    X, y = np.random.default_rng(1).uniform(size=(15, 30)), np.arange(15) % 2
    with pytest.raises(ValueError, match=message):
        MarkI().fit(X, y, sample_weight=weights)


@pytest.fixture(scope="module")
def fitted():
    X = np.random.default_rng(0).uniform(size=(20, 8, 8))
    return MarkI(preset="ideal", n_a=32, max_iter=2, random_state=0).fit(X, np.arange(20) % 2)


def test_bad_input_is_refused_naming_the_value_and_what_is_allowed(fitted):
    from scipy import sparse

    y = np.arange(20) % 2
    good = np.random.default_rng(0).uniform(size=(20, 64))
    cases = [
        (good + 1j, ValueError, "Complex data not supported: X has dtype complex128; light "
                                "levels are real numbers"),
        (np.where(np.eye(20, 64) > 0, {"a": 1}, good.astype(object)), TypeError,
         r"X must hold numbers; X\[0, 0\] is \{'a': 1\} \(float\(\) argument must be"),
        (sparse.csr_matrix(good), TypeError,
         r"X is a sparse csr_matrix: sparse input is not supported .* \(X.toarray\(\)\)"),
        (np.array([["a"] * 64] * 20), TypeError, "X must hold numbers; got dtype <U1"),
        (good[0], ValueError, r"X has shape \(64,\): expected 2-D \(n_samples, n_features\) or "
                              r"images \(n, h, w\). Reshape your data"),
        ([[0.5, 0.5], [0.5]], ValueError, "X must be an array of numbers of one shape"),
    ]
    for X, kind, message in cases:
        with pytest.raises(kind, match=message):
            MarkI().fit(X, y)
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        MarkI().fit(good, np.linspace(0, 1, 20))
    with pytest.raises(ValueError, match=r"y should be a 1d array, got an array of shape "
                                         r"\(20, 2\)"):
        MarkI().fit(good, np.ones((20, 2)))
    with pytest.raises(ValueError, match="MarkI requires y to be passed"):
        MarkI().fit(good, None)
    # after fitting on 8 x 8 pictures, 28 x 28 ones and other feature counts are refused
    with pytest.raises(ValueError, match="X holds 28x28 images, but this MarkI was fitted on "
                                         r"8x8 \(64 features\)"):
        fitted.predict(np.zeros((2, 28, 28)))
    with pytest.raises(ValueError, match="X has 784 features, but MarkI is expecting 64"):
        fitted.predict(np.zeros((2, 784)))
    with pytest.raises(ValueError, match="X has 784 features, but MarkI is expecting 64"):
        fitted.partial_fit(np.zeros((2, 784)), [0, 1])
    assert fitted.predict(np.zeros((2, 64))).shape == (2,)  # the same pictures, flat


def test_a_column_of_labels_is_taken_with_a_warning(fitted):
    from sklearn.exceptions import DataConversionWarning

    X = np.random.default_rng(0).uniform(size=(20, 8, 8))
    with pytest.warns(DataConversionWarning):
        column = MarkI(preset="ideal", n_a=32, max_iter=2, random_state=0).fit(
            X, (np.arange(20) % 2)[:, None])
    np.testing.assert_array_equal(column.coef_, fitted.coef_)


def test_machine_parameters_by_name_still_work_deprecated():
    with pytest.warns(DeprecationWarning, match=r"use MarkI\(machine=\{'read_noise': 0.01\}\)"):
        old = MarkI(n_a=8, read_noise=0.01)
    assert old.machine == {"read_noise": 0.01} and old.get_params()["machine__read_noise"] == 0.01
    with pytest.warns(DeprecationWarning, match=r"use set_params\(machine__gamma=0.6\)"):
        old.set_params(gamma=0.6)
    assert old.machine == {"read_noise": 0.01, "gamma": 0.6}
    assert old.machine_preset().cells.gamma == 0.6


def test_scores_come_from_decision_function_for_there_are_no_probabilities():
    """A perceptron's R-units are on or off: no predict_proba; scorers that rank samples
    (ROC AUC) use the R-units' sums through decision_function."""
    X, y = load_breast_cancer(return_X_y=True)
    model = make_pipeline(StandardScaler(),
                          MarkI(n_a=128, max_iter=5, scaling="logistic", random_state=0))
    assert not hasattr(model[-1], "predict_proba")
    auc = cross_val_score(model, X[:240], y[:240], cv=3, scoring="roc_auc")
    assert auc.mean() > 0.9
