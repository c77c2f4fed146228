"""TSFM transfer benchmark: pretrain on a pool of real datasets, fine-tune on PET lesions, compare with scratch.

Pool (from ``--data``, default ``../shared/data``): TotalSegmentator CT + MR organ label maps (spleen, kidney,
liver, lung), IBSI CT soft-tissue-sarcoma tumours and the pyradiomics CT/MR tumours. Transfer task: the
IBSI ``pet-sts`` FDG-PET lesions (STS_001-020 train, STS_021-030 test) or, with ``--task brats``, the one
BraTS FLAIR case split into two halves (train on one hemisphere, test on the other). The pretrained and the
from-scratch network get the same epochs, iterations, seed and data; Dice per class is computed on the test
images' own grid.

Default run (CPU, fits in 60 minutes on 2 cores):
    python bench/tsfm_transfer.py
Shortened setting (a few minutes, the numbers quoted in docs/tsfm.md):
    python bench/tsfm_transfer.py --quick
GPU setting for a larger preset:
    python bench/tsfm_transfer.py --preset base --patch 32 64 64 --pretrain-epochs 100 --transfer-epochs 20 \
        --iters 250 --device cuda --work runs/bench_tsfm_gpu
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["spleen", "kidney", "liver", "lung", "tumour"]


def pool_config(data: Path, spacing: float, patch: list[int]) -> dict:
    """The pretraining pool over the shared data (TotalSegmentator v2 ids remapped to 4 organs)."""
    ts = str(data / "totalsegmentator")
    return {
        "name": "bench-pool",
        "spacing_xyz_mm": [spacing] * 3,
        "patch_size_zyx": patch,
        "foreground_share": 0.5,
        "pad_to_patch": True,
        "classes": CLASSES,
        "sources": [
            {
                "name": "totalseg_ct",
                "modality": "CT",
                "root": ts,
                "cases": [
                    {"image": "example_ct_sm.nii.gz", "label": "example_seg.nii.gz"},
                    {"image": "example_ct.nii.gz", "label": "example_seg_fast_force_split.nii.gz"},
                ],
                "labels": {
                    1: "spleen",
                    2: "kidney",
                    3: "kidney",
                    5: "liver",
                    10: "lung",
                    11: "lung",
                    12: "lung",
                    13: "lung",
                    14: "lung",
                },
                "unmapped": "background",
            },
            {
                "name": "totalseg_mr",
                "modality": "MR",
                "root": ts,
                "cases": [{"image": "example_mr_sm.nii.gz", "label": "example_seg_mr.nii.gz"}],
                "labels": {1: "spleen", 2: "kidney", 3: "kidney", 5: "liver", 10: "lung", 11: "lung"},
                "unmapped": "background",
            },
            {
                "name": "ibsi_ct_tumour",
                "modality": "CT",
                "root": str(data / "pet-sts"),
                "image_glob": "STS_*/CT_image.nii.gz",
                "labels": {1: "tumour"},
            },
            {
                "name": "pyradiomics_ct",
                "modality": "CT",
                "root": str(data / "ct-mr-tumour"),
                "cases": [{"image": "lung1_image.nrrd", "label": "lung1_label.nrrd"}],
                "labels": {1: "tumour"},
            },
            {
                "name": "pyradiomics_mr",
                "modality": "MR",
                "root": str(data / "ct-mr-tumour"),
                "cases": [
                    {"image": "brain1_image.nrrd", "label": "brain1_label.nrrd"},
                    {"image": "breast1_image.nrrd", "label": "breast1_label.nrrd"},
                ],
                "labels": {1: "tumour"},
            },
        ],
    }


def pet_task(data: Path, work: Path) -> tuple[dict, list[tuple[Path, Path]], str]:
    """PET lesion task: 20 training cases, 10 test cases (image, mask)."""
    cases = sorted((data / "pet-sts").glob("STS_*/PET_image.nii.gz"))
    if len(cases) < 12:
        sys.exit(f"{data / 'pet-sts'}: expected 30 PET cases, found {len(cases)}")
    train, test = cases[:20], cases[20:]
    cfg = {
        "name": "pet-lesions",
        "classes": ["lesion"],
        "sources": [
            {
                "name": "pet_sts",
                "modality": "PET",
                "root": str(data / "pet-sts"),
                "cases": [{"image": str(p), "label": str(p).replace("_image", "_mask")} for p in train],
                "labels": {1: "lesion"},
            }
        ],
    }
    return cfg, [(p, Path(str(p).replace("_image", "_mask"))) for p in test], "PET"


def brats_task(data: Path, work: Path) -> tuple[dict, list[tuple[Path, Path]], str]:
    """BraTS FLAIR edema: the one case split along x; train on one half, test on the other."""
    from medfoundry.io import read_image, read_mask, write_image, write_mask

    img = read_image(data / "mr-brats/BraTS2021_01646_flair.nii.gz", modality="MR")
    msk = read_mask(data / "mr-brats/BraTS2021_01646_label_edema.nii.gz", reference=img)
    half = img.array.shape[2] // 2
    out = work / "brats_halves"
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, sl in (("a", slice(0, half)), ("b", slice(half, None))):
        start = 0 if sl.start is None else sl.start
        origin = np.asarray(img.origin) + np.asarray(img.direction).reshape(3, 3) @ np.array(
            [start * img.spacing[0], 0, 0]
        )
        part = type(img)(img.array[:, :, sl], img.spacing, tuple(origin), img.direction, "MR")
        write_image(part, out / f"{name}_image.nii.gz", overwrite=True)
        write_mask(msk.array[:, :, sl], out / f"{name}_mask.nii.gz", reference=part, overwrite=True)
        paths.append((out / f"{name}_image.nii.gz", out / f"{name}_mask.nii.gz"))
    cfg = {
        "name": "brats-edema",
        "classes": ["edema"],
        "sources": [
            {
                "name": "brats",
                "modality": "MR",
                "root": str(out),
                "cases": [{"image": "a_image.nii.gz", "label": "a_mask.nii.gz"}],
                "labels": {1: "edema"},
            }
        ],
    }
    return cfg, [paths[1]], "MR"


def evaluate(model_path: Path, test: list[tuple[Path, Path]], modality: str, device: str) -> list[float]:
    """Dice of the predicted class-1 label against each test mask, on the test image's grid."""
    from medfoundry.evaluation import dice
    from medfoundry.inference.sliding_window import predict_labels
    from medfoundry.io import read_image, read_mask
    from medfoundry.modeling.tsfm import load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(model_path)
    model = model_from_checkpoint(ckpt, model_path)
    scores = []
    for img_path, mask_path in test:
        image = read_image(img_path, modality=modality)
        gt = read_mask(mask_path, reference=image)
        pred = predict_labels(model, image, ckpt["preprocessing"], overlap=0.5, sw_batch_size=4, device=device)
        scores.append(dice(pred.array == 1, gt.array > 0))
    return scores


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_tsfm")
    p.add_argument("--task", choices=("pet", "brats"), default="pet")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--patch", type=int, nargs=3, default=[16, 32, 32], metavar=("Z", "Y", "X"))
    p.add_argument("--pool-spacing", type=float, default=3.0, help="pretraining pool spacing, mm (isotropic)")
    p.add_argument("--task-spacing", type=float, default=4.0, help="transfer task spacing, mm (isotropic)")
    p.add_argument("--pretrain-epochs", type=int, default=15)
    p.add_argument("--transfer-epochs", type=int, default=10)
    p.add_argument("--iters", type=int, default=50, help="pretraining iterations per epoch")
    p.add_argument("--transfer-iters", type=int, default=25, help="transfer iterations per epoch")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--optimizer", default="sgd", choices=("sgd", "adamw"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --work folder (after the run)")
    p.add_argument("--quick", action="store_true", help="shortened setting: 10 x 20 pretraining, 8 x 20 transfer")
    args = p.parse_args(argv)
    if args.quick:
        args.pretrain_epochs, args.iters, args.transfer_epochs, args.transfer_iters = 10, 20, 8, 20
    torch.set_num_threads(args.threads)

    from medfoundry.io.atomic import atomic_dir

    # an existing --work folder is refused unless --overwrite, and replaced only once this run has finished
    with atomic_dir(args.work.resolve(), overwrite=args.overwrite) as work:
        return _bench(args, work)


def _bench(args: argparse.Namespace, work: Path) -> int:
    """The whole benchmark, written into ``work`` (a temporary folder that becomes --work at the end)."""
    from medfoundry.data.pool import build_pool, load_pool_config
    from medfoundry.modeling.tsfm import build_tsfm, load_checkpoint, model_for_transfer
    from medfoundry.training.tsfm import TrainSettings, fit

    t_start = time.time()

    # 1. pools
    cfg = pool_config(args.data, args.pool_spacing, args.patch)
    (work / "pool.json").write_text(json.dumps(cfg, indent=2))
    pool_index = build_pool(load_pool_config(work / "pool.json"), work / "pool")
    task_cfg, test, modality = (pet_task if args.task == "pet" else brats_task)(args.data, work)
    task_cfg.update(
        spacing_xyz_mm=[args.task_spacing] * 3, patch_size_zyx=args.patch, pad_to_patch=True, foreground_share=0.5
    )
    (work / "task.json").write_text(json.dumps(task_cfg, indent=2))
    task_index = build_pool(load_pool_config(work / "task.json"), work / "task")

    # 2. pretraining
    def settings(epochs: int, iters: int) -> TrainSettings:
        return TrainSettings(
            epochs=epochs,
            iters_per_epoch=iters,
            batch_size=args.batch_size,
            lr=args.lr,
            optimizer=args.optimizer,
            seed=args.seed,
        )

    torch.manual_seed(args.seed)
    model = build_tsfm(args.preset, num_classes=len(CLASSES), patch_size=tuple(args.patch))
    t0 = time.time()
    pre_hist = fit(
        model,
        work / "pool",
        work / "pretrain",
        settings(args.pretrain_epochs, args.iters),
        kind="pretrain",
        progress=False,
    )
    t_pre = time.time() - t0

    # 3. transfer vs scratch, same epochs / iterations / seed
    results = {}
    ckpt = load_checkpoint(work / "pretrain" / "model.pt")
    for name in ("pretrained", "from scratch"):
        torch.manual_seed(args.seed + 1)
        if name == "pretrained":
            net = model_for_transfer(ckpt, 1, work / "pretrain" / "model.pt", patch_size=tuple(args.patch))
        else:
            net = build_tsfm(args.preset, num_classes=1, patch_size=tuple(args.patch))
        t0 = time.time()
        hist = fit(
            net,
            work / "task",
            work / name.replace(" ", "_"),
            settings(args.transfer_epochs, args.transfer_iters),
            kind=name,
            progress=False,
        )
        t_fit = time.time() - t0
        t0 = time.time()
        scores = evaluate(work / name.replace(" ", "_") / "model.pt", test, modality, args.device)
        results[name] = {
            "dice": scores,
            "train_s": t_fit,
            "eval_s": time.time() - t0,
            "loss": [h["loss"] for h in hist],
        }

    # 4. report
    cls = task_cfg["classes"][0]
    lines = [
        f"TSFM transfer bench: task {args.task} ({len(task_index['cases'])} train / {len(test)} test cases), "
        f"preset {args.preset}, patch {tuple(args.patch)}, batch {args.batch_size}, {args.optimizer} lr {args.lr}",
        f"pretraining: {len(pool_index['cases'])} cases from {len(pool_index['sources'])} sources, "
        f"{args.pretrain_epochs} epochs x {args.iters} it, {t_pre:.0f} s, loss {pre_hist[0]['loss']:.3f} -> "
        f"{pre_hist[-1]['loss']:.3f}",
        f"transfer: {args.transfer_epochs} epochs x {args.transfer_iters} it for both models",
        "",
        f"| model | {cls} Dice mean ± sd | median | min | max | final loss | train s | test s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        d = np.asarray(r["dice"])
        lines.append(
            f"| {name} | {d.mean():.3f} ± {d.std():.3f} | {np.median(d):.3f} | {d.min():.3f} | {d.max():.3f} | "
            f"{r['loss'][-1]:.3f} | {r['train_s']:.0f} | {r['eval_s']:.0f} |"
        )
    lines.append("")
    lines.append(f"total {time.time() - t_start:.0f} s")
    table = "\n".join(lines)
    print(table)
    (work / "results.md").write_text(table + "\n")
    (work / "results.json").write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "pretrain_loss": [h["loss"] for h in pre_hist],
                "results": results,
            },
            indent=2,
        )
    )
    plot(results, pre_hist, cls, work / "tsfm_transfer.png")
    print(f"wrote {args.work / 'results.md'}, {args.work / 'tsfm_transfer.png'}")
    return 0


def plot(results: dict, pre_hist: list[dict], cls: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    axes[0].plot([h["epoch"] for h in pre_hist], [h["loss"] for h in pre_hist], marker=".")
    axes[0].set(title="pretraining loss (pool)", xlabel="epoch", ylabel="BCE + Dice")
    for name, r in results.items():
        axes[1].plot(range(1, len(r["loss"]) + 1), r["loss"], marker=".", label=name)
    axes[1].set(title="transfer loss", xlabel="epoch")
    axes[1].legend()
    names = list(results)
    axes[2].boxplot([results[n]["dice"] for n in names])
    axes[2].set_xticks(range(1, len(names) + 1), names)
    for i, n in enumerate(names, 1):
        axes[2].scatter(np.full(len(results[n]["dice"]), i), results[n]["dice"], s=12, alpha=0.7)
    axes[2].set(title=f"test Dice ({cls})", ylim=(0, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
