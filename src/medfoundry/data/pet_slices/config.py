"""Settings, case descriptions and per-volume results of the PET slice dataset."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medfoundry.errors import InputError

SPLITS = ("train", "val", "test")
MANIFEST_FIELDS = (
    "row",
    "case_id",
    "patient_id",
    "slice_index",
    "z_mm",
    "source_slice",
    "slice_max",
    "lesion_voxels",
    "label",
    "split",
    "tracer",
)
FORMAT_VERSION = 1
INTENSITIES = ("slice-max", "suv-window")


@dataclass(frozen=True)
class SliceConfig:
    """How volumes become slices; everything that changes the stored pixels is in :meth:`pixel_params`."""

    grid: tuple[int, int, int] = (400, 400, 300)  # voxel counts (x, y, z); 0 keeps the native count
    size: int = 224
    min_lesion_voxels: int = 1
    min_slice_max: float = 0.0  # slices whose maximum is <= this are dropped (cannot be normalised)
    binarize: bool = False  # every non-zero mask label counts as lesion
    lesion_labels: tuple[int, ...] | None = None  # these labels count as lesion (others as background)
    # "slice-max": each slice / its own maximum (any unit); "suv-window": SUV clipped to [0, suv_window] / suv_window
    # (the same grey for the same SUV on every slice; needs SUV volumes)
    intensity: str = "slice-max"
    suv_window: float = 10.0

    def __post_init__(self) -> None:
        if len(self.grid) != 3 or any(int(g) < 0 for g in self.grid):
            raise InputError(None, f"grid must be three voxel counts >= 0 (x, y, z), got {self.grid}")
        if self.size < 8:
            raise InputError(None, f"slice size must be >= 8 pixels, got {self.size}")
        if self.min_lesion_voxels < 1:
            raise InputError(None, f"min_lesion_voxels must be >= 1, got {self.min_lesion_voxels}")
        if self.intensity not in INTENSITIES:
            raise InputError(None, f"intensity must be one of {', '.join(INTENSITIES)}, got {self.intensity!r}")
        if not (np.isfinite(self.suv_window) and self.suv_window > 0):
            raise InputError(None, f"the SUV window must be a positive number, got {self.suv_window}")

    def pixel_params(self) -> dict:
        """The parameters that determine the stored slice pixels (hashed into the preprocessing hash)."""
        return {
            "grid": [int(g) for g in self.grid],
            "size": int(self.size),
            "min_slice_max": float(self.min_slice_max),
            "intensity": "slice / slice max, uint8 [0, 255] -> [0, 1]"
            if self.intensity == "slice-max"  # the hash of datasets built before the option is unchanged
            else f"SUV clipped to [0, w] / w, w = {float(self.suv_window):g}, uint8 [0, 255] -> [0, 1]",
            "resample": "MONAI Resize trilinear (image), nearest-exact (mask); slices: sitk linear + Gaussian AA",
            "format": FORMAT_VERSION,
        }


@dataclass
class CaseSpec:
    """One PET volume with its lesion mask; ``patient_id`` groups cases that must share a split;
    ``suv_factor`` (SUV per stored unit) converts a Bq/mL volume to SUV where SUV is needed (lesion insertion);
    ``tracer`` (``FDG``, ``PSMA``...; empty when unknown) is a manifest column, usable to filter or split."""

    case_id: str
    image: Path
    mask: Path | None
    patient_id: str = ""
    suv_factor: float | None = None
    tracer: str = ""

    def __post_init__(self) -> None:
        self.image = Path(self.image)
        self.mask = None if self.mask is None else Path(self.mask)
        self.patient_id = self.patient_id or self.case_id


@dataclass
class SliceStack:
    """The slices of one volume: pixels in ``[0, 1]`` as uint8 plus per-slice facts."""

    images: np.ndarray  # (n, size, size) uint8
    slice_index: np.ndarray  # index along z of the resampled grid
    z_mm: np.ndarray  # physical z of the slice centre
    source_slice: np.ndarray  # nearest slice of the original volume
    slice_max: np.ndarray  # maximum value (SUV) of the grid slice before normalisation
    lesion_voxels: np.ndarray  # lesion voxels in the grid slice (-1 without a mask)
    grid_spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    n_grid_slices: int = 0
    meta: dict = field(default_factory=dict)
