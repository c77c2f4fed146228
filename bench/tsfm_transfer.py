"""TSFM transfer benchmark: pretrain on a pool of every labelled 3D set, fine-tune on 1 / 3 / 5 PET patients.

Patients of ``pet-sts`` are split once, by id: STS_001-010 go into the pretraining pool (their PET crops,
the whole-body PET of STS_001 and the CT / MR of STS_002/003/008/010), STS_011-020 are the transfer
candidates (seed s draws k of them, nested: the 1 patient of seed s is among its 3 and 5) and STS_021-030
are the held-out test patients, never in any pool. The pool adds the pyradiomics CT / MR tumours, the BraTS
FLAIR edema, the TotalSegmentator CT and MR organ maps and the DeepLesion npz stacks, remapped into one
label space (organs and tumour types), drawn with probability 1/sqrt(n) per case. Each (k, seed) point is
trained twice with equal iterations, patients and training RNG: from the pretrained backbone and from
scratch; Dice is computed on each test patient's own grid.

Default run (CPU; budgeted for 30-40 minutes on a quiet 2-core machine, see docs/tsfm.md):
    python bench/tsfm_transfer.py
Check that one point reproduces (re-trains it and compares with the finished run's results.json):
    python bench/tsfm_transfer.py --check-point 1 pretrained 0
Smoke run (a few minutes):
    python bench/tsfm_transfer.py --quick --work runs/bench_tsfm_quick
GPU setting for a larger preset:
    python bench/tsfm_transfer.py --preset base --patch 32 64 64 --pretrain-epochs 100 --iters 250 \\
        --device cuda --amp --jobs 1 --work runs/bench_tsfm_gpu
The same on a Ray cluster (the 18 transfer points as Ray tasks of --point-threads CPUs and one GPU each; --work on
a file system every node sees; a stopped run continues with --only-missing):
    python bench/tsfm_transfer.py --preset base --patch 32 64 64 --pretrain-epochs 100 --iters 250 \\
        --device cuda --amp --ray head-node:6379 --ray-gpus-per-point 1 --point-threads 8 --work /shared/bench_tsfm
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import ray_grid  # noqa: E402 - bench/ is not a package

ROOT = Path(__file__).resolve().parents[1]
ORGANS = ["spleen", "kidney", "liver", "stomach", "pancreas", "lung", "heart", "aorta", "bladder", "bone"]
ORGANS += ["muscle", "brain"]
TUMOURS = ["sarcoma", "lung tumour", "brain tumour", "breast lesion", "brain edema", "CT lesion"]
CLASSES = ORGANS + TUMOURS
ARMS = ("pretrained", "from scratch")
POOL_PET = [f"STS_{i:03d}" for i in range(1, 11)]
CANDIDATES = [f"STS_{i:03d}" for i in range(11, 21)]
TEST = [f"STS_{i:03d}" for i in range(21, 31)]
SARCOMA_CT_MR = ["STS_002", "STS_003", "STS_008", "STS_010"]  # the patients with CT and MR in pet-sts


def _span(*parts: int | tuple[int, int]) -> list[int]:
    out: list[int] = []
    for p in parts:
        out += list(range(p[0], p[1] + 1)) if isinstance(p, tuple) else [p]
    return out


# TotalSegmentator v2 label ids ("total" and "total_mr" class maps) -> pool organ classes
TS_CT = {
    "spleen": [1],
    "kidney": [2, 3],
    "liver": [5],
    "stomach": [6],
    "pancreas": [7],
    "lung": _span((10, 14)),
    "heart": [51],
    "aorta": [52],
    "bladder": [21],
    "bone": _span((25, 50), (69, 78), (91, 116)),  # sacrum, vertebrae, limb / girdle bones, skull, ribs, sternum
    "muscle": _span((80, 89)),  # gluteus, autochthon, iliopsoas
    "brain": [90],
}
TS_MR = {
    "spleen": [1],
    "kidney": [2, 3],
    "liver": [5],
    "stomach": [6],
    "pancreas": [7],
    "lung": [10, 11],
    "heart": [22],
    "aorta": [23],
    "bladder": [16],
    "bone": _span(18, 19, (30, 39)),
    "muscle": _span((40, 49)),
    "brain": [50],
}


def _labels(table: dict[str, list[int]]) -> dict[int, str]:
    return {i: cls for cls, ids in table.items() for i in ids}


def _sts(data: Path, patients: list[str], image: str) -> list[dict]:
    return [
        {"image": f"{p}/{image}_image.nii.gz", "label": f"{p}/{image}_mask.nii.gz"}
        for p in patients
        if (data / "pet-sts" / p / f"{image}_image.nii.gz").exists()
    ]


def pool_config(data: Path, spacing: float, patch: list[int], pool_pet: str = "disjoint") -> dict:
    """The pretraining pool: every labelled 3D set of ``data`` except the transfer and test patients.

    ``pool_pet``: "disjoint" puts the PET of STS_001-010 in the pool; "none" leaves PET out altogether.
    """
    ts, sts = str(data / "totalsegmentator"), str(data / "pet-sts")
    tumours = str(data / "ct-mr-tumour")
    src = [
        {
            "name": "totalseg_ct",  # example_ct_sm is slices 82-111 of example_ct: only the full volume is used
            "modality": "CT",
            "root": ts,
            "cases": [{"image": "example_ct.nii.gz", "label": "example_seg_fast_force_split.nii.gz"}],
            "labels": _labels(TS_CT),
            "unmapped": "background",
        },
        {
            "name": "totalseg_mr",
            "modality": "MR",
            "root": ts,
            "cases": [{"image": "example_mr_sm.nii.gz", "label": "example_seg_mr.nii.gz"}],
            "labels": _labels(TS_MR),
            "unmapped": "background",
        },
    ]
    if pool_pet == "disjoint":
        src.append(
            {"name": "sarcoma_pet", "modality": "PET", "root": sts, "cases": _sts(data, POOL_PET, "PET")}
            | {"labels": {1: "sarcoma"}}
        )
        wb = "pet-wholebody/STS_001/nifti/STS_001_FDG_PET"
        src.append(
            {
                "name": "sarcoma_pet_wholebody",
                "modality": "PET",
                "root": str(data),
                "cases": [{"image": f"{wb}_image.nii.gz", "label": f"{wb}_mask_GTV_Mass.nii.gz"}],
                "labels": {1: "sarcoma"},
            }
        )
    src += [
        {"name": "sarcoma_ct", "modality": "CT", "root": sts, "cases": _sts(data, SARCOMA_CT_MR, "CT")},
        {"name": "sarcoma_mr", "modality": "MR", "root": sts, "cases": _sts(data, SARCOMA_CT_MR, "MR_T1")},
    ]
    for s in src[-2:]:
        s["labels"] = {1: "sarcoma"}
    for name, modality, case, cls in (
        ("lung_tumour_ct", "CT", "lung1", "lung tumour"),
        ("brain_tumour_mr", "MR", "brain1", "brain tumour"),
        ("breast_lesion_mr", "MR", "breast1", "breast lesion"),
    ):
        cases = [{"image": f"{case}_image.nrrd", "label": f"{case}_label.nrrd"}]
        src.append({"name": name, "modality": modality, "root": tumours, "cases": cases, "labels": {1: cls}})
    brats = "BraTS2021_01646"
    src.append(
        {
            "name": "brats_edema_mr",
            "modality": "MR",
            "root": str(data / "mr-brats"),
            "cases": [{"image": f"{brats}_flair.nii.gz", "label": f"{brats}_label_edema.nii.gz"}],
            "labels": {1: "brain edema"},
        }
    )
    npz = sorted((data / "ct-lesion-npz").glob("*.npz"))
    src.append(
        {
            "name": "deeplesion_ct",  # pre-windowed uint8 CT, not HU: per-image z-score ("OTHER")
            "modality": "OTHER",
            "root": str(data / "ct-lesion-npz"),
            "cases": [{"image": p.name, "label": p.name} for p in npz],
            "labels": {1: "CT lesion"},
        }
    )
    return {
        "name": "tsfm-bench-pool",
        "spacing_xyz_mm": [spacing] * 3,
        "patch_size_zyx": patch,
        "foreground_share": 0.5,
        "pad_to_patch": True,
        "classes": CLASSES,
        "sources": src,
    }


def choose_patients(k: int, seed: int) -> list[str]:
    """The k transfer patients of a seed: the first k of a seeded permutation of the candidates (nested in k)."""
    order = np.random.default_rng(seed).permutation(len(CANDIDATES))
    return [CANDIDATES[i] for i in order[:k]]


def task_config(data: Path, patients: list[str], spacing: float, patch: list[int]) -> dict:
    """The transfer task: PET lesions of ``patients``, at the pool's spacing and patch."""
    return {
        "name": "pet-lesions",
        "spacing_xyz_mm": [spacing] * 3,
        "patch_size_zyx": patch,
        "foreground_share": 0.5,
        "pad_to_patch": True,
        "classes": ["lesion"],
        "sources": [
            {
                "name": "pet_sts",
                "modality": "PET",
                "root": str(data / "pet-sts"),
                "cases": _sts(data, patients, "PET"),
                "labels": {1: "lesion"},
            }
        ],
    }


def build(cfg: dict, folder: Path) -> dict:
    """Write the config as JSON next to ``folder`` and preprocess it into ``folder``; returns the pool index."""
    from medfoundry.data.pool import build_pool, load_pool_config

    path = folder.with_suffix(".json")
    path.write_text(json.dumps(cfg, indent=2))
    return build_pool(load_pool_config(path), folder)


class Point(NamedTuple):
    """One transfer run: k labelled patients, an arm (pretrained / from scratch) and a seed."""

    k: int
    arm: str
    seed: int

    @property
    def name(self) -> str:
        return f"k{self.k}_{'pre' if self.arm == 'pretrained' else 'scratch'}_s{self.seed}"


def settings(args: argparse.Namespace, epochs: int, iters: int, seed: int):
    """TrainSettings of the bench (same for both arms)."""
    from medfoundry.training.tsfm import TrainSettings

    return TrainSettings(
        epochs=epochs,
        iters_per_epoch=iters,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        seed=seed,
        amp=args.amp,
    )


def device_env(args: argparse.Namespace):
    """One process on ``--device`` (the training loop's default would be the CPU)."""
    from medfoundry.training.distributed import DistEnv

    return DistEnv(device=torch.device(args.device))


def evaluate(model_path: Path, data: Path, device: str, test: list[str]) -> list[float]:
    """Dice of the predicted lesion against each test patient's mask, on the test image's own grid."""
    from medfoundry.evaluation import dice
    from medfoundry.inference.sliding_window import predict_labels
    from medfoundry.io import read_image, read_mask
    from medfoundry.modeling.tsfm import load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(model_path)
    model = model_from_checkpoint(ckpt, model_path)
    scores = []
    for patient in test:
        image = read_image(data / "pet-sts" / patient / "PET_image.nii.gz", modality="PET")
        gt = read_mask(data / "pet-sts" / patient / "PET_mask.nii.gz", reference=image)
        pred = predict_labels(model, image, ckpt["preprocessing"], overlap=0.5, sw_batch_size=4, device=device)
        scores.append(dice(pred.array == 1, gt.array > 0))
    return scores


def run_point(
    point: Point, args: argparse.Namespace, task_dir: Path, pretrained: Path, out: Path, test: list[str]
) -> dict:
    """Train one point on its task pool (both arms: same patients, iterations and training seed) and test it
    on the ``test`` patients."""
    from medfoundry.modeling.tsfm import build_tsfm, load_checkpoint, model_for_transfer
    from medfoundry.training.tsfm import fit

    torch.set_num_threads(args.point_threads)
    torch.manual_seed(point.seed)  # the new head (pretrained) or the whole network (from scratch)
    if point.arm == "pretrained":
        net = model_for_transfer(load_checkpoint(pretrained), 1, pretrained, patch_size=tuple(args.patch))
    else:
        net = build_tsfm(args.preset, num_classes=1, patch_size=tuple(args.patch))
    t0 = time.time()
    hist = fit(
        net,
        task_dir,
        out,
        settings(args, args.transfer_epochs, args.transfer_iters, point.seed),
        device_env(args),
        kind=point.arm,
        progress=False,
    )
    t_fit = time.time() - t0
    t0 = time.time()
    scores = evaluate(out / "model.pt", args.data, args.device, test)
    return {
        "k": point.k,
        "arm": point.arm,
        "seed": point.seed,
        "patients": choose_patients(point.k, point.seed),
        "dice": scores,
        "mean_dice": float(np.mean(scores)),
        "loss": [h["loss"] for h in hist],
        "train_s": t_fit,
        "eval_s": time.time() - t0,
    }


def _run_points(points: list[Point], args: argparse.Namespace, work: Path) -> list[dict]:
    """Every point (results in input order, each also in ``work/points/NAME.json``): on Ray with ``--ray``,
    else in ``--jobs`` processes of ``--point-threads`` threads each; ``--only-missing`` keeps the points there."""
    jobs = [
        (p, args, work / "tasks" / f"k{p.k}_s{p.seed}", work / "pretrain" / "model.pt", work / p.name, TEST)
        for p in points
    ]
    return ray_grid.run_points(
        run_point,
        jobs,
        [p.name for p in points],
        work / "points",
        only_missing=args.only_missing,
        ray=args.ray,
        threads=args.point_threads,
        gpus=args.ray_gpus_per_point,
        processes=args.jobs,
        on_result=_print_point,
    )


def _print_point(r: dict) -> None:
    print(
        f"  k={r['k']} {r['arm']:<12} seed {r['seed']} ({', '.join(r['patients'])}): Dice {r['mean_dice']:.3f}, "
        f"loss {r['loss'][0]:.3f} -> {r['loss'][-1]:.3f}, train {r['train_s']:.0f} s, test {r['eval_s']:.0f} s",
        flush=True,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_tsfm")
    p.add_argument(
        "--pool-pet", choices=("disjoint", "none"), default="disjoint", help="PET of STS_001-010 in the pool"
    )
    p.add_argument("--preset", default="tiny")
    p.add_argument("--patch", type=int, nargs=3, default=[16, 32, 32], metavar=("Z", "Y", "X"))
    p.add_argument("--spacing", type=float, default=4.0, help="pool and task spacing, mm (isotropic)")
    p.add_argument("--shots", type=int, nargs="+", default=[1, 3, 5], help="labelled transfer patients")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="transfer seeds (patients + training RNG)")
    p.add_argument("--pretrain-epochs", type=int, default=70)
    p.add_argument("--iters", type=int, default=100, help="pretraining iterations per epoch")
    p.add_argument("--transfer-epochs", type=int, default=10)
    p.add_argument("--transfer-iters", type=int, default=25, help="transfer iterations per epoch")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--optimizer", default="sgd", choices=("sgd", "adamw"))
    p.add_argument("--seed", type=int, default=0, help="pretraining seed (weights and sampling)")
    p.add_argument("--threads", type=int, default=2, help="torch threads for pretraining")
    p.add_argument("--jobs", type=int, default=2, help="transfer points trained at once (processes)")
    p.add_argument("--point-threads", type=int, default=1, help="torch threads per transfer process")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true", help="bf16 mixed precision (CUDA only)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --work folder (after the run)")
    p.add_argument(
        "--only-missing",
        action="store_true",
        help="continue the --work folder in place: keep its pools, pretraining and finished points (points/*.json)",
    )
    ray_grid.add_ray_args(p, "--point-threads")
    p.add_argument("--quick", action="store_true", help="smoke run: 3 x 10 pretraining, 2 x 10 transfer")
    p.add_argument(
        "--check-point",
        nargs=3,
        metavar=("K", "ARM", "SEED"),
        help="re-train one point of the finished --work run (ARM: pretrained or scratch) and compare its numbers",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.pretrain_epochs, args.iters, args.transfer_epochs, args.transfer_iters = 3, 10, 2, 10
    if args.device != "cpu" and args.jobs > 1 and not args.ray:
        p.error("--jobs > 1 trains several CPU processes; use --jobs 1 with --device cuda")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.check_point:
        return check_point(args)

    from medfoundry.io.atomic import atomic_dir

    if args.only_missing and args.work.is_dir():
        return _bench(args, args.work.resolve())  # in place: what is there is kept
    # an existing --work folder is refused unless --overwrite, and replaced only once this run has finished
    with atomic_dir(args.work.resolve(), overwrite=args.overwrite) as work:
        return _bench(args, work)


def _bench(args: argparse.Namespace, work: Path) -> int:
    """The whole benchmark, written into ``work`` (a temporary folder that becomes --work at the end)."""
    from medfoundry.data.pool import load_pool_config
    from medfoundry.data.pool_report import remap_rows, sampling_rows
    from medfoundry.modeling.tsfm import build_tsfm
    from medfoundry.training.tsfm import fit

    report = _report_module()
    t_start = time.time()
    from medfoundry.data.pool import load_pool_index
    from medfoundry.modeling.tsfm import load_checkpoint

    cfg = pool_config(args.data, args.spacing, args.patch, args.pool_pet)
    index = load_pool_index(work / "pool") if (work / "pool" / "pool.json").is_file() else build(cfg, work / "pool")
    pool_cfg = load_pool_config(work / "pool.json")
    tables = {"sampling": sampling_rows(pool_cfg), "remap": remap_rows(pool_cfg)}
    (work / "remap_table.json").write_text(json.dumps(tables["remap"], indent=2))
    pool_md = report.pool_text(tables, index)
    print(pool_md)
    (work / "tasks").mkdir(exist_ok=True)
    for k in args.shots:
        for seed in args.seeds:
            if not (work / "tasks" / f"k{k}_s{seed}" / "pool.json").is_file():
                build(
                    task_config(args.data, choose_patients(k, seed), args.spacing, args.patch),
                    work / "tasks" / f"k{k}_s{seed}",
                )
    t_pools = time.time() - t_start

    torch.manual_seed(args.seed)
    model = build_tsfm(args.preset, num_classes=len(CLASSES), patch_size=tuple(args.patch))
    print(f"pretraining: {args.pretrain_epochs} epochs x {args.iters} it, batch {args.batch_size}", flush=True)
    t0 = time.time()
    pre_settings = settings(args, args.pretrain_epochs, args.iters, args.seed)
    if (work / "pretrain" / "model.pt").is_file():  # only with --only-missing: a new --work folder is empty
        pre_hist = load_checkpoint(work / "pretrain" / "model.pt")["history"]
        print("pretraining: kept from the earlier run (--only-missing)")
    else:
        pre_hist = fit(model, work / "pool", work / "pretrain", pre_settings, device_env(args))
    t_pre = time.time() - t0
    print(f"pretraining: loss {pre_hist[0]['loss']:.3f} -> {pre_hist[-1]['loss']:.3f}, {t_pre:.0f} s", flush=True)

    points = [Point(k, arm, seed) for k in args.shots for arm in ARMS for seed in args.seeds]
    print(f"transfer: {len(points)} runs of {args.transfer_epochs} x {args.transfer_iters} it, {args.jobs} at a time")
    t0 = time.time()
    results = _run_points(points, args, work)
    times = {"pools_s": t_pools, "pretrain_s": t_pre, "transfer_s": time.time() - t0}
    times["total_s"] = time.time() - t_start
    payload = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "split": {"pool_pet": POOL_PET if args.pool_pet == "disjoint" else [], "candidates": CANDIDATES, "test": TEST},
        "pool": tables,
        "pretrain_history": pre_hist,
        "points": results,
        "summary": report.summarise(results),
        "times": times,
    }
    text = report.results_text(payload)
    print(text)
    (work / "results.md").write_text(text + "\n\n" + pool_md)
    (work / "results.json").write_text(json.dumps(payload, indent=2))
    report.plot_dice(payload, work / "dice_vs_patients.png")
    report.plot_curves(payload, work / "training_curves.png")
    print(f"wrote {args.work}/results.md, results.json, dice_vs_patients.png, training_curves.png")
    return 0


def _report_module():
    """bench/tsfm_report.py (imported by path: bench/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tsfm_report", Path(__file__).with_name("tsfm_report.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_point(args: argparse.Namespace) -> int:
    """Re-train one point of a finished run from its pretrained checkpoint and compare with results.json."""
    k, arm, seed = int(args.check_point[0]), args.check_point[1], int(args.check_point[2])
    arm = {"pretrained": "pretrained", "scratch": "from scratch", "from scratch": "from scratch"}.get(arm)
    if arm is None:
        sys.exit("--check-point ARM is 'pretrained' or 'scratch'")
    done = json.loads((args.work / "results.json").read_text())
    stored = [r for r in done["points"] if (r["k"], r["arm"], r["seed"]) == (k, arm, seed)]
    if not stored:
        sys.exit(f"{args.work}/results.json has no point k={k} {arm} seed {seed}")
    keys = ("preset", "patch", "spacing", "transfer_epochs", "transfer_iters", "batch_size", "lr", "optimizer")
    for key in keys + ("point_threads", "amp"):  # the thread count too: it may change float rounding
        setattr(args, key, done["args"][key])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build(task_config(args.data, choose_patients(k, seed), args.spacing, args.patch), tmp / "task")
        pretrained = args.work / "pretrain" / "model.pt"
        again = run_point(Point(k, arm, seed), args, tmp / "task", pretrained, tmp / "run", done["split"]["test"])
    same = again["dice"] == stored[0]["dice"] and again["loss"] == stored[0]["loss"]
    print(
        f"point k={k} {arm} seed {seed}: Dice {again['mean_dice']:.6f} (stored {stored[0]['mean_dice']:.6f}), "
        f"final loss {again['loss'][-1]:.6f} (stored {stored[0]['loss'][-1]:.6f})"
    )
    print("identical" if same else "DIFFERENT: per-patient Dice or loss history changed")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
