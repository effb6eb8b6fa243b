"""``mark1 sweep`` and ``mark1.sweep``: the design, exact results, resuming, workers that die,
a real Dask scheduler with workers in their own processes, and bad specs."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import mark1
from mark1.sweeps.executors import make_chunks
from mark1.sweeps.journal import Journal
from mark1.sweeps.spec import SampleRange, draw_samples, load_spec, parse_values
from mark1.sweeps.worker import run_chunk

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")

SMALL = {"task": "e-f", "n_train": 20, "n_test": 40, "n_a": 64, "epochs": 5,
         "grid": {"stuck_fraction": [0.0, 0.3], "read_noise": [0.0, 0.05]}, "seeds": 3}
"""12 runs of a few milliseconds each."""

SMALL_ARGS = ["--task", "e-f", "--n-train", "20", "--n-test", "40", "--n-a", "64", "--epochs", "5",
              "--grid", "stuck_fraction=0,0.3", "--grid", "read_noise=0,0.05", "--seeds", "3"]

LONG_ARGS = ["--task", "e-f", "--n-a", "256", "--epochs", "10",
             "--grid", "stuck_fraction=0:0.45:10", "--seeds", "12"]
"""120 runs: seconds, long enough to be interrupted halfway."""


def fresh_python(*args: str, check: bool = True, timeout: float = 120,
                 **kwargs: object) -> subprocess.CompletedProcess:
    """``python ARGS`` in a fresh interpreter from the repository's root (``-c CODE``, a
    script's path, ...)."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, check=check, timeout=timeout, **kwargs)


def sweep_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mark1.cli", "sweep", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def start_sweep(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mark1.cli", "sweep", *args], cwd=ROOT,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def table(folder: Path) -> list[dict]:
    """The Parquet table without the wall times (the one column that may differ)."""
    import pyarrow.parquet as pq

    return pq.read_table(folder / "results.parquet").drop(["wall_time_s"]).to_pylist()


def journal_lines(folder: Path) -> int:
    path = folder / "runs.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def need_dask() -> None:
    try:
        import distributed  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("dask.distributed is not installed (pip install 'mark1-kit[sweep]')")


def without_wall(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rows]


# --------------------------------------------------------------------------- the design


def test_grid_ranges_are_evenly_spaced_with_both_ends_and_tidy_values():
    assert parse_values("stuck_fraction", "0:0.5:11", "--grid") == [
        0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5]
    assert parse_values("n_a", "64:512:3", "--grid") == [64, 288, 512]
    assert parse_values("preset", "ideal,cds-1960", "--grid") == ["ideal", "cds-1960"]
    spec = load_spec(SMALL)
    runs = spec.runs()
    assert len(runs) == 2 * 2 * 3
    assert spec.swept == ["stuck_fraction", "read_noise"]
    assert [dict(r.machine) for r in runs[:4]] == [
        {"read_noise": 0.0, "stuck_fraction": 0.0}] * 3 + [
        {"read_noise": 0.05, "stuck_fraction": 0.0}]
    assert [r.seed for r in runs[:4]] == [0, 1, 2, 0]


def test_latin_hypercube_puts_one_point_in_each_stratum_of_every_range():
    ranges = {"read_noise": SampleRange(0.0, 0.1), "step": SampleRange(0.001, 0.1, log=True),
              "n_a": SampleRange(10, 29)}
    points = draw_samples(ranges, 20, "lhs", seed=3)
    noise = np.array([p["read_noise"] for p in points])
    step = np.array([p["step"] for p in points])
    assert sorted(np.floor(noise / 0.1 * 20).astype(int)) == list(range(20))
    assert sorted(np.floor(np.log(step / 0.001) / np.log(100) * 20).astype(int)) == list(
        range(20))
    assert sorted(p["n_a"] for p in points) == list(range(10, 30))  # whole numbers, each once
    again = draw_samples(ranges, 20, "lhs", seed=3)
    assert again == points  # seeded
    uniform = draw_samples(ranges, 50, "random", seed=0)
    assert all(0 <= p["read_noise"] <= 0.1 and 0.001 <= p["step"] <= 0.1 for p in uniform)


def test_a_run_is_keyed_by_its_full_configuration():
    plain = load_spec({"task": "e-f", "seeds": 2}).runs()
    explicit = load_spec({"task": "e-f", "seeds": 2, "preset": "cds-1960",
                          "set": {"stuck_fraction": 0.002}}).runs()
    assert [r.key() for r in plain] == [r.key() for r in explicit]  # the preset's own value
    other = load_spec({"task": "e-f", "seeds": 2, "set": {"stuck_fraction": 0.003}}).runs()
    assert not {r.key() for r in plain} & {r.key() for r in other}
    own = load_spec({"task": "e-f", "seeds": 2, "task_seed": "seed"}).runs()
    assert own[0].key() == plain[0].key() and own[1].key() != plain[1].key()


# --------------------------------------------------------------------------- exact results


STANDALONE = """
import json, sys
import numpy as np
from mark1 import MarkI, make_task
out = []
for r in json.load(sys.stdin):
    task = make_task(r["task"], seed=r["task_seed"], n_train=r["n_train"], n_test=r["n_test"])
    names = np.array(task.classes)
    machine = {k: r[k] for k in ("stuck_fraction", "read_noise")}
    model = MarkI(preset=r["preset"], rule=r["rule"], n_a=r["n_a"], n_r=r["n_r"],
                  code=r["code"], max_iter=r["epochs"], random_state=r["seed"],
                  machine=machine)
    model.fit(task.X_train, names[task.y_train])
    out.append([model.score(task.X_train, names[task.y_train]),
                model.score(task.X_test, names[task.y_test]), model.n_iter_,
                int(sum(model.mistakes_per_epoch_)), model.machine_time_s, model.motor_steps])
print(json.dumps(out))
"""


def test_sweep_rows_equal_standalone_runs_of_the_public_api():
    """Shared task images and plugboards change nothing: each row is what MarkI gives alone,
    in a fresh interpreter that shares nothing."""
    spec = {**SMALL, "grid": {**SMALL["grid"], "n_a": [32, 64], "preset": ["cds-1960", "ideal"]},
            "task_seed": "seed", "seeds": 2}
    spec.pop("n_a")
    result = mark1.sweep(spec, workers=0)
    rows = result.rows
    assert len(rows) == 2 * 2 * 2 * 2 * 2
    alone = fresh_python("-c", STANDALONE, input=json.dumps(rows))
    mine = [[r["train_accuracy"], r["test_accuracy"], r["passes"], r["mistakes"],
             r["machine_time_s"], r["motor_steps"]] for r in rows]
    assert json.loads(alone.stdout) == mine
    assert {r["task_seed"] for r in rows} == {0, 1}


def test_results_do_not_depend_on_the_order_of_the_runs_in_a_worker():
    runs = load_spec({**SMALL, "seeds": 2}).runs()
    forward = [(c, without_wall([r])[0]) for c, r in run_chunk(runs)]
    backward = [(c, without_wall([r])[0]) for c, r in run_chunk(runs[::-1])]
    assert forward == backward[::-1]


def test_local_workers_give_the_rows_of_a_sweep_in_this_process(tmp_path):
    here = mark1.sweep(SMALL, workers=0)
    res = sweep_cli(*SMALL_ARGS, "--out", str(tmp_path / "two"), "--workers", "2")
    assert res.returncode == 0, res.stderr
    assert "12 runs (12 run now)" in res.stdout and "2 local worker processes" in res.stdout
    assert table(tmp_path / "two") == without_wall(here.rows)
    assert res.stderr == ""  # no progress bar when stderr is not a terminal


def test_a_terminal_sees_a_progress_bar_with_runs_rate_and_time_left(tmp_path):
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()  # a real terminal on stderr, 100 columns wide
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mark1.cli", "sweep", *SMALL_ARGS, "--out",
             str(tmp_path / "o"), "--workers", "1"], cwd=ROOT, env=ENV,
            stdout=subprocess.PIPE, stderr=follower, text=True)
        os.close(follower)
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed: the sweep is over
                break
            if not chunk:
                break
            seen += chunk
        assert proc.wait(120) == 0
    finally:
        os.close(leader)
    text = seen.decode(errors="replace")
    assert "12/12" in text and "run/s" in text  # runs done, runs per second
    assert re.search(r"\d\d:\d\d<\d\d:\d\d", text)  # elapsed < time left


def test_outputs_table_csv_report_and_figures(tmp_path):
    result = mark1.sweep(SMALL, out=tmp_path / "s", workers=1)
    out = tmp_path / "s"
    report = json.loads((out / "report.json").read_text())
    assert report["spec"]["grid"] == {"stuck_fraction": [0.0, 0.3], "read_noise": [0.0, 0.05]}
    assert report["counts"] == {"runs": 12, "from_journal": 0, "run_now": 12,
                                "rerun_after_lost_worker": 0}
    assert report["environment"]["workers"] == "1 local worker process"
    assert report["environment"]["packages"]["numpy"] == np.__version__
    by_noise = report["summary"]["read_noise"]["test_accuracy"]
    assert [p["runs"] for p in by_noise] == [6, 6]
    at_zero = [r["test_accuracy"] for r in result.rows if r["read_noise"] == 0.0]
    assert by_noise[0]["mean"] == pytest.approx(np.mean(at_zero))
    assert by_noise[0]["ci95"] > 0
    for name in ("accuracy_stuck_fraction.png", "accuracy_read_noise.png",
                 "heatmap_stuck_fraction_read_noise.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(report["files"]) == {p.name for p in out.iterdir()}
    import csv

    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12 and list(rows[0]) == list(result.rows[0])
    assert [float(r["test_accuracy"]) for r in rows] == [r["test_accuracy"] for r in result.rows]
    assert rows[0]["w_min"] == "-1.0" and rows[0]["bias_unit"] == "True"
    arrow = result.to_arrow()
    assert arrow.schema.field("n_excitatory").type == "int64"
    assert table(out) == without_wall(result.rows)


def test_the_parquet_table_holds_exactly_the_rows_and_needs_no_pandas():
    """The Parquet table is read from the CSV text with each column's type: every value comes
    back exactly (signed zero, subnormals, infinities, NaN, text with commas, quotes, a line break),
    and making it imports no pandas (0.2 s of every sweep)."""
    code = ("import json, math, sys\n"
            "import pyarrow as pa\n"
            "from mark1.sweeps.table import COLUMNS, column_kind, parquet_bytes, to_arrow\n"
            "texts = ['e-f', 'a,b \"q\"', '', 'x\\ny', '\u00fc']\n"
            "ints = [0, -1, 2**62, 7]\n"
            "floats = [0.1, -0.0, math.inf, 5e-324, -math.inf, 1 / 3, math.nan]\n"
            "pick = {str: texts, int: ints, float: floats, bool: [True, False]}\n"
            "rows = [{c: pick[column_kind(c)][(i + j) % len(pick[column_kind(c)])]\n"
            "         for j, c in enumerate(COLUMNS)} for i in range(14)]\n"
            "table = to_arrow(rows)\n"
            "parquet_bytes(rows)\n"
            "types = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}\n"
            "assert table.schema == pa.schema([(c, types[column_kind(c)]) for c in COLUMNS])\n"
            "same = lambda a, b: repr(a) == repr(b) and type(a) is type(b)\n"
            "bad = [(i, c) for i, row in enumerate(table.to_pylist()) for c in COLUMNS\n"
            "       if not same(row[c], rows[i][c])]\n"
            "print(json.dumps([bad, 'pandas' in sys.modules, to_arrow([]).num_rows]))\n")
    res = fresh_python("-c", code)
    assert json.loads(res.stdout) == [[], False, 0]


def test_spec_file_and_flags_on_top_of_it(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(
        'task = "e-f"\nn_train = 20\nn_test = 40\nn_a = [32, 64]\nepochs = 3\nseeds = 2\n'
        '[set]\nbacklash_steps = 1.0\n'
        '[sample]\nmethod = "lhs"\nn = 3\nseed = 1\n'
        'ranges = { read_noise = [0, 0.05], drift_sd = { low = 0.001, high = 0.1, log = true } }\n')
    res = sweep_cli("--spec", str(spec), "--seeds", "0,5", "--out", str(tmp_path / "o"),
                    "--workers", "1")
    assert res.returncode == 0, res.stderr
    rows = table(tmp_path / "o")
    assert len(rows) == 2 * 3 * 2
    assert {r["seed"] for r in rows} == {0, 5} and {r["n_a"] for r in rows} == {32, 64}
    assert {r["backlash_steps"] for r in rows} == {1.0}
    assert len({r["read_noise"] for r in rows}) == 3
    assert all(0.001 <= r["drift_sd"] <= 0.1 for r in rows)
    assert (tmp_path / "o" / "heatmap_n_a_read_noise.png").exists()
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    from mark1.sweeps.spec import read_spec_file

    given = {**read_spec_file(spec), "seeds": [0, 5]}
    assert load_spec(report["spec"]).runs() == load_spec(given).runs()  # the report's spec
    assert [r["key"] for r in rows] == [run.key() for run in load_spec(given).runs()]


# --------------------------------------------------------------------------- resuming


def test_journal_drops_a_line_cut_short_and_refuses_a_second_writer(tmp_path):
    with Journal(tmp_path) as journal:
        journal.add("a" * 64, {"seed": 0}, {"test_accuracy": 0.5})
    with open(tmp_path / "runs.jsonl", "ab") as fh:
        fh.write(b'{"key": "bbb", "res')  # killed mid-write
    with Journal(tmp_path) as journal:
        assert list(journal.results) == ["a" * 64]
        with pytest.raises(ValueError, match="another sweep is writing"):
            Journal(tmp_path).__enter__()
        journal.add("c" * 64, {"seed": 1}, {"test_accuracy": 0.75})
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    assert [json.loads(line)["key"][0] for line in lines] == ["a", "c"]


def test_a_journal_whose_file_went_away_closes_without_hiding_the_sweeps_own_error(tmp_path):
    """A sweep that fails before its first run removes its empty journal; if the file is
    already gone (the folder cleared meanwhile), that is no second error."""
    with pytest.raises(RuntimeError, match="the sweep's own"):
        with Journal(tmp_path / "o"):
            (tmp_path / "o" / "runs.jsonl").unlink()
            raise RuntimeError("the sweep's own error")
    assert not (tmp_path / "o").exists()


def _worker_pids(sweep_pid: int) -> list[int]:
    import psutil

    kids = psutil.Process(sweep_pid).children(recursive=True)
    return [p.pid for p in kids if p.ppid() != sweep_pid]  # forked by the fork server


def _gone(pids: list[int]) -> bool:
    import psutil

    return not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                   for p in pids)


@pytest.fixture(scope="module")
def long_reference() -> list[dict]:
    """The rows of LONG_ARGS, uninterrupted, in this process."""
    spec = {"task": "e-f", "n_a": 256, "epochs": 10, "seeds": 12,
            "grid": {"stuck_fraction": "0:0.45:10"}}
    return without_wall(mark1.sweep(spec, workers=0).rows)


def test_a_sweep_killed_halfway_resumes_with_only_the_missing_runs(tmp_path, long_reference):
    out = tmp_path / "s"
    proc = start_sweep(*LONG_ARGS, "--out", str(out), "--workers", "1")
    try:
        wait_for(lambda: journal_lines(out) >= 40, 120, "a third of the runs")
        workers = _worker_pids(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    done = journal_lines(out)
    assert 40 <= done < 120
    assert sorted(p.name for p in out.iterdir()) == ["runs.jsonl"]  # no table, half-written
    wait_for(lambda: _gone(workers), 30, "the killed sweep's workers to leave")
    res = sweep_cli(*LONG_ARGS, "--out", str(out), "--workers", "1")
    assert res.returncode == 0, res.stderr
    resumed = json.loads((out / "report.json").read_text())["counts"]
    assert resumed["from_journal"] >= done and resumed["run_now"] == 120 - resumed["from_journal"]
    assert table(out) == long_reference


def test_ctrl_c_stops_the_sweep_and_its_workers_and_says_how_to_finish(tmp_path):
    out = tmp_path / "s"
    proc = subprocess.Popen([sys.executable, "-m", "mark1.cli", "sweep", *LONG_ARGS, "--out",
                             str(out), "--workers", "2"], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own group, as in a terminal
    try:
        wait_for(lambda: journal_lines(out) >= 20, 120, "some runs")
        workers = _worker_pids(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends: the whole group
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert stderr == (f"mark1 sweep: interrupted; the runs finished so far are in "
                      f"{out / 'runs.jsonl'}: the same command runs the rest\n")
    assert sorted(p.name for p in out.iterdir()) == ["runs.jsonl"]
    wait_for(lambda: _gone(workers), 30, "the workers to leave")


def test_a_local_worker_killed_mid_sweep_loses_only_its_runs_in_flight(tmp_path,
                                                                        long_reference):
    out = tmp_path / "s"
    proc = start_sweep(*LONG_ARGS, "--out", str(out), "--workers", "2")
    try:
        wait_for(lambda: journal_lines(out) >= 30, 120, "a quarter of the runs")
        os.kill(_worker_pids(proc.pid)[0], signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "rerun after a worker died" in stdout
    counts = json.loads((out / "report.json").read_text())["counts"]
    assert 1 <= counts["rerun_after_lost_worker"] <= 16  # one chunk in flight, not the rest
    assert counts["run_now"] == 120
    assert table(out) == long_reference


# --------------------------------------------------------------------------- Dask


class DaskCluster:
    """``dask scheduler`` and ``dask worker`` processes on 127.0.0.1."""

    def __init__(self, folder: Path, n_workers: int) -> None:
        dask = Path(sys.executable).parent / "dask"
        file = folder / "scheduler.json"
        self.procs = [subprocess.Popen(
            [str(dask), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(file)], cwd=ROOT, env=ENV,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        wait_for(file.exists, 60, "the scheduler to start")
        wait_for(lambda: "address" in file.read_text(), 10, "the scheduler file")
        self.address = json.loads(file.read_text())["address"]
        self.workers = [subprocess.Popen(
            [str(dask), "worker", "--scheduler-file", str(file), "--nthreads", "1",
             "--no-nanny", "--no-dashboard", "--host", "127.0.0.1", "--name", f"w{i}",
             "--death-timeout", "60"], cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL) for i in range(n_workers)]
        self.procs += self.workers
        from distributed import Client

        with Client(self.address, timeout=30) as client:
            client.wait_for_workers(n_workers, timeout=60)

    def close(self) -> None:
        for proc in self.procs[::-1]:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory) -> Iterator[DaskCluster]:
    need_dask()
    cluster = DaskCluster(tmp_path_factory.mktemp("dask"), 2)
    try:
        yield cluster
    finally:
        cluster.close()


def test_a_dask_scheduler_with_two_workers_gives_the_local_table(tmp_path, dask_cluster):
    local = sweep_cli(*SMALL_ARGS, "--out", str(tmp_path / "local"), "--workers", "2")
    assert local.returncode == 0, local.stderr
    res = sweep_cli(*SMALL_ARGS, "--out", str(tmp_path / "dask"), "--scheduler",
                    dask_cluster.address)
    assert res.returncode == 0, res.stderr
    assert f"on the Dask scheduler at {dask_cluster.address}" in res.stdout
    assert table(tmp_path / "dask") == table(tmp_path / "local")
    csv_local = (tmp_path / "local" / "results.csv").read_text().splitlines()
    csv_dask = (tmp_path / "dask" / "results.csv").read_text().splitlines()
    assert [r.rsplit(",", 1)[0] for r in csv_dask] == [r.rsplit(",", 1)[0] for r in csv_local]


def test_a_dask_worker_killed_mid_sweep_has_its_runs_rerun(tmp_path, long_reference):
    need_dask()
    cluster = DaskCluster(tmp_path, 2)
    try:
        out = tmp_path / "s"
        proc = start_sweep(*LONG_ARGS, "--out", str(out), "--scheduler", cluster.address)
        try:
            wait_for(lambda: journal_lines(out) >= 30, 120, "a quarter of the runs")
            cluster.workers[0].kill()
            stdout, stderr = proc.communicate(timeout=300)
        finally:
            proc.kill()
        assert proc.returncode == 0, stderr
        assert cluster.workers[0].wait(5) == -signal.SIGKILL
        assert table(out) == long_reference
    finally:
        cluster.close()


def test_a_local_dask_cluster_gives_the_same_rows(tmp_path):
    need_dask()
    result = mark1.sweep(SMALL, cluster="dask", workers=2)
    assert result.report["environment"]["workers"] == "a Dask LocalCluster of 2 workers"
    assert without_wall(result.rows) == without_wall(mark1.sweep(SMALL, workers=0).rows)


def _busy(seconds: float) -> int:
    import time

    n, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        n += 1
    return n


def test_a_local_dask_cluster_runs_its_workers_without_the_statistical_profiler():
    """Dask's profiler samples a worker's running task every 10 ms, taking the GIL from it."""
    need_dask()
    from mark1.sweeps.executors import DaskWorkers

    executor = DaskWorkers(n=2)
    try:
        client = executor.client
        workers = list(client.scheduler_info()["workers"])
        assert len(workers) == 2
        client.gather([client.submit(_busy, 0.3, workers=[w], pure=False) for w in workers])
        samples = client.run(lambda dask_worker: dask_worker.profile_recent["count"])
        assert samples == dict.fromkeys(workers, 0)
    finally:
        executor.close()


# --------------------------------------------------------------------------- bad input


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BAD = [
    (["--task", "e-f", "--grid", "stuck_fractio=0,0.1"], "unknown parameter 'stuck_fractio'"),
    (["--task", "e-f", "--grid", "read_noise="], "the grid of read_noise is empty"),
    (["--task", "e-f", "--grid", "read_noise=0:0.1:0"], "the grid of read_noise is empty"),
    (["--task", "e-f", "--grid", "stuck_fraction=0,1.5"],
     "stuck_fraction = 1.5 is out of range (allowed: [0, 1))"),
    (["--task", "e-f", "--grid", "n_a=0,8"], "n_a must be >= 1; got 0"),
    (["--task", "e-f", "--grid", "preset=ideal,cds-2000"], "unknown preset 'cds-2000'"),
    (["--task", "e-f", "--set", "n_excitatory=2.5"], "n_excitatory takes whole numbers"),
    (["--task", "e-f", "--seeds", "0"], "the number of seeds must be at least 1"),
    (["--task", "letters", "--n-r", "4"], "26 classes is too many for 4 R-units"),
    (["--grid", "read_noise=0,0.1"], "no task given"),
    (["--task", "e-f", "--sample", "read_noise=0:0.1"], "--sample needs --samples N"),
    (["--task", "e-f", "--sample", "preset=0:1", "--samples", "3"], "preset is not a number"),
    (["--task", "e-f", "--scheduler", "tcp://127.0.0.1:1", "--workers", "2"],
     "do not give --workers with --scheduler"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[m for _, m in BAD])
def test_a_bad_spec_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, message):
    from mark1.cli import main

    status = main(["sweep", *args, "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert status == 2, err
    assert err.startswith("mark1 sweep: error: ") and err.count("\n") == 1, err
    assert message in err and out == ""
    assert list(tmp_path.iterdir()) == []


def test_the_command_line_answers_a_bad_spec_in_one_line(tmp_path):
    res = sweep_cli("--task", "e-f", "--grid", "stuck_fraction=0,1.5", "--out",
                    str(tmp_path / "out"), timeout=60)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr == ("mark1 sweep: error: grid.stuck_fraction = 1.5: pots: stuck_fraction "
                          "= 1.5 is out of range (allowed: [0, 1))\n")
    assert list(tmp_path.iterdir()) == []


def test_a_bad_spec_file_is_one_line(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text('task = "e-f"\n[grid]\nread_noise = [0, 0.1\n')
    res = sweep_cli("--spec", str(spec), "--out", str(tmp_path / "out"))
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert f"{spec}: not a valid TOML spec" in res.stderr
    spec.write_text('task = "e-f"\n[sample]\nn = 4\nranges = { read_noise = [0.2, 0.1] }\n')
    res = sweep_cli("--spec", str(spec), "--out", str(tmp_path / "out"))
    assert res.returncode == 2 and "needs finite low <= high" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.toml"]


def test_a_scheduler_that_does_not_answer_is_one_line_and_writes_nothing(tmp_path):
    need_dask()
    address = f"tcp://127.0.0.1:{_closed_port()}"
    res = sweep_cli(*SMALL_ARGS, "--out", str(tmp_path / "out"), "--scheduler", address,
                    "--connect-timeout", "1", timeout=60)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith(f"mark1 sweep: error: the Dask scheduler at {address} does "
                                 "not answer within 1 s")
    assert res.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_without_pyarrow_the_command_names_the_extra_and_writes_nothing(tmp_path):
    code = ("import sys; sys.modules['pyarrow'] = None\n"
            "from mark1.cli import main\n"
            f"sys.exit(main(['sweep', *{SMALL_ARGS!r}, '--out', {str(tmp_path / 'o')!r}]))\n")
    res = fresh_python("-c", code, check=False, timeout=60)
    assert res.returncode == 2
    assert "pip install 'mark1-kit[sweep]'" in res.stderr and res.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_the_sweep_command_imports_no_heavy_module_to_register():
    code = ("import sys, argparse\n"
            "import mark1, mark1.sweeps, mark1.sweep_cli\n"
            "mark1.sweep_cli.register(argparse.ArgumentParser().add_subparsers())\n"
            "print(','.join(m for m in ('dask', 'distributed', 'pyarrow', 'pandas', 'matplotlib',"
            " 'scipy', 'tqdm') if m in sys.modules))\n")
    res = fresh_python("-c", code)
    assert res.stdout.strip() == ""


def test_a_worker_runs_and_warms_up_without_importing_scikit_learn():
    """scikit-learn's import (~0.8 s) would come before every sweep's first run: a worker
    trains on images it made itself and has nothing for it to check. Its warm-up (the fork
    server's) loads the compiled epochs without scipy.linalg or matplotlib (~0.5 s more)."""
    code = ("import sys, json\n"
            "from mark1.sweeps.spec import load_spec\n"
            "from mark1.sweeps.worker import run_chunk, warm_up\n"
            "warm_up()\n"
            "heavy = ('sklearn', 'pandas', 'scipy.linalg', 'matplotlib')\n"
            "warm = [m for m in heavy if m in sys.modules]\n"
            f"rows = run_chunk(load_spec({SMALL!r}).runs()[:2])\n"
            "assert all(isinstance(r, dict) for _, r in rows), rows\n"
            "print(json.dumps([warm, [m for m in heavy[:2] if m in sys.modules]]))\n")
    res = fresh_python("-c", code)
    assert json.loads(res.stdout) == [[], []]


def test_the_sweeps_process_keeps_few_tasks_images(monkeypatch):
    """The images kept for the local workers are bounded: as many tasks as workers and one
    more, and by bytes (but for the task in hand)."""
    from mark1.sweeps import executors

    keys = [("e-f", seed, 4, 2) for seed in range(5)]
    pool = executors.LocalWorkers(2)
    try:
        for key in keys:
            assert pool._images_of(key).X_train.shape == (4, 20, 20)
        assert list(pool._images) == keys[-3:]
        monkeypatch.setattr(executors, "IMAGES_KEPT_BYTES", 1)
        pool._images_of(keys[0])
        assert list(pool._images) == keys[:1]
    finally:
        pool.close()


def test_local_workers_get_their_tasks_images_from_the_sweep():
    """The sweep's process makes each task's images (the first while the workers start) and
    sends them with a worker's first chunk of that task: a worker never draws the letters
    (no matplotlib), and its rows are those of runs that made their own images."""
    from mark1.sweeps.executors import LocalWorkers

    runs = load_spec({**SMALL, "seeds": 3}).runs()
    executor = LocalWorkers(1)
    try:
        executor.make_images_ahead(runs[0].task_key())
        got: list = []
        executor.run(make_chunks(runs, 1), got.extend, lambda n: None)
        probe = "[m for m in ('matplotlib', 'scipy.linalg') if m in __import__('sys').modules]"
        in_worker = executor._slots[0].submit(eval, probe).result(timeout=60)
    finally:
        executor.close()
    assert in_worker == []
    mine = dict(run_chunk(runs))
    assert len(got) == len(runs)
    for run, result in got:
        assert {k: v for k, v in result.items() if k != "wall_time_s"} == {
            k: v for k, v in mine[run].items() if k != "wall_time_s"}


SCRIPT = (f"import mark1\nSMALL = {SMALL!r}\n"
          "def main(out):\n"
          "    return mark1.sweep(SMALL, workers=1, progress=False, out=out)\n")


@pytest.mark.parametrize("tail, line", [
    ("main({out!r})\n", 5),
    ("rows = mark1.sweep(SMALL, workers=2, out={out!r}).rows\nprint(len(rows))\n", 5),
    ("if __name__ != '__main__':\n    pass\nelse:\n    main({out!r})\n", 8),
])
def test_a_script_that_sweeps_at_its_top_level_is_refused_before_any_worker_starts(
        tmp_path, tail, line):
    """Local workers import the main module: a script that sweeps outside ``if __name__ ==
    "__main__":`` would start its sweep again in each (Python refuses it, worker after
    worker, in a page of tracebacks each). One line names the script's line and the fix."""
    script = tmp_path / "study.py"
    script.write_text(SCRIPT + tail.format(out=str(tmp_path / "o")))
    res = fresh_python(str(script), check=False, timeout=60)
    assert res.returncode == 1 and res.stdout == ""
    last = res.stderr.strip().splitlines()[-1]
    assert last == (f"ValueError: {script}, line {line}: the sweep runs at the script's top "
                    "level, and its worker processes import the script: put it under "
                    "`if __name__ == \"__main__\":` (or run it in this process: workers=0)")
    assert "Traceback" in res.stderr and res.stderr.count("Traceback") == 1
    assert not (tmp_path / "o").exists()


def test_a_guarded_script_sweeps_and_a_script_from_stdin_is_told_why_it_cannot(tmp_path):
    def guarded(out: Path) -> str:
        return SCRIPT + f"if __name__ == '__main__':\n    print(len(main({str(out)!r}).rows))\n"

    script = tmp_path / "study.py"
    script.write_text(guarded(tmp_path / "o"))
    assert fresh_python(str(script), timeout=120).stdout == "12\n"
    assert (tmp_path / "o" / "results.csv").exists()
    res = fresh_python("-", input=guarded(tmp_path / "p"), check=False, timeout=60)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == (
        "ValueError: the sweep's worker processes start by importing the main module, and "
        "<stdin> is not a file: run the script from a file, or the sweep in this process "
        "(workers=0)")
    assert not (tmp_path / "p").exists()
    inline = f"import mark1; print(len(mark1.sweep({SMALL!r}, workers=1, progress=False).rows))"
    assert fresh_python("-c", inline, timeout=120).stdout == "12\n"  # nothing to import


def _dies_on_seed_1(runs, images=None, once: str | None = None):
    """``run_chunk``, but the worker process dies on a chunk with seed 1 (only the first time
    when ``once`` names a file that is not there yet)."""
    if any(r.seed == 1 for r in runs) and (once is None or not os.path.exists(once)):
        if once is not None:
            Path(once).touch()
        os._exit(3)
    return run_chunk(runs, images)


@pytest.mark.parametrize("once", [True, False])
def test_a_worker_that_dies_loses_only_the_chunk_it_ran_not_the_one_it_held(
        tmp_path, monkeypatch, once):
    """A local worker holds its next chunk while it runs one. When it dies, the chunk it ran
    is lost and runs again (three deaths on it stop the sweep); the chunk it held had not
    started: it goes back unrun and uncounted."""
    import functools

    from mark1.errors import Mark1Error
    from mark1.sweeps import executors

    killer = functools.partial(_dies_on_seed_1, once=str(tmp_path / "died") if once else None)
    monkeypatch.setattr(executors, "run_chunk", killer)
    runs = load_spec({**SMALL, "seeds": 4}).runs()
    chunks = [executors.Chunk(runs[0].task_key(), tuple(r for r in runs if r.seed == seed))
              for seed in range(4)]  # seed 1's chunk is the second: the one held first
    pool = executors.LocalWorkers(1)
    got: list = []
    lost: list[int] = []
    try:
        if once:
            pool.run(chunks, got.extend, lost.append)
        else:
            with pytest.raises(Mark1Error, match="killed their worker 3 times"):
                pool.run(chunks, got.extend, lost.append)
    finally:
        pool.close()
    if once:
        assert lost == [4]  # seed 1's four runs, not seed 2's it held behind them
        assert sorted(r.key() for r, _ in got) == sorted(r.key() for r in runs)
    else:
        assert lost == [4, 4]  # the third death stops the sweep
        assert {r.seed for r, _ in got} == {0}


def test_a_sweep_leaves_the_callers_matplotlib_as_it_was(tmp_path):
    """A notebook's plotting backend stays its own: the figures are drawn without pyplot,
    and a sweep without a folder draws none."""
    code = ("import json, sys, matplotlib, mark1\n"
            "matplotlib.use('svg')\n"
            f"mark1.sweep({SMALL!r}, workers=1, progress=False)\n"
            f"mark1.sweep({SMALL!r}, workers=1, progress=False, out={str(tmp_path / 'o')!r})\n"
            "print(json.dumps([matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules]))\n")
    res = fresh_python("-c", code)
    assert json.loads(res.stdout) == ["svg", False]
    assert (tmp_path / "o" / "accuracy_stuck_fraction.png").stat().st_size > 1000


def test_chunks_end_where_a_seeds_runs_end_but_near_the_end_of_the_sweep():
    """The runs of a seed share a plugboard's wiring, drawn once by the worker that runs
    them: a chunk cuts a seed's runs only when it is shorter than half of them (near the
    end, where chunks shrink to one run)."""
    runs = load_spec({**SMALL, "grid": {"stuck_fraction": "0:0.45:10"}, "seeds": 20}).runs()
    for workers in (1, 2, 4):
        chunks = make_chunks(runs, workers)
        cut = [(a, b) for a, b in zip(chunks, chunks[1:]) if a.runs[-1].seed == b.runs[0].seed]
        for a, _ in cut:  # a chunk that cuts a seed lies in that seed, and is short
            assert {r.seed for r in a.runs} == {a.runs[-1].seed} and len(a.runs) < 5
        chunks_of: dict[int, set[int]] = {}
        for i, chunk in enumerate(chunks):
            for run in chunk.runs:
                chunks_of.setdefault(run.seed, set()).add(i)
        whole = [seed for seed, where in chunks_of.items() if len(where) == 1]
        assert len(whole) >= 0.7 * 20  # most seeds' runs travel together


def test_chunks_hold_every_run_once_one_task_each_and_shrink_toward_the_end():
    runs = load_spec({**SMALL, "seeds": 60}).runs() + load_spec(
        {**SMALL, "seeds": 4, "task_seed": "seed"}).runs()
    for workers in (1, 2, 8):
        chunks = make_chunks(runs, workers)
        assert sorted(r.key() for c in chunks for r in c.runs) == sorted(r.key() for r in runs)
        assert all({r.task_key() for r in c.runs} == {c.task} for c in chunks)
        sizes = [len(c.runs) for c in chunks]
        assert max(sizes) <= 16
        assert sizes[-1] == 1 and max(sizes[len(sizes) // 2:]) < max(sizes)  # a short tail


def test_a_reused_wiring_is_the_one_drawn_and_leaves_the_generator_as_drawing_would():
    from mark1.plugboard import Plugboard, PlugboardSpec, WiringMemo, reusing_wirings

    spec = PlugboardSpec(n_excitatory=5, n_inhibitory=5, a_theta=1.0, a_theta_spread=0.5)
    drawn_rng = np.random.default_rng(11)
    drawn = Plugboard.wire(spec, 40, 400, drawn_rng)
    memo = WiringMemo(4)
    with reusing_wirings(memo):
        first = Plugboard.wire(spec, 40, 400, np.random.default_rng(11))
        rng = np.random.default_rng(11)
        again = Plugboard.wire(spec, 40, 400, rng)
        other = Plugboard.wire(spec, 40, 400, np.random.default_rng(12))
    for board in (first, again):
        assert np.array_equal(board.wiring, drawn.wiring)
        assert np.array_equal(board.threshold, drawn.threshold)
    assert again.wiring is first.wiring and not again.wiring.flags.writeable
    assert rng.random() == drawn_rng.random()  # the generator moved on as drawing moves it
    assert not np.array_equal(other.wiring, drawn.wiring)
    outside = Plugboard.wire(spec, 40, 400, np.random.default_rng(11))
    assert outside.wiring is not first.wiring and outside.wiring.flags.writeable
