"""``medfoundry evaluate PRED GT --out CSV``: DSC / IoU / NSD / HD95 / FPV / FNV per class and per case, or
lesion-wise detection metrics with ``--lesion-wise``."""

from __future__ import annotations

import argparse
from pathlib import Path

from medfoundry.errors import InputError, OutputExistsError


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
    p.add_argument("--tolerance", type=float, default=2.0, metavar="MM", help="NSD tolerance in mm (default 2)")
    p.add_argument("--labels", type=int, nargs="+", metavar="L", help="classes to score (default: every label present)")
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
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    """Evaluate, write the CSV (and optional summary / plot) atomically, print the per-class means."""
    if getattr(args, "lesion_wise", False):
        return _run_lesion_wise(args)
    outputs = [p for p in (args.out, args.summary, args.plot) if p is not None]
    if len({p.resolve() for p in outputs}) != len(outputs):
        raise InputError(None, "--out, --summary and --plot must be different files")
    for p in outputs:  # refuse before any work, and before anything is written
        if p.exists() and not args.overwrite:
            raise OutputExistsError(p)
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        raise InputError(args.plot, "the plot is written as PNG; give a .png path")

    from medfoundry.evaluation.files import evaluate_files

    evaluator = evaluate_files(
        args.pred,
        args.gt,
        tolerance_mm=args.tolerance,
        challenge_compat=args.challenge_compat,
        labels=args.labels,
        progress=not args.no_progress,
    )
    evaluator.write_csv(args.out, overwrite=args.overwrite)
    if args.summary is not None:
        evaluator.write_summary_csv(args.summary, overwrite=args.overwrite)
    if args.plot is not None:
        from medfoundry.evaluation.plots import plot_metrics

        plot_metrics(evaluator, args.plot, overwrite=args.overwrite)
    n_cases = len({r["case"] for r in evaluator.rows})
    mode = "MedSAM-on-laptop 2024 scoring" if args.challenge_compat else f"NSD tolerance {args.tolerance:g} mm"
    print(f"{n_cases} case(s), {mode}; per-class means (NaN-aware):")
    print(evaluator.summary_text())
    written = ", ".join(str(p) for p in outputs)
    print(f"wrote {written}")
    return 0


def _run_lesion_wise(args: argparse.Namespace) -> int:
    """``--lesion-wise``: per-case and per-lesion CSVs (and optional summary), per-case lines and means."""
    for option, given in (
        ("--labels", args.labels),
        ("--challenge-compat", args.challenge_compat),
        ("--plot", args.plot),
    ):
        if given:
            raise InputError(None, f"{option} does not apply to --lesion-wise")
    from medfoundry.evaluation.lesionwise import lesion_table_path

    lesions_csv = lesion_table_path(args.out)
    outputs = [p for p in (args.out, lesions_csv, args.summary) if p is not None]
    if len({p.resolve() for p in outputs}) != len(outputs):
        raise InputError(args.summary, f"--summary must differ from --out and {lesions_csv}")
    for p in outputs:
        if p.exists() and not args.overwrite:
            raise OutputExistsError(p)

    from medfoundry.evaluation.files import evaluate_lesion_files

    evaluator = evaluate_lesion_files(args.pred, args.gt, progress=not args.no_progress)
    evaluator.write_csv(args.out, overwrite=args.overwrite)
    evaluator.write_lesion_csv(lesions_csv, overwrite=args.overwrite)
    if args.summary is not None:
        evaluator.write_summary_csv(args.summary, overwrite=args.overwrite)
    print(evaluator.summary_text())
    print(f"wrote {', '.join(str(p) for p in outputs)}")
    return 0
