"""The output folder of ``medfoundry lesions``, written as a whole: a temporary sibling folder, then a rename."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from medfoundry import __version__
from medfoundry.evaluation.lesion_figures import save_mip, save_thumbnails
from medfoundry.inference.lesions.pipeline import LesionResult
from medfoundry.io import write_mask
from medfoundry.io.atomic import atomic_dir

CSV_COLUMNS = (
    "id", "centroid_x_mm", "centroid_y_mm", "centroid_z_mm", "suv_max", "suv_peak", "suv_mean", "mtv_ml", "tlg",
    "score", "voxels",
)  # fmt: skip


def _rows(result: LesionResult) -> list[dict]:
    rows = []
    for les in result.lesions:
        x, y, z = les["centroid_mm"]
        rows.append(
            {
                "id": les["id"],
                "centroid_x_mm": f"{x:.2f}",
                "centroid_y_mm": f"{y:.2f}",
                "centroid_z_mm": f"{z:.2f}",
                **{k: f"{les[k]:.4f}" for k in ("suv_max", "suv_peak", "suv_mean", "mtv_ml", "tlg", "score")},
                "voxels": les["voxels"],
            }
        )
    totals = result.totals
    rows.append({"id": "total", "mtv_ml": f"{totals['total_mtv_ml']:.4f}", "tlg": f"{totals['total_tlg']:.4f}",
                 "voxels": sum(les["voxels"] for les in result.lesions)})  # fmt: skip
    return rows


def write_lesion_outputs(
    result: LesionResult,
    out_dir: str | Path,
    *,
    source: str | Path | None = None,
    dicom_series: str | Path | None = None,
    overwrite: bool = False,
    extra: dict | None = None,
    progress: bool = True,
) -> Path:
    """Write lesions.nii.gz, lesions.csv, lesions.json, mip.png, thumbnails.png (and lesions.dcm, a DICOM SEG
    referencing ``dicom_series``, when the input was a DICOM series and at least one lesion was found)."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        write_mask(result.labels, tmp / "lesions.nii.gz", reference=result.labels)
        seg_note = None
        if dicom_series is not None:
            if result.lesions:
                from medfoundry.io.dicom_seg import write_dicom_seg

                write_dicom_seg(
                    result.labels,
                    dicom_series,
                    tmp / "lesions.dcm",
                    segment_names=[f"lesion {les['id']}" for les in result.lesions],
                    algorithm_version=__version__,
                    progress=progress,
                )
            else:
                seg_note = "no lesions: a DICOM SEG needs at least one segment, so none was written"
        with open(tmp / "lesions.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(_rows(result))
        report = {
            "medfoundry_version": __version__,
            "input": None if source is None else str(source),
            "units": "SUVbw",
            "threshold": result.threshold.as_dict(),
            "detection_grid": None if result.grid is None else result.grid.as_dict(),
            "delineation": result.delineation,
            "candidates": len(result.candidates),
            "candidate_scores": [round(float(s), 4) for s in result.scores],
            "candidate_accepted": [bool(a) for a in result.accepted],
            "candidate_symmetric": [bool(a) for a in result.symmetric],
            "candidate_reasons": list(result.reasons),
            "organ_rule": result.organ_rule,
            "lesions": result.lesions,
            "totals": result.totals,
            "dicom_seg": "lesions.dcm" if dicom_series is not None and result.lesions else seg_note,
            "anatomy": None if result.anatomy is None else result.anatomy.as_dict(),
            "seconds": result.seconds,
            **(extra or {}),
        }
        (tmp / "lesions.json").write_text(json.dumps(_clean(report), indent=1, allow_nan=False) + "\n")
        suv, labels = result.suv.array, result.labels.array
        title = "" if source is None else Path(source).name
        save_mip(suv, labels, result.suv.spacing, result.suv.direction, tmp / "mip.png", title=title)
        save_thumbnails(suv, labels, result.lesions, tmp / "thumbnails.png")
    return out_dir


def _clean(value):
    """JSON-safe copy: NaN / infinity become null, numpy numbers plain numbers."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


COHORT_COLUMNS = (
    "scan", "image", "folder", "status", "lesion_count", "total_mtv_ml", "total_tlg", "threshold_suv",
    "threshold_method", "seconds", "error",
)  # fmt: skip


def cohort_row(name: str, image: Path | None, folder: Path | None, status: str, error: str | None = None) -> dict:
    """One row of ``cohort.csv``: the patient totals and threshold of a finished scan's ``lesions.json`` (status
    ``done`` or ``kept``, a folder of an earlier run), or just the ``error`` of a failed one."""
    row = {"scan": name, "image": image, "folder": folder, "status": status, "error": error}
    if error is None and folder is not None:
        report = json.loads((Path(folder) / "lesions.json").read_text())
        totals, threshold = report["totals"], report["threshold"]
        row.update(
            lesion_count=totals["lesion_count"],
            total_mtv_ml=f"{totals['total_mtv_ml']:.4f}",
            total_tlg=f"{totals['total_tlg']:.4f}",
            threshold_suv=threshold["threshold_suv"],
            threshold_method=threshold["method"],
            seconds=round(sum(report.get("seconds", {}).values()), 2),
        )
    return row


def write_cohort_csv(path: str | Path, rows: list[dict]) -> Path:
    """``cohort.csv``: one row per scan of a ``--manifest`` run (rewritten, atomically, as the run goes on)."""
    from medfoundry.io.atomic import atomic_path

    with atomic_path(path, overwrite=True) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=COHORT_COLUMNS)
            writer.writeheader()
            writer.writerows({k: "" if row.get(k) is None else row[k] for k in COHORT_COLUMNS} for row in rows)
    return Path(path)
