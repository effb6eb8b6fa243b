"""What a command reads and writes: planned and checked before any work, written all at once.

A command declares its inputs and outputs to an :class:`OutputPlan` before it computes anything
or sends a byte to a device::

    plan = OutputPlan()
    source = plan.read("CHECKPOINT", args.checkpoint, what="checkpoint")
    out = plan.write_file("--out", args.out)
    bundle = plan.write_folder("--out", args.out, files=("model.onnx", "model.json"))
    with plan:                       # every check, and the staging files created, here
        ...                          # the work
        plan.write_bytes(out, blob)  # into the staging file; moved into place at the end

Entering the plan refuses, with one line naming the user's path: an empty path; an input that is
missing, a folder or not a regular file; an output that is (through symlinks and hard links) one
of the inputs, or the same file as another output, or a folder where a file goes (or a file
where a folder goes), or a device or pipe; a place where the output cannot be created, found by
creating its staging file or folder right then (and keeping it for the run). Leaving the block
normally moves every output into place; leaving it by an exception (a failure, Ctrl-C) removes
every staging file and any folder the plan created, so that the user's files are as they were.

Staging files and folders sit beside their destination (same file system, so the last step is
an atomic rename) and are named ``.NAME.mark1-PID-XXXXXXXX.part``; the process that owns one
holds an exclusive ``flock`` on it. A run killed outright (``kill -9``, power loss) leaves its
staging behind; the next plan for the same destination removes every staging of that name whose
lock is free. Nothing else is ever removed: a name of another pattern, a symlink or an entry
still locked by a live run is left alone.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# --------------------------------------------------------------------------- staging

_STAGING = re.compile(r"^\.(?P<name>.+)\.mark1-(?P<pid>\d+)-(?P<tag>[0-9a-f]{8})\.part$")
"""Names of staging files and folders: ``.NAME.mark1-PID-XXXXXXXX.part``."""


_LONGEST_STEM = 200
"""Longest destination name kept whole in a staging name (file names have at most 255 bytes;
the staging adds about 30)."""


def _stem(dest_name: str) -> str:
    """``dest_name`` as staging names carry it: whole, or (if long) cut and tagged with a hash,
    so that a destination with a name of 255 bytes still gets a staging beside it."""
    if len(os.fsencode(dest_name)) <= _LONGEST_STEM:
        return dest_name
    digest = hashlib.sha256(os.fsencode(dest_name)).hexdigest()[:12]
    return os.fsdecode(os.fsencode(dest_name)[:100]) + "~" + digest


def staging_name(dest_name: str) -> str:
    """A fresh staging name for the destination file or folder ``dest_name``."""
    return f".{_stem(dest_name)}.mark1-{os.getpid()}-{secrets.token_hex(4)}.part"


def is_staging_of(entry_name: str, dest_name: str) -> bool:
    """True if ``entry_name`` is a staging name for ``dest_name``."""
    m = _STAGING.match(entry_name)
    return m is not None and m.group("name") == _stem(dest_name)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_tree(path: Path) -> None:
    """Remove the file or folder at ``path`` (not following symlinks); silent if gone."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


def sweep_stale(dest: Path) -> list[Path]:
    """Remove the staging beside ``dest`` left by runs that died; return what was removed.

    An entry is removed only when its name is a staging name of ``dest``, it is a plain file or
    folder (not a symlink) and its lock can be taken at once (so its owner is gone).
    """
    removed: list[Path] = []
    parent = dest.parent
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        if not is_staging_of(entry.name, dest.name) or entry.is_symlink():
            continue
        path = parent / entry.name
        flags = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live run holds it
            here = os.fstat(fd)
            try:
                now = os.lstat(path)
            except FileNotFoundError:
                continue
            if (now.st_dev, now.st_ino) != (here.st_dev, here.st_ino):
                continue  # replaced since we opened it: not the one we locked
            _remove_tree(path)
            removed.append(path)
        finally:
            os.close(fd)
    return removed


class Staging:
    """A staging file or folder beside ``dest``, created and locked now, moved into place by
    :meth:`commit` or removed by :meth:`discard`."""

    def __init__(self, dest: Path, folder: bool) -> None:
        self.dest = dest
        self.folder = folder
        self.fd = -1
        sweep_stale(dest)
        mode = 0o777 & ~_umask() if folder else 0o666 & ~_umask()
        for _ in range(8):
            path = dest.parent / staging_name(dest.name)
            if folder:
                os.mkdir(path, 0o700)
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
                             | getattr(os, "O_CLOEXEC", 0))
            else:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL
                             | getattr(os, "O_CLOEXEC", 0), 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.lstat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False  # a sweep took it between creation and lock: make another
            if same:
                os.fchmod(fd, mode)
                self.path = path
                """Where the run writes: the staging file, or the staging folder."""
                self.fd = fd
                return
            os.close(fd)
        raise OSError(errno.EEXIST, "could not create a staging name", str(dest.parent))

    def commit(self) -> None:
        """Move the staged output into place (a folder's files into ``dest``, keeping the files
        already there that the run did not write)."""
        if self.folder:
            if not self.dest.exists():
                os.replace(self.path, self.dest)
            else:
                for item in sorted(self.path.rglob("*")):
                    if item.is_file() and not _STAGING.match(item.name):
                        target = self.dest / item.relative_to(self.path)
                        target.parent.mkdir(parents=True, exist_ok=True)
                        os.replace(item, target)
                shutil.rmtree(self.path, ignore_errors=True)
        else:
            os.fsync(self.fd)
            os.replace(self.path, self.dest)
        self._close()

    def sync(self) -> None:
        """Flush the staged data to the disk (before the first rename of a plan)."""
        if self.folder:
            for item in self.path.rglob("*"):
                if item.is_file():
                    fd = os.open(item, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
        else:
            os.fsync(self.fd)

    def discard(self) -> None:
        """Remove the staging file or folder."""
        if self.fd >= 0:
            _remove_tree(self.path)
        self._close()

    def _close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# --------------------------------------------------------------------------- single files


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a staging file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Staging(path, folder=False)
    try:
        _write_all(staging.fd, data)
        staging.commit()
    except BaseException:
        staging.discard()
        raise
    return path


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    while view:
        view = view[os.write(fd, view) :]


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def to_json(obj: Any) -> str:
    """``obj`` as indented JSON; numpy scalars and arrays become plain numbers and lists."""
    return json.dumps(obj, indent=2, default=_json_default) + "\n"


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, to_json(obj))


# --------------------------------------------------------------------------- the plan


@dataclass
class _Input:
    label: str
    path: Path
    real: str
    ident: tuple[int, int]


@dataclass
class _Output:
    label: str
    path: Path
    folder: bool
    files: tuple[str, ...] = ()
    staging: Staging | None = None
    real: str = ""
    targets: dict[str, str] = field(default_factory=dict)
    """Resolved path of each file this output writes -> what to call it in a message."""
    keep_on_error: bool = False
    """Moved into place also when the run fails (a log of what happened, e.g. a trace)."""


def _shown(path: str | os.PathLike[str]) -> str:
    return repr(str(path))


class OutputPlan:
    """The inputs and outputs of one command run, checked before the run does any work.

    Declare with :meth:`read`, :meth:`write_file` and :meth:`write_folder`; enter the plan
    (``with plan:``) to check everything and create the staging; write through
    :meth:`staged` (or :meth:`write_bytes`, :meth:`write_text`, :meth:`write_json`); leave the
    block to move the outputs into place (or, on an exception, to remove every trace).
    """

    def __init__(self) -> None:
        self.inputs: list[_Input] = []
        self.outputs: list[_Output] = []
        self._made_dirs: list[Path] = []
        self._entered = False

    # ------------------------------------------------------------------ declaring

    def read(self, label: str, path: str | os.PathLike[str], what: str = "input file") -> Path:
        """Declare an input file: it must exist and be a regular file (checked now, since a
        missing input is the cheapest mistake to report). Returns ``path`` as a ``Path``."""
        text = os.fspath(path)
        if not text:
            raise ValueError(f"{label}: an empty path; give the {what}")
        p = Path(text)
        try:
            st = p.stat()
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, f"{what} not found", text) from None
        except NotADirectoryError:
            raise FileNotFoundError(errno.ENOENT, f"{what} not found", text) from None
        except OSError as exc:
            raise ValueError(f"{label} {_shown(text)}: cannot read it "
                             f"({exc.strerror or exc})") from None
        if stat.S_ISDIR(st.st_mode):
            raise ValueError(f"{label} {_shown(text)} is a folder; give the {what} itself")
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{label} {_shown(text)} is not a regular file (a device, pipe or "
                             f"socket); give the {what} itself")
        try:
            with open(p, "rb"):
                pass
        except OSError as exc:
            raise ValueError(f"{label} {_shown(text)}: cannot read it "
                             f"({exc.strerror or exc})") from None
        self.inputs.append(_Input(label, p, os.path.realpath(p), (st.st_dev, st.st_ino)))
        return p

    def write_file(self, label: str, path: str | os.PathLike[str],
                   keep_on_error: bool = False) -> Path:
        """Declare an output file (written whole at the end, replacing any file there).
        ``keep_on_error``: the file is moved into place also when the run fails, if the run
        began to write it -- for a log of the run, which is what a failed run's user reads."""
        out = self._declare(label, path, folder=False, files=())
        self.outputs[-1].keep_on_error = keep_on_error
        return out

    def write_folder(self, label: str, path: str | os.PathLike[str],
                     files: Iterable[str]) -> Path:
        """Declare an output folder and the ``files`` the run puts into it (files already in
        the folder that the run does not write are kept)."""
        return self._declare(label, path, folder=True, files=tuple(files))

    def _declare(self, label: str, path: str | os.PathLike[str], folder: bool,
                 files: tuple[str, ...]) -> Path:
        if self._entered:
            raise RuntimeError("outputs are declared before the plan is entered")
        text = os.fspath(path)
        if not text or not text.strip():
            kind = "folder" if folder else "file name"
            raise ValueError(f"{label} {_shown(text)}: an empty path; give a {kind}")
        p = Path(text)
        self.outputs.append(_Output(label, p, folder, files))
        return p

    # ------------------------------------------------------------------ checking

    def check(self) -> None:
        """Every check of the plan, and the staging created (see the module docstring)."""
        if self._entered:
            return
        self._entered = True
        try:
            self._check_kinds()
            self._check_collisions()
            for out in self.outputs:
                self._create_staging(out)
        except BaseException:
            self._discard()
            raise

    def _check_kinds(self) -> None:
        for out in self.outputs:
            text = str(out.path)
            try:
                st = os.stat(out.path)
            except FileNotFoundError:
                st = None
            except NotADirectoryError:
                raise ValueError(f"{out.label} {_shown(text)}: a part of the path is a file, "
                                 "not a folder") from None
            except OSError as exc:
                raise ValueError(f"{out.label} {_shown(text)}: cannot write there "
                                 f"({exc.strerror or exc})") from None
            if st is not None:
                if out.folder and not stat.S_ISDIR(st.st_mode):
                    raise ValueError(f"{out.label} {_shown(text)} exists and is not a folder")
                if not out.folder and stat.S_ISDIR(st.st_mode):
                    raise ValueError(f"{out.label} {_shown(text)} is a folder; give a file name "
                                     "(e.g. a name inside it)")
                if not out.folder and not stat.S_ISREG(st.st_mode):
                    raise ValueError(f"{out.label} {_shown(text)} exists and is not a regular "
                                     "file (a device, pipe or socket): it cannot be replaced")
            out.real = os.path.realpath(out.path)
            for name in out.files if out.folder and st is not None else ():
                member = os.path.join(out.real, name)
                if os.path.lexists(member) and not (os.path.isfile(member)
                                                    and not os.path.islink(member)):
                    raise ValueError(f"{name} in {out.label} {_shown(text)} is a folder, link or "
                                     "device, where this command writes a file; move it away "
                                     "or choose another place")
            if out.folder:
                out.targets = {os.path.join(out.real, name): f"{name} in {out.label} {_shown(text)}"
                               for name in out.files}
            else:
                out.targets = {out.real: f"{out.label} {_shown(text)}"}

    def _check_collisions(self) -> None:
        idents = {given.ident: given for given in self.inputs}
        by_real = {given.real: given for given in self.inputs}
        seen: dict[str, str] = {}
        folders: dict[str, str] = {}
        for out in self.outputs:
            if out.folder:
                if out.real in folders:
                    raise ValueError(f"{out.label} {_shown(out.path)} is the same folder as "
                                     f"{folders[out.real]}; give each output its own place")
                folders[out.real] = f"{out.label} {_shown(out.path)}"
            for real, shown in out.targets.items():
                inp: _Input | None = by_real.get(real)
                if inp is None:
                    try:
                        st = os.stat(real)
                        inp = idents.get((st.st_dev, st.st_ino))
                    except OSError:
                        inp = None
                if inp is not None:
                    raise ValueError(
                        f"{shown} would overwrite {inp.label} {_shown(inp.path)}, which this "
                        f"command reads; choose another {out.label.split()[0]}"
                    )
                if real in seen:
                    raise ValueError(f"{shown} and {seen[real]} name the same file; give each "
                                     "output its own name")
                seen[real] = shown
        for out in self.outputs:  # a file written where an output folder goes
            if not out.folder and out.real in folders:
                raise ValueError(f"{out.label} {_shown(out.path)} is the same path as "
                                 f"{folders[out.real]}; give each output its own place")

    def _create_staging(self, out: _Output) -> None:
        text = str(out.path)
        parent = Path(out.real).parent
        try:
            self._make_parents(parent)
            out.staging = Staging(Path(out.real), out.folder)
        except OSError as exc:
            why = exc.strerror or str(exc)
            if exc.errno in (errno.ENOTDIR, errno.EEXIST):
                why = "a part of the path is a file, not a folder"
            raise ValueError(f"{out.label} {_shown(text)}: cannot write there ({why})") from None

    def _make_parents(self, folder: Path) -> None:
        missing = []
        p = folder
        while not p.exists():
            if p.is_symlink():  # a dangling symlink on the way
                raise OSError(errno.ENOENT, "a folder on the path is a broken symlink")
            missing.append(p)
            if p.parent == p:
                break
            p = p.parent
        for d in reversed(missing):
            d.mkdir()
            self._made_dirs.append(d)

    # ------------------------------------------------------------------ writing

    def staged(self, path: str | os.PathLike[str]) -> Path:
        """Where to write the declared output ``path`` (its staging file or folder)."""
        if not self._entered:
            raise RuntimeError("enter the plan (with plan:) before writing")
        for out in self.outputs:
            if str(out.path) == os.fspath(path) and out.staging is not None:
                return out.staging.path
        raise KeyError(f"{os.fspath(path)!r} is not an output of this plan")

    def write_bytes(self, path: str | os.PathLike[str], data: bytes) -> None:
        """Write the declared output file ``path`` (into its staging file)."""
        for out in self.outputs:
            if str(out.path) == os.fspath(path) and out.staging is not None and not out.folder:
                _write_all(out.staging.fd, data)
                return
        raise KeyError(f"{os.fspath(path)!r} is not an output file of this plan")

    def write_text(self, path: str | os.PathLike[str], text: str) -> None:
        """Write UTF-8 ``text`` to the declared output file ``path``."""
        self.write_bytes(path, text.encode("utf-8"))

    def write_json(self, path: str | os.PathLike[str], obj: Any) -> None:
        """Write ``obj`` as JSON to the declared output file ``path``."""
        self.write_text(path, to_json(obj))

    # ------------------------------------------------------------------ finishing

    def commit(self) -> None:
        """Move every output into place (data flushed to disk first)."""
        for out in self.outputs:
            if out.staging is not None:
                out.staging.sync()
        for out in self.outputs:
            if out.staging is not None:
                out.staging.commit()
                out.staging = None
        self._made_dirs.clear()

    def _keep_logs(self) -> None:
        """Move the outputs declared ``keep_on_error`` that the run began to write into place
        (best effort: the run has failed already, and its own error is the one to report). A
        log the run never began -- it failed before -- is removed like any other output."""
        for out in self.outputs:
            if (out.keep_on_error and out.staging is not None and not out.folder
                    and os.fstat(out.staging.fd).st_size > 0):
                try:
                    out.staging.commit()
                except OSError:
                    continue
                out.staging = None

    def _discard(self) -> None:
        for out in self.outputs:
            if out.staging is not None:
                out.staging.discard()
                out.staging = None
        for d in reversed(self._made_dirs):
            try:
                d.rmdir()
            except OSError:
                pass
        self._made_dirs.clear()

    def __enter__(self) -> OutputPlan:
        self.check()
        return self

    def users_path(self, path: str | os.PathLike[str]) -> str:
        """``path`` with a staging file or folder of this plan replaced by the output it
        stands for (so that no message names a staging name)."""
        text = os.fspath(path)
        for out in self.outputs:
            if out.staging is not None:
                stage = str(out.staging.path)
                if text == stage or text.startswith(stage + os.sep):
                    return str(out.path) + text[len(stage):]
        return text

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        if exc_type is None:
            try:
                self.commit()
            except OSError as error:
                shown = self._renamed(error)
                self._discard()
                raise shown from error
            except BaseException:
                self._discard()
                raise
        else:
            renamed = self._renamed(exc) if isinstance(exc, OSError) else None
            self._keep_logs()
            self._discard()
            if renamed is not None and renamed is not exc:
                raise renamed from exc

    def _renamed(self, error: OSError) -> OSError:
        """``error`` naming the user's path where it named a staging one."""
        if error.filename is None:
            return error
        shown = self.users_path(error.filename)
        if shown == os.fspath(error.filename):
            return error
        return OSError(error.errno, error.strerror or str(error), shown)


@contextmanager
def staged_output_dir(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a scratch folder for a run's files; on success move them into ``out``.

    A plan with the one output folder ``out`` (see :class:`OutputPlan`): if the body raises,
    the scratch folder is removed and ``out`` is left exactly as it was. Files already in
    ``out`` that the run does not produce are kept.
    """
    plan = OutputPlan()
    plan.write_folder("output path", out, files=())
    with plan:
        yield plan.staged(out)
