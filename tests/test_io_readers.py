"""read_image / read_mask on the real shared files, and every bad-input rejection."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from medfoundry.errors import InputError
from medfoundry.io import MedicalImage, read_image, read_mask


def _cut(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


# ------------------------------------------------------------------------------------------ formats


def test_nifti_pet_matches_nibabel(shared_data):
    path = shared_data / "pet-sts" / "STS_001" / "PET_image.nii.gz"
    img = read_image(path)
    assert img.modality == "OTHER"  # a NIfTI does not say what it is
    assert img.array.dtype == np.float32 and img.array.ndim == 3
    nii = nib.load(path)
    # nibabel is (x, y, z); ours is (z, y, x)
    np.testing.assert_allclose(img.array, np.asarray(nii.dataobj, dtype=np.float32).transpose(2, 1, 0))
    np.testing.assert_allclose(img.spacing, nii.header.get_zooms()[:3], rtol=1e-6)
    assert read_image(path, modality="pet").modality == "PET"


def test_nrrd_keeps_int_dtype_and_flipped_direction(shared_data):
    path = shared_data / "ct-mr-tumour" / "brain1_image.nrrd"
    img = read_image(path)
    ref = sitk.ReadImage(str(path))
    assert img.array.dtype == np.int16
    assert img.array.shape == tuple(reversed(ref.GetSize()))
    assert img.direction == ref.GetDirection() and img.direction[4] == -1.0
    assert img.origin == ref.GetOrigin() and img.spacing == ref.GetSpacing()


def test_mask_against_reference_grid(shared_data):
    folder = shared_data / "ct-mr-tumour"
    image = read_image(folder / "brain1_image.nrrd")
    mask = read_mask(folder / "brain1_label.nrrd", reference=image)  # int32 on disk
    assert mask.array.dtype == np.uint8 and set(np.unique(mask.array)) == {0, 1}
    with pytest.raises(InputError, match="shape"):
        read_mask(folder / "brain1_label.nrrd", reference=read_image(folder / "breast1_image.nrrd"))
    moved = MedicalImage(image.array, image.spacing, (0.0, 0.0, 0.0), image.direction)
    with pytest.raises(InputError, match="origin") as err:
        read_mask(folder / "brain1_label.nrrd", reference=moved)
    assert "brain1_label.nrrd" in str(err.value)


def test_tiff_microscopy(shared_data):
    img = read_image(shared_data / "microscopy" / "img2d.tif")
    assert img.array.shape == (512, 512) and img.array.dtype == np.uint16
    assert img.spacing == (1.0, 1.0) and not img.is_rgb
    mask = read_mask(shared_data / "microscopy" / "mask2d.tif", reference=img)
    assert len(np.unique(mask.array)) - 1 == 125  # README: a 125-instance mask


def test_png_grey_colour_palette(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    img = read_image(tmp_path / "g.png")
    assert img.array.shape == (20, 30) and np.array_equal(img.array, grey) and img.spacing == (1.0, 1.0)

    colour = rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)
    Image.fromarray(colour, mode="RGBA").save(tmp_path / "c.png")
    img = read_image(tmp_path / "c.png")
    assert img.array.shape == (20, 30, 3) and img.meta["rgb"] and img.is_rgb and img.spatial_ndim == 2
    assert np.array_equal(img.array, colour[..., :3])

    Image.fromarray(colour[..., :3]).save(tmp_path / "c.jpg", quality=95)
    jpg = read_image(tmp_path / "c.jpg")
    assert jpg.is_rgb and jpg.array.shape == (20, 30, 3) and jpg.modality == "RGB"
    Image.fromarray(grey).save(tmp_path / "g.jpg")
    assert read_image(tmp_path / "g.jpg").array.shape == (20, 30)

    labels = np.zeros((10, 12), np.uint8)
    labels[2:5, 3:7] = 2
    pal = Image.fromarray(labels, mode="P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    pal.save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").array.shape == (10, 12, 3)  # as it looks
    assert np.array_equal(read_mask(tmp_path / "p.png").array, labels)  # the labels


def test_float_mask_with_fractions_refused(tmp_path, shared_data):
    src = sitk.ReadImage(str(shared_data / "pet-sts" / "STS_001" / "PET_image.nii.gz"))
    sitk.WriteImage(src, str(tmp_path / "pet.nii.gz"))
    with pytest.raises(InputError, match="non-integer"):
        read_mask(tmp_path / "pet.nii.gz")


# --------------------------------------------------------------------------------------- rejections


def test_missing_and_unsupported(tmp_path):
    with pytest.raises(InputError, match="no such file") as err:
        read_image(tmp_path / "nope.nii.gz")
    assert "nope.nii.gz" in str(err.value)
    (tmp_path / "data.xyz").write_text("hello")
    with pytest.raises(InputError, match="unsupported file type '.xyz'"):
        read_image(tmp_path / "data.xyz")


@pytest.mark.parametrize(
    "rel, name",
    [
        ("pet-sts/STS_001/PET_image.nii.gz", "cut.nii.gz"),
        ("ct-mr-tumour/breast1_image.nrrd", "cut.nrrd"),
        ("microscopy/img2d.tif", "cut.tif"),
        ("ct-lesion-npz/CT_Lesion_000015_01_01_081-093.npz", "cut.npz"),
    ],
)
def test_truncated_files(shared_data, tmp_path, rel, name):
    cut = _cut(shared_data / rel, tmp_path / name, 0.6)
    with pytest.raises(InputError) as err:
        read_image(cut)
    assert name in str(err.value)


def test_truncated_uncompressed_nifti_and_mha(shared_data, tmp_path):
    src = sitk.ReadImage(str(shared_data / "pet-sts" / "STS_001" / "PET_image.nii.gz"))
    for name in ("full.nii", "full.mha"):
        sitk.WriteImage(src, str(tmp_path / name), useCompression=False)
        assert read_image(tmp_path / name).array.shape == src.GetSize()[::-1]
        cut = _cut(tmp_path / name, tmp_path / f"cut_{name}", 0.9)
        with pytest.raises(InputError, match="truncated"):
            read_image(cut)


def test_nan_voxels_counted(tmp_path):
    arr = np.ones((4, 5, 6), np.float32)
    arr[0, 0, :3] = np.nan
    arr[1, 1, 1] = np.inf
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / "nan.nii.gz"))
    with pytest.raises(InputError, match="4 voxels are NaN or infinite") as err:
        read_image(tmp_path / "nan.nii.gz")
    assert "nan.nii.gz" in str(err.value)


def test_4d_refused(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4, 3), np.float32), np.eye(4)), tmp_path / "t.nii.gz")
    with pytest.raises(InputError, match=r"4D image with shape \(3, 4, 5, 6\), give one 3D volume"):
        read_image(tmp_path / "t.nii.gz")
    # a 4D file holding a single volume is fine
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4, 1), np.float32), np.eye(4)), tmp_path / "one.nii.gz")
    assert read_image(tmp_path / "one.nii.gz").array.shape == (4, 5, 6)


def test_empty_image_refused(tmp_path):
    np.savez(tmp_path / "empty.npz", imgs=np.zeros((0, 5, 5), np.uint8))
    with pytest.raises(InputError, match="empty"):
        read_image(tmp_path / "empty.npz")


def test_folder_copy_of_truncated_png(tmp_path):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(tmp_path / "a.png")
    _cut(tmp_path / "a.png", tmp_path / "b.png", 0.5)
    with pytest.raises(InputError, match="b.png"):
        read_image(tmp_path / "b.png")
    shutil.copy(tmp_path / "a.png", tmp_path / "c.png")
    assert read_image(tmp_path / "c.png").array.shape == (64, 64)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("case.nii.gz", ("case", ".nii.gz")),
        ("CASE.NII.GZ", ("CASE", ".nii.gz")),
        ("a.b.nhdr", ("a.b", ".nhdr")),
        ("x.nrrd", ("x", ".nrrd")),
        ("x.mha", ("x", ".mha")),
        ("x.mhd", ("x", ".mhd")),
        ("IM0001.dcm", ("IM0001", ".dcm")),
        ("x.npz", ("x", ".npz")),
        ("x.PNG", ("x", ".png")),
        ("notes.txt", ("notes", ".txt")),
        ("README", ("README", "")),
    ],
)
def test_split_suffix_knows_every_format(name, expected):
    from medfoundry.io.paths import split_suffix

    assert split_suffix(name) == expected


def test_every_readable_suffix_is_a_format_suffix():
    from medfoundry.io.dicom import DICOM_SUFFIXES
    from medfoundry.io.itk import ITK_READ_SUFFIXES
    from medfoundry.io.paths import FORMAT_SUFFIXES
    from medfoundry.io.raster2d import RASTER_SUFFIXES

    assert set(ITK_READ_SUFFIXES) | set(RASTER_SUFFIXES) | set(DICOM_SUFFIXES) | {".npz"} <= set(FORMAT_SUFFIXES)
