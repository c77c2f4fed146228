"""Labelled PET scans for training the lesion classifier (``medfoundry lesions train DATA``): the scans of a
training folder, each PET paired with its lesion label, read with the checks a training run needs.

Layouts found anywhere under DATA (they may be mixed; folder links are followed):

* **autoPET**: a folder holding ``SUV.nii.gz`` and ``SEG.nii.gz`` (a ``CTres.nii.gz`` beside them is not read:
  the lesion finder is PET-only);
* **NIfTI / NRRD / MHA pairs**: ``NAME_image.EXT`` beside ``NAME_mask.EXT`` (or ``_label``, ``_seg``, ``_gt``), or
  ``images/NAME.EXT`` beside ``labels/NAME.EXT`` / ``masks/NAME.EXT``
  (:func:`medfoundry.data.slices2d.label_beside`); a pair whose name says CT or MR (``CT_image.nii.gz``) is
  another modality of the same study and is skipped;
* **DICOM**: a PET series (Modality PT) and the DICOM SEG and / or RTSTRUCT files that reference it (by series
  UID, else by frame of reference), anywhere under DATA. ``roi_names`` picks the RTSTRUCT ROIs / SEG segments
  that are lesions (default: all of them).

A scan's name is its path under DATA; its group (the patient, so that cross-validation keeps a patient's scans
in one fold) is the patient folder (:func:`patient_group`): for autoPET the folder above the study folder
(``FDG-PET-CT-Lesions/<patient>/<study>/SUV.nii.gz`` -> ``FDG-PET-CT-Lesions/<patient>``, however deep the root
above it), for a pair the folder holding it (the file's stem when it lies directly under DATA or in an
``images/`` folder), for DICOM the series' PatientID (the folder of the series when the header has none).
A problem is one :class:`~medfoundry.errors.InputError` naming the file: an empty folder, a PET without a label,
a label off the image grid, a label without any lesion.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medfoundry.data.slices2d import IMAGE_SUFFIXES, is_paired_image_name, label_beside
from medfoundry.errors import InputError
from medfoundry.io import MedicalImage, list_rois, read_dicom_seg, read_image, read_mask, read_rtstruct
from medfoundry.io.dicom import DICOM_SUFFIXES
from medfoundry.io.paths import FORMAT_SUFFIXES, modality_from_name, split_suffix
from medfoundry.preprocessing.pet_suv import to_suv

AUTOPET_IMAGE = ("SUV.nii.gz", "SUV.nii")
AUTOPET_LABEL = ("SEG.nii.gz", "SEG.nii")
NOT_DICOM = {s for s in FORMAT_SUFFIXES if s not in DICOM_SUFFIXES} | {
    ".json", ".csv", ".txt", ".md", ".py", ".pkl", ".pt", ".pth", ".yaml", ".yml", ".html", ".pdf", ".zip", ".gz",
}  # fmt: skip
LAYOUTS = (
    "expected autoPET folders (SUV.nii.gz + SEG.nii.gz), NAME_image.nii.gz + NAME_mask.nii.gz pairs, "
    "images/ + labels/ folders, or DICOM PET series with a DICOM SEG or RTSTRUCT"
)


def names_scan(scan: LabelledScan, name: str) -> bool:
    """Whether ``name`` (as a user gives it, e.g. to ``--negatives-only``) means ``scan``: its name, its group or
    a folder above it under DATA."""
    return name in (scan.name, scan.group) or scan.name.startswith(name.rstrip("/") + "/")


@dataclass(frozen=True)
class LabelledScan:
    """One PET scan and its lesion label file(s); ``kind`` is ``autopet``, ``pair`` or ``dicom``."""

    name: str
    group: str
    image: Path
    labels: tuple[Path, ...]
    kind: str
    series_uid: str | None = None


def _files(root: Path) -> list[Path]:
    found = []
    for folder, dirs, names in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(folder) / n for n in sorted(names) if not n.startswith(".")]
    return found


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path != root else path.name


def patient_group(scan_path: Path, root: Path, kind: str, patient_id: str | None = None) -> str:
    """The patient a scan belongs to (see the module docstring). ``scan_path``: the autoPET study folder, the
    pair's image file, or the DICOM series folder."""
    if kind == "dicom":
        return patient_id or _relative(scan_path, root)
    if kind == "autopet":
        study = Path(_relative(scan_path, root))
        return study.parent.as_posix() if len(study.parts) > 1 else study.as_posix()
    folder = scan_path.parent
    if folder == root or not folder.is_relative_to(root) or folder.name == "images":
        return split_suffix(scan_path)[0].removesuffix("_image")
    return _relative(folder, root)


def _nifti_scans(files: list[Path], root: Path) -> list[LabelledScan]:
    scans = []
    for path in files:
        if path.name in AUTOPET_IMAGE:
            label = next((path.with_name(n) for n in AUTOPET_LABEL if path.with_name(n).is_file()), None)
            if label is None:
                raise InputError(path, "no SEG.nii.gz beside this SUV image: an unlabelled scan (label it or move it)")
            group = patient_group(path.parent, root, "autopet")
            scans.append(LabelledScan(_relative(path.parent, root), group, path, (label,), "autopet"))
        elif split_suffix(path)[1] in IMAGE_SUFFIXES and is_paired_image_name(path):
            if modality_from_name(path) in ("CT", "MR"):
                continue  # the same study's CT or MR
            label = label_beside(path)
            if label is None:
                raise InputError(path, "no label beside this image (NAME_mask / labels/NAME): an unlabelled scan")
            stem = split_suffix(path)[0].removesuffix("_image")
            scans.append(LabelledScan(_relative(path.with_name(stem), root), patient_group(path, root, "pair"), path,
                                      (label,), "pair"))  # fmt: skip
    return scans


def _dicom_headers(files: list[Path]) -> list[tuple[Path, object]]:
    import pydicom

    headers = []
    for path in files:
        if split_suffix(path)[1] in NOT_DICOM:
            continue
        try:
            headers.append((path, pydicom.dcmread(path, stop_before_pixels=True)))
        except Exception as exc:  # not DICOM (a README without suffix...), or a damaged file
            if split_suffix(path)[1] in DICOM_SUFFIXES:
                raise InputError(path, f"unreadable DICOM file ({type(exc).__name__}: {exc})") from exc
    return headers


def _references(ds) -> tuple[set[str], set[str]]:
    """(series UIDs, frame-of-reference UIDs) that a DICOM SEG or RTSTRUCT refers to."""
    series = {str(s.SeriesInstanceUID) for s in ds.get("ReferencedSeriesSequence", []) if "SeriesInstanceUID" in s}
    frames = {str(ds.FrameOfReferenceUID)} if "FrameOfReferenceUID" in ds else set()
    for ref in ds.get("ReferencedFrameOfReferenceSequence", []):
        if "FrameOfReferenceUID" in ref:
            frames.add(str(ref.FrameOfReferenceUID))
        for study in ref.get("RTReferencedStudySequence", []):
            for item in study.get("RTReferencedSeriesSequence", []):
                series.add(str(item.SeriesInstanceUID))
    return series, frames


def _dicom_scans(files: list[Path], root: Path) -> list[LabelledScan]:
    pet: dict[str, list[Path]] = {}
    frame_of: dict[str, str] = {}
    patient_of: dict[str, str] = {}
    others: set[str] = set()  # series of other image modalities (a CT that an RTSTRUCT was drawn on)
    label_files = []
    for path, ds in _dicom_headers(files):
        modality = str(ds.get("Modality", "")).upper()
        uid = str(ds.get("SeriesInstanceUID", ""))
        if modality in ("SEG", "RTSTRUCT"):
            label_files.append((path, *_references(ds)))
        elif modality == "PT":
            pet.setdefault(uid, []).append(path)
            frame_of.setdefault(uid, str(ds.get("FrameOfReferenceUID", "")))
            patient_of.setdefault(uid, str(ds.get("PatientID", "") or "").strip())
        elif "Rows" in ds:
            others.add(uid)
    labels_of: dict[str, list[Path]] = {uid: [] for uid in pet}
    for path, series, frames in label_files:
        match = [uid for uid in pet if uid in series]
        if not match and series & others:
            continue  # drawn on another modality's series (a CT): not a PET label
        if not match:  # its series is not here: the PET of the same frame of reference (a PET/CT's CT left out)
            match = [uid for uid in pet if frame_of[uid] and frame_of[uid] in frames]
        if len(match) != 1:
            what = "no PET series" if not match else f"{len(match)} PET series (by frame of reference)"
            raise InputError(path, f"this label references {what} under the training folder")
        labels_of[match[0]].append(path)
    scans = []
    for uid, paths in pet.items():
        folder = Path(os.path.commonpath([p.parent for p in paths]))
        if not labels_of[uid]:
            raise InputError(
                folder, "a PET series without a DICOM SEG or RTSTRUCT that references it: an unlabelled scan"
            )
        name = _relative(folder, root)
        group = patient_group(folder, root, "dicom", patient_of[uid])
        scans.append(LabelledScan(name, group, folder, tuple(sorted(labels_of[uid])), "dicom", uid))
    return scans


def find_labelled_scans(root: str | Path) -> list[LabelledScan]:
    """Every labelled PET scan under ``root`` (see the module docstring), sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "training folder not found" if not root.exists() else "is not a folder")
    files = _files(root)
    scans = _nifti_scans(files, root) + _dicom_scans(files, root)
    if not scans:
        raise InputError(root, f"no labelled PET scans found ({LAYOUTS})")
    names = [s.name for s in scans]
    if len(set(names)) != len(names):  # several PET series in one folder: tell them apart by series UID
        scans = [s if names.count(s.name) == 1 else _renamed(s, f"{s.name}#{s.series_uid}") for s in scans]
    return sorted(scans, key=lambda s: s.name)


def _renamed(scan: LabelledScan, name: str) -> LabelledScan:
    return LabelledScan(name, scan.group, scan.image, scan.labels, scan.kind, scan.series_uid)


def _segment_numbers(path: Path, wanted: Sequence[str] | None) -> list[int] | None:
    """The SEG's segment numbers named in ``wanted`` (None: all)."""
    if wanted is None:
        return None
    import pydicom

    names = {int(s.SegmentNumber): str(s.get("SegmentLabel", "")) for s in pydicom.dcmread(path).SegmentSequence}
    numbers = [n for n, label in names.items() if label in wanted]
    if not numbers:
        raise InputError(
            path, f"none of the segments {list(wanted)} in this DICOM SEG; it holds {sorted(names.values())}"
        )
    return numbers


def _dicom_label(path: Path, image: MedicalImage, wanted: Sequence[str] | None) -> np.ndarray:
    import pydicom

    modality = str(pydicom.dcmread(path, stop_before_pixels=True).get("Modality", "")).upper()
    if modality == "RTSTRUCT":
        available = list_rois(path)
        rois = available if wanted is None else [r for r in available if r in wanted]
        if not rois:
            raise InputError(path, f"none of the ROIs {list(wanted or [])} in this RTSTRUCT; it holds {available}")
        return np.logical_or.reduce([m.array > 0 for m in read_rtstruct(path, image, rois).values()])
    labels = read_dicom_seg(path, reference=image).array
    numbers = _segment_numbers(path, wanted)
    return labels > 0 if numbers is None else np.isin(labels, numbers)


def read_labelled_scan(scan: LabelledScan, roi_names: Sequence[str] | None = None) -> tuple[MedicalImage, np.ndarray]:
    """The scan in SUV and its lesion mask (boolean, on the image grid). ``roi_names``: the RTSTRUCT ROIs / SEG
    segments that are lesions (DICOM labels only; default all). Raises an InputError naming the file for a label
    off the image grid or one without any lesion."""
    image = read_image(scan.image, series_uid=scan.series_uid) if scan.kind == "dicom" else read_image(scan.image)
    image = to_suv(image)
    if scan.kind == "dicom":
        mask = np.logical_or.reduce([_dicom_label(p, image, roi_names) for p in scan.labels])
    else:
        mask = read_mask(scan.labels[0], reference=image).array > 0
    if not mask.any():
        which = f" (ROIs / segments {list(roi_names)})" if roi_names and scan.kind == "dicom" else ""
        raise InputError(scan.labels[0], f"the label holds no lesion{which}: every voxel is 0")
    return image, mask
