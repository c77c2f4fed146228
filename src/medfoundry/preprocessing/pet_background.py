"""The local background of a region of a PET volume: the median SUV in a shell around it.

Used to cut lesion templates out of their surroundings (``data.insertion``) and to judge whether the voxels of a
lesion outline are supported by uptake (``inference.lesions.delineate``). The median, not the mean, so that a hot
neighbour inside the shell does not raise the background.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def shell_background(
    suv: np.ndarray,
    mask: np.ndarray,
    spacing_zyx: tuple[float, ...],
    outer_mm: float,
    inner_mm: float = 0.0,
    exclude: np.ndarray | None = None,
    min_suv: float | None = None,
) -> float:
    """Median SUV of the voxels more than ``inner_mm`` and at most ``outer_mm`` from ``mask`` (Euclidean distance
    in mm), leaving out ``exclude`` and voxels at or below ``min_suv`` (air); 0.0 when the shell is empty. Pass
    arrays cut to a box that holds the shell (``mask`` grown by ``outer_mm``) to keep this fast."""
    distance = ndimage.distance_transform_edt(~np.asarray(mask, bool), sampling=spacing_zyx)
    shell = (distance > inner_mm) & (distance <= outer_mm)
    if exclude is not None:
        shell &= ~np.asarray(exclude, bool)
    values = suv[shell]
    if min_suv is not None:
        values = values[values > min_suv]
    return float(np.median(values)) if values.size else 0.0


def grown_box(
    box: tuple[slice, ...], shape: tuple[int, ...], spacing_zyx: tuple[float, ...], mm: float
) -> tuple[slice, ...]:
    """``box`` grown by at least ``mm`` (and one voxel) on every side, clipped to ``shape``."""
    grow = [max(1, int(np.ceil(mm / float(s)))) for s in spacing_zyx]
    return tuple(slice(max(0, b.start - g), min(n, b.stop + g)) for b, g, n in zip(box, grow, shape, strict=True))
