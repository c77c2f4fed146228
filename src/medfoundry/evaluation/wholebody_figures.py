"""Coronal MIP pictures of whole-body PET: lesion-insertion examples (before / after, inserted lesions
outlined) and slice-classifier results (flagged slice ranges marked)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medfoundry.evaluation.lesion_figures import MIP_SUV_MAX, superior_up
from medfoundry.io.figures import pyplot_agg, save_figure


def _display_max(volume: np.ndarray) -> float:
    """0-10 for SUV; for other units (Bq/mL) the 99.9th percentile of the MIP scaled like SUV 10 / SUVmax."""
    peak = float(np.max(volume)) if volume.size else 1.0
    if peak <= 200.0:  # SUV
        return MIP_SUV_MAX
    return float(np.percentile(volume.max(axis=1), 99.9)) * 0.5


def _coronal(ax, volume: np.ndarray, spacing: Sequence[float], direction: Sequence[float], vmax: float) -> str:
    origin = "lower" if superior_up(tuple(direction)) else "upper"
    sx, _, sz = spacing
    ax.imshow(volume.max(axis=1), cmap="gray_r", vmin=0, vmax=vmax, aspect=sz / sx, origin=origin)
    ax.set_xticks([])
    ax.set_yticks([])
    return origin


def save_insertion_examples(
    background: np.ndarray,
    examples: Sequence[tuple[np.ndarray, np.ndarray]],
    spacing: Sequence[float],
    direction: Sequence[float],
    path: str | Path,
    titles: Sequence[str] = (),
    overwrite: bool = False,
) -> Path:
    """Coronal MIPs: the background, then each ``(image, inserted_mask)`` with the inserted lesions outlined."""
    plt = pyplot_agg()
    n = 1 + len(examples)
    height = 6.5 * max(0.6, background.shape[0] * spacing[2] / (background.shape[2] * spacing[0]) / 2)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, height), squeeze=False)
    vmax = _display_max(background)
    _coronal(axes[0, 0], background, spacing, direction, vmax)
    axes[0, 0].set_title("background", fontsize=9)
    for i, (image, mask) in enumerate(examples):
        ax = axes[0, i + 1]
        origin = _coronal(ax, image, spacing, direction, vmax)
        proj = np.asarray(mask).any(axis=1)
        if proj.any():
            ax.contour(proj.astype(float), levels=[0.5], colors=["#e41a1c"], linewidths=0.9, origin=origin)
        ax.set_title(titles[i] if i < len(titles) else f"example {i + 1}", fontsize=9)
    fig.suptitle(f"lesion insertion: coronal MIPs (0-{vmax:g}), inserted lesions outlined in red", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, overwrite=overwrite, dpi=110)
    return Path(path)


def save_flagged_mip(
    volume: np.ndarray,
    spacing: Sequence[float],
    direction: Sequence[float],
    ranges: Sequence[tuple[int, int]],
    path: str | Path,
    lesion: np.ndarray | None = None,
    title: str = "",
    overwrite: bool = False,
    unscored: np.ndarray | None = None,
) -> Path:
    """Coronal MIP with the flagged slice ranges (first, last source slice, inclusive) shaded; lesions outlined;
    ``unscored`` (e.g. unlabelled suspicious foci whose slices are left out of scoring) outlined in grey."""
    plt = pyplot_agg()
    height = 8.0 * max(0.5, volume.shape[0] * spacing[2] / (volume.shape[2] * spacing[0]) / 2)
    fig, ax = plt.subplots(figsize=(4.2, height))
    origin = _coronal(ax, volume, spacing, direction, _display_max(volume))
    for first, last in ranges:
        ax.axhspan(first - 0.5, last + 0.5, color="#ff7f00", alpha=0.3, linewidth=0)
    if lesion is not None and np.asarray(lesion).any():
        proj = np.asarray(lesion).any(axis=1)
        ax.contour(proj.astype(float), levels=[0.5], colors=["#377eb8"], linewidths=0.9, origin=origin)
        ax.plot([], [], color="#377eb8", label="lesion in mask")
    if unscored is not None and np.asarray(unscored).any():
        proj = np.asarray(unscored).any(axis=1)
        ax.contour(proj.astype(float), levels=[0.5], colors=["#984ea3"], linewidths=0.9, origin=origin)
        ax.plot([], [], color="#984ea3", label="unlabelled focus (not scored)")
    ax.plot([], [], color="#ff7f00", alpha=0.5, linewidth=6, label=f"flagged ({len(ranges)} range(s))")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title or "coronal MIP, flagged slices", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, overwrite=overwrite, dpi=110)
    return Path(path)
