"""The ``medfoundry`` command: a thin dispatcher over one module per sub-command.

Each sub-command module defines ``add_parser(subparsers)`` (cheap: no heavy imports) and ``run(args) -> int``.
Errors that a user can fix (:class:`medfoundry.errors.MedfoundryError`) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from medfoundry import __version__
from medfoundry.cli.parameter_flags import as_flags
from medfoundry.errors import MedfoundryError, MedfoundryWarning

# sub-command name -> module that implements it (listed in the order ``--help`` shows them)
COMMANDS: dict[str, str] = {
    "demo": "medfoundry.cli.demo",
    "segment": "medfoundry.cli.segment",
    "segment-npz": "medfoundry.cli.segment_npz",
    "evaluate": "medfoundry.cli.evaluate",
    "pool": "medfoundry.cli.pool",
    "pretrain": "medfoundry.cli.pretrain",
    "transfer": "medfoundry.cli.transfer",
    "classify": "medfoundry.cli.classify",
    "nnunet": "medfoundry.cli.nnunet",
    "finetune": "medfoundry.cli.finetune",
    "synthesize": "medfoundry.cli.synthesize",
    "view": "medfoundry.cli.view",
    "lesions": "medfoundry.cli.lesions",
}


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line naming the option (exit code 2), no usage dump."""

    def error(self, message: str):  # noqa: ANN201 - argparse's signature
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every registered sub-command."""
    parser = OneLineParser(
        prog="medfoundry",
        description="Foundation models for medical image segmentation and abnormality detection.",
        epilog="Run 'medfoundry COMMAND --help' for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"medfoundry {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMANDS.values():
        importlib.import_module(module_name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (already printed in one line)
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    if not getattr(args, "command", None):
        parser.print_help()
        return 1
    module = importlib.import_module(COMMANDS[args.command])
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning(args.command)
            warnings.simplefilter("always", MedfoundryWarning)
            return int(module.run(args) or 0)
    except MedfoundryError as exc:
        print(f"medfoundry {args.command}: error: {as_flags(str(exc), exc.parameters)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # a batch run says what stays and how to resume
        print(f"medfoundry {args.command}: interrupted{f': {exc}' if str(exc) else ''}", file=sys.stderr)
        return 130


def _one_line_warning(command: str):
    """``warnings.showwarning`` that prints medfoundry's own warnings as one line (others as Python does)."""
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001 - warnings API
        if issubclass(category, MedfoundryWarning):
            print(f"medfoundry {command}: warning: {as_flags(str(message))}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    return show


if __name__ == "__main__":
    sys.exit(main())
