"""Output files: written whole or not at all, user files kept, the usual file mode."""

from __future__ import annotations

import numpy as np
import pytest

from mark1.io import staged_output_dir, write_json


def test_a_staged_output_folder_keeps_user_files_and_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with staged_output_dir(out) as stage:
        write_json(stage / "report.json", {"a": np.int64(1), "b": np.arange(2)})
    assert (out / "report.json").read_text().count('"a": 1') == 1
    assert (out / "mine.txt").read_text() == "keep me"
    with pytest.raises(RuntimeError):
        with staged_output_dir(tmp_path / "failed") as stage:
            (stage / "half.json").write_text("{")
            raise RuntimeError("boom")
    assert not (tmp_path / "failed").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_files_written_atomically_get_the_usual_mode(tmp_path):
    import os

    from mark1.io import atomic_write_bytes

    mask = os.umask(0o022)
    try:
        p = atomic_write_bytes(tmp_path / "a.bin", b"x")
    finally:
        os.umask(mask)
    assert (p.stat().st_mode & 0o777) == 0o644
    assert [q.name for q in tmp_path.iterdir()] == ["a.bin"]
