"""The detection grid: finer scans are found and classified at the classifier's training resolution, and the
accepted candidates come back to the native grid for delineation."""

from __future__ import annotations

import numpy as np

from medfoundry.inference.lesions.candidates import find_candidates
from medfoundry.inference.lesions.detection_grid import TRAINING_SPACING_ZYX, detection_grid, to_native


def _blob_volume(shape, spacing, centre_mm, sigma_mm=6.0, peak=8.0):
    """SUV 1 background with one Gaussian lesion at ``centre_mm`` (z, y, x)."""
    grids = np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij")
    r2 = sum((g - c) ** 2 for g, c in zip(grids, centre_mm, strict=True))
    return (1.0 + peak * np.exp(-r2 / (2 * sigma_mm**2))).astype(np.float32)


def test_a_scan_at_the_training_resolution_is_not_resampled():
    suv = _blob_volume((40, 32, 32), TRAINING_SPACING_ZYX, (60, 70, 80))
    grid = detection_grid(suv, TRAINING_SPACING_ZYX)
    assert not grid.resampled and grid.suv is suv
    cands = find_candidates(suv, TRAINING_SPACING_ZYX, 3.0)
    assert to_native(cands, grid, suv, 3.0) is cands


def test_a_fine_scan_is_detected_coarse_and_delineated_native():
    spacing = (2.0, 2.0, 2.0)
    suv = _blob_volume((64, 72, 72), spacing, (60, 70, 80))
    grid = detection_grid(suv, spacing)
    assert grid.resampled and grid.native_shape == suv.shape
    assert all(abs(a - b) < 0.35 for a, b in zip(grid.spacing_zyx, TRAINING_SPACING_ZYX, strict=True))
    assert np.prod(grid.suv.shape) * np.prod(grid.spacing_zyx) == np.prod(suv.shape) * np.prod(spacing)  # same FOV
    coarse = find_candidates(grid.suv, grid.spacing_zyx, 3.0)
    assert len(coarse) == 1
    (native,) = to_native(coarse, grid, suv, 3.0)
    truth = find_candidates(suv, spacing, 3.0)[0]  # the same lesion found on the native grid directly
    assert native.peak_zyx == truth.peak_zyx and native.suv_max == truth.suv_max
    full, ref = native.full_mask(suv.shape), truth.full_mask(suv.shape)
    assert (suv[full] > 3.0).all()
    assert 2 * (full & ref).sum() / (full.sum() + ref.sum()) > 0.9
    assert abs(native.volume_ml - truth.volume_ml) / truth.volume_ml < 0.2
