"""Pictures of found lesions: coronal + sagittal MIPs with lesions outlined and numbered, and an axial
thumbnail sheet (one tile per lesion, through its hottest voxel)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medfoundry.io.figures import pyplot_agg, save_figure

MIP_SUV_MAX = 10.0  # display range 0-10 SUV, inverted grey (black = hot), as PET readers view MIPs
MAX_THUMBNAILS = 60
COLOURS = ("#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#a65628", "#f781bf")


def superior_up(direction: tuple[float, ...]) -> bool:
    """True when a larger slice index is more superior (patient +z), so slice 0 goes at the bottom."""
    return float(np.asarray(direction).reshape(3, 3)[2, 2]) >= 0


def save_mip(
    suv: np.ndarray,
    labels: np.ndarray,
    spacing: tuple[float, ...],
    direction: tuple[float, ...],
    path: str | Path,
    title: str = "",
    overwrite: bool = False,
) -> Path:
    """``mip.png``: coronal (max over y) and sagittal (max over x) MIPs, each lesion outlined and numbered."""
    plt = pyplot_agg()
    sx, sy, sz = spacing
    views = [("coronal", 1, sz / sx), ("sagittal", 2, sz / sy)]
    origin = "lower" if superior_up(direction) else "upper"
    fig, axes = plt.subplots(1, 2, figsize=(9, 9 * max(1.0, labels.shape[0] * sz / max(labels.shape[1:]) / sx) / 2))
    ids = [int(v) for v in np.unique(labels) if v]
    for ax, (name, axis, aspect) in zip(axes, views, strict=False):
        ax.imshow(suv.max(axis=axis), cmap="gray_r", vmin=0, vmax=MIP_SUV_MAX, aspect=aspect, origin=origin)
        for lab in ids:
            proj = (labels == lab).any(axis=axis)
            colour = COLOURS[(lab - 1) % len(COLOURS)]
            ax.contour(proj.astype(float), levels=[0.5], colors=[colour], linewidths=0.8, origin=origin)
            zs, cols = np.nonzero(proj)
            ax.text(cols.max() + 2, zs.mean(), str(lab), color=colour, fontsize=8, va="center", fontweight="bold")
        ax.set_title(f"{name} MIP (SUV 0-{MIP_SUV_MAX:g})")
        ax.axis("off")
    fig.suptitle(f"{title}  {len(ids)} lesion(s)".strip())
    fig.tight_layout()
    save_figure(fig, path, overwrite=overwrite, dpi=110)
    return Path(path)


def save_thumbnails(
    suv: np.ndarray, labels: np.ndarray, lesions: list[dict], path: str | Path, overwrite: bool = False
) -> Path:
    """``thumbnails.png``: per lesion, the axial slice through its hottest voxel around the lesion, outlined."""
    plt = pyplot_agg()
    shown = lesions[:MAX_THUMBNAILS]
    cols = min(5, max(1, len(shown)))
    rows = max(1, int(np.ceil(len(shown) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    if not shown:
        axes[0, 0].text(0.5, 0.5, "no lesions found", ha="center", va="center", transform=axes[0, 0].transAxes)
    for ax, les in zip(axes.ravel(), shown, strict=False):
        mask = labels == les["id"]
        values = np.where(mask, suv, -np.inf)
        z, y, x = np.unravel_index(int(values.argmax()), values.shape)
        ys, xs = np.nonzero(mask[z])
        half = max(12, int(max(np.ptp(ys), np.ptp(xs))) + 6)
        y0, x0 = max(0, y - half), max(0, x - half)
        tile = suv[z, y0 : y + half + 1, x0 : x + half + 1]
        ax.imshow(tile, cmap="gray_r", vmin=0, vmax=MIP_SUV_MAX)
        ax.contour(mask[z, y0 : y + half + 1, x0 : x + half + 1].astype(float), levels=[0.5], colors=["#e41a1c"])
        ax.set_title(f"#{les['id']} z={z}\nSUVmax {les['suv_max']:.1f}, {les['mtv_ml']:.1f} mL", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, overwrite=overwrite, dpi=110)
    return Path(path)
