"""``medfoundry transfer``: fine-tune a pretrained TSFM on a new task, or segment images with a checkpoint."""

from __future__ import annotations

import argparse

from medfoundry.cli.common import float_range, options_from_args, positive_int
from medfoundry.cli.pretrain import add_training_args


def add_parser(subparsers) -> None:
    """Register the sub-command (no heavy imports here)."""
    p = subparsers.add_parser(
        "transfer",
        help="fine-tune a pretrained TSFM on a new label set, or segment volumes with a checkpoint",
        description="Training: load the backbone of --init (a pretrain checkpoint), re-initialise the head for "
        "the classes of --pool and fine-tune for --epochs (or --from-scratch with --preset for a baseline). "
        "Segmenting: --predict IMAGE... --model CKPT --out-dir DIR writes label maps on each input's grid "
        "(MONAI sliding-window inference).",
    )
    p.add_argument("--init", help="pretrained checkpoint whose backbone starts the fine-tuning")
    p.add_argument("--from-scratch", action="store_true", help="random initialisation (baseline)")
    p.add_argument("--preset", help="model size; must match the --init checkpoint when both are given")
    add_training_args(p, epochs=10)
    g = p.add_argument_group("segmenting")
    g.add_argument("--predict", nargs="+", metavar="IMAGE", help="3D images to segment (NIfTI, NRRD, MHA, DICOM)")
    g.add_argument("--model", help="checkpoint used by --predict (e.g. OUT/model.pt)")
    g.add_argument("--out-dir", help="folder for the predicted label maps (IMAGE name + _tsfm.nii.gz)")
    g.add_argument("--modality", help="modality of the --predict images (default: the checkpoint's, if one)")
    g.add_argument(
        "--overlap", type=float_range(0.0, 1.0, hi_open=True), default=0.5, help="sliding-window overlap (default 0.5)"
    )
    g.add_argument("--sw-batch", type=positive_int, default=4, help="windows per forward pass (default 4)")


def _predict(args: argparse.Namespace) -> int:
    from medfoundry.api import TransferPredictOptions, transfer_predict

    def written(image_path, out, classes) -> None:
        print(f"{image_path} -> {out}  ({', '.join(classes)} = 1..{len(classes)})")

    transfer_predict(options_from_args(TransferPredictOptions, args), on_written=written)
    return 0


def run(args: argparse.Namespace) -> int:
    """Fine-tune (or train from scratch) on a pool; or segment with --predict."""
    if args.predict:
        return _predict(args)
    from medfoundry.api import TransferOptions, transfer

    result = transfer(options_from_args(TransferOptions, args))
    if result.is_main:
        print(f"fine-tuned {result.preset} for {args.epochs} epochs -> {args.out}/model.pt")
    return 0
