"""Atomic, non-clobbering output: write to a temporary sibling (file or folder), then swap it in with a rename.

* :func:`check_writable` / :func:`check_outputs` refuse a bad output path before any work: an existing output
  without ``overwrite``, a folder where a file is expected (or the reverse), a parent that is a file or cannot be
  written, two outputs that are the same path.
* :func:`atomic_path` (one file) and :func:`atomic_dir` (one folder) yield a temporary sibling; the target is
  replaced only when the body finished, and an old output is removed only after the new one is in place. On error
  nothing changes and no temporary is left behind.
* Outputs get the mode a plain ``open(path, "w")`` / ``mkdir`` would give (``0o666`` / ``0o777`` minus the
  umask), not the private ``0o600`` / ``0o700`` of :mod:`tempfile`.
* Temporary siblings are named ``.NAME.PID-HOST-...`` (process id, a short hash of the machine's name). A run
  killed before it could clean up (``kill -9``, a power cut) leaves one behind; the next process that writes into
  that folder removes those of processes that no longer run on this machine, with a one-line notice (an output
  that a killed swap had moved aside is put back instead).
* An output given as a symbolic link is written where the link points (the link stays).
* A final rename that fails (the output cannot be replaced) is one :class:`InputError` line; the old output stays.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

from medfoundry.errors import InputError, MedfoundryWarning, OutputExistsError
from medfoundry.io.paths import split_suffix

_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
_OLD = "old"  # the marker of an output moved aside by swap_in_dir


def _umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(folder: bool = False) -> int:
    """The mode a normal file (``0o666``) or folder (``0o777``) write gets under the current umask."""
    return (0o777 if folder else 0o666) & ~_umask()


def _check_parent(path: Path) -> None:
    """The nearest existing ancestor of ``path`` must be a writable folder (missing ones are created later)."""
    parent = path.parent
    while not parent.exists():
        if parent.parent == parent:
            break
        if parent.is_symlink():  # dangling link
            raise InputError(path, f"cannot create the output folder {parent} (dangling link)")
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(path, f"cannot write here: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(path, f"cannot write here: no write permission in {parent}")
    if parent.resolve().parts[1:2] in (("proc",), ("sys",)):
        raise InputError(path, f"cannot write here: {parent} is a virtual system folder")


def check_writable(path: str | Path, overwrite: bool = False, folder: bool = False, create: bool = False) -> Path:
    """Refuse a bad output ``path`` before any work (nothing is created unless ``create``: then its parent folder).

    Refused: an existing ``path`` unless ``overwrite``; a folder where a file is expected (or a file where a
    ``folder`` is expected); a parent that is a file, not writable, or under ``/proc`` / ``/sys``.
    """
    path = Path(path)
    if path.is_dir() and not folder:
        raise InputError(path, "is a folder; give a file name for this output")
    if path.exists() and not path.is_dir() and folder:
        raise InputError(path, "is a file; this output is a folder")
    if path.exists() and not overwrite:
        raise OutputExistsError(path)
    _check_parent(path)
    if create:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(path, f"cannot create the output folder ({exc.strerror or exc})") from None
    return path


def check_outputs(*paths: str | Path | None, overwrite: bool = False) -> list[Path]:
    """:func:`check_writable` on every given output (``None`` skipped), and refuse two that are the same file."""
    given = [Path(p) for p in paths if p is not None]
    seen: dict[Path, Path] = {}
    for path in given:
        key = Path(os.path.abspath(path))
        if key in seen:
            raise InputError(path, f"is given for two outputs ({seen[key]} and {path}); give each its own path")
        seen[key] = path
    return [check_writable(p, overwrite) for p in given]


def _prefix(target: Path) -> str:
    """The start of this process's temporary siblings of ``target``: ``.NAME.PID-HOST-``."""
    return f".{target.name}.{os.getpid()}-{_HOST}-"


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (another user's counts too)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's process, or not a pid we can ask about: keep its files
    return True


_STALE = re.compile(rf"^\.(?P<name>.+)\.(?P<pid>\d+)-{_HOST}-(?P<old>{_OLD}-)?")
_SCANNED: set[str] = set()  # folders already cleaned by this process (one scan each, not one per file written)


def remove_stale_temporaries(folder: str | Path) -> list[str]:
    """Remove the temporaries in ``folder`` left by processes of this machine that no longer run (an output that a
    killed swap had moved aside is put back instead, when its place is empty); one notice; returns their names.
    Each folder is scanned once per process."""
    folder = Path(folder)
    key = os.path.abspath(folder)
    if key in _SCANNED:
        return []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    _SCANNED.add(key)
    removed = []
    for path in entries:
        match = _STALE.match(path.name)
        if not match or _running(int(match["pid"])):
            continue
        target = folder / match["name"]
        try:
            if match["old"] and not os.path.lexists(target):
                os.replace(path, target)  # killed between moving the old output aside and swapping the new one in
                warnings.warn(f"{target}: put back the previous output, moved aside by an interrupted run",
                              MedfoundryWarning, stacklevel=3)  # fmt: skip
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            continue
        removed.append(path.name)
    if removed:
        shown = ", ".join(removed[:3]) + (f" and {len(removed) - 3} more" if len(removed) > 3 else "")
        warnings.warn(
            f"{folder}: removed {len(removed)} temporary file(s) left by an interrupted run ({shown})",
            MedfoundryWarning,
            stacklevel=3,
        )
    return removed


def _real(path: str | Path) -> Path:
    """``path``, or where it points when it is a symbolic link (the output goes there; the link stays)."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _replace(src: Path, dst: Path, target: Path) -> None:
    """``os.replace`` whose failure is one line naming ``target``."""
    try:
        os.replace(src, dst)
    except OSError as exc:
        raise InputError(
            target, f"cannot replace the output ({exc.strerror or exc}); the previous output is kept"
        ) from None


@contextlib.contextmanager
def atomic_path(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path with the target's suffix; on success it replaces ``path`` in one rename.

    Nothing on disk changes if the body raises, and an existing ``path`` is refused unless ``overwrite``.
    """
    target = check_writable(_real(path), overwrite, create=True)
    remove_stale_temporaries(target.parent)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(target), suffix=split_suffix(target)[1], dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if target.exists() and not overwrite:  # appeared while we were writing
            raise OutputExistsError(target)
        if tmp_path.is_file():
            os.chmod(tmp_path, default_mode())
        _replace(tmp_path, target, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def swap_in_dir(tmp_dir: str | Path, out_dir: str | Path) -> Path:
    """Move a finished ``tmp_dir`` to ``out_dir``; an existing ``out_dir`` is moved aside, and removed only after
    the new one is in place (put back if the swap fails). The caller has already checked ``overwrite``. A failed
    rename is one :class:`InputError` line."""
    tmp_dir, out_dir = Path(tmp_dir), _real(out_dir)
    if not out_dir.exists():
        _replace(tmp_dir, out_dir, out_dir)
        return out_dir
    old = out_dir.with_name(f"{_prefix(out_dir)}{_OLD}-{uuid.uuid4().hex[:8]}")
    _replace(out_dir, old, out_dir)
    try:
        _replace(tmp_dir, out_dir, out_dir)
    except BaseException:
        os.replace(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return out_dir


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it becomes ``path``.

    An existing ``path`` is refused unless ``overwrite``, and then replaced only after the new folder is complete
    (:func:`swap_in_dir`). If the body raises, the old output is untouched and the temporary folder is removed.
    """
    target = check_writable(_real(path), overwrite, folder=True, create=True)
    remove_stale_temporaries(target.parent)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(target), suffix=".tmp", dir=target.parent))
    try:
        os.chmod(tmp, default_mode(folder=True))
        yield tmp
        if target.exists() and not overwrite:  # appeared while we were writing
            raise OutputExistsError(target)
        swap_in_dir(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def remove_temporaries_of(path: str | Path) -> list[Path]:
    """Remove every temporary sibling of the output ``path`` (``.NAME.PID-HOST-...``), whichever process on
    whichever machine made it: for a caller that knows that no process writes ``path`` any more (a batch driver
    whose worker died on that output's row). Returns what was removed."""
    target = Path(path)
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.\d+-[0-9a-f]{{6}}-")
    removed = []
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not pattern.match(entry.name) or entry.is_symlink():
            continue
        if entry.is_dir():  # a folder written whole (atomic_dir)
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
        elif entry.is_file():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed
