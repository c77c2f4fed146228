"""PET quantification (SUVmax, SUVpeak, SUVmean, MTV, TLG, centroid) against independent computations."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from medfoundry.evaluation.pet_quant import SPHERE_1ML_RADIUS_MM, lesion_stats, patient_totals, suv_peak

SPACING = (2.0, 2.0, 3.0)  # x, y, z mm
SPACING_ZYX = (3.0, 2.0, 2.0)


def _sphere(shape, centre_zyx, radius_mm, spacing_zyx=SPACING_ZYX):
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing_zyx, strict=True)], indexing="ij")
    d2 = sum((g - c * s) ** 2 for g, c, s in zip(grids, centre_zyx, spacing_zyx, strict=True))
    return d2 <= radius_mm**2


def _brute_force_peak(suv, mask, spacing_zyx):
    """The highest mean over voxels within 6.2035 mm of any lesion voxel, by looping (no filters)."""
    best = -np.inf
    coords = np.argwhere(np.ones(suv.shape, bool)) * np.asarray(spacing_zyx)
    flat = suv.ravel()
    for idx in np.argwhere(mask):
        centre = idx * np.asarray(spacing_zyx)
        near = ((coords - centre) ** 2).sum(1) <= SPHERE_1ML_RADIUS_MM**2 + 1e-9
        best = max(best, flat[near].mean())
    return best


def test_one_ml_sphere_radius():
    assert 4 / 3 * np.pi * SPHERE_1ML_RADIUS_MM**3 == pytest.approx(1000.0)


def test_uniform_sphere_stats():
    shape = (20, 30, 30)
    mask = _sphere(shape, (10, 15, 15), 15.0)
    suv = np.where(mask, 6.0, 1.0).astype(np.float32)
    labels = mask.astype(np.uint8)
    origin, direction = (-10.0, 20.0, 5.0), tuple(np.eye(3).ravel())
    (s,) = lesion_stats(suv, labels, SPACING, origin, direction)
    voxel_ml = 2 * 2 * 3 / 1000
    assert s["voxels"] == mask.sum()
    assert s["mtv_ml"] == pytest.approx(mask.sum() * voxel_ml)
    assert s["suv_max"] == pytest.approx(6.0) and s["suv_mean"] == pytest.approx(6.0)
    assert s["tlg"] == pytest.approx(mask.sum() * voxel_ml * 6.0)
    assert s["suv_peak"] == pytest.approx(6.0)  # a 1 mL sphere fits inside a 15 mm sphere
    # centroid: voxel (z=10, y=15, x=15) -> x = -10 + 15*2, y = 20 + 15*2, z = 5 + 10*3
    assert s["centroid_mm"] == pytest.approx([20.0, 50.0, 35.0])


def test_suv_peak_matches_brute_force_on_a_gradient():
    rng = np.random.default_rng(0)
    shape = (12, 16, 16)
    z, y, x = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    suv = (1.0 + 0.3 * x + 0.1 * z + rng.normal(0, 0.2, shape)).astype(np.float32)
    mask = _sphere(shape, (6, 8, 8), 9.0)
    peak = suv_peak(suv, mask, SPACING_ZYX)
    assert peak == pytest.approx(_brute_force_peak(suv, mask, SPACING_ZYX), rel=1e-6)
    assert peak < float(suv[mask].max())  # a mean over a sphere is below the hottest voxel


def test_suv_peak_at_the_image_edge_ignores_outside():
    suv = np.full((8, 8, 8), 2.0, dtype=np.float32)
    suv[0, 0, 0] = 10.0
    mask = np.zeros(suv.shape, bool)
    mask[0, 0, 0] = True
    assert suv_peak(suv, mask, (2.0, 2.0, 2.0)) == pytest.approx(_brute_force_peak(suv, mask, (2.0, 2.0, 2.0)))


def test_centroid_uses_direction_and_totals():
    suv = np.ones((6, 6, 6), np.float32)
    labels = np.zeros((6, 6, 6), np.uint8)
    labels[1, 2, 3] = 1
    labels[4, 4, 4] = 2
    suv[4, 4, 4] = 3.0
    flip = (-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0)  # LPS <-> RAS style flip of x and y
    stats = lesion_stats(suv, labels, (1.0, 2.0, 3.0), (0.0, 0.0, 0.0), flip)
    assert stats[0]["centroid_mm"] == pytest.approx([-3.0, -4.0, 3.0])
    totals = patient_totals(stats)
    voxel_ml = 6 / 1000
    assert totals["lesion_count"] == 2
    assert totals["total_mtv_ml"] == pytest.approx(2 * voxel_ml)
    assert totals["total_tlg"] == pytest.approx(voxel_ml * 1 + voxel_ml * 3)
    for a, b in itertools.combinations(stats, 2):
        assert a["id"] != b["id"]
