"""The lesion finder's evidence per axial slice, as numbers a slice classifier can use (issue 32, item 3).

:func:`~medfoundry.inference.lesions.find_lesions` runs on the whole volume (PET only: anatomy, the PERCIST
threshold, candidates, the shipped candidate classifier, delineation); per slice it gives

* ``finder_max_score``: the highest classifier score of any candidate touching the slice that the finder did not
  explain as physiological uptake (0 without one): a candidate the organ rule put in the brain, kidneys / ureters,
  bladder or heart, or the symmetry rule paired across the midline, adds nothing, however high its score (else
  every slice through a hot kidney carries a kidney-sized score into the slice classifier);
* ``finder_n_accepted``: how many accepted candidates (lesions) touch it;
* ``finder_log_mtv``: ``log(1 + mL)`` of accepted lesion volume on the slice (the delineated lesions' voxels on
  that slice times the voxel volume: the slice's share of the metabolic tumour volume).

:class:`FinderEvidence` is the feature source the whole-body slice builder and ``classify predict`` call; it keeps
one LiteMedSAM predictor for every volume and, with ``cache``, the numbers of a volume it has seen (by content).
Delineation is ``threshold`` by default: the slice numbers need where the lesion is, not the finest outline, and
the SAM outline would double the time per scan.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from medfoundry.data.pet_slices.features import FeatureSource, volume_key
from medfoundry.errors import MedfoundryWarning
from medfoundry.io import MedicalImage
from medfoundry.io.atomic import atomic_path

EVIDENCE_FEATURES = ("finder_max_score", "finder_n_accepted", "finder_log_mtv")
EVIDENCE_VERSION = 2  # 2: candidates explained as physiological uptake give no score


def slice_evidence(result, n_slices: int) -> np.ndarray:
    """``(n_slices, 3)`` float32 of :data:`EVIDENCE_FEATURES` from a :class:`LesionResult` (native grid)."""
    from medfoundry.inference.lesions.pipeline import explained_as_physiological

    out = np.zeros((n_slices, len(EVIDENCE_FEATURES)), np.float32)
    reasons = result.reasons or [""] * len(result.candidates)  # a result made without detection has none
    for cand, score, accepted, reason in zip(result.candidates, result.scores, result.accepted, reasons, strict=False):
        if explained_as_physiological(reason):
            continue
        zs = cand.bbox[0].start + np.nonzero(np.asarray(cand.mask).any(axis=(1, 2)))[0]
        out[zs, 0] = np.maximum(out[zs, 0], float(score))
        out[zs, 1] += float(bool(accepted))
    labels = np.asarray(result.labels.array) > 0
    voxel_ml = float(np.prod(result.suv.spacing_zyx)) / 1000.0
    out[:, 2] = np.log1p(labels.reshape(n_slices, -1).sum(axis=1) * voxel_ml)
    return out


class FinderEvidence(FeatureSource):
    """The lesion finder's per-slice evidence as a feature source (see the module docstring)."""

    names = EVIDENCE_FEATURES

    def __init__(self, cache: str | Path | None = None, delineation: str = "threshold", predictor=None) -> None:
        from medfoundry.modeling.lesion_classifier import load_lesion_classifier

        self.cache = None if cache is None else Path(cache)
        self.delineation = delineation
        self.predictor = predictor
        self.classifier = load_lesion_classifier()
        self.identity = {
            "finder": EVIDENCE_VERSION,
            "finder_delineation": delineation,
            "finder_classifier": self.classifier.version,
        }

    def _predictor(self):
        if self.predictor is None:
            from medfoundry.inference.predictor import LiteMedSAMPredictor

            self.predictor = LiteMedSAMPredictor()
        return self.predictor

    def __call__(self, suv: MedicalImage, kind: str) -> np.ndarray:
        from medfoundry.inference.lesions.pipeline import find_lesions

        path = None
        if self.cache is not None:
            path = self.cache / f"{volume_key(suv)[:24]}-{self.delineation}-v{EVIDENCE_VERSION}.npy"
            if path.is_file():
                return np.load(path)
        with warnings.catch_warnings():  # "anatomy: not in field of view ..." once per volume: not news here
            warnings.simplefilter("ignore", MedfoundryWarning)
            result = find_lesions(
                suv, delineation=self.delineation, predictor=self._predictor, classifier=self.classifier,
                progress=False,
            )  # fmt: skip
        values = slice_evidence(result, suv.array.shape[0])
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path, overwrite=True) as tmp, open(tmp, "wb") as handle:
                np.save(handle, values)
        return values
