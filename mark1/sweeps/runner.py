"""Running a sweep: check the spec, run what is missing, write the table, figures and report.

Order of work, so that bad input costs nothing and leaves nothing: the spec is checked whole
(every machine of the design built once), then the Parquet writer and the workers (a Dask
scheduler must answer), and only then is the output folder touched. Finished runs go to
``runs.jsonl`` as they come back (:mod:`mark1.sweeps.journal`); the table, figures and
``report.json`` are written at the end, each all at once.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mark1.errors import Mark1Error
from mark1.io import OutputPlan
from mark1.sweeps import table
from mark1.sweeps.executors import (
    DaskWorkers,
    InProcess,
    LocalWorkers,
    check_main_module_importable,
    make_chunks,
    start_local_workers_early,
)
from mark1.sweeps.journal import NAME as JOURNAL
from mark1.sweeps.journal import Journal
from mark1.sweeps.spec import SweepSpec, check_codes, load_spec, read_spec_file

if TYPE_CHECKING:
    import threading
    from concurrent.futures import Future

MEASURES = ("test_accuracy", "train_accuracy")
"""The measures the figures and the report's summary show."""


@dataclass
class SweepResult:
    """What a sweep gives back: its rows (one dict per run), its report, where it wrote."""

    rows: list[dict[str, Any]]
    """One dict per run, :data:`mark1.sweeps.table.COLUMNS` as keys, in the design's order."""
    report: dict[str, Any]
    """What ``report.json`` holds."""
    out: Path | None = None
    """The output folder (None when nothing was written)."""
    spec: SweepSpec | None = field(default=None, repr=False)
    """The checked spec."""

    def to_arrow(self) -> Any:
        """The table as a ``pyarrow.Table``."""
        table.require_parquet()
        return table.to_arrow(self.rows)

    def to_pandas(self) -> Any:
        """The table as a ``pandas.DataFrame`` (needs pandas)."""
        return self.to_arrow().to_pandas()


def _merge(spec: Any, settings: Mapping[str, Any]) -> Any:
    """The spec with keyword settings on top (a ``grid``/``set`` table extends the spec's)."""
    if isinstance(spec, SweepSpec):
        if settings:
            raise ValueError("give settings in the spec mapping, not beside a SweepSpec")
        return spec
    base: dict[str, Any] = dict(read_spec_file(spec) if isinstance(spec, (str, Path))
                                else spec or {})
    for key, value in settings.items():
        if key in ("grid", "set") and isinstance(base.get(key), Mapping):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


def _check_where(workers: int | None, scheduler: str | None, cluster: str | None,
                 connect_timeout: float) -> int:
    """Check where the runs are to go; the number of local workers (default: the cores)."""
    if cluster not in (None, "dask"):
        raise ValueError(f"unknown cluster {cluster!r}; allowed: dask")
    if scheduler is not None and cluster is not None:
        raise ValueError("give either a scheduler address or a cluster, not both")
    if scheduler is not None and workers is not None:
        raise ValueError("the workers of a Dask scheduler are the cluster's: do not give "
                         "--workers with --scheduler")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 0):
        raise ValueError(f"workers must be a whole number >= 0 (0: this process); got "
                         f"{workers!r}")
    if not connect_timeout > 0:
        raise ValueError(f"connect timeout must be > 0 s; got {connect_timeout!r}")
    if scheduler is not None and (not isinstance(scheduler, str) or "://" not in scheduler):
        raise ValueError(f"scheduler address must look like tcp://HOST:8786; got {scheduler!r}")
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
    if cluster == "dask" and workers < 1:
        raise ValueError("a Dask LocalCluster needs at least 1 worker")
    return workers


def _executor(workers: int, scheduler: str | None, cluster: str | None,
              connect_timeout: float) -> Any:
    if scheduler is not None:
        return DaskWorkers(address=scheduler, timeout=connect_timeout)
    if cluster == "dask":
        return DaskWorkers(n=workers)
    return InProcess() if workers == 0 else LocalWorkers(workers)


def _close_when_made(future: Future[Any]) -> None:
    """Close the executor ``future`` makes, once made (the sweep stopped before using it)."""
    try:
        executor = future.result()
    except BaseException:  # noqa: BLE001 - the sweep's own error is the one to report
        return
    executor.close()


def _peek(out: Path | None) -> set[str]:
    """Keys of the runs already in ``out``'s journal, read without locking or creating."""
    if out is None or not (out / JOURNAL).is_file():
        return set()
    import json

    keys = set()
    with open(out / JOURNAL, "rb") as fh:
        for line in fh:
            try:
                keys.add(json.loads(line)["key"])
            except (ValueError, KeyError, TypeError):
                pass
    return keys


class _Progress:
    """The progress bar (runs done, runs per second, ETA) and notes printed above it."""

    def __init__(self, total: int, initial: int, enabled: bool | None, what: str) -> None:
        from mark1.progress import progress_bar

        self.bar = progress_bar(total=total, initial=initial, unit="run", desc=what,
                                enabled=enabled, dynamic_ncols=True, smoothing=0.05)

    def note(self, text: str) -> None:
        self.bar.write(text, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def sweep(spec: SweepSpec | Mapping[str, Any] | str | Path | None = None, *,
          out: str | os.PathLike[str] | None = None, workers: int | None = None,
          scheduler: str | None = None, cluster: str | None = None,
          connect_timeout: float = 10.0, progress: bool | None = None,
          **settings: Any) -> SweepResult:
    """Run a sweep: a grid (and samples) of machines, each over several seeds.

    Parameters
    ----------
    spec : mapping, path of a TOML file, or SweepSpec
        The design (see :mod:`mark1.sweeps.spec`). Keyword ``settings`` go on top of it, so
        ``sweep(task="e-f", grid={"read_noise": [0, 0.01]}, seeds=10)`` works without one.
    out : path or None
        Folder for ``runs.jsonl`` (finished runs, for resuming), ``results.parquet``,
        ``results.csv``, ``report.json`` and the figures. None: nothing is written (the rows
        come back only; nothing to resume from).
    workers : int or None
        Local worker processes (default: the cores this process may use; 0: in this
        process), or the workers of a Dask ``LocalCluster`` with ``cluster="dask"``.
    scheduler : str or None
        Address of a running Dask scheduler (``tcp://HOST:8786``) to run on instead.
    cluster : ``"dask"`` or None
        Start a ``dask.distributed.LocalCluster`` of ``workers`` workers.
    connect_timeout : float
        Seconds to wait for the scheduler to answer.
    progress : bool or None
        Progress bar on stderr; None: only when stderr is a terminal.

    Returns
    -------
    SweepResult
        The rows in the design's order and the report; identical (but for ``wall_time_s``)
        whatever the workers, their number or the order the runs finished in.
    """
    started = time.perf_counter()
    checked = load_spec(_merge(spec, settings), codes=False)  # the codes after the workers start
    runs = checked.runs()
    out_path = None if out is None else Path(out)
    plan = OutputPlan()  # the folder's place checked, and its staging made, before any run
    if out_path is not None:
        plan.write_folder("--out", out_path, files=(*RESULT_FILES, JOURNAL))
    workers = _check_where(workers, scheduler, cluster, connect_timeout)
    if scheduler is None and (cluster is not None or workers > 0):
        check_main_module_importable()
    with plan:
        keys = [run.key() for run in runs]
        have = _peek(out_path)
        work = any(k not in have for k in keys)
        executor: Any = None
        if work and scheduler is None and cluster is None and workers > 0:
            start_local_workers_early()  # warms up while the rest is checked
            executor = LocalWorkers(workers)  # its processes start with its first chunks
            executor.make_images_ahead(
                next(run for run, k in zip(runs, keys) if k not in have).task_key())
        connecting = None
        if work and scheduler is not None:  # importing dask.distributed and connecting: ~0.5 s
            from concurrent.futures import ThreadPoolExecutor

            pool = ThreadPoolExecutor(1, thread_name_prefix="mark1-connect")
            connecting = pool.submit(_executor, workers, scheduler, cluster, connect_timeout)
            pool.shutdown(wait=False)  # its one thread ends with the connection made
        warm = None
        if work and out_path is not None and (
                workers > 0 or scheduler is not None or cluster is not None):
            import threading  # (in this process the runs would share its one thread with it)

            if executor is not None:  # local workers: while their fork server warms up,
                warm = threading.Thread(  # after the first images, which they wait for
                    target=_warm_writers, args=(executor.images_ready,), daemon=True)
                warm.start()
            else:
                warm = threading.Thread(target=_warm_writers, daemon=True)
        on_first = None if warm is None or warm.ident is not None else warm.start
        try:
            check_codes(checked)
            if out_path is not None:
                table.require_parquet()
        except BaseException:
            if connecting is not None:
                _close_when_made(connecting)
            if executor is not None:
                executor.close()
            raise
        if connecting is not None:
            executor = connecting.result()
        elif executor is None and work:
            executor = _executor(workers, scheduler, cluster, connect_timeout)
        counts = {"runs": len(runs), "from_journal": 0, "run_now": 0,
                  "rerun_after_lost_worker": 0}
        try:
            if out_path is None:
                results: dict[str, dict[str, Any]] = {}
                _execute(executor, runs, keys, results, None, counts, progress)
            else:  # the journal lives in the folder itself, so a killed sweep can resume
                with Journal(out_path) as journal:
                    _execute(executor, runs, keys, journal.results, journal, counts, progress,
                             on_first)
                    results = journal.results
        finally:
            if executor is not None:
                executor.close()
            if warm is not None and warm.ident is not None:
                warm.join()  # its first figure and table done before ours
        rows = [table.make_row(k, run, results[k]) for k, run in zip(keys, runs)]
        report = _report(checked, rows, counts, executor)
        if out_path is not None:
            _write(plan.staged(out_path), checked, rows, report, started)
        else:
            _timed(report, started)
    return SweepResult(rows, report, out_path, checked)


def _timed(report: dict[str, Any], started: float) -> None:
    """Set the sweep's wall time (all but writing report.json) and its rate."""
    wall = time.perf_counter() - started
    run_now = report["counts"]["run_now"]
    report["wall_time_s"] = wall
    report["runs_per_minute"] = 60 * run_now / wall if run_now else None


def _execute(executor: Any, runs: Sequence[Any], keys: Sequence[str],
             results: dict[str, dict[str, Any]], journal: Journal | None,
             counts: dict[str, int], progress: bool | None,
             on_first: Callable[[], None] | None = None) -> None:
    """Run what ``results`` lacks on ``executor``; ``on_first()`` once the first runs are
    back (a Dask cluster's workers start at once: this process's own warm-up of the writers
    waits until then, rather than slow down the connection and the first submissions)."""
    from mark1.version import __version__

    todo = [run for run, k in zip(runs, keys) if k not in results]
    counts["from_journal"] = len(runs) - len(todo)
    if not todo:
        return
    key_of = dict(zip(runs, keys))
    first = [] if on_first is None else [on_first]  # called once, by the first results
    where = executor.description
    bar = _Progress(len(runs), counts["from_journal"], progress, "sweep")
    if counts["from_journal"]:
        bar.note(f"{counts['from_journal']} of {len(runs)} runs already in {JOURNAL}; "
                 f"running the other {len(todo)} on {where}")

    def done(batch: list[tuple[Any, Any]]) -> None:
        for run, result in batch:
            if isinstance(result, str):
                raise ValueError(f"run {run.task} on {run.preset}, seed {run.seed}: {result}")
            if result.pop("kit") != __version__:
                raise Mark1Error(f"a worker runs another version of mark1-kit than "
                                 f"{__version__}: install the same version everywhere")
            key = key_of[run]
            if journal is not None:
                journal.add(key, run.resolved(), result)
            results[key] = result
            counts["run_now"] += 1
        bar.bar.update(len(batch))
        if first:
            first.pop()()

    def lost(n: int) -> None:
        counts["rerun_after_lost_worker"] += n
        bar.note(f"a worker died; its {n} run{'s' if n > 1 else ''} in flight run again")

    try:
        executor.run(make_chunks(todo, executor.workers), done, lost)
    finally:
        bar.close()


def _warm_writers(after: threading.Event | None = None) -> None:
    """Import, and run once on nothing, what the table, figures and report need (pyarrow,
    scipy.special for the confidence bands, matplotlib loading its fonts on its first figure:
    ~0.4 s in all) while the workers warm up and this process would only wait, rather than after the
    last run. Once ``after`` is set, if given."""
    import contextlib

    if after is not None:
        after.wait()
    with contextlib.suppress(Exception):  # only a head start: the writers report real errors
        import scipy.special  # noqa: F401

        from mark1 import figures

        table.parquet_bytes([])
        figures.warm_up()


def _environment(executor: Any) -> dict[str, Any]:
    from importlib import metadata

    from mark1.version import __version__

    versions: dict[str, str | None] = {}
    for dist in ("numpy", "numba", "scipy", "matplotlib", "pyarrow", "dask", "distributed"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "mark1-kit": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "MARK1_KERNELS": os.environ.get("MARK1_KERNELS", "auto"),
        "workers": None if executor is None else executor.description,
        "packages": versions,
    }


def _report(spec: SweepSpec, rows: list[dict[str, Any]], counts: dict[str, int],
            executor: Any) -> dict[str, Any]:
    summaries = {
        factor: {m: table.summary(rows, factor, spec.grid.get(factor), m) for m in MEASURES}
        for factor in spec.swept
    }
    run_wall = sum(r["wall_time_s"] for r in rows)
    return {
        "spec": spec.to_dict(),
        "swept": spec.swept,
        "counts": counts,
        "wall_time_s": None,
        "runs_wall_time_s": run_wall,
        "runs_per_minute": None,
        "environment": _environment(executor),
        "columns": {c: table.column_kind(c).__name__ for c in table.COLUMNS},
        "summary": summaries,
        "files": [],
    }


def _figures(stage: Path, spec: SweepSpec, rows: list[dict[str, Any]]) -> list[str]:
    from mark1 import figures

    swept = spec.swept
    seeds = f"{len(spec.seeds)} seed{'s' if len(spec.seeds) > 1 else ''}"
    fixed = spec.fixed
    context = " ".join(part for part in (
        fixed.get("task"), fixed.get("preset") and f"on {fixed['preset']}") if part)
    if fixed.get("epochs"):
        context += f", {fixed['epochs']} passes at most"
    names = []
    for factor in swept:
        others = [f for f in swept if f != factor]
        groups = {"": list(range(len(rows)))}
        note = seeds if not others else f"{seeds} and the other parameters"
        if len(others) == 1:
            lv = table.levels(rows, others[0], spec.grid.get(others[0]))
            if len(lv) <= 6:
                groups = {f"{others[0]} = {label}": index for _, label, index in lv}
                note = seeds
        lines = {}
        for name, index in groups.items():
            part = [rows[i] for i in index]
            lines[name] = table.summary(part, factor, spec.grid.get(factor))
        file = f"accuracy_{factor}.png"
        log_x = factor in spec.samples and spec.samples[factor].log
        figures.sweep_accuracy(stage / file, factor, lines, "test_accuracy", note, context,
                               log_x)
        names.append(file)
    for x_factor, y_factor in combinations(swept, 2):
        x_levels = table.levels(rows, x_factor, spec.grid.get(x_factor))
        y_levels = table.levels(rows, y_factor, spec.grid.get(y_factor))
        mean = np.full((len(y_levels), len(x_levels)), np.nan)
        for i, (_, _, y_index) in enumerate(y_levels):
            for j, (_, _, x_index) in enumerate(x_levels):
                both = sorted(set(y_index) & set(x_index))
                if both:
                    mean[i, j] = np.mean([rows[k]["test_accuracy"] for k in both])
        pooled = len(swept) > 2
        file = f"heatmap_{x_factor}_{y_factor}.png"
        figures.sweep_heatmap(stage / file, x_factor, y_factor, [lv[1] for lv in x_levels],
                              [lv[1] for lv in y_levels], mean, "test_accuracy",
                              f"{seeds}{' and the other parameters' if pooled else ''}", context)
        names.append(file)
    return names


RESULT_FILES = ("results.parquet", "results.csv", "report.json")
"""The files a sweep writes into its folder at the end (besides its journal and figures)."""


def _write(stage: Path, spec: SweepSpec, rows: list[dict[str, Any]], report: dict[str, Any],
           started: float) -> None:
    """The table, figures and report, written into the plan's staging of the sweep's folder."""
    from mark1.io import atomic_write_bytes, atomic_write_text, write_json

    atomic_write_bytes(stage / "results.parquet", table.parquet_bytes(rows))
    atomic_write_text(stage / "results.csv", table.csv_text(rows))
    report["files"] = [*RESULT_FILES, JOURNAL, *_figures(stage, spec, rows)]
    _timed(report, started)
    write_json(stage / "report.json", report)
