"""Atomic, non-clobbering output: write to a temporary file beside the target, then rename."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from medfoundry.errors import OutputExistsError
from medfoundry.io.paths import split_suffix


def check_writable(path: str | Path, overwrite: bool = False) -> Path:
    """Refuse an existing ``path`` unless ``overwrite``; create its parent folder."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path with the target's suffix; on success it replaces ``path`` in one rename.

    Nothing on disk changes if the body raises, and an existing ``path`` is refused unless ``overwrite``.
    """
    target = check_writable(path, overwrite)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=split_suffix(target)[1], dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if target.exists() and not overwrite:  # appeared while we were writing
            raise OutputExistsError(target)
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def swap_in_dir(tmp_dir: str | Path, out_dir: str | Path) -> Path:
    """Move a finished ``tmp_dir`` to ``out_dir``; an existing ``out_dir`` is replaced only after the new one is
    complete (the caller has already checked ``overwrite``)."""
    tmp_dir, out_dir = Path(tmp_dir), Path(out_dir)
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out_dir, old)
        os.replace(tmp_dir, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp_dir, out_dir)
    return out_dir
