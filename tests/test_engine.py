"""The device engine: bit-exact with the golden reference, its RAM and its cycle model."""

from __future__ import annotations

import ast
import inspect
from dataclasses import replace

import numpy as np
import pytest

import firmware_sim.engine as engine_module
from export.contract.golden import (
    golden_activations,
    golden_forward,
    quantize_input,
    requantize,
    wrap_int32,
)
from export.contract.package import decode_package, encode_package
from export.int8.quantize import quantize_dense, quantize_machine, quantize_mlp
from firmware_sim.engine import CORTEX_M4_80MHZ, CortexM4Cost, Engine, requantize_one
from tests.int8_models import (
    random_checkpoint,
    random_machine,
    task_data,
    tiny_package,
    trained_checkpoint,
    trained_machine,
)

I32_MIN, I32_MAX = -(2**31), 2**31 - 1


def _run(engine: Engine, x_q: np.ndarray) -> np.ndarray:
    return np.stack([engine.infer(x)[0] for x in x_q])


def _saturating_package():
    """Dense layers that saturate at both ends, the first with multipliers above 1 (positive
    shifts)."""
    rng = np.random.default_rng(5)
    s_in = float(np.float32(1 / 255))
    first = quantize_dense(rng.normal(0, 0.3, (24, 50)), rng.normal(0, 2.0, 24), s_in, -128,
                           (0.0, 1e-4), relu=True)
    second = quantize_dense(rng.normal(0, 30.0, (6, 24)), rng.normal(0, 1e-3, 6),
                            first.output_scale, first.output_zero_point, (-1e-3, 1e-3),
                            relu=False)
    pkg = replace(tiny_package(), layers=(first, second), input_shape=(50,),
                  classes=tuple("uvwxyz"))
    assert (first.shift > 0).all()
    return decode_package(encode_package(pkg))


@pytest.fixture(scope="module")
def packages():
    rng = np.random.default_rng(11)
    return {
        "mlp": quantize_mlp(random_checkpoint(rng, [400, 32, 16, 5]), rng.uniform(size=(30, 400))),
        "markI": quantize_machine(random_machine(rng), rng.uniform(size=(30, 400))),
        "saturating": _saturating_package(),
        "tiny": tiny_package(),
    }


@pytest.mark.parametrize("name", ["mlp", "markI", "saturating", "tiny"])
def test_bit_exact_with_golden_on_random_inputs(packages, name):
    pkg = packages[name]
    rng = np.random.default_rng(7)
    x_q = rng.integers(-128, 128, (150, pkg.n_inputs)).astype(np.int8)
    x_q[0], x_q[1] = -128, 127  # the extremes
    engine = Engine(decode_package(encode_package(pkg)))  # as the device loads it
    y = _run(engine, x_q)
    acts = golden_activations(pkg, x_q)
    np.testing.assert_array_equal(y, acts[-1])
    assert y.dtype == np.int8
    if name == "saturating":  # the edge package really reaches both ends and the ReLU floor
        hidden = acts[1]
        assert (hidden == 127).any() and (hidden == -128).any() and (hidden > -128).mean() < 1
        assert (y == 127).any() and (y == -128).any() and ((y > -128) & (y < 127)).any()


@pytest.mark.parametrize("task", ["digits", "letters"])
def test_bit_exact_with_golden_on_task_inputs(task):
    X, _, X_test, _, _ = task_data(task)
    for pkg in (quantize_mlp(trained_checkpoint(task), X[:128]),
                quantize_machine(trained_machine(task), X[:128])):
        x_q = quantize_input(pkg, X_test)
        np.testing.assert_array_equal(_run(Engine(pkg), x_q), golden_forward(pkg, x_q))


def test_requantization_primitive_matches_golden_on_an_edge_grid():
    accs = [I32_MIN, I32_MIN + 1, -(2**30), -65537, -5, -3, -1, 0, 1, 3, 5, 65537, 2**30, I32_MAX]
    mults = [0, 2**30, 2**30 + 1, 3 * 2**29, 2**31 - 2, 2**31 - 1]
    grid = np.array([(a, m, s) for a in accs for m in mults for s in range(-31, 31)], np.int64)
    for zp, lo in ((0, -128), (-128, -128), (17, 17)):
        want = requantize(grid[:, 0], grid[:, 1], grid[:, 2], zp, lo, 127)
        got = [requantize_one(int(a), int(m), int(s), zp, lo, 127) for a, m, s in grid]
        np.testing.assert_array_equal(got, want)


def test_int32_wrap_matches_golden():
    rng = np.random.default_rng(3)
    big = [int(v) for v in rng.integers(-(2**40), 2**40, 500)] + [2**31, -(2**31) - 1, 2**32]
    np.testing.assert_array_equal([engine_module._i32(v) for v in big], wrap_int32(big))


def test_engine_code_is_independent_of_the_golden_reference():
    tree = ast.parse(inspect.getsource(engine_module))
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    # the package's data types, yes; the golden reference's arithmetic, no
    assert {name for name in imported if name and name.startswith("export")} <= {
        "export.contract.package"
    }, imported


def test_ram_is_the_two_activation_buffers(packages):
    for pkg in packages.values():
        assert Engine(pkg).ram_bytes == pkg.ram_bytes
    # 400 -> 32 -> 16 -> 5: buffers of 400 (and 16) and 32 (and 5)
    assert Engine(packages["mlp"]).ram_bytes == 400 + 32


def test_cycle_model_closed_forms(packages):
    c = CORTEX_M4_80MHZ
    tiny = Engine(tiny_package())  # dense 3 -> 2: no group of 4, three leftover inputs per row
    assert tiny.cycles == c.inference_cycles + c.layer_cycles + 2 * (
        c.dense_row_cycles + 3 * c.dense_tail_cycles
    )
    mlp = Engine(packages["mlp"])  # 400 -> 32 -> 16 -> 5
    dense = [c.layer_cycles + n_out * (c.dense_row_cycles + (n_in // 4) * c.dense_quad_cycles
                                       + (n_in % 4) * c.dense_tail_cycles)
             for n_in, n_out in ((400, 32), (32, 16), (16, 5))]
    assert mlp.layer_cycles == dense and mlp.cycles == c.inference_cycles + sum(dense)
    pkg = packages["markI"]
    nnz = int(pkg.layers[1].row_ptr[-1])
    mark = Engine(pkg)
    assert mark.layer_cycles[:2] == [
        c.layer_cycles + 400 * c.threshold_cycles,
        c.layer_cycles + pkg.layers[1].n_out * c.step_row_cycles + nnz * c.step_connection_cycles,
    ]
    assert mark.latency_s == pytest.approx(mark.cycles / 80e6)
    rng = np.random.default_rng(0)
    counts = {mlp.infer(rng.integers(-128, 128, 400).astype(np.int8))[1] for _ in range(5)}
    assert counts == {mlp.cycles}  # no data-dependent exits
    slow = Engine(packages["mlp"], replace(c, dense_quad_cycles=2 * c.dense_quad_cycles))
    assert slow.cycles - mlp.cycles == sum(n_out * (n_in // 4) * c.dense_quad_cycles
                                           for n_in, n_out in ((400, 32), (32, 16), (16, 5)))


def test_bad_inputs_and_cost_models_are_refused(packages):
    engine = Engine(packages["tiny"])
    with pytest.raises(ValueError, match="shape"):
        engine.infer(np.zeros(4, np.int8))
    with pytest.raises(TypeError, match="int8"):
        engine.infer(np.zeros(3))
    with pytest.raises(ValueError, match="\\[-128, 127\\]"):
        engine.infer(np.array([0, 200, 0]))
    with pytest.raises(ValueError, match="clock_hz"):
        CortexM4Cost(clock_hz=0)
    with pytest.raises(ValueError, match="dense_row_cycles"):
        CortexM4Cost(dense_row_cycles=-1)


def test_describe_reports_the_figures(packages):
    figures = Engine(packages["mlp"]).describe()
    assert figures["cycles"] == sum(figures["layer_cycles"]) + CORTEX_M4_80MHZ.inference_cycles
    assert figures["latency_ms"] == pytest.approx(1e3 * figures["cycles"] / 80e6)
    assert figures["ram_bytes"] == packages["mlp"].ram_bytes


def test_double_rounding_primitive_matches_golden_on_an_edge_grid():
    accs = [I32_MIN, I32_MIN + 1, -(2**30), -65537, -5, -3, -1, 0, 1, 3, 5, 65537, 2**30, I32_MAX]
    mults = [0, 2**30, 2**30 + 1, 3 * 2**29, 2**31 - 2, 2**31 - 1]
    grid = np.array([(a, m, s) for a in accs for m in mults for s in range(-31, 31)], np.int64)
    for zp, lo in ((0, -128), (-128, -128), (17, 17)):
        want = requantize(grid[:, 0], grid[:, 1], grid[:, 2], zp, lo, 127, "double")
        got = [requantize_one(int(a), int(m), int(s), zp, lo, 127, "double") for a, m, s in grid]
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", ["mlp", "saturating", "tiny"])
def test_a_double_rounding_package_runs_bit_exact_with_golden(packages, name):
    pkg = replace(packages[name], rounding="double")
    rng = np.random.default_rng(8)
    x_q = rng.integers(-128, 128, (150, pkg.n_inputs)).astype(np.int8)
    loaded = decode_package(encode_package(pkg))
    assert loaded.rounding == "double"
    y = _run(Engine(loaded), x_q)
    np.testing.assert_array_equal(y, golden_forward(pkg, x_q))
    if name == "mlp":  # the two roundings really differ on this model
        assert (y != golden_forward(packages[name], x_q)).any()
