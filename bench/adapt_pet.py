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
Runs into the same --out folder with the same split add up: a later run keeps the earlier rows (a point run
again replaces its row; --only-missing skips the points already there), so the grid can be run piece by piece
and the table and plot cover every point.
LoRA vs full fine-tuning step time and memory (each in a fresh subprocess): add --memory.
On a Ray cluster (each training-set size x method, with its synthesis arm, a Ray task of --threads CPUs that runs
this bench alone in OUT/points/n<N>-<method>; OUT on a file system every node sees):
    python bench/adapt_pet.py --train-patients 5 10 20 --synthesis-methods decoder lora dbsam classprompt \
        --ray head-node:6379 --threads 8 --only-missing

Multimodal arm (issue 15, item 4; off by default, instead of the PET grid): the decoder and the class prompt
trained on the PET of the first n training patients plus the CT and MR T1 scans of the training-pool patients
that have them (STS_002 008 010 with the seed-0 split; their PET is not among the first 10), 3D validation on the
validation patients' scans (PET only with seed 0: they have no CT / MR); scored per modality on the PET test
patients, the test patients' CT and MR (STS_003) and unseen scans of other tumour types (lung1 CT, brain1 and
breast1 MR, BraTS FLAIR), and the modality the class prompt's head picks on unseen scans (those, the DeepLesion
CT stacks and the TotalSegmentator CT / MR); written to results.json under "multimodal":
    python bench/adapt_pet.py --multimodal --methods decoder classprompt
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import ray_grid  # noqa: E402 - bench/ is not a package

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDFOUNDRY_SHARED_DATA", ROOT.parent / "shared" / "data")) / "pet-sts"
GLOB = "*/PET_image.nii.gz"
# (max epochs, steps per epoch, patience, decoder warm-up epochs) per method at batch 4. The frozen-encoder methods
# get the defaults `medfoundry finetune` had before issue 30 (10-step learning-rate warm-up, patience from the
# start; kept so the documented table stays comparable and the default run within 45 min; bench/adapt_cli.py
# measures the current CLI defaults); their steps cost decoder passes once the embeddings are cached. LoRA
# and DB-SAM train through the encoder (~12 s per step of 4 on 2 cores) and re-embed the validation slices every
# epoch, so on a 2-core CPU they get 12 warm-up epochs of 8 decoder-side steps on cached embeddings (96 steps, as
# cheap as the decoder's), then 1 epoch of 8 steps through the encoder (the 2026-12-06 run with 2 such epochs
# picked the first one or a warm-up state on validation; the second did not fit the 45-minute budget).
METHOD_BUDGET = {"decoder": (20, 25, 3, 0), "classprompt": (20, 25, 3, 0), "lora": (13, 8, 2, 12),
                 "dbsam": (13, 8, 2, 12)}  # fmt: skip
# multimodal arm: the pet-sts scans besides PET (file prefix -> modality), and the unseen scans it is scored on
OTHER_SCANS = {"CT": "CT", "MR_T1": "MR"}
SHARED = DATA.parent
UNSEEN = [  # (name, image, mask, modality, what): other tumour types, segmented from their reference's 3D box
    ("lung1", "ct-mr-tumour/lung1_image.nrrd", "ct-mr-tumour/lung1_label.nrrd", "CT", "lung tumour"),
    ("brain1", "ct-mr-tumour/brain1_image.nrrd", "ct-mr-tumour/brain1_label.nrrd", "MR", "brain tumour"),
    ("breast1", "ct-mr-tumour/breast1_image.nrrd", "ct-mr-tumour/breast1_label.nrrd", "MR", "breast lesion"),
    ("BraTS FLAIR", "mr-brats/BraTS2021_01646_flair.nii.gz", "mr-brats/BraTS2021_01646_label_edema.nii.gz", "MR",
     "brain oedema (BraTS 2021)"),
]  # fmt: skip
HEAD_ONLY = [  # (name, image, mask, modality, what): modality-head check only
    *[(f"DeepLesion {p.stem[10:]}", f"ct-lesion-npz/{p.name}", f"ct-lesion-npz/{p.name}", "CT", "DeepLesion CT stack")
      for p in sorted((SHARED / "ct-lesion-npz").glob("*.npz"))],
    ("TotalSeg CT", "totalsegmentator/example_ct_sm.nii.gz", "totalsegmentator/example_seg.nii.gz", "CT",
     "TotalSegmentator CT"),
    ("TotalSeg MR", "totalsegmentator/example_mr_sm.nii.gz", "totalsegmentator/example_seg_mr.nii.gz", "MR",
     "TotalSegmentator MR"),
]  # fmt: skip


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
    from medfoundry.modeling.lite_medsam import build_lite_medsam
    from medfoundry.modeling.registry import build_adapter
    from medfoundry.training.finetune.augment import Augment, model_images, prepare_targets
    from medfoundry.training.finetune.losses import make_loss

    samples = load_samples(DATA, image_glob=GLOB, cases=["STS_001"], every=5, progress=False)[:batch]
    model = build_adapter(build_lite_medsam(), "lora" if kind == "lora" else "decoder")
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


def save_results(path: Path, **parts) -> None:
    """Write ``parts`` into results.json, keeping the other keys an earlier run wrote (the PET grid and the
    multimodal arm share the file)."""
    results = json.loads(path.read_text()) if path.is_file() else {}
    results.update(parts)
    path.write_text(json.dumps(results, indent=1))


def train_method(method: str, train: list, run_dir: Path, args, val: list, cache, memo) -> tuple:
    """A fresh ``method`` adapter fine-tuned on ``train`` with 3D validation on ``val`` (``cache`` / ``memo``: the
    frozen base encoder's embeddings); returns the loaded best model, whether its encoder is frozen, and the
    training record (best epoch, epochs, seconds, s / step, peak MiB, trainable parameters, validation scores)."""
    from medfoundry.modeling.adapters.io import base_fingerprint, load_adapted_model
    from medfoundry.modeling.lite_medsam import build_lite_medsam
    from medfoundry.modeling.registry import build_adapter
    from medfoundry.training.finetune import FinetuneConfig, finetune

    epochs, steps, patience, warmup = METHOD_BUDGET[method]
    cfg = FinetuneConfig(epochs=args.epochs or epochs, steps_per_epoch=args.steps_per_epoch or steps,
                         batch_size=args.batch_size, loss=args.loss,
                         patience=patience if args.patience is None else args.patience,
                         decoder_warmup_epochs=warmup if args.decoder_warmup is None else args.decoder_warmup,
                         seed=args.seed, val_backend="onnx", flip_prob=args.flip_prob)  # fmt: skip
    fresh = build_lite_medsam()
    fingerprint = base_fingerprint(fresh)  # before wrapping: class prompt replaces the mask decoder
    model = build_adapter(fresh, method)
    frozen = not model.encoder_trainable
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run each time
    t1 = time.perf_counter()
    with PeakRSS() as mem:
        result = finetune(model, train, [], run_dir, config=cfg, progress=False, base_fingerprint=fingerprint,
                          val_volumes=val, cache=cache, memo=memo)  # fmt: skip
    record = {"best_epoch": result.best_epoch, "epochs_run": len([h for h in result.history if h["epoch"] >= 0]),
              "train_s": time.perf_counter() - t1, "s_per_step": result.seconds_per_step, "peak_mib": mem.mib,
              "trainable": result.trainable, "val_before": result.history[0].get("val3d_dsc"),
              "val_best": max(h["val3d_dsc"] for h in result.history if h.get("val3d_dsc") is not None)}  # fmt: skip
    return load_adapted_model(result.best), frozen, record


def grid_key(row: dict) -> tuple:
    """A grid point: (training patients, method, synthesis)."""
    return row["n_train"], row["method"], row["synthesis"]


def earlier_rows(path: Path, pool: list[str], val: list[str], test: list[str]) -> list[dict]:
    """The PET-grid rows an earlier run wrote to ``path`` with the same split (so runs of different grid points
    into one folder add up to one table and one plot; a point run again replaces its row)."""
    if not path.is_file():
        return []
    done = json.loads(path.read_text())
    if (done.get("pool"), done.get("val"), done.get("test")) != (pool, val, test):
        return []
    rows = done.get("rows", [])
    if rows:
        kept = [f"{m} n{n}{' syn' if s == 'yes' else ''}" for n, m, s in sorted(map(grid_key, rows))]
        print(f"kept from the earlier run in {path.parent}: {', '.join(kept)}")
    return rows


def same_encoder(model: torch.nn.Module, base: torch.nn.Module) -> bool:
    """Whether ``model``'s image encoder holds exactly ``base``'s tensors (names, shapes, values)."""
    a, b = model.image_encoder.state_dict(), base.image_encoder.state_dict()
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)


def label_efficiency_plot(rows: list[dict], zero: dict, path: Path) -> None:
    """Test 3D DSC (exact 3D box) against training patients, one line per method (+- sd band)."""
    from medfoundry.io.figures import pyplot_agg, save_figure

    plt = pyplot_agg()

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.axhline(zero["dsc"], color="k", ls="--", label=f"zero-shot {zero['dsc']:.3f}")
    for method, syn in sorted({(r["method"], r["synthesis"]) for r in rows}):
        arm = [r for r in rows if r["method"] == method and r["synthesis"] == syn]
        n, m, sd = (np.array(v) for v in zip(*sorted((r["n_train"], r["dsc"], r["dsc_sd"]) for r in arm), strict=True))
        ax.errorbar(
            n + (0.3 if syn == "yes" else 0),
            m,
            yerr=sd,
            marker="o",
            capsize=3,
            ls="--" if syn == "yes" else "-",
            label=method + (" + synthesis" if syn == "yes" else ""),
        )
    ax.set(
        xlabel="training patients",
        ylabel="test 3D DSC (exact 3D box), mean +- sd",
        ylim=(0, 1),
        title="PET label efficiency (3D box + propagation)",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path, overwrite=True, dpi=110)


@dataclass
class Setup:
    """What every arm shares: the split, the validation and test PET volumes, zero-shot on the test PET, the
    base model with its fp32 test / validation embeddings, and the training-slice embedding cache."""

    pool: list[str]
    val_cases: list[str]
    test_cases: list[str]
    val: list
    test: list
    zero: dict
    base: torch.nn.Module
    base_memo: object
    val_memo: object
    cache: object
    t0: float


def pet_grid(args, setup: Setup) -> None:
    """The PET-only label-efficiency grid: every method (and synthesis arm) at every training-set size."""
    from medfoundry.data.slices2d import load_samples, read_pair
    from medfoundry.data.synthesis import synthesize_dataset
    from medfoundry.inference.volume_eval import evaluate_volumes, fp32_encoder

    pool, val_cases, test_cases, val, test = setup.pool, setup.val_cases, setup.test_cases, setup.val, setup.test
    zero, base_memo, val_memo, shared_cache, t0 = setup.zero, setup.base_memo, setup.val_memo, setup.cache, setup.t0
    zero_cases = {c["case"]: c for c in zero["per_case"]}
    rows: list[dict] = earlier_rows(args.out / "results.json", pool, val_cases, test_cases)
    if args.ray:  # the points as Ray tasks; the loop below then finds them all and prints the tables
        rows = ray_points(args, rows)
        save_results(args.out / "results.json", zero=zero, rows=rows, test=test_cases, val=val_cases, pool=pool)
        args.only_missing = True
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
                if args.only_missing and (n_train, method, syn_name) in {grid_key(r) for r in rows}:
                    print(f"{method} n={n_train} synth={syn_name}: kept from the earlier run (--only-missing)")
                    continue
                run_dir = args.out / f"{method}-n{n_train}-syn{syn_name}"
                best, frozen, record = train_method(method, train + extra, run_dir, args, val, shared_cache,
                                                    val_memo)  # fmt: skip
                seconds = record["train_s"]
                # the base's test embeddings serve every model whose encoder is the base's (frozen methods, and a
                # LoRA whose best state is from its warm-up: merged B = 0 leaves the weights bit for bit)
                memo = base_memo if frozen or same_encoder(best, setup.base) else fp32_encoder(best, "onnx")
                scores = evaluate_volumes(best, test, slices2d=True, memo=memo, progress=True)
                per = {c["case"]: c for c in scores["per_case"]}
                row = {"method": method, "synthesis": syn_name, "n_train": n_train, **record,
                       "per_case": scores["per_case"]}  # fmt: skip
                for key in ("dsc", "dsc_loose", "nsd", "nsd_loose", "dsc2d"):
                    vals = [per[c][key] for c in test_cases]
                    row[key], row[key + "_sd"] = float(np.mean(vals)), float(np.std(vals))
                    if key in ("dsc", "dsc_loose"):
                        row[key + "_wl"] = wins_losses(vals, [zero_cases[c][key] for c in test_cases])
                rows = [r for r in rows if grid_key(r) != grid_key(row)] + [row]  # a point run again: replaced
                print(f"{method} n={n_train} synth={syn_name}: 3D DSC {row['dsc']:.4f} +- {row['dsc_sd']:.3f} "
                      f"W/L {row['dsc_wl']}, loose {row['dsc_loose']:.4f} W/L {row['dsc_loose_wl']}, 2D "
                      f"{row['dsc2d']:.4f}; best epoch {row['best_epoch'] + 1} of {row['epochs_run']}, "
                      f"train {seconds:.0f} s ({time.perf_counter() - t0:.0f} s in all)")  # fmt: skip
                save_results(args.out / "results.json", zero=zero, rows=rows, test=test_cases, val=val_cases,
                             pool=pool)  # fmt: skip
    print(f"\ntest patients {test_cases}; validation {val_cases}; 3D box + propagation, fp32 embeddings")
    print(
        "\n| method | train patients | synthesis | 3D DSC exact box | W / L | 3D DSC loose box | W / L | 3D NSD "
        "| 2D DSC exact box | best epoch / run | train s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    sd = lambda r, k: f"{r[k]:.3f} +- {r[k + '_sd']:.3f}"  # noqa: E731
    zsd = {k: float(np.std([c[k] for c in zero["per_case"]])) for k in ("dsc", "dsc_loose", "nsd", "dsc2d")}
    print(f"| zero-shot | - | - | {zero['dsc']:.3f} +- {zsd['dsc']:.3f} | - | {zero['dsc_loose']:.3f} +- "
          f"{zsd['dsc_loose']:.3f} | - | {zero['nsd']:.3f} | {zero['dsc2d']:.3f} | - | - |")  # fmt: skip
    rows.sort(key=grid_key)
    for r in rows:
        print(
            f"| {r['method']} | {r['n_train']} | {r['synthesis']} | {sd(r, 'dsc')} | {r['dsc_wl'][0]} / "
            f"{r['dsc_wl'][1]} | {sd(r, 'dsc_loose')} | {r['dsc_loose_wl'][0]} / {r['dsc_loose_wl'][1]} | "
            f"{r['nsd']:.3f} | {r['dsc2d']:.3f} | {r['best_epoch'] + 1} / {r['epochs_run']} | {r['train_s']:.0f} |"
        )
    print("\nper patient, 3D DSC exact box:")
    names = [f"{r['method']} n{r['n_train']}{' syn' if r['synthesis'] == 'yes' else ''}" for r in rows]
    print("| patient | zero-shot | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(rows))
    for c in test_cases:
        cells = [f"{next(p for p in r['per_case'] if p['case'] == c)['dsc']:.3f}" for r in rows]
        print(f"| {c} | {zero_cases[c]['dsc']:.3f} | " + " | ".join(cells) + " |")
    label_efficiency_plot(rows, zero, args.out / "label_efficiency.png")
    print(f"\nplot: {args.out / 'label_efficiency.png'}; results: {args.out / 'results.json'}")


def pet_point(args, n_train: int, method: str) -> list[dict]:
    """One training-set size x method of the PET grid (with its synthesis arm), run alone by this bench in
    OUT/points/n<N>-<method> (a Ray task); returns its rows."""
    point = argparse.Namespace(**{**vars(args), "train_patients": [n_train], "methods": [method], "ray": None,
                                  "synthesis_methods": [method] if method in args.synthesis_methods else [],
                                  "out": args.out / "points" / f"n{n_train}-{method}", "memory": False,
                                  "multimodal": False, "only_missing": False})  # fmt: skip
    main(args=point)
    return json.loads((point.out / "results.json").read_text())["rows"]


def ray_points(args, rows: list[dict]) -> list[dict]:
    """The grid's missing points as Ray tasks (:mod:`ray_grid`); ``rows`` with their rows added."""
    have = {grid_key(r) for r in rows} if args.only_missing else set()
    arms = lambda m: ("no", "yes") if m in args.synthesis_methods else ("no",)  # noqa: E731
    units = [(n, m) for n in args.train_patients for m in args.methods if any((n, m, a) not in have for a in arms(m))]
    for found in ray_grid.run_points(pet_point, [(args, n, m) for n, m in units], [f"n{n}-{m}" for n, m in units],
                                     args.out / "points", only_missing=args.only_missing, ray=args.ray,
                                     threads=args.threads, gpus=args.ray_gpus_per_point):  # fmt: skip
        rows = [r for r in rows if grid_key(r) not in {grid_key(f) for f in found}] + found
    return rows


def other_scans(cases: list[str]) -> list[tuple[str, str, str]]:
    """(case, file prefix, modality) of every CT / MR T1 scan with a mask among the listed pet-sts patients."""
    found = lambda c, prefix, tag: (DATA / c / f"{prefix}_{tag}.nii.gz").is_file()  # noqa: E731
    return [(c, prefix, modality) for c in cases for prefix, modality in OTHER_SCANS.items()
            if found(c, prefix, "image") and found(c, prefix, "mask")]  # fmt: skip


def scan_volume(case: str, prefix: str, modality: str):
    """One pet-sts patient's CT / MR T1 scan as a volume named ``"STS_xxx CT"``, windowed for ``modality``."""
    from medfoundry.inference.volume_eval import read_volume

    vol = read_volume(DATA / case / f"{prefix}_image.nii.gz", DATA / case / f"{prefix}_mask.nii.gz",
                      f"{case} {prefix.replace('_', ' ')}", modality=modality)  # fmt: skip
    assert vol is not None and vol.modality == modality, (case, prefix)
    return vol


def shared_volume(name: str, image: str, mask: str, modality: str):
    """A scan of the shared data folder as a volume, windowed as ``modality`` (the file names do not all say)."""
    from medfoundry.inference.volume_eval import read_volume

    vol = read_volume(SHARED / image, SHARED / mask, name, modality=modality)
    assert vol is not None and vol.modality == modality, name
    return vol


def multimodal_arm(args, setup: Setup) -> None:
    """Decoder and class prompt trained on PET + the training pool's CT / MR, scored per modality (3D box +
    propagation) and, for the class prompt, the modality its head picks on unseen scans."""
    from medfoundry.data.slices2d import load_samples
    from medfoundry.inference.modality_head import head_report, probe_volumes
    from medfoundry.inference.volume_eval import evaluate_volumes
    from medfoundry.preprocessing.intensity import IntensityWindow

    methods = [m for m in args.methods if m in ("decoder", "classprompt")]
    if skipped := [m for m in args.methods if m not in methods]:
        print(f"multimodal arm: {', '.join(skipped)} not run (only the frozen-encoder methods decoder, classprompt)")
    if not methods:
        sys.exit("the multimodal arm trains decoder and/or classprompt: pass --methods decoder classprompt")
    other_train = other_scans(setup.pool)
    if not other_train:
        sys.exit("no training-pool patient has CT / MR scans with masks")
    held_out = set(setup.val_cases) | set(setup.test_cases)
    assert not {c for c, _, _ in other_train} & held_out  # the pool never holds a test / validation patient
    other_samples = []
    for case, prefix, modality in other_train:
        samples = load_samples(DATA, image_glob=f"*/{prefix}_image.nii.gz", cases=[case], every=1, progress=False)
        assert {s.modality for s in samples} == {modality}, (case, prefix)
        other_samples += samples
    print(f"\nmultimodal arm: + CT / MR of {sorted({c for c, _, _ in other_train})} (training pool); windows: "
          + "; ".join(IntensityWindow().describe(m) for m in ("PET", "CT", "MR")))  # fmt: skip
    val_other = [scan_volume(*scan) for scan in other_scans(setup.val_cases)]
    val = setup.val + val_other
    if not val_other:
        print(f"validation patients {setup.val_cases} have no CT / MR: validating on their PET only")
    # scored sets: (name, modality, what, volumes), PET first, then the test patients' CT / MR, then unseen scans
    sets = [("PET test patients", "PET", "sarcoma", setup.test)]
    for case, prefix, modality in other_scans(setup.test_cases):
        sets.append((f"{case} {prefix.replace('_', ' ')}", modality, "sarcoma (a PET test patient)",
                     [scan_volume(case, prefix, modality)]))  # fmt: skip
    sets += [(name, modality, f"{what} (other tumour type)", [shared_volume(name, image, mask, modality)])
             for name, image, mask, modality, what in UNSEEN]  # fmt: skip
    head_vols = [(v, f"{what}, {v.modality}") for name, _, what, vols in sets for v in vols]
    head_vols += [(shared_volume(name, image, mask, modality), what) for name, image, mask, modality, what in HEAD_ONLY]
    t0 = setup.t0

    def score(model) -> dict:
        out = {}
        for name, _, _, vols in sets:
            r = setup.zero if model is setup.base and vols is setup.test else evaluate_volumes(
                model, vols, memo=setup.base_memo, progress=True)  # fmt: skip
            out[name] = {"dsc": r["dsc"], "dsc_loose": r["dsc_loose"], "nsd": r["nsd"],
                         "dsc_sd": float(np.std([c["dsc"] for c in r["per_case"]])),
                         "dsc_loose_sd": float(np.std([c["dsc_loose"] for c in r["per_case"]])),
                         "per_case": r["per_case"]}  # fmt: skip
        return out

    zero = score(setup.base)
    print(f"zero-shot on every set ({time.perf_counter() - t0:.0f} s in all)")
    probes = probe_volumes(setup.base, [v for v, _ in head_vols], encoder=setup.base_memo.encoder,
                           limit=args.head_slices) if "classprompt" in methods else []  # fmt: skip
    runs = []
    summary = {"methods": methods, "train_other": [f"{c} {p}" for c, p, _ in other_train],
               "val": [v.case for v in val], "test": setup.test_cases, "pool": setup.pool,
               "sets": [{"name": n, "modality": m, "what": w, "cases": [v.case for v in vols]}
                        for n, m, w, vols in sets],
               "zero": zero, "runs": runs}  # fmt: skip
    for n_train in args.train_patients:
        pet = load_samples(DATA, image_glob=GLOB, cases=setup.pool[:n_train], every=1, progress=False)
        train = pet + other_samples
        counts = {m: sum(s.modality == m for s in train) for m in ("PET", "CT", "MR")}
        print(f"\n{n_train} PET training patients + CT / MR: {len(train)} slices {counts}")
        for method in methods:
            run_dir = args.out / f"mm-{method}-n{n_train}"
            best, _, record = train_method(method, train, run_dir, args, val, setup.cache, setup.val_memo)
            run = {"method": method, "n_train": n_train, "slices": counts, **record, "scores": score(best)}
            if method == "classprompt":
                run["head"] = [{**row, "what": what} for row, (_, what) in zip(head_report(best, probes), head_vols,
                                                                                  strict=True)]  # fmt: skip
            runs.append(run)
            print(f"{method} n={n_train} + CT/MR: best epoch {record['best_epoch'] + 1} of {record['epochs_run']}, "
                  f"train {record['train_s']:.0f} s ({record['s_per_step']:.2f} s / step; "
                  f"{time.perf_counter() - t0:.0f} s in all)")  # fmt: skip
            save_results(args.out / "results.json", multimodal=summary)
    print_multimodal(summary)
    print(f"\nresults: {args.out / 'results.json'} (key 'multimodal')")


def print_multimodal(summary: dict) -> None:
    """The multimodal arm's Markdown tables: training, 3D DSC per scan set, modality-head picks."""
    runs = summary["runs"]
    print(f"\ntrained on PET + {', '.join(summary['train_other'])}; validation: {', '.join(summary['val'])}")
    print("\n| method | PET patients | training slices (PET / CT / MR) | best epoch / run | val 3D DSC before -> best "
          "| train s | s / step |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        c = r["slices"]
        print(f"| {r['method']} | {r['n_train']} | {c['PET']} / {c['CT']} / {c['MR']} | {r['best_epoch'] + 1} / "
              f"{r['epochs_run']} | {r['val_before']:.3f} -> {r['val_best']:.3f} | {r['train_s']:.0f} | "
              f"{r['s_per_step']:.2f} |")  # fmt: skip
    names = [f"{r['method']} n{r['n_train']}" for r in runs]
    print("\n3D DSC, exact 3D box / loose 3D box (mean over the set's volumes; +- sd where more than one):")
    print("| scans | modality | tumour | volumes | zero-shot | " + " | ".join(names) + " |")
    print("|---|---|---|---|---|" + "---|" * len(runs))

    def cell(s: dict, n: int) -> str:
        sd = lambda k: f" +- {s[k + '_sd']:.3f}" if n > 1 else ""  # noqa: E731
        return f"{s['dsc']:.3f}{sd('dsc')} / {s['dsc_loose']:.3f}{sd('dsc_loose')}"

    for item in sorted(summary["sets"], key=lambda x: ["PET", "CT", "MR"].index(x["modality"])):
        name, n = item["name"], len(item["cases"])
        cells = [cell(r["scores"][name], n) for r in runs]
        print(f"| {name} | {item['modality']} | {item['what']} | {n} | {cell(summary['zero'][name], n)} | "
              + " | ".join(cells) + " |")  # fmt: skip
    heads = [r for r in runs if "head" in r]
    if not heads:
        return
    print("\nmodality the class prompt's head picks (majority over the probe slices; per-slice accuracy):")
    print("| scan | what | true | slices | " + " | ".join(f"classprompt n{r['n_train']}" for r in heads) + " |")
    print("|---|---|---|---|" + "---|" * len(heads))
    for i, row in enumerate(heads[0]["head"]):
        cells = []
        for r in heads:
            h = r["head"][i]
            mark = "" if h["correct"] else " **wrong**"
            votes = ", ".join(f"{m} {k}" for m, k in h["votes"].items())
            cells.append(f"{h['picked']}{mark}, {h['slice_accuracy']:.2f} ({votes})")
        print(f"| {row['case']} | {row['what']} | {row['modality']} | {row['slices']} | " + " | ".join(cells) + " |")
    for r in heads:
        rows = r["head"]
        print(f"classprompt n{r['n_train']}: {sum(h['correct'] for h in rows)} of {len(rows)} volumes right; "
              f"per-slice accuracy {np.mean([h['slice_accuracy'] for h in rows]):.3f} (mean over volumes)")  # fmt: skip


def main(argv: list[str] | None = None, args: argparse.Namespace | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-patients", type=int, nargs="+", default=[10], help="training-set sizes (<= 20)")
    ap.add_argument("--methods", nargs="+", default=["decoder", "classprompt", "lora", "dbsam"])
    ap.add_argument(
        "--synthesis-methods",
        nargs="*",
        default=[],
        help="methods also trained with synthetic slices added (none: skip the synthesis arm)",
    )
    ap.add_argument("--synthetic", type=int, default=100, help="synthetic slices for the synthesis arm")
    ap.add_argument("--only-missing", action="store_true",
                    help="skip grid points --out already holds (same split); default: run them again")  # fmt: skip
    ap.add_argument("--epochs", type=int, default=None, help="max epochs (default: per method, METHOD_BUDGET)")
    ap.add_argument("--steps-per-epoch", type=int, default=None, help="steps per epoch (default: per method)")
    ap.add_argument("--patience", type=int, default=None, help="early stopping patience (default: per method)")
    ap.add_argument("--decoder-warmup", type=int, default=None,
                    help="LoRA / DB-SAM: decoder-side warm-up epochs (default: per method; 0: off)")  # fmt: skip
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
    ap.add_argument("--multimodal", action="store_true",
                    help="run the multimodal arm (PET + CT + MR training, per-modality scores, modality head) "
                    "instead of the PET grid")  # fmt: skip
    ap.add_argument("--head-slices", type=int, default=24,
                    help="multimodal arm: non-blank slices per volume for the modality-head check")  # fmt: skip
    ap.add_argument("--measure", choices=["lora", "full"], help=argparse.SUPPRESS)
    ray_grid.add_ray_args(ap)
    args = args or ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.measure:
        measure(args.measure, args.batch_size, args.memory_steps)
        return

    from medfoundry.inference.encoder_backends import OnnxEncoder
    from medfoundry.inference.volume_eval import evaluate_volumes, fp32_encoder, load_volumes
    from medfoundry.modeling.lite_medsam import build_lite_medsam
    from medfoundry.modeling.registry import build_adapter
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
    print(
        f"zero-shot: 3D DSC {zero['dsc']:.4f} (loose {zero['dsc_loose']:.4f}), 2D {zero['dsc2d']:.4f} "
        f"({time.perf_counter() - t0:.0f} s)"
    )
    # base-encoder embeddings of the training slices (float16, per flip), shared by the frozen-encoder runs
    shared_cache = MemoryEmbeddingCache(
        build_adapter(build_lite_medsam(), "decoder"), encoder=OnnxEncoder(base.image_encoder)
    )
    setup = Setup(pool, val_cases, test_cases, val, test, zero, base, base_memo, fp32_encoder(base, "onnx"),
                  shared_cache, t0)  # fmt: skip
    if args.multimodal:
        multimodal_arm(args, setup)
    else:
        pet_grid(args, setup)
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
    print(f"total {time.perf_counter() - setup.t0:.0f} s")


if __name__ == "__main__":
    main()
