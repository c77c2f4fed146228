"""Whether a slice dataset's splits can give a meaningful table: every split needs both classes, and in
whole-body mode every split needs normal anatomy (a whole-body scan), not only crop lesion slices.

A validation split with one class makes the threshold meaningless (``choose_threshold`` falls back to 0.5); a
test split with one class makes accuracy equal recall (or specificity) and leaves ROC-AUC / AP undefined.
``classify build`` refuses such splits unless told (``--allow-incomplete-splits``), ``classify compare`` refuses
to score them unless told (``--allow-one-class-splits``); when allowed, the problem is written into the table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from medfoundry.data.pet_slices.config import SPLITS
from medfoundry.errors import InputError


def split_counts(rows: Iterable[Mapping]) -> dict[str, dict[str, int]]:
    """Per split: slices, abnormal, normal and (whole-body mode) slices of whole-body scans."""
    counts = {s: {"slices": 0, "abnormal": 0, "normal": 0, "wholebody": 0} for s in SPLITS}
    for row in rows:
        c = counts.setdefault(str(row["split"]), {"slices": 0, "abnormal": 0, "normal": 0, "wholebody": 0})
        c["slices"] += 1
        c["abnormal" if int(row["label"]) else "normal"] += 1
        c["wholebody"] += int(row.get("source") == "wholebody")
    return counts


def split_problems(
    rows: Sequence[Mapping], wholebody: bool = False, splits: Sequence[str] = SPLITS, empty: bool = False
) -> list[str]:
    """One sentence per split of ``splits`` that cannot give a meaningful number (one class; no whole-body scan in
    whole-body mode; with ``empty``, no slice at all); empty when every split is usable."""
    problems = []
    counts = split_counts(rows)
    for split in splits:
        c = counts[split]
        if c["slices"] == 0:
            if empty:
                problems.append(f"the {split} split is empty")
            continue
        what = []
        if wholebody and c["wholebody"] == 0:
            what.append("no whole-body scan (no normal anatomy, only crop or inserted lesion slices)")
        if c["normal"] == 0:
            what.append("no normal slice")
        if c["abnormal"] == 0:
            what.append("no abnormal slice")
        if what:
            problems.append(
                f"the {split} split ({c['slices']} slices, {c['abnormal']} abnormal) has " + "; ".join(what)
            )
    return problems


BUILD_ADVICE = (
    "give every split whole-body scans of its own patients (`train_patients` / `val_patients` / `test_patients` "
    "pin patients), or split the scans by body region (`regions`)"
)


def check_build_splits(problems: list[str], allow: bool, path, advice: str = "") -> list[str]:
    """Raise one :class:`InputError` listing ``problems`` unless ``allow`` (then they are returned, to be recorded
    in ``dataset.json`` and printed)."""
    if problems and not allow:
        hint = f" ({advice})" if advice else ""
        raise InputError(
            path,
            "; ".join(problems) + f". A split like that gives no meaningful number{hint}; "
            "`allow_incomplete_splits` builds it anyway",
        )
    return problems
