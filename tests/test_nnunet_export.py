"""nnU-Net arm, step 1: finding cases, patient-wise split with nested fractions, export and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medfoundry.errors import InputError, OutputExistsError
from medfoundry.io import MedicalImage, read_image, read_mask, write_image, write_mask
from medfoundry.training.nnunet.export import CasePair, find_cases, prepare, split_cases


def _write_case(root: Path, case: str, shape=(10, 14, 16), spacing=(4.0, 4.0, 3.27), mask_spacing=None, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.gamma(2.0, 0.5, size=shape).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    mask[3:6, 4:8, 5:9] = 1
    image[mask > 0] += 8.0
    (root / case).mkdir(parents=True)
    img = MedicalImage(image, spacing, origin=(-10.0, 5.0, 2.5), modality="PET")
    write_image(img, root / case / "PET_image.nii.gz")
    grid = MedicalImage(mask, mask_spacing or spacing, origin=(-10.0, 5.0, 2.5))
    write_mask(grid, root / case / "PET_mask.nii.gz")


@pytest.fixture()
def small_set(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for i in range(5):
        _write_case(root, f"P{i:02d}", seed=i)
    return root


def test_real_pet_sts_split_is_patient_wise_seeded_and_nested(shared_data: Path) -> None:
    cases = find_cases(shared_data / "pet-sts")
    assert len(cases) == 30 and all(c.mask.name == "PET_mask.nii.gz" for c in cases)
    split = split_cases(cases, test_fraction=0.2, fractions=(100, 50, 10), seed=0)
    assert len(split.test) == 6 and len(split.train) == 24
    assert not set(split.test) & set(split.train)
    sizes = {k: len(v) for k, v in split.fractions.items()}
    assert sizes == {"100": 24, "50": 12, "10": 2}
    assert set(split.fractions["10"]) < set(split.fractions["50"]) < set(split.fractions["100"])
    assert split == split_cases(cases, 0.2, (100, 50, 10), seed=0)
    assert split.test != split_cases(cases, 0.2, (100, 50, 10), seed=1).test
    with pytest.raises(InputError, match="1% of 24 training patients leaves fewer than one training case"):
        split_cases(cases, 0.2, (100, 1), seed=0)


def test_training_seed_redraws_training_patients_against_the_same_test_patients(shared_data: Path) -> None:
    cases = find_cases(shared_data / "pet-sts")
    base = split_cases(cases, 0.2, (100, 50, 10, 5), seed=0)
    a = split_cases(cases, 0.2, (100, 50, 10, 5), seed=0, train_seed=0)
    b = split_cases(cases, 0.2, (100, 50, 10, 5), seed=0, train_seed=1)
    assert base.test == a.test == b.test and set(a.train) == set(b.train) == set(base.train)
    assert a.fractions["10"] != b.fractions["10"] and a.fractions["50"] != b.fractions["50"]
    for s in (a, b):
        assert {k: len(v) for k, v in s.fractions.items()} == {"100": 24, "50": 12, "10": 2, "5": 1}
        assert set(s.fractions["5"]) < set(s.fractions["10"]) < set(s.fractions["50"]) < set(s.fractions["100"])
    assert a == split_cases(cases, 0.2, (100, 50, 10, 5), seed=0, train_seed=0)


def test_split_keeps_a_patients_cases_together() -> None:
    cases = [CasePair(f"pat{p}_scan{s}", f"pat{p}", Path("i"), Path("m")) for p in range(6) for s in range(2)]
    split = split_cases(cases, test_fraction=0.34, fractions=(100, 50), seed=3)
    test_patients = {c.split("_")[0] for c in split.test}
    train_patients = {c.split("_")[0] for c in split.train}
    assert len(test_patients) == 2 and not test_patients & train_patients
    assert len(split.train) == 8 and len(split.fractions["50"]) == 4


def test_export_writes_nnunet_layout_with_geometry(small_set: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    manifest = prepare(small_set, run, test_fraction=0.2, fractions=(100, 50), dataset_id=42, name="Tiny")
    raw = run / "nnUNet_raw" / "Dataset042_Tiny"
    ds = json.loads((raw / "dataset.json").read_text())
    assert ds["channel_names"] == {"0": "PET"} and ds["labels"] == {"background": 0, "lesion": 1}
    assert ds["numTraining"] == 4 and ds["file_ending"] == ".nii.gz"
    assert sorted(p.name for p in (raw / "imagesTr").iterdir()) == [f"{c}_0000.nii.gz" for c in manifest["train"]]
    assert sorted(p.name for p in (raw / "labelsTs").iterdir()) == [f"{c}.nii.gz" for c in manifest["test"]]
    case = manifest["train"][0]
    src = read_image(small_set / case / "PET_image.nii.gz")
    out = read_image(raw / "imagesTr" / f"{case}_0000.nii.gz")
    assert out.same_grid(src) and np.allclose(out.array, src.array)
    assert np.array_equal(
        read_mask(raw / "labelsTr" / f"{case}.nii.gz").array, read_mask(small_set / case / "PET_mask.nii.gz").array
    )
    assert manifest["folds"] == {"100": 0, "50": 1}
    # the same run again is refused without --overwrite; another dataset in it is refused always
    with pytest.raises(OutputExistsError):
        prepare(small_set, run, fractions=(100, 50), dataset_id=42, name="Tiny")
    with pytest.raises(InputError, match="already holds dataset Dataset042_Tiny"):
        prepare(small_set, run, fractions=(100, 50), dataset_id=43, name="Other")
    again = prepare(small_set, run, fractions=(100, 50), dataset_id=42, name="Tiny", seed=5, overwrite=True)
    assert again["export_id"] != manifest["export_id"]


def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def test_missing_label_is_refused_and_nothing_written(small_set: Path, tmp_path: Path) -> None:
    (small_set / "P03" / "PET_mask.nii.gz").unlink()
    run = tmp_path / "run"
    with pytest.raises(InputError, match=r"1 of 5 images have no label file: .*P03/PET_mask.nii.gz"):
        prepare(small_set, run, fractions=(100,))
    assert _tree(run) == []


def test_mask_on_another_grid_is_refused_naming_it(small_set: Path, tmp_path: Path) -> None:
    bad = small_set / "P04"
    for f in bad.iterdir():
        f.unlink()
    bad.rmdir()
    _write_case(small_set, "P04", mask_spacing=(4.0, 4.0, 5.0))
    run = tmp_path / "run"
    with pytest.raises(InputError, match=r"P04/PET_mask.nii.gz.*spacing"):
        prepare(small_set, run, test_fraction=0.0, fractions=(100,))
    assert _tree(run / "nnUNet_raw") == [] and not (run / "medfoundry_nnunet.json").exists()


def test_non_consecutive_labels_need_binarize(small_set: Path, tmp_path: Path) -> None:
    mask = read_mask(small_set / "P01" / "PET_mask.nii.gz")
    write_mask(mask.with_array(mask.array * 3), small_set / "P01" / "PET_mask.nii.gz", overwrite=True)
    with pytest.raises(InputError, match=r"labels \[0, 1, 3\] are not consecutive"):
        prepare(small_set, tmp_path / "run", test_fraction=0.0, fractions=(100,))
    manifest = prepare(small_set, tmp_path / "run", test_fraction=0.0, fractions=(100,), binarize=True)
    assert manifest["labels"] == {"background": 0, "lesion": 1}
