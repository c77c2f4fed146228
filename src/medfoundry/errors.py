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
