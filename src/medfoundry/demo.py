"""``medfoundry demo``: segment the bundled PET and CT sample from boxes and score the result.

The box of each case is the bounding box of its reference mask (as in MedSAM's evaluation, a simulated user
box). Writes masks with the input geometry, overlay PNGs and a metrics CSV into the output folder.
"""

from __future__ import annotations

import importlib.resources
import time
from pathlib import Path

from medfoundry.io import check_writable, read_image, read_mask

CASES = (("STS_008_PET", "PET"), ("STS_008_CT", "CT"))


def sample_dir() -> Path:
    """Folder of the bundled sample images."""
    return Path(str(importlib.resources.files("medfoundry").joinpath("sample_data")))


def run_demo(
    out_dir: str | Path = "medfoundry-demo-output",
    overwrite: bool = False,
    backend: str = "fast",
    progress: bool = True,
) -> list[dict]:
    """Segment every bundled case; returns one row of metrics per case and prints a table."""
    from medfoundry.api import boxes_from_labels, make_predictor, segment_image
    from medfoundry.evaluation import SegmentationEvaluator
    from medfoundry.evaluation.overlay import save_overlay
    from medfoundry.inference.prompts import ObjectPrompt
    from medfoundry.io import write_mask

    out_dir = Path(out_dir)
    outputs = [out_dir / f"{name}_pred.nii.gz" for name, _ in CASES]
    outputs += [out_dir / f"{name}_overlay.png" for name, _ in CASES] + [out_dir / "metrics.csv"]
    for path in outputs:
        check_writable(path, overwrite)
    print(f"medfoundry demo: LiteMedSAM ({backend} backend) on {len(CASES)} bundled cases -> {out_dir}/")
    predictor = make_predictor(backend=backend)
    evaluator = SegmentationEvaluator(tolerance_mm=2.0)
    rows = []
    for name, modality in CASES:
        image = read_image(sample_dir() / f"{name}_image.nii.gz", modality=modality)
        gt = read_mask(sample_dir() / f"{name}_mask.nii.gz", reference=image)
        objects = [ObjectPrompt(box=b) for b in boxes_from_labels(gt.array)]
        start = time.perf_counter()
        result = segment_image(image, objects, predictor, progress=progress)
        seconds = time.perf_counter() - start
        write_mask(result.labels, out_dir / f"{name}_pred.nii.gz", reference=image, overwrite=overwrite)
        save_overlay(
            result.normalized,
            result.labels.array,
            out_dir / f"{name}_overlay.png",
            gt=gt.array,
            is_3d=True,
            title=f"{name}: LiteMedSAM from a box",
            overwrite=overwrite,
        )
        row = evaluator.add(name, result.labels.array, gt.array, image.spacing_zyx)[0]
        rows.append({**row, "seconds": round(seconds, 2)})
    evaluator.write_csv(out_dir / "metrics.csv", overwrite=overwrite)
    print(f"\n{'case':<14}{'DSC':>8}{'NSD@2mm':>9}{'HD95 mm':>9}{'seconds':>9}")
    for r in rows:
        print(f"{r['case']:<14}{r['dsc']:>8.4f}{r['nsd']:>9.4f}{r['hd95']:>9.2f}{r['seconds']:>9.1f}")
    print(f"\nmasks, overlays and metrics.csv in {out_dir.resolve()}")
    return rows
