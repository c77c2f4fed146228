"""``classify predict``: per-slice abnormality probability on a new PET scan, z-profile plot, flagged ranges and a
coronal MIP with the flagged slice ranges marked.

The scan goes through the same preprocessing as the training slices (grid, per-slice max scaling, resize);
a linear-head bundle re-runs its frozen encoder (same weights, checked by hash) and a CNN bundle runs the CNN. A
head trained with per-slice features (whole-body builds with ``--features anatomy finder``) gets them computed on
the scan in SUV by the same sources (:mod:`medfoundry.inference.slice_features`); ``models/best.pt`` of
``classify compare`` is the model with the highest val ROC-AUC.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medfoundry.errors import InputError, WeightsError
from medfoundry.evaluation.wholebody_figures import save_flagged_mip
from medfoundry.inference.embedding_cache import EmbeddingMemo
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
    model: str = ""  # the model's name (``litemedsam + anatomy``...)


def load_bundle(path: str | Path) -> dict:
    """A model bundle written by ``classify compare`` (``models/*.pt``), or a built-in rule by name (``percist``:
    :mod:`medfoundry.inference.slice_rule`) where no file of that name exists."""
    from medfoundry.inference.slice_rule import RULE_MODELS

    path = Path(path)
    if str(path) in RULE_MODELS and not path.exists():
        return RULE_MODELS[str(path)]()
    if not path.is_file():
        raise InputError(path, "model bundle not found; 'classify compare' writes them to OUT/models/ (or name a "
                         f"built-in rule: {', '.join(RULE_MODELS)})")  # fmt: skip
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


def embed_slices(encoder, images: np.ndarray, batch_size: int = 16, progress: bool = True) -> np.ndarray:
    """``(n, S, S)`` float slices in ``[0, 1]`` -> ``(n, D)`` embeddings (float16 values, as the caches store
    them), in batches with a progress bar."""
    from tqdm.auto import tqdm

    parts = []
    with torch.inference_mode(), tqdm(total=len(images), desc=f"embedding ({encoder.name})", unit="slice",
                                      disable=not progress) as bar:  # fmt: skip
        for i in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size]))
            parts.append(encoder.embed(encoder.prepare(batch)).half().float().numpy())
            bar.update(len(batch))
    return np.concatenate(parts) if parts else np.zeros((0, encoder.out_dim), np.float32)


def _stack_key(enc_info: dict, images: np.ndarray) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    digest.update(json.dumps([enc_info["name"], enc_info["weights_id"], list(images.shape)]).encode())
    return f"{enc_info['name']}-{enc_info['weights_id'][:12]}-{digest.hexdigest()[:24]}"


def scan_embeddings(
    bundle: dict,
    images: np.ndarray,
    weights: str | Path | None = None,
    backend: str = "fast",
    cache: str | Path | None = None,
    progress: bool = True,
    encoder=None,
) -> np.ndarray:
    """The bundle's frozen encoder on every slice (``images`` uint8 ``(n, S, S)``); with ``cache`` (a folder),
    the embeddings of the same slices by the same encoder weights are read back instead of computed (keyed by
    the slices' bytes), so a second model or threshold on one scan costs no encoder time. ``encoder()``: the
    encoder already built (:class:`SliceModel`), else it is built here."""
    enc_info = bundle["encoder"]

    def compute(_: list[str]) -> torch.Tensor:
        built = encoder() if encoder is not None else bundle_encoder(bundle, weights, backend)
        return torch.from_numpy(embed_slices(built, images.astype(np.float32) / 255.0, progress=progress))[None]

    memo = EmbeddingMemo(disk=cache, disk_dtype=torch.float16)  # the whole stack is one entry
    return memo.get([_stack_key(enc_info, images)], compute)[0].float().numpy()


def bundle_encoder(bundle: dict, weights: str | Path | None = None, backend: str = "fast"):
    """The frozen encoder of a linear-head bundle, on ``backend`` (ONNX Runtime / OpenVINO where the family
    exports, as in 'embed'); :class:`WeightsError` when ``weights`` are not the ones the head was trained on."""
    from medfoundry.inference.encoder_backends import encoder_runtime
    from medfoundry.modeling.encoders import build_encoder

    enc_info = bundle["encoder"]
    weights = weights if weights is not None else bundle.get("weights_path")
    encoder = build_encoder(enc_info["name"], weights=weights, **enc_info.get("build_kwargs", {}))
    if encoder.weights_id != enc_info["weights_id"]:
        raise WeightsError(
            f"{weights or enc_info['name']}: encoder weights {encoder.weights_id[:12]} differ from the ones the head "
            f"was trained on ({enc_info['weights_id'][:12]}); pass `weights` with the original file"
        )
    return encoder_runtime(encoder, backend)


@dataclass
class SliceModel:
    """A model bundle loaded once for many scans (``classify predict --manifest``): the bundle now, its frozen
    encoder at the first scan that needs it, then kept."""

    path: Path
    bundle: dict
    weights: str | Path | None = None
    backend: str = "fast"
    built: list = field(default_factory=list)

    def encoder(self):
        if not self.built:
            self.built.append(bundle_encoder(self.bundle, self.weights, self.backend))
        return self.built[0]


def load_slice_model(path: str | Path, weights: str | Path | None = None, backend: str = "fast") -> SliceModel:
    """:class:`SliceModel` of the bundle at ``path`` (checked now; the encoder is built at first use)."""
    return SliceModel(Path(path), load_bundle(path), weights, backend)


def _scan_probabilities(
    bundle: dict,
    images: np.ndarray,
    features: np.ndarray | None,
    weights,
    backend: str,
    cache,
    progress: bool,
    encoder=None,
) -> np.ndarray:
    """Per-slice probabilities of a CNN or linear-head bundle on uint8 slices ``(n, S, S)``; a head with per-slice
    features gets them after the embedding (or alone, for a model without an encoder)."""
    if bundle["kind"] == "cnn":
        model = SliceCNN(bundle["input_size"], tuple(bundle["channels"]))
        model.load_state_dict(bundle["state_dict"])
        return predict_proba(model, images.astype(np.float32) / 255.0, batch_size=64)
    parts = []
    if bundle.get("encoder") is not None:
        parts.append(scan_embeddings(bundle, images, weights, backend, cache, progress, encoder))
    if features is not None:
        parts.append(features)
    head = LinearHead(bundle["head_dim"], bundle.get("dropout", 0.2))
    head.load_state_dict(bundle["state_dict"])
    return predict_proba(head, np.concatenate(parts, axis=1))


def model_name(bundle: dict) -> str:
    """What a bundle is called in tables and figures (``litemedsam + anatomy``, ``baseline CNN``...)."""
    if "name" in bundle:
        return str(bundle["name"])
    return bundle["encoder"]["name"] + " + linear" if bundle["kind"] == "linear" else "baseline CNN"


def scan_features(bundle: dict, suv, source_slice: np.ndarray, model: str | Path) -> np.ndarray | None:
    """The per-slice features a bundle was trained with, computed on the scan (SUV) for its stored slices."""
    spec = bundle.get("features")
    if not spec:
        return None
    from medfoundry.inference.slice_features import source_for

    source = source_for(spec["identity"], model)
    values = source(suv, "scan")
    return values[np.asarray(source_slice)][:, [source.names.index(n) for n in spec["names"]]]


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
    model: str | Path | SliceModel,
    out_dir: str | Path,
    mask: str | Path | None = None,
    weights: str | Path | None = None,
    threshold: float | None = None,
    overwrite: bool = False,
    suv_factor: float | None = None,
    backend: str = "fast",
    embedding_cache: str | Path | None = None,
    progress: bool = True,
) -> ScanPrediction:
    """Probabilities for every slice of ``scan``; writes CSV, JSON ranges (with the seconds of each stage), the
    z-profile and the coronal MIP (``coronal_mip.png``, flagged slice ranges shaded) atomically. A model trained
    on SUV-window slices needs the scan in SUV: a DICOM series is converted, a Bq/mL file needs ``suv_factor``.
    ``backend`` runs the frozen encoder (``fast``: OpenVINO / ONNX Runtime); ``embedding_cache`` (a folder) keeps
    the scan's embeddings for the next model or threshold (:func:`scan_embeddings`); ``model`` may be a
    :class:`SliceModel` loaded once for many scans."""
    from medfoundry.data.pet_slices import CaseSpec, SliceConfig, read_case, slice_volume
    from medfoundry.preprocessing.pet_suv import to_suv

    out_dir = check_writable(out_dir, overwrite, folder=True, create=False)  # before any work
    clock = _Clock()
    loaded = model if isinstance(model, SliceModel) else None
    model = loaded.path if loaded is not None else model
    bundle = loaded.bundle if loaded is not None else load_bundle(model)
    cfg = dict(bundle["preprocessing"]["config"])
    cfg["grid"] = tuple(cfg["grid"])
    if cfg.get("lesion_labels") is not None:
        cfg["lesion_labels"] = tuple(cfg["lesion_labels"])
    config = SliceConfig(**cfg)
    image, mask_img = read_case(CaseSpec("scan", Path(scan), None if mask is None else Path(mask)))
    if config.intensity == "suv-window" or bundle.get("features"):
        image = to_suv(image, suv_factor)
    elif suv_factor is not None:
        raise InputError(
            None, "`suv_factor` only applies to models trained on SUV-window slices or on SUV features; this one is not"
        )
    clock.lap("read")
    stack = slice_volume(image, mask_img, config)
    clock.lap("slices")
    features = scan_features(bundle, image, stack.source_slice, model)
    clock.lap("features")
    encoder = None if loaded is None else loaded.encoder
    prob = _scan_probabilities(bundle, stack.images, features, weights, backend, embedding_cache, progress, encoder)
    clock.lap("model")
    thr = float(bundle["threshold"] if threshold is None else threshold)
    if not 0.0 <= thr <= 1.0:
        raise InputError(None, f"threshold must lie in [0, 1], got {thr}")
    flags = prob >= thr
    nz_src, n_grid = image.array.shape[0], stack.n_grid_slices
    lo = np.floor(stack.slice_index * nz_src / n_grid).astype(int)
    hi = np.maximum(lo, np.ceil((stack.slice_index + 1) * nz_src / n_grid).astype(int) - 1)
    extent = np.stack([lo, np.minimum(hi, nz_src - 1)], axis=1)
    ranges = flagged_ranges(flags, stack.z_mm, prob, extent)
    pred = ScanPrediction(prob, stack.slice_index, stack.source_slice, stack.z_mm, thr, ranges, model_name(bundle))
    lesion = stack.lesion_voxels >= config.min_lesion_voxels if mask_img is not None else None
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        with (tmp / "slice_probabilities.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            cols = ["grid_slice", "source_first", "source_last", "z_mm", "probability", "flagged"]
            feature_names = list(bundle["features"]["names"]) if features is not None else []
            writer.writerow(cols + (["lesion_voxels"] if lesion is not None else []) + feature_names)
            for i in range(len(prob)):
                line = [
                    int(stack.slice_index[i]),
                    int(extent[i, 0]),
                    int(extent[i, 1]),
                    f"{stack.z_mm[i]:.2f}",
                    f"{prob[i]:.6f}",
                    int(flags[i]),
                ]
                line += [int(stack.lesion_voxels[i])] if lesion is not None else []
                writer.writerow(line + ([f"{v:.4f}" for v in features[i]] if features is not None else []))
        summary = {
            "scan": str(scan),
            "model": str(model),
            "kind": bundle["kind"],
            "threshold": thr,
            "n_slices": len(prob),
            "n_flagged": int(flags.sum()),
            "ranges": ranges,
        }
        name = pred.model
        summary["model_name"] = name
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
        clock.lap("figures")
        summary["seconds"] = clock.seconds
        (tmp / "flagged_ranges.json").write_text(json.dumps(summary, indent=1))
    return pred


class _Clock:
    """Seconds spent in each named stage (in ``flagged_ranges.json``: where a slow prediction spent its time)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._last, 2)
        self._last = now
