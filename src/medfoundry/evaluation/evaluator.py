"""Label-map evaluation: per-class metric rows for one case, a case accumulator with nan-aware class means,
CSV output, and the MedSAM-on-laptop 2024 (CVPR24 challenge) scoring mode.

Row columns of the default mode (one row per case and class):
``case, label, dsc, iou, nsd, hd95, assd, fpv_ml, fnv_ml, n_fp_lesions, n_fn_lesions, gt_ml, pred_ml,
gt_voxels, pred_voxels, note`` where ``note`` says ``empty ground truth`` / ``empty prediction`` /
``both empty`` when a mask is empty (the NaN rules of docs/metrics.md then apply).
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from medfoundry.errors import InputError
from medfoundry.evaluation._checks import check_pair, check_spacing
from medfoundry.evaluation.lesions import lesion_errors
from medfoundry.evaluation.overlap import dice_from_counts, iou_from_counts
from medfoundry.evaluation.surface import surface_distances
from medfoundry.io.atomic import atomic_path
from medfoundry.io.checks import to_labels
from medfoundry.preprocessing.boxes import label_slices

METRICS = ("dsc", "iou", "nsd", "hd95", "assd", "fpv_ml", "fnv_ml")
COLUMNS = (
    "case",
    "label",
    *METRICS,
    "n_fp_lesions",
    "n_fn_lesions",
    "gt_ml",
    "pred_ml",
    "gt_voxels",
    "pred_voxels",
    "note",
)
CHALLENGE_METRICS = ("dsc", "nsd")
CHALLENGE_COLUMNS = ("case", "label", "dsc", "nsd", "nsd_computed")
CHALLENGE_DSC_THRESHOLD = 0.2


def _as_labels(arr: np.ndarray, name: str) -> np.ndarray:
    """A non-negative integer label map (bool and integral floats accepted): :func:`medfoundry.io.to_labels`."""
    return to_labels(arr, None, what=f"{name} label map")


def _check_maps(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return check_pair(pred, gt, _as_labels, "label maps")


def _present_labels(arr: np.ndarray) -> list[int]:
    return [int(v) for v in np.unique(arr) if v != 0]


def _note(n_gt: int, n_pred: int) -> str:
    if n_gt == 0 and n_pred == 0:
        return "both empty"
    if n_gt == 0:
        return "empty ground truth"
    if n_pred == 0:
        return "empty prediction"
    return ""


def _union_box(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    if a is None:
        return b
    if b is None:
        return a
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True))


def evaluate_case(
    pred_labels: np.ndarray,
    gt_labels: np.ndarray,
    spacing: Sequence[float] | float | None = None,
    tolerance_mm: float = 2.0,
    labels: Iterable[int] | None = None,
) -> list[dict]:
    """One row of metrics per class of two label maps (2D or 3D); spacing in mm, array axis order.

    ``labels`` defaults to every non-zero label found in either map (label 1 if both are empty, so that an
    empty case still appears in the table). Each row has the columns of :data:`COLUMNS` except ``case``.
    """
    p, g = _check_maps(pred_labels, gt_labels)
    sp = check_spacing(spacing, p.ndim)
    if not math.isfinite(tolerance_mm) or tolerance_mm < 0:
        raise InputError(None, f"tolerance must be finite and >= 0 mm, got {tolerance_mm}")
    if labels is None:
        labs = sorted(set(_present_labels(g)) | set(_present_labels(p))) or [1]
    else:
        labs = sorted({int(v) for v in labels})
        if any(v <= 0 for v in labs):
            raise InputError(None, f"labels must be positive class values (0 is background), got {labs}")
    voxel_ml = float(np.prod(sp)) / 1000.0
    boxes_p, boxes_g = label_slices(p, labs), label_slices(g, labs)
    rows = []
    for lab in labs:
        box = _union_box(boxes_p.get(lab), boxes_g.get(lab))
        if box is None:
            pm = gm = np.zeros((1,) * p.ndim, dtype=bool)
        else:
            pm, gm = p[box] == lab, g[box] == lab
        n_p, n_g = int(np.count_nonzero(pm)), int(np.count_nonzero(gm))
        inter = int(np.count_nonzero(pm & gm))
        surf = surface_distances(pm, gm, sp)
        les = lesion_errors(pm, gm, sp)
        rows.append(
            {
                "label": lab,
                "dsc": dice_from_counts(inter, n_p, n_g),
                "iou": iou_from_counts(inter, n_p, n_g),
                "nsd": surf.nsd(tolerance_mm),
                "hd95": surf.robust_hausdorff(95.0),
                "assd": surf.average_surface_distance(),
                "fpv_ml": les.fpv_ml,
                "fnv_ml": les.fnv_ml,
                "n_fp_lesions": les.n_false_positive,
                "n_fn_lesions": les.n_false_negative,
                "gt_ml": n_g * voxel_ml,
                "pred_ml": n_p * voxel_ml,
                "gt_voxels": n_g,
                "pred_voxels": n_p,
                "note": _note(n_g, n_p),
            }
        )
    return rows


def challenge_case_metrics(
    pred_labels: np.ndarray,
    gt_labels: np.ndarray,
    spacing: Sequence[float] | None = None,
    tolerance_mm: float = 2.0,
) -> dict:
    """Score one case as the MedSAM-on-laptop 2024 ``compute_metrics.py`` does.

    Classes are ``1 .. gt.max()``; a class empty in both maps has DSC NaN (and so the case DSC is NaN, as in
    the original, where ``np.mean`` propagates it). NSD at ``tolerance_mm`` (2 mm) is computed only when the
    case mean DSC > 0.2, else every NSD is 0. 2D maps are scored as an H x W x 1 volume with spacing
    (1, 1, 1) whatever ``spacing`` says; 3D maps use ``spacing`` applied to the array axes in order.
    Returns ``{"dsc", "nsd", "per_class": [{"label", "dsc", "nsd"}]}``.
    """
    p, g = _check_maps(pred_labels, gt_labels)
    if p.ndim == 2:
        p, g, sp = p[..., None], g[..., None], (1.0, 1.0, 1.0)
    else:
        if spacing is None:
            raise InputError(None, "challenge mode needs the spacing of a 3D case")
        sp = check_spacing(spacing, 3)
    labs = list(range(1, int(g.max()) + 1)) if g.size else []
    boxes_p, boxes_g = label_slices(p, labs), label_slices(g, labs)
    masks, dscs = [], []
    for lab in labs:
        box = _union_box(boxes_p.get(lab), boxes_g.get(lab))
        if box is None:
            pm = gm = np.zeros((1, 1, 1), dtype=bool)
        else:
            pm, gm = p[box] == lab, g[box] == lab
        n_p, n_g = int(np.count_nonzero(pm)), int(np.count_nonzero(gm))
        dscs.append(float("nan") if n_p + n_g == 0 else 2.0 * int(np.count_nonzero(pm & gm)) / (n_p + n_g))
        masks.append((pm, gm, n_p + n_g == 0))
    case_dsc = float(np.mean(dscs)) if dscs else float("nan")
    compute_nsd = case_dsc > CHALLENGE_DSC_THRESHOLD  # False for NaN, as in the original
    nsds = []
    for pm, gm, both_empty in masks:
        if not compute_nsd or both_empty:  # original: 0 / (0 + 1e-12) = 0 for two empty masks
            nsds.append(0.0)
        else:
            nsds.append(surface_distances(pm, gm, sp).nsd(tolerance_mm))
    case_nsd = float(np.mean(nsds)) if compute_nsd else 0.0
    return {
        "dsc": case_dsc,
        "nsd": case_nsd,
        "nsd_computed": bool(compute_nsd),
        "per_class": [{"label": lab, "dsc": d, "nsd": n} for lab, d, n in zip(labs, dscs, nsds, strict=True)],
    }


def _nanmean(values: list[float]) -> float:
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if arr.size == 0 or np.isnan(arr).all():
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(arr))


class SegmentationEvaluator:
    """Accumulates cases and gives a per-case table and a per-class mean table (NaN-aware means).

    ``challenge_compat=True`` scores each case as the MedSAM-on-laptop 2024 evaluation instead: one row
    with ``label="all"`` (the case DSC/NSD the leaderboard averages) plus one row per class.
    """

    def __init__(
        self,
        tolerance_mm: float = 2.0,
        labels: Iterable[int] | None = None,
        challenge_compat: bool = False,
    ) -> None:
        if not math.isfinite(tolerance_mm) or tolerance_mm < 0:
            raise InputError(None, f"tolerance must be finite and >= 0 mm, got {tolerance_mm}")
        if challenge_compat and labels is not None:
            raise InputError(None, "challenge mode scores the classes 1 .. max(ground truth); do not give labels")
        self.tolerance_mm = float(tolerance_mm)
        self.labels = None if labels is None else sorted({int(v) for v in labels})
        self.challenge_compat = challenge_compat
        self.rows: list[dict] = []
        self._cases: set[str] = set()

    @property
    def columns(self) -> tuple[str, ...]:
        """The column names of :meth:`per_case`."""
        return CHALLENGE_COLUMNS if self.challenge_compat else COLUMNS

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metric columns averaged by :meth:`per_class_mean`."""
        return CHALLENGE_METRICS if self.challenge_compat else METRICS

    def add(
        self, case: str, pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | float | None = None
    ) -> list[dict]:
        """Evaluate one case (label maps, spacing in mm in array axis order) and keep its rows."""
        case = str(case)
        if case in self._cases:
            raise InputError(None, f"case {case!r} was added twice")
        if self.challenge_compat:
            res = challenge_case_metrics(pred, gt, spacing, self.tolerance_mm)
            new = [{"case": case, "label": "all", "dsc": res["dsc"], "nsd": res["nsd"]}]
            new += [{"case": case, **row} for row in res["per_class"]]
            for row in new:
                row["nsd_computed"] = res["nsd_computed"]
        else:
            new = [{"case": case, **row} for row in evaluate_case(pred, gt, spacing, self.tolerance_mm, self.labels)]
        self._cases.add(case)
        self.rows.extend(new)
        return new

    def per_case(self) -> list[dict]:
        """All rows (one per case and class), in the order the cases were added."""
        return [dict(r) for r in self.rows]

    def per_class_mean(self) -> list[dict]:
        """One row per label: number of cases, empty-mask counts and the NaN-aware mean of each metric."""
        out = []
        for lab in sorted(
            {r["label"] for r in self.rows},
            key=lambda v: (isinstance(v, int), v if isinstance(v, int) else 0, str(v)),
        ):
            rows = [r for r in self.rows if r["label"] == lab]
            summary: dict = {"label": lab, "n_cases": len(rows)}
            if not self.challenge_compat:
                summary["n_gt_empty"] = sum(r["gt_voxels"] == 0 for r in rows)
                summary["n_pred_empty"] = sum(r["pred_voxels"] == 0 for r in rows)
            for m in self.metrics:
                summary[m] = _nanmean([r[m] for r in rows])
            out.append(summary)
        return out

    def write_csv(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the per-case table as CSV, atomically; refuses an existing file unless ``overwrite``."""
        return _write_rows(path, self.columns, self.rows, overwrite)

    def write_summary_csv(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the per-class mean table as CSV, atomically."""
        rows = self.per_class_mean()
        cols = tuple(rows[0]) if rows else ("label", "n_cases", *self.metrics)
        return _write_rows(path, cols, rows, overwrite)

    def summary_text(self) -> str:
        """The per-class means as a short fixed-width table for the terminal."""
        means = self.per_class_mean()
        if self.challenge_compat:
            header = f"{'label':>6} {'cases':>5} {'DSC':>7} {'NSD':>7}"
            lines = [f"{str(r['label']):>6} {r['n_cases']:>5} {_fmt(r['dsc'])} {_fmt(r['nsd'])}" for r in means]
        else:
            header = (
                f"{'label':>6} {'cases':>5} {'GT empty':>8} {'DSC':>7} {'NSD':>7} {'HD95 mm':>8} "
                f"{'FPV ml':>8} {'FNV ml':>8}"
            )
            lines = [
                f"{str(r['label']):>6} {r['n_cases']:>5} {r['n_gt_empty']:>8} "
                f"{_fmt(r['dsc'])} {_fmt(r['nsd'])} "
                f"{_fmt(r['hd95'], 8, 2)} {_fmt(r['fpv_ml'], 8, 2)} {_fmt(r['fnv_ml'], 8, 2)}"
                for r in means
            ]
        return "\n".join([header, *lines])


def _fmt(v: float, width: int = 7, digits: int = 4) -> str:
    return f"{'nan':>{width}}" if v is None or not math.isfinite(v) else f"{v:>{width}.{digits}f}"


def _write_rows(path: str | Path, columns: Sequence[str], rows: list[dict], overwrite: bool) -> Path:
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _cell(row.get(k)) for k in columns})
    return Path(path)


def _cell(v: object) -> object:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else repr(v)
    return "" if v is None else v
