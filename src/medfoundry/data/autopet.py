"""An autoPET III tree as it is distributed, read as cases: per study a folder with ``SUV.nii.gz`` and ``SEG.nii.gz``
(``CTres.nii.gz`` beside them is noted, not read: everything here is PET-only), FDG and PSMA studies side by side.

The studies are found by :func:`medfoundry.data.lesion_scans.find_labelled_scans` (the lesion finder's reader of
labelled scan folders; its autoPET layout). Per study:

* **patient**: the folder above the study folder (autoPET: ``<patient>/<study date>/SUV.nii.gz``), so the studies
  of one patient always share a split; the study folder itself when it sits directly under the root;
* **tracer**: ``PSMA`` when a folder on the study's path names PSMA (``PSMA-PET-CT-Lesions``, ``PSMA_...``), ``FDG``
  when one names FDG or is an FDG patient folder (``FDG-PET-CT-Lesions``, ``PETCT_...``), else empty (unknown);
  kept as a manifest column, usable as a filter (``--tracers``) or a split (``--test-tracer``);
* **case id**: the study's path under the root with every character other than letters, digits, ``-``, ``_`` and
  ``.`` replaced by ``_`` (autoPET's date folders hold spaces), made unique.

Negative studies (``SEG.nii.gz`` all zero: autoPET's 513 lesion-free FDG controls) are kept: they are the normal
slices a slice classifier needs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from medfoundry.errors import InputError

TRACER_PATTERNS = (("PSMA", re.compile(r"psma", re.I)), ("FDG", re.compile(r"fdg|^petct", re.I)))


@dataclass(frozen=True)
class Study:
    """One autoPET study: SUV image, lesion label, optional CT (not read), its patient and tracer."""

    case_id: str
    name: str  # the study folder's path under the root
    patient: str
    tracer: str
    image: Path
    label: Path
    ct: Path | None = None


def tracer_of(parts: Sequence[str]) -> str:
    """``PSMA``, ``FDG`` or ``""`` from the folder names on a study's path (the first that says)."""
    for tracer, pattern in TRACER_PATTERNS:
        if any(pattern.search(p) for p in parts):
            return tracer
    return ""


def safe_case_id(name: str) -> str:
    """``name`` with characters unsafe in file names replaced by ``_`` (runs collapsed)."""
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_.\-]", "_", name)).strip("_") or "study"


def autopet_studies(root: str | Path, tracers: Sequence[str] | None = None) -> list[Study]:
    """Every autoPET study under ``root`` (optionally only some tracers), sorted by name; one
    :class:`InputError` when there is none, or when none has a wanted tracer."""
    from medfoundry.data.lesion_scans import find_labelled_scans

    root = Path(root)
    scans = [s for s in find_labelled_scans(root) if s.kind == "autopet"]
    if not scans:
        raise InputError(root, "no autoPET study (a folder with SUV.nii.gz and SEG.nii.gz) under this folder")
    studies, used = [], set()
    for scan in scans:
        parts = Path(scan.name).parts
        patient = parts[-2] if len(parts) > 1 else parts[-1]
        case_id = base = safe_case_id(scan.name)
        k = 1
        while case_id in used:
            k += 1
            case_id = f"{base}_{k}"
        used.add(case_id)
        ct = scan.image.with_name("CTres.nii.gz")
        studies.append(Study(case_id, scan.name, patient, tracer_of(parts), scan.image, scan.labels[0],
                             ct if ct.is_file() else None))  # fmt: skip
    if tracers:
        wanted = {t.upper() for t in tracers}
        kept = [s for s in studies if s.tracer in wanted]
        if not kept:
            found = sorted({s.tracer or "(unknown)" for s in studies})
            raise InputError(root, f"no autoPET study of tracer {sorted(wanted)}; the tree holds {found}")
        studies = kept
    return studies
