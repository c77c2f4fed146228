"""The body outline, its mid-sagittal plane, the base of the neck and a body-normalised cranio-caudal coordinate.

* **Outline**: the organ-scale SUV above :data:`BODY_SUV` (air and the scanner bed hold no tracer; fat, lung and
  muscle hold 0.2-1 SUV in every FDG scan), holes filled on each axial slice (the lungs, inside the ribs), every
  3D part of at least :data:`MIN_PART_ML` kept (arms and legs may be separate parts).
* **Sections**: on each axial slice the largest 2D part is the *main section* (trunk, neck or head; arms up or
  down beside it are other parts or are small against it). Where it touches the in-plane edge of the image, the
  field of view cuts the body. A scan whose main section is cut on most slices and whose in-plane field is
  narrower than a trunk (:data:`CROP_FOV_MM`) is a **crop** (a region around a lesion): organs cannot be placed by
  position there, so every organ detector says "not in field of view".
* **Mid-sagittal plane**: a straight line through the left-right centre of each slice's body (the main section,
  or every part where no part dominates, as with two legs), fitted robustly (Tukey weights at
  :data:`MIDLINE_TUKEY_MM`) so that an arm raised on one side or a cut slice does not pull it. Patients lie
  nearly straight, so the tilt is capped at :data:`MAX_MIDLINE_TILT_DEG`.
* **Neck base**: where the main section shrinks from trunk size to neck size (under :data:`NECK_FRACTION` of the
  trunk's typical section) and stays small up to the cranial end: the top of the shoulders. A ratio to the
  patient's own trunk, not an area in cm^2, so a child or a large adult is judged alike.
* **Cranio-caudal coordinate** (:func:`fit_stature`): the fraction of standing height below the vertex (0 = top of
  the head, 0.5 ~ pubic symphysis, 1 = soles), fitted to whatever landmarks were found (neck base, brain,
  heart, liver dome, kidneys, bladder) at their anthropometric heights (:data:`LANDMARK_FRACTION`). Body segment
  proportions are close to constant fractions of stature across adults (Drillis & Contini 1966, Winter's
  *Biomechanics*), so one table serves every patient; two or more landmarks give both the offset and the
  patient's height, one gives the offset with an average adult height, none gives no coordinate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cc3d
import numpy as np
from scipy import ndimage

from medfoundry.preprocessing.anatomy.grid import WorkGrid
from medfoundry.preprocessing.anatomy.morphology import fill_slices

BODY_SUV = 0.15  # organ-scale SUV: air / bed < 0.05, fat 0.2-0.4, lung 0.3-0.6, muscle 0.6-1
MIN_PART_ML = 50.0  # a separate body part (an arm, a leg) is at least this big; smaller islands are noise
MIN_BODY_ML = 500.0  # less than this is not a body (a hand-sized volume)
NO_OUTLINE_FILL = 0.97  # "body" filling the whole image: no outline (noise, or a field of view inside the body)
CROP_FOV_MM = 400.0  # an in-plane field narrower than this cannot hold an adult trunk with its outline
CROP_CUT_FRACTION = 0.5  # ... and the body is cut by it on at least half of its slices
MIDLINE_TUKEY_MM = 30.0  # slices whose body centre is > 3 cm off the fitted line get no weight
MAX_MIDLINE_TILT_DEG = 15.0
NECK_FRACTION = 0.55  # neck / head section (100-300 cm^2) vs trunk section (>= 500 cm^2): < 0.55 of the trunk
MIN_NECK_MM = 30.0  # the small sections at the cranial end span at least 3 cm (not one cut slice)
DEFAULT_HEIGHT_MM = 1700.0  # average adult stature, used when one landmark fixes only the offset
HEIGHT_RANGE_MM = (1400.0, 2000.0)  # a fitted stature outside this is clipped
MIN_LANDMARK_SPREAD = 0.08  # landmarks closer than this (fraction of stature) give no scale of their own

# Height of each landmark below the vertex as a fraction of stature (Drillis & Contini 1966 segment lengths;
# organ levels from their vertebral levels in adults). About +-0.02-0.03 between people.
LANDMARK_FRACTION = {
    "brain": 0.06,  # centre of the brain, near the level of the upper ear (eye height is 0.936 of stature)
    "neck_base": 0.18,  # top of the shoulders / suprasternal notch (shoulder height 0.818 of stature)
    "heart": 0.27,  # centre of the heart, T7-T8 (nipple level 0.72 of stature from the floor = 0.28)
    "liver_dome": 0.29,  # top of the right lobe, under the 5th rib / T9-T10
    "kidneys": 0.37,  # renal hila at L1-L2 (umbilicus, L3-L4, at 0.40)
    "bladder": 0.49,  # behind the pubic symphysis (greater trochanter at 0.47, crotch at 0.52)
}


@dataclass
class Midline:
    """The mid-sagittal plane on the working grid: left-right position (mm along working axis 2) =
    ``lr_mm + slope * cc_mm`` (cc_mm = working axis 0 in mm). Positive signed distances are the patient's left."""

    lr_mm: float
    slope: float

    def normal(self) -> np.ndarray:
        n = np.array([-self.slope, 0.0, 1.0])
        return n / np.linalg.norm(n)

    def signed_distance_mm(self, points_mm: np.ndarray) -> np.ndarray:
        """Signed distance (mm, + = patient's left) of points (N, 3) given in working-grid mm (cc, ap, lr)."""
        p = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
        return (p[:, 2] - self.slope * p[:, 0] - self.lr_mm) / np.sqrt(1.0 + self.slope**2)

    def mirror_mm(self, points_mm: np.ndarray) -> np.ndarray:
        """Points (N, 3) in working-grid mm reflected across the plane."""
        p = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
        return p - 2.0 * self.signed_distance_mm(p)[:, None] * self.normal()[None, :]


@dataclass
class Stature:
    """Cranio-caudal coordinate: fraction of stature below the vertex = (vertex_mm - cc_mm) / height_mm."""

    vertex_mm: float
    height_mm: float
    landmarks: dict = field(default_factory=dict)  # name -> cc position (mm on the working grid)
    scaled: bool = False  # True when the height came from the landmarks, False when it is the adult average

    def fraction(self, cc_mm):
        return (self.vertex_mm - np.asarray(cc_mm, dtype=np.float64)) / self.height_mm

    def cc_mm(self, fraction):
        return self.vertex_mm - np.asarray(fraction, dtype=np.float64) * self.height_mm


@dataclass
class Body:
    """The body on the working grid and what its outline says about the field of view."""

    mask: np.ndarray
    main_area_mm2: np.ndarray  # per slice, the largest 2D part's area
    cut: np.ndarray  # per slice, the main section touches the in-plane edge of the image
    lr_centre_mm: np.ndarray  # per slice, left-right centre of the body (NaN without body)
    ap_centre_mm: np.ndarray  # per slice, anterior-posterior centre of the main section (NaN without body)
    midline: Midline | None
    neck_base: int | None  # working slice of the top of the shoulders, when the neck is in view
    cranial_end: int | None  # last slice (towards the head) with body on the midline
    caudal_end: int | None
    crop: bool = False
    problem: str | None = None  # why no body could be outlined (then every organ is "not found")

    @property
    def found(self) -> bool:
        return self.problem is None


def body_mask(grid: WorkGrid) -> np.ndarray:
    """Organ-scale SUV above :data:`BODY_SUV`, holes filled per axial slice, parts >= :data:`MIN_PART_ML`."""
    above = fill_slices(grid.smooth > BODY_SUV)
    labels = cc3d.connected_components(above, connectivity=6)
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    if counts.max(initial=0) == 0:
        return above
    min_voxels = max(MIN_PART_ML / grid.voxel_ml, 0.05 * counts.max())
    return np.isin(labels, np.nonzero(counts >= min_voxels)[0]) & above


def _sections(mask: np.ndarray, spacing: tuple[float, float, float]):
    n = mask.shape[0]
    pixel = spacing[1] * spacing[2]
    main_area, cut = np.zeros(n), np.zeros(n, dtype=bool)
    lr_centre, ap_centre = np.full(n, np.nan), np.full(n, np.nan)
    for z in range(n):
        if not mask[z].any():
            continue
        lab, k = ndimage.label(mask[z])
        areas = np.bincount(lab.ravel())[1:]
        main = int(areas.argmax()) + 1
        part = lab == main
        main_area[z] = areas[main - 1] * pixel
        cut[z] = part[0].any() or part[-1].any() or part[:, 0].any() or part[:, -1].any()
        ys, xs = np.nonzero(part)
        ap_centre[z] = ys.mean() * spacing[1]
        second = np.sort(areas)[-2] if k > 1 else 0
        if areas[main - 1] >= 2 * second:  # trunk / head, arms beside it smaller
            lr_centre[z] = xs.mean() * spacing[2]
        else:  # two legs (or two arms above the head): the centre of all parts
            lr_centre[z] = np.nonzero(mask[z])[1].mean() * spacing[2]
    return main_area, cut, lr_centre, ap_centre


def fit_midline(lr_centre_mm: np.ndarray, weights: np.ndarray, cc_spacing: float) -> Midline | None:
    """Robust straight-line fit of per-slice left-right centres against the cranio-caudal position."""
    ok = np.isfinite(lr_centre_mm) & (weights > 0)
    if ok.sum() < 2:
        return None if not ok.any() else Midline(float(lr_centre_mm[ok][0]), 0.0)
    z = np.nonzero(ok)[0] * cc_spacing
    x, w0 = lr_centre_mm[ok], weights[ok]
    w = w0.copy()
    max_slope = np.tan(np.radians(MAX_MIDLINE_TILT_DEG))
    slope, lr = 0.0, float(np.median(x))
    for _ in range(10):
        if w.sum() <= 0:
            break
        zm, xm = np.average(z, weights=w), np.average(x, weights=w)
        var = np.average((z - zm) ** 2, weights=w)
        slope = float(np.clip(np.average((z - zm) * (x - xm), weights=w) / var, -max_slope, max_slope)) if var else 0.0
        lr = float(xm - slope * zm)
        r = (x - lr - slope * z) / MIDLINE_TUKEY_MM
        w = w0 * np.where(np.abs(r) < 1, (1 - r**2) ** 2, 0.0)
    return Midline(lr, slope)


def _neck_base(main_area: np.ndarray, cranial_end: int, caudal_end: int, cc_spacing: float) -> int | None:
    """The top of the shoulders: the first slice below a run of neck / head-sized sections at the cranial end."""
    present = main_area[caudal_end : cranial_end + 1]
    if present.size == 0:
        return None
    trunk = np.percentile(present, 75)  # most of a whole-body or torso scan is trunk
    small = main_area < NECK_FRACTION * trunk
    z = cranial_end
    while z >= caudal_end and small[z]:
        z -= 1
    run_mm = (cranial_end - z) * cc_spacing
    if z < caudal_end or run_mm < MIN_NECK_MM:  # all small (a head-only scan) or no neck at the cranial end
        return None
    return int(z)


def find_body(grid: WorkGrid) -> Body:
    """The body outline and its landmarks on the working grid (see the module docstring)."""
    mask = body_mask(grid)
    n = grid.shape[0]
    empty = Body(mask, np.zeros(n), np.zeros(n, bool), np.full(n, np.nan), np.full(n, np.nan), None, None, None, None)
    volume = mask.sum() * grid.voxel_ml
    if volume < MIN_BODY_ML:
        empty.problem = f"no body outline: {volume:.0f} mL above SUV {BODY_SUV} (< {MIN_BODY_ML:.0f} mL)"
        return empty
    fill = mask.mean()
    fov_mm = [grid.shape[i] * grid.spacing[i] for i in (1, 2)]
    main_area, cut, lr_centre, ap_centre = _sections(mask, grid.spacing)
    slices = np.nonzero(main_area > 0)[0]
    crop = bool(min(fov_mm) < CROP_FOV_MM and cut[slices].mean() >= CROP_CUT_FRACTION)
    if fill >= NO_OUTLINE_FILL and not crop:
        empty.problem = f"no body outline: {100 * fill:.0f}% of the image is above SUV {BODY_SUV} (noise?)"
        return empty
    midline = fit_midline(lr_centre, main_area, grid.spacing[0])
    on_midline = np.zeros(n, dtype=bool)
    if midline is not None:
        for z in slices:
            centre = (midline.lr_mm + midline.slope * z * grid.spacing[0]) / grid.spacing[2]
            lo, hi = int(max(0, centre - 30 / grid.spacing[2])), int(centre + 30 / grid.spacing[2]) + 1
            on_midline[z] = mask[z, :, lo:hi].any()
    column = np.nonzero(on_midline)[0]
    cranial = int(column.max()) if column.size else int(slices.max())
    caudal = int(column.min()) if column.size else int(slices.min())
    neck = None if crop else _neck_base(main_area, cranial, caudal, grid.spacing[0])
    return Body(mask, main_area, cut, lr_centre, ap_centre, midline, neck, cranial, caudal, crop)


def fit_stature(landmarks_mm: dict[str, float]) -> Stature | None:
    """The cranio-caudal coordinate from landmark positions (name -> working cc mm, larger = more cranial).

    Least squares of ``cc = vertex - fraction x height`` over the landmarks; with one landmark, or landmarks
    closer than :data:`MIN_LANDMARK_SPREAD` of stature, the height is :data:`DEFAULT_HEIGHT_MM`."""
    names = [k for k in landmarks_mm if k in LANDMARK_FRACTION and np.isfinite(landmarks_mm[k])]
    if not names:
        return None
    f = np.array([LANDMARK_FRACTION[k] for k in names])
    cc = np.array([landmarks_mm[k] for k in names])
    height, scaled = DEFAULT_HEIGHT_MM, False
    if np.ptp(f) >= MIN_LANDMARK_SPREAD:
        slope = np.polyfit(f, cc, 1)[0]
        height, scaled = float(np.clip(-slope, *HEIGHT_RANGE_MM)), True
    vertex = float(np.mean(cc + f * height))
    return Stature(vertex, height, {k: float(landmarks_mm[k]) for k in names}, scaled)
