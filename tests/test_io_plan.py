"""The output plan: every command's inputs and outputs checked before any work, written whole at
the end, and staging that a killed run left behind cleaned up by the next run into the same place.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mark1.io import OutputPlan, Staging, atomic_write_bytes, is_staging_of, staging_name
from tests.conftest import ROOT


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def entries(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    (tmp_path / "model.pt").write_bytes(b"the user's checkpoint")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_bytes(b"the user's file")
    return tmp_path


def refused(plan: OutputPlan, says: str) -> str:
    """Enter ``plan``: it must refuse with one line matching ``says``, before the body runs."""
    ran = []
    with pytest.raises(ValueError, match=says) as info:
        with plan:
            ran.append(True)
    assert not ran, "the work started although the plan was refused"
    text = str(info.value)
    assert "\n" not in text and ".part" not in text and "mark1-" not in text, text
    return text


def test_an_output_that_is_an_input_is_refused_through_symlinks_and_hard_links(ws):
    before = files(ws)
    for name in ("model.pt", "./model.pt", "out/../model.pt"):
        plan = OutputPlan()
        plan.read("CHECKPOINT", ws / "model.pt")
        plan.write_file("--out", ws / name)
        refused(plan, r"--out '.*model\.pt' would overwrite CHECKPOINT '.*model\.pt', which "
                      r"this command reads; choose another --out")
    os.symlink(ws / "model.pt", ws / "link.pt")
    os.link(ws / "model.pt", ws / "hard.pt")
    for name in ("link.pt", "hard.pt"):
        plan = OutputPlan()
        plan.read("CHECKPOINT", ws / "model.pt")
        plan.write_file("--report", ws / name)
        refused(plan, "--report .* would overwrite CHECKPOINT")
    plan = OutputPlan()  # a folder output whose files include the input's name
    plan.read("CHECKPOINT", ws / "out" / "keep.txt")
    plan.write_folder("--out", ws / "out", files=("keep.txt", "report.json"))
    refused(plan, r"keep.txt in --out '.*out' would overwrite CHECKPOINT")
    after = files(ws)
    assert {k: after[k] for k in before} == before and set(after) == set(before) | {
        "link.pt", "hard.pt"}


def test_two_outputs_naming_one_file_are_refused(ws):
    plan = OutputPlan()
    plan.write_file("--out", ws / "q.m1w")
    plan.write_file("--onnx", ws / "q.m1w")
    refused(plan, r"--onnx '.*q\.m1w' and --out '.*q\.m1w' name the same file")
    plan = OutputPlan()
    plan.write_folder("--out", ws / "run", files=("report.json",))
    plan.write_file("--json", ws / "run" / "report.json")
    refused(plan, "name the same file")
    assert entries(ws) == ["model.pt", "out", "out/keep.txt"]


@pytest.mark.parametrize("kind, path, says", [
    ("file", "", r"--out '': an empty path"),
    ("folder", " ", r"--out ' ': an empty path"),
    ("file", "out", r"--out '.*out' is a folder; give a file name"),
    ("folder", "model.pt", r"--out '.*model.pt' exists and is not a folder"),
    ("file", "/dev/null", r"--out '/dev/null' exists and is not a regular file"),
    ("file", "/proc/x.json", r"--out '/proc/x.json': cannot write there"),
    ("folder", "/proc/x", r"--out '/proc/x': cannot write there"),
    ("file", "model.pt/x", r"--out '.*model.pt/x': a part of the path is a file"),
])
def test_a_place_that_cannot_be_written_is_refused_before_the_work(ws, kind, path, says):
    before = entries(ws)
    target = path if not path.strip() or path.startswith("/") else str(ws / path)
    plan = OutputPlan()
    try:
        if kind == "file":
            plan.write_file("--out", target)
        else:
            plan.write_folder("--out", target, files=("a.json",))
    except ValueError as exc:  # an empty path is refused as it is declared
        assert re.search(says, str(exc)) and not path.strip()
    else:
        refused(plan, says)
    assert entries(ws) == before


@pytest.mark.parametrize("path, says, error", [
    ("nothing.pt", "checkpoint not found", FileNotFoundError),
    ("out", r"CHECKPOINT '.*out' is a folder; give the checkpoint itself", ValueError),
    ("/dev/zero", r"CHECKPOINT '/dev/zero' is not a regular file", ValueError),
    ("", "CHECKPOINT: an empty path", ValueError),
])
def test_an_input_that_is_not_a_file_is_refused_as_it_is_declared(ws, path, says, error):
    with pytest.raises(error, match=says):
        OutputPlan().read("CHECKPOINT", path if path.startswith("/") or not path
                          else ws / path, what="checkpoint")


def test_outputs_are_written_whole_at_the_end_and_not_at_all_on_failure(ws):
    plan = OutputPlan()
    out = plan.write_file("--out", ws / "new" / "deeper" / "q.m1w")
    folder = plan.write_folder("--dir", ws / "out", files=("report.json",))
    with pytest.raises(RuntimeError, match="boom"):
        with plan:
            plan.write_bytes(out, b"half")
            (plan.staged(folder) / "report.json").write_text("{")
            assert not (ws / "new" / "deeper" / "q.m1w").exists()
            raise RuntimeError("boom")
    assert entries(ws) == ["model.pt", "out", "out/keep.txt"]  # folders it made: gone too
    plan = OutputPlan()
    out = plan.write_file("--out", ws / "new" / "q.m1w")
    folder = plan.write_folder("--dir", ws / "out", files=("report.json",))
    with plan:
        plan.write_bytes(out, b"package")
        (plan.staged(folder) / "report.json").write_text("{}")
    assert files(ws) == {"model.pt": b"the user's checkpoint", "new/q.m1w": b"package",
                         "out/keep.txt": b"the user's file", "out/report.json": b"{}"}
    assert entries(ws) == ["model.pt", "new", "new/q.m1w", "out", "out/keep.txt",
                           "out/report.json"]


def test_a_log_of_the_run_is_kept_whole_when_the_run_fails_and_the_rest_is_not(ws):
    """``keep_on_error`` (a ``--trace``): a failed run's log is moved into place, for the user
    to read why it failed; its other outputs are not."""
    plan = OutputPlan()
    report = plan.write_file("--json", ws / "report.json")
    log = plan.write_file("--trace", ws / "logs" / "run.trace", keep_on_error=True)
    for interrupt in (RuntimeError("link lost"), KeyboardInterrupt()):
        with pytest.raises(type(interrupt)):
            with plan:
                plan.write_text(log, "-> HELLO\n-- end\n")
                plan.write_text(report, "{}")
                raise interrupt
        assert files(ws) == {"logs/run.trace": b"-> HELLO\n-- end\n",
                             "model.pt": b"the user's checkpoint",
                             "out/keep.txt": b"the user's file"}
        (ws / "logs" / "run.trace").unlink()
        plan = OutputPlan()
        report = plan.write_file("--json", ws / "report.json")
        log = plan.write_file("--trace", ws / "logs" / "run.trace", keep_on_error=True)


def test_a_log_the_failed_run_never_began_is_not_left_behind(ws):
    plan = OutputPlan()
    plan.write_file("--trace", ws / "run.trace", keep_on_error=True)
    with pytest.raises(ValueError, match="not a weight package"):
        with plan:
            raise ValueError("not a weight package")  # refused before the trace began
    assert files(ws) == {"model.pt": b"the user's checkpoint", "out/keep.txt": b"the user's file"}


def test_a_log_is_checked_like_any_output_before_the_work(ws):
    plan = OutputPlan()
    plan.read("MODEL", ws / "model.pt")
    plan.write_file("--trace", ws / "model.pt", keep_on_error=True)
    refused(plan, "--trace .*model.pt' would overwrite MODEL")
    assert files(ws) == {"model.pt": b"the user's checkpoint", "out/keep.txt": b"the user's file"}


def test_ctrl_c_in_the_work_leaves_nothing(ws):
    plan = OutputPlan()
    plan.write_folder("--out", ws / "run", files=("a",))
    with pytest.raises(KeyboardInterrupt):
        with plan:
            (plan.staged(ws / "run") / "a").write_text("half")
            raise KeyboardInterrupt
    assert entries(ws) == ["model.pt", "out", "out/keep.txt"]


KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from mark1.io import OutputPlan
    plan = OutputPlan()
    kind, dest = sys.argv[1], sys.argv[2]
    out = (plan.write_folder("--out", dest, files=("a.bin",)) if kind == "folder"
           else plan.write_file("--out", dest))
    with plan:
        target = plan.staged(out)
        (target / "a.bin" if kind == "folder" else target).write_bytes(b"half" * 1000)
        print("staged", flush=True)
        time.sleep(60)
""")


def _writer(kind: str, dest: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, kind, str(dest)], env=env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "staged"
    return proc


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_staging_of_a_killed_run_is_removed_by_the_next_run_into_the_same_place(ws, kind):
    dest = ws / ("bundle" if kind == "folder" else "q.m1w")
    live = _writer(kind, dest)  # a run still at work: its staging must stay
    killed = _writer(kind, dest)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    try:
        staged = sorted(p.name for p in ws.iterdir() if is_staging_of(p.name, dest.name))
        assert len(staged) == 2
        lookalikes = [f".{dest.name}.mark1-1-zzzzzzzz.part", f".{dest.name}.abcd1234.part",
                      f".{dest.name}.mark1-{killed.pid}-0000000.part"]
        for name in lookalikes:  # not our pattern exactly: never touched
            (ws / name).write_bytes(b"someone else's")
        os.symlink(ws / "model.pt", ws / staging_name(dest.name))  # ours by name, a symlink
        plan = OutputPlan()
        out = plan.write_folder("--out", dest, files=("a.bin",)) if kind == "folder" \
            else plan.write_file("--out", dest)
        with plan:
            left = sorted(p.name for p in ws.iterdir() if is_staging_of(p.name, dest.name))
            assert f"-{killed.pid}-" not in "".join(left)  # the killed run's: removed
            assert sum(f"-{live.pid}-" in n for n in left) == 1  # the live run's: kept
            target = plan.staged(out)
            (target / "a.bin" if kind == "folder" else target).write_bytes(b"whole")
        for name in lookalikes:
            assert (ws / name).read_bytes() == b"someone else's"
        assert (ws / "model.pt").read_bytes() == b"the user's checkpoint"
        assert (dest / "a.bin" if kind == "folder" else dest).read_bytes() == b"whole"
    finally:
        live.kill()
        live.wait()


def test_a_staging_name_is_recognised_only_for_its_destination():
    name = staging_name("model.m1w")
    assert is_staging_of(name, "model.m1w") and not is_staging_of(name, "model.m1")
    assert name.startswith(".model.m1w.mark1-") and name.endswith(".part")
    assert f"-{os.getpid()}-" in name


def test_atomic_writes_clean_up_after_a_killed_writer_too(tmp_path):
    dest = tmp_path / "a.bin"
    stage = Staging(dest, folder=False)  # a writer that will never finish...
    os.close(stage.fd)  # ... because it died: its lock went with it
    stage.fd = -1
    assert stage.path.exists()
    atomic_write_bytes(dest, b"x")
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_a_plan_refuses_declarations_after_it_is_entered(ws):
    plan = OutputPlan()
    with plan:
        with pytest.raises(RuntimeError, match="declared before"):
            plan.write_file("--late", ws / "late.txt")
    assert entries(ws) == ["model.pt", "out", "out/keep.txt"]


def test_an_output_with_the_longest_name_a_file_may_have_gets_its_staging(tmp_path):
    name = "n" * 251 + ".m1w"  # 255 bytes: staging beside it cannot carry the whole name
    plan = OutputPlan()
    out = plan.write_file("--out", tmp_path / name)
    folder = plan.write_folder("--dir", tmp_path / ("d" * 255), files=("a",))
    with plan:
        assert is_staging_of(plan.staged(out).name, name)
        assert not is_staging_of(plan.staged(out).name, name[:-1])
        plan.write_bytes(out, b"whole")
        (plan.staged(folder) / "a").write_bytes(b"a")
    assert (tmp_path / name).read_bytes() == b"whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d" * 255, name]


def test_a_failure_while_writing_names_the_users_path_not_the_staging(ws):
    plan = OutputPlan()
    folder = plan.write_folder("--out", ws / "run", files=("a.bin",))
    with pytest.raises(OSError) as info:
        with plan:
            (plan.staged(folder) / "sub" / "a.bin").write_bytes(b"x")  # no such folder
    assert info.value.filename == str(ws / "run" / "sub" / "a.bin")
    assert ".part" not in str(info.value)
    assert entries(ws) == ["model.pt", "out", "out/keep.txt"]


def test_a_folder_where_an_output_folder_puts_a_file_is_refused_before_the_work(ws):
    """Found by the property-based test: the run did its work, moved some files into the
    folder and then failed on a folder named like one of its files."""
    (ws / "out" / "report.json").mkdir()
    (ws / "out" / "link.png").symlink_to(ws / "model.pt")
    for name in ("report.json", "link.png"):
        plan = OutputPlan()
        plan.write_folder("--out", ws / "out", files=("a.png", name))
        refused(plan, f"{name} in --out '.*out' is a folder, link or device")
    assert entries(ws) == ["model.pt", "out", "out/keep.txt", "out/link.png", "out/report.json"]


def test_an_export_killed_at_work_leaves_staging_that_the_next_export_removes(tmp_path):
    """``kill -9`` of ``mark1 export onnx`` while it writes its bundle: its staging folder stays
    (nothing can run in a killed process), the user's folder is as it was, and the next export
    into the same place removes the staging and writes the whole bundle."""
    import time

    import numpy as np

    from export.onnx.checkpoint import save_checkpoint
    from tests.conftest import run_cli
    from tests.int8_models import random_checkpoint

    ckpt = random_checkpoint(np.random.default_rng(0), [400, 8, 10])
    ckpt.classes = [str(k) for k in range(10)]
    save_checkpoint(ckpt, tmp_path / "mlp.pt")
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep.txt").write_bytes(b"the user's file")
    argv = [sys.executable, "-m", "mark1.cli", "export", "onnx", str(tmp_path / "mlp.pt"),
            "--out", str(out)]
    proc = subprocess.Popen(argv, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(6000):  # the staging folder appears once the plan is entered (<= 60 s)
            staged = [p for p in tmp_path.iterdir() if is_staging_of(p.name, "bundle")]
            if staged or proc.poll() is not None:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and len(staged) == 1
    assert files(out) == {"keep.txt": b"the user's file"}
    res = run_cli("export", "onnx", str(tmp_path / "mlp.pt"), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert not [p for p in tmp_path.iterdir() if is_staging_of(p.name, "bundle")]
    assert {"keep.txt", "model.onnx", "report.json"} <= set(files(out))
