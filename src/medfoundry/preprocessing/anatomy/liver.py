"""The liver: PERCIST's reference region (:func:`find_reference_region`) and the organ's mask (:func:`find_liver`).

**Reference region** (unchanged PERCIST rule, used by the lesion threshold): every voxel gets the mean and standard
deviation of SUV in a cube of about 3 cm (the size of PERCIST's liver sphere); voxels whose local mean lies in
``LIVER_SUV_RANGE`` and whose local coefficient of variation is below ``MAX_LOCAL_CV`` are kept; the largest 3D
component of those is the reference region, and the reference SUVmean and SD are measured in the 3 cm cube at its
most interior voxel. Muscle (SUV < 1.2), brain, bladder and kidneys (SUV > 4 or heterogeneous) and tumours
(heterogeneous) are left out by the two rules. Without such a region of at least ``MIN_REFERENCE_ML`` (a crop, a
non-FDG tracer, a noisy scan) there is no reference.

**Organ mask** (:func:`find_liver`; why it generalises): the liver is the largest organ of moderate, homogeneous
FDG uptake (PERCIST normal SUVmean 1.5-3); it fills the right upper abdomen under the right lung. The same two
rules are applied to the organ-scale image (Gaussian sigma 4 mm, which takes out the voxel noise of a scanner with
fewer counts without blurring organs together), with the CV limit raised to :data:`NOISE_FACTOR` x the scan's own
noise (:func:`noise_cv`) where that is higher (a noisier scanner or a shorter acquisition). Voxels more than
:data:`SPLEEN_SIDE_MM` left of the midline and behind the body's centre are the spleen's place, never the liver's
(the left lobe lies in front). The region is opened by :data:`CORE_MM` (the right lobe is > 10 cm thick, while the
bridges that join it to the spleen, the aorta or the spine's marrow at similar uptake are a few cm), the largest
core is the liver, and it is grown back over voxels at >= :data:`EDGE_FRACTION` of its own uptake (half-way between
the liver and the soft tissue around it), holes filled. It must lie in the trunk (not in a head-sized section),
centred at least :data:`MIN_RIGHT_MM` right of the mid-sagittal plane, fill at most :data:`MAX_BODY_SHARE` of the
body on its slices (a uniform phantom is not a liver) and hold :data:`MIN_REFERENCE_ML` (:data:`MIN_CUT_ML` where
the field of view cuts it).
"""

from __future__ import annotations

import cc3d
import numpy as np
from scipy import ndimage

from medfoundry.preprocessing.anatomy.body import Body
from medfoundry.preprocessing.anatomy.grid import WorkGrid
from medfoundry.preprocessing.anatomy.morphology import dilate_mm, erode_mm, fill_slices
from medfoundry.preprocessing.anatomy.organ import Organ, found, not_found
from medfoundry.preprocessing.anatomy.zones import body_offsets, offset_mm

LIVER_SUV_RANGE = (1.2, 4.0)  # PERCIST-normal liver SUVmean is about 1.5-3; the margin admits other scanners
MAX_LOCAL_CV = 0.2  # local SD / local mean in the 3 cm cube: liver parenchyma is homogeneous
REFERENCE_CUBE_MM = 30.0  # PERCIST: a 3 cm ROI in the right liver lobe
MIN_REFERENCE_ML = (
    400.0  # organ-sized: the liver (1.2-1.8 L) keeps >= 0.5 L after the 3 cm-cube filter; tumour crops < 0.3 L
)
NOISE_PERCENTILE = 5.0
NOISE_FACTOR = 2.0  # homogeneous = local CV < 2 x the scan's noise CV (never stricter than PERCIST's 0.2)
SPLEEN_SIDE_MM = 40.0  # the left lobe reaches left of the midline only in front; left-posterior is the spleen
CORE_MM = 15.0  # opening radius: the right lobe is > 10 cm thick, bridges to neighbours a few cm
EDGE_FRACTION = 0.7  # the organ edge: half-way between the liver (1) and the soft tissue around it (~0.4)
MAX_FRACTION = 1.6  # a voxel this far above the liver's level is not parenchyma (a lesion inside is filled in)
MIN_CUT_ML = 150.0  # a liver cut by the end of the field of view may show only its dome or its tip
HEAD_SECTION_MM2 = 35000.0  # an adult head's axial section is < 300 cm^2 (with PET blur < 350): not the trunk
MIN_RIGHT_MM = 20.0  # the liver's centre lies 4-8 cm right of the midline (its left lobe is the smaller part)
MAX_BODY_SHARE = 0.5  # the liver takes < 1/3 of the trunk on its slices; a uniform phantom fills all of it
FALLBACK_LIVER_SUV = 2.0  # the normal liver SUVmean (PERCIST 1.5-3) stands in when no liver is in view


def _cube_size(spacing_zyx: tuple[float, ...]) -> tuple[int, ...]:
    return tuple(max(3, int(round(REFERENCE_CUBE_MM / s)) | 1) for s in spacing_zyx)


def _local_stats(suv: np.ndarray, spacing_zyx: tuple[float, ...], mode: str = "constant"):
    size = _cube_size(spacing_zyx)
    mean = ndimage.uniform_filter(suv, size=size, mode=mode)
    sq = ndimage.uniform_filter(suv * suv, size=size, mode=mode)
    return mean, np.sqrt(np.clip(sq - mean * mean, 0, None))


def _homogeneous(mean: np.ndarray, sd: np.ndarray, max_cv: float = MAX_LOCAL_CV) -> np.ndarray:
    lo, hi = LIVER_SUV_RANGE
    return (mean >= lo) & (mean <= hi) & (sd < max_cv * np.maximum(mean, 1e-6))


def noise_cv(mean: np.ndarray, sd: np.ndarray, body: np.ndarray) -> float:
    """The scan's noise at liver-like uptake: the :data:`NOISE_PERCENTILE` th percentile of the local coefficient
    of variation over body voxels whose local mean lies in ``LIVER_SUV_RANGE`` (the most homogeneous tissue there
    varies by noise alone)."""
    lo, hi = LIVER_SUV_RANGE
    sel = body & (mean >= lo) & (mean <= hi)
    if not sel.any():
        return 0.0
    return float(np.percentile(sd[sel] / mean[sel], NOISE_PERCENTILE))


def find_reference_region(suv: np.ndarray, spacing_zyx: tuple[float, ...]) -> tuple[float, float, tuple] | None:
    """(SUVmean, SUV SD, centre voxel) of the liver-like reference cube, or None when there is none."""
    suv = suv.astype(np.float32, copy=False)
    mean, sd = _local_stats(suv, spacing_zyx)
    ok = _homogeneous(mean, sd)
    if not ok.any():
        return None
    labels = cc3d.connected_components(ok, connectivity=6)
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    best = int(counts.argmax())
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    if counts[best] * voxel_ml < MIN_REFERENCE_ML:
        return None
    region = labels == best
    depth = ndimage.distance_transform_edt(region, sampling=spacing_zyx)
    centre = tuple(int(i) for i in np.unravel_index(int(depth.argmax()), depth.shape))
    return float(mean[centre]), float(sd[centre]), centre


def find_liver(grid: WorkGrid, body: Body) -> Organ:
    """The liver on the working grid (see the module docstring); ``info["suv_mean"]`` is its uptake."""
    name = "liver"
    mean, sd = _local_stats(grid.smooth, grid.spacing, mode="nearest")
    max_cv = max(MAX_LOCAL_CV, NOISE_FACTOR * noise_cv(mean, sd, body.mask))
    ok = _homogeneous(mean, sd, max_cv) & body.mask
    lr, ap = body_offsets(grid, body)
    ok &= ~((lr > SPLEEN_SIDE_MM) & (ap > 0))  # the spleen's place: left and posterior
    if not ok.any():
        return not_found(name, "no homogeneous region of liver-like uptake (SUV 1.2-4)")
    core = erode_mm(ok, grid.spacing, CORE_MM)
    labels = cc3d.connected_components(core, connectivity=6)
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    reasons = []
    for label in np.argsort(counts)[::-1][:3]:
        if counts[label] == 0:
            break
        part = labels == label
        level = float(np.median(grid.smooth[part]))
        opened = ok & dilate_mm(part, grid.spacing, CORE_MM + max(grid.spacing))
        grown = dilate_mm(opened, grid.spacing, REFERENCE_CUBE_MM / 2)
        liver = grown & (grid.smooth >= EDGE_FRACTION * level) & (grid.smooth <= MAX_FRACTION * level)
        liver = fill_slices(liver)
        liver = _component_with(liver, part)
        zs, _, xs = np.nonzero(liver)
        volume = liver.sum() * grid.voxel_ml
        cut = zs.min() == 0 or zs.max() == grid.shape[0] - 1
        centre_z = int(round(zs.mean()))
        if volume < (MIN_CUT_ML if cut else MIN_REFERENCE_ML):
            reasons.append(f"largest homogeneous region {volume:.0f} mL is too small")
            continue
        if body.main_area_mm2[centre_z] < HEAD_SECTION_MM2:
            reasons.append("the homogeneous region lies in a head / neck-sized section")
            continue
        side = offset_mm(grid, body, liver)
        if side > -MIN_RIGHT_MM:
            reasons.append(f"the homogeneous region's centre lies {side:+.0f} mm from the midline, not right of it")
            continue
        share = liver.sum() / max(body.mask[zs.min() : zs.max() + 1].sum(), 1)
        if share > MAX_BODY_SHARE:
            reasons.append(f"the homogeneous region fills {100 * share:.0f}% of the body on its slices")
            continue
        top = int(zs.max())
        return found(
            name,
            liver,
            "largest homogeneous organ of liver-like uptake, right upper abdomen",
            suv_mean=level,
            dome_slice=top,
            cut_by_fov=bool(cut),
        )
    return not_found(name, "; ".join(reasons) or "no organ-sized homogeneous region")


def _component_with(mask: np.ndarray, seed: np.ndarray) -> np.ndarray:
    labels = cc3d.connected_components(mask, connectivity=6)
    ids = np.unique(labels[seed & mask])
    ids = ids[ids > 0]
    return np.isin(labels, ids) if ids.size else seed.copy()


def liver_level(liver: Organ) -> float:
    """The liver's SUV level when it was found, else :data:`FALLBACK_LIVER_SUV`: the unit of every uptake rule."""
    return float(liver.info["suv_mean"]) if liver.found else FALLBACK_LIVER_SUV
