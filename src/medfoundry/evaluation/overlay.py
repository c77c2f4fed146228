"""Overlay pictures: mask outlines over the image, for 2D images and for chosen slices of a volume."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medfoundry.io.figures import pyplot_agg, save_figure
from medfoundry.preprocessing.boxes import mask_slices


def _slices_to_show(labels: np.ndarray, gt: np.ndarray | None, max_slices: int) -> list[int]:
    """Slices with the most foreground (prediction or ground truth), in z order."""
    fg = (labels > 0).reshape(len(labels), -1).sum(1)
    if gt is not None:
        fg = fg + (gt > 0).reshape(len(gt), -1).sum(1)
    if not fg.any():
        return [len(labels) // 2]
    nonzero = np.nonzero(fg)[0]
    # spread the picks over the extent of the object, favouring the largest slice
    picks = {int(np.argmax(fg))}
    picks.update(int(z) for z in np.linspace(nonzero.min(), nonzero.max(), max_slices).round())
    return sorted(picks)[:max_slices]


def _zoom_window(labels: np.ndarray, gt: np.ndarray | None, is_3d: bool, min_side: int = 48) -> tuple[slice, ...]:
    """In-plane crop around all foreground (prediction and reference) with a margin as large as the object."""
    fg = labels > 0 if gt is None else (labels > 0) | (gt > 0)
    if is_3d:
        fg = fg.any(axis=0)
    slices = mask_slices(fg)
    if slices is None:
        return (slice(None), slice(None))
    window = []
    for axis, extent in enumerate(slices):
        first, last = extent.start, extent.stop - 1
        centre, half = (first + last) / 2, max(last - first + 1, min_side / 2)
        lo = int(max(0, np.floor(centre - half)))
        window.append(slice(lo, int(min(fg.shape[axis], np.ceil(centre + half + 1)))))
    return tuple(window)


def save_overlay(
    image: np.ndarray,
    labels: np.ndarray,
    path: str | Path,
    *,
    gt: np.ndarray | None = None,
    is_3d: bool = False,
    title: str = "",
    max_slices: int = 4,
    overwrite: bool = False,
) -> Path:
    """Write a PNG of the image (in [0, 1]) with predicted outlines (colours) and ground truth (white, dashed)."""
    plt = pyplot_agg()

    if is_3d:
        zs = _slices_to_show(labels, gt, max_slices)
        panels = [(image[z], labels[z], None if gt is None else gt[z], f"slice {z}") for z in zs]
    else:
        panels = [(image, labels, gt, "")]
    window = _zoom_window(labels, gt, is_3d)
    panels = [tuple(None if a is None else a[window] for a in panel[:3]) + (panel[3],) for panel in panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.3), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, (img, lab, ref, name) in zip(axes[0], panels, strict=True):
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        for k, value in enumerate(v for v in np.unique(lab) if v):
            ax.contour(lab == value, levels=[0.5], colors=[cmap(k % 10)], linewidths=1.5)
        if ref is not None and ref.any():
            ax.contour(ref > 0, levels=[0.5], colors="white", linewidths=1.0, linestyles="--")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title + ("  (dashed white: reference)" if gt is not None else ""), fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, overwrite=overwrite, dpi=110)
    return Path(path)
