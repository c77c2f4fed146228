"""``medfoundry synthesize``: exemplar-guided cut-and-paste training data from a few labelled scans."""

from __future__ import annotations

import argparse

from medfoundry.cli.common import add_overwrite, add_seed, positive_int


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
    from pathlib import Path

    from medfoundry.data.slices2d import case_name, find_pairs, read_pair
    from medfoundry.data.synthesis import synthesize_dataset
    from medfoundry.errors import InputError, OutputExistsError
    from medfoundry.io.paths import modality_from_name

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise OutputExistsError(out)
    root = Path(args.exemplars)
    pairs = find_pairs(root, args.image_glob)
    by_case: dict[str, list] = {}
    for image_path, mask_path in pairs:
        by_case.setdefault(case_name(image_path, root), []).append((image_path, mask_path))
    cases = sorted(by_case)
    if args.cases:
        missing = sorted(set(args.cases) - set(cases))
        if missing:
            raise InputError(root, f"exemplar cases not found: {', '.join(missing[:5])}")
        cases = list(args.cases)
    if args.n_exemplars is not None:
        if args.n_exemplars > len(cases):
            raise InputError(root, f"asked for {args.n_exemplars} exemplars but only {len(cases)} cases exist")
        cases = cases[: args.n_exemplars]
    loaded = []
    for case in cases:
        for image_path, mask_path in by_case[case]:
            image, mask = read_pair(image_path, mask_path, args.modality)
            loaded.append((image, mask, case))
    modality = args.modality or modality_from_name(by_case[cases[0]][0][0])
    synthesize_dataset(loaded, out, args.count, modality=modality, seed=args.seed, overwrite=args.overwrite)
    print(f"{args.count} synthetic images from {len(cases)} exemplar cases in {out} (picture: {out}/synthesis.png)")
    return 0
