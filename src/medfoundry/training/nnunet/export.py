"""Export an image + mask set to the nnU-Net v2 raw layout, with a patient-wise test split and nested fractions.

Cases are found with two path patterns holding ``{case}`` (e.g. ``{case}/PET_image.nii.gz`` and
``{case}/PET_mask.nii.gz`` under ``pet-sts``). Patients are shuffled once with ``seed``; the first
``test_fraction`` of them form the test set, and the training fraction ``f`` % takes the first
``round(f / 100 * n_train)`` of the remaining patients, so every smaller subset lies inside every larger one.
``train_seed`` re-shuffles the training patients alone (the test patients stay those of ``seed``), so repeated
runs of a fraction draw other patients against the same test set. Each fraction becomes one fold of nnU-Net's
``splits_final.json`` (see :mod:`.plan`).
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from medfoundry.errors import InputError, OutputExistsError
from medfoundry.io.atomic import atomic_dir
from medfoundry.training.nnunet.runtime import (
    MANIFEST_FORMAT,
    RunLayout,
    format_fraction,
    nnunet_dataset_name,
    read_manifest,
    write_manifest,
)

DEFAULT_FRACTIONS = (100.0, 50.0, 10.0, 5.0, 1.0)
FILE_ENDING = ".nii.gz"


@dataclass(frozen=True)
class CasePair:
    """One image and its mask, with the case and patient identifiers (and the tracer, when known)."""

    case: str
    patient: str
    image: Path
    mask: Path
    tracer: str = ""


@dataclass(frozen=True)
class Split:
    """Patient-wise test cases and the nested training subsets (fraction in percent -> cases)."""

    test: tuple[str, ...]
    train: tuple[str, ...]
    fractions: dict[str, tuple[str, ...]]


def _pattern_regex(pattern: str) -> re.Pattern:
    if pattern.count("{case}") != 1:
        raise InputError(None, f"path pattern {pattern!r} must contain '{{case}}' exactly once")
    head, tail = pattern.split("{case}")
    return re.compile("^" + re.escape(head) + r"(?P<case>[^/\\]+?)" + re.escape(tail) + "$")


def find_cases(
    root: str | Path,
    image_pattern: str = "{case}/PET_image.nii.gz",
    mask_pattern: str = "{case}/PET_mask.nii.gz",
    patient_regex: str | None = None,
) -> list[CasePair]:
    """Image/mask pairs under ``root``; every image must have its mask (else one error listing the missing ones).

    ``patient_regex`` (first group, or whole match) maps a case id to its patient id; default: the case id.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "data folder not found")
    regex = _pattern_regex(image_pattern)
    _pattern_regex(mask_pattern)
    images = {}
    for path in sorted(root.glob(image_pattern.replace("{case}", "*"))):
        match = regex.match(path.relative_to(root).as_posix())
        if match and path.exists():
            images[match.group("case")] = path
    if not images:
        raise InputError(root, f"no images match {image_pattern!r}")
    patient_re = re.compile(patient_regex) if patient_regex else None
    pairs, missing = [], []
    for case, image in images.items():
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", case):
            raise InputError(image, f"case id {case!r} holds characters unsafe in file names")
        mask = root / mask_pattern.format(case=case)
        if not mask.exists():
            missing.append(str(mask))
            continue
        patient = case
        if patient_re is not None:
            found = patient_re.search(case)
            if not found:
                raise InputError(image, f"case id {case!r} does not match the patient pattern {patient_regex!r}")
            patient = found.group(1) if found.groups() else found.group(0)
        pairs.append(CasePair(case, patient, image, mask))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise InputError(root, f"{len(missing)} of {len(images)} images have no label file: {shown}")
    return pairs


def split_cases(
    cases: Sequence[CasePair],
    test_fraction: float = 0.2,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    train_seed: int | None = None,
) -> Split:
    """Patient-wise seeded test split and nested training fractions (percent); refuses empty subsets.

    ``train_seed`` (default: keep ``seed``'s order) permutes the training patients after the test split, so the
    fractions of two training seeds hold different patients and the same test patients."""
    if not 0.0 <= test_fraction < 1.0:
        raise InputError(None, f"test fraction must be in [0, 1), got {test_fraction}")
    if not fractions:
        raise InputError(None, "give at least one training fraction")
    for f in fractions:
        if not 0.0 < float(f) <= 100.0:
            raise InputError(None, f"training fractions are percentages in (0, 100], got {f}")
    patients = sorted({c.patient for c in cases})
    order = [patients[i] for i in np.random.default_rng(seed).permutation(len(patients))]
    n_test = int(round(test_fraction * len(patients)))
    if test_fraction > 0 and n_test == 0:
        n_test = 1
    if len(patients) - n_test < 1:
        raise InputError(None, f"{len(patients)} patients leave no training patient after the test split")
    test_patients, train_patients = order[:n_test], order[n_test:]
    if train_seed is not None:
        train_patients = [train_patients[i] for i in np.random.default_rng(train_seed).permutation(len(train_patients))]
    by_patient: dict[str, list[str]] = {}
    for c in cases:
        by_patient.setdefault(c.patient, []).append(c.case)

    def cases_of(pats: Sequence[str]) -> tuple[str, ...]:
        return tuple(sorted(case for p in pats for case in by_patient[p]))

    subsets = {}
    for f in sorted({float(f) for f in fractions}, reverse=True):
        n = int(math.floor(f / 100.0 * len(train_patients) + 0.5))
        if n < 1:
            raise InputError(
                None,
                f"training fraction {format_fraction(f)}% of {len(train_patients)} training patients leaves "
                f"fewer than one training case; the smallest usable fraction here is "
                f"{format_fraction(math.ceil(50.0 / len(train_patients) * 100) / 100)}%",
            )
        subsets[format_fraction(f)] = cases_of(train_patients[:n])
    return Split(test=cases_of(test_patients), train=cases_of(train_patients), fractions=subsets)


def _label_values(masks: dict[str, np.ndarray]) -> list[int]:
    values = set()
    for array in masks.values():
        values.update(int(v) for v in np.unique(array))
    return sorted(values | {0})


def _check_export_target(
    layout: RunLayout,
    target: Path,
    name: str,
    dataset_id: int,
    dataset_name: str,
    source_root: str | Path | None,
    overwrite: bool,
) -> None:
    """Refuse a bad dataset name / id, a run directory of another dataset, or existing outputs."""
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
        raise InputError(None, f"dataset name {name!r}: use letters, digits, '-' and '_' only")
    if not 1 <= int(dataset_id) <= 999:
        raise InputError(None, f"nnU-Net dataset ids are 1..999, got {dataset_id}")
    if layout.manifest.exists():
        old = read_manifest(layout.root)
        if old["dataset_name"] != dataset_name or old.get("source_root") != str(source_root):
            raise InputError(
                layout.root,
                f"this run directory already holds dataset {old['dataset_name']} from {old.get('source_root')}; "
                "use another `run_dir` for another dataset",
            )
        if not overwrite:
            raise OutputExistsError(layout.manifest)
    elif layout.raw.exists() and any(layout.raw.iterdir()):
        raise InputError(
            layout.root, "holds an nnU-Net raw folder without a medfoundry manifest; use another `run_dir`"
        )
    if target.exists() and not overwrite:
        raise OutputExistsError(target)


def _write_case(pair: CasePair, case: str, part: str, staging: Path, modality: str, binarize: bool):
    """Read one (image, mask) pair, write it in nnU-Net's raw layout; returns (labels, manifest record)."""
    from medfoundry.io import read_image, read_mask, write_image, write_mask

    image = read_image(pair.image, modality=modality)
    if image.spatial_ndim != 3 or image.is_rgb:
        raise InputError(pair.image, f"expected a 3D volume, got shape {image.array.shape}")
    mask = read_mask(pair.mask, reference=image)
    labels = mask.array
    if binarize:
        labels = (labels > 0).astype(np.uint8)
        mask = mask.with_array(labels)
    write_image(image, staging / f"images{part}" / f"{case}_0000{FILE_ENDING}")
    write_mask(mask, staging / f"labels{part}" / f"{case}{FILE_ENDING}")
    record = {
        "patient": pair.patient,
        "tracer": pair.tracer,
        "image": str(pair.image.resolve()),
        "mask": str(pair.mask.resolve()),
        "shape_zyx": list(image.spatial_shape),
        "spacing_xyz": list(image.spacing),
        "foreground_voxels": int(np.count_nonzero(labels)),
    }
    return labels, record


def _label_names(values: list[int], source_root: str | Path | None) -> dict[str, int]:
    """nnU-Net's label names for consecutive labels 0..K ("lesion" for a single foreground class)."""
    if values != list(range(len(values))):
        raise InputError(
            source_root,
            f"mask labels {values} are not consecutive integers 0..K as nnU-Net needs; "
            "pass `binarize` to use every non-zero label as one foreground class",
        )
    label_names = {"background": 0}
    if len(values) == 2:
        label_names["lesion"] = 1
    else:
        label_names.update({f"label_{v}": v for v in values[1:]})
    return label_names


def export_dataset(
    cases: Sequence[CasePair],
    run_dir: str | Path,
    split: Split,
    dataset_id: int = 501,
    name: str = "PETSTS",
    modality: str = "PET",
    binarize: bool = False,
    seed: int = 0,
    source_root: str | Path | None = None,
    overwrite: bool = False,
    train_seed: int | None = None,
) -> dict:
    """Write the nnU-Net raw dataset and the run manifest; returns the manifest.

    Images are read with :func:`medfoundry.io.read_image`, masks with :func:`medfoundry.io.read_mask` on the
    image's grid (a mask on another grid is refused, naming the file). Everything is written to a staging folder
    first, so a bad case leaves the run directory as it was.
    """
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    layout = RunLayout(Path(run_dir).resolve())
    dataset_name = nnunet_dataset_name(dataset_id, name)
    target = layout.dataset_raw(dataset_name)
    _check_export_target(layout, target, name, dataset_id, dataset_name, source_root, overwrite)
    by_case = {c.case: c for c in cases}
    layout.raw.mkdir(parents=True, exist_ok=True)
    with atomic_dir(target, overwrite=overwrite) as staging:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (staging / sub).mkdir()
        masks: dict[str, np.ndarray] = {}
        records: dict[str, dict] = {}
        order = [(c, "Tr") for c in split.train] + [(c, "Ts") for c in split.test]
        for case, part in tqdm(order, desc="export to nnU-Net raw", unit="case"):
            labels, record = _write_case(by_case[case], case, part, staging, modality, binarize)
            masks[case], records[case] = labels, record
        values = _label_values(masks)
        label_names = _label_names(values, source_root)
        generate_dataset_json(
            str(staging),
            {0: modality.upper()},
            label_names,
            len(split.train),
            FILE_ENDING,
            dataset_name=dataset_name,
            description=f"exported by medfoundry nnunet prepare from {source_root}",
            converted_by="medfoundry",
            license="see the source data set",
        )
        manifest = {
            "format": MANIFEST_FORMAT,
            "export_id": uuid.uuid4().hex,
            "dataset_id": int(dataset_id),
            "dataset_name": dataset_name,
            "source_root": str(source_root),
            "modality": modality.upper(),
            "labels": label_names,
            "seed": int(seed),
            "train_seed": None if train_seed is None else int(train_seed),
            "test": list(split.test),
            "train": list(split.train),
            "fractions": {k: list(v) for k, v in split.fractions.items()},
            "folds": {k: i for i, k in enumerate(split.fractions)},
            "cases": records,
        }
    write_manifest(layout.root, manifest, overwrite=True)
    return manifest


def prepare(
    data_root: str | Path,
    run_dir: str | Path,
    image_pattern: str = "{case}/PET_image.nii.gz",
    mask_pattern: str = "{case}/PET_mask.nii.gz",
    dataset_id: int = 501,
    name: str = "PETSTS",
    modality: str = "PET",
    test_fraction: float = 0.2,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    patient_regex: str | None = None,
    binarize: bool = False,
    max_cases: int | None = None,
    overwrite: bool = False,
    train_seed: int | None = None,
    autopet: bool = False,
    tracers: Sequence[str] | None = None,
) -> dict:
    """Find the cases, split them and export them: ``medfoundry nnunet prepare`` as a function. With ``autopet``
    the cases are the studies of an autoPET III tree (:mod:`medfoundry.data.autopet`: SUV + SEG per study, the
    patient above the study, the tracer recorded per case; ``tracers`` keeps some) instead of the patterns."""
    if autopet:
        from medfoundry.data.autopet import autopet_studies

        studies = autopet_studies(data_root, tracers)
        cases = [CasePair(s.case_id, s.patient, s.image, s.label, s.tracer) for s in studies]
    elif tracers:
        raise InputError(None, "`tracers` needs `autopet` (only an autoPET tree says which tracer a case has)")
    else:
        cases = find_cases(data_root, image_pattern, mask_pattern, patient_regex)
    if max_cases is not None:
        cases = cases[: int(max_cases)]
    split = split_cases(cases, test_fraction, fractions, seed, train_seed)
    return export_dataset(
        cases,
        run_dir,
        split,
        dataset_id=dataset_id,
        name=name,
        modality=modality,
        binarize=binarize,
        seed=seed,
        source_root=Path(data_root).resolve(),
        overwrite=overwrite,
        train_seed=train_seed,
    )


def manifest_summary(manifest: dict) -> str:
    """Two lines: dataset, case counts and the size of each training fraction."""
    fr = ", ".join(f"{k}%: {len(v)}" for k, v in manifest["fractions"].items())
    return (
        f"{manifest['dataset_name']}: {len(manifest['train'])} training and {len(manifest['test'])} test cases "
        f"(labels {json.dumps(manifest['labels'])})\ntraining fractions (cases): {fr}"
    )
