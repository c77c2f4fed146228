"""``medfoundry pretrain``: train a TSFM network on a preprocessed dataset pool (one or many processes)."""

from __future__ import annotations

import argparse

from medfoundry.cli.common import (
    add_device,
    add_overwrite,
    add_progress,
    add_seed,
    add_threads,
    nonnegative_float,
    nonnegative_int,
    options_from_args,
    positive_float,
    positive_int,
)


def add_training_args(p: argparse.ArgumentParser, epochs: int) -> None:
    """Options shared by pretrain and transfer."""
    p.add_argument("--pool", required=False, help="preprocessed pool folder (made by 'medfoundry pool')")
    p.add_argument("--out", required=False, help="output folder: last.pt (every epoch), model.pt, loss.png")
    p.add_argument("--epochs", type=positive_int, default=epochs, help=f"epochs (default {epochs})")
    p.add_argument("--iters", type=positive_int, default=250, help="iterations per epoch and process (default 250)")
    p.add_argument("--batch-size", type=positive_int, default=2, help="patches per iteration and process (default 2)")
    p.add_argument("--lr", type=positive_float, default=1e-2, help="initial learning rate, poly decay (default 1e-2)")
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd", help="SGD Nesterov 0.99 or AdamW")
    p.add_argument("--weight-decay", type=nonnegative_float, default=1e-3)
    p.add_argument(
        "--patch-size", type=positive_int, nargs=3, metavar=("Z", "Y", "X"), help="patch size (default: the pool's)"
    )
    p.add_argument("--workers", type=nonnegative_int, default=0, help="data-loader worker processes (default 0)")
    add_seed(p)
    p.add_argument("--no-mirror", action="store_true", help="no random mirroring of patches")
    add_device(p)
    p.add_argument("--amp", action="store_true", help="bf16 mixed precision (CUDA only)")
    p.add_argument(
        "--parallel",
        choices=("ddp", "fsdp"),
        default="ddp",
        help="with several processes (torchrun): ddp = a full copy of the network per process (default); fsdp = "
        "weights, gradients and optimiser state sharded over the processes (the huge preset; docs/tsfm.md)",
    )
    p.add_argument(
        "--checkpointing",
        action="store_true",
        help="activation checkpointing: keep only block inputs, recompute the rest in the backward pass "
        "(about a third of the activation memory for one more forward pass)",
    )
    add_threads(p)
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    add_overwrite(p, "OUT/last.pt (start over)")
    add_progress(p)


def add_parser(subparsers) -> None:
    """Register the sub-command (no heavy imports here)."""
    p = subparsers.add_parser(
        "pretrain",
        help="pretrain the 3D tumour foundation model (TSFM) on a dataset pool",
        description="Train TSFM (residual U-Net + transformer bottleneck) on a pool built by 'medfoundry pool', "
        "with per-class BCE + Dice over the classes each source annotates. Multi-process: "
        "torchrun --nproc_per_node N -m medfoundry.cli.main pretrain ... (one process writes checkpoints).",
    )
    p.add_argument("--preset", default="small", help="model size: tiny, small, base, large, huge (default small)")
    add_training_args(p, epochs=100)


def run(args: argparse.Namespace) -> int:
    """Build the network for the pool's classes and train it."""
    from medfoundry.api import PretrainOptions, pretrain

    result = pretrain(options_from_args(PretrainOptions, args))
    if result.is_main:
        print(f"pretrained {args.preset} on {result.cases} cases -> {args.out}/model.pt")
    return 0
