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
    positive_float,
    positive_int,
    resolve_device,
    set_threads,
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


def settings_from(args: argparse.Namespace):
    """TrainSettings from parsed options."""
    from medfoundry.training.tsfm import TrainSettings

    return TrainSettings(
        epochs=args.epochs,
        iters_per_epoch=args.iters,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        weight_decay=args.weight_decay,
        num_workers=args.workers,
        seed=args.seed,
        mirror=not args.no_mirror,
        amp=args.amp,
        parallel=args.parallel,
        checkpointing=args.checkpointing,
    )


def require(args: argparse.Namespace, *names: str) -> None:
    """InputError unless the named options were given."""
    from medfoundry.errors import InputError

    for name in names:
        if getattr(args, name, None) in (None, ""):
            raise InputError(None, f"--{name.replace('_', '-')} is required")


def run(args: argparse.Namespace) -> int:
    """Build the network for the pool's classes and train it."""

    from medfoundry.data.pool import load_pool_index
    from medfoundry.modeling.tsfm.network import build_tsfm
    from medfoundry.training.distributed import cleanup, init_distributed
    from medfoundry.training.tsfm import fit

    require(args, "pool", "out")
    set_threads(args)
    index = load_pool_index(args.pool)
    patch = tuple(args.patch_size or index["patch_size_zyx"])
    env = init_distributed(resolve_device(args.device))
    try:
        model = build_tsfm(args.preset, num_classes=len(index["classes"]), patch_size=patch)
        fit(
            model,
            args.pool,
            args.out,
            settings_from(args),
            env,
            kind="pretrain",
            resume=args.resume,
            overwrite=args.overwrite,
            info={"pool": str(args.pool), "world_size": env.world_size},
            progress=not args.no_progress,
        )
    finally:
        cleanup(env)
    if env.is_main:
        print(f"pretrained {args.preset} on {len(index['cases'])} cases -> {args.out}/model.pt")
    return 0
