"""Hysteresis within a hot region and the bilateral-symmetry rule (synthetic bodies with known anatomy)."""

from __future__ import annotations

import numpy as np
import pytest

from medfoundry.inference.lesions.candidates import find_candidates
from medfoundry.inference.lesions.grouping import (
    JOIN_FRACTION,
    SYMMETRY_OVERRIDE,
    accept_candidates,
    select_lesions,
    symmetric_candidates,
)

SPACING = (4.0, 4.0, 4.0)


def _body(blobs):
    """An ellipsoidal body (SUV 1) 60 x 64 x 64 voxels of 4 mm, plus Gaussian blobs ``(z, y, x, peak, sigma)``."""
    z, y, x = np.meshgrid(*[np.arange(n, dtype=float) for n in (60, 64, 64)], indexing="ij")
    suv = np.where(((y - 32) / 20) ** 2 + ((x - 32) / 28) ** 2 <= 1, 1.0, 0.0)
    for cz, cy, cx, peak, sigma in blobs:
        suv = suv + peak * np.exp(-((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2))
    return suv.astype(np.float32)


def _which(cands, flags):
    return sorted(c.peak_zyx[2] for c, f in zip(cands, flags, strict=False) if f)


def test_mirror_pair_is_flagged_and_a_one_sided_blob_is_not():
    suv = _body([(20, 32, 16, 8, 2.5), (22, 32, 48, 7, 2.5), (45, 32, 20, 8, 2.5)])  # a pair at x 16 / 48, one at 20
    cands = find_candidates(suv, SPACING, 3.0, min_volume_ml=0.1)
    assert len(cands) == 3
    assert _which(cands, symmetric_candidates(cands, suv, SPACING)) == [16, 48]
    # the same with the left-right axis flipped in patient space: still a pair
    flipped = np.diag([-1.0, 1.0, 1.0])
    assert _which(cands, symmetric_candidates(cands, suv, SPACING, flipped)) == [16, 48]
    # a sagittal acquisition (left-right across slices): the rule does not apply
    sagittal = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=float)
    assert not symmetric_candidates(cands, suv, SPACING, sagittal).any()


@pytest.mark.parametrize(
    "partner",
    [
        (22, 32, 48, 7, 6.0),  # 10x the volume
        (22, 32, 48, 40, 2.5),  # 5x the uptake
        (40, 32, 48, 7, 2.5),  # 8 cm lower
        (22, 12, 48, 7, 2.5),  # 8 cm more anterior
        (22, 32, 34, 7, 2.5),  # on the midline
    ],
)
def test_dissimilar_or_displaced_partners_are_not_a_pair(partner):
    suv = _body([(20, 32, 16, 8, 2.5), partner])
    cands = find_candidates(suv, SPACING, 3.0, min_volume_ml=0.1)
    assert len(cands) == 2
    assert not symmetric_candidates(cands, suv, SPACING).any()


def test_fragmented_organ_pairs_as_a_cluster():
    # left "kidney" one hot part; right "kidney" two parts ~6 mm apart, each < 1/4 of the left, together 1/2
    suv = _body([(20, 32, 16, 8, 2.0), (17, 32, 48, 6, 1.5), (23, 32, 48, 6, 1.5)])
    cands = find_candidates(suv, SPACING, 3.0, min_volume_ml=0.05)
    assert len(cands) == 3 and len({c.region for c in cands}) == 3
    assert symmetric_candidates(cands, suv, SPACING).all()


def test_hysteresis_joins_weaker_parts_of_an_accepted_region_only():
    suv = _body([(20, 32, 24, 10, 2.5), (20, 32, 33, 8, 2.5), (45, 32, 40, 8, 2.5)])
    cands = find_candidates(suv, SPACING, 3.0, min_volume_ml=0.1)
    assert len(cands) == 3 and len({c.region for c in cands}) == 2
    by_x = {c.peak_zyx[2]: i for i, c in enumerate(cands)}
    a, b, lone = by_x[24], by_x[33], by_x[40]
    weak = JOIN_FRACTION * 0.5 + 0.05
    scores = np.zeros(3)
    scores[[a, b, lone]] = [0.8, weak, weak]
    acc = accept_candidates(cands, scores, 0.5)
    assert acc[a] and acc[b] and not acc[lone]  # b joins its accepted neighbour; the lone weak part does not
    scores[b] = JOIN_FRACTION * 0.5 - 0.05
    assert not accept_candidates(cands, scores, 0.5)[b]


def test_select_lesions_rejects_pairs_unless_confident():
    suv = _body([(20, 32, 16, 8, 2.5), (22, 32, 48, 7, 2.5)])
    cands = find_candidates(suv, SPACING, 3.0, min_volume_ml=0.1)
    scores = np.array([0.7, SYMMETRY_OVERRIDE + 0.05])
    acc, paired = select_lesions(cands, scores, 0.5, suv, SPACING)
    assert paired.all() and list(acc) == [False, True]
    acc, paired = select_lesions(cands, scores, 0.5, suv, SPACING, symmetry=False)
    assert acc.all() and not paired.any()


def test_a_fragment_alone_is_too_small_to_pair():
    suv = _body([(20, 32, 16, 8, 2.0), (17, 32, 48, 6, 1.5)])
    cands = find_candidates(suv, SPACING, 3.0, min_volume_ml=0.05)
    assert len(cands) == 2
    assert not symmetric_candidates(cands, suv, SPACING).any()


def test_hysteresis_joins_a_separate_part_within_the_cluster_gap():
    """Two parts of one heterogeneous tumour that do not touch above the threshold (about 8 mm apart) join
    through the cluster; a weak part 5 cm away does not."""
    suv = _body([(20, 32, 24, 10, 1.5), (20, 32, 31, 8, 1.5), (45, 32, 40, 8, 2.0)])
    cands = find_candidates(suv, SPACING, 3.0, min_volume_ml=0.05)
    assert len(cands) == 3 and len({c.region for c in cands}) == 3  # three separate hot regions
    by_x = {c.peak_zyx[2]: i for i, c in enumerate(cands)}
    a, b, far = by_x[24], by_x[31], by_x[40]
    scores = np.zeros(3)
    scores[[a, b, far]] = [0.8, JOIN_FRACTION * 0.5 + 0.05, JOIN_FRACTION * 0.5 + 0.05]
    assert not accept_candidates(cands, scores, 0.5)[b]  # by hot region alone b stays out
    acc, _ = select_lesions(cands, scores, 0.5, suv, SPACING, symmetry=False)
    assert acc[a] and acc[b] and not acc[far]
