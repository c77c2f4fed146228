"""`segment` (one file, a manifest, the viewer) windows a file as training does: explicit modality, else the file's
own (DICOM), else its name (``PET_image.nii.gz`` -> SUV window), so an adapter trained on such files sees the same
intensities at inference."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest

from medfoundry.api import read_for_segmentation, segment, segment_many
from medfoundry.inference.manifest import read_manifest
from medfoundry.inference.predictor import LiteMedSAMPredictor
from medfoundry.inference.prompts import objects_from_prompts
from medfoundry.io import read_mask
from medfoundry.preprocessing.intensity import normalize_intensity


@pytest.fixture()
def pet_copies(shared_data, tmp_path):
    src = shared_data / "pet-sts" / "STS_008" / "PET_image.nii.gz"
    named, unnamed = tmp_path / "PET_image.nii.gz", tmp_path / "scan.nii.gz"
    shutil.copy(src, named)
    shutil.copy(src, unnamed)
    return named, unnamed


def test_file_name_gives_the_modality_only_when_nothing_else_does(pet_copies):
    named, unnamed = pet_copies
    assert read_for_segmentation(named).modality == "PET"
    assert read_for_segmentation(unnamed).modality == "OTHER"
    assert read_for_segmentation(named, "CT").modality == "CT"  # the user's choice wins
    assert read_for_segmentation(unnamed, "PET").modality == "PET"
    suv = read_for_segmentation(named)
    np.testing.assert_allclose(normalize_intensity(suv), np.clip(suv.array / 10.0, 0, 1), atol=1e-6)


def test_segment_and_manifest_window_a_pet_named_file_as_pet(pet_copies, tiny_model, tmp_path):
    named, unnamed = pet_copies
    predictor = LiteMedSAMPredictor(model=tiny_model, backend="torch")
    box = [[8, 8, 10, 22, 22, 12]]
    objects = objects_from_prompts(box, [], [], None)
    by_name = segment(named, objects, tmp_path / "by_name.nii.gz", predictor=predictor, progress=False)
    told = segment(unnamed, objects, tmp_path / "told.nii.gz", modality="PET", predictor=predictor, progress=False)
    assert by_name.array.any()
    np.testing.assert_array_equal(by_name.array, told.array)
    # and that equality says something: without the name, this scan gets another input (percentile window)
    percentile = normalize_intensity(read_for_segmentation(unnamed))
    assert np.abs(percentile - normalize_intensity(read_for_segmentation(named))).max() > 0.05
    manifest = tmp_path / "rows.csv"
    with manifest.open("w", newline="") as f:
        csv.writer(f).writerows([["image", "box", "out"], [str(named), " ".join(map(str, box[0])), "m.nii.gz"]])
    result = segment_many(read_manifest(manifest), predictor=predictor, progress=False)
    assert len(result.written) == 1
    np.testing.assert_array_equal(read_mask(tmp_path / "m.nii.gz").array, by_name.array)
