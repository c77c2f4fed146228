"""``medfoundry nnunet``: real nnU-Net v2 baselines and frozen-encoder fusion variants on training fractions.

Five steps on one run directory (nnU-Net's raw / preprocessed / results folders all live inside it):

  prepare   images + masks -> nnU-Net raw layout, patient-wise test split, nested training fractions
  plan      nnU-Net fingerprint, planner and 2D preprocessing (its own API)
  train     one variant (baseline, sam, convnext1, convnext2, dino) on one training fraction
  predict   slice-wise nnU-Net inference of the test split (or given volumes), 3D masks on the input grid
  evaluate  Dice / IoU (cases with a lesion), FPV / FNV in ml (all cases): tables + Dice-vs-fraction plot

Example (PET-STS, CPU):
  medfoundry nnunet prepare ../shared/data/pet-sts --run-dir runs/petsts --fractions 100 10
  medfoundry nnunet plan --run-dir runs/petsts
  medfoundry nnunet train --run-dir runs/petsts --variant sam --fraction 10 --schedule cpu
  medfoundry nnunet predict --run-dir runs/petsts --variant sam --fraction 10
  medfoundry nnunet evaluate --run-dir runs/petsts
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medfoundry.cli.common import (
    add_backend,
    add_device,
    add_overwrite,
    add_seed,
    float_range,
    int_range,
    nonnegative_int,
    options_from_args,
    percent,
    positive_float,
    positive_int,
)
from medfoundry.modeling.registry import NNUNET_VARIANTS

VARIANT_CHOICES = NNUNET_VARIANTS  # plain names: the registry imports no torch
SCHEDULE_CHOICES = ("nnunet", "cpu", "tiny")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``nnunet`` and its five steps (cheap: no heavy imports)."""
    parser = subparsers.add_parser(
        "nnunet",
        help="nnU-Net v2 baselines and frozen-encoder fusion: prepare, plan, train, predict, evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    steps = parser.add_subparsers(dest="step", metavar="STEP", required=True)

    p = steps.add_parser("prepare", help="export images + masks to nnU-Net's raw layout with splits and fractions")
    p.add_argument("data", type=Path, help="data folder holding the cases")
    p.add_argument("--run-dir", type=Path, required=True, help="run directory (created)")
    p.add_argument("--image", default="{case}/PET_image.nii.gz", help="image path pattern under DATA with {case}")
    p.add_argument("--mask", default="{case}/PET_mask.nii.gz", help="mask path pattern under DATA with {case}")
    p.add_argument("--patient-regex", help="regex whose first group maps a case id to its patient id")
    p.add_argument(
        "--autopet",
        action="store_true",
        help="DATA is an autoPET III tree (per study SUV.nii.gz + SEG.nii.gz; FDG and PSMA): cases, patients and "
        "tracers from it instead of --image / --mask",
    )
    p.add_argument("--tracers", nargs="+", help="with --autopet: keep only these tracers (FDG, PSMA)")
    p.add_argument("--modality", default="PET", help="channel name in dataset.json (CT selects nnU-Net's CT norm)")
    p.add_argument("--dataset-id", type=int_range(1, 999), default=501, help="nnU-Net dataset id (1..999)")
    p.add_argument("--name", default="PETSTS", help="nnU-Net dataset name")
    p.add_argument(
        "--test-fraction",
        type=float_range(0.0, 1.0, lo_open=True, hi_open=True),
        default=0.2,
        help="share of patients held out for testing",
    )
    p.add_argument(
        "--fractions", type=percent, nargs="+", default=[100, 50, 10, 5, 1], help="training fractions in percent"
    )
    add_seed(p, "patient shuffle")
    p.add_argument("--binarize", action="store_true", help="treat every non-zero mask label as one foreground")
    p.add_argument("--max-cases", type=positive_int, help="use only the first N cases (smoke runs)")
    add_overwrite(p, "an existing export of the same dataset")

    q = steps.add_parser("plan", help="nnU-Net fingerprint, planning and 2D preprocessing")
    q.add_argument("--run-dir", type=Path, required=True)
    q.add_argument("--processes", type=positive_int, default=1, help="nnU-Net worker processes (default 1)")
    q.add_argument(
        "--gpu-memory-gb", type=positive_float, help="nnU-Net planner's GPU memory target (default: its own)"
    )
    add_overwrite(q, "the preprocessed data (plan again)")

    t = steps.add_parser("train", help="train one variant on one training fraction with nnU-Net's trainer")
    t.add_argument("--run-dir", type=Path, required=True)
    t.add_argument("--variant", choices=VARIANT_CHOICES, default="baseline")
    t.add_argument("--fraction", type=percent, default=100.0, help="training fraction in percent (prepared)")
    t.add_argument(
        "--schedule",
        choices=SCHEDULE_CHOICES,
        default="cpu",
        help="nnunet: 1000 x 250 iterations, plan's batch; cpu: 8 x 25 at batch 4; tiny: 1 x 2 at batch 2",
    )
    t.add_argument("--epochs", type=positive_int, help="override the schedule's epochs")
    t.add_argument("--iterations", type=positive_int, help="override iterations per epoch")
    t.add_argument("--val-iterations", type=positive_int, help="override validation iterations per epoch")
    t.add_argument("--batch-size", type=positive_int, help="override the batch size (default: schedule, else plan)")
    t.add_argument("--lr", type=positive_float, help="override the initial learning rate (nnU-Net: 0.01)")
    t.add_argument(
        "--encoder",
        help="frozen encoder: sam: litemedsam (default) or mobilesam; dino: dinov2_base (default) or dinov2_small",
    )
    t.add_argument("--encoder-weights", type=Path, help="local weights file of the frozen encoder")
    t.add_argument("--encoder-input-size", type=positive_int, help="slice size fed to the frozen encoder")
    t.add_argument("--tiny-encoder", action="store_true", help="small random encoder of the family (tests)")
    add_device(t)
    add_backend(t)
    t.add_argument("--workers", type=nonnegative_int, help="nnU-Net data-augmentation processes (0 = in-process)")
    add_seed(t)
    t.add_argument("--resume", action="store_true", help="continue an interrupted training from its checkpoint")
    add_overwrite(t, "an existing model (retrain)")

    r = steps.add_parser("predict", help="predict the test split (or given volumes) with one trained model")
    r.add_argument("--run-dir", type=Path, required=True)
    r.add_argument("--variant", choices=VARIANT_CHOICES, default="baseline")
    r.add_argument("--fraction", type=percent, default=100.0)
    r.add_argument("--input", type=Path, nargs="+", help="volumes or folders (default: the run's test split)")
    r.add_argument("--out", type=Path, help="output folder (default RUN/predictions/VARIANT/fFRACTION)")
    add_device(r)
    add_backend(r)
    r.add_argument("--mirroring", action="store_true", help="nnU-Net's mirroring test-time augmentation (x4)")
    add_overwrite(r, "existing predictions")

    e = steps.add_parser("evaluate", help="tables (markdown + CSV) and a Dice-vs-fraction plot of all predictions")
    e.add_argument("--run-dir", type=Path, required=True)
    e.add_argument("--out", type=Path, help="report folder (default RUN/reports)")
    e.add_argument("--variants", nargs="+", choices=VARIANT_CHOICES)
    e.add_argument("--fractions", type=percent, nargs="+")
    add_overwrite(e, "an existing report")


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen step."""
    return {"prepare": _prepare, "plan": _plan, "train": _train, "predict": _predict, "evaluate": _evaluate}[args.step](
        args
    )


def _prepare(args: argparse.Namespace) -> int:
    from medfoundry.api import NnunetPrepareOptions, nnunet_prepare
    from medfoundry.training.nnunet.export import manifest_summary

    manifest = nnunet_prepare(options_from_args(NnunetPrepareOptions, args))
    print(manifest_summary(manifest))
    print(f"run directory: {args.run_dir}")
    return 0


def _plan(args: argparse.Namespace) -> int:
    from medfoundry.api import NnunetPlanOptions, nnunet_plan

    summary = nnunet_plan(options_from_args(NnunetPlanOptions, args))
    print("nnU-Net 2D plan: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
    return 0


def _train(args: argparse.Namespace) -> int:
    from medfoundry.api import NnunetTrainOptions, nnunet_train

    folder = nnunet_train(options_from_args(NnunetTrainOptions, args))
    print(f"model: {folder}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from medfoundry.api import NnunetPredictOptions, nnunet_predict

    written = nnunet_predict(options_from_args(NnunetPredictOptions, args))
    print(f"{len(written)} masks written to {written[0].parent if written else args.out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from medfoundry.api import NnunetEvaluateOptions, nnunet_evaluate
    from medfoundry.training.nnunet.report import summary_markdown

    summaries = nnunet_evaluate(options_from_args(NnunetEvaluateOptions, args))
    print(summary_markdown(summaries))
    out = args.out or (Path(args.run_dir) / "reports")
    print(f"tables and dice_vs_fraction.png in {out}")
    return 0
