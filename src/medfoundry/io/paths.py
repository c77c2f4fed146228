"""File names of images: the one place that knows which suffixes are formats (``.nii.gz`` counts as one)."""

from __future__ import annotations

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
