"""Errors that the CLI turns into one clear line (no traceback) and a non-zero exit code."""

from __future__ import annotations

from pathlib import Path


class MedfoundryError(Exception):
    """Base class: a problem the user can fix, with a message that says what and where."""


class InputError(MedfoundryError, ValueError):
    """A file, array or argument that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class OutputExistsError(MedfoundryError, FileExistsError):
    """An output path exists and ``overwrite`` was not asked for."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        super().__init__(f"{self.path}: output exists; pass --overwrite (overwrite=True) to replace it")


class WeightsError(MedfoundryError, FileNotFoundError):
    """A weights file is missing or is not the expected one."""


class MedfoundryWarning(UserWarning):
    """Something the user should know about an input that is still used (e.g. an image without contrast)."""


class BatchFailures(MedfoundryError):
    """Some items of a batch failed (the others were written); ``done`` and ``failed`` list them."""

    def __init__(self, where: str | Path, done: list, failed: list[tuple[str, str]]):
        self.done, self.failed = list(done), list(failed)
        shown = "; ".join(f"{name}: {why}" for name, why in self.failed[:3])
        more = f"; and {len(self.failed) - 3} more" if len(self.failed) > 3 else ""
        total = len(self.done) + len(self.failed)
        super().__init__(f"{where}: {len(self.failed)} of {total} files failed ({shown}{more})")
