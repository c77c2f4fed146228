"""``read_image`` / ``read_mask``: one entry point for every supported file, chosen by suffix or folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from medfoundry.errors import InputError
from medfoundry.io.checks import check_same_grid, to_labels
from medfoundry.io.dicom import read_dicom_series
from medfoundry.io.dicom_seg import is_dicom_seg, read_dicom_seg
from medfoundry.io.formats import file_suffix, read_image_file
from medfoundry.io.image import MedicalImage
from medfoundry.io.npz import read_npz_image
from medfoundry.io.paths import modality_from_name
from medfoundry.io.raster2d import RASTER_SUFFIXES, read_raster

__all__ = ["file_suffix", "read_image", "read_image_for_model", "read_mask"]  # file_suffix: from .formats


def read_image(
    path: str | Path,
    modality: str | None = None,
    series_uid: str | None = None,
    suv: bool = True,
    progress: bool = True,
) -> MedicalImage:
    """Read an image file (NIfTI, NRRD, MHA/MHD, npz, PNG/JPEG/TIFF, DICOM file) or DICOM series folder.

    ``modality`` overrides what the file says (DICOM Modality, "PT" -> "PET"); otherwise "OTHER"
    ("RGB" for colour 2D images). Floats come back as float32, integer types are kept. DICOM PET is
    converted to body-weight SUV unless ``suv=False``; ``series_uid`` picks one series in a folder; ``progress``
    shows a bar while a long series is read.
    A DICOM SEG file comes back as its label map on the grid its frames span (see ``read_dicom_seg``).
    """
    path = Path(path)
    if path.is_dir():
        return read_dicom_series(path, series_uid=series_uid, modality=modality, suv=suv, progress=progress)
    if is_dicom_seg(path):
        return read_dicom_seg(path)
    return read_image_file(path, modality, suv=suv)


def read_image_for_model(path: str | Path, modality: str | None = None, progress: bool = True) -> MedicalImage:
    """Read an image that a model will see: ``modality`` if given, else what the file says (DICOM Modality), else
    what its name says (``PET_image.nii.gz`` -> PET, :func:`~medfoundry.io.paths.modality_from_name`). Training
    folders, ``segment``, manifests and the viewer all read this way, so an adapter trained on
    ``PET_image.nii.gz`` files sees the same SUV window when it segments one."""
    image = read_image(path, modality=modality, progress=progress)
    if modality is None and image.modality == "OTHER":
        named = modality_from_name(path)
        if named != "OTHER":
            image = dataclasses.replace(image, modality=named)
    return image


def read_mask(
    path: str | Path,
    reference: MedicalImage | None = None,
    atol: float = 1e-3,
    series_uid: str | None = None,
    progress: bool = True,
) -> MedicalImage:
    """Read a label map as integer labels (smallest unsigned dtype); with ``reference``, check its grid.

    A 2D PNG/TIFF mask takes its geometry from ``reference`` (such files store none). An npz mask is read
    from ``segs`` (challenge output) or else ``gts``. A DICOM SEG is placed on ``reference``'s grid (when
    given) rather than checked against it, since a SEG stores only its non-empty frames.
    """
    path = Path(path)
    suffix = file_suffix(path)
    if reference is not None and is_dicom_seg(path):
        return read_dicom_seg(path, reference=reference)
    if suffix == ".npz" and path.is_file():
        img = _read_npz_mask(path)
    elif suffix in RASTER_SUFFIXES and path.is_file():
        img = read_raster(path, labels=True)
    else:
        img = read_image(path, series_uid=series_uid, suv=False, progress=progress)
    array = img.array
    if img.is_rgb:
        if not (np.all(array[..., 0] == array[..., 1]) and np.all(array[..., 0] == array[..., 2])):
            raise InputError(path, "a colour image is not a label map (save labels as one grey channel)")
        array = array[..., 0]
    mask = MedicalImage(
        array=to_labels(array, path),
        spacing=img.spacing,
        origin=img.origin,
        direction=img.direction,
        modality=img.modality,
        path=str(path),
        meta={k: v for k, v in img.meta.items() if k != "rgb"},
    )
    if reference is not None:
        if mask.meta.get("spacing_missing") and mask.spatial_shape == reference.spatial_shape:
            mask = MedicalImage(
                mask.array,
                reference.spacing,
                reference.origin,
                reference.direction,
                reference.modality,
                str(path),
            )
        check_same_grid(mask, reference, path, atol)
    return mask


def _read_npz_mask(path: Path) -> MedicalImage:
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
    except (ValueError, zipfile.BadZipFile, OSError, EOFError) as exc:
        raise InputError(path, f"unreadable or truncated npz file ({type(exc).__name__}: {exc})") from exc
    for key in ("segs", "gts"):
        if key in keys:
            return read_npz_image(path, key=key)
    raise InputError(path, f"no 'segs' or 'gts' array in the npz (keys: {sorted(keys)})")
