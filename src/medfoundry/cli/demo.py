"""``medfoundry demo``: segment the bundled PET and CT sample and print DSC / NSD."""

from __future__ import annotations

import argparse

from medfoundry.cli.common import BACKEND_CHOICES, add_overwrite, add_progress


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="segment the bundled PET + CT sample from boxes and score it",
        description="Segments a bundled soft-tissue-sarcoma case (FDG-PET in SUV and CT, with reference masks) from "
        "boxes with LiteMedSAM, writes masks (input geometry), overlay PNGs and metrics.csv, and prints DSC / NSD.",
    )
    p.add_argument("--out", default="medfoundry-demo-output", help="output folder (default: %(default)s)")
    p.add_argument("--backend", default="fast", choices=BACKEND_CHOICES)
    add_overwrite(p, "outputs of an earlier run")
    add_progress(p)


def run(args: argparse.Namespace) -> int:
    from medfoundry.demo import run_demo

    run_demo(args.out, overwrite=args.overwrite, backend=args.backend, progress=not args.no_progress)
    return 0
