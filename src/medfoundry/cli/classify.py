"""``medfoundry classify``: PET slice abnormality detection with frozen encoders and a CNN baseline.

Four steps: ``build`` (volumes -> slice dataset), ``embed`` (frozen encoder -> on-disk embedding cache),
``compare`` (linear heads on every cache + the CNN baseline, test-split table and plots) and ``predict``
(per-slice abnormality probability on a new scan).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medfoundry.cli.cluster import add_ray_options, ray_from_args
from medfoundry.cli.common import (
    add_backend,
    add_overwrite,
    add_progress,
    add_seed,
    finite_float,
    fraction,
    nonnegative_float,
    nonnegative_int,
    options_from_args,
    positive_float,
    positive_int,
    probability,
)
from medfoundry.modeling.registry import ENCODERS

ENCODER_CHOICES = tuple(ENCODERS)  # plain names: the registry imports no torch


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``classify`` and its four sub-commands (cheap: no heavy imports)."""
    parser = subparsers.add_parser(
        "classify",
        help="PET slice abnormality detection: build, embed, compare, predict",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    steps = parser.add_subparsers(dest="step", metavar="STEP", required=True)

    b = steps.add_parser("build", help="resample PET volumes, cut labelled axial slices, split by patient")
    b.add_argument("out", type=Path, help="output folder of the slice dataset")
    b.add_argument(
        "--mode",
        choices=("slices", "wholebody"),
        default="slices",
        help="'slices': every case on one grid (default); 'wholebody': --cases/--case are whole-body scans (every "
        "native slice, SUV), --crops/--crop labelled crops (lesion slices only, and the lesions inserted into the "
        "whole-body scans), class balance by sample weights",
    )
    b.add_argument("--cases", type=Path, help="CSV with columns case_id,image,mask[,patient_id][,suv_factor][,tracer]")
    b.add_argument(
        "--autopet",
        type=Path,
        metavar="ROOT",
        help="every study of an autoPET III tree (per study SUV.nii.gz + SEG.nii.gz, FDG and PSMA; the patient is "
        "the folder above the study, the tracer a manifest column); whole-body mode: each study a whole-body scan",
    )
    b.add_argument(
        "--case",
        nargs=3,
        action="append",
        default=[],
        metavar=("ID", "IMAGE", "MASK"),
        help="one case (repeatable)",
    )
    b.add_argument(
        "--grid",
        nargs=3,
        type=nonnegative_int,
        metavar=("X", "Y", "Z"),
        help="voxel counts every volume is resampled to (0 keeps the native count); default 400 400 300, "
        "whole-body mode 0 0 0 (its Z must be 0)",
    )
    b.add_argument("--size", type=positive_int, default=224, help="slice side in pixels (default 224)")
    b.add_argument("--min-lesion-voxels", type=positive_int, default=1, help="lesion voxels that make a slice abnormal")
    b.add_argument("--min-slice-max", type=finite_float, default=0.0, help="drop slices whose maximum is <= this")
    b.add_argument(
        "--intensity",
        choices=("slice-max", "suv-window"),
        default="slice-max",
        help="'slice-max': each slice divided by its own maximum (any unit; default); 'suv-window': SUV clipped to "
        "[0, --suv-window] on one fixed scale for every slice (needs SUV: DICOM, or a suv_factor for Bq/mL files)",
    )
    b.add_argument("--suv-window", type=positive_float, default=10.0, help="top of the SUV window (default 10)")
    b.add_argument("--binarize", action="store_true", help="count every non-zero mask label as lesion")
    b.add_argument("--lesion-labels", nargs="+", type=positive_int, help="mask labels that count as lesion")
    b.add_argument("--split", nargs=3, type=fraction, default=(0.75, 0.15, 0.10), metavar=("TRAIN", "VAL", "TEST"))
    add_seed(b, "patient split and lesion insertion")
    b.add_argument("--test-patients", nargs="+", default=[], help="patients forced into the test split")
    b.add_argument("--val-patients", nargs="+", default=[], help="patients forced into the val split")
    b.add_argument("--tracers", nargs="+", help="keep only cases of these tracers (the tracer column: FDG, PSMA...)")
    b.add_argument("--test-tracer", help="every patient with a case of this tracer goes to the test split")
    b.add_argument("--train-patients", nargs="+", default=[], help="patients forced into the train split")
    b.add_argument(
        "--allow-incomplete-splits",
        action="store_true",
        help="build even when a split holds one class only or (whole-body mode) no whole-body scan; by default "
        "such a split is refused, since its threshold / accuracy would mean nothing",
    )
    w = b.add_argument_group("whole-body mode (--mode wholebody)")
    w.add_argument("--crops", type=Path, help="CSV of labelled PET crops (same columns as --cases)")
    w.add_argument("--crop", nargs=3, action="append", default=[], metavar=("ID", "IMAGE", "MASK"), help="one crop")
    w.add_argument("--insertions", type=nonnegative_int, default=4, help="inserted-lesion scans per whole-body scan")
    w.add_argument("--crop-slices", type=nonnegative_int, default=0, help="lesion slices kept per crop (0: all)")
    w.add_argument(
        "--lesions-per-scan", nargs=2, type=positive_int, default=(1, 3), metavar=("LO", "HI"), help="default 1 3"
    )
    w.add_argument(
        "--lesion-volume", nargs=2, type=positive_float, default=(1.0, 60.0), metavar=("LO", "HI"),
        help="inserted lesion volume in mL, log-uniform (default 1 60; sources are shrunk, never enlarged)",
    )  # fmt: skip
    w.add_argument(
        "--lesion-contrast", nargs=2, type=positive_float, default=(0.5, 1.0), metavar=("LO", "HI"),
        help="factor on the source lesion's excess SUV (default 0.5 1.0)",
    )  # fmt: skip
    w.add_argument(
        "--lesion-fwhm", type=nonnegative_float, metavar="MM",
        help="resolution (FWHM, mm) the inserted lesions are blurred to: the background scanner's (default 7, the "
        "middle of clinical whole-body PET's 5-9 mm; 0 = no blur)",
    )  # fmt: skip
    w.add_argument(
        "--features",
        nargs="+",
        choices=("anatomy", "finder"),
        default=[],
        help="per-slice numbers stored next to the pixels, for heads that use them beside the embedding: 'anatomy' "
        "(organs the slice cuts, the uptake they do and do not explain; ~3 s per scan), 'finder' (the lesion "
        "finder's candidate scores and accepted volume per slice; about a minute per scan)",
    )
    w.add_argument(
        "--borrow-backgrounds",
        action="store_true",
        help="a split with crops but no whole-body scan (e.g. val, with two scans) gets its lesions inserted into the "
        "train split's scans",
    )
    w.add_argument(
        "--regions",
        nargs="+",
        type=region_spec,
        metavar="SPLIT:FROM:TO",
        help="split the whole-body scans by body region instead of by patient, e.g. train:0:0.4 val:0.4:0.5 "
        "test:0.5:1 (fractions of the slice index); insertions stay inside their region",
    )
    add_overwrite(b, "an existing dataset folder")

    e = steps.add_parser("embed", help="embed every slice once with a frozen encoder (cached, resumable)")
    e.add_argument("dataset", type=Path, help="slice dataset folder (from 'classify build')")
    e.add_argument("--encoder", default="litemedsam", choices=ENCODER_CHOICES)
    e.add_argument("--weights", type=Path, help="local weights file or Hugging Face folder (never downloaded)")
    e.add_argument("--cache", type=Path, help="cache root (default DATASET/embeddings)")
    e.add_argument("--batch-size", type=positive_int, default=16)
    e.add_argument("--tiny", action="store_true", help="small random-initialised variant (smoke tests only)")
    add_backend(e)
    add_ray_options(e)

    c = steps.add_parser("compare", help="linear head per cached encoder + CNN baseline; test-split table")
    c.add_argument("dataset", type=Path, help="slice dataset folder")
    c.add_argument("--out", type=Path, required=True, help="output folder (table, plots, trained models)")
    c.add_argument("--embeddings", nargs="+", type=Path, help="cache folders (default: all under DATASET/embeddings)")
    c.add_argument("--no-cnn", action="store_true", help="skip the CNN baseline")
    c.add_argument(
        "--imbalance",
        choices=("auto", "pos_weight", "balanced", "weights", "none"),
        default="auto",
        help="auto: the dataset's sample weights (whole-body mode), else pos_weight",
    )
    c.add_argument("--threshold-rule", choices=("f1", "youden"), default="f1", help="chosen on the val split")
    c.add_argument("--head-epochs", type=positive_int, default=300)
    c.add_argument("--cnn-epochs", type=positive_int, default=12)
    c.add_argument(
        "--allow-one-class-splits",
        action="store_true",
        help="score a val / test split with one class anyway (the table then starts with a warning); refused by "
        "default",
    )
    add_seed(c, "head and CNN training")
    add_overwrite(c, "an existing output folder")

    p = steps.add_parser(
        "predict", help="per-slice abnormality probability, z-profile plot, flagged ranges, coronal MIP"
    )
    p.add_argument("scan", type=Path, nargs="?", help="PET volume (NIfTI/NRRD/MHA or DICOM series folder)")
    p.add_argument(
        "--manifest",
        type=Path,
        metavar="FILE|DIR",
        help="many scans with one model load: a CSV / JSON (column image; optional out = the scan's folder, mask, "
        "suv_factor) or a folder of scans; --out is then the folder for rows without 'out'. A scan whose folder "
        "holds flagged_ranges.json is kept (resume); bad rows are reported at the end (exit 2)",
    )
    p.add_argument(
        "--allow-absolute-out",
        action="store_true",
        help="with --manifest: accept rows whose out is an absolute path (by default inside the manifest's folder "
        "or --out)",
    )
    p.add_argument(
        "--model", type=Path, required=True,
        help="model bundle from 'classify compare' (models/*.pt; models/best.pt = the highest val ROC-AUC), or "
        "'percist': the built-in rule that learns nothing (SUVpeak outside the organs >= the scan's PERCIST "
        "threshold; whole-body PET in SUV)",
    )  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--mask", type=Path, help="optional lesion mask: shades the true lesion slices in the plot")
    p.add_argument("--weights", type=Path, help="encoder weights, if they moved since 'embed'")
    p.add_argument("--threshold", type=probability, help="override the threshold chosen on the val split")
    p.add_argument(
        "--suv-factor",
        type=positive_float,
        help="SUV per Bq/mL of a NIfTI / NRRD / MHA scan, for models built with --intensity suv-window",
    )
    add_backend(p)
    p.add_argument(
        "--no-embedding-cache",
        action="store_true",
        help="do not keep the scan's embeddings in $MEDFOUNDRY_CACHE/slice_embeddings (by default a second model "
        "or threshold on the same scan reads them back instead of running the encoder again)",
    )
    add_overwrite(p, "an existing output folder (--manifest: recompute every scan)")
    add_progress(p)
    add_ray_options(p)


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen step."""
    return {"build": _build, "embed": _embed, "compare": _compare, "predict": _predict}[args.step](args)


def region_spec(text: str) -> tuple[str, float, float]:
    """An argparse type: ``SPLIT:FROM:TO`` with SPLIT train/val/test and 0 <= FROM < TO <= 1."""
    parts = text.split(":")
    try:
        split, lo, hi = parts[0], float(parts[1]), float(parts[2])
    except (IndexError, ValueError):
        raise argparse.ArgumentTypeError(f"expected SPLIT:FROM:TO (e.g. test:0.5:1), got {text!r}") from None
    if len(parts) != 3 or split not in ("train", "val", "test") or not (0.0 <= lo < hi <= 1.0):
        raise argparse.ArgumentTypeError(f"expected SPLIT:FROM:TO, SPLIT train/val/test, 0 <= FROM < TO <= 1: {text!r}")
    return split, lo, hi


def _build(args: argparse.Namespace) -> int:
    from medfoundry.api import ClassifyBuildOptions, classify_build

    built = classify_build(options_from_args(ClassifyBuildOptions, args))
    dataset, cases = built.dataset, built.cases
    labels = dataset.labels
    print(f"{args.out}: {len(dataset)} slices from {len(cases)} cases, {int(labels.sum())} abnormal")
    for split in ("train", "val", "test"):
        rows = dataset.split_rows(split)
        patients = sorted({dataset.rows[r]["patient_id"] for r in rows})
        n_abnormal = int(labels[rows].sum())
        tracers = sorted({dataset.rows[r].get("tracer") or "" for r in rows} - {""})
        note = f" ({', '.join(tracers)})" if tracers else ""
        print(f"  {split:5s}: {rows.size:5d} slices, {n_abnormal:5d} abnormal, {len(patients)} patients{note}")
    for problem in dataset.info.get("split_problems", []):
        print(f"  WARNING: {problem} (built because --allow-incomplete-splits was given)")
    return 0


def _embed(args: argparse.Namespace) -> int:
    from medfoundry.api import ClassifyEmbedOptions, classify_embed

    result = classify_embed(options_from_args(ClassifyEmbedOptions, args, ray=ray_from_args(args)))
    emb = result.cache.embeddings
    print(f"{result.cache.path}: {emb.shape[0]} x {emb.shape[1]} float16 embeddings ({result.seconds:.1f} s this run)")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from medfoundry.api import ClassifyCompareOptions, classify_compare

    result = classify_compare(options_from_args(ClassifyCompareOptions, args))
    print(result.markdown)
    print(f"written to {args.out}: table.md, table.csv, roc.png, pr.png, confusion.png, models/ (best.pt: the "
          "highest val ROC-AUC)")  # fmt: skip
    return 0


def _predict(args: argparse.Namespace) -> int:
    from medfoundry.api import ClassifyPredictOptions, classify_predict, classify_predict_many
    from medfoundry.errors import BatchFailures, InputError

    ray = ray_from_args(args) if args.manifest is not None else None
    options = options_from_args(ClassifyPredictOptions, args, embedding_cache=not args.no_embedding_cache, ray=ray)
    if args.manifest is not None:
        try:
            result = classify_predict_many(options)
        except BatchFailures as exc:
            _predict_summary(exc.result)
            for name, why in exc.failed:
                print(f"failed: {name}: {why}")
            raise
        _predict_summary(result)
        return 0
    if args.scan is None:
        raise InputError(None, "give a SCAN (or --manifest FILE)")
    result = classify_predict(options)
    print(f"{args.scan}: {len(result.probabilities)} slices, model {result.model}, threshold {result.threshold:.3f}")
    if result.ranges:
        for r in result.ranges:
            print(
                f"  flagged: source slices {r['first_slice']}-{r['last_slice']} "
                f"(z {r['z_from_mm']:.1f} to {r['z_to_mm']:.1f} mm), max p = {r['max_probability']:.3f}"
            )
    else:
        print("  no slice above the threshold")
    print(f"written to {args.out}: slice_probabilities.csv, flagged_ranges.json, z_profile.png, coronal_mip.png")
    return 0


def _predict_summary(result) -> None:
    flagged = sum(1 for n in result.flagged.values() if n)
    print(
        f"{len(result.written)} scan(s) done, {len(result.kept)} kept from an earlier run, {len(result.failed)} "
        f"failed; {flagged} scan(s) with flagged slices"
    )
