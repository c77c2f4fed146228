"""write_image / write_mask: geometry round trips, label dtypes, PNG rules, refusals that change nothing."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medfoundry.errors import InputError, OutputExistsError
from medfoundry.io import MedicalImage, read_image, read_mask, write_image, write_mask


@pytest.fixture(scope="module")
def pet(shared_data):
    return read_image(shared_data / "pet-sts" / "STS_001" / "PET_image.nii.gz")


@pytest.fixture(scope="module")
def brain(shared_data):
    return read_image(shared_data / "ct-mr-tumour" / "brain1_image.nrrd")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".npz"])
def test_mask_roundtrip_keeps_geometry(shared_data, pet, tmp_path, suffix):
    src = shared_data / "pet-sts" / "STS_001" / "PET_mask.nii.gz"
    mask = read_mask(src, reference=pet)
    out = write_mask(mask.array, tmp_path / f"m{suffix}", reference=pet)
    back = read_mask(out, reference=pet)
    assert np.array_equal(back.array, mask.array) and back.array.dtype == np.uint8
    assert back.spacing == pet.spacing and back.origin == pet.origin and back.direction == pet.direction
    if suffix.startswith(".nii"):
        np.testing.assert_allclose(nib.load(out).affine, nib.load(src).affine, atol=1e-4)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha", ".npz"])
def test_image_roundtrip_flipped_direction(brain, tmp_path, suffix):
    out = write_image(brain, tmp_path / f"b{suffix}")
    back = read_image(out)
    assert back.array.dtype == brain.array.dtype and np.array_equal(back.array, brain.array)
    assert back.direction == brain.direction and back.direction[4] == -1.0
    np.testing.assert_allclose(back.spacing, brain.spacing, rtol=1e-6)
    np.testing.assert_allclose(back.origin, brain.origin, atol=1e-4)


def test_oblique_direction_written_exactly(tmp_path):
    theta = np.deg2rad(20)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    img = MedicalImage(np.arange(60, dtype=np.int16).reshape(3, 4, 5), (0.7, 0.8, 2.5), (10.0, -5.0, 3.0), rot.ravel())
    for suffix in (".nii.gz", ".nrrd", ".mha"):
        back = read_image(write_image(img, tmp_path / f"o{suffix}"))
        np.testing.assert_allclose(back.direction, img.direction, atol=1e-6)
        np.testing.assert_allclose(back.origin, img.origin, atol=1e-5)
        sitk_back = sitk.ReadImage(str(tmp_path / f"o{suffix}"))
        # ITK agrees on where voxel (4, 3, 2) lies in space
        np.testing.assert_allclose(
            sitk_back.TransformIndexToPhysicalPoint((4, 3, 2)),
            np.asarray(img.origin) + rot @ (np.array([4, 3, 2]) * np.asarray(img.spacing)),
            atol=1e-4,
        )


@pytest.mark.parametrize("top, dtype", [(1, np.uint8), (255, np.uint8), (300, np.uint16), (70000, np.uint32)])
def test_smallest_label_dtype(pet, tmp_path, top, dtype):
    labels = np.zeros(pet.spatial_shape, np.int64)
    labels[5, 5, 5:8] = [1, top // 2, top]
    back = read_mask(write_mask(labels, tmp_path / "l.nii.gz", reference=pet))
    assert back.array.dtype == dtype and back.array.max() == top
    assert np.array_equal(back.array, labels)


def test_png_masks(tmp_path):
    ref = MedicalImage(np.zeros((8, 9), np.uint8), (1.0, 1.0))
    labels = np.zeros((8, 9), np.uint16)
    labels[2:4, 3:6] = 1
    back = read_mask(write_mask(labels, tmp_path / "a.png", reference=ref))
    assert back.array.max() == 1 and np.array_equal(back.array, labels)  # values kept by default
    scaled = read_mask(write_mask(labels, tmp_path / "b.png", png_scale_binary=True))  # PNG: no geometry needed
    assert set(np.unique(scaled.array)) == {0, 255}
    labels[0, 0] = 300
    with pytest.raises(InputError, match="npz"):
        write_mask(labels, tmp_path / "c.png", reference=ref)
    assert not (tmp_path / "c.png").exists()
    with pytest.raises(InputError, match="2D"):
        write_mask(
            np.zeros((2, 3, 4), np.uint8),
            tmp_path / "d.png",
            reference=MedicalImage(np.zeros((2, 3, 4)), (1, 1, 1)),
        )


def test_png_image_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    rgb = MedicalImage(rng.integers(0, 256, (6, 7, 3), dtype=np.uint8), (1, 1), meta={"rgb": True})
    back = read_image(write_image(rgb, tmp_path / "rgb.png"))
    assert back.is_rgb and np.array_equal(back.array, rgb.array)
    grey16 = MedicalImage(rng.integers(0, 65535, (6, 7), dtype=np.uint16), (1, 1))
    back = read_image(write_image(grey16, tmp_path / "g.png"))
    assert back.array.dtype == np.uint16 and np.array_equal(back.array, grey16.array)
    with pytest.raises(InputError, match="PNG"):
        write_image(MedicalImage(np.zeros((6, 7), np.float32), (1, 1)), tmp_path / "f.png")


def test_mask_shape_mismatch_and_bad_labels(pet, tmp_path):
    with pytest.raises(InputError, match="does not match the reference image grid") as err:
        write_mask(np.zeros((3, 4, 5), np.uint8), tmp_path / "m.nii.gz", reference=pet)
    assert "m.nii.gz" in str(err.value)
    other = MedicalImage(np.zeros(pet.spatial_shape, np.uint8), (1.0, 1.0, 1.0))
    with pytest.raises(InputError, match="spacing"):
        write_mask(other, tmp_path / "m.nii.gz", reference=pet)
    with pytest.raises(InputError, match="negative"):
        write_mask(-np.ones(pet.spatial_shape, np.int8), tmp_path / "m.nii.gz", reference=pet)
    with pytest.raises(InputError, match="non-integer"):
        write_mask(np.full(pet.spatial_shape, 0.5), tmp_path / "m.nii.gz", reference=pet)
    with pytest.raises(InputError, match="reference="):
        write_mask(np.zeros(pet.spatial_shape, np.uint8), tmp_path / "m.nii.gz")
    with pytest.raises(InputError, match="cannot write '.mhd'"):
        write_mask(np.zeros(pet.spatial_shape, np.uint8), tmp_path / "m.mhd", reference=pet)
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary left behind


def test_existing_output_refused_and_unchanged(pet, tmp_path):
    out = tmp_path / "m.nii.gz"
    ones = np.ones(pet.spatial_shape, np.uint8)
    write_mask(ones, out, reference=pet)
    before = out.read_bytes()
    with pytest.raises(OutputExistsError):
        write_mask(np.zeros_like(ones), out, reference=pet)
    with pytest.raises(OutputExistsError):
        write_image(pet, out)
    assert out.read_bytes() == before
    write_mask(np.zeros_like(ones), out, reference=pet, overwrite=True)
    assert read_mask(out).array.max() == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.nii.gz"]
