"""The MarkI estimator: the XOR argument, determinism, the estimator contract, the machine file."""

from __future__ import annotations

import numpy as np
import pytest

from mark1.machine import MarkI, load_machine, save_machine
from mark1.stimuli import make_task


@pytest.fixture(scope="module")
def xor_task():
    return make_task("xor", seed=0, n_train=120, n_test=80)


@pytest.fixture(scope="module")
def ef_task():
    return make_task("e-f", seed=1, n_train=60, n_test=60)


def small(**kw: object) -> MarkI:
    params: dict[str, object] = {"n_a": 96, "random_state": 0, "max_iter": 5}
    params.update(kw)
    return MarkI(**params)


@pytest.mark.parametrize("preset", ["ideal", "cds-1960"])
def test_raw_perceptron_cannot_fit_xor_but_the_a_units_can(xor_task, preset):
    t = xor_task
    raw = MarkI(preset=preset, raw=True, random_state=0, max_iter=30).fit(t.X_train, t.y_train)
    assert raw.score(t.X_train, t.y_train) <= 0.8
    assert min(raw.mistakes_per_epoch_) > 0  # never an error-free pass
    a = MarkI(preset=preset, n_a=512, random_state=0, max_iter=30).fit(t.X_train, t.y_train)
    assert a.score(t.X_train, t.y_train) >= (1.0 if preset == "ideal" else 0.97)
    assert a.score(t.X_test, t.y_test) >= 0.95


def test_same_seed_same_machine_other_seed_other_machine(ef_task):
    t = ef_task
    a = small(preset="cds-1960").fit(t.X_train, t.y_train)
    b = small(preset="cds-1960").fit(t.X_train, t.y_train)
    c = small(preset="cds-1960", random_state=1).fit(t.X_train, t.y_train)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    np.testing.assert_array_equal(a.decision_function(t.X_test), b.decision_function(t.X_test))
    assert a.machine_time_s == b.machine_time_s and a.motor_steps == b.motor_steps
    assert not np.array_equal(a.coef_, c.coef_)


def test_images_of_any_size_are_projected_and_predict_takes_the_size_fitted_on(ef_task):
    t = ef_task
    m = small(preset="ideal").fit(t.X_train.reshape(60, 400), t.y_train)
    np.testing.assert_array_equal(m.predict(t.X_test.reshape(60, 400)), m.predict(t.X_test))
    big = small(preset="ideal").fit(np.kron(t.X_train, np.ones((2, 2))), t.y_train)
    assert big.n_features_in_ == 1600 and big.input_shape_ == (40, 40)
    # 40 x 40 pictures of 2 x 2 blocks light the cells as the 20 x 20 ones: the same machine
    np.testing.assert_array_equal(big.coef_, m.coef_)
    np.testing.assert_array_equal(big.predict(np.kron(t.X_test, np.ones((2, 2)))),
                                  m.predict(t.X_test))
    with pytest.raises(ValueError, match="X holds 40x40 images, but this MarkI was fitted on "
                                         "20x20 \\(400 features\\)"):
        m.predict(np.kron(t.X_test, np.ones((2, 2))))
    with pytest.raises(ValueError, match="X has 400 features, but MarkI is expecting 1600"):
        big.predict(t.X_test.reshape(60, 400))


def test_fitted_attributes(ef_task):
    t = ef_task
    m = small(preset="cds-1960", n_r=8).fit(t.X_train, t.y_train)
    assert m.coef_.shape == (8, 96) and m.intercept_.shape == (8,)
    assert m.n_iter_ == len(m.mistakes_per_epoch_) <= 5
    np.testing.assert_array_equal(m.classes_, [0, 1])
    assert m.n_features_in_ == 400 and m.input_shape_ == (20, 20)
    assert np.all(np.abs(m.coef_) <= 1.1)  # pots between their end stops


@pytest.mark.parametrize("X, message", [
    (np.full((4, 20, 20), np.nan), "X contains NaN (first in sample 0, feature 0)"),
    (np.zeros(400), "Reshape your data"),
    (np.full((4, 400), 2.0), "relative illuminance in [0, 1]; got range [2, 2]"),
    (np.full((4, 400), 2.0), "set scaling='clip' or 'logistic'"),
])
def test_bad_images_are_refused(X, message):
    with pytest.raises(ValueError) as info:
        small().fit(X, [0, 1, 0, 1][: len(X)] if X.ndim > 1 else [0])
    assert message in str(info.value)


def test_bad_labels_classes_and_parameters():
    X = np.random.default_rng(0).uniform(size=(40, 400))
    with pytest.raises(ValueError, match="26 classes is too many for 4 R-units"):
        small(n_r=4).fit(np.tile(X, (2, 1))[:52], np.arange(52) % 26)
    with pytest.raises(ValueError, match="y has 1 class \\(0.0\\); a Mark I needs samples of "
                                         "at least 2 classes"):
        small().fit(X, np.zeros(40))
    with pytest.raises(ValueError, match="X has 40 samples but y has 3 labels"):
        small().fit(X, [0, 1, 0])
    with pytest.raises(ValueError, match="unknown preset 'cds-2000'; allowed: ideal"):
        small(preset="cds-2000").fit(X, np.arange(40) % 2)
    with pytest.raises(ValueError, match="unknown machine parameter 'gama'"):
        small(machine={"gama": 0.6}).fit(X, np.arange(40) % 2)
    with pytest.raises(TypeError, match="MarkI got an unknown parameter 'gama'"):
        small(gama=0.6)
    with pytest.raises(ValueError, match="unknown rule"):
        small(rule="hebbian").fit(X, np.arange(40) % 2)
    with pytest.raises(TypeError, match="n_a = 1.5 is not a whole number"):
        small(n_a=1.5).fit(X, np.arange(40) % 2)
    with pytest.raises(ValueError, match="classes must be given"):
        small().partial_fit(X, np.arange(40) % 2)
    m = small().partial_fit(X, np.arange(40) % 2, classes=[0, 1])
    with pytest.raises(ValueError, match="not among the classes"):
        m.partial_fit(X, np.arange(40) % 3)


def test_unfitted_machine_says_so():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError, match="not trained yet"):
        small().predict(np.zeros((1, 400)))
    assert not hasattr(small(), "coef_")


def test_decision_function_agrees_with_predict():
    t = make_task("letters", seed=0, n_train=26 * 3, n_test=26, typefaces=("sans",))
    m = small(preset="cds-1960", max_iter=3).fit(t.X_train, t.y_train)
    scores = m.decision_function(t.X_test)
    assert scores.shape == (26, 26)
    np.testing.assert_array_equal(m.classes_[scores.argmax(axis=1)], m.predict(t.X_test))
    t2 = make_task("e-f", seed=0, n_train=30, n_test=30)
    b = small(preset="cds-1960").fit(t2.X_train, t2.y_train)
    d = b.decision_function(t2.X_test)
    assert d.shape == (30,)
    np.testing.assert_array_equal(b.classes_[(d > 0).astype(int)], b.predict(t2.X_test))


def test_partial_fit_continues_the_same_machine(ef_task):
    t = ef_task
    m = small(preset="cds-1960")
    m.partial_fit(t.X_train, t.y_train, classes=[0, 1])
    time_1 = m.machine_time_s
    m.partial_fit(t.X_train, t.y_train)
    assert m.n_iter_ == 2 and m.machine_time_s > time_1
    again = small(preset="cds-1960", max_iter=2, shuffle=True)
    again.partial_fit(t.X_train, t.y_train, classes=[0, 1])
    again.partial_fit(t.X_train, t.y_train)
    np.testing.assert_array_equal(m.coef_, again.coef_)


def test_estimator_contract():
    from sklearn.base import clone, is_classifier
    from sklearn.model_selection import cross_val_score
    from sklearn.utils.estimator_checks import (
        check_get_params_invariance,
        check_no_attributes_set_in_init,
        check_parameters_default_constructible,
        check_set_params,
    )

    m = MarkI(preset="ideal", n_a=64, max_iter=3, random_state=0, machine={"read_noise": 0.0})
    assert is_classifier(m)
    params = m.get_params()
    assert params["machine"] == {"read_noise": 0.0} and params["n_a"] == 64
    assert params["machine__read_noise"] == 0.0
    c = clone(m)
    assert c.get_params() == params and c is not m
    m.set_params(n_a=32, machine__gamma=0.6)
    assert m.n_a == 32 and m.machine == {"read_noise": 0.0, "gamma": 0.6}
    assert c.machine == {"read_noise": 0.0}  # the clone's parameters are its own
    with pytest.raises(ValueError, match="invalid parameter 'bogus'"):
        m.set_params(bogus=1)
    with pytest.raises(ValueError, match="unknown machine parameter 'gama'"):
        m.set_params(machine__gama=1)
    assert "n_a=32" in repr(m) and "machine={'read_noise': 0.0, 'gamma': 0.6}" in repr(m)
    for check in (check_get_params_invariance, check_set_params,
                  check_parameters_default_constructible, check_no_attributes_set_in_init):
        check("MarkI", MarkI())
    t = make_task("left-right", seed=0, n_train=60, n_test=2)
    scores = cross_val_score(MarkI(preset="ideal", n_a=64, random_state=0), t.X_train,
                             t.y_train, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.8


def test_machine_file_follows_the_contract_and_numpy_reproduces_predict(tmp_path):
    t = make_task("letters", seed=2, n_train=26 * 3, n_test=52, typefaces=("sans",))
    names = np.array(t.classes)
    m = small(preset="cds-1960", max_iter=3, random_state=7)
    m.fit(t.X_train, names[t.y_train])
    path = m.save(tmp_path / "machine.npz", task="letters")
    with np.load(path, allow_pickle=False) as raw:
        assert set(raw.files) == {"format", "format_version", "cell_threshold", "plugboard",
                                  "a_threshold", "weights", "r_bias", "codebook", "classes",
                                  "task", "preset", "seed"}
        assert raw["plugboard"].dtype == np.int8 and raw["codebook"].dtype == np.int8
        assert raw["weights"].dtype == np.float64 and raw["format"].ndim == 0
    f = load_machine(path)
    assert f["format"] == "mark1-kit/markI" and f["format_version"] == 1
    assert (f["task"], f["preset"], f["seed"]) == ("letters", "cds-1960", 7)
    assert list(f["classes"]) == list(m.classes_)
    assert np.isinf(f["cell_threshold"]).sum() == 2  # the preset's dead cells

    # the decision rule of the contract, in plain numpy, on test images and random light
    X = np.concatenate([t.X_test.reshape(52, 400),
                        np.random.default_rng(0).uniform(size=(200, 400))])
    s = X > f["cell_threshold"]
    a = (f["plugboard"].astype(np.int64) @ s.T.astype(np.int64)).T >= f["a_threshold"]
    r = a @ f["weights"].T + f["r_bias"]
    sign_out = np.where(r > 0, 1, -1)
    agree = sign_out @ f["codebook"].T.astype(np.int64)
    pred = []
    for k in range(len(X)):
        best = np.flatnonzero(agree[k] == agree[k].max())
        tie = r[k] @ f["codebook"][best].T.astype(np.float64)
        pred.append(best[np.flatnonzero(tie == tie.max())[0]])
    np.testing.assert_array_equal(f["classes"][np.array(pred)], m.predict(X))


def test_a_machine_file_read_and_written_again_is_the_same_bytes(tmp_path):
    """One writer of the format: MarkI.save, save_machine of the arrays load_machine gives, and
    the exporter's save_machine_file all write the same file."""
    from export.onnx.markI_onnx import load_machine_file, save_machine_file

    t = make_task("e-f", seed=0, n_train=20, n_test=2)
    m = small(preset="cds-1960").fit(t.X_train, t.y_train)
    first = m.save(tmp_path / "first.npz", task="e-f").read_bytes()
    again = save_machine(tmp_path / "again.npz", load_machine(tmp_path / "first.npz"))
    exported = save_machine_file(load_machine_file(again), tmp_path / "exported.npz")
    assert again.read_bytes() == first == exported.read_bytes()
    with pytest.raises(ValueError, match="a machine file needs weights"):
        save_machine(tmp_path / "bad.npz", {k: v for k, v in load_machine(again).items()
                                            if k != "weights"})
    assert not (tmp_path / "bad.npz").exists()


def test_load_machine_refuses_broken_files(tmp_path):
    t = make_task("e-f", seed=0, n_train=20, n_test=2)
    m = small().fit(t.X_train, t.y_train)
    good = dict(m.machine_arrays("e-f"))
    cases = {
        "format": ({"format": np.array("other")}, "format is 'other'"),
        "version": ({"format_version": np.array(2)}, "format_version 2"),
        "shape": ({"weights": np.zeros((8, 3))}, "weights must have shape"),
        "dtype": ({"plugboard": good["plugboard"].astype(np.int16)}, "plugboard must be int8"),
        "codebook": ({"codebook": np.zeros_like(good["codebook"])}, "-1 or \\+1"),
        "missing": ({"weights": None}, "lacks weights"),
    }
    for name, (change, message) in cases.items():
        arrays = {k: v for k, v in {**good, **change}.items() if v is not None}
        path = tmp_path / f"{name}.npz"
        np.savez(path, **arrays)
        with pytest.raises(ValueError, match=message):
            load_machine(path)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable machine file"):
        load_machine(tmp_path / "junk.npz")


def test_live_answers_run_the_clock_and_learn_nothing(ef_task):
    t = ef_task
    m = small(preset="cds-1960").fit(t.X_train, t.y_train)
    before_time, before_steps = m.machine_time_s, m.motor_steps
    base = m.pots_.base.copy()
    live = m.present(t.X_test)
    assert live.shape == (60,) and set(live) <= {0, 1}
    assert m.machine_time_s == pytest.approx(before_time + 60 * 0.2)
    assert m.motor_steps == before_steps
    np.testing.assert_array_equal(m.pots_.base, base)
    assert np.mean(live == m.predict(t.X_test)) >= 0.8
