"""The sweep's tidy table: one row per run, every setting and parameter, its measures.

Columns: ``key`` (the run's SHA-256), the run settings (:data:`mark1.sweeps.spec.SETTINGS`),
``seed``, every machine parameter (:data:`mark1.presets.PARAMETERS`, resolved from the preset
and the spec), then the measures (:data:`mark1.sweeps.worker.RESULTS`). Rows follow the
design's order (point by point, each over its seeds), whatever order the runs finished in.
Every column but ``wall_time_s`` is a function of the run's configuration.

Written as Parquet (pyarrow, the ``sweep`` extra) and CSV (floats written so they read back
exactly; ``inf`` for infinity, ``True``/``False`` for flags).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mark1.presets import PARAMETERS
from mark1.sweeps.spec import SETTINGS, RunConfig, parameter_kind
from mark1.sweeps.worker import RESULTS

COLUMNS: list[str] = ["key", *SETTINGS, "seed", *PARAMETERS, *RESULTS]
"""The table's columns, in order."""

_INT_RESULTS = {"passes", "mistakes", "last_mistakes", "motor_steps"}

PARQUET_EXTRA = "pip install 'mark1-kit[sweep]'"


def column_kind(name: str) -> type:
    """The Python type of a column's values."""
    if name == "key":
        return str
    if name == "seed" or name in _INT_RESULTS:
        return int
    if name in RESULTS:
        return float
    return parameter_kind(name)


def make_row(key: str, run: RunConfig, result: dict[str, Any]) -> dict[str, Any]:
    """A table row: the run's full configuration and its measures."""
    row = {"key": key, **run.resolved()}
    row["n_train"], row["n_test"] = result["n_train"], result["n_test"]
    for name in RESULTS:
        row[name] = result[name]
    return {c: row[c] for c in COLUMNS}


def require_parquet() -> None:
    """Raise a one-line error naming the extra to install when pyarrow is missing."""
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise ValueError(
            f"the sweep's Parquet table needs pyarrow: {PARQUET_EXTRA}") from None


def to_arrow(rows: Sequence[dict[str, Any]]) -> Any:
    """The rows as a ``pyarrow.Table`` with one fixed type per column.

    Read by pyarrow's CSV reader from :func:`csv_text`, with each column's type given: one
    writer of the values for both files (floats as ``repr``, which reads back exactly), and
    no pandas -- pyarrow's conversion of Python lists imports it, 0.2 s of the sweep's
    process."""
    import pyarrow as pa
    import pyarrow.csv as pc

    types = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}
    schema = pa.schema([(c, types[column_kind(c)]) for c in COLUMNS])
    text = csv_text(rows).encode()
    return pc.read_csv(
        io.BytesIO(text),
        parse_options=pc.ParseOptions(newlines_in_values=True),
        convert_options=pc.ConvertOptions(
            column_types=schema, null_values=[], strings_can_be_null=False,
            true_values=["True"], false_values=["False"]),
    )


def parquet_bytes(rows: Sequence[dict[str, Any]]) -> bytes:
    """The table as a Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(to_arrow(rows), sink)
    return sink.getvalue().to_pybytes()


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    """The table as CSV (a header, then a row per run; floats as ``repr``, exact)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([repr(row[c]) if isinstance(row[c], float) else row[c]
                         for c in COLUMNS])
    return buf.getvalue()


# --------------------------------------------------------------------------- summaries


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its two-sided confidence interval (Student's t); the
    half-width is 0 for fewer than two values."""
    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, 0.0
    from scipy.special import stdtrit  # Student's t quantile (scipy.stats takes 1 s to import)

    half = float(stdtrit(len(x) - 1, 0.5 + level / 2) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, half


def levels(rows: Sequence[dict[str, Any]], factor: str, grid: Sequence[Any] | None,
           bins: int = 8) -> list[tuple[Any, str, list[int]]]:
    """The levels of ``factor``: ``(value, label, row indices)`` for each.

    A grid axis (or a text factor) has one level per value, in the grid's order; a sampled
    factor is cut into at most ``bins`` bins of equally many runs, each at its runs' mean.
    """
    values = [r[factor] for r in rows]
    if grid is not None or parameter_kind(factor) in (str, bool):
        order = list(grid) if grid is not None else list(dict.fromkeys(values))
        return [(v, _label(v), [i for i, x in enumerate(values) if x == v]) for v in order]
    index = np.argsort(np.asarray(values, dtype=np.float64), kind="stable")
    out = []
    for part in np.array_split(index, min(bins, len(set(values)))):
        if len(part):
            chosen = [values[i] for i in part]
            out.append((float(np.mean(chosen)), f"{_label(min(chosen))}-{_label(max(chosen))}",
                        sorted(int(i) for i in part)))
    return out


def _label(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def summary(rows: Sequence[dict[str, Any]], factor: str, grid: Sequence[Any] | None,
            measure: str = "test_accuracy") -> list[dict[str, Any]]:
    """Mean and 95 % confidence half-width of ``measure`` at each level of ``factor``
    (runs pooled over the seeds and every other factor)."""
    out = []
    for value, label, index in levels(rows, factor, grid):
        if index:
            mean, half = mean_ci([rows[i][measure] for i in index])
            out.append({"value": value, "label": label, "runs": len(index), "mean": mean,
                        "ci95": half})
    return out
