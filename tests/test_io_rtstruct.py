"""RTSTRUCT rasterisation against the converted NIfTI masks, holes by even-odd, ROI name errors."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest

from medfoundry.errors import InputError
from medfoundry.io import MedicalImage, list_rois, read_image, read_mask, read_rtstruct
from medfoundry.io.rtstruct import polygon_fill


@pytest.fixture(scope="module")
def case(shared_data):
    root = shared_data / "pet-wholebody" / "STS_001"
    reference = read_image(root / "nifti" / "STS_001_FDG_PET_image.nii.gz")
    return root, reference


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * (a & b).sum() / (a.sum() + b.sum())


def test_rois_match_converted_masks(case):
    root, reference = case
    rtstruct = root / "dicom" / "mask" / "1-1.dcm"
    assert list_rois(rtstruct) == ["GTV_Mass", "GTV_Edema"]
    masks = read_rtstruct(rtstruct, reference)
    for name, mask in masks.items():
        expected = read_mask(root / "nifti" / f"STS_001_FDG_PET_mask_{name}.nii.gz", reference=reference)
        assert mask.same_grid(reference) and mask.array.dtype == np.uint8
        diff = int((mask.array != expected.array).sum())
        print(f"{name}: {int(mask.array.sum())} voxels, {diff} differ from the NIfTI mask")
        assert _dice(mask.array, expected.array) >= 0.98
    assert masks["GTV_Mass"].array.sum() == 5095  # README: 5095 voxels on 31 slices
    assert len(np.unique(np.nonzero(masks["GTV_Mass"].array)[0])) == 31


def test_dicom_reference_and_folder_path(case):
    root, _ = case
    pet = read_image(root / "dicom" / "image", suv=False)
    masks = read_rtstruct(root / "dicom" / "mask", pet, roi_names=["GTV_Mass"])  # folder with one RTSTRUCT
    assert list(masks) == ["GTV_Mass"]
    expected = read_mask(root / "nifti" / "STS_001_FDG_PET_mask_GTV_Mass.nii.gz")
    assert _dice(masks["GTV_Mass"].array, expected.array) >= 0.98
    wrong = MedicalImage(pet.array, pet.spacing, pet.origin, pet.direction, meta={"frame_of_reference_uid": "1.2.3"})
    with pytest.raises(InputError, match="frame of reference"):
        read_rtstruct(root / "dicom" / "mask", wrong)


def test_unknown_roi_lists_available(case):
    root, reference = case
    with pytest.raises(InputError, match=r"no ROI named 'Tumour'; available ROIs: \['GTV_Mass', 'GTV_Edema'\]"):
        read_rtstruct(root / "dicom" / "mask" / "1-1.dcm", reference, roi_names=["Tumour"])


def test_inner_contour_is_a_hole(case, tmp_path):
    root, reference = case
    path = tmp_path / "rt.dcm"
    shutil.copyfile(root / "dicom" / "mask" / "1-1.dcm", path)
    full = read_rtstruct(path, reference, ["GTV_Mass"])["GTV_Mass"].array
    # the slice with the largest cross-section; a 3 x 3 voxel square around its centre becomes a hole
    k = int(np.argmax(full.sum(axis=(1, 2))))
    ys, xs = np.nonzero(full[k])
    cy, cx = int(np.median(ys)), int(np.median(xs))
    assert full[k, cy - 1 : cy + 2, cx - 1 : cx + 2].all()
    sx, sy, sz = reference.spacing
    ox, oy, oz = reference.origin
    corners = [(cx - 1.5, cy - 1.5), (cx + 1.5, cy - 1.5), (cx + 1.5, cy + 1.5), (cx - 1.5, cy + 1.5)]
    points = [v for i, j in corners for v in (ox + i * sx, oy + j * sy, oz + k * sz)]
    ds = pydicom.dcmread(path)
    roi = next(c for c in ds.ROIContourSequence if int(c.ReferencedROINumber) == 1)
    hole = pydicom.Dataset()
    hole.ContourGeometricType = "CLOSED_PLANAR"
    hole.NumberOfContourPoints = 4
    hole.ContourData = [f"{v:.4f}" for v in points]
    roi.ContourSequence.append(hole)
    ds.save_as(path)
    holed = read_rtstruct(path, reference, ["GTV_Mass"])["GTV_Mass"].array
    changed = np.argwhere(holed != full)
    assert len(changed) == 9 and (changed[:, 0] == k).all()
    assert not holed[k, cy - 1 : cy + 2, cx - 1 : cx + 2].any()


def test_polygon_fill_counts_pixel_centres():
    # a 4 x 3 rectangle with corners on pixel edges covers exactly 12 pixel centres
    out = polygon_fill(np.array([1.5, 5.5, 5.5, 1.5]), np.array([0.5, 0.5, 3.5, 3.5]), (6, 8))
    assert out.sum() == 12 and out[1:4, 2:6].all()
    # a triangle: centres strictly inside the half-plane count; nothing leaks outside the image
    tri = polygon_fill(np.array([-3.0, 10.0, -3.0]), np.array([-3.0, -3.0, 10.0]), (5, 5))
    expected = np.add.outer(np.arange(5), np.arange(5)) < 7
    assert np.array_equal(tri.astype(bool), expected)
