"""Lesion insertion on the real whole-body STS_001 scan (SUV) with lesions from real PET crops."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medfoundry.data.insertion import (
    InsertionConfig,
    extract_lesions,
    insert_lesions,
    placement_map,
    resample_template,
)
from medfoundry.io import read_image, read_mask

MASK = "pet-wholebody/STS_001/nifti/STS_001_FDG_PET_mask_GTV_Mass.nii.gz"


@pytest.fixture(scope="module")
def background(shared_data):
    """Whole-body STS_001 in SUV (DICOM series) and its GTV mask."""
    image = read_image(shared_data / "pet-wholebody" / "STS_001" / "dicom" / "image")
    assert image.meta.get("units") == "SUVbw"
    return image, read_mask(shared_data / MASK, reference=image)


@pytest.fixture(scope="module")
def templates(shared_data):
    found = []
    for case in ("STS_002", "STS_003", "STS_008", "STS_019"):
        folder = shared_data / "pet-sts" / case
        crop = read_image(folder / "PET_image.nii.gz")
        found += extract_lesions(crop, read_mask(folder / "PET_mask.nii.gz", reference=crop), case, case)
    return found


@pytest.fixture(scope="module")
def pmap(background):
    image, mask = background
    return placement_map(image.array, image.spacing_zyx, mask.array > 0)


def test_extracted_lesion_is_the_masked_excess_over_its_shell(shared_data):
    folder = shared_data / "pet-sts" / "STS_008"
    crop = read_image(folder / "PET_image.nii.gz")
    mask = read_mask(folder / "PET_mask.nii.gz", reference=crop)
    (template,) = extract_lesions(crop, mask, "STS_008")
    assert template.mask.sum() == (mask.array > 0).sum()  # one component: every mask voxel
    box = ndimage.find_objects((mask.array > 0).astype(np.uint8))[0]
    suv = crop.array[box].astype(np.float32)
    expected = np.where(template.mask, np.clip(suv - template.background_suv, 0, None), 0)
    np.testing.assert_allclose(template.activity, expected, rtol=1e-6)
    assert (template.activity[~template.mask] == 0).all()
    # the background is the median of a shell around the lesion: between the crop's low and its lesion peak
    assert 0.0 < template.background_suv < float(suv[template.mask].max()) / 2
    assert template.spacing_zyx == pytest.approx(crop.spacing_zyx)


def test_resampling_keeps_the_physical_size(templates):
    t = templates[0]
    for spacing in ((3.27, 4.6875, 4.6875), (2.0, 2.0, 2.0)):
        act, mask = resample_template(t, spacing, 1.0)
        assert mask.sum() * np.prod(spacing) / 1000 == pytest.approx(t.volume_ml, rel=0.15)
        assert (act[~mask] == 0).all() and act.max() > 0
        _, half = resample_template(t, spacing, 0.5)
        assert half.sum() / mask.sum() == pytest.approx(1 / 8, rel=0.3)


def test_insertion_keeps_geometry_and_the_label_is_exact(background, templates, pmap):
    image, mask = background
    result = insert_lesions(image, templates, seed=3, own_label=mask, pmap=pmap)
    for out in (result.image, result.label):
        assert out.array.shape == image.array.shape
        assert out.spacing == image.spacing and out.origin == image.origin and out.direction == image.direction
    own = mask.array > 0
    assert result.placements and result.inserted.any()
    assert np.array_equal(result.label.array, (result.inserted | own).astype(np.uint8))
    assert not (result.inserted & own).any()
    # outside the inserted voxels the image is the background, bit for bit; inside it only gains uptake
    before = image.array.astype(np.float32)
    assert np.array_equal(result.image.array[~result.inserted], before[~result.inserted])
    assert (result.image.array[result.inserted] >= before[result.inserted]).all()
    assert sum(p.voxels for p in result.placements) == int(result.inserted.sum())
    for p in result.placements:
        box = tuple(slice(c, c + s) for c, s in zip(p.corner, p.shape, strict=True))
        added = result.image.array[box] - before[box]
        assert added.max() == pytest.approx(p.peak_suv, rel=1e-4)


def test_same_seed_same_result_other_seed_other_result(background, templates, pmap):
    image, mask = background
    a = insert_lesions(image, templates, seed=11, own_label=mask, pmap=pmap)
    b = insert_lesions(image, templates, seed=11, own_label=mask, pmap=pmap)
    c = insert_lesions(image, templates, seed=12, own_label=mask, pmap=pmap)
    assert np.array_equal(a.image.array, b.image.array) and np.array_equal(a.inserted, b.inserted)
    assert [p.as_dict() for p in a.placements] == [p.as_dict() for p in b.placements]
    assert not np.array_equal(a.inserted, c.inserted)


def test_positions_avoid_hot_organs_the_own_lesion_and_the_outside(background, templates, pmap):
    image, mask = background
    suv = image.array.astype(np.float32)
    hot = suv > pmap.hot_threshold  # brain, heart, bladder, kidneys, the sarcoma
    near_hot = ndimage.distance_transform_edt(~hot, sampling=image.spacing_zyx) <= 10.0
    assert pmap.excluded[hot].all() and not pmap.allowed[near_hot].any()
    lower = np.zeros(suv.shape[0], bool)
    lower[: suv.shape[0] // 2] = True
    region = placement_map(suv, image.spacing_zyx, mask.array > 0, z_allowed=lower)
    config = InsertionConfig(lesions_per_scan=(3, 3))
    for seed in range(4):
        result = insert_lesions(image, templates, seed, config, own_label=mask, z_allowed=lower, pmap=region)
        ins = result.inserted
        assert ins.any()
        assert not (ins & near_hot).any()  # >= 10 mm from every hot voxel (default margin 15 mm)
        assert pmap.body[ins].all()
        assert not ins[~lower].any()  # only in the allowed slices
        assert not ndimage.binary_dilation(mask.array > 0, iterations=2)[ins].any()


def test_example_picture_is_written(background, templates, pmap, tmp_path):
    from medfoundry.evaluation.wholebody_figures import save_insertion_examples

    image, mask = background
    examples = []
    for seed in (0, 1):
        r = insert_lesions(image, templates, seed, own_label=mask, pmap=pmap)
        examples.append((r.image.array, r.inserted))
    path = save_insertion_examples(image.array, examples, image.spacing, image.direction, tmp_path / "ex.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(FileExistsError):
        save_insertion_examples(image.array, examples, image.spacing, image.direction, path)


def test_blur_to_the_background_resolution_keeps_activity_and_label(background, templates, pmap):
    """With ``resolution_fwhm_mm`` the same draws give the same label and placements; the added activity keeps
    its total, loses peak (partial volume) and spills at most 3 sigma outside the label."""
    from medfoundry.data.insertion.lesions import added_blur_mm
    from medfoundry.data.scanner_variation import FWHM_PER_SIGMA

    assert added_blur_mm(7.0, 7.0, 1.0) == 0.0  # a lesion at its own size keeps its own blur
    assert added_blur_mm(7.0, 7.0, 0.5) == pytest.approx(7.0 * np.sqrt(0.75) / FWHM_PER_SIGMA)
    assert added_blur_mm(7.0, 4.0, 1.0) == pytest.approx(np.sqrt(49 - 16) / FWHM_PER_SIGMA)  # sharper source
    image, mask = background
    before = image.array.astype(np.float32)
    sharp = insert_lesions(image, templates, seed=5, own_label=mask, pmap=pmap)
    config = InsertionConfig(resolution_fwhm_mm=7.0)
    blurred = insert_lesions(image, templates, seed=5, config=config, own_label=mask, pmap=pmap)
    assert np.array_equal(blurred.label.array, sharp.label.array)
    assert [p.corner for p in blurred.placements] == [p.corner for p in sharp.placements]
    assert all(p.blur_sigma_mm == config.blur_sigma_mm(p.size_scale) for p in blurred.placements)
    assert any(p.blur_sigma_mm > 0 for p in blurred.placements)  # a shrunk crop lesion
    added_sharp, added_blur = sharp.image.array - before, blurred.image.array - before
    assert added_blur.sum() == pytest.approx(added_sharp.sum(), rel=1e-3)
    for b, a in zip(blurred.placements, sharp.placements, strict=True):
        assert b.peak_suv < a.peak_suv if b.blur_sigma_mm > 0 else b.peak_suv == a.peak_suv
    # the separable Gaussian is cut at 3 sigma along each axis: its support is a box, corners sqrt(3) further
    reach = np.sqrt(3) * (max(3 * p.blur_sigma_mm for p in blurred.placements) + max(image.spacing_zyx))
    near = ndimage.distance_transform_edt(~blurred.inserted, sampling=image.spacing_zyx) <= reach
    assert not np.any(added_blur[~near] != 0)
    assert np.any(added_blur[~blurred.inserted] > 0)  # spill outside the label
