"""``classify predict``: per-slice abnormality probability on a new PET scan, z-profile plot, flagged ranges and a
coronal MIP with the flagged slice ranges marked.

The scan goes through the same preprocessing as the training slices (grid, per-slice max scaling, resize);
a linear-head bundle re-runs its frozen encoder (same weights, checked by hash) and a CNN bundle runs the CNN.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medfoundry.errors import InputError, WeightsError
from medfoundry.evaluation.wholebody_figures import save_flagged_mip
from medfoundry.io.atomic import atomic_dir, check_writable
from medfoundry.io.figures import pyplot_agg, save_figure
from medfoundry.io.torchfile import load_torch_file
from medfoundry.modeling.heads import LinearHead, predict_proba
from medfoundry.modeling.slice_cnn import SliceCNN


@dataclass
class ScanPrediction:
    """Per-slice probabilities on the resampled grid, the threshold and the flagged slice ranges."""

    probabilities: np.ndarray
    slice_index: np.ndarray
    source_slice: np.ndarray
    z_mm: np.ndarray
    threshold: float
    ranges: list[dict]


def load_bundle(path: str | Path) -> dict:
    """A model bundle written by ``classify compare`` (``models/*.pt``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "model bundle not found; 'classify compare' writes them to OUT/models/")
    bundle = load_torch_file(path, "model bundle")
    if not isinstance(bundle, dict) or bundle.get("kind") not in ("linear", "cnn"):
        raise InputError(path, "not a classify model bundle (expected kind 'linear' or 'cnn')")
    return bundle


def flagged_ranges(flags: np.ndarray, z_mm: np.ndarray, prob: np.ndarray, source_extent: np.ndarray) -> list[dict]:
    """Runs of consecutive flagged slices as original-scan slice ranges with their z extent (mm)."""
    ranges = []
    i = 0
    n = len(flags)
    while i < n:
        if not flags[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and flags[j + 1]:
            j += 1
        ranges.append(
            {
                "first_slice": int(source_extent[i, 0]),
                "last_slice": int(source_extent[j, 1]),
                "grid_slices": [i, j],
                "z_from_mm": float(min(z_mm[i], z_mm[j])),
                "z_to_mm": float(max(z_mm[i], z_mm[j])),
                "max_probability": float(prob[i : j + 1].max()),
            }
        )
        i = j + 1
    return ranges


def _scan_probabilities(bundle: dict, images: np.ndarray, weights: str | Path | None) -> np.ndarray:
    if bundle["kind"] == "cnn":
        model = SliceCNN(bundle["input_size"], tuple(bundle["channels"]))
        model.load_state_dict(bundle["state_dict"])
        return predict_proba(model, np.asarray(images, np.float32), batch_size=64)
    from medfoundry.modeling.encoders import build_encoder

    enc_info = bundle["encoder"]
    weights = weights if weights is not None else bundle.get("weights_path")
    encoder = build_encoder(enc_info["name"], weights=weights, **enc_info.get("build_kwargs", {}))
    if encoder.weights_id != enc_info["weights_id"]:
        raise WeightsError(
            f"{weights or enc_info['name']}: encoder weights {encoder.weights_id[:12]} differ from the ones the head "
            f"was trained on ({enc_info['weights_id'][:12]}); pass --weights with the original file"
        )
    from medfoundry.inference.encoder_backends import encoder_runtime

    encoder = encoder_runtime(encoder, "fast")  # ONNX Runtime where the family exports, as in 'classify embed'
    parts = []
    with torch.inference_mode():
        for i in range(0, len(images), 16):
            batch = torch.from_numpy(images[i : i + 16])
            parts.append(encoder.embed(encoder.prepare(batch)).half().float().numpy())
    head = LinearHead(bundle["head_dim"], bundle.get("dropout", 0.2))
    head.load_state_dict(bundle["state_dict"])
    return predict_proba(head, np.concatenate(parts))


def plot_profile(path: Path, pred: ScanPrediction, title: str, lesion_slices: np.ndarray | None = None) -> None:
    """Probability against z (mm) with the threshold line; true lesion slices shaded when known."""
    plt = pyplot_agg()

    fig, ax = plt.subplots(figsize=(8, 3.4))
    order = np.argsort(pred.z_mm)
    ax.plot(pred.z_mm[order], pred.probabilities[order], marker=".", linewidth=1.2, label="p(abnormal)")
    ax.axhline(pred.threshold, color="red", linestyle="--", linewidth=1, label=f"threshold {pred.threshold:.2f}")
    if lesion_slices is not None and lesion_slices.any():
        step = float(np.median(np.abs(np.diff(np.sort(pred.z_mm))))) if len(pred.z_mm) > 1 else 1.0
        for z in pred.z_mm[lesion_slices]:
            ax.axvspan(z - step / 2, z + step / 2, color="orange", alpha=0.25, linewidth=0)
        ax.plot([], [], color="orange", alpha=0.4, linewidth=6, label="lesion in mask")
    ax.set_xlabel("z (mm, scanner axis)")
    ax.set_ylabel("probability")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    save_figure(fig, path, overwrite=True, dpi=120)


def predict_scan(
    scan: str | Path,
    model: str | Path,
    out_dir: str | Path,
    mask: str | Path | None = None,
    weights: str | Path | None = None,
    threshold: float | None = None,
    overwrite: bool = False,
    suv_factor: float | None = None,
) -> ScanPrediction:
    """Probabilities for every slice of ``scan``; writes CSV, JSON ranges, the z-profile and the coronal MIP
    (``coronal_mip.png``, flagged slice ranges shaded) atomically. A model trained on SUV-window slices needs the
    scan in SUV: a DICOM series is converted, a Bq/mL file needs ``suv_factor``."""
    from medfoundry.data.pet_slices import CaseSpec, SliceConfig, read_case, slice_volume
    from medfoundry.preprocessing.pet_suv import to_suv

    out_dir = check_writable(out_dir, overwrite, folder=True, create=False)  # before any work
    bundle = load_bundle(model)
    cfg = dict(bundle["preprocessing"]["config"])
    cfg["grid"] = tuple(cfg["grid"])
    if cfg.get("lesion_labels") is not None:
        cfg["lesion_labels"] = tuple(cfg["lesion_labels"])
    config = SliceConfig(**cfg)
    image, mask_img = read_case(CaseSpec("scan", Path(scan), None if mask is None else Path(mask)))
    if config.intensity == "suv-window":
        image = to_suv(image, suv_factor)
    elif suv_factor is not None:
        raise InputError(None, "--suv-factor only applies to models trained on SUV-window slices; this one is not")
    stack = slice_volume(image, mask_img, config)
    images = stack.images.astype(np.float32) / 255.0
    prob = _scan_probabilities(bundle, images, weights)
    thr = float(bundle["threshold"] if threshold is None else threshold)
    if not 0.0 <= thr <= 1.0:
        raise InputError(None, f"threshold must lie in [0, 1], got {thr}")
    flags = prob >= thr
    nz_src, n_grid = image.array.shape[0], stack.n_grid_slices
    lo = np.floor(stack.slice_index * nz_src / n_grid).astype(int)
    hi = np.maximum(lo, np.ceil((stack.slice_index + 1) * nz_src / n_grid).astype(int) - 1)
    extent = np.stack([lo, np.minimum(hi, nz_src - 1)], axis=1)
    ranges = flagged_ranges(flags, stack.z_mm, prob, extent)
    pred = ScanPrediction(prob, stack.slice_index, stack.source_slice, stack.z_mm, thr, ranges)
    lesion = stack.lesion_voxels >= config.min_lesion_voxels if mask_img is not None else None
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        with (tmp / "slice_probabilities.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            cols = ["grid_slice", "source_first", "source_last", "z_mm", "probability", "flagged"]
            writer.writerow(cols + (["lesion_voxels"] if lesion is not None else []))
            for i in range(len(prob)):
                line = [
                    int(stack.slice_index[i]),
                    int(extent[i, 0]),
                    int(extent[i, 1]),
                    f"{stack.z_mm[i]:.2f}",
                    f"{prob[i]:.6f}",
                    int(flags[i]),
                ]
                writer.writerow(line + ([int(stack.lesion_voxels[i])] if lesion is not None else []))
        summary = {
            "scan": str(scan),
            "model": str(model),
            "kind": bundle["kind"],
            "threshold": thr,
            "n_slices": len(prob),
            "n_flagged": int(flags.sum()),
            "ranges": ranges,
        }
        (tmp / "flagged_ranges.json").write_text(json.dumps(summary, indent=1))
        name = bundle["encoder"]["name"] + " + linear" if bundle["kind"] == "linear" else "baseline CNN"
        plot_profile(tmp / "z_profile.png", pred, f"{Path(scan).name}: {name}", lesion)
        save_flagged_mip(
            np.asarray(image.array, np.float32),
            image.spacing,
            image.direction,
            [(r["first_slice"], r["last_slice"]) for r in ranges],
            tmp / "coronal_mip.png",
            lesion=None if mask_img is None else np.asarray(mask_img.array) > 0,
            title=f"{Path(scan).name}: {name}, threshold {thr:.2f}",
        )
    return pred
