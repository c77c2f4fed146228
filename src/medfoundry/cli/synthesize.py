"""``medfoundry synthesize``: exemplar-guided cut-and-paste training data from a few labelled scans."""

from __future__ import annotations

import argparse

from medfoundry.cli.common import add_overwrite, add_seed, options_from_args, positive_int


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "synthesize",
        help="make synthetic training slices from a few labelled exemplars (cut, transform, paste)",
        description=(
            "Cut each labelled object from exemplar slices, apply blur, intensity change, scale, flip and "
            "rotation, and paste it near its exemplar position onto a transformed slice without foreground. "
            "Writes OUT/syn_NNNN_{image,mask}.nii.gz, dataset.json (for 'medfoundry finetune --extra OUT') "
            "and synthesis.png."
        ),
    )
    p.add_argument("exemplars", help="folder of NAME_image/NAME_mask pairs (or images/ + labels/)")
    p.add_argument("out", help="output folder (must not exist unless --overwrite)")
    p.add_argument("--count", type=positive_int, default=100, help="number of synthetic images M (default 100)")
    p.add_argument("--exemplars-n", "--n-exemplars", dest="n_exemplars", type=positive_int,
                   help="use the first N cases as exemplars (error if fewer exist)")  # fmt: skip
    p.add_argument("--cases", nargs="+", metavar="CASE", help="exemplar cases (sub-folder names)")
    p.add_argument("--image-glob", metavar="GLOB", help="only images matching GLOB, e.g. '*/PET_image.nii.gz'")
    p.add_argument("--modality", type=str.upper, choices=["CT", "MR", "PET", "OTHER"],
                   help="modality of the images (default: from file names)")  # fmt: skip
    add_seed(p)
    add_overwrite(p, "OUT")


def run(args: argparse.Namespace) -> int:
    from medfoundry.api import SynthesizeOptions, synthesize

    result = synthesize(options_from_args(SynthesizeOptions, args))
    out = result.out
    print(
        f"{args.count} synthetic images from {len(result.cases)} exemplar cases in {out} (picture: {out}/synthesis.png)"
    )
    return 0
