"""``write_image`` / ``write_mask``: NIfTI, NRRD, MHA, npz and PNG outputs, atomic and geometry-preserving."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medfoundry.errors import InputError, OutputExistsError
from medfoundry.io.checks import check_same_grid, to_labels
from medfoundry.io.formats import file_suffix
from medfoundry.io.image import MedicalImage
from medfoundry.io.itk import ITK_WRITE_SUFFIXES, write_itk
from medfoundry.io.npz import write_npz_image
from medfoundry.io.raster2d import write_png

WRITE_SUFFIXES = ITK_WRITE_SUFFIXES + (".npz", ".png")


def _check_output(path: Path, overwrite: bool) -> str:
    suffix = file_suffix(path)
    if suffix not in WRITE_SUFFIXES:
        raise InputError(
            path, f"cannot write {suffix or '(no suffix)'!r} files; use one of {', '.join(WRITE_SUFFIXES)}"
        )
    if path.exists() and not overwrite:  # refuse before any work is done
        raise OutputExistsError(path)
    return suffix


def write_image(img: MedicalImage, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``img`` with its spacing, origin and direction (.nii/.nii.gz/.nrrd/.mha/.npz; .png for 2D)."""
    path = Path(path)
    suffix = _check_output(path, overwrite)
    if suffix == ".npz":
        return write_npz_image(img, path, key="imgs", overwrite=overwrite)
    if suffix == ".png":
        if img.spatial_ndim != 2:
            raise InputError(path, f"PNG holds one 2D image; got shape {img.array.shape} (use .nii.gz or .npz)")
        return write_png(img.array, path, overwrite, rgb=img.is_rgb)
    return write_itk(img, path, overwrite)


def write_mask(
    mask: MedicalImage | np.ndarray,
    path: str | Path,
    reference: MedicalImage | None = None,
    overwrite: bool = False,
    png_scale_binary: bool = False,
) -> Path:
    """Write a label map in the smallest unsigned dtype (uint8/uint16/uint32), on ``reference``'s grid.

    A plain array needs ``reference`` for its geometry (except a 2D PNG, which stores none); a MedicalImage
    mask given with a ``reference`` must be on its grid. Label values are kept; ``png_scale_binary`` writes
    a {0, 1} mask as 0/255 PNG.
    """
    path = Path(path)
    suffix = _check_output(path, overwrite)
    if isinstance(mask, MedicalImage):
        if reference is not None:
            check_same_grid(mask, reference, path)
        grid = mask
        array = mask.array
    else:
        if reference is None and suffix == ".png" and np.ndim(mask) == 2:
            reference = MedicalImage(np.zeros(np.shape(mask), np.uint8), (1.0, 1.0))  # PNG stores no geometry
        if reference is None:
            raise InputError(
                path, "a mask given as an array needs reference= (the image it belongs to) for its geometry"
            )
        array = np.asarray(mask)
        if array.shape != reference.spatial_shape:
            raise InputError(
                path,
                f"mask shape {array.shape} does not match the reference image grid {reference.spatial_shape}"
                + (f" ({reference.path})" if reference.path else ""),
            )
        grid = reference
    if array.ndim != grid.spatial_ndim:
        raise InputError(path, f"mask shape {array.shape} is not a label map on a {grid.spatial_ndim}D grid")
    labels = to_labels(array, path)
    out = MedicalImage(labels, grid.spacing, grid.origin, grid.direction, grid.modality, str(path))
    if suffix == ".png":
        if labels.ndim != 2:
            raise InputError(path, f"PNG holds one 2D mask; got shape {labels.shape} (use .nii.gz or .npz)")
        if int(labels.max()) > 255:
            raise InputError(
                path,
                f"labels up to {int(labels.max())} do not fit an 8-bit PNG; write .npz or .nii.gz instead",
            )
        if png_scale_binary:
            if int(labels.max()) > 1:
                raise InputError(path, "png_scale_binary needs a {0, 1} mask; this one has more labels")
            labels = labels * np.uint8(255)
        return write_png(labels, path, overwrite)
    if png_scale_binary:
        raise InputError(path, "png_scale_binary applies to .png outputs only")
    if suffix == ".npz":
        return write_npz_image(out, path, key="segs", overwrite=overwrite)
    return write_itk(out, path, overwrite)
