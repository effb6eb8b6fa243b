"""Sweeps: many imperfect machines, a grid of parameters times seeds, on this machine or a
Dask cluster (``mark1 sweep``, :func:`mark1.sweep`).

:mod:`~mark1.sweeps.spec` (the design and its runs), :mod:`~mark1.sweeps.worker` (one run),
:mod:`~mark1.sweeps.executors` (where runs go), :mod:`~mark1.sweeps.journal` (finished runs,
for resuming), :mod:`~mark1.sweeps.table` (the tidy table), :mod:`~mark1.sweeps.runner` (all
of it together). Importing this package imports neither Dask nor pyarrow nor matplotlib.
"""

from mark1.sweeps.runner import SweepResult, sweep
from mark1.sweeps.spec import RunConfig, SweepSpec, load_spec

__all__ = ["RunConfig", "SweepResult", "SweepSpec", "load_spec", "sweep"]
