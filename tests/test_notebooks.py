"""The lecture as notebooks (docs/notebooks/): each runs from top to bottom in a fresh kernel,
and the repository keeps them without outputs.

Every notebook checks its own results with ``assert`` (the closed form against gradient
descent, Novikoff's bound, the hand-written gradients against torch's autograd, the device's
outputs against the golden reference), so running it is the test.
"""

from __future__ import annotations

import pytest

from tests.conftest import ROOT

nbformat = pytest.importorskip("nbformat")  # the dev extra (CI has it)
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((ROOT / "docs" / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 300
"""Longest a cell may run (a bound, not a speed goal: the four take about 35 s together)."""


def test_the_lecture_path_is_there_in_order():
    names = [p.stem.split("_", 1)[1] for p in NOTEBOOKS]
    assert names == ["least_squares_and_gradient_descent", "perceptron_and_the_mark_I",
                     "xor_backprop_and_the_mlp", "deployment"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_notebook_runs_from_top_to_bottom(path, tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, naming the cell, when one fails
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    assert all(c.execution_count is not None for c in nb.cells if c.cell_type == "code")
