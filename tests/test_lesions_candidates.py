"""Threshold, candidates and threshold delineation on real PET (whole-body STS_001 and crops) and synthetic blobs."""

from __future__ import annotations

import numpy as np
import pytest

from medfoundry.evaluation.overlap import dice
from medfoundry.inference.lesions.assemble import assemble_lesions
from medfoundry.inference.lesions.candidates import find_candidates
from medfoundry.inference.lesions.delineate import SUVMAX_FRACTION, threshold_mask
from medfoundry.inference.lesions.threshold import FALLBACK_SUV, adaptive_threshold
from medfoundry.io import read_image, read_mask


@pytest.fixture(scope="module")
def wholebody(shared_data):
    image = read_image(shared_data / "pet-wholebody" / "STS_001" / "dicom" / "image")
    mask = read_mask(shared_data / "pet-wholebody" / "STS_001" / "nifti" / "STS_001_FDG_PET_mask_GTV_Mass.nii.gz")
    return image, mask.array > 0


def _crop(shared_data, i):
    folder = shared_data / "pet-sts" / f"STS_{i:03d}"
    image = read_image(folder / "PET_image.nii.gz")
    return image, read_mask(folder / "PET_mask.nii.gz", reference=image).array > 0


def test_percist_threshold_finds_a_liver_like_reference(wholebody):
    image, gtv = wholebody
    info = adaptive_threshold(image.array, image.spacing_zyx)
    assert info.method == "percist-liver"
    assert 1.2 <= info.reference_mean <= 4.0 and info.reference_sd < 0.2 * info.reference_mean
    assert info.threshold == pytest.approx(1.5 * info.reference_mean + 2 * info.reference_sd)
    z, y, x = info.reference_centre_zyx
    assert not gtv[z, y, x]
    # the reference lies between the tumour (thigh, low z) and the top of the scan (head): the trunk
    assert gtv.nonzero()[0].max() < z < image.array.shape[0] - 20


def test_fallback_and_user_threshold_on_a_crop(shared_data):
    image, _ = _crop(shared_data, 21)
    assert adaptive_threshold(image.array, image.spacing_zyx).threshold == FALLBACK_SUV
    info = adaptive_threshold(image.array, image.spacing_zyx, threshold=4.2)
    assert (info.threshold, info.method) == (4.2, "user")


def test_candidates_cover_the_whole_body_tumour(wholebody):
    image, gtv = wholebody
    info = adaptive_threshold(image.array, image.spacing_zyx)
    cands = find_candidates(image.array, image.spacing_zyx, info.threshold, min_volume_ml=0.5)
    assert len(cands) > 3  # brain, heart, bladder, kidneys are candidates too
    assert [c.suv_max for c in cands] == sorted((c.suv_max for c in cands), reverse=True)
    on_tumour = [c for c in cands if gtv[c.bbox][c.mask].any()]
    assert on_tumour and any(gtv[c.peak_zyx] for c in on_tumour)
    for c in cands:
        assert c.volume_ml >= 0.5
        assert image.array[c.bbox][c.mask].min() > info.threshold
        x0, y0, z0, x1, y1, z1 = c.box_xyz
        assert x0 <= c.peak_zyx[2] <= x1 and y0 <= c.peak_zyx[1] <= y1 and z0 <= c.peak_zyx[0] <= z1


def test_two_blobs_are_split_and_min_volume_applies():
    shape = (30, 40, 40)
    z, y, x = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    blob = lambda cz, cy, cx, peak: peak * np.exp(-((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2) / 18.0)  # noqa: E731
    suv = (1.0 + blob(15, 20, 14, 10.0) + blob(15, 20, 24, 8.0)).astype(np.float32)
    joined = suv > 3.0
    import cc3d

    assert cc3d.connected_components(joined).max() == 1  # one component above the threshold ...
    cands = find_candidates(suv, (2.0, 2.0, 2.0), 3.0, min_volume_ml=0.05)
    assert len(cands) == 2  # ... split at its two maxima
    assert sorted(c.peak_zyx[:2] for c in cands) == [(15, 20), (15, 20)]
    assert sorted(c.peak_zyx[2] for c in cands) == pytest.approx([14, 24], abs=1)
    assert find_candidates(suv, (2.0, 2.0, 2.0), 3.0, min_volume_ml=100.0) == []


def test_threshold_delineation_on_a_crop_is_41_percent_and_overlaps_the_gtv(shared_data):
    image, gtv = _crop(shared_data, 22)
    cands = find_candidates(image.array, image.spacing_zyx, 3.0)
    main = max((c for c in cands if gtv[c.peak_zyx]), key=lambda c: c.volume_ml)
    mask = threshold_mask(main, image.array, image.spacing_zyx)
    assert mask[main.peak_zyx]
    assert image.array[mask].min() >= SUVMAX_FRACTION * main.suv_max
    assert dice(mask, gtv) > 0.3
    found = assemble_lesions([mask], [main], [0.9], 0.5, image.array, image.spacing_zyx, 3.0, 0.5, [1.0])
    assert found.labels.max() == 1 and np.array_equal(found.labels > 0, mask) and found.scores == [0.9]
