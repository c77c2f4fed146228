"""Whole-body slice classification with lesion insertion: the scan split (default, ``--protocol scan``: train on
one whole-body PET, test on the other patient's; see ``bench/classify_scan_split.py``) and the region split of
one scan (``--protocol region``, the earlier test, described below).

Region protocol (docs/classification.md, "Region-split test"):

* Background: whole-body FDG-PET STS_001 (DICOM series, SUV), every native slice (267), its GTV_Mass mask.
* Lesions: the 29 labelled crops STS_002..STS_030 (never STS_001, the background's own patient), split by patient
  into train / val / test sources (seeded); a crop's lesion is inserted only into scans of its own split, so the
  test lesions were never seen in training. Crop lesion slices (``--crop-slices`` per crop) are extra abnormal
  training examples; crop slices of the test split are not scored (the test is the whole-body scan).
* Two region splits of the scan: "lower->upper" trains on the lower 3/8 (val: the next 1/8) and tests on the upper
  half; "upper->lower" is the mirror image. Each region gets ``--insertions`` inserted-lesion scans with the lesions
  wholly inside it (``classify build --mode wholebody --regions``).
* Models: LiteMedSAM (frozen) + linear head on cached embeddings (mean-pooled neck, and mean + max pooled), a
  patch head (one linear classifier on each of 16 x 16 pooled neck patches, log-sum-exp over patches; bench-only)
  and the from-scratch CNN; all with the dataset's class-balancing sample weights; threshold by Youden's J on
  the val region (prevalence-free: the val region's prevalence is not a new scan's).
* Scored on the test half (its whole-body slices + its inserted slices): ROC-AUC, AP, sensitivity, specificity;
  the real tumour slices of STS_001 (test half of "upper->lower" only); brain / heart / bladder / kidney slices.

Embeddings are cached by slice content (sha1 of the stored uint8 pixels) in ``OUT/cache/``, so the background
slices shared by both splits are embedded once and a second run does no encoder work.

    PYTHONPATH=src python bench/classify_wholebody.py [--seeds 0 1 2] [--encoders litemedsam NAME=WEIGHTS ...]
        [--no-evidence] [--docs docs/images]                                    # scan split (default)
    PYTHONPATH=src python bench/classify_wholebody.py --protocol region [--out bench/out/classify_wholebody]
        [--insertions 3] [--threads 2] [--backend fast|onnx|openvino|torch] [--intensity slice-max|suv-window]
        [--no-cnn] [--docs docs/images]                                         # region split of STS_001
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from classify_scan_split import add_arguments as add_scan_arguments
from classify_scan_split import lesion_crops, stored_images, wholebody_options, write_report
from classify_scan_split import run as run_scan_split

ROOT = Path(__file__).resolve().parents[1]
SPLITS = {
    "lower->upper": {"train": (0.0, 0.375), "val": (0.375, 0.5), "test": (0.5, 1.0)},
    "upper->lower": {"test": (0.0, 0.5), "val": (0.5, 0.625), "train": (0.625, 1.0)},
}
# STS_001's hot organs, slice ranges read from its components above the liver threshold (3.6 SUV)
PATCH_GRID = 16  # patch head: the 64 x 64 LiteMedSAM neck average-pooled to 16 x 16 patches
ORGANS = {"bladder": (57, 68), "kidneys": (109, 135), "heart": (164, 189), "brain": (262, 266)}


def build(args, name: str, regions: dict, out: Path):
    from medfoundry.data.pet_slices import CaseSpec, SliceConfig, build_wholebody_dataset

    data = Path(args.data)
    wb = data / "pet-wholebody" / "STS_001"
    background = CaseSpec(
        "STS_001_wb", wb / "dicom" / "image", wb / "nifti" / "STS_001_FDG_PET_mask_GTV_Mass.nii.gz", "STS_001"
    )
    crops = lesion_crops(data)
    config = SliceConfig(grid=(0, 0, 0), size=args.size, intensity=args.intensity, suv_window=args.suv_window)
    options = wholebody_options(args, regions=regions)
    folder = out / "datasets" / name.replace("->", "_to_")
    return build_wholebody_dataset(
        [background],
        crops,
        folder,
        config,
        options,
        fractions=(0.6, 0.1, 0.3),
        seed=args.seed,
        overwrite=True,
        progress=False,
    )


class SliceEmbeddings:
    """Embeddings cached by slice content: ``OUT/cache/ENCODER-WEIGHTS12-meanmax.npz`` (keys, float16).

    Each slice keeps the mean-pooled LiteMedSAM neck (256, what ``classify embed`` stores: ``encoder.embed``)
    followed by the max-pooled neck (256), so the bench can compare both poolings from one encoder pass."""

    def __init__(self, folder: Path, backend: str, threads: int) -> None:
        from medfoundry.modeling.encoders import build_encoder

        self.encoder = build_encoder("litemedsam")
        self.path = folder / f"litemedsam-{self.encoder.weights_id[:12]}-meanmax.npz"
        self.store: dict[str, np.ndarray] = {}
        if self.path.is_file():
            with np.load(self.path) as z:
                self.store = dict(zip(z["keys"].tolist(), z["emb"], strict=True))
        self.backend = backend
        self.threads = threads
        self._run = None
        self.seconds = 0.0
        self.n_new = 0
        # per-slice patch features for the patch head: the neck average-pooled to PATCH_GRID x PATCH_GRID
        self.patch_dir = folder / f"litemedsam-{self.encoder.weights_id[:12]}-patches{PATCH_GRID}"

    def _runner(self):
        if self._run is None:
            if self.backend == "torch":
                neck = self.encoder.backbone
            else:  # the exported graph on ONNX Runtime or OpenVINO (== backbone, max abs diff ~1e-5)
                from medfoundry.inference.encoder_backends import exported_encoder, resolve_backend

                neck = exported_encoder(self.encoder.backbone, resolve_backend(self.backend), threads=self.threads)

            def run(x):
                m = neck(x)
                pooled = torch.cat([m.mean(dim=(2, 3)), m.amax(dim=(2, 3))], dim=1)
                return pooled, torch.nn.functional.adaptive_avg_pool2d(m, PATCH_GRID)

            self._run = run
        return self._run

    def save(self) -> None:
        from medfoundry.io.atomic import atomic_path

        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = np.array(list(self.store), dtype="U40")
        emb = np.stack(list(self.store.values())).astype(np.float16) if self.store else np.zeros((0, 512))
        with atomic_path(self.path, overwrite=True) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, keys=keys, emb=emb)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """``(n, S, S)`` uint8 slices -> ``(n, 512)`` float32 (mean | max pooled; new ones computed, then stored)."""
        keys = [hashlib.sha1(im.tobytes()).hexdigest() for im in images]
        missing = [k not in self.store or not (self.patch_dir / f"{k}.npy").is_file() for k in keys]
        todo = sorted({k: i for i, k in enumerate(keys) if missing[i]}.values())
        if todo:
            run = self._runner()
            start = time.perf_counter()
            for b in range(0, len(todo), 8):
                idx = todo[b : b + 8]
                batch = torch.from_numpy(images[idx].astype(np.float32) / 255.0)
                with torch.inference_mode():
                    out, patches = (t.float().numpy() for t in run(self.encoder.prepare(batch)))
                self.patch_dir.mkdir(parents=True, exist_ok=True)
                for i, e, pm in zip(idx, out, patches, strict=True):
                    self.store[keys[i]] = e.astype(np.float16)
                    np.save(self.patch_dir / f"{keys[i]}.npy", pm.astype(np.float16))
                if (b // 8) % 8 == 7:
                    self.save()  # an interrupted run resumes here
            self.seconds += time.perf_counter() - start
            self.n_new += len(todo)
            self.save()
        return np.stack([self.store[k] for k in keys]).astype(np.float32)

    def patches(self, images: np.ndarray) -> np.ndarray:
        """``(n, S, S)`` uint8 slices (embedded before) -> ``(n, PATCH_GRID**2, 256)`` float16 patch features."""
        keys = [hashlib.sha1(im.tobytes()).hexdigest() for im in images]
        out = np.stack([np.load(self.patch_dir / f"{k}.npy") for k in keys])  # (n, 256, G, G)
        return out.reshape(len(keys), out.shape[1], -1).transpose(0, 2, 1)


def score(y: np.ndarray, p: np.ndarray, thr: float) -> dict:
    from medfoundry.evaluation.classification import binary_metrics

    m = binary_metrics(y, p, thr)
    return {k: m[k] for k in ("roc_auc", "ap", "recall", "specificity", "precision", "n", "n_pos", "threshold")}


class PatchHead(torch.nn.Module):
    """The library's linear head (standardise, dropout, linear) applied to every patch embedding, pooled to one
    slice logit by log-sum-exp (a smooth maximum: the slice is as abnormal as its most abnormal patch)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, dropout: float = 0.2, sharpness: float = 5.0):
        from medfoundry.modeling.heads import LinearHead

        super().__init__()
        self.patch = LinearHead(mean.numel(), dropout)  # (B, P, D) -> (B, P) patch logits
        self.patch.mean.copy_(mean)
        self.patch.std.copy_(std)
        self.sharpness = sharpness

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, P, D) -> (B,)
        r = self.sharpness
        return (torch.logsumexp(r * self.patch(x), dim=1) - math.log(x.shape[1])) / r


def train_patch_head(x: np.ndarray, y: np.ndarray, w: np.ndarray, epochs: int, seed: int):
    """The patch head on the training rows, minibatches drawn by the sample weights, fixed epochs."""
    from medfoundry.training.heads import TrainedClassifier, imbalance_setup

    torch.manual_seed(seed)
    start = time.perf_counter()
    xt, yt = torch.from_numpy(np.asarray(x)), torch.as_tensor(y, dtype=torch.float32)
    flat = xt.reshape(-1, xt.shape[-1]).float()
    model = PatchHead(flat.mean(0), flat.std(0).clamp_min(1e-6))
    _, sampler = imbalance_setup(y, "weights", seed, w)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xt, yt), batch_size=64, sampler=sampler)
    optim = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    for _ in range(epochs):
        for xb, yb in loader:
            optim.zero_grad()
            loss_fn(model(xb), yb).backward()
            optim.step()
    model.eval()
    return TrainedClassifier(model, 0.5, time.perf_counter() - start, epochs - 1)


def train_models(args, ds, emb: np.ndarray | None, tr, va, patches: np.ndarray | None = None):
    """Head(s) and CNN on the train region. With ``--select-on-val`` the epoch with the lowest val-region loss
    is kept (the library default); by default training runs its fixed epochs (the last / lowest-training-loss
    epoch is kept) and the val region only sets the threshold: with one scan the val region is other anatomy,
    so its loss measures the anatomy shift, not over-fitting (it picked epoch 0-12 of 300 in the first run)."""
    from medfoundry.modeling.heads import predict_proba
    from medfoundry.training.cnn_baseline import CNNConfig, cnn_probabilities, train_cnn
    from medfoundry.training.heads import HeadConfig, choose_threshold, train_linear_head

    y, w = ds.labels, ds.weights
    sel = va if args.select_on_val else va[:0]
    models = {}

    def done(trained, predict):
        if not args.select_on_val:
            trained.threshold = choose_threshold(y[va], predict(va), args.rule)
        return trained, predict

    if emb is not None:
        cfg = HeadConfig(epochs=args.head_epochs, imbalance="weights", threshold_rule=args.rule, seed=args.seed)
        for name, cols in (("LiteMedSAM + linear", slice(0, 256)), ("LiteMedSAM mean+max + linear", slice(0, 512))):
            e = emb[:, cols]
            head = train_linear_head(e[tr], y[tr], e[sel], y[sel], cfg, w[tr])
            models[name] = done(head, lambda rows, m=head.model, e=e: predict_proba(m, e[rows]))
    if patches is not None:  # fixed epochs; the val region sets the threshold only
        head = train_patch_head(patches[tr], y[tr], w[tr], args.patch_epochs, args.seed)

        def predict_patches(rows, m=head.model):
            return predict_proba(m, patches[rows], batch_size=256)

        head.threshold = choose_threshold(y[va], predict_patches(va), args.rule)
        models["LiteMedSAM patches + linear (LSE)"] = (head, predict_patches)
    if not args.no_cnn:
        x = stored_images(ds).astype(np.float32) / 255.0
        cfg = CNNConfig(epochs=args.cnn_epochs, threshold_rule=args.rule, seed=args.seed, patience=args.cnn_epochs)
        cnn = train_cnn(x[tr], y[tr], x[sel], y[sel], cfg, progress=False, sample_weight=w[tr])
        models["CNN"] = done(cnn, lambda rows, m=cnn.model: cnn_probabilities(m, x[rows]))
    return models


def organ_report(rows: list[dict], prob: np.ndarray, thr: float, test_rows: set[int]) -> dict:
    """Per organ (test-half slices only): slices, flagged, max p; and the real tumour slices."""
    out = {}
    wb = [r for r in rows if r["source"] == "wholebody" and r["row"] in test_rows]
    p_of = {r["row"]: float(prob[r["row"]]) for r in wb}
    for organ, (a, b) in ORGANS.items():
        sel = [r["row"] for r in wb if a <= r["slice_index"] <= b]
        if sel:
            ps = np.array([p_of[i] for i in sel])
            out[organ] = {"slices": len(sel), "flagged": int((ps >= thr).sum()), "max_p": float(ps.max())}
    tumour = [r["row"] for r in wb if r["label"] == 1]
    if tumour:
        ps = np.array([p_of[i] for i in tumour])
        normal = np.array([p_of[r["row"]] for r in wb if r["label"] == 0])
        from sklearn.metrics import roc_auc_score

        yy = np.r_[np.ones(ps.size), np.zeros(normal.size)]
        out["real tumour"] = {
            "slices": len(tumour),
            "flagged": int((ps >= thr).sum()),
            "median_p": float(np.median(ps)),
            "min_p": float(ps.min()),
            "auc_vs_normal_slices": float(roc_auc_score(yy, np.r_[ps, normal])),
        }
    return out


def plot_profiles(path: Path, name: str, rows, probs: dict, thresholds: dict, regions: dict) -> None:
    from medfoundry.io.figures import pyplot_agg, save_figure

    plt = pyplot_agg()
    wb = [r for r in rows if r["source"] == "wholebody"]
    z = np.array([r["slice_index"] for r in wb])
    fig, axes = plt.subplots(len(probs), 1, figsize=(9, 2.6 * len(probs)), squeeze=False, sharex=True)
    for ax, (model, prob) in zip(axes[:, 0], probs.items(), strict=False):
        p = np.array([prob[r["row"]] for r in wb])
        lo, hi = regions["test"]
        ax.axvspan(lo * len(z) - 0.5, hi * len(z) - 0.5, color="#dddddd", alpha=0.6, linewidth=0)
        for organ, (a, b) in ORGANS.items():
            ax.axvspan(a - 0.5, b + 0.5, color="#4daf4a", alpha=0.18, linewidth=0)
            ax.text((a + b) / 2, 1.04, organ, ha="center", fontsize=7, color="#2b7a2b")
        les = np.array([r["label"] == 1 for r in wb])
        for zz in z[les]:
            ax.axvspan(zz - 0.5, zz + 0.5, color="orange", alpha=0.35, linewidth=0)
        ax.plot(z, p, linewidth=1.0, marker=".", markersize=2.5, label="p(abnormal), whole-body slices")
        ins = [r for r in rows if r["source"] == "inserted"]
        ax.scatter([r["slice_index"] for r in ins], [prob[r["row"]] for r in ins], s=6, color="#e41a1c",
                   label="inserted-lesion slices", zorder=3)  # fmt: skip
        ax.axhline(thresholds[model], color="red", linestyle="--", linewidth=0.9, label="threshold (val, Youden)")
        ax.set_ylim(-0.03, 1.12)
        ax.set_ylabel("p")
        ax.set_title(f"{name}: {model} (grey = test half, orange = real tumour, green = hot organs)", fontsize=9)
        ax.legend(fontsize=7, loc="center left")
    axes[-1, 0].set_xlabel("slice index (0 = thighs, 266 = head)")
    fig.tight_layout()
    save_figure(fig, path, overwrite=True, dpi=110)


def flagged_ranges(slices: np.ndarray, flags: np.ndarray) -> list[tuple[int, int]]:
    out, start = [], None
    for i, (s, f) in enumerate(zip(slices, flags, strict=True)):
        if f and start is None:
            start = s
        if start is not None and (not f or i == len(slices) - 1):
            out.append((int(start), int(s if f else slices[i - 1])))
            start = None
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protocol", choices=("scan", "region"), default="scan", help="scan split (default) or region")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "classify_wholebody"))
    p.add_argument("--insertions", type=int, default=3, help="inserted-lesion scans per region (train, val, test)")
    p.add_argument("--crop-slices", type=int, default=2, help="lesion slices per crop as extra training examples")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backend", choices=("fast", "onnx", "openvino", "torch"), default="fast")
    p.add_argument(
        "--intensity",
        choices=("slice-max", "suv-window"),
        default="slice-max",
        help="slice pixels: each slice / its maximum, or SUV on one fixed [0, --suv-window] scale",
    )
    p.add_argument("--suv-window", type=float, default=10.0)
    p.add_argument("--rule", choices=("youden", "f1"), default="youden")
    p.add_argument("--head-epochs", type=int, default=300)
    p.add_argument("--cnn-epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0, help="region protocol: the seed (scan protocol: --seeds)")
    p.add_argument("--no-cnn", action="store_true")
    p.add_argument("--no-patch-head", action="store_true", help="skip the LiteMedSAM patch head")
    p.add_argument("--patch-epochs", type=int, default=100, help="patch head: training epochs")
    p.add_argument("--select-on-val", action="store_true", help="keep the epoch with the lowest val-region loss")
    p.add_argument("--no-embed", action="store_true", help="CNN only")
    p.add_argument("--docs", help="copy the key figures to this folder (e.g. docs/images)")
    add_scan_arguments(p)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if args.protocol == "scan":
        run_scan_split(args)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    embedder = None if args.no_embed else SliceEmbeddings(out / "cache", args.backend, args.threads)
    results, timings = {}, {}
    for name, regions in SPLITS.items():
        t = time.perf_counter()
        ds = build(args, name, regions, out)
        timings[f"build {name}"] = time.perf_counter() - t
        rows = ds.rows
        y = ds.labels
        tr, va = ds.split_rows("train"), ds.split_rows("val")
        te = np.array([r["row"] for r in rows if r["split"] == "test" and r["source"] != "crop"])
        emb = patches = None
        if embedder is not None:
            t = time.perf_counter()
            need = np.r_[tr, va, te]
            images = stored_images(ds)
            emb = np.zeros((len(rows), 512), np.float32)
            emb[need] = embedder(images[need])
            if not args.no_patch_head:
                patches = np.zeros((len(rows), PATCH_GRID**2, 256), np.float16)
                patches[need] = embedder.patches(images[need])
            timings[f"embed {name}"] = time.perf_counter() - t
        t = time.perf_counter()
        models = train_models(args, ds, emb, tr, va, patches)
        timings[f"train {name}"] = time.perf_counter() - t
        need_all = np.array([r["row"] for r in rows if r["source"] != "crop" or r["split"] != "test"])
        probs, thresholds, entry = {}, {}, {}
        for model, (trained, predict) in models.items():
            prob = np.full(len(rows), np.nan)
            prob[need_all] = predict(need_all)
            probs[model], thresholds[model] = prob, trained.threshold
            counts = {s: int((np.array([r["source"] for r in rows])[te] == s).sum()) for s in ("wholebody", "inserted")}
            entry[model] = {
                "test": score(y[te], prob[te], trained.threshold),
                "test_counts": counts,
                "organs": organ_report(rows, prob, trained.threshold, set(te.tolist())),
                "train_seconds": trained.seconds,
                "best_epoch": trained.best_epoch,
            }
            wb_test = [r for r in rows if r["source"] == "wholebody" and r["row"] in set(te.tolist())]
            zs = np.array([r["slice_index"] for r in wb_test])
            flags = np.array([prob[r["row"]] >= trained.threshold for r in wb_test])
            entry[model]["flagged_ranges_test_half"] = flagged_ranges(zs, flags)
        results[name] = {
            "regions": regions,
            "n_rows": {s: int(ds.split_rows(s).size) for s in ("train", "val", "test")},
            "n_abnormal": {s: int(y[ds.split_rows(s)].sum()) for s in ("train", "val", "test")},
            "preprocessing_hash": ds.preprocessing_hash,
            "models": entry,
        }
        tag = name.replace("->", "_to_")
        plot_profiles(out / f"z_profile_{tag}.png", name, rows, probs, thresholds, regions)
        mip_figures(ds, entry, out, tag, name)
        print(json.dumps({name: {m: e["test"] for m, e in entry.items()}}, default=float))
    insertion_figure(args, out)
    total = time.perf_counter() - t0
    report = {
        "settings": {k: v for k, v in vars(args).items()},
        "results": results,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "total_s": round(total, 1),
        "embedding": None
        if embedder is None
        else {"new_slices": embedder.n_new, "seconds": round(embedder.seconds, 1), "backend": args.backend},
        "load_average": os.getloadavg(),
    }
    write_report(out, "results", report, markdown(report))
    if args.docs:
        docs = Path(args.docs)
        for src, dst in (
            ("z_profile_upper_to_lower.png", "classify_wb_zprofile_upper_to_lower.png"),
            ("z_profile_lower_to_upper.png", "classify_wb_zprofile_lower_to_upper.png"),
            ("insertion_examples.png", "classify_wb_insertion.png"),
            ("mip_upper_to_lower.png", "classify_wb_mip_upper_to_lower.png"),
        ):
            if (out / src).is_file():
                shutil.copyfile(out / src, docs / dst)


def mip_figures(ds, entry: dict, out: Path, tag: str, name: str) -> None:
    """The whole scan's coronal MIP with each model's flagged test-half ranges (LiteMedSAM head first)."""
    from medfoundry.evaluation.wholebody_figures import save_flagged_mip
    from medfoundry.io import read_image, read_mask

    case = next(c for c in ds.info["cases"] if c["source"] == "wholebody")
    image = read_image(case["image"])
    mask = read_mask(case["mask"], reference=image)
    model = next(iter(entry))
    save_flagged_mip(
        image.array.astype(np.float32), image.spacing, image.direction, entry[model]["flagged_ranges_test_half"],
        out / f"mip_{tag}.png", lesion=mask.array > 0, title=f"{name}: {model}, test-half flags", overwrite=True,
    )  # fmt: skip


def insertion_figure(args, out: Path) -> None:
    from medfoundry.data.insertion import extract_lesions, insert_lesions, placement_map
    from medfoundry.evaluation.wholebody_figures import save_insertion_examples
    from medfoundry.io import read_image, read_mask

    data = Path(args.data)
    wb = data / "pet-wholebody" / "STS_001"
    image = read_image(wb / "dicom" / "image")
    mask = read_mask(wb / "nifti" / "STS_001_FDG_PET_mask_GTV_Mass.nii.gz", reference=image)
    templates = []
    for i in range(2, 31):
        folder = data / "pet-sts" / f"STS_{i:03d}"
        crop = read_image(folder / "PET_image.nii.gz")
        templates += extract_lesions(crop, read_mask(folder / "PET_mask.nii.gz", reference=crop), folder.name)
    pmap = placement_map(image.array, image.spacing_zyx, mask.array > 0)
    examples, titles = [], []
    for seed in range(4):
        r = insert_lesions(image, templates, seed, own_label=mask, pmap=pmap)
        examples.append((r.image.array, r.inserted))
        titles.append(f"seed {seed}: " + ", ".join(f"{p.volume_ml:.0f} mL" for p in r.placements))
    save_insertion_examples(
        image.array, examples, image.spacing, image.direction, out / "insertion_examples.png", titles, overwrite=True
    )


def _f(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def markdown(report: dict) -> str:
    lines = [
        "| split | model | test slices (abnormal) | ROC-AUC | AP | sensitivity | specificity | threshold |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, res in report["results"].items():
        for model, e in res["models"].items():
            t = e["test"]
            lines.append(
                f"| {name} | {model} | {t['n']} ({t['n_pos']}) | {_f(t['roc_auc'])} | {_f(t['ap'])} | "
                f"{_f(t['recall'])} | {_f(t['specificity'])} | {_f(t['threshold'])} |"
            )
    lines += [
        "",
        "| split | model | organ / tumour (test half) | slices | flagged | max p / median p |",
        "|---|---|---|---|---|---|",
    ]
    for name, res in report["results"].items():
        for model, e in res["models"].items():
            for organ, o in e["organs"].items():
                p = o.get("max_p", o.get("median_p"))
                extra = (
                    f" (AUC vs normal slices {o['auc_vs_normal_slices']:.3f})" if "auc_vs_normal_slices" in o else ""
                )
                lines.append(f"| {name} | {model} | {organ}{extra} | {o['slices']} | {o['flagged']} | {p:.3f} |")
    lines += ["", f"total {report['total_s']} s; timings {report['timings_s']}; embedding {report['embedding']}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
