"""Few-label adaptation on PET (../shared/data/pet-sts): zero-shot LiteMedSAM vs each method, with and without
exemplar synthesis; DSC / NSD on held-out patients, trainable parameters, train time, peak memory; plus LoRA vs
full fine-tuning step time and peak memory (each measured in a fresh subprocess).

Test slices are prompted with their exact ground-truth box (DSC, NSD) and with a loose box, each side moved out
by a seeded 0-20 px of MedSAM's 1024-pixel frame (DSC loose), like a hand-drawn box.

Default (aimed at <= 30 min on a 2-core CPU):
    python bench/adapt_pet.py
Longer setting (more steps, denser test slices):
    python bench/adapt_pet.py --epochs 6 --steps-per-epoch 20 --test-every 5 --synthetic 100
Shortened setting used when the machine is loaded:
    python bench/adapt_pet.py --methods decoder classprompt --epochs 2 --steps-per-epoch 5 --test-every 40 \
        --synthetic 10 --skip-memory
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDFOUNDRY_SHARED_DATA", ROOT.parent / "shared" / "data")) / "pet-sts"
GLOB = "*/PET_image.nii.gz"
LOOSE = 20.0  # test boxes: sides moved out by 0..20 px of MedSAM's 1024-pixel frame


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


def split(n_train: int):
    cases = sorted(p.name for p in DATA.iterdir() if (p / "PET_image.nii.gz").is_file())
    if n_train < 1 or n_train >= len(cases):
        sys.exit(f"{DATA}: need 1 <= --train-patients < {len(cases)} (the rest are the test patients)")
    return cases[:n_train], cases[n_train:]


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-patients", type=int, default=5, help="exemplar patients (rest: test)")
    ap.add_argument("--methods", nargs="+", default=["decoder", "lora", "dbsam", "classprompt"])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--steps-per-epoch", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--every", type=int, default=5, help="training: every k-th slice with foreground")
    ap.add_argument("--test-every", type=int, default=20, help="test: every k-th slice with foreground")
    ap.add_argument("--synthetic", type=int, default=24, help="synthetic images (0: skip the synthesis arm)")
    ap.add_argument("--jitter", type=float, default=20.0, help="training box jitter, px on MedSAM's 1024 frame")
    ap.add_argument("--point-prob", type=float, default=0.5, help="share of training steps with a random point")
    ap.add_argument("--skip-memory", action="store_true", help="skip the LoRA vs full fine-tuning measurement")
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
    from medfoundry.modeling.adapters.base import build_adapted
    from medfoundry.modeling.adapters.io import base_fingerprint
    from medfoundry.modeling.lite_medsam import build_lite_medsam
    from medfoundry.training.finetune import FinetuneConfig, evaluate_samples, finetune
    from medfoundry.training.finetune.engine import MemoryEmbeddingCache

    train_cases, test_cases = split(args.train_patients)
    train = load_samples(DATA, image_glob=GLOB, cases=train_cases, every=args.every, progress=False)
    test = load_samples(DATA, image_glob=GLOB, cases=test_cases, every=args.test_every, progress=False)
    print(f"train: {len(train)} slices from {train_cases}; test: {len(test)} slices from {len(test_cases)} patients")
    rows = []
    t0 = time.perf_counter()
    shared = MemoryEmbeddingCache(build_adapted(build_lite_medsam(), "decoder"))  # base-encoder test embeddings
    zero = evaluate_samples(build_lite_medsam(), test, cache=shared, progress=True, loose_jitter=LOOSE)
    rows.append(("zero-shot", "-", zero, 0, 0.0, 0.0, 0.0))
    print(f"zero-shot: DSC {zero['dsc']:.4f} NSD {zero['nsd']:.4f} ({time.perf_counter() - t0:.0f} s)")
    work = Path(tempfile.mkdtemp(prefix="adapt_pet_"))
    arms = [("no", [])]
    if args.synthetic > 0:
        pairs = []
        for case in train_cases:
            image, mask = read_pair(DATA / case / "PET_image.nii.gz", DATA / case / "PET_mask.nii.gz")
            pairs.append((image, mask, case))
        synthesize_dataset(pairs, work / "syn", args.synthetic, modality="PET", progress=False)
        arms.append(("yes", load_samples(work / "syn", every=1, progress=False)))
    for method in args.methods:
        for syn_name, extra in arms:
            base = build_lite_medsam()
            fp = base_fingerprint(base)
            model = build_adapted(base, method)
            cfg = FinetuneConfig(epochs=args.epochs, batch_size=args.batch_size, steps_per_epoch=args.steps_per_epoch,
                                 loss=args.loss, jitter=args.jitter, point_prob=args.point_prob)  # fmt: skip
            cache = shared if not model.encoder_trainable else None  # frozen base encoder: embeddings shared
            t1 = time.perf_counter()
            with PeakRSS() as mem:
                result = finetune(model, train + extra, [], work / f"{method}-{syn_name}", config=cfg,
                                  base_fingerprint=fp, progress=False, cache=cache)  # fmt: skip
            seconds = time.perf_counter() - t1
            scores = evaluate_samples(model.for_inference(), test, cache=cache, progress=True, loose_jitter=LOOSE)
            rows.append((method, syn_name, scores, result.trainable, seconds, result.seconds_per_step, mem.mib))
            print(f"{method} synth={syn_name}: DSC {scores['dsc']:.4f} NSD {scores['nsd']:.4f} loose-box DSC "
                  f"{scores['dsc_loose']:.4f} train {seconds:.0f} s peak +{mem.mib:.0f} MiB")  # fmt: skip
    print(
        f"\ntrain: {len(train)} slices ({len(train_cases)} patients); test: {len(test)} slices "
        f"({len(test_cases)} patients); {args.epochs} x {args.steps_per_epoch} steps of batch {args.batch_size}"
    )
    print("\n| method | synthesis | DSC | NSD | DSC loose box | trainable params | train s | s/step | peak MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for method, syn_name, s, n, sec, step, mib in rows:
        print(f"| {method} | {syn_name} | {100 * s['dsc']:.1f} | {100 * s['nsd']:.1f} | {100 * s['dsc_loose']:.1f} "
              f"| {n:,} | {sec:.0f} | {step:.2f} | {mib:.0f} |")  # fmt: skip
    if not args.skip_memory:
        res = {}
        for kind in ("full", "lora"):
            cmd = [sys.executable, __file__, "--measure", kind, "--batch-size", str(args.batch_size),
                   "--memory-steps", str(args.memory_steps), "--threads", str(args.threads)]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            res[kind] = json.loads(out)
        full, lora = res["full"], res["lora"]
        print(f"\nLoRA vs full fine-tuning (batch {args.batch_size}, median of {args.memory_steps} steps): "
              f"step time {lora['step_s']:.2f} s vs {full['step_s']:.2f} s = {lora['step_s'] / full['step_s']:.2f}x; "
              f"peak memory +{lora['peak_mib']:.0f} vs +{full['peak_mib']:.0f} MiB = "
              f"{lora['peak_mib'] / max(full['peak_mib'], 1e-9):.2f}x; trainable {lora['trainable']:,} vs "
              f"{full['trainable']:,} ({100 * lora['trainable'] / full['total']:.2f}%)")  # fmt: skip
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
