"""NIfTI, NRRD and MetaImage (MHA/MHD) files through SimpleITK, geometry kept exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medfoundry.errors import InputError
from medfoundry.io.atomic import atomic_path
from medfoundry.io.checks import check_image_array
from medfoundry.io.image import MedicalImage

ITK_READ_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
# .mhd/.nhdr are left out: they write a second data file that a one-file atomic rename cannot cover.
ITK_WRITE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")


def sitk_to_image(sitk_image, path: str | Path | None, modality: str | None = None) -> MedicalImage:
    """A MedicalImage from a SimpleITK image (4D, multi-component 3D and non-finite voxels refused)."""
    import SimpleITK as sitk

    return _assemble(
        sitk.GetArrayFromImage(sitk_image),
        sitk_image.GetNumberOfComponentsPerPixel(),
        sitk_image.GetSpacing(),
        sitk_image.GetOrigin(),
        sitk_image.GetDirection(),
        path,
        modality,
    )


def _assemble(array, ncomp, spacing, origin, direction, path, modality) -> MedicalImage:
    """Check an ITK-ordered array (with a trailing component axis when ``ncomp > 1``) and wrap it."""
    dim = len(spacing)
    size = array.shape[:dim]
    if dim == 4 and size[0] == 1:  # a 4D file holding one volume: keep it
        array = array[0]
        spacing, origin = spacing[:3], origin[:3]
        direction = np.asarray(direction).reshape(4, 4)[:3, :3].ravel()
        dim = 3
    if dim > 3:
        raise InputError(path, f"4D image with shape {array.shape}, give one 3D volume")
    rgb = False
    if ncomp > 1:
        if dim == 2 and ncomp in (3, 4):
            rgb = True
            array = array[..., :3]
        else:
            raise InputError(path, f"{ncomp} values per voxel (shape {array.shape}); 4D image, give one 3D volume")
    array = check_image_array(array, path, rgb=rgb)
    return MedicalImage(
        array=array,
        spacing=spacing,
        origin=origin,
        direction=tuple(direction),
        modality=modality or ("RGB" if rgb else "OTHER"),
        path=None if path is None else str(path),
        meta={"rgb": True} if rgb else {},
    )


def read_itk(path: str | Path, modality: str | None = None) -> MedicalImage:
    """Read a NIfTI / NRRD / MHA / MHD file; unreadable or truncated files raise InputError."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    if path.name.lower().endswith((".nii", ".nii.gz")):
        image = _read_nifti(path, modality)
        if image is not None:
            return image
    try:
        sitk_image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(path, f"cannot read the file (truncated or not a valid image?){_sitk_reason(exc)}") from exc
    return sitk_to_image(sitk_image, path, modality)


def _read_nifti(path: Path, modality: str | None) -> MedicalImage | None:
    """NIfTI geometry from SimpleITK, voxels from nibabel (None for layouts left to SimpleITK).

    ITK's NIfTI reader silently turns NaN/inf voxels into 0 and zero-fills a truncated file; nibabel
    does neither, so the voxels come from it while the geometry stays exactly ITK's.
    """
    import nibabel as nib
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(path, f"cannot read the file (truncated or not a valid image?){_sitk_reason(exc)}") from exc
    try:
        data = np.asanyarray(nib.load(path, mmap=False).dataobj)
    except Exception as exc:  # nibabel and gzip raise many types on damaged files
        reason = " ".join(str(exc).split())
        raise InputError(path, f"truncated or corrupt file ({type(exc).__name__}: {reason})") from exc
    size = tuple(reversed(reader.GetSize()))
    if reader.GetNumberOfComponents() != 1 or data.dtype.fields is not None or int(np.prod(size)) != data.size:
        return None  # vector / RGB NIfTI: SimpleITK's layout
    array = data.T.reshape(size)
    return _assemble(array, 1, reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection(), path, modality)


def image_to_sitk(img: MedicalImage, array: np.ndarray | None = None):
    """A SimpleITK image with ``img``'s spacing, origin and direction (``array`` replaces the pixels)."""
    import SimpleITK as sitk

    array = img.array if array is None else array
    sitk_image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=img.is_rgb)
    sitk_image.SetSpacing([float(s) for s in img.spacing])
    sitk_image.SetOrigin([float(o) for o in img.origin])
    sitk_image.SetDirection([float(d) for d in img.direction])
    return sitk_image


def write_itk(img: MedicalImage, path: str | Path, overwrite: bool = False, array: np.ndarray | None = None) -> Path:
    """Write ``img`` (or ``array`` on its grid) atomically to NIfTI / NRRD / MHA."""
    import SimpleITK as sitk

    path = Path(path)
    sitk_image = image_to_sitk(img, array)
    with atomic_path(path, overwrite) as tmp:
        try:
            sitk.WriteImage(sitk_image, str(tmp), useCompression=not path.name.endswith(".nii"))
        except RuntimeError as exc:
            raise InputError(path, f"cannot write the image{_sitk_reason(exc)}") from exc
    return path


def _sitk_reason(exc: RuntimeError) -> str:
    """': ' plus the useful last line of a SimpleITK exception message ('' when it says nothing useful)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = lines[-1] if lines else ""
    reason = reason.split("ERROR: ", 1)[-1]
    if not reason or "No such file" in reason:  # what MetaImage says about a short data block
        return ""
    return f": {reason}"
