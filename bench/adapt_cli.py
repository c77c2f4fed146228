"""Issues 15 and 30: does `medfoundry finetune` with its defaults gain on held-out patients, whichever validation
patients a user picks? The commands a new user types, run as subprocesses (the CLI's own code path, no copy of the
training loop), with no tuning flag but the training seed:

    medfoundry finetune ../shared/data/pet-sts RUN --image-glob '*/PET_image.nii.gz' --method METHOD \\
        --cases <10 training patients> --val-cases <3 validation patients> --seed SEED   # every other option default
    medfoundry segment --manifest zero.csv --out ZERO                                 # zero-shot, one 3D box per row
    medfoundry segment --manifest adapted.csv --out ADAPTED --adapter RUN/best.pt

Test patients are fixed: the 7 of ``bench/adapt_pet.py``'s split (seed 0), the split docs/adaptation.md reports.
Validation triplets: split 0 is that bench's (STS_007 017 024); splits 1..K-1 are distinct triplets drawn (seeded
by --draw-seed) from the 23 patients that are not test patients. Training: the first --train-patients of the
bench's pool order followed by its validation patients, skipping the split's validation patients (split 0: the
bench's 10). Each split runs once per training seed (--seeds).

Each test patient is segmented from its reference's 3D bounding box (inclusive voxel indices, what a user draws)
and from the bench's loose box; 3D DSC against the reference. Per run: the test 3D DSC gain over zero-shot
(mean over the 7 patients) and wins / losses (patients better / worse than zero-shot by > 0.05), exact and loose
box; whether best.pt is the untrained adapter and whether the run warned about it. Then the distribution over
runs and the Markdown tables for docs/adaptation.md.

Every run writes its own folder OUT/METHOD/splitK-seedS/ (finetune run, logs, masks) and its result to
OUT/METHOD/splitK-seedS.json (bench/ray_grid.py, as the other grid benches); --only-missing keeps the runs already
done and resumes an interrupted training (finetune --resume), so a grid can be run piece by piece; --ray runs the
runs as Ray tasks. Zero-shot is segmented once into OUT/zero/ and shared by every method.

    python bench/adapt_cli.py                                         # 1 run: split 0, seed 0 (~15-20 min)
    python bench/adapt_cli.py --splits 5 --seeds 0 1                  # decoder: 10 runs (~3-4 h on 2 cores)
    python bench/adapt_cli.py --splits 5 --seeds 0 1 --only-missing   # go on after an interruption
    python bench/adapt_cli.py --splits 5 --seeds 0 --method dbsam     # DB-SAM: 5 runs (~3-4 h)
    python bench/adapt_cli.py --splits 5 --seeds 0 --method lora      # LoRA: 5 runs (~2-3 h)
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import ray_grid  # noqa: E402 - bench/ is not a package

ROOT = Path(__file__).resolve().parents[1]
N_TEST, N_VAL = 7, 3  # bench/adapt_pet.py's split (seed 0)
GAIN_TARGET = 0.10  # issue 30: a test gain >= +0.10 in at least 4 of 5 runs
METHODS = ("decoder", "classprompt", "lora", "dbsam")


def _bench_module():
    """bench/adapt_pet.py, for its split and wins / losses (one definition of the protocol)."""
    if "adapt_pet" in sys.modules:
        return sys.modules["adapt_pet"]
    spec = importlib.util.spec_from_file_location("adapt_pet", ROOT / "bench" / "adapt_pet.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["adapt_pet"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def draw_splits(k: int, n_train: int = 10, draw_seed: int = 0) -> tuple[list[dict], list[str]]:
    """``k`` splits (``{"split", "val", "train"}``) and the fixed test patients. Split 0 is adapt_pet's
    validation triplet; the others are distinct triplets drawn with ``draw_seed`` from the non-test patients."""
    pool, val0, test = _bench_module().split(0, N_TEST, N_VAL)
    order = pool + val0  # training patients: the first n_train of this order that do not validate
    candidates = sorted(order)
    if n_train > len(order) - N_VAL:
        raise SystemExit(f"at most {len(order) - N_VAL} training patients ({len(order)} non-test - {N_VAL})")
    rng = np.random.default_rng(draw_seed)
    triplets = [sorted(val0)]
    while len(triplets) < k:
        val = sorted(str(c) for c in rng.choice(candidates, N_VAL, replace=False))
        if val not in triplets:
            triplets.append(val)
    splits = [{"split": i, "val": val, "train": [c for c in order if c not in val][:n_train]}
              for i, val in enumerate(triplets)]  # fmt: skip
    return splits, test


def run_logged(cmd: list[str], log: Path, shown: str) -> float:
    """Run ``cmd`` (printed as ``shown``), its output shown and kept in ``log`` (appended); fail loudly; return
    the wall time."""
    print(f"$ {shown}", flush=True)
    t0 = time.perf_counter()
    with log.open("ab") as fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        while chunk := os.read(proc.stdout.fileno(), 4096):
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
            fh.write(chunk)
        if proc.wait():
            raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}; log: {log}")
    return time.perf_counter() - t0


def medfoundry(log: Path, *args: str) -> float:
    """``medfoundry ARGS`` with this interpreter's package (see :func:`run_logged`)."""
    cmd = [sys.executable, "-c", "import sys; from medfoundry.cli.main import main; sys.exit(main())", *args]
    return run_logged(cmd, log, "medfoundry " + " ".join(args))


def write_manifest(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "box", "out"])
        writer.writeheader()
        writer.writerows(rows)


def test_boxes(test: list[str]) -> list[tuple[str, str, np.ndarray]]:
    """(case, "exact" / "loose", 3D box) for every test patient: the reference's box and the bench's loose box."""
    from medfoundry.inference.volume_eval import loose_box, reference_box
    from medfoundry.io import read_mask

    data = _bench_module().DATA
    out = []
    for case in test:
        ref = read_mask(data / case / "PET_mask.nii.gz").array > 0
        out += [(case, "exact", reference_box(ref)), (case, "loose", loose_box(ref, case))]
    return out


def segment_and_score(folder: Path, test: list[str], adapter: Path | None, log: Path, threads: list[str]) -> dict:
    """Segment every test box with ``medfoundry segment --manifest`` into ``folder`` (fresh); 3D DSC per patient
    and box kind, and the wall time."""
    from medfoundry.evaluation.overlap import dice
    from medfoundry.io import read_mask

    data = _bench_module().DATA
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    # outputs beside the manifest (manifest outputs stay inside its folder)
    rows = [{"image": str(data / case / "PET_image.nii.gz"), "box": " ".join(str(int(v)) for v in box),
             "out": f"{case}_{kind}.nii.gz"} for case, kind, box in test_boxes(test)]  # fmt: skip
    manifest = folder / "manifest.csv"
    write_manifest(manifest, rows)
    extra = ["--adapter", str(adapter)] if adapter is not None else []
    seconds = medfoundry(log, "segment", "--manifest", str(manifest), "--out", str(folder), *extra, *threads)
    scores: dict[str, dict[str, float]] = {"exact": {}, "loose": {}}
    for case in test:
        ref = read_mask(data / case / "PET_mask.nii.gz").array > 0
        for kind in scores:
            scores[kind][case] = float(dice(read_mask(folder / f"{case}_{kind}.nii.gz").array > 0, ref))
    return {"scores": scores, "segment_s": seconds}


def zero_shot(out: Path, test: list[str], threads: list[str]) -> dict:
    """Zero-shot scores of the test boxes, segmented once into ``out/zero`` (kept for every later run)."""
    path = out / "zero.json"
    if path.is_file():
        done = json.loads(path.read_text())
        if done["test"] == test:
            return done
    result = {"test": test, **segment_and_score(out / "zero", test, None, out / "zero.log", threads)}
    path.write_text(json.dumps(result, indent=1))
    return result


def compare(adapted: dict, zero: dict, test: list[str]) -> dict:
    """Gain of the mean 3D DSC over zero-shot and wins / losses (> 0.05), per box kind."""
    wins_losses = _bench_module().wins_losses
    out = {}
    for kind in ("exact", "loose"):
        a = [adapted[kind][c] for c in test]
        z = [zero[kind][c] for c in test]
        out[kind] = {"mean": float(np.mean(a)), "gain": float(np.mean(a) - np.mean(z)), "wl": wins_losses(a, z)}
    return out


def train_run(run: Path, split: dict, seed: int, method: str, log: Path, extra: list[str]) -> float:
    """``medfoundry finetune`` with the defaults (+ ``extra``, smoke runs only) for one split and seed into ``run``
    (an interrupted run is resumed); returns the wall time of this call."""
    data, glob = _bench_module().DATA, _bench_module().GLOB
    args = ["finetune", str(data), str(run), "--image-glob", glob, "--method", method, "--cases", *split["train"],
            "--val-cases", *split["val"], "--seed", str(seed), *extra]  # fmt: skip
    if (run / "last.pt").is_file():
        args.append("--resume")
    elif run.exists():
        args.append("--overwrite")
    return medfoundry(log, *args)


def one_run(folder: str, split: dict, seed: int, method: str, test: list[str], zero: dict, extra: list[str],
            threads: list[str], resume: bool) -> dict:  # fmt: skip
    """One grid point: train into ``folder`` (resumed where ``resume`` and an interrupted run is there, else
    fresh), segment the test boxes with the adapter, score against zero-shot; returns the point's result."""
    folder = Path(folder)
    resumed = resume and (folder / "run" / "last.pt").is_file()
    if not resumed:
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "finetune.log"
    train_s = train_run(folder / "run", split, seed, method, log, extra + threads)
    history = json.loads((folder / "run" / "history.json").read_text())
    seg = segment_and_score(folder / "adapted", test, folder / "run" / "best.pt", folder / "segment.log", threads)
    epochs = history["epochs"]
    trained = [h for h in epochs if h["epoch"] >= 0]
    text = log.read_text(errors="replace")
    result = {
        "method": method, "split": split["split"], "seed": seed, "train": split["train"],
        "val": sorted(epochs[0].get("val3d_per_case", split["val"])),  # what the run validated on
        "test": test, "finetune_args": extra, "train_s": train_s, "resumed": resumed,
        "segment_s": seg["segment_s"], "scores": seg["scores"],
        "compare": compare(seg["scores"], zero["scores"], test),
        "best_epoch": history["best_epoch"], "epochs_run": len(trained), "stopped": history["stopped"],
        "best_is_untrained": history["best_is_untrained"], "notice": history["notice"],
        "warned": "warning: no epoch" in text and "UNTRAINED" in text,
        "val_before": epochs[0].get("val3d_dsc") if epochs[0]["epoch"] == -1 else None,
        "val_best": next((h["val3d_dsc"] for h in epochs if h["epoch"] == history["best_epoch"]), None),
        "epoch_seconds": [h.get("seconds") for h in trained],
    }  # fmt: skip
    return result


def summary(results: list[dict], zero: dict, test: list[str], method: str, command: str) -> str:
    """The Markdown tables for docs/adaptation.md: one row per run, the distribution, per-patient exact DSC."""
    z = {k: float(np.mean([zero["scores"][k][c] for c in test])) for k in ("exact", "loose")}
    lines = [f"`{command}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}); method {method}; test "
             f"{' '.join(test)}; zero-shot 3D DSC {z['exact']:.3f} exact / {z['loose']:.3f} loose 3D box", "",
             "| split | validation | seed | val 3D before -> best | best epoch / run | train min | exact: gain | W / L "
             "| loose: gain | W / L | best.pt |", "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        c = r["compare"]
        best = "untrained, warned" if r["best_is_untrained"] and r["warned"] else (
            "**untrained, no warning**" if r["best_is_untrained"] else "trained")  # fmt: skip
        val = f"{r['val_before']:.3f} -> {r['val_best']:.3f}" if r["val_before"] is not None else "-"
        lines.append(f"| {r['split']} | {' '.join(v.removeprefix('STS_') for v in r['val'])} | {r['seed']} | {val} | "
                     f"{r['best_epoch'] + 1} / {r['epochs_run']} | {r['train_s'] / 60:.1f} | {c['exact']['gain']:+.3f} "
                     f"| {c['exact']['wl'][0]} / {c['exact']['wl'][1]} | {c['loose']['gain']:+.3f} | "
                     f"{c['loose']['wl'][0]} / {c['loose']['wl'][1]} | {best} |")  # fmt: skip
    lines.append("")
    for kind in ("exact", "loose"):
        g = np.array([r["compare"][kind]["gain"] for r in results])
        losses = sum(r["compare"][kind]["wl"][1] for r in results)
        lines.append(f"{kind} 3D box, gain over zero-shot in {len(g)} runs: median {np.median(g):+.3f}, mean "
                     f"{g.mean():+.3f}, min {g.min():+.3f}, max {g.max():+.3f}; >= +{GAIN_TARGET:.2f} in "
                     f"{int((g >= GAIN_TARGET).sum())} of {len(g)}; patients lost (> 0.05): {losses} of "
                     f"{len(g) * len(test)}")  # fmt: skip
    for seed in sorted({r["seed"] for r in results}):
        mine = [r for r in results if r["seed"] == seed]
        hits = sum(r["compare"]["exact"]["gain"] >= GAIN_TARGET for r in mine)
        lines.append(f"seed {seed}: exact-box gain >= +{GAIN_TARGET:.2f} in {hits} of {len(mine)} splits")
    untrained = [r for r in results if r["best_is_untrained"]]
    minutes = [r["train_s"] / 60 for r in results]
    lines.append(f"best.pt = the untrained adapter in {len(untrained)} of {len(results)} runs "
                 f"({sum(r['warned'] for r in untrained)} with the warning); training {np.mean(minutes):.1f} min per "
                 f"run on average, at most {max(minutes):.1f}")  # fmt: skip
    names = [f"{r['split']}/{r['seed']}" for r in results]
    lines += ["", "3D DSC per test patient, exact 3D box (column: split / seed):", "",
              "| patient | zero-shot | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(results)]  # fmt: skip
    for case in test:
        cells = [f"{r['scores']['exact'][case]:.3f}" for r in results]
        lines.append(f"| {case} | {zero['scores']['exact'][case]:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "adapt_cli")
    ap.add_argument("--method", choices=METHODS, default="decoder")
    ap.add_argument("--splits", type=int, default=1, help="validation triplets (split 0: adapt_pet's; default 1)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds, each run on every split")
    ap.add_argument("--train-patients", type=int, default=10)
    ap.add_argument("--draw-seed", type=int, default=0, help="seed that draws the validation triplets 1..K-1")
    ap.add_argument("--only-missing", action="store_true",
                    help="keep the runs --out holds and resume an interrupted one (default: run all)")  # fmt: skip
    ap.add_argument("--threads", type=int, help="--threads of finetune and segment (default theirs: all cores)")
    ray_grid.add_ray_args(ap)
    smoke = ap.add_argument_group("smoke runs only (then the results are not those of the defaults)")
    smoke.add_argument("--finetune-args", default="", metavar="ARGS",
                       help="more finetune options, e.g. '--epochs 1 --steps-per-epoch 1 --every 20'")  # fmt: skip
    smoke.add_argument("--test-limit", type=int, help="score only the first N test patients")
    args = ap.parse_args(argv)
    if args.splits < 1:
        ap.error("--splits must be >= 1")
    extra = args.finetune_args.split()
    threads = ["--threads", str(args.threads)] if args.threads else []

    splits, test = draw_splits(args.splits, args.train_patients, args.draw_seed)
    test = test[: args.test_limit] if args.test_limit else test
    if extra or args.test_limit:
        print(f"SMOKE RUN, not the defaults: finetune {' '.join(extra)}; {len(test)} test patients")
    print(f"test {test}")
    for s in splits:
        print(f"split {s['split']}: validation {s['val']}; training {s['train']}")
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    zero = zero_shot(args.out, test, threads)
    method_dir = args.out / args.method
    names = [f"split{s['split']}-seed{seed}" for s in splits for seed in args.seeds]
    jobs = [(str(method_dir / f"split{s['split']}-seed{seed}"), s, seed, args.method, test, zero, extra, threads,
             args.only_missing) for s in splits for seed in args.seeds]  # fmt: skip

    def shown(r: dict) -> None:
        c = r["compare"]["exact"]
        print(f"split {r['split']} seed {r['seed']}: exact-box gain {c['gain']:+.3f} ({c['wl'][0]} / {c['wl'][1]}), "
              f"train {r['train_s'] / 60:.1f} min ({(time.perf_counter() - t0) / 60:.0f} min in all)",
              flush=True)  # fmt: skip

    # each run's result in METHOD/splitK-seedS.json beside its folder; --only-missing keeps those already there
    results = ray_grid.run_points(one_run, jobs, names, method_dir, only_missing=args.only_missing, ray=args.ray,
                                  threads=args.threads or 2, gpus=args.ray_gpus_per_point, on_result=shown)  # fmt: skip
    command = "python bench/adapt_cli.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    text = summary(results, zero, test, args.method, command.strip())
    (method_dir / "results.json").write_text(json.dumps({"zero": zero, "runs": results}, indent=1))
    (method_dir / "results.md").write_text(text)
    print(text)
    print(f"total {(time.perf_counter() - t0) / 60:.1f} min; results: {method_dir / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
