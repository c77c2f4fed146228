"""Does a frozen foundation encoder help nnU-Net when labels are scarce?  nnU-Net 2D vs nnSAM on PET-STS.

Real nnU-Net v2 (its planner, preprocessing, trainer, loss, sampling and predictor) on the 30 cropped FDG-PET
soft-tissue-sarcoma volumes of ``../shared/data/pet-sts``. One seeded patient-wise split fixes 6 test patients for
every run; the 24 others are the training pool. Each seed re-shuffles the training patients (fraction f % takes the
first round(f / 100 x 24) of that order, nested) and seeds the training RNG. ``baseline`` is nnU-Net's planned 2D
U-Net; ``sam`` adds LiteMedSAM's frozen TinyViT encoder (real weights) at the bottleneck (nnSAM), run through
ONNX Runtime on the CPU (``--backend``). Every model is scored on the test patients: Dice and IoU per
patient, false-positive / false-negative volume (mL). Baseline models also keep snapshots during training, scored the
same way, for the curve of test Dice against training length.

Settings:
  --setting cpu (default; about 60 min on a quiet 2-core CPU): baseline at 100 / 50 / 10 / 5 % x seeds 0 and 1
      with 100 epochs x 25 iterations at batch 4 (snapshots at 10-80 epochs give the test-Dice curve); sam at
      10 % with seed 0 on a 20-epoch schedule, paired with a baseline trained on the same 20-epoch schedule. The
      frozen encoder runs on every augmented patch (about 0.5 s a patch with ONNX Runtime on 2 cores, 2 s an
      iteration against 0.09 s for the baseline), so one sam model on the 100-epoch schedule would take about
      90 minutes: the whole sam grid is the GPU setting.
  --setting gpu: the full grid (both variants at every fraction, seeds 0-2) with nnU-Net's schedule (1000 x 250,
      the plan's batch size, mirroring), CUDA:
      python bench/nnunet_pet.py --setting gpu --work runs/bench_nnunet_gpu
The same on a Ray cluster (every model a Ray task with --threads CPUs and one GPU; --work on a file system every
node sees; a stopped run continues with --only-missing, which keeps the finished models' points/*.json):
  python bench/nnunet_pet.py --setting gpu --work /shared/bench_nnunet_gpu --ray head-node:6379 \
      --ray-gpus-per-point 1 --threads 8
Check that a point reproduces (re-trains it in a fresh run folder and compares per-patient Dice exactly):
  python bench/nnunet_pet.py --check-point baseline 10 1
Outputs (--work, default runs/bench_nnunet): results.md, results.json, dice_vs_fraction.png, test_dice_curve.png and
one nnU-Net run folder per seed (seedS/).

Paper reference (AutoPET III, 10 % of the training scans): nnU-Net Dice 0.47, nnSAM 0.45.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import ray_grid  # noqa: E402 - bench/ is not a package

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "cpu": {"epochs": 100, "iterations": 25, "val_iterations": 2, "batch_size": 4, "device": "cpu",
            "mirroring": False, "seeds": [0, 1], "sam_points": ["10:0"], "sam_epochs": 20,
            "snapshots": [10, 20, 40, 60, 80]},
    "gpu": {"epochs": 1000, "iterations": 250, "val_iterations": 50, "batch_size": None, "device": "cuda",
            "mirroring": True, "seeds": [0, 1, 2], "sam_points": ["all"], "sam_epochs": None,
            "snapshots": [50, 100, 250, 500]},
}  # fmt: skip
FRACTIONS = [100.0, 50.0, 10.0, 5.0]
SPLIT_SEED = 0
WEIGHTLESS = ("convnext1", "convnext2", "dino")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "pet-sts")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_nnunet")
    p.add_argument("--setting", choices=tuple(SETTINGS), default="cpu")
    p.add_argument("--fractions", type=float, nargs="+", default=FRACTIONS)
    p.add_argument("--seeds", type=int, nargs="+", help="training seeds (patients re-drawn, training RNG)")
    p.add_argument(
        "--sam-points",
        nargs="+",
        help="FRACTION:SEED points of the sam variant, or 'all' (every fraction x seed), or 'none'",
    )
    p.add_argument(
        "--encoder-weights",
        nargs="+",
        default=[],
        metavar="VARIANT=PATH",
        help="also run convnext1 / convnext2 / dino at the sam points, with these local weights",
    )
    p.add_argument("--epochs", type=int)
    p.add_argument(
        "--sam-epochs",
        type=int,
        help="epochs of the frozen-encoder points, each paired with a baseline of the same schedule "
        "(default: cpu 20, gpu = --epochs, i.e. no separate pairing)",
    )
    p.add_argument("--iterations", type=int)
    p.add_argument("--val-iterations", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--snapshots", type=int, nargs="*", help="epochs at which baseline models are also scored")
    p.add_argument("--device")
    p.add_argument("--mirroring", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--backend", default="fast", choices=("fast", "torch", "onnx", "onnx-int8"))
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--max-test-cases", type=int, help="score only the first N test patients (smoke runs)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --work folder (after the run)")
    p.add_argument(
        "--only-missing",
        action="store_true",
        help="continue the --work folder in place: keep its prepared runs and finished models (points/*.json)",
    )
    ray_grid.add_ray_args(p)
    p.add_argument(
        "--check-point",
        nargs=3,
        metavar=("VARIANT", "FRACTION", "SEED"),
        help="re-train one point of the finished --work run in a new folder and compare its numbers",
    )
    args = p.parse_args(argv)
    cfg = dict(SETTINGS[args.setting])
    keys = ("epochs", "iterations", "val_iterations", "batch_size", "device", "mirroring", "seeds", "snapshots")
    for key in (*keys, "sam_epochs"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    cfg["sam_points"] = args.sam_points or cfg["sam_points"]
    if cfg["sam_epochs"] is None or cfg["sam_epochs"] == cfg["epochs"]:
        cfg["sam_epochs"] = None  # the frozen-encoder points share the baseline grid's schedule
    args.cfg = cfg
    args.weights = {}
    for item in args.encoder_weights:
        variant, _, path = item.partition("=")
        if variant not in WEIGHTLESS or not path:
            p.error(f"--encoder-weights takes VARIANT=PATH with VARIANT in {WEIGHTLESS}, got {item!r}")
        if not Path(path).exists():
            p.error(f"--encoder-weights {variant}: {path} not found")
        args.weights[variant] = str(Path(path).resolve())
    return args


def points_of(args: argparse.Namespace) -> list[tuple[str, float, int, int]]:
    """(variant, fraction, seed, epochs) in run order: the baseline grid, then the frozen-encoder points (with
    their paired baselines when the encoder points run a shorter schedule than the grid)."""
    cfg = args.cfg
    grid = [(f, s) for s in cfg["seeds"] for f in args.fractions]
    if cfg["sam_points"] == ["all"]:
        fusion_pts = grid
    elif cfg["sam_points"] == ["none"]:
        fusion_pts = []
    else:
        fusion_pts = []
        for item in cfg["sam_points"]:
            fraction, _, seed = item.partition(":")
            fusion_pts.append((float(fraction), int(seed or 0)))
    epochs, short = cfg["epochs"], cfg["sam_epochs"]
    points = [("baseline", f, s, epochs) for f, s in grid]
    if short is not None:
        points += [("baseline", f, s, short) for f, s in fusion_pts]
    for variant in ["sam", *args.weights]:
        points += [(variant, f, s, short or epochs) for f, s in fusion_pts]
    return points


def run_key(seed: int, epochs: int, cfg: dict) -> str:
    """Run folder of a seed (and of the shorter paired schedule, which needs models of its own)."""
    return f"seed{seed}" if epochs == cfg["epochs"] else f"seed{seed}_e{epochs}"


def schedule_of(cfg: dict, variant: str, epochs: int):  # noqa: ANN201 - medfoundry Schedule
    from medfoundry.training.nnunet.schedule import make_schedule

    return make_schedule(
        "nnunet" if cfg["device"] == "cuda" else "cpu",
        epochs=epochs,
        iterations_per_epoch=cfg["iterations"],
        val_iterations=cfg["val_iterations"],
        batch_size=cfg["batch_size"],
        save_every=max(1, epochs),
        snapshot_epochs=tuple(e for e in cfg["snapshots"] if e < epochs) if variant == "baseline" else (),
    )


def prepare_run(args: argparse.Namespace, run: Path, seed: int, fractions: list[float]) -> dict:
    """One nnU-Net run folder: the same test patients for every seed, the training patients re-drawn by ``seed``."""
    from medfoundry.training.nnunet.export import prepare
    from medfoundry.training.nnunet.plan import plan_and_preprocess

    prepared = run / "prepared.json"
    if prepared.is_file():  # --only-missing in an earlier run's folder
        return json.loads(prepared.read_text())
    fractions = sorted(set(fractions) | {100.0}, reverse=True)
    manifest = prepare(args.data, run, test_fraction=0.2, fractions=fractions, seed=SPLIT_SEED, train_seed=seed)
    plan = plan_and_preprocess(run, num_processes=2)
    prepared.write_text(json.dumps({"manifest": manifest, "plan": plan}))
    return {"manifest": manifest, "plan": plan}


def _score(run: Path, predictor, out_dir: Path, max_cases: int | None = None) -> list:  # noqa: ANN001
    from medfoundry.training.nnunet.predict import held_out_inputs, predict_volumes
    from medfoundry.training.nnunet.report import evaluate_folder
    from medfoundry.training.nnunet.runtime import RunLayout, read_manifest

    manifest = read_manifest(run)
    labels = RunLayout(run.resolve()).dataset_raw(manifest["dataset_name"]) / "labelsTs"
    inputs = held_out_inputs(run)[:max_cases]
    predict_volumes(predictor, inputs, out_dir, modality="PET", overwrite=True)
    return evaluate_folder(out_dir, {case: labels / f"{case}.nii.gz" for case, _ in inputs})


def run_point(args: argparse.Namespace, run: Path, variant: str, fraction: float, seed: int, epochs: int) -> dict:
    """Train one (variant, fraction, seed, epochs) model, score it (and its snapshots) on the test patients."""
    from dataclasses import asdict

    import numpy as np

    from medfoundry.modeling.fusion import FusionSpec
    from medfoundry.training.nnunet.predict import load_predictor
    from medfoundry.training.nnunet.runtime import RunLayout
    from medfoundry.training.nnunet.schedule import snapshot_name
    from medfoundry.training.nnunet.trainers import MODEL_INFO, train

    cfg = args.cfg
    schedule = schedule_of(cfg, variant, epochs)
    fusion = None if variant == "baseline" else FusionSpec(variant, weights=args.weights.get(variant))
    print(f"== {variant} {fraction:g}% seed {seed}, {epochs} epochs", flush=True)
    t0 = time.perf_counter()
    folder = train(
        run, variant, fraction, schedule, fusion, device=cfg["device"], data_workers=0, seed=seed,
        encoder_backend=args.backend,
    )  # fmt: skip
    train_s = time.perf_counter() - t0
    info = json.loads((folder / MODEL_INFO).read_text())
    pred_dir = RunLayout(run.resolve()).prediction_dir(variant, fraction)
    t0 = time.perf_counter()
    kw = {"device": cfg["device"], "mirroring": cfg["mirroring"], "encoder_backend": args.backend}
    results = _score(run, load_predictor(run, variant, fraction, **kw), pred_dir, args.max_test_cases)
    predict_s = time.perf_counter() - t0
    curve = {}
    for epoch in schedule.snapshot_epochs:
        snap = load_predictor(run, variant, fraction, checkpoint=snapshot_name(epoch), **kw)
        snap_dir = run / "curve" / variant / f"f{fraction:g}" / f"ep{epoch}"
        snap_results = _score(run, snap, snap_dir, args.max_test_cases)
        curve[str(epoch)] = float(np.mean([r.dice for r in snap_results]))
    mean_dice = float(np.mean([r.dice for r in results]))
    curve[str(schedule.epochs)] = mean_dice
    point = {
        "variant": variant,
        "fraction": float(fraction),
        "seed": int(seed),
        "epochs": int(epochs),
        "training_cases": info["training_cases"],
        "encoder_runtime": info.get("encoder_runtime"),
        "cases": [asdict(r) for r in results],
        "mean_dice": mean_dice,
        "mean_iou": float(np.mean([r.iou for r in results])),
        "mean_fpv_ml": float(np.mean([r.fpv_ml for r in results])),
        "mean_fnv_ml": float(np.mean([r.fnv_ml for r in results])),
        "curve": curve,
        "train_s": train_s,
        "s_per_iteration": train_s / (schedule.epochs * schedule.iterations_per_epoch),
        "predict_s": predict_s,
    }
    print(
        f"   Dice {mean_dice:.3f} ({len(info['training_cases'])} training patients), train {train_s:.0f} s "
        f"({point['s_per_iteration']:.2f} s/it), predict {predict_s:.0f} s, curve {curve}",
        flush=True,
    )
    return point


def _report_module():
    """bench/nnunet_report.py (imported by path: bench/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("nnunet_report", Path(__file__).with_name("nnunet_report.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bench(args: argparse.Namespace, work: Path) -> int:
    report = _report_module()
    t_start = time.time()
    cfg = args.cfg
    points = points_of(args)
    runs: dict[str, tuple[int, list[float]]] = {}
    for _, fraction, seed, epochs in points:
        runs.setdefault(run_key(seed, epochs, cfg), (seed, []))[1].append(fraction)
    plans, t0 = {}, time.time()
    for key, (seed, fractions) in runs.items():
        plans[key] = prepare_run(args, work / key, seed, fractions)
    plan_s = time.time() - t0
    first = plans[next(iter(plans))]
    test = first["manifest"]["test"]
    assert all(p["manifest"]["test"] == test for p in plans.values()), "every run must share the test patients"
    print(f"{len(points)} models; test patients {test}; 2D plan {json.dumps(first['plan'])}", flush=True)
    results = ray_grid.run_points(
        run_point,
        [
            (args, work / run_key(seed, epochs, cfg), variant, fraction, seed, epochs)
            for variant, fraction, seed, epochs in points
        ],
        [f"{v}_f{f:g}_s{s}_e{e}" for v, f, s, e in points],
        work / "points",
        only_missing=args.only_missing,
        ray=args.ray,
        threads=args.threads,
        gpus=args.ray_gpus_per_point,
        on_result=lambda r: print(
            f"[{(time.time() - t_start) / 60:5.1f} min] {r['variant']} {r['fraction']:g}% seed {r['seed']} done",
            flush=True,
        ),
    )
    not_run = {
        v: f"no {report.WEIGHT_HINTS[v]} on this machine (pass --encoder-weights {v}=PATH)"
        for v in WEIGHTLESS
        if v not in args.weights
    }
    payload = {
        "setting": {**cfg, "name": args.setting, "encoder_backend": args.backend, "threads": args.threads},
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "cfg"},
        "test": test,
        "plan": first["plan"],
        "training_patients": {key: plan["manifest"]["fractions"] for key, plan in plans.items()},
        "points": results,
        "not_run": not_run,
        "times": {"plan_s": plan_s, "total_s": time.time() - t_start},
    }
    payload["summary"] = report.summarise(results)
    payload["curves"] = report.curves_from_points(results)
    text = report.results_text(payload)
    print(text)
    (work / "results.md").write_text(text + "\n")
    (work / "results.json").write_text(json.dumps(payload, indent=2))
    report.plot_dice(payload, work / "dice_vs_fraction.png")
    report.plot_curves(payload, work / "test_dice_curve.png")
    print(f"wrote {args.work}/results.md, results.json, dice_vs_fraction.png, test_dice_curve.png")
    return 0


def check_point(args: argparse.Namespace) -> int:
    """Re-train one point of a finished run in a fresh run folder and compare per-patient Dice exactly."""
    variant, fraction, seed = args.check_point[0], float(args.check_point[1]), int(args.check_point[2])
    done = json.loads((args.work / "results.json").read_text())
    stored = [p for p in done["points"] if (p["variant"], p["fraction"], p["seed"]) == (variant, fraction, seed)]
    if not stored:
        sys.exit(f"{args.work}/results.json has no point {variant} {fraction:g}% seed {seed}")
    old = stored[0]  # the grid's point where a fraction also has a shorter paired one
    setting = done["setting"]
    args.cfg = {k: setting[k] for k in SETTINGS["cpu"]}
    args.cfg["snapshots"] = []  # the snapshots do not change the training; only the final model is compared
    args.backend = setting["encoder_backend"]
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        prepare_run(args, run, seed, [fraction])
        again = run_point(args, run, variant, fraction, seed, old["epochs"])
    same = again["training_cases"] == old["training_cases"] and again["cases"] == old["cases"]
    print(f"point {variant} {fraction:g}% seed {seed}: Dice {again['mean_dice']:.6f} (stored {old['mean_dice']:.6f})")
    print("identical" if same else "DIFFERENT: training patients or per-patient metrics changed")
    return 0 if same else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.check_point:
        return check_point(args)
    from medfoundry.io.atomic import atomic_dir

    if args.only_missing and args.work.is_dir():
        return _bench(args, args.work.resolve())  # in place: what is there is kept
    # an existing --work folder is refused unless --overwrite, and replaced only once this run has finished
    with atomic_dir(args.work.resolve(), overwrite=args.overwrite) as work:
        return _bench(args, work)


if __name__ == "__main__":
    sys.exit(main())
