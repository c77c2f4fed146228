"""Exemplar-guided synthesis (few-exemplar SAM paper, after Garcia-Peraza-Herrera et al.): cut each labelled
object from an exemplar slice, transform it (blur, intensity change, scale, flip, rotation), and paste it onto a
transformed background slice without foreground, near the object's position in the exemplar (same relative
position, small shift). Labels follow from the pasted masks. Intensities stay in the image's own units (e.g.
SUV), so the trainer normalises synthetic and real slices alike."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from medfoundry.errors import InputError
from medfoundry.io import MedicalImage, write_image, write_mask
from medfoundry.io.atomic import atomic_dir, check_writable
from medfoundry.io.figures import pyplot_agg, save_figure


@dataclass
class SynthesisConfig:
    """Ranges of the random transforms."""

    blur_sigma: tuple[float, float] = (0.0, 1.0)  # pixels
    intensity: tuple[float, float] = (0.8, 1.2)  # multiplicative
    scale: tuple[float, float] = (0.8, 1.2)
    rotation_deg: tuple[float, float] = (-20.0, 20.0)
    flip_prob: float = 0.5
    max_shift: float = 0.05  # of the image size, around the exemplar position
    background_intensity: tuple[float, float] = (0.9, 1.1)


@dataclass
class Slice2D:
    """One 2D slice in the image's units with its label map and in-plane spacing (y, x)."""

    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float]
    case: str


def exemplar_and_background_slices(
    pairs: list[tuple[MedicalImage, MedicalImage, str]],
) -> tuple[list[Slice2D], list[Slice2D]]:
    """Slices with foreground (exemplars) and without (backgrounds) of labelled images."""
    exemplars, backgrounds = [], []
    for image, mask, case in pairs:
        arr, lab = image.array.astype(np.float32), mask.array
        if image.spatial_ndim == 2:
            planes, spacing = [(arr, lab)], tuple(image.spacing_zyx)
        else:
            planes, spacing = list(zip(arr, lab, strict=True)), tuple(image.spacing_zyx[1:])
        for plane, plane_lab in planes:
            target = exemplars if plane_lab.any() else backgrounds
            target.append(Slice2D(plane, plane_lab, spacing, case))  # type: ignore[arg-type]
    return exemplars, backgrounds


def _transform_object(crop: np.ndarray, mask: np.ndarray, rng: np.random.Generator, cfg: SynthesisConfig):
    """Blur, intensity, flip, scale and rotate a cut-out object and its mask."""
    sigma = rng.uniform(*cfg.blur_sigma)
    if sigma > 0.05:
        crop = ndimage.gaussian_filter(crop, sigma)
    crop = crop * rng.uniform(*cfg.intensity)
    if rng.random() < cfg.flip_prob:
        crop, mask = crop[:, ::-1], mask[:, ::-1]
    if rng.random() < cfg.flip_prob:
        crop, mask = crop[::-1], mask[::-1]
    zoom = rng.uniform(*cfg.scale)
    crop = ndimage.zoom(crop, zoom, order=1)
    mask = ndimage.zoom(mask.astype(np.float32), zoom, order=1) > 0.5
    angle = rng.uniform(*cfg.rotation_deg)
    crop = ndimage.rotate(crop, angle, reshape=True, order=1)
    mask = ndimage.rotate(mask.astype(np.float32), angle, reshape=True, order=1) > 0.5
    return crop, mask


def synthesize_one(
    exemplar: Slice2D, background: Slice2D, rng: np.random.Generator, cfg: SynthesisConfig
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic (image, labels) pair on the background's grid."""
    image = background.image * rng.uniform(*cfg.background_intensity)
    if rng.random() < cfg.flip_prob:
        image = image[:, ::-1]
    image = np.ascontiguousarray(image, dtype=np.float32)
    labels = np.zeros(image.shape, dtype=exemplar.labels.dtype)
    eh, ew = exemplar.labels.shape
    bh, bw = image.shape
    for value in (v for v in np.unique(exemplar.labels) if v):
        obj = exemplar.labels == value
        ys, xs = np.nonzero(obj)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        crop = np.where(obj[y0:y1, x0:x1], exemplar.image[y0:y1, x0:x1], 0.0)
        crop, mask = _transform_object(crop, obj[y0:y1, x0:x1], rng, cfg)
        if not mask.any():
            continue
        # centre near the exemplar's relative position
        cy = (ys.mean() / eh + rng.uniform(-cfg.max_shift, cfg.max_shift)) * bh
        cx = (xs.mean() / ew + rng.uniform(-cfg.max_shift, cfg.max_shift)) * bw
        top, left = int(round(cy - mask.shape[0] / 2)), int(round(cx - mask.shape[1] / 2))
        sy0, sx0 = max(0, -top), max(0, -left)
        ty0, tx0 = max(0, top), max(0, left)
        ty1, tx1 = min(bh, top + mask.shape[0]), min(bw, left + mask.shape[1])
        if ty1 <= ty0 or tx1 <= tx0:
            continue
        m = mask[sy0 : sy0 + ty1 - ty0, sx0 : sx0 + tx1 - tx0]
        c = crop[sy0 : sy0 + ty1 - ty0, sx0 : sx0 + tx1 - tx0]
        region = image[ty0:ty1, tx0:tx1]
        region[m] = c[m]
        labels[ty0:ty1, tx0:tx1][m] = value
    return image, labels


def synthesize_dataset(
    pairs: list[tuple[MedicalImage, MedicalImage, str]],
    out_dir: str | Path,
    count: int,
    *,
    modality: str = "OTHER",
    seed: int = 0,
    config: SynthesisConfig | None = None,
    overwrite: bool = False,
    picture: bool = True,
    progress: bool = True,
) -> Path:
    """Write ``count`` synthetic slices made from ``pairs`` (image, labels, case) to ``out_dir`` as
    ``syn_NNNN_image.nii.gz`` / ``syn_NNNN_mask.nii.gz`` plus ``dataset.json`` (read by ``finetune``) and
    ``synthesis.png``. The folder appears only when complete."""
    cfg = config or SynthesisConfig()
    out_dir = check_writable(out_dir, overwrite, folder=True, create=False)  # before any work
    exemplars, backgrounds = exemplar_and_background_slices(pairs)
    if not exemplars:
        raise InputError(None, "the exemplars have no foreground: nothing to cut out")
    if not backgrounds:
        raise InputError(None, "every exemplar slice has foreground: no background slice to paste onto")
    if count < 1:
        raise InputError(None, f"asked for {count} synthetic images; give at least 1")
    rng = np.random.default_rng(seed)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        entries, shown = [], []
        for i in tqdm(range(count), desc="synthesizing", unit="image", disable=not progress):
            ex = exemplars[int(rng.integers(len(exemplars)))]
            bg = backgrounds[int(rng.integers(len(backgrounds)))]
            image, labels = synthesize_one(ex, bg, rng, cfg)
            spacing_xy = (bg.spacing[1], bg.spacing[0])
            img = MedicalImage(image, spacing_xy, modality=modality if modality != "RGB" else "OTHER")
            name = f"syn_{i:04d}"
            write_image(img, tmp / f"{name}_image.nii.gz")
            write_mask(labels, tmp / f"{name}_mask.nii.gz", reference=img)
            entries.append({"image": f"{name}_image.nii.gz", "mask": f"{name}_mask.nii.gz",
                            "exemplar": ex.case, "background": bg.case})  # fmt: skip
            if len(shown) < 6:
                shown.append((ex, image, labels))
        manifest = {"modality": modality, "seed": seed, "count": count,
                    "exemplar_cases": sorted({c for _, _, c in pairs}), "pairs": entries}  # fmt: skip
        (tmp / "dataset.json").write_text(json.dumps(manifest, indent=1))
        if picture:
            save_synthesis_picture(shown, tmp / "synthesis.png")
    return out_dir


def save_synthesis_picture(shown: list[tuple[Slice2D, np.ndarray, np.ndarray]], path: Path) -> None:
    """Exemplars (top row) above the synthetic images made from them (bottom row), masks outlined."""
    plt = pyplot_agg()

    n = len(shown)
    fig, axes = plt.subplots(2, n, figsize=(2.2 * n, 4.6), squeeze=False)
    for j, (ex, image, labels) in enumerate(shown):
        for row, (img, lab, title) in enumerate(((ex.image, ex.labels, f"exemplar {ex.case}"),
                                                 (image, labels, f"synthetic {j}"))):  # fmt: skip
            ax = axes[row, j]
            ax.imshow(img, cmap="gray")
            if lab.any():
                ax.contour(lab > 0, levels=[0.5], colors="red", linewidths=0.8)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path, overwrite=True, dpi=90)
