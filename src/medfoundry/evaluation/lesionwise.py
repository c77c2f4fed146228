"""Lesion-wise evaluation in the autoPET style: lesions matched by overlap, per scan and per lesion.

Reference lesions are the connected components of ``ref > 0``, predicted lesions those of ``pred > 0`` (a
multi-label map is binarised first), with 18-connectivity in 3D and 8 in 2D (:func:`lesions.components`).
A reference lesion is *detected* when any predicted component overlaps it by at least one voxel; a
predicted component that overlaps no reference lesion is a *false positive*. Each reference lesion's Dice
is taken against the union of the predicted components touching it (0.0 for a missed lesion), so a
predicted component spanning two lesions counts in both. ``sensitivity`` and the mean lesion Dice are NaN
for a scan without reference lesions; the overall Dice follows :func:`overlap.dice` (1.0 when both are empty).
Lesion ids number the reference components in the (z, y, x) raster order of their first voxel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from medfoundry.errors import InputError
from medfoundry.evaluation._checks import check_pair, check_spacing
from medfoundry.evaluation.evaluator import _as_labels, _fmt, _nanmean, _write_rows
from medfoundry.evaluation.lesions import components, lesion_errors
from medfoundry.evaluation.overlap import dice_from_counts

CASE_COLUMNS = (
    "case",
    "n_ref_lesions",
    "n_detected",
    "n_missed",
    "n_pred_components",
    "n_false_positive_components",
    "sensitivity",
    "false_positives",
    "mean_lesion_dice",
    "dice",
    "fpv_ml",
    "fnv_ml",
)
LESION_COLUMNS = ("case", "lesion_id", "volume_ml", "detected", "dice", "n_pred_components", "pred_volume_ml")


def lesion_table_path(out: str | Path) -> Path:
    """Where the per-lesion CSV goes beside the per-case one: ``metrics.csv`` -> ``metrics_lesions.csv``."""
    out = Path(out)
    return out.with_name(f"{out.stem}_lesions{out.suffix or '.csv'}")


@dataclass(frozen=True)
class LesionRow:
    """One reference lesion: its component id, volume, whether it was found, and its Dice."""

    lesion_id: int
    volume_ml: float
    detected: bool
    dice: float
    n_pred_components: int  # predicted components touching it
    pred_volume_ml: float  # volume of their union

    def as_dict(self) -> dict:
        """The fields as a plain dict (for tables)."""
        return asdict(self)


@dataclass(frozen=True)
class LesionWiseResult:
    """Lesion-wise metrics of one scan (see the module docstring for the matching rules)."""

    n_ref_lesions: int
    n_detected: int
    n_missed: int
    n_pred_components: int
    n_false_positive_components: int
    sensitivity: float  # n_detected / n_ref_lesions; NaN without reference lesions
    lesion_dice: tuple[float, ...]  # per reference lesion, in lesion id order
    mean_lesion_dice: float  # NaN without reference lesions
    dice: float  # overall Dice of pred > 0 vs ref > 0
    fpv_ml: float
    fnv_ml: float
    lesions: tuple[LesionRow, ...] = field(default=())

    @property
    def false_positives(self) -> int:
        """False-positive components in this scan (its mean over scans is "FP per scan")."""
        return self.n_false_positive_components

    def as_dict(self) -> dict:
        """The per-scan scalars as a plain dict (one CSV row); per-lesion values are in :meth:`lesion_table`."""
        out = {k: v for k, v in asdict(self).items() if k not in ("lesion_dice", "lesions")}
        out["false_positives"] = self.false_positives
        return out

    def lesion_table(self) -> list[dict]:
        """One dict per reference lesion (id, volume ml, detected, dice, touching components, their volume)."""
        return [row.as_dict() for row in self.lesions]


def _foreground(arr: np.ndarray, name: str) -> np.ndarray:
    """Any non-negative integer label map (or binary mask) as a bool foreground mask."""
    return _as_labels(arr, name) != 0


def lesion_wise(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | float | None = None) -> LesionWiseResult:
    """Lesion-wise metrics of ``pred`` vs ``ref`` (2D or 3D label maps); spacing in mm, array axis order."""
    p, r = check_pair(pred, ref, _foreground, "label maps")
    sp = check_spacing(spacing, p.ndim)
    voxel_ml = float(np.prod(sp)) / 1000.0
    ref_lab, n_ref = components(r)
    pred_lab, n_pred = components(p)
    pred_sizes = np.bincount(pred_lab.ravel(), minlength=n_pred + 1)
    ref_sizes = np.bincount(ref_lab.ravel(), minlength=n_ref + 1)
    both = p & r
    # (reference lesion, predicted component) pairs that share at least one voxel
    pairs = np.unique(np.stack([ref_lab[both], pred_lab[both]]), axis=1) if both.any() else np.zeros((2, 0), int)
    # every predicted voxel inside lesion i belongs to a component touching i: |L_i & U_i| = |L_i & P|
    inter = np.bincount(ref_lab[both], minlength=n_ref + 1)
    rows = []
    for i in range(1, n_ref + 1):
        touching = pairs[1][pairs[0] == i]
        union = int(pred_sizes[touching].sum())
        rows.append(
            LesionRow(
                lesion_id=i,
                volume_ml=float(ref_sizes[i]) * voxel_ml,
                detected=bool(len(touching)),
                dice=dice_from_counts(int(inter[i]), union, int(ref_sizes[i])),
                n_pred_components=len(touching),
                pred_volume_ml=union * voxel_ml,
            )
        )
    n_detected = sum(row.detected for row in rows)
    n_fp = n_pred - len(np.unique(pairs[1]))
    errors = lesion_errors(p, r, sp)
    lesion_dice = tuple(row.dice for row in rows)
    return LesionWiseResult(
        n_ref_lesions=n_ref,
        n_detected=n_detected,
        n_missed=n_ref - n_detected,
        n_pred_components=n_pred,
        n_false_positive_components=n_fp,
        sensitivity=n_detected / n_ref if n_ref else math.nan,
        lesion_dice=lesion_dice,
        mean_lesion_dice=float(np.mean(lesion_dice)) if lesion_dice else math.nan,
        dice=dice_from_counts(int(both.sum()), int(p.sum()), int(r.sum())),
        fpv_ml=errors.fpv_ml,
        fnv_ml=errors.fnv_ml,
        lesions=tuple(rows),
    )


class LesionWiseEvaluator:
    """Accumulates scans: a per-scan table, a per-lesion table and the summary over scans."""

    def __init__(self) -> None:
        self.results: dict[str, LesionWiseResult] = {}

    def add(
        self, case: str, pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | float | None = None
    ) -> LesionWiseResult:
        """Evaluate one scan and keep its result under ``case``."""
        case = str(case)
        if case in self.results:
            raise InputError(None, f"case {case!r} was added twice")
        self.results[case] = result = lesion_wise(pred, ref, spacing)
        return result

    def per_case(self) -> list[dict]:
        """One row per scan (``CASE_COLUMNS``)."""
        return [{"case": case, **res.as_dict()} for case, res in self.results.items()]

    def per_lesion(self) -> list[dict]:
        """One row per reference lesion of every scan (``LESION_COLUMNS``)."""
        return [{"case": case, **row} for case, res in self.results.items() for row in res.lesion_table()]

    def summary(self) -> dict:
        """Over all scans: lesion counts, pooled sensitivity, FP per scan, pooled lesion Dice, NaN-aware means."""
        res = list(self.results.values())
        n_ref = sum(r.n_ref_lesions for r in res)
        n_det = sum(r.n_detected for r in res)
        all_dice = [d for r in res for d in r.lesion_dice]
        return {
            "n_cases": len(res),
            "n_ref_lesions": n_ref,
            "n_detected": n_det,
            "n_false_positive_components": sum(r.n_false_positive_components for r in res),
            "sensitivity": n_det / n_ref if n_ref else math.nan,
            "false_positives_per_scan": _nanmean([float(r.false_positives) for r in res]),
            "mean_lesion_dice": _nanmean(all_dice),
            "dice": _nanmean([r.dice for r in res]),
            "fpv_ml": _nanmean([r.fpv_ml for r in res]),
            "fnv_ml": _nanmean([r.fnv_ml for r in res]),
        }

    def write_csv(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the per-scan table as CSV, atomically."""
        return _write_rows(path, CASE_COLUMNS, self.per_case(), overwrite)

    def write_lesion_csv(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the per-lesion table as CSV, atomically."""
        return _write_rows(path, LESION_COLUMNS, self.per_lesion(), overwrite)

    def write_summary_csv(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the summary over scans as a one-row CSV, atomically."""
        row = self.summary()
        return _write_rows(path, tuple(row), [row], overwrite)

    def summary_text(self) -> str:
        """Per-scan lines and the summary, for the terminal."""
        header = (
            f"{'case':<24} {'lesions':>7} {'found':>5} {'FP':>4} {'sens':>6} {'lesDSC':>7} {'DSC':>7} "
            f"{'FPV ml':>8} {'FNV ml':>8}"
        )
        lines = [header]
        for case, r in self.results.items():
            lines.append(
                f"{case[:24]:<24} {r.n_ref_lesions:>7} {r.n_detected:>5} {r.false_positives:>4} "
                f"{_fmt(r.sensitivity, 6, 3)} {_fmt(r.mean_lesion_dice)} {_fmt(r.dice)} "
                f"{_fmt(r.fpv_ml, 8, 2)} {_fmt(r.fnv_ml, 8, 2)}"
            )
        s = self.summary()
        lines.append(
            f"{'all (' + str(s['n_cases']) + ' scans)':<24} {s['n_ref_lesions']:>7} {s['n_detected']:>5} "
            f"{s['n_false_positive_components']:>4} {_fmt(s['sensitivity'], 6, 3)} {_fmt(s['mean_lesion_dice'])} "
            f"{_fmt(s['dice'])} {_fmt(s['fpv_ml'], 8, 2)} {_fmt(s['fnv_ml'], 8, 2)}"
        )
        lines.append(
            f"sensitivity {_fmt(s['sensitivity'], 0, 3).strip()} (pooled), "
            f"{_fmt(s['false_positives_per_scan'], 0, 2).strip()} false positives per scan, "
            f"mean lesion Dice {_fmt(s['mean_lesion_dice'], 0, 3).strip()} (pooled over lesions); "
            "DSC/FPV/FNV: mean over scans"
        )
        return "\n".join(lines)
