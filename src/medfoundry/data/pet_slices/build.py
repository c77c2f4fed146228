"""Writing the slice dataset folder (slices, manifest, dataset.json) atomically."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from medfoundry.data.pet_slices.cases import _check_cases
from medfoundry.data.pet_slices.checks import check_build_splits, split_problems
from medfoundry.data.pet_slices.config import FORMAT_VERSION, MANIFEST_FIELDS, CaseSpec, SliceConfig
from medfoundry.data.pet_slices.dataset import SliceDataset
from medfoundry.data.pet_slices.split import patient_split
from medfoundry.data.pet_slices.volume import read_case, slice_volume
from medfoundry.io.atomic import atomic_dir, check_writable
from medfoundry.preprocessing.pet_suv import to_suv


def _digest_json(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def build_slice_dataset(
    cases: Sequence[CaseSpec],
    out_dir: str | Path,
    config: SliceConfig = SliceConfig(),
    fractions: Sequence[float] = (0.75, 0.15, 0.10),
    seed: int = 0,
    pinned: dict[str, str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    allow_incomplete_splits: bool = False,
) -> SliceDataset:
    """Read, slice and store every case; the folder appears complete or not at all (atomic rename).

    A split that is empty or holds one class is refused (:mod:`.checks`; nothing is written) unless
    ``allow_incomplete_splits``, which records the problems in ``dataset.json`` (``split_problems``)."""
    from tqdm.auto import tqdm

    out_dir = check_writable(out_dir, overwrite, folder=True, create=False)  # before any work
    _check_cases(cases)
    assignment = patient_split([c.patient_id for c in cases], fractions, seed, pinned)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        (tmp / "slices").mkdir()
        rows: list[dict] = []
        case_records = []
        digests = []
        for case in tqdm(cases, desc="slicing volumes", unit="case", disable=not progress):
            image, mask = read_case(case)
            if config.intensity == "suv-window":  # a fixed SUV scale needs SUV (refuses Bq/mL without a factor)
                image = to_suv(image, case.suv_factor)
            stack = slice_volume(image, mask, config)
            np.savez_compressed(tmp / "slices" / f"{case.case_id}.npz", images=stack.images)
            digests.append(hashlib.sha256(stack.images.tobytes()).hexdigest())
            split = assignment[case.patient_id]
            for i in range(stack.images.shape[0]):
                rows.append(
                    {
                        "row": len(rows),
                        "case_id": case.case_id,
                        "patient_id": case.patient_id,
                        "slice_index": int(stack.slice_index[i]),
                        "z_mm": round(float(stack.z_mm[i]), 3),
                        "source_slice": int(stack.source_slice[i]),
                        "slice_max": round(float(stack.slice_max[i]), 5),
                        "lesion_voxels": int(stack.lesion_voxels[i]),
                        "label": int(stack.lesion_voxels[i] >= config.min_lesion_voxels),
                        "split": split,
                        "tracer": case.tracer,
                    }
                )
            case_records.append(
                {
                    "case_id": case.case_id,
                    "patient_id": case.patient_id,
                    "image": str(case.image),
                    "mask": str(case.mask),
                    "split": split,
                    "tracer": case.tracer,
                    "shape_zyx": list(image.array.shape),
                    "spacing": list(image.spacing),
                    "grid_spacing": list(stack.grid_spacing),
                    "n_grid_slices": stack.n_grid_slices,
                    "n_slices": int(stack.images.shape[0]),
                    "n_abnormal": int((stack.lesion_voxels >= config.min_lesion_voxels).sum()),
                }
            )
        advice = "see `fractions` and `seed`"
        problems = check_build_splits(split_problems(rows), allow_incomplete_splits, out_dir, advice)
        with (tmp / "manifest.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=MANIFEST_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        info = {
            "format": FORMAT_VERSION,
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
            "pixel_params": config.pixel_params(),
            "preprocessing_hash": _digest_json({"params": config.pixel_params(), "cases": digests}),
            "split_fractions": list(fractions),
            "seed": seed,
            "pinned": dict(pinned or {}),
            "cases": case_records,
            "n_slices": len(rows),
            "n_abnormal": int(sum(r["label"] for r in rows)),
            "split_problems": problems,
        }
        (tmp / "dataset.json").write_text(json.dumps(info, indent=1))
    return SliceDataset(out_dir)
