"""``medfoundry segment-npz``: MedSAM-on-laptop challenge format in (``imgs``, ``boxes``) and out (``segs``)."""

from __future__ import annotations

import argparse

from medfoundry.cli.common import (
    add_model_options,
    add_overwrite,
    add_progress,
    options_from_args,
)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "segment-npz",
        help="segment a folder of challenge-format .npz files",
        description="Segment every .npz in IN_DIR (keys imgs, boxes; 2D boxes [x0 y0 x1 y1], 3D [x0 y0 z0 x1 y1 z1]) "
        "and write OUT_DIR/<same name>.npz with key segs (object i -> label i).",
    )
    p.add_argument("in_dir", metavar="IN_DIR")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument(
        "--boxes-from-gts",
        action="store_true",
        help="for files without 'boxes', use one box per label of 'gts' (for evaluation runs)",
    )
    p.add_argument(
        "--stop-on-error", action="store_true", help="stop at the first bad file (default: skip it, report at the end)"
    )
    add_overwrite(p, "existing outputs")
    add_progress(p)
    add_model_options(p)


def run(args: argparse.Namespace) -> int:
    from medfoundry.api import SegmentNpzOptions, segment_npz
    from medfoundry.errors import BatchFailures

    # the model is built after the folders are checked
    options = options_from_args(SegmentNpzOptions, args)
    try:
        written = segment_npz(args.in_dir, args.out_dir, options)
    except BatchFailures as exc:
        print(f"done: {len(exc.done)} file(s) in {args.out_dir}: " + ", ".join(p.name for p in exc.done))
        print(f"failed: {len(exc.failed)} file(s): " + ", ".join(name for name, _ in exc.failed))
        raise
    print(f"wrote {len(written)} file(s) to {args.out_dir}")
    return 0
