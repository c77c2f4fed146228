"""One PET volume (and mask) -> labelled, normalised axial slices on the dataset grid."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medfoundry.data.pet_slices.config import CaseSpec, SliceConfig, SliceStack
from medfoundry.errors import InputError
from medfoundry.io.image import MedicalImage
from medfoundry.preprocessing.resample import resample_volume


def grid_geometry(img: MedicalImage, grid: Sequence[int]) -> tuple[tuple[int, ...], tuple[float, ...], tuple]:
    """Size, spacing and origin (ITK order) of ``grid`` voxels covering ``img``'s field of view."""
    size_in = np.array(img.array.shape[::-1][:3], dtype=float)  # (x, y, z)
    size = tuple(int(g) if int(g) > 0 else int(s) for g, s in zip(grid, size_in, strict=True))
    spacing_in = np.array(img.spacing, dtype=float)
    spacing = spacing_in * size_in / np.array(size, dtype=float)
    direction = np.array(img.direction, dtype=float).reshape(3, 3)
    # keep the outer voxel edges: the first voxel centre moves by half the change in spacing
    origin = np.array(img.origin, dtype=float) + direction @ ((spacing - spacing_in) / 2.0)
    return size, tuple(spacing.tolist()), tuple(origin.tolist())


def resample_to_grid(img: MedicalImage, grid: Sequence[int], label: bool = False) -> MedicalImage:
    """``img`` resampled (linear, or nearest for labels) onto ``grid`` voxels over the same field of view."""
    size, spacing, origin = grid_geometry(img, grid)
    if size == tuple(img.array.shape[::-1]):
        return img
    array = resample_volume(img.array, tuple(size[::-1]), is_label=label)
    return MedicalImage(array, spacing, origin, img.direction, img.modality, img.path, dict(img.meta))


def lesion_mask(mask: MedicalImage, config: SliceConfig) -> np.ndarray:
    """Binary lesion array from a label map, refusing labels other than {0, 1} unless configured."""
    labels = np.unique(mask.array)
    if config.lesion_labels is not None:
        wanted = set(int(v) for v in config.lesion_labels)
        missing = wanted - set(int(v) for v in labels)
        if missing == wanted:
            raise InputError(
                mask.path,
                f"the mask holds labels {sorted(int(v) for v in labels)}, none of the lesion labels "
                f"{sorted(wanted)} asked for with `lesion_labels`",
            )
        return np.isin(mask.array, sorted(wanted)).astype(np.uint8)
    extra = [int(v) for v in labels if v not in (0, 1)]
    if extra and not config.binarize:
        raise InputError(
            mask.path,
            f"the mask holds labels {sorted(int(v) for v in labels)}, expected only 0 and 1; pass `binarize` "
            "to count every non-zero label as lesion, or `lesion_labels` L [L ...] to pick the lesion labels",
        )
    return (mask.array > 0).astype(np.uint8)


def _resize_stack(stack: np.ndarray, size: int) -> np.ndarray:
    """(n, h, w) -> (n, size, size) float32: SimpleITK linear resampling, Gaussian anti-aliasing when shrinking."""
    import SimpleITK as sitk

    n, h, w = stack.shape
    if (h, w) == (size, size):
        return stack.astype(np.float32, copy=False)
    img = sitk.GetImageFromArray(stack.astype(np.float32, copy=False))  # unit spacing, origin 0
    fx, fy = w / size, h / size
    variance = [((fx - 1) / 2) ** 2 if fx > 1 else 0.0, ((fy - 1) / 2) ** 2 if fy > 1 else 0.0, 0.0]
    if any(variance):
        img = sitk.DiscreteGaussian(img, variance, 32, 0.01, False)
    out = sitk.Resample(
        img,
        [size, size, n],
        sitk.Transform(),
        sitk.sitkLinear,
        ((fx - 1) / 2, (fy - 1) / 2, 0.0),  # outer pixel edges kept
        (fx, fy, 1.0),
        img.GetDirection(),
        0.0,
        sitk.sitkFloat32,
    )
    return sitk.GetArrayFromImage(out)


def to_uint8_unit(stack: np.ndarray) -> np.ndarray:
    """Each slice divided by its own maximum, stored as uint8 (0..255 for 0..1); negatives clipped to 0."""
    stack = np.clip(stack, 0.0, None)
    peak = stack.reshape(stack.shape[0], -1).max(axis=1)
    peak = np.where(peak > 0, peak, 1.0)
    return np.round(stack / peak[:, None, None] * 255.0).astype(np.uint8)


def to_uint8_window(stack: np.ndarray, top: float) -> np.ndarray:
    """Values clipped to ``[0, top]`` and divided by ``top`` (one fixed scale for every slice), stored as uint8."""
    return np.round(np.clip(stack, 0.0, top) / top * 255.0).astype(np.uint8)


def slice_volume(image: MedicalImage, mask: MedicalImage | None, config: SliceConfig) -> SliceStack:
    """Resample ``image`` (and ``mask``) to the grid, keep non-empty axial slices, normalise and resize."""
    if image.spatial_ndim != 3 or image.is_rgb:
        raise InputError(image.path, f"a 3D PET volume is needed, got an image of shape {image.array.shape}")
    img = resample_to_grid(image, config.grid)
    data = img.array.astype(np.float32, copy=False)
    nz = data.shape[0]
    slice_max = data.reshape(nz, -1).max(axis=1)
    keep = np.flatnonzero(slice_max > config.min_slice_max)
    if keep.size == 0:
        raise InputError(
            image.path,
            f"no slices left after filtering: all {nz} resampled slices have maximum <= "
            f"{config.min_slice_max:g} (empty scan?); lower `min_slice_max` or check the file",
        )
    if mask is not None:
        lesions = resample_to_grid(mask.with_array(lesion_mask(mask, config)), config.grid, label=True)
        lesion_voxels = lesions.array.reshape(nz, -1).sum(axis=1)[keep].astype(np.int64)
    else:
        lesion_voxels = np.full(keep.size, -1, dtype=np.int64)
    direction = np.array(img.direction).reshape(3, 3)
    centres = np.array(img.origin)[None, :] + (direction @ (np.outer(keep, [0, 0, 1]) * img.spacing).T).T
    z_mm = centres[:, 2]
    # nearest original slice of each kept grid slice (both grids cover the same FOV)
    source = np.floor((keep + 0.5) * image.array.shape[0] / nz).astype(np.int64)
    resized = _resize_stack(data[keep], config.size)
    if config.intensity == "suv-window":  # the caller passes SUV (``to_suv``)
        pixels = to_uint8_window(resized, config.suv_window)
    else:
        pixels = to_uint8_unit(resized)
    return SliceStack(
        images=pixels,
        slice_index=keep.astype(np.int64),
        z_mm=z_mm,
        source_slice=np.minimum(source, image.array.shape[0] - 1),
        slice_max=slice_max[keep].astype(np.float64),
        lesion_voxels=lesion_voxels,
        grid_spacing=tuple(float(s) for s in img.spacing),
        n_grid_slices=nz,
    )


def read_case(case: CaseSpec) -> tuple[MedicalImage, MedicalImage | None]:
    """Read a case's PET volume (SUV for DICOM) and its mask, checking that they share one grid."""
    from medfoundry.io import read_image, read_mask

    image = read_image(case.image, modality="PET")
    mask = None if case.mask is None else read_mask(case.mask, reference=image)
    return image, mask
