"""Picture of what :func:`medfoundry.preprocessing.anatomy.find_anatomy` found: coronal and sagittal MIPs of the
scan (head up, patient's right on the left of the coronal view, front on the left of the sagittal view), each
organ outlined in its own colour, the mid-sagittal plane dashed, and a legend with every organ's status."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medfoundry.evaluation.lesion_figures import MIP_SUV_MAX
from medfoundry.io.figures import pyplot_agg, save_figure
from medfoundry.preprocessing.anatomy import FOUND, Anatomy

ORGAN_COLOURS = {
    "brain": "#1f77b4",
    "salivary": "#17becf",
    "heart": "#d62728",
    "liver": "#8c564b",
    "kidney_right": "#2ca02c",
    "kidney_left": "#98df8a",
    "ureters": "#bcbd22",
    "bladder": "#e377c2",
    "bowel": "#9467bd",
}
BODY_COLOUR = "#7f7f7f"


def _legend_label(anatomy: Anatomy, name: str) -> str:
    organ = anatomy.organs[name]
    if organ.status == FOUND:
        return f"{name.replace('_', ' ')}: {anatomy.volume_ml(name):.0f} mL"
    return f"{name.replace('_', ' ')}: {organ.status}"


def save_anatomy_mip(
    suv: np.ndarray,
    anatomy: Anatomy,
    spacing_zyx: tuple[float, ...],
    path: str | Path,
    title: str = "",
    overwrite: bool = False,
) -> Path:
    """Write the coronal + sagittal MIP figure of ``anatomy`` found on ``suv`` (native grid, ``spacing_zyx`` mm)."""
    plt = pyplot_agg()
    from matplotlib.lines import Line2D

    grid = anatomy.grid
    volume = grid.canonical(suv)  # (towards head, towards back, towards patient's left)
    spacing = [float(spacing_zyx[a]) for a in grid.axes]
    views = [("coronal", 1, spacing[0] / spacing[2]), ("sagittal", 2, spacing[0] / spacing[1])]
    height = volume.shape[0] * spacing[0]
    width = max(volume.shape[2] * spacing[2], volume.shape[1] * spacing[1])
    fig, axes = plt.subplots(1, 2, figsize=(11, max(4.0, 5.5 * height / width) + 1.2))
    masks = {name: grid.canonical(organ.mask) for name, organ in anatomy.organs.items() if organ.mask is not None}
    body = None if anatomy.body is None else grid.canonical(anatomy.body)
    for ax, (name, axis, aspect) in zip(axes, views, strict=True):
        ax.imshow(volume.max(axis=axis), cmap="gray_r", vmin=0, vmax=MIP_SUV_MAX, aspect=aspect, origin="lower")
        if body is not None:
            ax.contour(body.any(axis=axis).astype(float), levels=[0.5], colors=[BODY_COLOUR], linewidths=0.5)
        for organ, mask in masks.items():
            ax.contour(mask.any(axis=axis).astype(float), levels=[0.5], colors=[ORGAN_COLOURS[organ]], linewidths=1.2)
        ax.set_title(f"{name} MIP (SUV 0-{MIP_SUV_MAX:g})")
        ax.axis("off")
    midline = anatomy.work_body.midline
    if midline is not None:  # working-grid mm -> native canonical index: i = mm / spacing - 0.5 + block / 2
        cc = np.arange(volume.shape[0])
        cc_mm = (cc + 0.5 - grid.blocks[0] / 2) * spacing[0]
        lr = (midline.lr_mm + midline.slope * cc_mm) / spacing[2] - 0.5 + grid.blocks[2] / 2
        axes[0].plot(lr, cc, ls="--", lw=0.7, color="#ff7f0e")
    handles = [Line2D([], [], color=ORGAN_COLOURS[n], lw=2 if n in masks else 1, ls="-" if n in masks else ":",
                      label=_legend_label(anatomy, n)) for n in anatomy.organs]  # fmt: skip
    handles.append(Line2D([], [], color="#ff7f0e", ls="--", lw=0.7, label="mid-sagittal plane"))
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(f"{title}  anatomy ({anatomy.seconds:.1f} s)".strip())
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    save_figure(fig, path, overwrite=overwrite, dpi=100)
    return Path(path)
