"""Patient-wise train / val / test split."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medfoundry.data.pet_slices.config import SPLITS
from medfoundry.errors import InputError


def patient_split(
    patients: Sequence[str],
    fractions: Sequence[float] = (0.75, 0.15, 0.10),
    seed: int = 0,
    pinned: dict[str, str] | None = None,
) -> dict[str, str]:
    """Assign each distinct patient to train / val / test by a seeded shuffle; ``pinned`` forces some."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise InputError(None, f"split fractions must be three non-negative numbers, got {tuple(fractions)}")
    fr = np.array(fractions, dtype=float) / float(sum(fractions))
    unique = sorted(set(patients))
    pinned = dict(pinned or {})
    for pid, split in pinned.items():
        if split not in SPLITS:
            raise InputError(None, f"patient {pid}: unknown split {split!r}; use one of {SPLITS}")
        if pid not in unique:
            raise InputError(None, f"patient {pid} is pinned to {split} but is not among the cases")
    n = len(unique)
    want = {"test": int(round(fr[2] * n)), "val": int(round(fr[1] * n))}
    for name, f in (("test", fr[2]), ("val", fr[1])):  # at least one patient where a fraction asks for one
        if f > 0 and want[name] == 0 and n >= 3:
            want[name] = 1
    free = [p for p in unique if p not in pinned]
    order = np.random.default_rng(seed).permutation(len(free))
    assignment = dict(pinned)
    counts = {s: sum(1 for v in pinned.values() if v == s) for s in SPLITS}
    for idx in order:
        pid = free[idx]
        if counts["test"] < want["test"]:
            split = "test"
        elif counts["val"] < want["val"]:
            split = "val"
        else:
            split = "train"
        assignment[pid] = split
        counts[split] += 1
    return assignment
