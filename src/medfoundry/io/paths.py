"""File names of images: the one place that knows which suffixes are formats (``.nii.gz`` counts as one)."""

from __future__ import annotations

import re
from pathlib import Path

# every format suffix a reader knows (lower case); two-part suffixes come first so that they win
FORMAT_SUFFIXES: tuple[str, ...] = (
    ".nii.gz",
    ".nii",
    ".nrrd",
    ".nhdr",
    ".mha",
    ".mhd",
    ".npz",
    ".dcm",
    ".dicom",
    ".ima",
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".tif",
    ".tiff",
)


def split_suffix(path: str | Path) -> tuple[str, str]:
    """``(name, suffix)`` of a file name: ``a.nii.gz`` -> ``("a", ".nii.gz")``, ``b.NRRD`` -> ``("b", ".nrrd")``.

    The suffix is lower case; a name without a known format suffix keeps its last suffix (``c.txt`` ->
    ``("c", ".txt")``, test with ``suffix in FORMAT_SUFFIXES``), and a name without any gives ``(name, "")``.
    """
    name = Path(path).name
    lower = name.lower()
    for suffix in FORMAT_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], suffix
    suffix = Path(name).suffix
    return (name[: -len(suffix)], suffix.lower()) if suffix else (name, "")


# file-name tokens that name a modality (``PET_image.nii.gz``, ``BraTS2021_00001_flair.nii.gz``)
MODALITY_TOKENS = {"PET": "PET", "PT": "PET", "FDG": "PET", "CT": "CT", "MR": "MR", "MRI": "MR", "FLAIR": "MR"}


def modality_from_name(path: str | Path) -> str:
    """The modality a file name suggests (``PET_image.nii.gz`` -> PET, ``BraTS_flair.nii.gz`` -> MR), else
    ``OTHER`` (which is windowed by percentiles, as MR is; pass the modality when a CT file's name does not say)."""
    for token in re.split(r"[^A-Za-z]+", Path(path).name.upper()):
        if token in MODALITY_TOKENS:
            return MODALITY_TOKENS[token]
    return "OTHER"
