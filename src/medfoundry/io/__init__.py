"""Reading and writing medical images and masks with their geometry (spacing, origin, direction)."""

from medfoundry.io.atomic import atomic_path, check_writable
from medfoundry.io.checks import check_same_grid, grid_differences, label_dtype, to_labels
from medfoundry.io.dicom import DicomSeries, list_dicom_series, read_dicom_series, suv_bw_factor
from medfoundry.io.dicom_seg import read_dicom_seg, write_dicom_seg
from medfoundry.io.image import MODALITIES, MedicalImage
from medfoundry.io.npz import NpzCase, read_npz_case, write_npz_image, write_npz_segs
from medfoundry.io.readers import read_image, read_image_for_model, read_mask
from medfoundry.io.rtstruct import list_rois, read_rtstruct
from medfoundry.io.writers import write_image, write_mask

__all__ = [
    "MODALITIES",
    "DicomSeries",
    "MedicalImage",
    "NpzCase",
    "atomic_path",
    "check_same_grid",
    "check_writable",
    "grid_differences",
    "label_dtype",
    "list_dicom_series",
    "list_rois",
    "read_dicom_seg",
    "read_dicom_series",
    "read_image",
    "read_image_for_model",
    "read_mask",
    "read_npz_case",
    "read_rtstruct",
    "suv_bw_factor",
    "to_labels",
    "write_dicom_seg",
    "write_image",
    "write_mask",
    "write_npz_image",
    "write_npz_segs",
]
