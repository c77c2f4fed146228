"""Few-label adaptation on PET (../shared/data/pet-sts), scored as users segment: one 3D box per test patient
(the reference's bounding box, and a loose variant), middle slice first, then propagation (the path of
``medfoundry segment --box X0 Y0 Z0 X1 Y1 Z1``); 3D DSC / NSD per patient, mean +- sd, per-patient wins / losses
against zero-shot (loss: worse by > 0.05), and the 2D exact-box DSC (each foreground slice with its own box) as a
second column. Every model is scored from fp32 embeddings (eager PyTorch encoder).

Patients are split once (seeded shuffle of the 30): TEST (7) and VALIDATION (3) are fixed, training patients are
the first 5 / 10 / 20 of the remaining 20. Training uses every foreground slice, prompts drawn like 3D inference
gives them, 3D validation on the validation patients after every epoch (best.pt = best validation score, early
stopping); the test patients are used for nothing but the final scores.

Default (<= 45 min on a 2-core CPU): the 10-patient point for every method, no synthesis:
    python bench/adapt_pet.py
Label-efficiency points for the frozen-encoder methods, with and without synthesis:
    python bench/adapt_pet.py --train-patients 5 20 --methods decoder classprompt --synthesis-methods decoder
Full grid (several hours on 2 cores):
    python bench/adapt_pet.py --train-patients 5 10 20 --synthesis-methods decoder lora dbsam classprompt
LoRA vs full fine-tuning step time and memory (each in a fresh subprocess): add --memory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDFOUNDRY_SHARED_DATA", ROOT.parent / "shared" / "data")) / "pet-sts"
GLOB = "*/PET_image.nii.gz"
# (max epochs, steps per epoch, patience) per method at batch 4. The frozen-encoder methods get the defaults of
# `medfoundry finetune` (their steps cost decoder passes once the embeddings are cached); LoRA and DB-SAM train
# through the encoder (~12 s per step of 4 on 2 cores) and re-embed the validation slices every epoch, so on a
# 2-core CPU they get 3 epochs of 8 steps.
METHOD_BUDGET = {"decoder": (20, 25, 3), "classprompt": (20, 25, 3), "lora": (3, 8, 2), "dbsam": (3, 8, 2)}


class PeakRSS:
    """Peak resident memory above the level at start, sampled every 5 ms from /proc/self/statm."""

    def __enter__(self):
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.start = self.peak = self._rss()
        self.running = True
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _rss(self) -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self.page

    def _watch(self):
        while self.running:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()

    @property
    def mib(self) -> float:
        return (self.peak - self.start) / 2**20


def measure(kind: str, batch: int, steps: int) -> None:
    """Child process: step time and peak memory of LoRA or full fine-tuning on the real model."""
    from medfoundry.data.slices2d import load_samples
    from medfoundry.modeling.adapters.base import build_adapted
    from medfoundry.modeling.lite_medsam import build_lite_medsam
    from medfoundry.training.finetune.augment import Augment, model_images, prepare_targets
    from medfoundry.training.finetune.losses import make_loss

    samples = load_samples(DATA, image_glob=GLOB, cases=["STS_001"], every=5, progress=False)[:batch]
    model = build_adapted(build_lite_medsam(), "lora" if kind == "lora" else "decoder")
    if kind == "full":
        for p in model.parameters():
            p.requires_grad_(True)
    model.train()
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-5)
    loss_fn = make_loss("dice+focal")
    rng = np.random.default_rng(0)
    images = model_images(samples, [0] * len(samples))
    prompts = prepare_targets(samples, [0] * len(samples), rng, Augment.none(), False)
    times = []
    with PeakRSS() as mem:
        for _ in range(steps):
            t0 = time.perf_counter()
            out = model(images, prompts["boxes"])
            loss = loss_fn(out["logits"], prompts["targets"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
    trainable, total = model.count_parameters()
    print(json.dumps({"kind": kind, "step_s": float(np.median(times)), "peak_mib": mem.mib,
                      "trainable": trainable, "total": total}))  # fmt: skip


def split(seed: int, n_test: int, n_val: int) -> tuple[list[str], list[str], list[str]]:
    """(training pool, validation, test) patients: a seeded shuffle of every PET patient."""
    cases = sorted(p.name for p in DATA.iterdir() if (p / "PET_image.nii.gz").is_file())
    order = [cases[i] for i in np.random.default_rng(seed).permutation(len(cases))]
    return order[n_test + n_val :], sorted(order[n_test : n_test + n_val]), sorted(order[:n_test])


def wins_losses(scores: list[float], zero: list[float], margin: float = 0.05) -> tuple[int, int]:
    """Patients better than zero-shot by > ``margin`` (wins) and worse by > ``margin`` (losses)."""
    diff = np.asarray(scores) - np.asarray(zero)
    return int((diff > margin).sum()), int((diff < -margin).sum())


def label_efficiency_plot(rows: list[dict], zero: dict, path: Path) -> None:
    """Test 3D DSC (exact 3D box) against training patients, one line per method (+- sd band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.axhline(zero["dsc"], color="k", ls="--", label=f"zero-shot {zero['dsc']:.3f}")
    for method, syn in sorted({(r["method"], r["synthesis"]) for r in rows}):
        arm = [r for r in rows if r["method"] == method and r["synthesis"] == syn]
        n, m, sd = (np.array(v) for v in zip(*sorted((r["n_train"], r["dsc"], r["dsc_sd"]) for r in arm), strict=True))
        ax.errorbar(n + (0.3 if syn == "yes" else 0), m, yerr=sd, marker="o", capsize=3,
                    ls="--" if syn == "yes" else "-", label=method + (" + synthesis" if syn == "yes" else ""))
    ax.set(xlabel="training patients", ylabel="test 3D DSC (exact 3D box), mean +- sd", ylim=(0, 1),
           title="PET label efficiency (3D box + propagation)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-patients", type=int, nargs="+", default=[10], help="training-set sizes (<= 20)")
    ap.add_argument("--methods", nargs="+", default=["decoder", "classprompt", "lora", "dbsam"])
    ap.add_argument("--synthesis-methods", nargs="*", default=[],
                    help="methods also trained with synthetic slices added (none: skip the synthesis arm)")
    ap.add_argument("--synthetic", type=int, default=100, help="synthetic slices for the synthesis arm")
    ap.add_argument("--epochs", type=int, default=None, help="max epochs (default: per method, METHOD_BUDGET)")
    ap.add_argument("--steps-per-epoch", type=int, default=None, help="steps per epoch (default: per method)")
    ap.add_argument("--patience", type=int, default=None, help="early stopping patience (default: per method)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--flip-prob", type=float, default=0.5, help="flip probability per axis in training")
    ap.add_argument("--test-patients", type=int, default=7)
    ap.add_argument("--val-patients", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0, help="patient split and training seed")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "adapt_pet", help="results folder")
    ap.add_argument("--memory", action="store_true", help="also measure LoRA vs full fine-tuning (subprocesses)")
    ap.add_argument("--memory-steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--loss", choices=["dice+focal", "bce+dice"], default="dice+focal", help="training loss")
    ap.add_argument("--measure", choices=["lora", "full"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.measure:
        measure(args.measure, args.batch_size, args.memory_steps)
        return

    from medfoundry.data.slices2d import load_samples, read_pair
    from medfoundry.data.synthesis import synthesize_dataset
    from medfoundry.inference.encoder_backends import OnnxEncoder
    from medfoundry.inference.volume_eval import evaluate_volumes, fp32_encoder, load_volumes
    from medfoundry.modeling.adapters.base import build_adapted
    from medfoundry.modeling.adapters.io import base_fingerprint, load_adapted_model
    from medfoundry.modeling.lite_medsam import build_lite_medsam
    from medfoundry.training.finetune import FinetuneConfig, finetune
    from medfoundry.training.finetune.engine import MemoryEmbeddingCache

    # ONNX exports of every validated state go to a bench folder, not the user's cache
    os.environ.setdefault("MEDFOUNDRY_CACHE", str(args.out / "cache"))
    pool, val_cases, test_cases = split(args.seed, args.test_patients, args.val_patients)
    if max(args.train_patients) > len(pool):
        sys.exit(f"at most {len(pool)} training patients (30 - test - validation)")
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"test: {test_cases}\nvalidation: {val_cases}\ntraining pool (first n used): {pool}")
    t0 = time.perf_counter()
    val = load_volumes(DATA, image_glob=GLOB, cases=val_cases)
    test = load_volumes(DATA, image_glob=GLOB, cases=test_cases)
    base = build_lite_medsam()
    base_memo = fp32_encoder(base, "onnx")  # fp32 base embeddings (ONNX Runtime, as `segment` runs by default)
    zero = evaluate_volumes(base, test, slices2d=True, memo=base_memo, progress=True)
    print(f"zero-shot: 3D DSC {zero['dsc']:.4f} (loose {zero['dsc_loose']:.4f}), 2D {zero['dsc2d']:.4f} "
          f"({time.perf_counter() - t0:.0f} s)")
    zero_cases = {c["case"]: c for c in zero["per_case"]}
    rows: list[dict] = []
    val_memo = fp32_encoder(base, "onnx")
    # base-encoder embeddings of the training slices (float16, per flip), shared by the frozen-encoder runs
    shared_cache = MemoryEmbeddingCache(
        build_adapted(build_lite_medsam(), "decoder"), encoder=OnnxEncoder(base.image_encoder)
    )
    for n_train in args.train_patients:
        train_cases = pool[:n_train]
        train = load_samples(DATA, image_glob=GLOB, cases=train_cases, every=1, progress=False)
        arms = [("no", [])]
        if args.synthesis_methods:
            pairs = [(*read_pair(DATA / c / "PET_image.nii.gz", DATA / c / "PET_mask.nii.gz"), c) for c in train_cases]
            syn_dir = args.out / f"syn-{n_train}"
            if not (syn_dir / "dataset.json").is_file():
                synthesize_dataset(pairs, syn_dir, args.synthetic, modality="PET", progress=False)
            arms.append(("yes", load_samples(syn_dir, every=1, progress=False)))
        print(f"\n{n_train} training patients: {len(train)} slices")
        for method in args.methods:
            for syn_name, extra in arms:
                if syn_name == "yes" and method not in args.synthesis_methods:
                    continue
                epochs, steps, patience = METHOD_BUDGET[method]
                cfg = FinetuneConfig(epochs=args.epochs or epochs, steps_per_epoch=args.steps_per_epoch or steps,
                                     batch_size=args.batch_size, loss=args.loss,
                                     patience=patience if args.patience is None else args.patience,
                                     seed=args.seed, val_backend="onnx",
                                     flip_prob=args.flip_prob)  # fmt: skip
                fresh = build_lite_medsam()
                fingerprint = base_fingerprint(fresh)  # before wrapping: class prompt replaces the mask decoder
                model = build_adapted(fresh, method)
                frozen = not model.encoder_trainable
                run_dir = args.out / f"{method}-n{n_train}-syn{syn_name}"
                shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run each time
                t1 = time.perf_counter()
                with PeakRSS() as mem:
                    result = finetune(model, train + extra, [], run_dir, config=cfg, progress=False,
                                      base_fingerprint=fingerprint, val_volumes=val,
                                      cache=shared_cache if frozen else None, memo=val_memo if frozen else None)
                seconds = time.perf_counter() - t1
                best = load_adapted_model(result.best)
                memo = base_memo if frozen else fp32_encoder(best, "onnx")
                scores = evaluate_volumes(best, test, slices2d=True, memo=memo, progress=True)
                per = {c["case"]: c for c in scores["per_case"]}
                row = {"method": method, "synthesis": syn_name, "n_train": n_train, "best_epoch": result.best_epoch,
                       "epochs_run": len([h for h in result.history if h["epoch"] >= 0]), "train_s": seconds,
                       "s_per_step": result.seconds_per_step, "peak_mib": mem.mib, "trainable": result.trainable,
                       "val_before": result.history[0].get("val3d_dsc"),
                       "val_best": max(h["val3d_dsc"] for h in result.history if h.get("val3d_dsc") is not None),
                       "per_case": scores["per_case"]}  # fmt: skip
                for key in ("dsc", "dsc_loose", "nsd", "nsd_loose", "dsc2d"):
                    vals = [per[c][key] for c in test_cases]
                    row[key], row[key + "_sd"] = float(np.mean(vals)), float(np.std(vals))
                    if key in ("dsc", "dsc_loose"):
                        row[key + "_wl"] = wins_losses(vals, [zero_cases[c][key] for c in test_cases])
                rows.append(row)
                print(f"{method} n={n_train} synth={syn_name}: 3D DSC {row['dsc']:.4f} +- {row['dsc_sd']:.3f} "
                      f"W/L {row['dsc_wl']}, loose {row['dsc_loose']:.4f} W/L {row['dsc_loose_wl']}, 2D "
                      f"{row['dsc2d']:.4f}; best epoch {result.best_epoch + 1} of {row['epochs_run']}, "
                      f"train {seconds:.0f} s ({time.perf_counter() - t0:.0f} s in all)")  # fmt: skip
                (args.out / "results.json").write_text(json.dumps({"zero": zero, "rows": rows, "test": test_cases,
                                                                   "val": val_cases, "pool": pool}, indent=1))
    print(f"\ntest patients {test_cases}; validation {val_cases}; 3D box + propagation, fp32 embeddings")
    print("\n| method | train patients | synthesis | 3D DSC exact box | W / L | 3D DSC loose box | W / L | 3D NSD "
          "| 2D DSC exact box | best epoch / run | train s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    sd = lambda r, k: f"{r[k]:.3f} +- {r[k + '_sd']:.3f}"  # noqa: E731
    zsd = {k: float(np.std([c[k] for c in zero["per_case"]])) for k in ("dsc", "dsc_loose", "nsd", "dsc2d")}
    print(f"| zero-shot | - | - | {zero['dsc']:.3f} +- {zsd['dsc']:.3f} | - | {zero['dsc_loose']:.3f} +- "
          f"{zsd['dsc_loose']:.3f} | - | {zero['nsd']:.3f} | {zero['dsc2d']:.3f} | - | - |")  # fmt: skip
    for r in rows:
        print(f"| {r['method']} | {r['n_train']} | {r['synthesis']} | {sd(r, 'dsc')} | {r['dsc_wl'][0]} / "
              f"{r['dsc_wl'][1]} | {sd(r, 'dsc_loose')} | {r['dsc_loose_wl'][0]} / {r['dsc_loose_wl'][1]} | "
              f"{r['nsd']:.3f} | {r['dsc2d']:.3f} | {r['best_epoch'] + 1} / {r['epochs_run']} | {r['train_s']:.0f} |")
    print("\nper patient, 3D DSC exact box:")
    names = [f"{r['method']} n{r['n_train']}{' syn' if r['synthesis'] == 'yes' else ''}" for r in rows]
    print("| patient | zero-shot | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(rows))
    for c in test_cases:
        cells = [f"{next(p for p in r['per_case'] if p['case'] == c)['dsc']:.3f}" for r in rows]
        print(f"| {c} | {zero_cases[c]['dsc']:.3f} | " + " | ".join(cells) + " |")
    label_efficiency_plot(rows, zero, args.out / "label_efficiency.png")
    print(f"\nplot: {args.out / 'label_efficiency.png'}; results: {args.out / 'results.json'}")
    if args.memory:
        res = {}
        for kind in ("full", "lora"):
            cmd = [sys.executable, __file__, "--measure", kind, "--batch-size", "2",
                   "--memory-steps", str(args.memory_steps), "--threads", str(args.threads)]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            res[kind] = json.loads(out)
        full, lora = res["full"], res["lora"]
        print(f"\nLoRA vs full fine-tuning (batch 2, median of {args.memory_steps} steps): step time "
              f"{lora['step_s']:.2f} s vs {full['step_s']:.2f} s = {lora['step_s'] / full['step_s']:.2f}x; peak memory "
              f"+{lora['peak_mib']:.0f} vs +{full['peak_mib']:.0f} MiB = "
              f"{lora['peak_mib'] / max(full['peak_mib'], 1e-9):.2f}x")  # fmt: skip
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
