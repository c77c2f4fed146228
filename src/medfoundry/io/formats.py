"""Which reader reads an image file (its suffix, else the DICOM preamble), and reading one such file.

The suffix lists here are the single home of "what ``read_image`` reads": folders of volumes, ``evaluate``'s folder
matching and nnU-Net's ``predict`` all filter files with them. A DICOM SEG file is recognised and read by
:mod:`.dicom_seg`; everything else that is one file is read by :func:`read_image_file`.
"""

from __future__ import annotations

from pathlib import Path

from medfoundry.errors import InputError
from medfoundry.io.dicom import DICOM_SUFFIXES, read_dicom_file
from medfoundry.io.image import MedicalImage
from medfoundry.io.itk import ITK_READ_SUFFIXES, read_itk
from medfoundry.io.npz import read_npz_image
from medfoundry.io.paths import split_suffix
from medfoundry.io.raster2d import RASTER_SUFFIXES, read_raster

# files that can hold a 3D volume (a folder of volumes, nnU-Net's predict)
VOLUME_SUFFIXES = ITK_READ_SUFFIXES + (".npz",)
# every single file read_image reads, by suffix (DICOM files without a suffix are found by their preamble)
FILE_SUFFIXES = VOLUME_SUFFIXES + RASTER_SUFFIXES + DICOM_SUFFIXES
SUPPORTED = FILE_SUFFIXES + ("DICOM series folder",)


def file_suffix(path: str | Path) -> str:
    """The format suffix, lower case, two parts for ``.nii.gz``."""
    return split_suffix(path)[1]


def has_dicom_preamble(path: str | Path) -> bool:
    """True for a DICOM Part 10 file ('DICM' after the 128-byte preamble), whatever its name."""
    try:
        with open(path, "rb") as fh:
            return fh.read(132)[128:] == b"DICM"
    except OSError:
        return False


def is_dicom_file(path: str | Path) -> bool:
    """Whether the DICOM reader takes ``path``: a DICOM suffix, or no other reader's suffix and the DICOM preamble."""
    suffix = file_suffix(path)
    if suffix in VOLUME_SUFFIXES or suffix in RASTER_SUFFIXES:
        return False
    return suffix in DICOM_SUFFIXES or has_dicom_preamble(path)


def read_image_file(path: str | Path, modality: str | None = None, suv: bool = True) -> MedicalImage:
    """Read one image file that is not a DICOM SEG (NIfTI, NRRD, MHA/MHD, npz, PNG/JPEG/TIFF, DICOM file).

    ``modality`` and ``suv`` as in :func:`medfoundry.io.readers.read_image`.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    suffix = file_suffix(path)
    if suffix in ITK_READ_SUFFIXES:
        return read_itk(path, modality)
    if suffix == ".npz":
        return read_npz_image(path, modality)
    if suffix in RASTER_SUFFIXES:
        return read_raster(path, modality)
    if is_dicom_file(path):
        return read_dicom_file(path, modality, suv=suv)
    raise InputError(path, f"unsupported file type {suffix or '(no suffix)'!r}; supported: {', '.join(SUPPORTED)}")
