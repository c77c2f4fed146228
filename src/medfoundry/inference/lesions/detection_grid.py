"""The grid on which candidates are found and classified: the classifier's training resolution for finer scans.

The classifier learnt from PET at 3.9-5.5 mm in-plane and 3.27 mm slices (the shared crops and whole-body scan).
A current scanner reconstructs at 2-3 mm: its candidates split differently, its SUVs are less smoothed by partial
volume, and the encoder sees a sharper picture, so the same tissue gets other features. As nnU-Net resamples
every case to the spacing it trained on, a scan finer than :data:`FINER_THAN` x :data:`TRAINING_SPACING_ZYX` on an
axis is resampled to that spacing on that axis (Gaussian anti-aliasing first, as a coarser reconstruction
averages) for the threshold, candidate, classifier and grouping stages. Accepted candidates are then mapped back
to the native grid (:func:`to_native`), where delineation and quantification run at full resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medfoundry.inference.lesions.candidates import Candidate
from medfoundry.preprocessing.resample import resample_volume

TRAINING_SPACING_ZYX = (3.27, 4.69, 4.69)  # the whole-body training scan's grid (crops: 3.9-5.5 mm in-plane)
FINER_THAN = 0.8  # an axis finer than 0.8 x the training spacing is resampled


@dataclass
class DetectionGrid:
    """The SUV volume the detection stages run on and its relation to the native grid."""

    suv: np.ndarray
    spacing_zyx: tuple[float, float, float]
    native_shape: tuple[int, int, int]
    native_spacing_zyx: tuple[float, float, float]

    @property
    def resampled(self) -> bool:
        return tuple(self.suv.shape) != tuple(self.native_shape)

    def as_dict(self) -> dict:
        return {
            "resampled": self.resampled,
            "spacing_zyx_mm": [round(float(s), 4) for s in self.spacing_zyx],
            "shape_zyx": [int(n) for n in self.suv.shape],
        }


def detection_grid(suv: np.ndarray, spacing_zyx: tuple[float, ...]) -> DetectionGrid:
    """``suv`` itself, or ``suv`` resampled to the training spacing on every axis finer than it (see the module)."""
    spacing = np.asarray(spacing_zyx, dtype=np.float64)
    shape = np.asarray(suv.shape)
    target = np.where(spacing < FINER_THAN * np.asarray(TRAINING_SPACING_ZYX), TRAINING_SPACING_ZYX, spacing)
    new_shape = np.maximum(1, np.round(shape * spacing / target)).astype(int)
    native = (tuple(int(n) for n in shape), tuple(float(s) for s in spacing))
    if (new_shape == shape).all():
        return DetectionGrid(suv, tuple(float(s) for s in spacing), *native)  # type: ignore[arg-type]
    factor = shape / new_shape  # native voxels per detection voxel
    sigma = np.maximum(0.0, (factor - 1.0) / 2.0)  # scikit-image's anti-aliasing sigma for downsampling
    smooth = ndimage.gaussian_filter(np.asarray(suv, np.float32), sigma) if sigma.any() else suv
    coarse = resample_volume(smooth, tuple(int(n) for n in new_shape))
    return DetectionGrid(coarse, tuple(float(s) for s in spacing * factor), *native)  # type: ignore[arg-type]


def to_native(cands: list[Candidate], grid: DetectionGrid, suv: np.ndarray, threshold: float) -> list[Candidate]:
    """The detection-grid candidates ``cands`` on the native grid of ``suv``: each mask resampled to native voxels
    (kept where native SUV exceeds ``threshold``, unless that empties it), with native box, hottest voxel, SUVmax
    and volume; index and region are kept."""
    if not grid.resampled:
        return cands
    factor = np.asarray(grid.native_shape) / np.asarray(grid.suv.shape)
    voxel_ml = float(np.prod(grid.native_spacing_zyx)) / 1000.0
    out = []
    for cand in cands:
        box = tuple(
            slice(int(np.floor(b.start * f)), min(n, int(np.ceil(b.stop * f))))
            for b, f, n in zip(cand.bbox, factor, grid.native_shape, strict=True)
        )
        shape = tuple(b.stop - b.start for b in box)
        mask = resample_volume(cand.mask.astype(np.float32), shape) >= 0.5
        if not mask.any():  # a one-voxel candidate: its centre voxel
            mask[tuple(n // 2 for n in shape)] = True
        hot = mask & (suv[box] > threshold)
        if hot.any():
            mask = hot
        values = np.where(mask, suv[box], -np.inf)
        peak_local = np.unravel_index(int(values.argmax()), values.shape)
        peak = tuple(int(b.start + i) for b, i in zip(box, peak_local, strict=True))
        nz = ndimage.find_objects(mask.astype(np.uint8))[0]
        tight = tuple(slice(b.start + s.start, b.start + s.stop) for b, s in zip(box, nz, strict=True))
        out.append(
            Candidate(
                cand.index,
                tight,
                mask[nz],
                peak,
                float(values.max()),
                float(mask.sum()) * voxel_ml,
                region=cand.region,
            )
        )
    return out
