"""Issue 15, "finetune defaults reproduce the 10-patient gain from the CLI": the commands a new user types, run as
subprocesses with no tuning flag, on the split of ``bench/adapt_pet.py`` (seed 0: 10 training, 3 validation, 7
test patients of ../shared/data/pet-sts):

    medfoundry finetune ../shared/data/pet-sts RUN --image-glob '*/PET_image.nii.gz' \\
        --cases <10 training patients> --val-cases <3 validation patients>          # every other option default
    medfoundry segment --manifest zero.csv --out ZERO                               # zero-shot, one 3D box per row
    medfoundry segment --manifest adapted.csv --out ADAPTED --adapter RUN/best.pt

Each test patient is segmented from its reference's 3D bounding box (inclusive voxel indices, what a user draws)
and from the loose box of the bench; 3D DSC against the reference, per patient, mean +- sd, wins / losses
(> 0.05) against zero-shot. Writes results.json and results.md in --out.

    python bench/adapt_cli.py                     # ~15 min on 2 cores
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _bench_module():
    """bench/adapt_pet.py, for its split and wins / losses (one definition of the protocol)."""
    spec = importlib.util.spec_from_file_location("adapt_pet", ROOT / "bench" / "adapt_pet.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["adapt_pet"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def medfoundry(*args: str) -> float:
    """Run ``medfoundry ARGS`` (this interpreter's package), fail loudly; return the wall time."""
    cmd = [sys.executable, "-c", "import sys; from medfoundry.cli.main import main; sys.exit(main())", *args]
    print("$ medfoundry " + " ".join(args), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def write_manifest(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "box", "out"])
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "adapt_cli")
    ap.add_argument("--train-patients", type=int, default=10)
    ap.add_argument("--method", default="decoder")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    args = ap.parse_args(argv)

    bench = _bench_module()
    from medfoundry.evaluation.overlap import dice
    from medfoundry.inference.volume_eval import loose_box, reference_box
    from medfoundry.io import read_mask

    if args.out.exists():
        if not args.overwrite:
            print(f"error: {args.out}: exists (use --overwrite)", file=sys.stderr)
            return 2
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    pool, val, test = bench.split(0, 7, 3)
    train = pool[: args.train_patients]
    print(f"train {train}\nvalidation {val}\ntest {test}", flush=True)

    run = args.out / "run"
    t_train = medfoundry("finetune", str(bench.DATA), str(run), "--image-glob", bench.GLOB, "--method", args.method,
                         "--cases", *train, "--val-cases", *val)  # fmt: skip
    refs, rows = {}, {"zero": [], "adapted": []}
    for case in test:
        image = bench.DATA / case / "PET_image.nii.gz"
        ref = read_mask(bench.DATA / case / "PET_mask.nii.gz").array > 0
        refs[case] = ref
        for kind, box in (("exact", reference_box(ref)), ("loose", loose_box(ref, case))):
            for arm in rows:
                # out relative to the manifest's folder (args.out): manifests keep their outputs inside
                rows[arm].append({"image": str(image), "box": " ".join(str(int(v)) for v in box),
                                  "out": f"{arm}/{case}_{kind}.nii.gz"})  # fmt: skip
    times = {}
    for arm, arm_rows in rows.items():
        manifest = args.out / f"{arm}.csv"
        write_manifest(manifest, arm_rows)
        extra = ["--adapter", str(run / "best.pt")] if arm == "adapted" else []
        times[arm] = medfoundry("segment", "--manifest", str(manifest), "--out", str(args.out / arm), *extra)

    scores = {arm: {kind: [] for kind in ("exact", "loose")} for arm in rows}
    for case in test:
        for arm in rows:
            for kind in ("exact", "loose"):
                pred = read_mask(args.out / arm / f"{case}_{kind}.nii.gz").array > 0
                scores[arm][kind].append(dice(pred, refs[case]))
    history = json.loads((run / "history.json").read_text())
    results = {"train": train, "validation": val, "test": test, "method": args.method, "train_s": t_train,
               "segment_s": times, "scores": scores, "history": history}  # fmt: skip
    (args.out / "results.json").write_text(json.dumps(results, indent=1))

    lines = [f"`medfoundry finetune` defaults, method {args.method}, {len(train)} training patients; train "
             f"{t_train:.0f} s, segmenting 14 boxes: zero-shot {times['zero']:.0f} s, adapted {times['adapted']:.0f} s",
             "", "| patient | zero-shot exact | adapted exact | zero-shot loose | adapted loose |",
             "|---|---|---|---|---|"]  # fmt: skip
    for i, case in enumerate(test):
        s = [scores[a][k][i] for k in ("exact", "loose") for a in ("zero", "adapted")]
        lines.append(f"| {case} | {s[0]:.3f} | {s[1]:.3f} | {s[2]:.3f} | {s[3]:.3f} |")
    summary = []
    for kind in ("exact", "loose"):
        z, a = np.asarray(scores["zero"][kind]), np.asarray(scores["adapted"][kind])
        w, losses = bench.wins_losses(list(a), list(z))
        summary.append(f"{z.mean():.3f} +- {z.std():.3f} -> {a.mean():.3f} +- {a.std():.3f} "
                       f"({a.mean() - z.mean():+.3f}, {w} wins / {losses} losses)")  # fmt: skip
    lines += ["", f"mean 3D DSC, exact 3D box: {summary[0]}", f"mean 3D DSC, loose 3D box: {summary[1]}"]
    text = "\n".join(lines) + "\n"
    (args.out / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
