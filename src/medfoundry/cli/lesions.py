"""``medfoundry lesions``: find, delineate and quantify the lesions of a whole-body PET, with no prompts."""

from __future__ import annotations

import argparse

from medfoundry.cli.common import (
    add_model_options,
    add_overwrite,
    add_progress,
    positive_float,
    set_threads,
)

EPILOG = """examples:
  medfoundry lesions pet_dicom_folder/ --out results/
  medfoundry lesions scan_suv.nii.gz --out results/ --adapter run/best.pt --threshold 4.0 --min-volume 0.5
  medfoundry lesions scan_bqml.nii.gz --suv-factor 0.000243 --out results/ --delineation both

Writes to the --out folder: lesions.nii.gz (one label per lesion, input grid), lesions.dcm (DICOM SEG, for a DICOM
input), lesions.csv + lesions.json (centroid mm, SUVmax, SUVpeak, SUVmean, MTV mL, TLG, score; patient totals),
mip.png (coronal + sagittal MIPs) and thumbnails.png. How it works and its limits: docs/lesions.md.
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "lesions",
        help="find and quantify lesions in a whole-body PET (no prompts)",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "image",
        help="PET DICOM series folder, or NIfTI/NRRD/MHA volume in SUV (or Bq/mL with --suv-factor)",
    )
    p.add_argument("--out", required=True, help="output folder (refused if it exists, unless --overwrite)")
    p.add_argument(
        "--threshold",
        type=positive_float,
        metavar="SUV",
        help="candidate threshold (default: PERCIST liver-based)",
    )
    p.add_argument(
        "--min-volume",
        type=positive_float,
        default=0.5,
        metavar="ML",
        help="smallest candidate in mL (0.5)",
    )
    p.add_argument(
        "--delineation",
        choices=["sam", "threshold", "both"],
        default="both",
        help="lesion outline: LiteMedSAM from the candidate box, 41%% of SUVmax, or their union (default both)",
    )
    p.add_argument(
        "--keep-symmetric",
        action="store_true",
        help="keep hot regions that have a mirror-image partner across the midline (rejected by default as "
        "bilateral physiological uptake: kidneys, glands, brown fat)",
    )
    p.add_argument(
        "--suv-factor",
        type=positive_float,
        metavar="F",
        help="SUV = value x F, for a Bq/mL volume without metadata",
    )
    add_overwrite(p, "an existing output folder")
    add_progress(p)
    add_model_options(p)


def run(args: argparse.Namespace) -> int:
    from medfoundry.api import lesions

    set_threads(args)
    result = lesions(
        args.image,
        args.out,
        threshold=args.threshold,
        min_volume=args.min_volume,
        adapter=args.adapter,
        delineation=args.delineation,
        suv_factor=args.suv_factor,
        keep_symmetric=args.keep_symmetric,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        backend=args.backend,
        weights=args.weights,
    )
    t = result.totals
    print(
        f"wrote {args.out}: {t['lesion_count']} lesion(s), total MTV {t['total_mtv_ml']:.1f} mL, "
        f"total TLG {t['total_tlg']:.1f} (threshold SUV {result.threshold.threshold:.2f}, {result.threshold.method})"
    )
    return 0
