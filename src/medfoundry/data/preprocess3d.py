"""nnU-Net-style 3D preprocessing: resampling to a target spacing, CT clipping + z-score, per-image z-score."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from medfoundry.preprocessing.resample import resample_volume

CT_PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class CTStats:
    """Dataset-wide CT intensity statistics (from foreground voxels): clip window, mean and std after clipping."""

    lower: float
    upper: float
    mean: float
    std: float

    def to_dict(self) -> dict:
        """JSON-friendly form."""
        return asdict(self)


def target_shape(shape: tuple[int, ...], spacing_zyx: tuple[float, ...], target_zyx: tuple[float, ...]):
    """Array shape after resampling from ``spacing_zyx`` to ``target_zyx`` (at least 1 voxel per axis)."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing_zyx, target_zyx, strict=True))


def ct_statistics(foreground_values: np.ndarray) -> CTStats:
    """nnU-Net's CT statistics: 0.5/99.5 percentiles of the foreground HU, then mean/std inside that window."""
    values = np.asarray(foreground_values, dtype=np.float64).ravel()
    if values.size == 0:
        return CTStats(-1000.0, 1000.0, 0.0, 1000.0)
    lo, hi = np.percentile(values, CT_PERCENTILES)
    clipped = np.clip(values, lo, hi)
    return CTStats(float(lo), float(hi), float(clipped.mean()), float(max(clipped.std(), 1e-6)))


def normalise(array: np.ndarray, modality: str, ct: CTStats | None = None) -> np.ndarray:
    """CT: clip to the dataset window and z-score with dataset stats; other modalities: per-image z-score."""
    a = np.asarray(array, dtype=np.float32)
    if modality.upper() == "CT":
        ct = ct or CTStats(-1000.0, 1000.0, 0.0, 1000.0)
        return ((np.clip(a, ct.lower, ct.upper) - ct.mean) / ct.std).astype(np.float32)
    std = float(a.std())
    return ((a - float(a.mean())) / (std if std > 1e-8 else 1.0)).astype(np.float32)


def preprocess_volume(
    array: np.ndarray,
    spacing_zyx: tuple[float, ...],
    target_zyx: tuple[float, ...],
    modality: str,
    ct: CTStats | None = None,
    label: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Normalise then resample an image (and nearest-resample its label map) to ``target_zyx`` spacing."""
    shape = target_shape(array.shape, spacing_zyx, target_zyx)
    image = resample_volume(normalise(array, modality, ct), shape)
    lbl = None if label is None else resample_volume(label, shape, is_label=True)
    return image, lbl
