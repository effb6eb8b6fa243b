"""The Mark I machine file as an ONNX graph: the decision rule, exactly, inside the TX2 profile."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from export.onnx.markI_onnx import (
    MachineFile,
    build_markI_model,
    exact_thresholds,
    load_machine_file,
    save_machine_file,
)
from export.onnx.onnx_export import check_model
from export.onnx.parity import markI_parity, run_onnx, task_test_inputs
from export.onnx.profiles import JETSON_TX2
from export.sources.dispatch import sniff
from mark1.images import N_CELLS


def decide_by_loops(m: MachineFile, x: np.ndarray) -> int:
    """The contract's decision rule for one image, written out plainly (no vector tricks)."""
    s = [1 if x[i] > m.cell_threshold[i] else 0 for i in range(N_CELLS)]
    a = [1 if sum(int(m.plugboard[j, i]) * s[i] for i in range(N_CELLS)) >= m.a_threshold[j]
         else 0 for j in range(m.n_a)]
    r = [sum(m.weights[k, j] * a[j] for j in range(m.n_a)) + m.r_bias[k] for k in range(m.n_r)]
    sign_out = [1 if v > 0 else -1 for v in r]
    agree = [sum(int(c) * o for c, o in zip(row, sign_out)) for row in m.codebook]
    best = max(agree)
    candidates = [k for k, v in enumerate(agree) if v == best]
    code_r = {k: sum(int(c) * v for c, v in zip(m.codebook[k], r)) for k in candidates}
    top = max(code_r.values())
    return min(k for k in candidates if code_r[k] == top)


def synthetic_machine(
    task: str = "e-f", seed: int = 0, n_a: int = 96, n_r: int = 4, integer_weights: bool = True,
    **task_options: object,
) -> MachineFile:
    """A machine file per the contract, trained here with the perceptron rule in numpy.

    Dead (+inf) and always-on (-inf) cells, out-of-reach A-unit thresholds, doubled wires and
    (with integer weights) exact ties in the R-unit sums are all present on purpose.
    """
    from mark1.stimuli import make_task

    rng = np.random.default_rng(seed)
    cell = rng.uniform(0.2, 0.8, N_CELLS)
    cell[rng.choice(N_CELLS, 6, replace=False)] = np.inf
    cell[rng.choice(N_CELLS, 3, replace=False)] = -np.inf
    plug = np.zeros((n_a, N_CELLS), np.int8)
    for j in range(n_a):
        plug[j, rng.choice(N_CELLS, 6)] += 1  # with replacement: some wired twice
        plug[j, rng.choice(N_CELLS, 3)] -= 1
    a_thr = rng.integers(0, 4, n_a).astype(np.float64) + rng.choice([0.0, 0.5], n_a)
    a_thr[:2] = [1e3, -1e3]  # a unit that never fires, one that always does
    data = make_task(task, seed=seed, **task_options)
    n_classes = len(data.classes)
    code = -np.ones((n_classes, n_r), np.int8)
    for k in range(n_classes):
        code[k, k % n_r] = 1
        if k >= n_r:
            code[k, (k + 1) % n_r] = 1
    m = MachineFile(cell, plug, a_thr, np.zeros((n_r, n_a)), np.zeros(n_r), code,
                    list(data.classes), task, "synthetic", seed)
    X = data.X_train.reshape(-1, N_CELLS)
    s = (X > cell).astype(np.float64)
    A = (s @ plug.T.astype(np.float64) >= a_thr).astype(np.float64)
    w = np.zeros((n_r, n_a))
    step = 1.0 if integer_weights else 0.37
    for _ in range(3):  # Rosenblatt's error correction, per R-unit
        for a, label in zip(A, data.y_train):
            target = code[label]
            out = np.where(w @ a > 0, 1, -1)
            wrong = out != target
            w[wrong] += step * target[wrong, None] * a[None, :]
    if not integer_weights:
        w += rng.normal(0.0, 1e-3, w.shape)
    m.weights = w
    m.r_bias = np.zeros(n_r) if integer_weights else rng.normal(0.0, 0.1, n_r)
    return m


@pytest.fixture(scope="module")
def machine() -> MachineFile:
    return synthetic_machine(n_train=60, n_test=80)


def test_vectorised_rule_equals_the_contract_written_out(machine):
    X, _ = task_test_inputs("e-f", 0, {"n_train": 60, "n_test": 80})
    index, _ = machine.decide(X)
    assert [decide_by_loops(machine, x) for x in X[:25]] == index[:25].tolist()
    # the machine learned something, so the decisions are not all one class
    assert len(set(index.tolist())) == 2


def test_machine_file_round_trip_and_detection(machine, tmp_path):
    path = save_machine_file(machine, tmp_path / "machine.npz")
    assert sniff(path).name == "markI"
    back = load_machine_file(path)
    np.testing.assert_array_equal(back.cell_threshold, machine.cell_threshold)
    np.testing.assert_array_equal(back.plugboard, machine.plugboard)
    np.testing.assert_array_equal(back.weights, machine.weights)
    assert back.classes == machine.classes and back.task == "e-f" and back.seed == 0
    with np.load(path, allow_pickle=False) as npz:  # the contract: no pickles
        assert str(npz["format"]) == "mark1-kit/markI"


@pytest.mark.parametrize("integer_weights", [True, False])
def test_graph_equals_rule_on_every_test_image(tmp_path, integer_weights):
    m = synthetic_machine(n_train=60, n_test=120, integer_weights=integer_weights)
    model = build_markI_model(m)
    path = tmp_path / "markI.onnx"
    path.write_bytes(model.SerializeToString())
    facts = check_model(path, JETSON_TX2)
    assert facts.opset == 13 and facts.ir_version <= 8
    X, data = task_test_inputs("e-f", 0, {"n_train": 60, "n_test": 120})
    result, ref_r, got_r = markI_parity(m, path, X, data=data)
    assert result.passed and result.argmax_agreement == 1.0 and result.n_samples == 120
    np.testing.assert_allclose(got_r, ref_r, atol=1e-4)
    if integer_weights:  # integer sums are exact in float32: ties stay ties
        assert np.array_equal(got_r, ref_r)
        assert (ref_r == 0).any()


def test_comparisons_are_exact_at_the_thresholds(machine):
    """Images exactly at and just above each cell's float32 threshold fire as float64 says."""
    cell32, a_thr32 = exact_thresholds(machine)
    finite = np.isfinite(machine.cell_threshold)
    at = np.where(finite, cell32, 0.5).astype(np.float32)
    above = np.nextafter(at, np.float32(2.0))
    below = np.nextafter(at, np.float32(-1.0))
    X = np.clip(np.stack([at, above, below]), 0.0, 1.0).astype(np.float32)
    out = run_onnx(build_markI_model(machine).SerializeToString(), X)
    index, r = machine.decide(X)
    np.testing.assert_array_equal(out["class_index"], index)
    np.testing.assert_allclose(out["r_sum"], r, atol=1e-4)
    # the A-unit thresholds became whole numbers a unit can reach (or one above the top)
    assert np.array_equal(a_thr32, np.round(a_thr32))
    assert a_thr32[0] == np.maximum(machine.plugboard[0], 0).sum() + 1


def test_ties_go_to_the_lowest_class():
    """Equal agreement and equal code sums: the lowest class; else the larger code sum."""
    plug = np.zeros((2, N_CELLS), np.int8)
    plug[0, 0] = 1
    plug[1, 1] = 1
    m = MachineFile(
        cell_threshold=np.full(N_CELLS, 0.5), plugboard=plug, a_threshold=np.ones(2),
        weights=np.array([[1.0, -3.0], [1.0, -1.0]]), r_bias=np.zeros(2),
        codebook=np.array([[1, -1], [1, -1], [-1, 1]], np.int8), classes=["a", "b", "c"],
        task="xor", preset="synthetic", seed=0,
    )
    X = np.zeros((3, N_CELLS), np.float32)
    X[1, 0] = 1.0  # r = (1, 1): every code agrees 0 and sums 0 -> the lowest class, a
    X[2, 1] = 1.0  # r = (-3, -1): every code agrees 0; c sums 2, a and b -2 -> c
    index, _ = m.decide(X)
    assert index.tolist() == [decide_by_loops(m, x) for x in X] == [0, 0, 2]
    onnx_index = run_onnx(build_markI_model(m).SerializeToString(), X)["class_index"]
    np.testing.assert_array_equal(onnx_index, index)


@pytest.mark.parametrize("task, preset, n_a", [("left-right", "cds-1960", 512),
                                               ("letters", "ideal", 256)])
def test_export_decides_as_the_simulator_on_every_test_image(tmp_path, task, preset, n_a):
    """MarkI(...).fit -> save -> export (fp32 and fp16) -> the same class as ``predict``."""
    from export.onnx.bundle import export_bundle
    from mark1.machine import MarkI
    from mark1.stimuli import make_task

    data = make_task(task, seed=2)
    sim = MarkI(preset=preset, n_a=n_a, max_iter=2, random_state=2).fit(data.X_train,
                                                                        data.y_train)
    src = sim.save(tmp_path / "machine.npz", task=task)
    X, _ = task_test_inputs(task, 2)
    # the simulator sees the same float32 images the ONNX model is fed
    expected = np.searchsorted(sim.classes_, sim.predict(X.astype(np.float64)))
    for fp16 in (False, True):
        out = tmp_path / f"bundle_{fp16}"
        meta = export_bundle(src, "jetson-tx2", out, fp16=fp16)
        assert meta["parity"]["n_samples"] == data.n_test == len(X)
        assert meta["parity"]["n_class_mismatches"] == 0
        got = run_onnx(out / "model.onnx", X)["class_index"]
        np.testing.assert_array_equal(got, expected)
    model = onnx.load(tmp_path / "bundle_True" / "model.onnx")
    types = {t.name: t.data_type for t in model.graph.initializer}
    assert types["plugboard_t"] == onnx.TensorProto.FLOAT16
    assert types["weights_t"] == onnx.TensorProto.FLOAT
    assert len(set(expected.tolist())) > 1


def test_machine_saved_without_its_task_is_checked_on_probe_images(tmp_path):
    from export.onnx.bundle import export_bundle

    m = synthetic_machine("left-right", n_train=40, n_test=4)
    m.task, m.seed = "", -1
    meta = export_bundle(save_machine_file(m, tmp_path / "machine.npz"), "desktop",
                         tmp_path / "bundle")
    assert meta["parity"]["n_samples"] == 512 and meta["parity"]["passed"]
    assert "names no known task" in meta["parity"]["data"]
