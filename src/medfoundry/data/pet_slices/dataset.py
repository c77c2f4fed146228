"""Reading a slice dataset folder."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medfoundry.data.pet_slices.config import SliceConfig
from medfoundry.errors import InputError


class SliceDataset:
    """A built slice dataset, read from its folder without touching the source volumes."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        info_path = self.root / "dataset.json"
        if not info_path.is_file() or not (self.root / "manifest.csv").is_file():
            raise InputError(
                self.root,
                "not a slice dataset (dataset.json / manifest.csv missing); run 'medfoundry classify build' first",
            )
        self.info = json.loads(info_path.read_text())
        with (self.root / "manifest.csv").open(newline="") as handle:
            self.rows = list(csv.DictReader(handle))
        for row in self.rows:
            for key in ("row", "slice_index", "source_slice", "lesion_voxels", "label"):
                row[key] = int(row[key])
            for key in ("z_mm", "slice_max"):
                row[key] = float(row[key])
            if "weight" in row:  # whole-body mode: class-balancing sample weights
                row["weight"] = float(row["weight"])
        self._starts: dict[str, int] = {}
        for row in self.rows:
            self._starts.setdefault(row["case_id"], row["row"])
        self._cached: tuple[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def preprocessing_hash(self) -> str:
        """Identity of the stored pixels (preprocessing parameters + slice contents)."""
        return self.info["preprocessing_hash"]

    @property
    def config(self) -> SliceConfig:
        """The :class:`SliceConfig` the dataset was built with."""
        cfg = dict(self.info["config"])
        cfg["grid"] = tuple(cfg["grid"])
        if cfg.get("lesion_labels") is not None:
            cfg["lesion_labels"] = tuple(cfg["lesion_labels"])
        return SliceConfig(**cfg)

    @property
    def labels(self) -> np.ndarray:
        """0/1 label per row."""
        return np.array([r["label"] for r in self.rows], dtype=np.int64)

    @property
    def weights(self) -> np.ndarray | None:
        """Per-row sample weights (whole-body mode), or None when the manifest has none."""
        if not self.rows or "weight" not in self.rows[0]:
            return None
        return np.array([r["weight"] for r in self.rows], dtype=np.float64)

    @property
    def features(self) -> tuple[tuple[str, ...], np.ndarray, dict] | None:
        """``(names, values (n_rows, k) float32, identity)`` of ``features.npz`` (whole-body builds with a feature
        source), or None."""
        from medfoundry.data.pet_slices.features import read_features

        found = read_features(self.root)
        if found is not None and found[1].shape[0] != len(self.rows):
            raise InputError(self.root, f"features.npz has {found[1].shape[0]} rows, the manifest {len(self.rows)}")
        return found

    def split_rows(self, split: str) -> np.ndarray:
        """Row indices of one split."""
        return np.array([r["row"] for r in self.rows if r["split"] == split], dtype=np.int64)

    def case_images(self, case_id: str) -> np.ndarray:
        """All stored slices of one case, uint8 ``(n, size, size)``."""
        if self._cached is None or self._cached[0] != case_id:
            path = self.root / "slices" / f"{case_id}.npz"
            if not path.is_file():
                raise InputError(path, "slice file missing from the dataset; rebuild it")
            with np.load(path) as data:
                self._cached = (case_id, data["images"])
        return self._cached[1]

    def images(self, rows: Sequence[int]) -> np.ndarray:
        """Slices of the given manifest rows as float32 ``(n, size, size)`` in ``[0, 1]``."""
        out = []
        for idx in rows:
            row = self.rows[int(idx)]
            out.append(self.case_images(row["case_id"])[row["row"] - self._starts[row["case_id"]]])
        return np.stack(out).astype(np.float32) / 255.0
