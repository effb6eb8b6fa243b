"""The random plugboard, the A-units and the plugboard table."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from mark1.plugboard import Plugboard, PlugboardSpec


def board(seed: int = 0, **kw: object) -> Plugboard:
    return Plugboard.wire(PlugboardSpec(**kw), 64, 400, np.random.default_rng(seed))


def test_each_a_unit_has_its_wires_on_distinct_cells():
    pb = board(n_excitatory=7, n_inhibitory=3)
    assert pb.wiring.dtype == np.int8 and pb.wiring.shape == (64, 400)
    assert np.all((pb.wiring == 1).sum(axis=1) == 7)
    assert np.all((pb.wiring == -1).sum(axis=1) == 3)
    assert set(np.unique(pb.wiring)) <= {-1, 0, 1}


def test_wiring_is_seeded():
    np.testing.assert_array_equal(board(1).wiring, board(1).wiring)
    assert not np.array_equal(board(1).wiring, board(2).wiring)


def test_a_units_fire_when_the_net_input_reaches_theta():
    pb = board(a_theta=2.0, a_theta_spread=0.4)
    s = np.random.default_rng(5).random((50, 400)) < 0.3
    net = s.astype(np.int64) @ pb.wiring.T.astype(np.int64)  # integer closed form
    np.testing.assert_array_equal(pb.respond(s), net >= pb.threshold)
    assert 1.6 <= pb.threshold.min() and pb.threshold.max() <= 2.4


def test_raw_mode_is_the_cells_themselves():
    pb = Plugboard.identity(400)
    s = np.random.default_rng(0).random((5, 400)) < 0.5
    np.testing.assert_array_equal(pb.respond(s), s)
    assert pb.raw and pb.n_a == 400


def test_table_round_trips_through_csv():
    pb = board(n_excitatory=4, n_inhibitory=2)
    rows = list(csv.DictReader(io.StringIO(pb.to_csv())))
    assert len(rows) == 64
    rebuilt = np.zeros((64, 400), dtype=np.int8)
    for row in rows:
        a = int(row["a_unit"])
        assert float(row["threshold"]) == pb.threshold[a]
        for key, sign in (("excitatory", 1), ("inhibitory", -1)):
            for cell in row[key].split():
                r, c = (int(v) for v in cell.split(":"))
                rebuilt[a, r * 20 + c] += sign
    np.testing.assert_array_equal(rebuilt, pb.wiring)
    text = pb.format_table(limit=5)
    assert text.splitlines()[0].startswith("   A  theta") and "59 more A-units" in text


def test_bad_wiring_is_named():
    with pytest.raises(ValueError, match="n_excitatory"):
        PlugboardSpec(n_excitatory=-1)
    with pytest.raises(ValueError, match="at least one input"):
        PlugboardSpec(n_excitatory=0, n_inhibitory=0)
    with pytest.raises(ValueError, match="only 10 S-units"):
        Plugboard.wire(PlugboardSpec(n_excitatory=8, n_inhibitory=8), 4, 10,
                       np.random.default_rng(0))
