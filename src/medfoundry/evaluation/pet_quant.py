"""PET lesion quantification: SUVmax, SUVpeak, SUVmean, MTV, TLG and the centroid in patient coordinates.

SUVpeak follows PERCIST: the highest mean SUV in a 1 mL sphere (radius 6.20 mm) centred anywhere within the
lesion. Exactly: the sphere is the set of voxels whose centres lie within 6.2035 mm of the centre voxel's centre
(physical spacing, no partial-volume weights; at least the centre voxel); it may extend beyond the lesion; voxels
outside the image do not count. SUVpeak is the maximum over every lesion voxel as the centre.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medfoundry.preprocessing.suv_peak import SPHERE_1ML_RADIUS_MM, sphere_kernel  # noqa: F401 - measured here


def suv_peak(suv: np.ndarray, mask: np.ndarray, spacing_zyx: tuple[float, ...]) -> float:
    """PERCIST SUVpeak of the lesion ``mask`` (see the module docstring); NaN for an empty mask."""
    if not mask.any():
        return float("nan")
    kernel = sphere_kernel(spacing_zyx).astype(np.float64)
    pad = [k // 2 for k in kernel.shape]
    idx = np.nonzero(mask)
    lo = [
        int(i.min()) - p for i, p in zip(idx, pad, strict=False)
    ]  # lesion box grown by the sphere radius (may leave the image)
    hi = [int(i.max()) + p + 1 for i, p in zip(idx, pad, strict=False)]
    values = np.zeros([b - a for a, b in zip(lo, hi, strict=True)])
    present = np.zeros(values.shape)
    img = tuple(slice(max(0, a), min(n, b)) for a, b, n in zip(lo, hi, suv.shape, strict=True))
    loc = tuple(slice(s.start - a, s.stop - a) for s, a in zip(img, lo, strict=True))
    values[loc] = suv[img]
    present[loc] = 1.0
    total = ndimage.correlate(values, kernel, mode="constant", cval=0.0)
    count = ndimage.correlate(present, kernel, mode="constant", cval=0.0)
    lesion = np.zeros(values.shape, dtype=bool)
    lesion[loc] = mask[img]
    means = total / np.maximum(count, 1.0)
    return float(means[lesion].max())


def voxel_to_patient(index_zyx, spacing: tuple[float, ...], origin: tuple[float, ...], direction: tuple[float, ...]):
    """Patient (x, y, z) in mm of a (possibly fractional) voxel index (z, y, x), as ITK maps it."""
    ijk = np.asarray(index_zyx, dtype=np.float64)[::-1]
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    return np.asarray(origin, dtype=np.float64) + d @ (ijk * np.asarray(spacing, dtype=np.float64))


def lesion_stats(
    suv: np.ndarray,
    labels: np.ndarray,
    spacing: tuple[float, ...],
    origin: tuple[float, ...],
    direction: tuple[float, ...],
) -> list[dict]:
    """One dict per label (ascending): id, voxels, centroid_mm [x, y, z], suv_max, suv_peak, suv_mean, mtv_ml,
    tlg (= MTV x SUVmean, mL x SUV). ``spacing``/``origin``/``direction`` are in ITK (x, y, z) order."""
    spacing_zyx = tuple(reversed(spacing))
    voxel_ml = float(np.prod(spacing)) / 1000.0
    out = []
    objects = ndimage.find_objects(labels.astype(np.int64))
    for lab, bbox in enumerate(objects, start=1):
        if bbox is None:
            continue
        local = labels[bbox] == lab
        values = suv[bbox][local].astype(np.float64)
        centre = np.argwhere(local).mean(axis=0) + [b.start for b in bbox]
        mask = np.zeros(labels.shape, dtype=bool)
        mask[bbox] = local
        mtv = len(values) * voxel_ml
        out.append(
            {
                "id": lab,
                "voxels": int(len(values)),
                "centroid_mm": [round(float(v), 2) for v in voxel_to_patient(centre, spacing, origin, direction)],
                "suv_max": float(values.max()),
                "suv_peak": suv_peak(suv, mask, spacing_zyx),
                "suv_mean": float(values.mean()),
                "mtv_ml": float(mtv),
                "tlg": float(mtv * values.mean()),
            }
        )
    return out


def patient_totals(stats: list[dict]) -> dict:
    """Lesion count, total MTV (mL) and total TLG over a patient's lesions."""
    return {
        "lesion_count": len(stats),
        "total_mtv_ml": float(sum(s["mtv_ml"] for s in stats)),
        "total_tlg": float(sum(s["tlg"] for s in stats)),
    }
