"""Slice dataset builder: labels, normalisation, geometry, patient split and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from medfoundry.data.pet_slices import (
    CaseSpec,
    SliceConfig,
    SliceDataset,
    build_slice_dataset,
    grid_geometry,
    patient_split,
    read_case_table,
)
from medfoundry.errors import InputError, OutputExistsError
from medfoundry.io.image import MedicalImage


def write_nifti(path, array, spacing=(4.0, 4.0, 3.0), origin=(0.0, 0.0, 0.0)):
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    sitk.WriteImage(img, str(path))
    return path


def synthetic_case(tmp_path, name, lesion_slices=(3, 4, 5), nz=10, seed=0):
    """A (nz, 16, 16) 'PET' volume with a hot cube on ``lesion_slices`` and its mask."""
    rng = np.random.default_rng(seed)
    vol = rng.uniform(0.5, 1.5, size=(nz, 16, 16)).astype(np.float32)
    mask = np.zeros((nz, 16, 16), np.uint8)
    for z in lesion_slices:
        vol[z, 6:10, 6:10] = 8.0
        mask[z, 6:10, 6:10] = 1
    image = write_nifti(tmp_path / f"{name}_pet.nii.gz", vol)
    label = write_nifti(tmp_path / f"{name}_mask.nii.gz", mask)
    return image, label, vol, mask


def test_native_grid_labels_and_per_slice_scaling(tmp_path):
    image, label, vol, mask = synthetic_case(tmp_path, "a", lesion_slices=(2, 3, 7))
    mask[7] = 0
    mask[7, 8, 8] = 1  # one lesion voxel only on slice 7
    write_nifti(label, mask)
    config = SliceConfig(grid=(0, 0, 0), size=16, min_lesion_voxels=2)
    ds = build_slice_dataset([CaseSpec("a", image, label)], tmp_path / "ds", config, progress=False)
    assert len(ds) == 10
    assert [r["lesion_voxels"] for r in ds.rows] == mask.reshape(10, -1).sum(1).tolist()
    assert ds.labels.tolist() == [0, 0, 1, 1, 0, 0, 0, 0, 0, 0]  # slice 7 has 1 < 2 lesion voxels
    pixels = ds.case_images("a")
    assert pixels.dtype == np.uint8 and pixels.shape == (10, 16, 16)
    assert (pixels.reshape(10, -1).max(1) == 255).all()  # every slice divided by its own maximum
    expected = np.round(vol[0] / vol[0].max() * 255)
    assert np.abs(pixels[0].astype(int) - expected).max() <= 1
    assert [r["slice_max"] for r in ds.rows] == pytest.approx(vol.reshape(10, -1).max(1).tolist(), rel=1e-4)
    floats = ds.images([0, 2])
    assert floats.dtype == np.float32 and floats.max() == pytest.approx(1.0)


def test_suv_window_puts_every_slice_on_one_scale_and_needs_suv(tmp_path):
    image, label, vol, _ = synthetic_case(tmp_path, "s", lesion_slices=(2, 3))
    vol[5] *= 0.5  # a dimmer slice: per-slice scaling would stretch it to 255, a fixed window must not
    write_nifti(image, vol)
    config = SliceConfig(grid=(0, 0, 0), size=16, intensity="suv-window", suv_window=4.0)
    ds = build_slice_dataset([CaseSpec("s", image, label)], tmp_path / "ds", config, progress=False)
    pixels = ds.case_images("s").astype(int)
    expected = np.round(np.clip(vol, 0, 4.0) / 4.0 * 255)
    assert np.abs(pixels - expected).max() <= 1  # the lesion (SUV 8) saturates, background keeps its SUV grey
    assert pixels[2].max() == 255 and pixels[5].max() < 0.5 * 1.5 / 4.0 * 255 + 1
    default = build_slice_dataset(
        [CaseSpec("s", image, label)], tmp_path / "ds0", SliceConfig(grid=(0, 0, 0), size=16), progress=False
    )
    assert default.preprocessing_hash != ds.preprocessing_hash  # caches of the two representations never mix
    assert "w = 4" in ds.info["pixel_params"]["intensity"]
    # Bq/mL (values far above any SUV) is refused without a factor, accepted with one
    bq = write_nifti(tmp_path / "bq.nii.gz", vol * 5000.0)
    with pytest.raises(InputError, match="bq.nii.gz.*Bq/mL.*`suv_factor`"):
        build_slice_dataset([CaseSpec("s", bq, label)], tmp_path / "ds1", config, progress=False)
    converted = build_slice_dataset(
        [CaseSpec("s", bq, label, suv_factor=1 / 5000.0)], tmp_path / "ds1", config, progress=False
    )
    assert np.abs(converted.case_images("s").astype(int) - pixels).max() <= 1
    with pytest.raises(InputError, match="intensity must be one of"):
        SliceConfig(intensity="minmax")
    with pytest.raises(InputError, match="SUV window"):
        SliceConfig(intensity="suv-window", suv_window=0.0)


def test_grid_resampling_keeps_the_field_of_view_and_counts_resampled_lesions(tmp_path):
    image, label, _, _ = synthetic_case(tmp_path, "b", lesion_slices=(4, 5))
    img = MedicalImage(np.zeros((10, 16, 16)), (4.0, 4.0, 3.0), (10.0, 20.0, 30.0))
    size, spacing, origin = grid_geometry(img, (32, 8, 5))
    assert size == (32, 8, 5) and spacing == pytest.approx((2.0, 8.0, 6.0))
    first_edge_in = np.array(img.origin) - np.array(img.spacing) / 2
    first_edge_out = np.array(origin) - np.array(spacing) / 2
    assert first_edge_out == pytest.approx(first_edge_in)  # outer voxel edges kept
    ds = build_slice_dataset(
        [CaseSpec("b", image, label)], tmp_path / "ds", SliceConfig(grid=(16, 16, 5), size=24), progress=False
    )
    assert len(ds) == 5 and ds.case_images("b").shape == (5, 24, 24)
    # slices 4 and 5 of 10 become grid slice 2 of 5 (z spacing doubles); nearest-neighbour mask
    assert ds.labels.tolist() == [0, 0, 1, 0, 0]
    assert [r["source_slice"] for r in ds.rows] == [1, 3, 5, 7, 9]


def test_patient_split_is_seeded_and_never_shares_a_patient():
    patients = [f"P{i:02d}" for i in range(40)]
    a = patient_split(patients, seed=1)
    assert a == patient_split(patients, seed=1)
    assert a != patient_split(patients, seed=2)
    counts = {s: sum(v == s for v in a.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 30, "val": 6, "test": 4}
    pinned = patient_split(patients, seed=1, pinned={"P07": "test"})
    assert pinned["P07"] == "test" and sum(v == "test" for v in pinned.values()) == 4
    with pytest.raises(InputError, match="not among"):
        patient_split(patients, pinned={"X": "test"})


def test_cases_of_one_patient_land_in_one_split(tmp_path):
    cases = []
    for i in range(8):
        image, label, _, _ = synthetic_case(tmp_path, f"c{i}", seed=i, nz=4, lesion_slices=(1,))
        cases.append(CaseSpec(f"c{i}", image, label, patient_id=f"p{i // 2}"))  # two scans per patient
    ds = build_slice_dataset(cases, tmp_path / "ds", SliceConfig(grid=(0, 0, 0), size=16), seed=3, progress=False)
    split_of: dict[str, set] = {}
    for row in ds.rows:
        split_of.setdefault(row["patient_id"], set()).add(row["split"])
    assert all(len(s) == 1 for s in split_of.values())
    assert {next(iter(s)) for s in split_of.values()} == {"train", "val", "test"}


def test_bad_inputs_give_clear_errors_and_leave_nothing(tmp_path):
    image, label, vol, mask = synthetic_case(tmp_path, "d")
    out = tmp_path / "ds"
    cfg = SliceConfig(grid=(0, 0, 0), size=16)
    # mask on another grid
    shifted = write_nifti(tmp_path / "shifted.nii.gz", mask, origin=(5.0, 0.0, 0.0))
    with pytest.raises(InputError, match="shifted.nii.gz.*origin"):
        build_slice_dataset([CaseSpec("d", image, shifted)], out, cfg, progress=False)
    small = write_nifti(tmp_path / "small.nii.gz", mask[:5])
    with pytest.raises(InputError, match="small.nii.gz.*shape"):
        build_slice_dataset([CaseSpec("d", image, small)], out, cfg, progress=False)
    # labels other than {0, 1}: say what was found and which option handles it
    multi = mask.copy()
    multi[4, 6:8, 6:8] = 2
    multi_path = write_nifti(tmp_path / "multi.nii.gz", multi)
    with pytest.raises(InputError, match=r"labels \[0, 1, 2\].*`binarize`.*`lesion_labels`"):
        build_slice_dataset([CaseSpec("d", image, multi_path)], out, cfg, progress=False)
    # no slices left after filtering
    empty = write_nifti(tmp_path / "empty.nii.gz", np.zeros_like(vol))
    with pytest.raises(InputError, match="empty.nii.gz: no slices left"):
        build_slice_dataset([CaseSpec("d", empty, label)], out, cfg, progress=False)
    assert not out.exists() and not list(tmp_path.glob(".ds.*"))
    # the options that handle multi-label masks
    only2 = SliceConfig(grid=(0, 0, 0), size=16, lesion_labels=(2,))
    ds = build_slice_dataset([CaseSpec("d", image, multi_path)], out, only2, progress=False)
    assert ds.labels.tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    # an existing dataset is refused and kept
    before = (out / "manifest.csv").read_bytes()
    with pytest.raises(OutputExistsError):
        build_slice_dataset([CaseSpec("d", image, label)], out, cfg, progress=False)
    assert (out / "manifest.csv").read_bytes() == before
    binar = SliceConfig(grid=(0, 0, 0), size=16, binarize=True)
    ds = build_slice_dataset([CaseSpec("d", image, multi_path)], out, binar, overwrite=True, progress=False)
    assert ds.labels.sum() == 3


def test_case_table(tmp_path):
    (tmp_path / "cases.csv").write_text("case_id,image,mask,patient_id\nA,a.nii.gz,m.nii.gz,P1\nB,b.nii.gz,,\n")
    cases = read_case_table(tmp_path / "cases.csv")
    assert [(c.case_id, c.patient_id, c.image.name) for c in cases] == [("A", "P1", "a.nii.gz"), ("B", "B", "b.nii.gz")]
    assert cases[1].mask is None
    (tmp_path / "bad.csv").write_text("id,path\n1,x\n")
    with pytest.raises(InputError, match="bad.csv.*columns"):
        read_case_table(tmp_path / "bad.csv")


def test_real_pet_crops_native_grid(shared_data, tmp_path):
    """On two real IBSI crops at their native grid, labels equal the mask's per-slice lesion counts."""
    cases = []
    expected = []
    for cid in ("STS_002", "STS_019"):
        folder = shared_data / "pet-sts" / cid
        cases.append(CaseSpec(cid, folder / "PET_image.nii.gz", folder / "PET_mask.nii.gz"))
        m = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "PET_mask.nii.gz")))
        p = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "PET_image.nii.gz")))
        keep = p.reshape(p.shape[0], -1).max(1) > 0
        expected += (m.reshape(m.shape[0], -1).sum(1)[keep] >= 1).astype(int).tolist()
    ds = build_slice_dataset(cases, tmp_path / "ds", SliceConfig(grid=(0, 0, 0), size=64), progress=False)
    assert ds.labels.tolist() == expected
    # the preprocessing hash identifies the pixels: a rebuild gives the same one, another slice size another
    build_slice_dataset(cases, tmp_path / "again", SliceConfig(grid=(0, 0, 0), size=64), progress=False)
    smaller = build_slice_dataset(cases, tmp_path / "small", SliceConfig(grid=(0, 0, 0), size=32), progress=False)
    assert SliceDataset(tmp_path / "again").preprocessing_hash == ds.preprocessing_hash
    assert smaller.preprocessing_hash != ds.preprocessing_hash
