"""Tables and a plot for the nnU-Net arm: Dice, IoU, FPV and FNV per (variant, training fraction).

As in the PET foundation-model paper: Dice and IoU are averaged over the cases with a non-empty ground truth (a
lesion-free case has no defined overlap), false-positive and false-negative volumes (autoPET definitions, in ml)
over all cases. Foreground = any label > 0. Metrics come from :class:`medfoundry.evaluation.SegmentationEvaluator`.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from medfoundry.errors import InputError, OutputExistsError
from medfoundry.evaluation import SegmentationEvaluator
from medfoundry.io.atomic import atomic_path
from medfoundry.io.figures import pyplot_agg, save_figure

CASE_COLUMNS = ("case", "gt_ml", "pred_ml", "dice", "iou", "fpv_ml", "fnv_ml")
SUMMARY_COLUMNS = ("variant", "fraction", "cases", "cases_with_lesion", "dice", "dice_sd", "iou", "fpv_ml", "fnv_ml")


@dataclass(frozen=True)
class CaseResult:
    """One case: volumes (ml), overlap (None for an empty ground truth) and lesion error volumes (ml)."""

    case: str
    gt_ml: float
    pred_ml: float
    dice: float | None
    iou: float | None
    fpv_ml: float
    fnv_ml: float


@dataclass(frozen=True)
class Summary:
    """Means over the cases of one (variant, fraction)."""

    variant: str
    fraction: float
    cases: int
    cases_with_lesion: int
    dice: float
    dice_sd: float
    iou: float
    fpv_ml: float
    fnv_ml: float


def _case_result(row: dict) -> CaseResult:
    """A report row from a :class:`SegmentationEvaluator` row (Dice / IoU only where there is a lesion)."""
    has_gt = row["gt_voxels"] > 0
    return CaseResult(
        case=row["case"],
        gt_ml=float(row["gt_ml"]),
        pred_ml=float(row["pred_ml"]),
        dice=float(row["dsc"]) if has_gt else None,
        iou=float(row["iou"]) if has_gt else None,
        fpv_ml=float(row["fpv_ml"]),
        fnv_ml=float(row["fnv_ml"]),
    )


def _add_case(
    evaluator: SegmentationEvaluator, case: str, pred: np.ndarray, gt: np.ndarray, spacing_zyx: Sequence[float]
) -> CaseResult:
    if np.shape(pred) != np.shape(gt):
        raise InputError(case, f"prediction shape {np.shape(pred)} differs from ground truth {np.shape(gt)}")
    foreground = [(np.asarray(a) > 0).astype(np.uint8) for a in (pred, gt)]  # foreground = any label > 0
    return _case_result(evaluator.add(case, *foreground, spacing_zyx)[0])


def case_metrics(case: str, pred: np.ndarray, gt: np.ndarray, spacing_zyx: Sequence[float]) -> CaseResult:
    """Metrics of one case from binary-izable label arrays and the spacing in array order (mm)."""
    return _add_case(SegmentationEvaluator(labels=[1]), case, pred, gt, spacing_zyx)


def evaluate_folder(pred_dir: str | Path, gt_files: dict[str, Path], suffix: str = ".nii.gz") -> list[CaseResult]:
    """Per-case metrics of ``pred_dir/CASE.nii.gz`` against ``gt_files[CASE]`` (a missing prediction is an error)."""
    from medfoundry.io import read_mask

    pred_dir = Path(pred_dir)
    evaluator = SegmentationEvaluator(labels=[1])
    results = []
    for case, gt_path in sorted(gt_files.items()):
        pred_path = pred_dir / f"{case}{suffix}"
        if not pred_path.is_file():
            raise InputError(pred_path, f"prediction for case {case} is missing; run 'medfoundry nnunet predict'")
        gt = read_mask(gt_path)
        pred = read_mask(pred_path, reference=gt)
        results.append(_add_case(evaluator, case, pred.array, gt.array, gt.spacing_zyx))
    return results


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return float(np.mean(values)) if values else math.nan


def summarize(results: Sequence[CaseResult], variant: str, fraction: float) -> Summary:
    """Dice/IoU over cases with a lesion, FPV/FNV over all cases."""
    with_gt = [r for r in results if r.dice is not None]
    return Summary(
        variant=variant,
        fraction=float(fraction),
        cases=len(results),
        cases_with_lesion=len(with_gt),
        dice=_mean(r.dice for r in with_gt),
        dice_sd=float(np.std([r.dice for r in with_gt])) if with_gt else math.nan,
        iou=_mean(r.iou for r in with_gt),
        fpv_ml=_mean(r.fpv_ml for r in results),
        fnv_ml=_mean(r.fnv_ml for r in results),
    )


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def markdown_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A GitHub-style markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_fmt(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_text(rows: Sequence[dict], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: "" if row[c] is None else row[c] for c in columns})
    return buffer.getvalue()


def _write_text(path: Path, text: str, overwrite: bool) -> Path:
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(text)
    return path


def write_case_tables(
    results: Sequence[CaseResult], summary: Summary, out_dir: str | Path, overwrite: bool = False
) -> list[Path]:
    """``VARIANT_fFRACTION.md`` and ``.csv``: one row per case, then the mean row in the markdown."""
    out_dir = Path(out_dir)
    stem = f"{summary.variant}_f{summary.fraction:g}"
    rows = [asdict(r) for r in results]
    md = (
        f"## {summary.variant}, {summary.fraction:g} % of the training cases\n\n"
        + markdown_table(rows, CASE_COLUMNS)
        + f"\nMean over {summary.cases_with_lesion} cases with a lesion: Dice {_fmt(summary.dice)}, "
        f"IoU {_fmt(summary.iou)}; over all {summary.cases} cases: FPV {_fmt(summary.fpv_ml)} ml, "
        f"FNV {_fmt(summary.fnv_ml)} ml.\n"
    )
    return [
        _write_text(out_dir / f"{stem}.md", md, overwrite),
        _write_text(out_dir / f"{stem}.csv", csv_text(rows, CASE_COLUMNS), overwrite),
    ]


def plot_dice_vs_fraction(summaries: Sequence[Summary], path: str | Path, overwrite: bool = False) -> Path:
    """PNG: mean Dice (± SD over cases) against training fraction (log axis), one line per variant."""
    plt = pyplot_agg()

    with plt.style.context("default"):  # nnU-Net imports seaborn, which changes the global style
        fig, ax = plt.subplots(figsize=(5.5, 4.0), dpi=120)
        for variant in dict.fromkeys(s.variant for s in summaries):
            pts = sorted((s for s in summaries if s.variant == variant), key=lambda s: s.fraction)
            x = [s.fraction for s in pts]
            y = [s.dice for s in pts]
            sd = [0.0 if math.isnan(s.dice_sd) else s.dice_sd for s in pts]
            ax.errorbar(x, y, yerr=sd, marker="o", capsize=3, label=variant)
        ax.set_xscale("log")
        fractions = sorted({s.fraction for s in summaries})
        ax.set_xticks(fractions)
        ax.set_xticklabels([f"{f:g}%" for f in fractions])
        ax.set_xlabel("training fraction")
        ax.set_ylabel("Dice (cases with a lesion)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        return save_figure(fig, path, overwrite=overwrite)


def find_predictions(run_dir: str | Path) -> list[tuple[str, float, Path]]:
    """(variant, fraction, folder) of every prediction folder under ``RUN/predictions``."""
    root = Path(run_dir) / "predictions"
    found = []
    if root.is_dir():
        for variant_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            for frac_dir in sorted(p for p in variant_dir.iterdir() if p.is_dir() and p.name.startswith("f")):
                try:
                    found.append((variant_dir.name, float(frac_dir.name[1:]), frac_dir))
                except ValueError:
                    continue
    return found


def evaluate_run(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    variants: Sequence[str] | None = None,
    fractions: Sequence[float] | None = None,
    overwrite: bool = False,
    cases: Sequence[str] | None = None,
) -> list[Summary]:
    """Evaluate every predicted (variant, fraction) of a run on its test split (or ``cases`` of it); write tables,
    summary and plot."""
    from medfoundry.training.nnunet.runtime import RunLayout, read_manifest

    manifest = read_manifest(run_dir)
    layout = RunLayout(Path(run_dir).resolve())
    labels = layout.dataset_raw(manifest["dataset_name"]) / "labelsTs"
    gt_files = {case: labels / f"{case}.nii.gz" for case in manifest["test"] if cases is None or case in cases}
    if not gt_files:
        raise InputError(run_dir, "this run has no test cases to evaluate")
    found = [
        (v, f, d)
        for v, f, d in find_predictions(run_dir)
        if (not variants or v in variants) and (not fractions or any(math.isclose(f, x) for x in fractions))
    ]
    if not found:
        raise InputError(layout.predictions, "no predictions to evaluate; run 'medfoundry nnunet predict' first")
    out = Path(out_dir) if out_dir is not None else layout.reports
    targets = [out / "summary.md", out / "summary.csv", out / "dice_vs_fraction.png"]
    targets += [out / f"{v}_f{f:g}.{ext}" for v, f, _ in found for ext in ("md", "csv")]
    if not overwrite:
        for t in targets:
            if t.exists():
                raise OutputExistsError(t)
    summaries = []
    for variant, fraction, folder in found:
        results = evaluate_folder(folder, gt_files)
        summary = summarize(results, variant, fraction)
        write_case_tables(results, summary, out, overwrite)
        summaries.append(summary)
    summaries.sort(key=lambda s: (s.variant != "baseline", s.variant, -s.fraction))
    rows = [asdict(s) for s in summaries]
    _write_text(out / "summary.md", summary_markdown(summaries), overwrite)
    _write_text(out / "summary.csv", csv_text(rows, SUMMARY_COLUMNS), overwrite)
    plot_dice_vs_fraction(summaries, out / "dice_vs_fraction.png", overwrite)
    return summaries


def summary_markdown(summaries: Sequence[Summary]) -> str:
    """The comparison table: one row per (variant, fraction)."""
    rows = [dict(asdict(s), fraction=f"{s.fraction:g}%") for s in summaries]
    return markdown_table(rows, SUMMARY_COLUMNS)
