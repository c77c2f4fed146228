"""Does a frozen foundation encoder help nnU-Net when labels are scarce?  nnU-Net 2D vs nnSAM on PET-STS.

Real nnU-Net v2 (its planner, preprocessing, trainer, loss, sampling and predictor) on the 30 cropped FDG-PET
soft-tissue-sarcoma volumes of ``../shared/data/pet-sts``: a seeded patient-wise 80/20 split (24 training, 6 test
patients), the baseline and the ``sam`` variant (LiteMedSAM's TinyViT encoder, real weights, frozen, fused at the
bottleneck) trained on two training fractions with the same schedule, evaluated on the test patients with Dice / IoU
(cases with a lesion) and FPV / FNV in ml.

Settings:
  --setting cpu (default; about 40-50 min on a free 2-core CPU): fractions 100 and 10 %, 4 epochs x 25 iterations at
      batch size 4 (2 validation iterations per epoch), no test-time mirroring.
  --setting gpu: nnU-Net's own schedule (1000 epochs x 250 iterations, the plan's batch size), mirroring, CUDA:
      python bench/nnunet_pet.py --setting gpu --run-dir runs/petsts_gpu
Any field can be overridden (--epochs, --iterations, --batch-size, --fractions, --max-test-cases ...), e.g. the
shortened run quoted in docs/nnunet.md.

Paper reference (AutoPET III, 10 % of the training scans): nnU-Net Dice 0.47, nnSAM 0.45.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "cpu": {"epochs": 4, "iterations": 25, "val_iterations": 2, "batch_size": 4, "device": "cpu", "mirroring": False},
    "gpu": {"epochs": 1000, "iterations": 250, "val_iterations": 50, "batch_size": None, "device": "cuda",
            "mirroring": True},
}  # fmt: skip
PAPER_10 = {"baseline": 0.47, "sam": 0.45}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "pet-sts")
    p.add_argument("--run-dir", type=Path, help="run directory (default: a new temporary folder)")
    p.add_argument("--setting", choices=tuple(SETTINGS), default="cpu")
    p.add_argument("--fractions", type=float, nargs="+", default=[100.0, 10.0])
    p.add_argument("--variants", nargs="+", default=["baseline", "sam"], choices=["baseline", "sam"])
    p.add_argument("--epochs", type=int)
    p.add_argument("--iterations", type=int)
    p.add_argument("--val-iterations", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device")
    p.add_argument("--mirroring", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--max-test-cases", type=int, help="predict only the first N test cases (shortened runs)")
    p.add_argument("--workers", type=int, default=0, help="nnU-Net data-augmentation processes")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from medfoundry.modeling.fusion import FusionSpec
    from medfoundry.training.nnunet.export import manifest_summary, prepare
    from medfoundry.training.nnunet.plan import plan_and_preprocess
    from medfoundry.training.nnunet.predict import held_out_inputs, load_predictor, predict_volumes
    from medfoundry.training.nnunet.report import evaluate_run, summary_markdown
    from medfoundry.training.nnunet.runtime import RunLayout
    from medfoundry.training.nnunet.trainers import make_schedule, train

    torch.set_num_threads(args.threads)
    cfg = dict(SETTINGS[args.setting])
    for key in ("epochs", "iterations", "val_iterations", "batch_size", "device", "mirroring"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    schedule = make_schedule(
        "nnunet" if args.setting == "gpu" else "cpu",
        epochs=cfg["epochs"],
        iterations_per_epoch=cfg["iterations"],
        val_iterations=cfg["val_iterations"],
        batch_size=cfg["batch_size"],
    )
    run = args.run_dir or Path(tempfile.mkdtemp(prefix="nnunet_pet_"))
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    def tick(name: str, start: float) -> None:
        timings[name] = time.perf_counter() - start
        print(f"[{time.perf_counter() - t0:7.0f} s] {name}: {timings[name]:.0f} s", flush=True)

    start = time.perf_counter()
    manifest = prepare(args.data, run, test_fraction=0.2, fractions=args.fractions, seed=args.seed, name="PETSTS")
    print(manifest_summary(manifest))
    tick("prepare", start)
    start = time.perf_counter()
    plan = plan_and_preprocess(run, num_processes=2)
    print("nnU-Net 2D plan:", json.dumps(plan))
    tick("plan + preprocess", start)
    inputs = held_out_inputs(run)
    if args.max_test_cases:
        inputs = inputs[: args.max_test_cases]
    for fraction in args.fractions:
        for variant in args.variants:
            fusion = FusionSpec("sam") if variant == "sam" else None
            start = time.perf_counter()
            train(
                run,
                variant,
                fraction,
                schedule,
                fusion,
                device=cfg["device"],
                data_workers=args.workers,
                seed=args.seed,
            )
            tick(f"train {variant} {fraction:g}%", start)
            start = time.perf_counter()
            predictor = load_predictor(run, variant, fraction, device=cfg["device"], mirroring=cfg["mirroring"])
            predict_volumes(predictor, inputs, RunLayout(run).prediction_dir(variant, fraction), modality="PET")
            tick(f"predict {variant} {fraction:g}% ({len(inputs)} test volumes)", start)
    start = time.perf_counter()
    summaries = evaluate_run(run, overwrite=True, cases=[case for case, _ in inputs])
    tick("evaluate", start)

    print()
    print(
        f"schedule: {schedule.epochs} epochs x {schedule.iterations_per_epoch} iterations, batch size "
        f"{schedule.batch_size or 'from plan'}, {schedule.val_iterations} validation iterations/epoch, "
        f"device {cfg['device']}, mirroring {cfg['mirroring']}; {len(manifest['train'])} training / "
        f"{len(inputs)} evaluated test patients; 2D patch {plan['patch_size']}"
    )
    print(summary_markdown(summaries))
    by_key = {(s.variant, s.fraction): s for s in summaries}
    for fraction in args.fractions:
        base, sam = by_key.get(("baseline", fraction)), by_key.get(("sam", fraction))
        if base and sam:
            print(f"{fraction:g}%: Dice sam - baseline = {sam.dice - base.dice:+.3f}")
    print(f"paper (AutoPET III, 10 %): nnU-Net Dice {PAPER_10['baseline']}, nnSAM {PAPER_10['sam']}")
    print(f"total {time.perf_counter() - t0:.0f} s; tables and plot in {RunLayout(run).reports}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
