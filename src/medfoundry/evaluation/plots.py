"""A PNG of the per-case metric distributions, one box per class."""

from __future__ import annotations

import math
from pathlib import Path

from medfoundry.evaluation.evaluator import SegmentationEvaluator
from medfoundry.io.figures import pyplot_agg, save_figure


def plot_metrics(evaluator: SegmentationEvaluator, path: str | Path, overwrite: bool = False) -> Path:
    """Box plots (with the cases as dots) of DSC, NSD and, outside challenge mode, HD95 per class."""
    plt = pyplot_agg()

    metrics = ["dsc", "nsd"] if evaluator.challenge_compat else ["dsc", "nsd", "hd95"]
    titles = {"dsc": "DSC", "nsd": f"NSD @ {evaluator.tolerance_mm:g} mm", "hd95": "HD95 (mm)"}
    labels = [m["label"] for m in evaluator.per_class_mean()]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics) + 0.3 * len(labels), 3.6))
    for ax, metric in zip(axes, metrics, strict=True):
        data = []
        for lab in labels:
            vals = [r[metric] for r in evaluator.rows if r["label"] == lab]
            data.append([v for v in vals if v is not None and math.isfinite(v)])
        positions = list(range(1, len(labels) + 1))
        ax.boxplot([d if d else [math.nan] for d in data], positions=positions, widths=0.6, showfliers=False)
        for pos, vals in zip(positions, data, strict=True):
            jitter = [pos + 0.15 * ((i % 5) - 2) / 2 for i in range(len(vals))]
            ax.scatter(jitter, vals, s=8, alpha=0.6, color="tab:blue")
        ax.set_xticks(positions, [str(lab) for lab in labels])
        ax.set_xlabel("class")
        ax.set_title(titles[metric])
        if metric in ("dsc", "nsd"):
            ax.set_ylim(-0.02, 1.02)
        ax.grid(axis="y", alpha=0.3)
    n_cases = len({r["case"] for r in evaluator.rows})
    fig.suptitle(f"{n_cases} case(s)" + (" - MedSAM-on-laptop 2024 scoring" if evaluator.challenge_compat else ""))
    fig.tight_layout()
    save_figure(fig, path, overwrite=overwrite, dpi=120)
    return Path(path)
