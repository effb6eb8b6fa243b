"""What a sweep costs against the same runs done by hand, and how it scales, in one run.

The sweep: ``e-f`` on ``cds-1960``, 20 passes at most, ``stuck_fraction`` 0 to 0.45 in ten
steps, 20 seeds: 200 runs (``--points``/``--seeds`` change it). Each of these is timed in a
fresh process of its own, from after ``import mark1`` to the end, interleaved, ``--repeat``
times over:

* ``by hand``     -- the same 200 runs one after the other with the public API, as a user would
                     write them: ``make_task`` once per distinct task (one here: every run sees
                     the images of task seed 0), then ``MarkI(...).fit`` and two ``score``
                     calls per run. Like the sweep's workers, it loads the compiled epochs and
                     renders the glyphs in its first run.
* ``1 worker``    -- ``mark1.sweep(..., workers=1, out=...)``: the whole call, checking the spec,
                     starting the worker process, the journal, the table, the figures and
                     ``report.json`` included.
* ``2 workers``   -- the same with two local worker processes.
* ``dask 2``      -- the same on a Dask scheduler and two ``dask worker`` processes (one thread
                     each) on 127.0.0.1, started before the timing as a running cluster is (its
                     workers load the kernels and build the task in their first sweep and keep
                     them: a cluster that has run a sweep before). It is paused (SIGSTOP)
                     during the other measurements: idle, it still wakes many times a second.

Ratios: sweep overhead = ``1 worker / by hand`` (goal <= 1.10), scaling = ``1 worker / 2
workers`` (goal >= 1.8 on 2 cores), Dask = ``dask 2 / 2 workers`` (goal within 10 %), and
machine-runs per minute. Scaling and Dask are measured again on a sweep three times as long
(``--long-seeds``, 60: 600 runs), where a sweep's fixed costs -- a worker's start, loading the
compiled epochs, the figures: about a second in all -- weigh a third as much.
Scaling is measured a third way, ``again``: the 1- and 2-worker sweeps each in a fresh process
that has run a one-run sweep on as many workers before, as a notebook's second sweep does (the
fork server that starts the workers is up, with numba's compiled epochs loaded; the writers'
libraries are imported): like the Dask cluster, workers whose start is already paid.
For information, ``by hand`` is also timed in this process once warm (kernels loaded, glyphs
rendered): the sweep's fixed cost (a worker process that loads the kernels, figures) against
nothing. The machine's load average is printed before and after each
round, and the cores that other work used during each measurement (Linux's /proc/stat, less
the measurement's own processes): on 2 cores shared with other work, scaling cannot reach 2
while something else runs. ``--retries N`` waits for a quiet second before each measurement
and measures again, up to N times, when other work took more than ``--other`` cores (0.1).

Run: ``python benchmarks/bench_sweep.py`` (``--quick``: 40 runs, one round; on a shared
machine add ``--retries 5``).
"""

from __future__ import annotations

import os

for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")  # the sweep's workers run on one BLAS thread too

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import mark1  # noqa: E402
from mark1 import MarkI, make_task  # noqa: E402
from mark1.sweeps.spec import load_spec  # noqa: E402


def by_hand(spec: dict) -> float:
    """The spec's runs one after the other with the public API; seconds."""
    runs = load_spec(spec).runs()
    started = time.perf_counter()
    tasks: dict = {}
    for run in runs:
        key = run.task_key()
        if key not in tasks:
            tasks[key] = make_task(run.task, seed=run.images_seed, n_train=run.n_train,
                                   n_test=run.n_test)
        task = tasks[key]
        names = np.array(task.classes)
        model = MarkI(preset=run.preset, rule=run.rule, n_a=run.n_a, n_r=run.n_r, code=run.code,
                      max_iter=run.epochs, random_state=run.seed, machine=dict(run.machine))
        model.fit(task.X_train, names[task.y_train])
        model.score(task.X_train, names[task.y_train])
        model.score(task.X_test, names[task.y_test])
    return time.perf_counter() - started


def child(mode: str, spec: dict, out: str, where: dict) -> None:
    """One timed measurement (``--child``): prints its seconds and the runs' own time.
    ``again``: the sweep in a process that has run a one-run sweep on the same workers before
    (a notebook's second sweep: the fork server is up, the writers' libraries imported)."""
    if mode == "again":  # (a folder of its own, emptied: a finished journal would start none)
        shutil.rmtree(out + "-first", ignore_errors=True)
        mark1.sweep({**spec, "seeds": 1, "grid": {"stuck_fraction": [0.0]}}, out=out + "-first",
                    progress=False, **where)
    started = time.perf_counter()
    if mode == "hand":
        by_hand(spec)
        inside = None
    else:
        shutil.rmtree(out, ignore_errors=True)
        inside = mark1.sweep(spec, out=out, progress=False, **where).report["runs_wall_time_s"]
    print(json.dumps({"s": time.perf_counter() - started, "runs_s": inside}))


def become_subreaper() -> bool:
    """Adopt this process's orphaned descendants (Linux): a sweep's fork server and workers
    outlive the process that ran it by a moment, and their CPU time counts only once they
    are reaped by an ancestor."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def reap(keep: set[int], timeout: float = 60) -> None:
    """Wait for every child of this process but ``keep`` (the Dask cluster) to exit."""
    import psutil

    deadline = time.monotonic() + timeout
    while True:
        others = [p.pid for p in psutil.Process().children() if p.pid not in keep]
        if not others:
            return
        for pid in others:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {others} did not exit")
        time.sleep(0.02)


def cpu_of(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system
    return total


def machine_busy_s() -> float | None:
    """CPU time every process of the machine has used since boot, s (Linux's /proc/stat;
    None elsewhere)."""
    try:
        with open("/proc/stat") as fh:
            user, nice, system, _idle, _iowait, irq, softirq = map(
                int, fh.readline().split()[1:8])
    except (OSError, ValueError):
        return None
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def wait_until_idle(most: float = 0.1, timeout: float = 180.0) -> float | None:
    """Wait (at most ``timeout`` s) for a second in which the machine's other work uses less
    than ``most`` of a core; that second's use, in cores."""
    deadline = time.monotonic() + timeout
    while True:
        before, start = machine_busy_s(), time.monotonic()
        time.sleep(1.0)
        after = machine_busy_s()
        if before is None or after is None:
            return None
        used = (after - before) / (time.monotonic() - start)
        if used < most or time.monotonic() > deadline:
            return used


def fresh(mode: str, spec: dict, scratch: Path, cluster: Cluster | None = None,
          **where: object) -> tuple[float, float, float | None, float | None]:
    """``mode`` in a fresh process: its wall time (after ``import mark1``), the CPU time of it
    and every process it started (and of the Dask cluster's processes while it ran), the
    runs' own time inside the workers, and the cores that other work on the machine used
    meanwhile (None where unknown)."""
    import resource

    keep = {p.pid for p in cluster.procs} if cluster is not None else set()
    if cluster is not None:
        for proc in cluster.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"the Dask cluster's {' '.join(proc.args[1:2])} process "
                                   f"{proc.pid} exited with code {proc.returncode}")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cluster_before = cpu_of(sorted(keep))
    busy_before, started = machine_busy_s(), time.perf_counter()
    args = json.dumps([mode, spec, str(scratch / "sweep"), where])
    res = subprocess.run([sys.executable, __file__, "--child", args], capture_output=True,
                         text=True, check=True)
    reap(keep)
    busy_after, took = machine_busy_s(), time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
           + cpu_of(sorted(keep)) - cluster_before)
    other = None
    if busy_before is not None and busy_after is not None:
        other = max(0.0, busy_after - busy_before - cpu) / took
    out = json.loads(res.stdout.strip().splitlines()[-1])
    return out["s"], cpu, out["runs_s"], other


class Cluster:
    """A Dask scheduler and two single-thread workers on 127.0.0.1, as separate processes."""

    def __init__(self, folder: Path, n: int = 2, profiler: bool = True) -> None:
        from distributed import Client

        dask = str(Path(sys.executable).parent / "dask")
        file = folder / "scheduler.json"
        # paused (SIGSTOP) between its measurements, the workers send no heartbeats: without a
        # longer time to live the scheduler drops them after 5 minutes of pauses, and a worker
        # without a nanny then exits
        env = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": "2 hours"}
        if not profiler:  # as docs/SWEEPS.md advises for workers started for sweeps
            env["DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED"] = "False"
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
        self.procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0",
                                        "--no-dashboard", "--scheduler-file", str(file)],
                                       **quiet)]
        deadline = time.monotonic() + 60
        while not (file.exists() and "address" in file.read_text()):
            if time.monotonic() > deadline:
                raise RuntimeError("the Dask scheduler did not start in 60 s")
            time.sleep(0.05)
        self.address = json.loads(file.read_text())["address"]
        self.procs += [subprocess.Popen([dask, "worker", "--scheduler-file", str(file),
                                         "--nthreads", "1", "--no-nanny", "--no-dashboard",
                                         "--host", "127.0.0.1"], **quiet) for _ in range(n)]
        with Client(self.address, timeout=30) as client:
            client.wait_for_workers(n, timeout=60)

    def pause(self) -> None:
        """Stop the cluster's processes (SIGSTOP) while other measurements run: an idle
        scheduler and its workers still wake up many times a second (heartbeats), which on
        2 cores takes time from a sweep that keeps both busy."""
        import signal

        for proc in self.procs:
            proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        import signal

        for proc in self.procs:
            proc.send_signal(signal.SIGCONT)
        time.sleep(0.5)  # heartbeats caught up before the timing starts

    def close(self) -> None:
        self.resume()
        for proc in self.procs[::-1]:
            proc.terminate()
            proc.wait(15)


def print_ceiling(one: list[float], runs: list[float]) -> None:
    """The most 2 workers could gain on this sweep (Amdahl): its fixed part F (the 1-worker
    sweep's wall time less its runs' own time: starting the worker, the table and figures)
    stays whole, the runs' time W halves: (F + W) / (F + W / 2)."""
    fixed = [t - w for t, w in zip(one, runs)]
    most = [t / (f + w / 2) for t, f, w in zip(one, fixed, runs)]
    print(f"  at most, the fixed part kept whole: {', '.join(f'{x:.2f}' for x in most)} "
          f"(fixed part {', '.join(f'{f:.2f}' for f in fixed)} s)")


def load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10, help="stuck_fraction values (10)")
    parser.add_argument("--seeds", type=int, default=20, help="seeds per value (20)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds, interleaved (3)")
    parser.add_argument("--long-seeds", type=int, default=60,
                        help="seeds of the long sweep for scaling (60; 0: none)")
    parser.add_argument("--no-dask", action="store_true", help="skip the Dask cluster")
    parser.add_argument("--dask-no-profiler", action="store_true",
                        help="start the Dask workers without Dask's statistical profiler")
    parser.add_argument("--quick", action="store_true", help="40 runs, one round")
    parser.add_argument("--retries", type=int, default=0,
                        help="on a shared machine: wait for a quiet second before each "
                             "measurement, and measure again (up to this many times) when "
                             "other work used more than --other cores meanwhile (0)")
    parser.add_argument("--other", type=float, default=0.1,
                        help="cores other work may use during a measurement (0.1)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(*json.loads(args.child))
        return
    if args.quick:
        args.points, args.seeds, args.repeat, args.long_seeds = 4, 10, 1, 0
    spec = {"task": "e-f", "preset": "cds-1960", "epochs": 20, "seeds": args.seeds,
            "grid": {"stuck_fraction": f"0:0.45:{args.points}"}}
    n_runs = args.points * args.seeds
    print(f"{n_runs} runs: e-f on cds-1960, 20 passes at most, {args.points} stuck_fraction "
          f"values x {args.seeds} seeds; {os.cpu_count()} cores; {load()}")
    warm = {**spec, "seeds": 1, "grid": {"stuck_fraction": [0.0]}}
    by_hand(warm)  # kernels loaded, glyphs rendered: the warm hand loop
    cluster = None
    has_dask = not args.no_dask
    if has_dask:
        try:
            import distributed  # noqa: F401
        except ImportError:
            print("dask.distributed not installed: no Dask figures")
            has_dask = False
    long_spec = {**spec, "seeds": args.long_seeds}
    n_long = args.points * args.long_seeds
    if not become_subreaper():
        print("(not Linux: the CPU times leave out processes that outlive their sweep)")
    cpu: dict[str, list[float]] = {}
    own: dict[str, list[float]] = {"1 worker": [], "long, 1 worker": []}
    """The runs' own time (in their worker) of the 1-worker sweeps."""
    others: dict[str, list[float | None]] = {}
    times: dict[str, list[float]] = {"by hand": [], "1 worker": [], "2 workers": [],
                                     "by hand, warm": [], "again, 1 worker": [],
                                     "again, 2 workers": []}
    if has_dask:
        times["dask 2"] = []
    if n_long:
        times.update({"long, 1 worker": [], "long, 2 workers": []})
        if has_dask:
            times["long, dask 2"] = []
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        if has_dask:
            cluster = Cluster(scratch, profiler=not args.dask_no_profiler)
            mark1.sweep(warm, progress=False, scheduler=cluster.address)  # has run a sweep
            cluster.pause()

        def measure(name: str, mode: str, which: dict, **where: object) -> float | None:
            on_dask = "scheduler" in where and cluster is not None
            for attempt in range(args.retries + 1):
                if args.retries:
                    wait_until_idle(args.other)
                if on_dask:
                    cluster.resume()
                try:
                    wall, used, inside, other = fresh(mode, which, scratch, cluster, **where)
                finally:
                    if on_dask:
                        cluster.pause()
                if other is None or other <= args.other or attempt == args.retries:
                    break
                print(f"  ({name}: other work used {other:.2f} cores meanwhile; again)")
            times[name].append(wall)
            cpu.setdefault(name, []).append(used)
            others.setdefault(name, []).append(other)
            return inside

        try:
            for round_ in range(args.repeat):
                print(f"round {round_ + 1}: {load()}")
                measure("by hand", "hand", spec)
                inside = measure("1 worker", "sweep", spec, workers=1)
                own["1 worker"].append(inside or 0.0)
                measure("2 workers", "sweep", spec, workers=2)
                if cluster is not None:
                    measure("dask 2", "sweep", spec, scheduler=cluster.address)
                times["by hand, warm"].append(by_hand(spec))
                measure("again, 1 worker", "again", spec, workers=1)
                measure("again, 2 workers", "again", spec, workers=2)
                if n_long:
                    own["long, 1 worker"].append(
                        measure("long, 1 worker", "sweep", long_spec, workers=1) or 0.0)
                    measure("long, 2 workers", "sweep", long_spec, workers=2)
                    if cluster is not None:
                        measure("long, dask 2", "sweep", long_spec, scheduler=cluster.address)
                print("  " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items())
                      + f"; the runs' own time in the 1-worker sweep {inside:.2f} s")
                print("  CPU time: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in cpu.items()))
                if all(v[-1] is not None for v in others.values()):
                    print("  other work meanwhile, cores: " + ", ".join(
                        f"{k} {v[-1]:.2f}" for k, v in others.items()))
                hand, one, two = (times[k][-1] for k in ("by hand", "1 worker", "2 workers"))
                again = times["again, 1 worker"][-1] / times["again, 2 workers"][-1]
                line = (f"  overhead {one / hand:.3f}x (goal <= 1.10), scaling {one / two:.2f}x "
                        f"(goal >= 1.8; swept before {again:.2f}x)")
                if cluster is not None:
                    line += f", dask/local {times['dask 2'][-1] / two:.3f} (goal <= 1.10)"
                if n_long:
                    one, two = times["long, 1 worker"][-1], times["long, 2 workers"][-1]
                    line += f"; {n_long} runs: scaling {one / two:.2f}x"
                    if cluster is not None:
                        line += f", dask/local {times['long, dask 2'][-1] / two:.3f}"
                print(line + f"; {load()}")
        finally:
            if cluster is not None:
                cluster.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nmedian of {args.repeat} rounds: " + ", ".join(f"{k} {v:.2f} s"
                                                          for k, v in med.items()))
    over = [o / h for o, h in zip(times["1 worker"], times["by hand"])]
    scale = [o / t for o, t in zip(times["1 worker"], times["2 workers"])]
    print(f"sweep overhead (1 worker / by hand): {', '.join(f'{x:.3f}' for x in over)}")
    best = min(times["1 worker"]) / min(times["by hand"])
    print(f"  best of {args.repeat} against best of {args.repeat}: {best:.3f}")
    over_cpu = [o / h for o, h in zip(cpu["1 worker"], cpu["by hand"])]
    print(f"  in CPU time, every process of each: {', '.join(f'{x:.3f}' for x in over_cpu)}")
    warm_over = [o / h for o, h in zip(times["1 worker"], times["by hand, warm"])]
    print(f"  against by hand in a warm process:  {', '.join(f'{x:.3f}' for x in warm_over)}")
    two_cpu = [t / o for t, o in zip(cpu["2 workers"], cpu["1 worker"])]
    print(f"CPU time of 2 workers / 1 worker:    {', '.join(f'{x:.3f}' for x in two_cpu)}")
    print(f"scaling (1 worker / 2 workers):      {', '.join(f'{x:.2f}' for x in scale)}")
    print(f"  best of {args.repeat} against best of {args.repeat}: "
          f"{min(times['1 worker']) / min(times['2 workers']):.2f}")
    print_ceiling(times["1 worker"], own["1 worker"])
    again = [o / t for o, t in zip(times["again, 1 worker"], times["again, 2 workers"])]
    print(f"  in a process that has swept before: {', '.join(f'{x:.2f}' for x in again)}")
    if "dask 2" in times:
        rel = [d / t for d, t in zip(times["dask 2"], times["2 workers"])]
        print(f"dask 2 / 2 local workers:            {', '.join(f'{x:.3f}' for x in rel)}")
    if n_long:
        scale = [o / t for o, t in zip(times["long, 1 worker"], times["long, 2 workers"])]
        print(f"{n_long} runs, scaling:                 {', '.join(f'{x:.2f}' for x in scale)}")
        print_ceiling(times["long, 1 worker"], own["long, 1 worker"])
        if "long, dask 2" in times:
            rel = [d / t for d, t in zip(times["long, dask 2"], times["long, 2 workers"])]
            print(f"{n_long} runs, dask 2 / 2 local:        "
                  f"{', '.join(f'{x:.3f}' for x in rel)}")
    for k in ("1 worker", "2 workers", "dask 2"):
        if k in times:
            print(f"throughput, {n_runs} runs, {k}: {60 * n_runs / med[k]:.0f} machine-runs "
                  "per minute")
        if f"long, {k}" in times:
            print(f"throughput, {n_long} runs, {k}: {60 * n_long / med[f'long, {k}']:.0f} "
                  "machine-runs per minute")
    print(load())


if __name__ == "__main__":
    main()
