"""Binary slice-classification metrics (scikit-learn), comparison tables and ROC / PR / confusion plots."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from medfoundry.errors import InputError
from medfoundry.io.figures import pyplot_agg, save_figure

METRIC_COLUMNS = ("accuracy", "precision", "recall", "specificity", "f1", "roc_auc", "ap")
COUNT_COLUMNS = ("n", "n_pos", "tp", "fp", "tn", "fn", "threshold")


def _check(y_true: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true).astype(np.int64).ravel()
    prob = np.asarray(prob, dtype=np.float64).ravel()
    if y_true.shape != prob.shape:
        raise InputError(None, f"{y_true.size} labels but {prob.size} probabilities")
    if y_true.size == 0:
        raise InputError(None, "no samples to evaluate")
    if not np.isin(y_true, (0, 1)).all():
        raise InputError(None, f"labels must be 0/1, got {sorted(set(np.unique(y_true).tolist()))}")
    return y_true, prob


def binary_metrics(y_true: Sequence[int], prob: Sequence[float], threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, precision, recall, specificity, F1 at ``prob >= threshold``; ROC-AUC and AP from ``prob``.

    Undefined values (e.g. ROC-AUC with one class present, precision with no positive call) are NaN.
    """
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        confusion_matrix,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    y, p = _check(np.asarray(y_true), np.asarray(prob))
    pred = (p >= threshold).astype(np.int64)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    both = np.unique(y).size == 2
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "precision": float(precision_score(y, pred, zero_division=np.nan)),
        "recall": float(recall_score(y, pred, zero_division=np.nan)),
        "specificity": float(tn / (tn + fp)) if (tn + fp) else math.nan,
        "f1": float(f1_score(y, pred, zero_division=np.nan)),
        "roc_auc": float(roc_auc_score(y, p)) if both else math.nan,
        "ap": float(average_precision_score(y, p)) if y.any() else math.nan,
        "n": int(y.size),
        "n_pos": int(y.sum()),
        "tp": int(tp),
        "fp": int(fp),
        "tn": int(tn),
        "fn": int(fn),
        "threshold": float(threshold),
    }


def _fmt(value: float, digits: int = 3) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def comparison_markdown(rows: Mapping[str, Mapping[str, float]], extra: Sequence[str] = ()) -> str:
    """A markdown table: one row per model, the seven metrics, the confusion counts and ``extra`` columns."""
    cols = list(METRIC_COLUMNS) + ["tp", "fp", "tn", "fn", "threshold"] + list(extra)
    lines = ["| model | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(row.get(c, math.nan)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def write_comparison_csv(rows: Mapping[str, Mapping[str, float]], path: str | Path) -> None:
    """The comparison table as CSV (one row per model, full precision)."""
    keys: list[str] = []
    for row in rows.values():
        keys += [k for k in row if k not in keys]
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model", *keys])
        for name, row in rows.items():
            writer.writerow([name, *[row.get(k, "") for k in keys]])


def plot_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path, kind: str = "roc", title: str = ""
) -> None:
    """ROC (``kind="roc"``) or precision-recall (``kind="pr"``) curves of several models in one PNG."""
    plt = pyplot_agg()
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    fig, ax = plt.subplots(figsize=(5.2, 5))
    one_class = False
    for name, (y, p) in curves.items():
        y, p = _check(y, p)
        if np.unique(y).size < 2:
            one_class = True
            continue
        if kind == "roc":
            fpr, tpr, _ = roc_curve(y, p)
            ax.plot(fpr, tpr, label=f"{name} (AUC {auc(fpr, tpr):.3f})")
        else:
            prec, rec, _ = precision_recall_curve(y, p)
            ax.step(rec, prec, where="post", label=f"{name}")
    if kind == "roc":
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("false-positive rate (1 - specificity)")
        ax.set_ylabel("true-positive rate (recall)")
    else:
        any_y = next(iter(curves.values()))[0] if curves else np.array([0])
        ax.axhline(float(np.mean(any_y)), color="grey", linestyle=":", linewidth=1, label="prevalence")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title or ("ROC, test split" if kind == "roc" else "precision-recall, test split"))
    if one_class:
        ax.text(0.5, 0.5, "one class only: no curve", ha="center", va="center", color="red")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right" if kind == "roc" else "lower left", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, overwrite=True, dpi=120)


def plot_confusions(rows: Mapping[str, Mapping[str, float]], path: str | Path) -> None:
    """One 2 x 2 confusion matrix per model (counts at the chosen threshold) in a single PNG."""
    plt = pyplot_agg()

    n = max(1, len(rows))
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.2), squeeze=False)
    for ax, (name, row) in zip(axes[0], rows.items(), strict=False):
        mat = np.array([[row["tn"], row["fp"]], [row["fn"], row["tp"]]], dtype=float)
        ax.imshow(mat, cmap="Blues")
        for i in range(2):
            for j in range(2):
                colour = "white" if mat[i, j] > mat.max() / 2 else "black"
                ax.text(j, i, f"{int(mat[i, j])}", ha="center", va="center", color=colour)
        ax.set_xticks([0, 1], ["normal", "abnormal"])
        ax.set_yticks([0, 1], ["normal", "abnormal"])
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{name}\n(threshold {row['threshold']:.2f})", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, overwrite=True, dpi=120)
