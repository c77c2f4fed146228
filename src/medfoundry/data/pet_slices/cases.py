"""The case table (CSV) and its checks."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medfoundry.data.pet_slices.config import CaseSpec
from medfoundry.errors import InputError


def read_case_table(path: str | Path) -> list[CaseSpec]:
    """Cases from a CSV with columns ``case_id,image,mask[,patient_id][,suv_factor][,tracer]`` (paths relative to
    the CSV)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "case table not found")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        need = {"case_id", "image", "mask"}
        if reader.fieldnames is None or not need <= set(reader.fieldnames):
            raise InputError(path, f"case table needs the columns {sorted(need)} (+ optional patient_id)")
        cases = []
        for line, row in enumerate(reader, start=2):
            if not (row.get("case_id") or "").strip() or not (row.get("image") or "").strip():
                raise InputError(path, f"line {line}: case_id and image are required")
            mask = (row.get("mask") or "").strip()
            factor = (row.get("suv_factor") or "").strip()
            try:
                suv_factor = float(factor) if factor else None
            except ValueError:
                raise InputError(path, f"line {line}: suv_factor {factor!r} is not a number") from None
            if suv_factor is not None and not (np.isfinite(suv_factor) and suv_factor > 0):
                raise InputError(path, f"line {line}: suv_factor must be a positive number, got {factor}")
            cases.append(
                CaseSpec(
                    case_id=row["case_id"].strip(),
                    image=(path.parent / row["image"].strip()),
                    mask=(path.parent / mask) if mask else None,
                    patient_id=(row.get("patient_id") or "").strip(),
                    suv_factor=suv_factor,
                    tracer=(row.get("tracer") or "").strip(),
                )
            )
    if not cases:
        raise InputError(path, "the case table lists no cases")
    return cases


def _check_cases(cases: Sequence[CaseSpec]) -> None:
    seen: set[str] = set()
    for case in cases:
        if case.case_id in seen:
            raise InputError(case.image, f"case id {case.case_id!r} is listed twice")
        if not all(ch.isalnum() or ch in "-_." for ch in case.case_id):
            raise InputError(case.image, f"case id {case.case_id!r} may only hold letters, digits, '-', '_', '.'")
        if case.mask is None:
            raise InputError(case.image, f"case {case.case_id}: a lesion mask is needed to label the slices")
        for path in (case.image, case.mask):  # every file is there before any volume is sliced
            if not Path(path).exists():
                raise InputError(path, f"case {case.case_id}: no such file or folder")
        seen.add(case.case_id)


def keep_tracers(cases: Sequence[CaseSpec], tracers: Sequence[str]) -> list[CaseSpec]:
    """The cases whose tracer is one of ``tracers`` (case-insensitive); refused when none is left."""
    wanted = {t.upper() for t in tracers}
    kept = [c for c in cases if c.tracer.upper() in wanted]
    if not kept:
        found = sorted({c.tracer or "(unknown)" for c in cases})
        raise InputError(None, f"no case has tracer {sorted(wanted)}; the cases have {found}")
    return kept


def tracer_pins(cases: Sequence[CaseSpec], tracer: str, split: str = "test") -> dict[str, str]:
    """Every patient with a case of ``tracer`` pinned to ``split`` (e.g. train on FDG, test on PSMA)."""
    pins = {c.patient_id: split for c in cases if c.tracer.upper() == tracer.upper()}
    if not pins:
        raise InputError(None, f"no case has tracer {tracer!r} to put in the {split} split")
    return pins


def autopet_cases(root: str | Path, tracers: Sequence[str] | None = None) -> list[CaseSpec]:
    """The studies of an autoPET III tree (:mod:`medfoundry.data.autopet`) as cases: SUV image, SEG label, the
    patient (the folder above the study) and the tracer."""
    from medfoundry.data.autopet import autopet_studies

    return [CaseSpec(s.case_id, s.image, s.label, s.patient, tracer=s.tracer) for s in autopet_studies(root, tracers)]
