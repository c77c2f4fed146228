"""The grid every anatomy detector works on: the scan turned to one patient orientation and coarsened to ~4 mm.

* **Orientation** (:func:`patient_axes`): the image direction matrix (columns = the image x, y, z axes in the
  patient's LPS space, as ITK and DICOM store it) says which array axis runs most nearly along the patient's
  left-right, anterior-posterior and cranio-caudal axes, and which way. The working array is transposed and
  flipped so that axis 0 runs towards the head, axis 1 towards the back and axis 2 towards the patient's left,
  whatever the acquisition (axial, coronal or sagittal, head first or feet first). Oblique directions are taken
  at their nearest axis.
* **Resolution**: an axis finer than :data:`WORK_MM` is averaged over whole blocks of voxels (2 mm -> 4 mm,
  1.5 mm -> 4.5 mm), which both low-passes and shrinks the volume, so a 2 mm whole-body scan costs what a 4 mm one
  does; organs are centimetres across, so nothing an organ rule needs is lost. A mask found on this grid goes
  back to the native grid by repeating each voxel over its block (:meth:`WorkGrid.to_native`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

WORK_MM = 4.0  # target voxel size of the working grid; organs are >= 3 cm, PET resolution 5-9 mm FWHM
SMOOTH_MM = 4.0  # Gaussian sigma of the organ-scale image (FWHM 9.4 mm): noise down, organs kept


def patient_axes(direction) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(array axis, sign) for the patient's (cranio-caudal, anterior-posterior, left-right) axes.

    ``sign`` is +1 when a larger index is more superior / posterior / left (LPS). Each array axis is assigned to
    the patient axis its direction column is most aligned with (largest cosine first, so an oblique matrix still
    gives a permutation)."""
    d = np.asarray(direction if direction is not None and len(direction) else np.eye(3), dtype=np.float64)
    d = d.reshape(3, 3)
    cos = np.abs(d)  # cos[patient axis (L, P, S), image axis (x, y, z)]
    order = np.dstack(np.unravel_index(np.argsort(-cos, axis=None), cos.shape))[0]
    patient_of_image: dict[int, int] = {}
    used: set[int] = set()
    for p, i in order:
        if int(i) in patient_of_image or int(p) in used:
            continue
        patient_of_image[int(i)] = int(p)
        used.add(int(p))
    axes, signs = [0, 0, 0], [1, 1, 1]
    for image_axis, p in patient_of_image.items():
        canonical = 2 - p  # S -> 0, P -> 1, L -> 2
        axes[canonical] = 2 - image_axis  # image x, y, z are array axes 2, 1, 0
        signs[canonical] = 1 if d[p, image_axis] >= 0 else -1
    return tuple(axes), tuple(signs)  # type: ignore[return-value]


@dataclass
class WorkGrid:
    """The scan on the working grid: ``suv`` (axes: towards head, towards back, towards patient's left), its
    ``spacing`` in mm, the organ-scale smoothed image ``smooth`` and how to go back to the native array."""

    suv: np.ndarray
    smooth: np.ndarray
    spacing: tuple[float, float, float]
    native_shape: tuple[int, int, int]
    axes: tuple[int, int, int]  # native array axis of each working axis
    signs: tuple[int, int, int]  # -1 where the working axis runs against the native one
    blocks: tuple[int, int, int]  # native voxels per working voxel along each working axis
    flipped_cc: bool = False  # the head end was taken from anatomy, against the direction matrix

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.suv.shape)  # type: ignore[return-value]

    def to_native(self, mask: np.ndarray) -> np.ndarray:
        """A working-grid mask on the native array grid (each working voxel repeated over its block)."""
        canonical_native = tuple(self.native_shape[a] for a in self.axes)
        out = np.asarray(mask)
        for axis, b in enumerate(self.blocks):
            if b > 1:
                out = np.repeat(out, b, axis=axis)
        out = out[tuple(slice(0, n) for n in canonical_native)]
        out = out[tuple(slice(None, None, -1) if s < 0 else slice(None) for s in self.signs)]
        return np.ascontiguousarray(np.transpose(out, np.argsort(self.axes)))

    def canonical(self, array: np.ndarray) -> np.ndarray:
        """A native-grid array in the working orientation (head, back, patient's left), at native resolution."""
        out = np.transpose(np.asarray(array), self.axes)
        return out[tuple(slice(None, None, -1) if s < 0 else slice(None) for s in self.signs)]

    def to_work_index(self, native_zyx: np.ndarray) -> np.ndarray:
        """Native array indices (N, 3) as (fractional) working-grid indices (N, 3)."""
        native_zyx = np.asarray(native_zyx, dtype=np.float64).reshape(-1, 3)
        out = np.empty_like(native_zyx)
        for w, (a, s, b) in enumerate(zip(self.axes, self.signs, self.blocks, strict=True)):
            i = native_zyx[:, a] if s > 0 else self.native_shape[a] - 1 - native_zyx[:, a]
            out[:, w] = (i + 0.5) / b - 0.5
        return out

    def to_native_index(self, work_idx: np.ndarray) -> np.ndarray:
        """Working-grid indices (N, 3) as (fractional) native array indices (N, 3)."""
        work_idx = np.asarray(work_idx, dtype=np.float64).reshape(-1, 3)
        out = np.empty_like(work_idx)
        for w, (a, s, b) in enumerate(zip(self.axes, self.signs, self.blocks, strict=True)):
            i = (work_idx[:, w] + 0.5) * b - 0.5
            out[:, a] = i if s > 0 else self.native_shape[a] - 1 - i
        return out


def work_grid(suv: np.ndarray, spacing_zyx, direction=None, flip_cranio_caudal: bool = False) -> WorkGrid:
    """The working grid of a (z, y, x) SUV volume with ``spacing_zyx`` (mm) and an ITK/DICOM ``direction``;
    ``flip_cranio_caudal`` takes the head at the other end than the direction matrix says."""
    suv = np.asarray(suv, dtype=np.float32)
    if not np.isfinite(suv).all():
        suv = np.nan_to_num(suv, nan=0.0, posinf=0.0, neginf=0.0)
    axes, signs = patient_axes(direction)
    if flip_cranio_caudal:
        signs = (-signs[0], signs[1], signs[2])
    vol = np.transpose(suv, axes)
    vol = vol[tuple(slice(None, None, -1) if s < 0 else slice(None) for s in signs)]
    spacing_native = np.asarray(spacing_zyx, dtype=np.float64)[list(axes)]
    blocks = tuple(max(1, int(np.floor(WORK_MM / s + 0.25))) for s in spacing_native)
    if any(b > 1 for b in blocks):
        pad = [(0, (-n) % b) for n, b in zip(vol.shape, blocks, strict=True)]
        vol = np.pad(vol, pad, mode="edge")
        shape = []
        for n, b in zip(vol.shape, blocks, strict=True):
            shape += [n // b, b]
        vol = vol.reshape(shape).mean(axis=(1, 3, 5), dtype=np.float32)
    vol = np.ascontiguousarray(vol, dtype=np.float32)
    spacing = tuple(float(s * b) for s, b in zip(spacing_native, blocks, strict=True))
    smooth = ndimage.gaussian_filter(vol, [SMOOTH_MM / s for s in spacing], mode="nearest")
    native_shape = tuple(int(n) for n in suv.shape)
    return WorkGrid(vol, smooth, spacing, native_shape, axes, signs, blocks, flip_cranio_caudal)  # type: ignore[arg-type]
