"""The one image type of medfoundry: a numpy array plus its physical geometry.

Axis conventions (the same everywhere in the toolkit):

* ``array`` is in numpy order: ``(z, y, x)`` for volumes, ``(y, x)`` for grey 2D images and ``(y, x, c)``
  for colour 2D images (as SimpleITK's ``GetArrayFromImage`` returns them).
* ``spacing``, ``origin`` and ``direction`` are stored in ITK's physical order ``(x, y, z)`` exactly as
  SimpleITK reports them, so that a written mask opens aligned with its image in 3D Slicer or ITK-SNAP.
* :pyattr:`MedicalImage.spacing_zyx` gives the spacing in array axis order, which is what the metrics use.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from medfoundry.errors import InputError

MODALITIES = ("CT", "MR", "PET", "RGB", "OTHER")


@dataclass
class MedicalImage:
    """An image or mask array with spacing (mm), origin (mm), direction cosines and modality."""

    array: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...] = ()
    direction: tuple[float, ...] = ()
    modality: str = "OTHER"
    path: str | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        nd = self.spatial_ndim
        self.spacing = tuple(float(s) for s in self.spacing)
        if len(self.spacing) != nd:
            raise InputError(self.path, f"spacing has {len(self.spacing)} values but the image has {nd} spatial axes")
        if any(not np.isfinite(s) or s <= 0 for s in self.spacing):
            raise InputError(self.path, f"spacing must be positive and finite, got {self.spacing}")
        self.origin = tuple(float(o) for o in self.origin) if len(self.origin) else (0.0,) * nd
        if len(self.direction):
            self.direction = tuple(float(d) for d in self.direction)
        else:
            self.direction = tuple(np.eye(nd).ravel().tolist())
        if len(self.origin) != nd or len(self.direction) != nd * nd:
            raise InputError(self.path, f"origin/direction do not match {nd} spatial axes")
        self.modality = self.modality.upper()
        if self.modality not in MODALITIES:
            raise InputError(self.path, f"unknown modality {self.modality!r}; use one of {MODALITIES}")

    @property
    def is_rgb(self) -> bool:
        """True for a 2D colour image of shape (y, x, 3|4)."""
        return self.array.ndim == 3 and self.array.shape[-1] in (3, 4) and self.meta.get("rgb", False)

    @property
    def spatial_ndim(self) -> int:
        """2 for 2D images (grey or colour), 3 for volumes."""
        if self.array.ndim == 3 and self.meta.get("rgb", False):
            return 2
        return self.array.ndim

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The array shape without a colour axis."""
        return tuple(self.array.shape[: self.spatial_ndim])

    @property
    def spacing_zyx(self) -> tuple[float, ...]:
        """Spacing in array axis order ((z, y, x) or (y, x))."""
        return tuple(reversed(self.spacing))

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (mm^3 / 1000); for 2D, area in cm^2 / 10 with unit depth."""
        return float(np.prod(self.spacing)) / 1000.0

    def with_array(self, array: np.ndarray, **changes) -> MedicalImage:
        """A copy with a new array of the same spatial shape and the same geometry."""
        array = np.asarray(array)
        if tuple(array.shape[: self.spatial_ndim]) != self.spatial_shape:
            raise InputError(
                self.path,
                f"new array shape {array.shape} does not match the image grid {self.spatial_shape}",
            )
        meta = dict(self.meta)
        if array.ndim == self.spatial_ndim:
            meta.pop("rgb", None)
        return replace(self, array=array, meta=meta, **changes)

    def same_grid(self, other: MedicalImage, atol: float = 1e-3) -> bool:
        """True when both images share shape, spacing, origin and direction (within ``atol``)."""
        return (
            self.spatial_shape == other.spatial_shape
            and np.allclose(self.spacing, other.spacing, atol=atol)
            and np.allclose(self.origin, other.origin, atol=atol)
            and np.allclose(self.direction, other.direction, atol=atol)
        )
