"""Candidates: hot 3D components above the threshold, split at prominent local maxima, each with a 3D box."""

from __future__ import annotations

from dataclasses import dataclass

import cc3d
import numpy as np
from scipy import ndimage
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

SMOOTH_SIGMA_VOXELS = 0.7  # light Gaussian before finding maxima, so that noise does not split a lesion
MIN_PROMINENCE_OF_THRESHOLD = 0.5  # a maximum splits a component if it rises >= 0.5 x threshold above the saddle
MIN_PROMINENCE_OF_PEAK = 0.1  # ... and >= 10 % of the component's SUVmax (hot organs are not split by noise)
MAX_CANDIDATES = 200  # the hottest ones are kept on a very noisy scan


@dataclass
class Candidate:
    """One hot region: ``mask`` is a boolean array over ``bbox`` (slices of the volume, (z, y, x))."""

    index: int
    bbox: tuple[slice, slice, slice]
    mask: np.ndarray
    peak_zyx: tuple[int, int, int]
    suv_max: float
    volume_ml: float
    region: int = 0  # the hot region (component above the threshold) this part was split from

    @property
    def box_xyz(self) -> list[int]:
        """The 3D box ``[x0, y0, z0, x1, y1, z1]`` (inclusive voxel indices), as prompts take it."""
        z, y, x = self.bbox
        return [x.start, y.start, z.start, x.stop - 1, y.stop - 1, z.stop - 1]

    def full_mask(self, shape: tuple[int, ...]) -> np.ndarray:
        """The candidate as a boolean mask of the whole volume."""
        out = np.zeros(shape, dtype=bool)
        out[self.bbox] = self.mask
        return out


def _split(suv_box: np.ndarray, region: np.ndarray, threshold: float) -> np.ndarray:
    """Watershed labels of ``region`` seeded at its prominent maxima (1 label when there is one maximum)."""
    smooth = ndimage.gaussian_filter(suv_box, SMOOTH_SIGMA_VOXELS)
    smooth = np.where(region, smooth, 0.0)
    peak = float(smooth.max())
    h = max(MIN_PROMINENCE_OF_THRESHOLD * threshold, MIN_PROMINENCE_OF_PEAK * peak)
    markers = h_maxima(smooth, h) & region
    markers, n = ndimage.label(markers)
    if n <= 1:
        return region.astype(np.int32)
    return watershed(-smooth, markers, mask=region)


def find_candidates(
    suv: np.ndarray,
    spacing_zyx: tuple[float, ...],
    threshold: float,
    min_volume_ml: float = 0.5,
) -> list[Candidate]:
    """Candidates above ``threshold`` (SUV) of at least ``min_volume_ml``, hottest first."""
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    components = cc3d.connected_components(suv > threshold, connectivity=26)
    found: list[Candidate] = []
    for comp_label, bbox in enumerate(ndimage.find_objects(components), start=1):
        if bbox is None:
            continue
        region = components[bbox] == comp_label
        if region.sum() * voxel_ml < min_volume_ml:
            continue
        suv_box = suv[bbox]
        parts = _split(suv_box, region, threshold)
        for part_bbox_local, part_label in zip(
            ndimage.find_objects(parts), range(1, int(parts.max()) + 1), strict=False
        ):
            if part_bbox_local is None:
                continue
            part = parts[part_bbox_local] == part_label
            volume = float(part.sum()) * voxel_ml
            if volume < min_volume_ml:
                continue
            glob = tuple(
                slice(b.start + p.start, b.start + p.stop) for b, p in zip(bbox, part_bbox_local, strict=False)
            )
            values = np.where(part, suv[glob], -np.inf)
            peak_local = np.unravel_index(int(values.argmax()), values.shape)
            peak = tuple(int(g.start + i) for g, i in zip(glob, peak_local, strict=False))
            found.append(Candidate(0, glob, part, peak, float(values.max()), volume, region=comp_label))
    found.sort(key=lambda c: -c.suv_max)
    found = found[:MAX_CANDIDATES]
    for i, cand in enumerate(found, start=1):
        cand.index = i
    return found
