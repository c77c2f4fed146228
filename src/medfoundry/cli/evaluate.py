"""``medfoundry evaluate PRED GT --out CSV``: DSC / IoU / NSD / HD95 / FPV / FNV per class and per case, or
lesion-wise detection metrics with ``--lesion-wise``."""

from __future__ import annotations

import argparse
from pathlib import Path

from medfoundry.cli.common import add_overwrite, add_progress, options_from_args, positive_float, positive_int


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the sub-command (no heavy imports here)."""
    p = subparsers.add_parser(
        "evaluate",
        help="score segmentations against ground truth (DSC, NSD, HD95, FPV/FNV)",
        description=(
            "Score predicted label maps against ground-truth label maps: one file each, or two folders "
            "matched by file name. Writes one CSV row per case and class and prints the per-class means. "
            "Metric definitions and the rules for empty masks: docs/metrics.md."
        ),
    )
    p.add_argument("pred", type=Path, help="prediction file or folder")
    p.add_argument("gt", type=Path, help="ground-truth file or folder")
    p.add_argument("--out", type=Path, required=True, help="CSV with one row per case and class")
    p.add_argument(
        "--tolerance", type=positive_float, default=2.0, metavar="MM", help="NSD tolerance in mm (default 2)"
    )
    p.add_argument(
        "--labels", type=positive_int, nargs="+", metavar="L", help="classes to score (default: every label present)"
    )
    p.add_argument(
        "--challenge-compat",
        action="store_true",
        help="score as the MedSAM-on-laptop 2024 evaluation (case DSC/NSD; 2D as HxWx1 at 1 mm; "
        "NSD only where the case DSC > 0.2)",
    )
    p.add_argument("--summary", type=Path, metavar="CSV", help="also write the per-class means as CSV")
    p.add_argument("--plot", type=Path, metavar="PNG", help="also draw the per-class distributions")
    p.add_argument(
        "--lesion-wise",
        action="store_true",
        help="score lesions instead (autoPET style: components of pred>0 and gt>0 matched by overlap): "
        "--out gets one row per case (detected / missed lesions, false-positive components, sensitivity, "
        "mean lesion Dice, Dice, FPV, FNV), <out stem>_lesions.csv one row per reference lesion; "
        "--summary the means over cases. Not with --labels, --challenge-compat or --plot",
    )
    add_overwrite(p, "existing output files")
    add_progress(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Evaluate, write the CSV (and optional summary / plot) atomically, print the per-class means (or, with
    ``--lesion-wise``, the per-case lines and means)."""
    from medfoundry.api import EvaluateOptions, evaluate

    options = options_from_args(EvaluateOptions, args, tolerance_mm=args.tolerance)
    evaluator = evaluate(args.pred, args.gt, args.out, options)  # checks every output before any work
    if args.lesion_wise:
        from medfoundry.evaluation.lesionwise import lesion_table_path

        outputs = [args.out, lesion_table_path(args.out), args.summary]
    else:
        n_cases = len({r["case"] for r in evaluator.rows})
        mode = "MedSAM-on-laptop 2024 scoring" if args.challenge_compat else f"NSD tolerance {args.tolerance:g} mm"
        print(f"{n_cases} case(s), {mode}; per-class means (NaN-aware):")
        outputs = [args.out, args.summary, args.plot]
    print(evaluator.summary_text())
    print(f"wrote {', '.join(str(p) for p in outputs if p is not None)}")
    return 0
