"""The ``medfoundry`` command: a thin dispatcher over one module per sub-command.

Each sub-command module defines ``add_parser(subparsers)`` (cheap: no heavy imports) and ``run(args) -> int``.
Errors that a user can fix (:class:`medfoundry.errors.MedfoundryError`) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from medfoundry import __version__
from medfoundry.errors import MedfoundryError

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
    "lesions": "medfoundry.cli.lesions",
}


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
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
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 1
    module = importlib.import_module(COMMANDS[args.command])
    try:
        return int(module.run(args) or 0)
    except MedfoundryError as exc:
        print(f"medfoundry {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"medfoundry {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
