"""PET slice dataset for abnormality classification: volumes -> labelled, normalised 2D axial slices.

Per case (protocol of the PET foundation-model study): resample the PET volume to one grid (voxel counts
``(x, y, z)``, 400 x 400 x 300 by default) over its own field of view, cut the axial slices, label a slice
abnormal when the resampled mask holds at least ``min_lesion_voxels`` lesion voxels, resize each slice to
``size`` x ``size`` and divide it by its own maximum SUV (slices are stored as 8-bit ``[0, 1]`` values; the
encoder maps them linearly to its own input range). Patients are split train / val / test (75 / 15 / 10 by
default, seeded), never one patient in two splits.

On disk (``OUT/``): ``dataset.json`` (configuration, cases, preprocessing hash), ``manifest.csv`` (one row per
slice: case, slice index, label, split...) and ``slices/CASE.npz`` (uint8 ``(n, size, size)``).

One job per module: :mod:`.config` (settings, case and result types), :mod:`.volume` (one volume -> slices),
:mod:`.split` (patient split), :mod:`.cases` (case table), :mod:`.build` (writing the folder), :mod:`.dataset`
(reading it), :mod:`.wholebody` (whole-body mode: native slices, crop lesion slices, inserted-lesion scans,
sample weights).
"""

from medfoundry.data.pet_slices.build import build_slice_dataset
from medfoundry.data.pet_slices.cases import autopet_cases, keep_tracers, read_case_table, tracer_pins
from medfoundry.data.pet_slices.config import FORMAT_VERSION, MANIFEST_FIELDS, SPLITS, CaseSpec, SliceConfig, SliceStack
from medfoundry.data.pet_slices.dataset import SliceDataset
from medfoundry.data.pet_slices.split import patient_split
from medfoundry.data.pet_slices.volume import (
    grid_geometry,
    lesion_mask,
    read_case,
    resample_to_grid,
    slice_volume,
    to_uint8_unit,
    to_uint8_window,
)
from medfoundry.data.pet_slices.wholebody import (
    WHOLEBODY_FIELDS,
    WholeBodyOptions,
    balance_weights,
    build_wholebody_dataset,
)

__all__ = [
    "autopet_cases",
    "FORMAT_VERSION",
    "MANIFEST_FIELDS",
    "SPLITS",
    "CaseSpec",
    "SliceConfig",
    "SliceDataset",
    "SliceStack",
    "WHOLEBODY_FIELDS",
    "WholeBodyOptions",
    "balance_weights",
    "build_wholebody_dataset",
    "build_slice_dataset",
    "grid_geometry",
    "keep_tracers",
    "lesion_mask",
    "patient_split",
    "read_case",
    "read_case_table",
    "resample_to_grid",
    "slice_volume",
    "to_uint8_unit",
    "tracer_pins",
    "to_uint8_window",
]
