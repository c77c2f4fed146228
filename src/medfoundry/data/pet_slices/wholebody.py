"""Whole-body mode of the slice dataset: every native slice of whole-body scans, crop lesion slices as extra
abnormal examples, inserted-lesion scans generated on the fly, class balance by sample weights.

* **Whole-body scans** (the backgrounds, in SUV): every axial slice at the native slice count (the grid's z
  count must be 0); labelled by their own lesion mask.
* **Crops** (labelled PET around one tumour): only their lesion slices are stored (their lesion-free slices are
  peritumoural, not normal anatomy); their lesions are also the insertion sources.
* **Inserted scans**: per background, ``n_inserted`` copies with 1-3 crop lesions inserted
  (:mod:`medfoundry.data.insertion`), seeded, blurred to the background's resolution (7 mm FWHM by default).
  Only the slices that differ from the background are stored (the
  others are the background's slices, already there). The lesions of a crop are inserted only into scans of
  the crop's own split (if that split has no crop: the train split's, then any), never into a scan of the same
  patient.
* **Weights**: each row gets ``weight`` so that within a split both classes weigh the same in total (mean 1);
  no normal slice is dropped.
* **Borrowed backgrounds** (``borrow_backgrounds``): a split that gets crops but no whole-body scan (with two
  scans, the val split of a scan split) gets its inserted scans in the train split's whole-body scans: its lesions
  are unseen, its anatomy is not (the builder still reports that split as having no normal anatomy of its own).
* **Features** (``features``, e.g. anatomy): computed on every volume, stored per row in ``features.npz``.
* **Region split** (``regions``): with one whole-body scan a patient split is impossible; instead each slice
  goes to the split whose range of the scan's height (fraction of the slice index, 0 = first slice) holds it,
  and the inserted scans of a split have their lesions wholly inside that split's range.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from medfoundry.data.insertion import (
    CLINICAL_FWHM_MM,
    InsertionConfig,
    extract_lesions,
    insert_lesions,
    placement_map,
    restrict,
)
from medfoundry.data.pet_slices.cases import _check_cases
from medfoundry.data.pet_slices.checks import BUILD_ADVICE, check_build_splits, split_problems
from medfoundry.data.pet_slices.config import FORMAT_VERSION, MANIFEST_FIELDS, SPLITS, CaseSpec, SliceConfig
from medfoundry.data.pet_slices.dataset import SliceDataset
from medfoundry.data.pet_slices.features import FeatureSource, write_features
from medfoundry.data.pet_slices.split import patient_split
from medfoundry.data.pet_slices.volume import read_case, slice_volume
from medfoundry.errors import InputError
from medfoundry.io.atomic import atomic_dir, check_writable
from medfoundry.preprocessing.pet_suv import to_suv

WHOLEBODY_FIELDS = (*MANIFEST_FIELDS, "source", "weight")
SOURCES = ("wholebody", "crop", "inserted")


@dataclass(frozen=True)
class WholeBodyOptions:
    """Whole-body build settings (see the module docstring)."""

    n_inserted: int = 4  # inserted-lesion scans per background (per split in a region split)
    insertion: InsertionConfig = field(default_factory=lambda: InsertionConfig(resolution_fwhm_mm=CLINICAL_FWHM_MM))
    crop_slices: int = 0  # lesion slices kept per crop, evenly spaced over its lesion (0 = all of them)
    regions: Mapping[str, tuple[float, float]] | None = None  # split -> (from, to) fraction of slice index
    borrow_backgrounds: bool = False  # a split with crops but no whole-body scan inserts into the train split's

    def __post_init__(self) -> None:
        if self.n_inserted < 0 or self.crop_slices < 0:
            raise InputError(None, "n_inserted and crop_slices must be >= 0")
        if self.regions is not None:
            for split, (lo, hi) in self.regions.items():
                if split not in SPLITS or not (0.0 <= lo < hi <= 1.0):
                    raise InputError(None, f"region {split}: {lo}-{hi}; splits {SPLITS}, 0 <= from < to <= 1")
            spans = sorted(self.regions.values())
            if any(a[1] > b[0] for a, b in zip(spans, spans[1:], strict=False)):
                raise InputError(None, f"regions overlap: {dict(self.regions)}")


def balance_weights(labels: np.ndarray, splits: Sequence[str]) -> np.ndarray:
    """Per-row weights: within each split, both classes get the same total weight; mean weight 1 per split."""
    labels = np.asarray(labels).astype(int)
    splits = np.asarray(splits)
    weights = np.ones(labels.size, dtype=np.float64)
    for split in np.unique(splits):
        idx = splits == split
        n_pos, n_neg = int(labels[idx].sum()), int((1 - labels[idx]).sum())
        if n_pos and n_neg:
            n = n_pos + n_neg
            weights[idx] = np.where(labels[idx] == 1, n / (2 * n_pos), n / (2 * n_neg))
    return weights


def _region_of(index: np.ndarray, n: int, regions: Mapping[str, tuple[float, float]]) -> np.ndarray:
    frac = (np.asarray(index) + 0.5) / n
    out = np.full(frac.shape, "", dtype=object)
    for split, (lo, hi) in regions.items():
        out[(frac >= lo) & (frac < hi)] = split
    return out


def splits_without_background(
    assignment: Mapping[str, str],
    backgrounds: Sequence[CaseSpec],
    crops: Sequence[CaseSpec],
    regions: Mapping[str, tuple[float, float]] | None = None,
) -> list[str]:
    """Problems known before any volume is read: splits that get crop slices but no whole-body scan (their slices
    would all be abnormal: no normal anatomy to score against)."""
    with_background = set(regions) if regions is not None else {assignment[c.patient_id] for c in backgrounds}
    problems = []
    for split in SPLITS:
        n_crops = sum(assignment[c.patient_id] == split for c in crops)
        if n_crops and split not in with_background:
            problems.append(
                f"the {split} split gets {n_crops} crop(s) and no whole-body scan: no normal slice, only lesion slices"
            )
    return problems


def _sources(pools: Mapping[str, list], split: str, patient: str) -> list:
    """The lesions of the split's crops; if it has none, the train split's; if none either, every crop's. Never a
    lesion of the scan's own patient."""
    for pool in (pools[split], pools["train"], [t for s in SPLITS for t in pools[s]]):
        usable = [t for t in pool if t.patient_id != patient]
        if usable:
            return usable
    return []


def _pick_evenly(rows: np.ndarray, k: int) -> np.ndarray:
    if k <= 0 or rows.size <= k:
        return rows
    return rows[np.round(np.linspace(0, rows.size - 1, k)).astype(int)]


class _Writer:
    """Collects manifest rows, slice files and per-case records inside the temporary dataset folder."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        (tmp / "slices").mkdir()
        self.rows: list[dict] = []
        self.cases: list[dict] = []
        self.digests: list[str] = []
        self.features: list[np.ndarray] = []

    def add(self, case_id: str, patient: str, stack, keep: np.ndarray, splits, source: str, min_vox: int,
            features: np.ndarray | None = None, tracer: str = "", **info):  # fmt: skip
        if keep.size == 0:
            return
        if features is not None:
            self.features.append(features[stack.source_slice[keep]])
        images = stack.images[keep]
        np.savez_compressed(self.tmp / "slices" / f"{case_id}.npz", images=images)
        self.digests.append(hashlib.sha256(images.tobytes()).hexdigest())
        for j, i in enumerate(keep):
            self.rows.append(
                {
                    "row": len(self.rows),
                    "case_id": case_id,
                    "patient_id": patient,
                    "slice_index": int(stack.slice_index[i]),
                    "z_mm": round(float(stack.z_mm[i]), 3),
                    "source_slice": int(stack.source_slice[i]),
                    "slice_max": round(float(stack.slice_max[i]), 5),
                    "lesion_voxels": int(stack.lesion_voxels[i]),
                    "label": int(stack.lesion_voxels[i] >= min_vox),
                    "split": splits[j] if not isinstance(splits, str) else splits,
                    "tracer": tracer,
                    "source": source,
                }
            )
        self.cases.append(
            {
                "case_id": case_id,
                "patient_id": patient,
                "source": source,
                "tracer": tracer,
                "n_slices": int(keep.size),
                **info,
            }  # fmt: skip
        )


def build_wholebody_dataset(
    backgrounds: Sequence[CaseSpec],
    crops: Sequence[CaseSpec],
    out_dir: str | Path,
    config: SliceConfig = SliceConfig(grid=(0, 0, 0)),
    options: WholeBodyOptions = WholeBodyOptions(),
    fractions: Sequence[float] = (0.75, 0.15, 0.10),
    seed: int = 0,
    pinned: dict[str, str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    allow_incomplete_splits: bool = False,
    features: FeatureSource | None = None,
) -> SliceDataset:
    """Write a whole-body slice dataset (module docstring); the folder appears complete or not at all.

    ``features`` (e.g. :class:`~medfoundry.data.pet_slices.features.AnatomyFeatures`) is computed on every volume
    read or generated (in SUV) and stored per row in ``features.npz``.

    A split without a whole-body scan, or with one class, is refused before any work where that is known from
    the split alone, else before anything is written (:mod:`.checks`), unless ``allow_incomplete_splits``
    (the problems are then recorded in ``dataset.json``, ``split_problems``)."""
    from tqdm.auto import tqdm

    out_dir = check_writable(out_dir, overwrite, folder=True, create=False)
    if not backgrounds:
        raise InputError(None, "whole-body mode needs at least one whole-body scan")
    if int(config.grid[2]) != 0:
        raise InputError(
            None, f"whole-body mode keeps every native slice: the grid's z count must be 0, got {config.grid}"
        )
    _check_cases([*backgrounds, *crops])
    if options.n_inserted and not crops:
        raise InputError(
            None, "inserted-lesion scans need crops (labelled lesions to insert); give crops or 0 insertions"
        )
    assignment = patient_split([c.patient_id for c in [*backgrounds, *crops]], fractions, seed, pinned)
    early = splits_without_background(assignment, backgrounds, crops, options.regions)
    check_build_splits(early, allow_incomplete_splits, out_dir, BUILD_ADVICE)
    crop_config = SliceConfig(**{**asdict(config), "grid": (0, 0, 0)})
    with_background = {assignment[b.patient_id] for b in backgrounds}
    orphans = [s for s in SPLITS if s not in with_background and any(assignment[c.patient_id] == s for c in crops)]
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        out = _Writer(tmp)
        pools: dict[str, list] = {s: [] for s in SPLITS}
        bar = tqdm(total=len(crops) + len(backgrounds), desc="whole-body dataset", unit="scan", disable=not progress)
        for case in crops:
            image, mask = read_case(case)
            suv = to_suv(image, case.suv_factor)
            split = assignment[case.patient_id]
            pools[split] += extract_lesions(suv, mask, case.case_id, case.patient_id)
            stack = slice_volume(suv, mask, crop_config)
            crop_features = None if features is None else features(suv, "crop")
            lesion_rows = np.flatnonzero(stack.lesion_voxels >= config.min_lesion_voxels)
            keep = _pick_evenly(lesion_rows, options.crop_slices)
            out.add(
                case.case_id,
                case.patient_id,
                stack,
                keep,
                split,
                "crop",
                config.min_lesion_voxels,
                crop_features,
                case.tracer,
                image=str(case.image),
                mask=str(case.mask),
                shape_zyx=list(image.array.shape),
            )
            bar.update(1)
        for b_index, case in enumerate(backgrounds):
            image, mask = read_case(case)
            suv = to_suv(image, case.suv_factor)
            stack = slice_volume(suv, mask, config)
            nz = suv.array.shape[0]
            if options.regions is not None:
                region = _region_of(stack.slice_index, stack.n_grid_slices, options.regions)
                keep = np.flatnonzero(region != "")
                splits = list(region[keep])
                wanted = [s for s in SPLITS if s in options.regions]
            else:
                keep = np.arange(stack.images.shape[0])
                splits = assignment[case.patient_id]
                wanted = [splits] + (orphans if splits == "train" and options.borrow_backgrounds else [])
            out.add(
                case.case_id,
                case.patient_id,
                stack,
                keep,
                splits,
                "wholebody",
                config.min_lesion_voxels,
                None if features is None else features(suv, "wholebody"),
                case.tracer,
                image=str(case.image),
                mask=str(case.mask),
                shape_zyx=list(image.array.shape),
            )
            own = None if mask is None else (mask.array > 0)
            ins = options.insertion
            if options.n_inserted:
                full_map = placement_map(
                    suv.array, suv.spacing_zyx, own, None, ins.body_suv, ins.body_margin_mm, ins.organ_margin_mm
                )
            for split in wanted if options.n_inserted else []:
                sources = _sources(pools, split, case.patient_id)
                if not sources:
                    raise InputError(case.image, f"no crop lesion to insert into the {split} scans of {case.case_id}")
                z_allowed = None
                pmap = full_map
                if options.regions is not None:
                    z_allowed = _region_of(np.arange(nz), nz, {split: options.regions[split]}) == split
                    pmap = restrict(full_map, z_allowed)
                for k in range(options.n_inserted):
                    ins_seed = int(np.random.SeedSequence([seed, b_index, SPLITS.index(split), k]).generate_state(1)[0])
                    result = insert_lesions(suv, sources, ins_seed, options.insertion, own, z_allowed, pmap)
                    ins_stack = slice_volume(result.image, result.label, config)
                    if not np.array_equal(ins_stack.slice_index, stack.slice_index):
                        raise InputError(case.image, "an inserted scan lost or gained slices; raise `min_slice_max`")
                    changed = (ins_stack.images != stack.images).any(axis=(1, 2)) | (
                        ins_stack.lesion_voxels != stack.lesion_voxels
                    )
                    ins_keep = np.flatnonzero(changed)
                    ins_id = f"{case.case_id}.{split}{k:02d}"
                    out.add(
                        ins_id,
                        case.patient_id,
                        ins_stack,
                        ins_keep,
                        split,
                        "inserted",
                        config.min_lesion_voxels,
                        None if features is None or ins_keep.size == 0 else features(result.image, "inserted"),
                        case.tracer,
                        background=case.case_id,
                        seed=ins_seed,
                        placements=[p.as_dict() for p in result.placements],
                    )
            bar.update(1)
        bar.close()
        labels = np.array([r["label"] for r in out.rows])
        weights = balance_weights(labels, [r["split"] for r in out.rows])
        for row, w in zip(out.rows, weights, strict=True):
            row["weight"] = round(float(w), 6)
        problems = split_problems(out.rows, wholebody=True)
        problems = check_build_splits(problems, allow_incomplete_splits, out_dir, BUILD_ADVICE)
        with (tmp / "manifest.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=WHOLEBODY_FIELDS)
            writer.writeheader()
            writer.writerows(out.rows)
        if features is not None:
            write_features(tmp, features.names, np.concatenate(out.features), features.identity)
        params = {**config.pixel_params(), "mode": "wholebody"}
        info = {
            "format": FORMAT_VERSION,
            "mode": "wholebody",
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
            "pixel_params": params,
            "preprocessing_hash": hashlib.sha256(
                json.dumps({"params": params, "cases": out.digests}, sort_keys=True).encode()
            ).hexdigest(),
            "wholebody": {
                "n_inserted": options.n_inserted,
                "crop_slices": options.crop_slices,
                "regions": None if options.regions is None else {k: list(v) for k, v in options.regions.items()},
                "borrow_backgrounds": options.borrow_backgrounds,
                "features": None if features is None else {"names": list(features.names), **features.identity},
                "insertion": {
                    k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(options.insertion).items()
                },
            },
            "split_fractions": list(fractions),
            "seed": seed,
            "pinned": dict(pinned or {}),
            "cases": out.cases,
            "n_slices": len(out.rows),
            "n_abnormal": int(labels.sum()) if labels.size else 0,
            "split_problems": problems,
        }
        (tmp / "dataset.json").write_text(json.dumps(info, indent=1))
    return SliceDataset(out_dir)
