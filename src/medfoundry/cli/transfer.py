"""``medfoundry transfer``: fine-tune a pretrained TSFM on a new task, or segment images with a checkpoint."""

from __future__ import annotations

import argparse

from medfoundry.cli.common import float_range, positive_int, resolve_device, set_threads
from medfoundry.cli.pretrain import add_training_args, require, settings_from


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
    from pathlib import Path

    from tqdm import tqdm

    from medfoundry.api import warn_if_no_contrast
    from medfoundry.errors import InputError
    from medfoundry.inference.sliding_window import predict_labels
    from medfoundry.io import read_image, write_mask
    from medfoundry.io.atomic import check_writable
    from medfoundry.io.paths import split_suffix
    from medfoundry.modeling.tsfm.checkpoint import load_checkpoint, model_from_checkpoint

    require(args, "model", "out_dir")
    set_threads(args)
    outs = []
    for image_path in args.predict:  # refuse existing outputs before any work
        name = split_suffix(image_path)[0]
        out = Path(args.out_dir) / f"{name}_tsfm.nii.gz"
        check_writable(out, args.overwrite)
        outs.append(out)
    ckpt = load_checkpoint(args.model)
    model = model_from_checkpoint(ckpt, args.model, args.preset)
    prep = ckpt["preprocessing"]
    modality = args.modality
    if modality is None:
        mods = prep.get("modalities", [])
        if len(mods) != 1:
            raise InputError(args.model, f"the model was trained on {mods}; say --modality for the images")
        modality = mods[0]
    device = resolve_device(args.device)
    for image_path, out in tqdm(list(zip(args.predict, outs, strict=True)), desc="segmenting", unit="image"):
        image = read_image(image_path, modality=modality, progress=not args.no_progress)
        warn_if_no_contrast(image)
        labels = predict_labels(model, image, prep, overlap=args.overlap, sw_batch_size=args.sw_batch, device=device)
        write_mask(labels, out, reference=image, overwrite=args.overwrite)
        print(f"{image_path} -> {out}  ({', '.join(ckpt['classes'])} = 1..{len(ckpt['classes'])})")
    return 0


def run(args: argparse.Namespace) -> int:
    """Fine-tune (or train from scratch) on a pool; or segment with --predict."""
    if args.predict:
        return _predict(args)

    from medfoundry.data.pool import load_pool_index
    from medfoundry.errors import InputError
    from medfoundry.modeling.tsfm.checkpoint import load_checkpoint, model_for_transfer
    from medfoundry.modeling.tsfm.network import build_tsfm
    from medfoundry.training.distributed import cleanup, init_distributed
    from medfoundry.training.tsfm import fit

    require(args, "pool", "out")
    if bool(args.init) == bool(args.from_scratch):
        raise InputError(None, "give either --init CHECKPOINT (transfer) or --from-scratch --preset NAME")
    set_threads(args)
    ckpt = load_checkpoint(args.init) if args.init else None  # a refused file stops before any other work
    index = load_pool_index(args.pool)
    k = len(index["classes"])
    patch = tuple(args.patch_size or index["patch_size_zyx"])
    if ckpt is not None:
        model = model_for_transfer(ckpt, k, args.init, preset=args.preset, patch_size=patch)
        info = {"init": str(args.init), "pretrained_classes": ckpt["classes"]}
    else:
        require(args, "preset")
        model = build_tsfm(args.preset, num_classes=k, patch_size=patch)
        info = {"init": None}
    env = init_distributed(resolve_device(args.device))
    info.update(pool=str(args.pool), world_size=env.world_size)
    try:
        fit(
            model,
            args.pool,
            args.out,
            settings_from(args),
            env,
            kind="transfer" if args.init else "scratch",
            resume=args.resume,
            overwrite=args.overwrite,
            info=info,
            progress=not args.no_progress,
        )
    finally:
        cleanup(env)
    if env.is_main:
        print(f"fine-tuned {model.config.preset} for {args.epochs} epochs -> {args.out}/model.pt")
    return 0
