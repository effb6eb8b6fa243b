"""Every command driven with generated option values and paths (hypothesis).

Each example is a ``mark1`` command line: a cheap working base for the command with one to
three of its options replaced by generated values -- numbers (0, negative, huge, NaN, infinity,
the ends of the option's range and just past them, text), paths (existing files of every kind,
missing ones, folders, the command's own inputs, places where nothing can be written, empty
ones, symlinks, devices) and ports. It runs in this process against a real workspace and a
real simulated device, and must hold to:

* the exit status is one the command documents (never 1: no traceback), and no warning is
  printed;
* a failure is one line on stderr, and leaves the workspace exactly as it was;
* a success changes nothing but the outputs it declares (the files of its ``--out`` folder,
  its output files, its state file): the inputs and every other file are as they were, and no
  staging file is left anywhere.

The fast suite runs a bounded, derandomized sample (:data:`BOUNDED`); ``-m slow`` runs
:data:`LONG` random examples of each command. ``-s`` prints how many cases each ran and their
exit statuses.
"""

from __future__ import annotations

import collections
import contextlib
import math
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mark1.limits import SEED, Limit, _num
from tests.test_bad_input import Answer, run_in_process, snapshot, workspace

BOUNDED = {"tasks": 10, "simulate": 40, "replay": 6, "train-mlp": 20, "export onnx": 12,
           "export tflite": 12, "export c": 12, "quantize": 20, "push": 40, "infer": 40,
           "device": 30, "device --firmware m3": 15, "sweep": 25, "ports": 6, "info": 15,
           "status": 20, "rollback": 20, "playground": 10}
"""Examples per command in the fast suite (about a minute and a half in all on two cores)."""
LONG = 300
"""Examples per command in the slow suite."""

SUMMARY: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
"""Exit statuses seen, per command (printed at the end of the module)."""


def documented_exit_codes() -> dict[str, set[int]]:
    """The exit statuses each command documents (130: interrupted, for all)."""
    from export.onnx.cli import EXPORT_EXIT_CODES
    from export.serial.errors import EXIT_CODES

    bad_input = {0, 2}
    return {"tasks": bad_input, "simulate": bad_input, "replay": bad_input,
            "train-mlp": bad_input, "quantize": bad_input, "device": bad_input,
            "sweep": bad_input,
            "export onnx": set(EXPORT_EXIT_CODES), "export tflite": bad_input,
            "export c": bad_input, "ports": bad_input, "info": bad_input,
            "push": set(EXIT_CODES), "infer": set(EXIT_CODES), "status": set(EXIT_CODES),
            "rollback": set(EXIT_CODES),
            # driven only where they refuse: QEMU is kept off the PATH, and every port given
            # to the playground is out of range, so neither a board nor a server starts
            "device --firmware m3": {2}, "playground": {2}}


# --------------------------------------------------------------------------- values

JUNK_NUMBERS = ("0", "-1", "-0", "1", "2", "0.5", "1.5", "nan", "-nan", "inf", "-inf", "1e308",
                "-1e308", "1e-308", "99999999999999", "18446744073709551617", "1e3", "x", "",
                " ", "0x10", "1_000")


def numbers(lim: Limit | None, expensive_top: bool = False) -> st.SearchStrategy[str]:
    """Text for a numeric option: as often a value its range allows (its ends, its special
    values) as junk and values just past the ends."""
    junk = list(JUNK_NUMBERS)
    if lim is None:
        return st.sampled_from(junk)

    def text(v: float) -> str:
        return str(int(v)) if lim.integer and math.isfinite(v) else _num(v)

    step = 1 if lim.integer else max(abs(lim.lo), abs(lim.hi), 1.0) * 1e-6
    valid = [lim.lo, *lim.special] + ([] if expensive_top else [lim.hi])
    if lim.open_lo:
        valid[0] = lim.lo + step
    junk += [text(lim.lo - step), text(lim.hi + step)]
    return st.one_of(st.sampled_from(sorted({text(v) for v in valid})),
                     st.sampled_from(sorted(set(junk))))


@dataclass
class Option:
    """An option to vary: its flag ("" for a positional) and the text values it may take."""

    flag: str
    values: st.SearchStrategy[str]
    repeat: bool = False
    """May be given several times (``--set``)."""


@dataclass
class Command:
    """A command: a cheap working base command line and the options to vary in it."""

    name: str
    base: dict[str, str | None]
    """Flag -> value of the working command line (``None``: a bare flag; "" key: positional)."""
    options: list[Option]
    outputs: Callable[[dict[str, list[str]]], list[tuple[str, bool]]]
    """(path, is a folder) of every output the command may write, given its arguments."""
    head: tuple[str, ...] = ()
    """Words before the options (``export onnx``)."""
    flags: tuple[str, ...] = ()
    """Bare flags that may be added."""
    journal: str = ""
    """A file in the output folder that a failed run keeps on purpose (whole lines: the runs it
    finished, for the next run to resume from)."""
    logs: tuple[str, ...] = ()
    """Options naming a file that a failed run keeps on purpose, whole (``--trace``: the frames
    up to the failure, then an ``end`` line)."""

    @property
    def key(self) -> str:
        """The command as the summary names it: ``export onnx``."""
        return " ".join((self.name, *self.head))


def _paths(*names: str) -> st.SearchStrategy[str]:
    return st.sampled_from(names)


INPUT_FILES = ("picture.png", "notes.txt", "empty.bin", "nothing.pt", "out", "/dev/null",
               "/dev/zero", "", "link.pt", "truncated.m1w", "model.m1w", "mlp.pt",
               "machine.npz", "elsewhere.onnx", "no/such/dir/x.pt", "features.onnx",
               "conv.onnx", "conv.pt", "mlp.tflite", "truncated.tflite", "text.tflite")
DATA_FILES = ("calib64.npy", "short.npy", "words.npy", "nan.npy", "complex.npy", "empty.npy",
              "cube.npy", "picture.png", "out", "/dev/zero", "", "nothing.npy")
OUTPUT_FILES = ("new.m1w", "existing.m1w", "mlp.pt", "model.m1w", "out", "/proc/x.m1w",
                "notes.txt/x", "", "/dev/null", "new/deeper/q.m1w", "link.pt", "picture.png",
                "L" * 246 + ".m1w", "sp ace/é.m1w")
OUTPUT_FOLDERS = ("run", "out", "picture.png", "/proc/x", "notes.txt/x", "", "new/deeper/run",
                  "mlp.pt", "L" * 255, "sp ace/é", "blocked")
BLOCKED = ("report.json", "machine.npz", "mlp.pt", "model.onnx", "replay.json", "README.md")
"""Folders inside ``blocked/`` where an output folder's files would go."""


def _given(args: dict[str, list[str]], flag: str, default: str | None = None) -> str | None:
    values = args.get(flag)
    return values[-1] if values else default


def _folder(flag: str) -> Callable[[dict[str, list[str]]], list[tuple[str, bool]]]:
    def outputs(args: dict[str, list[str]]) -> list[tuple[str, bool]]:
        value = _given(args, flag)
        return [] if value is None else [(value, True)]
    return outputs


def _quantize_outputs(args: dict[str, list[str]]) -> list[tuple[str, bool]]:
    from export.int8.quantize import default_paths

    out = _given(args, "--out")
    if not out:
        return []
    onnx, report = default_paths(out)
    return [(out, False), (_given(args, "--onnx") or str(onnx), False),
            (_given(args, "--report") or str(report), False)]


def _file_output(flag: str) -> Callable[[dict[str, list[str]]], list[tuple[str, bool]]]:
    def outputs(args: dict[str, list[str]]) -> list[tuple[str, bool]]:
        value = _given(args, flag)
        return [] if value is None else [(value, False)]
    return outputs


_json_output = _file_output("--json")


def _link_outputs(args: dict[str, list[str]]) -> list[tuple[str, bool]]:
    return _json_output(args) + _file_output("--trace")(args)


def _state_output(args: dict[str, list[str]]) -> list[tuple[str, bool]]:
    value = _given(args, "--state")
    return [] if value is None else [(value, False)]


def commands(bounded: bool) -> dict[str, Command]:
    """What each command is given (``bounded``: no valid value that makes a run long)."""
    from export.onnx.cli import LIMITS as MLP
    from export.serial.cli import INFER_LIMITS
    from export.serial.cli import LIMITS as LINK
    from firmware_sim.cli import TIMING, TURNAROUND_MS
    from firmware_sim.serve import IDLE_TIMEOUT
    from mark1.machine import ESTIMATOR_LIMITS as EST
    from mark1.playground.cli import PLAYGROUND_LIMITS as PLAY
    from mark1.presets import LIMITS as PARAMS
    from mark1.stimuli import TASK_LIMITS as TASK
    from mark1.sweep_cli import SWEEP_LIMITS

    def set_values() -> st.SearchStrategy[str]:
        return st.builds(lambda name, value: f"{name}={value}",
                         st.sampled_from(sorted(PARAMS) + ["bias_unit", "warp", ""]),
                         st.one_of(*(numbers(lim) for lim in PARAMS.values()),
                                   st.sampled_from(["true", "maybe"])))

    tasks = st.sampled_from(["xor", "digits", "left-right", "chess", "", "letters"])
    link = [
        Option("--baud", numbers(LINK["baud"])),
        Option("--window", numbers(LINK["window"])),
        Option("--timeout", numbers(LINK["timeout_s"], expensive_top=True)),
        Option("--retries", numbers(LINK["retries"])),
        Option("--port", st.sampled_from(["{device}", "{closed_tcp}", "{busy_tcp}",
                                          "socket://127.0.0.1", "rfc2217://garbage",
                                          "alt:///dev/null?class=PosixPollSerial", "",
                                          "/dev/null", "carrier://pigeon"])),
        Option("--json", _paths(*OUTPUT_FILES)),
        Option("--trace", _paths(*OUTPUT_FILES)),
    ]
    packages = _paths(*INPUT_FILES, "other.m1w", "flipped.m1w")
    sizes = st.sampled_from(["2048", "2K", "256KiB", "1M", "64M", "65M", "1G", "0", "-1",
                             "lots", "", "99999999999999", "1000", "32", "16"])
    device = [
        Option("--listen", st.sampled_from(["127.0.0.1:0", "127.0.0.1:99999", "127.0.0.1:-1",
                                            "127.0.0.1", ":0", "", "{busy_listen}",
                                            "127.0.0.1:x"])),
        Option("--preset", st.sampled_from(["cortex-m4", "cortex-m4-small", "z80"])),
        Option("--flash", sizes), Option("--page", sizes), Option("--ram", sizes),
        Option("--max-payload", sizes),
        Option("--baud", numbers(TIMING["baud"])),
        Option("--turnaround", numbers(TURNAROUND_MS)),
        Option("--idle-timeout", numbers(IDLE_TIMEOUT)),
        Option("--state", _paths("state.bin", "new/state.bin", "flash.bin", "damaged.bin",
                                 "locked.bin", "/dev/zero", "/dev/null", "out", "",
                                 "notes.txt/x", "/proc/x.bin")),
    ]
    return {
        "tasks": Command("tasks", {}, [Option("--colour", st.sampled_from(["x"]))],
                         lambda a: [], flags=("-v",)),
        "simulate": Command(
            "simulate",
            {"--task": "xor", "--epochs": "1", "--n-train": "8", "--n-test": "4", "--n-a": "16",
             "--out": "run", "-q": None},
            [Option("--task", tasks),
             Option("--epochs", numbers(EST["max_iter"], expensive_top=True)),
             Option("--seed", numbers(SEED)),
             Option("--n-train", numbers(TASK["n_train"], expensive_top=True)),
             Option("--n-test", numbers(TASK["n_test"], expensive_top=True)),
             Option("--n-a", numbers(EST["n_a"], expensive_top=bounded)),
             Option("--n-r", numbers(EST["n_r"])),
             Option("--preset", st.sampled_from(["ideal", "cds-1960", "cds-worn", "steam"])),
             Option("--rule", st.sampled_from(["error-correction", "forced-response", "ideal",
                                               "magic"])),
             Option("--code", st.sampled_from(["auto", "dichotomy", "one-vs-rest", "code",
                                               "morse"])),
             Option("--set", set_values(), repeat=True),
             Option("--out", _paths(*OUTPUT_FOLDERS))],
            _folder("--out"), flags=("--raw",)),
        "replay": Command(
            "replay", {"--quick": None, "--no-sweep": None, "-q": None},
            [Option("--seed", numbers(SEED)), Option("--out", _paths(*OUTPUT_FOLDERS))],
            _folder("--out")),
        "train-mlp": Command(
            "train-mlp",
            {"--task": "xor", "--epochs": "1", "--hidden": "4", "--out": "run", "-q": None},
            [Option("--task", tasks),
             Option("--hidden", st.sampled_from(["4", "4,3", "none", "", "0", "-4", "4,,4",
                                                 "x", "65537", "100000000", ",".join(["2"] * 17),
                                                 "65536,65536,65536"])),
             Option("--epochs", numbers(MLP["epochs"], expensive_top=True)),
             Option("--seed", numbers(SEED)),
             Option("--lr", numbers(MLP["lr"])),
             Option("--label-smoothing", numbers(MLP["label_smoothing"])),
             Option("--batch-size", numbers(MLP["batch_size"])),
             Option("--n-train", numbers(TASK["n_train"], expensive_top=True)),
             Option("--n-test", numbers(TASK["n_test"], expensive_top=True)),
             Option("--out", _paths(*OUTPUT_FOLDERS))],
            _folder("--out")),
        "export tflite": Command(
            "export", {"": "model.m1w", "--out": "model.tflite"},
            [Option("", _paths(*INPUT_FILES, "other.m1w", "flipped.m1w", "markI.m1w")),
             Option("--eval-data", _paths(*DATA_FILES)),
             Option("--seed", numbers(SEED)),
             Option("--out", _paths(*OUTPUT_FILES, "model.tflite"))],
            _file_output("--out"), head=("tflite",), flags=("--float-io",)),
        "export onnx": Command(
            "export", {"": "mlp.pt", "--out": "bundle"},
            [Option("", _paths(*INPUT_FILES)),
             Option("--target", st.sampled_from(["jetson-tx2", "desktop", "jetson-nano", ""])),
             Option("--eval-data", _paths(*DATA_FILES)),
             Option("--out", _paths(*OUTPUT_FOLDERS))],
            _folder("--out"), head=("onnx",), flags=("--fp16",)),
        "quantize": Command(
            "quantize", {"": "mlp.pt", "--out": "q.m1w"},
            [Option("", _paths(*INPUT_FILES)),
             Option("--calib", st.one_of(numbers(Limit(1, 1257, integer=True)),
                                         st.sampled_from(["all", "ALL", "none"]))),
             Option("--seed", numbers(SEED)),
             Option("--task", tasks),
             Option("--calib-data", _paths(*DATA_FILES)),
             Option("--eval-data", _paths(*DATA_FILES)),
             Option("--out", _paths(*OUTPUT_FILES)),
             Option("--onnx", _paths(*OUTPUT_FILES)),
             Option("--report", _paths(*OUTPUT_FILES))],
            _quantize_outputs),
        "push": Command(
            "push", {"": "other.m1w", "--port": "{device}", "-q": None},
            [Option("", packages), *link,
             Option("--slot", st.sampled_from(["auto", "A", "B", "C", ""]))],
            _link_outputs, flags=("--no-read-back",), logs=("--trace",)),
        "infer": Command(
            "infer", {"": "bright.png", "--port": "{device}"},
            [Option("", _paths(*INPUT_FILES, "bright.png", "nan.npy", "complex.npy",
                               "huge.png", "cube.npy")), *link,
             Option("--task", tasks),
             Option("--n", numbers(INFER_LIMITS["n"])),
             Option("--seed", numbers(SEED)),
             Option("--show", numbers(INFER_LIMITS["show"])),
             Option("--model", _paths(*INPUT_FILES, "other.m1w"))],
            _link_outputs, logs=("--trace",)),
        "sweep": Command(
            "sweep",
            {"--task": "xor", "--epochs": "1", "--n-train": "8", "--n-test": "4", "--n-a": "16",
             "--seeds": "2", "--workers": "0", "--out": "run", "-q": None},
            [Option("--task", tasks),
             Option("--epochs", numbers(EST["max_iter"], expensive_top=True)),
             Option("--n-train", numbers(TASK["n_train"], expensive_top=True)),
             Option("--n-test", numbers(TASK["n_test"], expensive_top=True)),
             Option("--n-a", numbers(EST["n_a"], expensive_top=bounded)),
             Option("--n-r", numbers(EST["n_r"])),
             Option("--seeds", st.sampled_from(["1", "3", "0", "-1", "0,1", "5,5", "x", "",
                                                "1e9", "99999999999999"])),
             Option("--set", set_values(), repeat=True),
             Option("--grid", st.builds(lambda name, values: f"{name}={values}",
                                        st.sampled_from(["read_noise", "stuck_fraction",
                                                         "n_a", "preset", "gamma", "warp"]),
                                        st.sampled_from(["0,0.01", "0:0.5:3", "0,1.5", "",
                                                         "inf", "nan,1", "16,32", "ideal",
                                                         "0:1:100000"])), repeat=True),
             Option("--samples", numbers(SWEEP_LIMITS["samples"], expensive_top=True)),
             Option("--sample-seed", numbers(SEED)),
             Option("--connect-timeout", numbers(SWEEP_LIMITS["connect_timeout"])),
             Option("--spec", _paths(*INPUT_FILES, "sweep.toml")),
             Option("--out", _paths(*OUTPUT_FOLDERS))],
            _folder("--out"), journal="runs.jsonl"),
        "device": Command("device", {"--pty": None}, device, _state_output),
        "device --firmware m3": Command(
            "device", {"--pty": None},
            [*device, Option("--firmware", st.sampled_from(["m3", "m4"]))], _state_output,
            head=("--firmware", "m3")),
        "export c": Command(
            "export", {"": "model.m1w", "--out": "csrc"},
            [Option("", packages), Option("--out", _paths(*OUTPUT_FOLDERS, "csrc"))],
            _folder("--out"), head=("c",)),
        "ports": Command("ports", {}, [Option("--json", _paths(*OUTPUT_FILES))], _json_output,
                         flags=("-v", "--links")),
        "info": Command(
            "info", {"": "model.m1w"},
            [Option("", packages), Option("--json", _paths(*OUTPUT_FILES))], _json_output),
        "status": Command("status", {"--port": "{device}"}, link, _link_outputs,
                          logs=("--trace",)),
        "rollback": Command(
            "rollback", {"--port": "{device}"},
            [*link, Option("--slot", st.sampled_from(["A", "B", "C", ""]))], _link_outputs,
            flags=("--check",), logs=("--trace",)),
        "playground": Command(
            "playground", {"--no-browser": None, "--port": "65536"},
            [Option("--port", st.sampled_from(["65536", "-1", "x", "", "nan", "inf", "1e308",
                                               "99999999999999", "0x50"])),
             Option("--max-tabs", numbers(PLAY["max_tabs"])),
             Option("--workers", numbers(PLAY["workers"])),
             Option("--host", st.sampled_from(["127.0.0.1", "", "::1", "no.such.host"]))],
            lambda a: []),
    }


PATH_FLAGS = ("", "--out", "--onnx", "--report", "--json", "--trace", "--model", "--state",
              "--calib-data", "--eval-data", "--spec")
"""Options that name files or folders."""


@st.composite
def command_lines(draw: st.DrawFn, cmd: Command) -> list[str]:
    """The base command line of ``cmd`` with one to three options given generated values."""
    args: dict[str, list[str | None]] = {k: [v] for k, v in cmd.base.items()}
    varied = draw(st.lists(st.sampled_from(cmd.options), min_size=1, max_size=3,
                           unique_by=lambda o: o.flag))
    paths = [o for o in cmd.options if o.flag in PATH_FLAGS and o not in varied]
    if paths and draw(st.booleans()):  # half the examples also vary where files are
        varied.append(draw(st.sampled_from(paths)))
    for opt in varied:
        values = draw(st.lists(opt.values, min_size=1, max_size=3 if opt.repeat else 1))
        args[opt.flag] = list(values)
    if cmd.name == "device" and "--listen" in args:
        args.pop("--pty", None)
    for flag in cmd.flags:
        if draw(st.booleans()):
            args[flag] = [None]
    argv = [cmd.name, *cmd.head]
    for value in args.pop("", []):
        argv.append(str(value))
    for flag, values in args.items():
        for value in values:
            if value is None:
                argv.append(flag)
            elif value.startswith("-"):  # "-1", "-inf": a value, not an option
                argv.append(f"{flag}={value}")
            else:
                argv += [flag, value]
    return argv


def given_options(argv: list[str]) -> dict[str, list[str]]:
    """The values of each ``--flag`` in a command line."""
    out: dict[str, list[str]] = collections.defaultdict(list)
    for i, word in enumerate(argv):
        if word.startswith("--") and "=" in word:
            flag, _, value = word.partition("=")
            out[flag].append(value)
        elif word.startswith("--") and i + 1 < len(argv):
            out[word].append(argv[i + 1])
    return out


# --------------------------------------------------------------------------- running


@contextlib.contextmanager
def stopping_a_device() -> Iterator[None]:
    """While a ``mark1 device`` runs in this process, ask it to stop (SIGTERM, as a user's
    Ctrl-C would) every 0.2 s, so a command line that starts one ends. A no-op handler stands
    in between (the device's own one takes over while it serves)."""
    done = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: None)

    def pump() -> None:
        while not done.wait(0.2):
            os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        signal.signal(signal.SIGTERM, previous)


@dataclass
class Pristine:
    """The workspace as it was made, to put back after each example."""

    root: Path
    contents: dict[str, bytes] = field(default_factory=dict)
    entries: set[str] = field(default_factory=set)

    @classmethod
    def take(cls, root: Path) -> Pristine:
        keep = cls(root)
        for p in root.rglob("*"):
            rel = str(p.relative_to(root))
            keep.entries.add(rel)
            if p.is_file() and not p.is_symlink() and p.stat().st_size <= 2**26:
                keep.contents[rel] = p.read_bytes()
        return keep

    def restore(self) -> None:
        for p in sorted(self.root.rglob("*"), key=lambda q: -len(q.parts)):
            rel = str(p.relative_to(self.root))
            if rel not in self.entries:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
        for rel, data in self.contents.items():
            if (self.root / rel).read_bytes() != data:
                (self.root / rel).write_bytes(data)


def allowed_changes(root: Path, outputs: list[tuple[str, bool]]) -> Callable[[str], bool]:
    """Whether a changed entry (relative to ``root``) lies at or under a declared output."""
    targets = []
    for path, folder in outputs:
        if path:
            full = path if os.path.isabs(path) else str(root / path)
            targets.append((os.path.realpath(full), folder))

    def allowed(rel: str) -> bool:
        real = os.path.realpath(root / rel)
        for target, folder in targets:
            if real == target or (folder and real.startswith(target + os.sep)):
                return True
            if target.startswith(real + os.sep):  # a folder made on the way to an output
                return True
        return False
    return allowed


def check_example(cmd: Command, argv: list[str], ws, keep: Pristine) -> Answer:
    from mark1.io import _STAGING

    values = {"ws": str(ws.path), "device": ws.device, "busy_tcp": ws.busy_tcp,
              "closed_tcp": ws.closed_tcp, "busy_listen": ws.busy_listen}
    filled = [a.format(**values) if "{" in a else a for a in argv]
    before = snapshot(ws.path)
    try:
        with stopping_a_device() if cmd.name == "device" else contextlib.nullcontext():
            answer = run_in_process(filled)
        after = snapshot(ws.path)
        out = _given(given_options(filled), "--out") or ""
        journal = os.path.join(out, cmd.journal) if cmd.journal else ""
        kept = (ws.path / journal).read_bytes() if journal and journal in after else b""
        kept_logs = {k: (ws.path / k).read_bytes() for k in after
                     if before.get(k) != after.get(k) and (ws.path / k).is_file()}
    finally:
        keep.restore()
    SUMMARY[cmd.key][answer.code] += 1
    codes = documented_exit_codes()[cmd.key]
    assert answer.code in codes, (filled, answer)
    assert "Traceback" not in answer.stderr and "Warning" not in answer.stderr, (filled, answer)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    staging = [k for k in after if _STAGING.match(Path(k).name)]
    assert not staging, (filled, staging)
    if answer.code != 0:
        assert len(answer.stderr.strip().splitlines()) == 1, (filled, answer)
        logs = allowed_changes(ws.path, [(p, False) for flag in cmd.logs
                                         for p in given_options(filled).get(flag, [])[-1:]])
        for k in [k for k in changed if logs(k)]:  # a log kept on purpose, whole
            if k in kept_logs:  # the file (not a folder made on its way)
                assert kept_logs[k].endswith(b"end\n"), (filled, answer, k)
            changed.remove(k)
        if journal and changed:  # only its journal, of whole lines, in its output folder
            assert set(changed) <= {out, journal}, (filled, answer, changed)
            assert kept.endswith(b"\n"), (filled, answer, changed)
            changed = []
        assert not changed, (filled, answer, changed)
    else:
        allowed = allowed_changes(ws.path, cmd.outputs(given_options(filled)))
        stray = [k for k in changed if not allowed(k)]
        assert not stray, (filled, stray)
    return answer


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    with workspace(tmp_path_factory.mktemp("properties")) as w:
        (w.path / "sweep.toml").write_text(
            'task = "xor"\nepochs = 1\nn_train = 8\nn_test = 4\nn_a = 16\nseeds = 2\n'
            '[grid]\nread_noise = [0, 0.01]\n')
        for name in BLOCKED:
            (w.path / "blocked" / name).mkdir(parents=True, exist_ok=True)
            (w.path / "blocked" / name / "keep.txt").write_bytes(b"the user's")
        yield w
    print("\ncases run, by command and exit status:")
    for name, counts in sorted(SUMMARY.items()):
        print(f"  {name:10s} {sum(counts.values()):5d}  {dict(sorted(counts.items()))}")


def _run(name: str, bounded: bool, ws, monkeypatch, examples: int) -> None:
    cmd = commands(bounded)[name]
    monkeypatch.chdir(ws.path)
    if "--firmware" in cmd.head:  # no QEMU, compiler or make to be found: it must refuse
        empty = ws.path.parent / "no-tools"
        empty.mkdir(exist_ok=True)
        monkeypatch.setenv("PATH", str(empty))
    keep = Pristine.take(ws.path)

    @settings(max_examples=examples, deadline=None, derandomize=bounded, database=None,
              suppress_health_check=list(HealthCheck))
    @given(command_lines(cmd))
    def prop(argv: list[str]) -> None:
        check_example(cmd, argv, ws, keep)

    prop()


@pytest.mark.parametrize("name", sorted(BOUNDED))
def test_every_command_keeps_its_promises_on_generated_input(name, ws, monkeypatch):
    _run(name, True, ws, monkeypatch, BOUNDED[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BOUNDED))
def test_every_command_keeps_its_promises_on_generated_input_long(name, ws, monkeypatch):
    _run(name, False, ws, monkeypatch, LONG)


def test_every_registered_command_is_driven():
    from mark1.cli import build_parser

    parser = build_parser()
    registered = set(parser._subparsers._group_actions[0].choices)  # noqa: SLF001
    assert registered == {key.split()[0] for key in BOUNDED}
    assert set(BOUNDED) == set(commands(True))
    assert all(cmd.key == key for key, cmd in commands(True).items())
