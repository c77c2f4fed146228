"""Numbers per slice stored next to the pixels (``features.npz``): what a head may use beside a frozen embedding.

A *feature source* is called once per volume the whole-body builder reads (whole-body scan, inserted-lesion
scan, crop) with the volume in SUV and returns one row per native axial slice; the builder keeps the rows of
the slices it stores. Sources live where their computation lives: :class:`AnatomyFeatures` here (PET-only
anatomy), the lesion finder's evidence in :mod:`medfoundry.inference.slice_evidence`. ``classify predict``
computes the same numbers on a new scan from the names and identities stored in the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medfoundry.data.pet_slices.anatomy_features import ANATOMY_FEATURES, ANATOMY_VERSION, anatomy_slice_features
from medfoundry.errors import InputError
from medfoundry.io import MedicalImage
from medfoundry.io.atomic import atomic_path

FEATURES_FILE = "features.npz"


class FeatureSource:
    """One kind of per-slice numbers: ``names`` (columns), ``identity`` (what must match between training and
    prediction) and ``__call__(suv, kind) -> (nz, len(names))`` float32 for an SUV volume of ``kind``
    (``wholebody``, ``inserted``, ``crop`` or ``scan``)."""

    names: tuple[str, ...] = ()
    identity: dict = {}

    def __call__(self, suv: MedicalImage, kind: str) -> np.ndarray:
        raise NotImplementedError


class AnatomyFeatures(FeatureSource):
    """:func:`~medfoundry.data.pet_slices.anatomy_features.anatomy_slice_features` as a feature source; a volume
    seen before (the same whole-body scan in another build of one process) is not computed again."""

    names = ANATOMY_FEATURES
    identity = {"anatomy": ANATOMY_VERSION}

    def __init__(self) -> None:
        self._seen: dict[str, np.ndarray] = {}

    def __call__(self, suv: MedicalImage, kind: str) -> np.ndarray:
        key = volume_key(suv)
        if key not in self._seen:
            values = anatomy_slice_features(suv.array, suv.spacing_zyx, suv.direction)
            self._seen[key] = np.stack([values[n] for n in self.names], axis=1).astype(np.float32)
        return self._seen[key]


def volume_key(image: MedicalImage) -> str:
    """A content key of a volume (voxels, spacing, direction): equal keys, equal features."""
    import hashlib

    digest = hashlib.sha1(np.ascontiguousarray(image.array).tobytes())
    digest.update(repr((tuple(image.array.shape), tuple(image.spacing), tuple(image.direction or ()))).encode())
    return digest.hexdigest()


class CombinedFeatures(FeatureSource):
    """Several sources side by side (columns in the order given)."""

    def __init__(self, sources: Sequence[FeatureSource]) -> None:
        self.sources = list(sources)
        self.names = tuple(n for s in self.sources for n in s.names)
        if len(set(self.names)) != len(self.names):
            raise InputError(None, f"feature sources repeat a column name: {self.names}")
        self.identity = {k: v for s in self.sources for k, v in s.identity.items()}

    def __call__(self, suv: MedicalImage, kind: str) -> np.ndarray:
        parts = [s(suv, kind) for s in self.sources]
        return np.concatenate(parts, axis=1) if parts else np.zeros((suv.array.shape[0], 0), np.float32)


def write_features(folder: Path, names: Sequence[str], values: np.ndarray, identity: dict) -> None:
    """``folder/features.npz``: column names, one float32 row per manifest row, and the sources' identity."""
    import json

    with atomic_path(Path(folder) / FEATURES_FILE, overwrite=True) as tmp, open(tmp, "wb") as handle:
        np.savez(
            handle,
            names=np.array(list(names), dtype="U64"),
            values=np.asarray(values, np.float32),
            identity=np.array(json.dumps(identity, sort_keys=True)),
        )


def read_features(folder: Path) -> tuple[tuple[str, ...], np.ndarray, dict] | None:
    """``(names, values, identity)`` of ``folder/features.npz``, or None when the dataset has none."""
    import json

    path = Path(folder) / FEATURES_FILE
    if not path.is_file():
        return None
    with np.load(path) as data:
        return tuple(str(n) for n in data["names"]), data["values"], json.loads(str(data["identity"]))
