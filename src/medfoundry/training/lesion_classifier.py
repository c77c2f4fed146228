"""Training of the physiological-uptake-vs-lesion classifier shipped in ``modeling/weights``.

Training set (all from ``shared/data``), candidates found exactly as the pipeline finds them:

* whole-body ``pet-wholebody/STS_001``: every candidate that does not touch the GTV_Mass is a negative (brain,
  heart, bladder, kidneys, ureters, bowel ...); candidates that touch the tumour are left out, so the whole-body
  tumour stays a held-out positive;
* PET crops ``pet-sts/STS_002..STS_020``: candidates with >= 50 % of their voxels in the GTV are positives,
  candidates outside the GTV negatives, the rest (partly inside) left out;
* crops STS_021..STS_030 are never used here: they are the test set of ``bench/lesions_wholebody.py``.

Model: standardised features -> logistic regression (L2, class-balanced), fitted with scikit-learn and exported to
the numpy :class:`~medfoundry.modeling.lesion_classifier.LesionClassifier` (JSON).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from medfoundry.inference.lesions.candidates import find_candidates
from medfoundry.inference.lesions.features import EMBED_DIM, HANDCRAFTED, candidate_features
from medfoundry.inference.lesions.pipeline import DEFAULT_MIN_VOLUME_ML, to_suv
from medfoundry.inference.lesions.threshold import adaptive_threshold
from medfoundry.io import MedicalImage, read_image, read_mask
from medfoundry.modeling.lesion_classifier import LesionClassifier

TRAIN_CROPS = tuple(range(2, 21))
TEST_CROPS = tuple(range(21, 31))
POSITIVE_OVERLAP = 0.5
C_REGULARISATION = 0.05
EXTRA_THRESHOLDS = (2.5, 5.0)  # candidate thresholds besides the adaptive one (augmentation)
FEATURE_NAMES = list(HANDCRAFTED) + [f"embedding_{i}" for i in range(EMBED_DIM)]


@dataclass
class TrainingSet:
    """Features (N, F), labels (N,) 1 lesion / 0 not, and the case each row comes from."""

    features: np.ndarray
    labels: np.ndarray
    cases: list[str]


def labelled_candidates(
    image: MedicalImage, mask: np.ndarray, predictor, positives: bool, threshold: float | None = None
):
    """Features and labels of one scan's candidates against its tumour ``mask`` (at the adaptive threshold,
    or ``threshold``); with ``positives=False`` candidates touching the tumour are dropped (negatives only)."""
    suv_image = to_suv(image)
    suv, spacing = suv_image.array, suv_image.spacing_zyx
    info = adaptive_threshold(suv, spacing, threshold)
    cands = find_candidates(suv, spacing, info.threshold, DEFAULT_MIN_VOLUME_ML)
    keep, labels = [], []
    for c in cands:
        inside = float(mask[c.bbox][c.mask].mean())
        if inside == 0.0:
            keep.append(c)
            labels.append(0)
        elif positives and inside >= POSITIVE_OVERLAP:
            keep.append(c)
            labels.append(1)
    if not keep:
        return np.zeros((0, len(FEATURE_NAMES))), np.zeros(0, dtype=int)
    return candidate_features(keep, suv, spacing, info.threshold, predictor), np.asarray(labels)


def build_training_set(
    data_root: str | Path, predictor, progress: bool = True, thresholds: tuple = EXTRA_THRESHOLDS
) -> TrainingSet:
    """The training set described in the module docstring; candidates are taken at the adaptive threshold and
    again at each of ``thresholds`` (SUV), so that the model also sees the regions a ``--threshold`` gives."""
    root = Path(data_root)
    wb = root / "pet-wholebody" / "STS_001" / "nifti"
    jobs = [("wholebody-STS_001", wb / "STS_001_FDG_PET_image.nii.gz", wb / "STS_001_FDG_PET_mask_GTV_Mass.nii.gz")]
    jobs += [
        (
            f"crop-STS_{i:03d}",
            root / "pet-sts" / f"STS_{i:03d}" / "PET_image.nii.gz",
            root / "pet-sts" / f"STS_{i:03d}" / "PET_mask.nii.gz",
        )
        for i in TRAIN_CROPS
    ]
    feats, labels, cases = [], [], []
    for case, image_path, mask_path in tqdm(jobs, desc="training scans", unit="scan", disable=not progress):
        image = read_image(image_path)
        if case.startswith("wholebody"):  # the NIfTI is Bq/mL; the same factor as the DICOM header gives
            import json

            factor = json.loads((root / "pet-wholebody" / "STS_001" / "suv_info.json").read_text())["SUVbw_factor"]
            image = image.with_array(image.array.astype(np.float32) * np.float32(factor))
        mask = read_mask(mask_path, reference=image).array > 0
        for thr in (None, *thresholds):
            x, y = labelled_candidates(image, mask, predictor, not case.startswith("wholebody"), thr)
            feats.append(x)
            labels.append(y)
            cases += [case] * len(y)
    return TrainingSet(np.concatenate(feats), np.concatenate(labels), cases)


def fit(train: TrainingSet, seed: int = 0) -> tuple[LesionClassifier, dict]:
    """Fit the classifier on all rows and report 5-fold stratified cross-validated scores (seeded)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def model():
        return make_pipeline(
            StandardScaler(),
            LogisticRegression(C=C_REGULARISATION, class_weight="balanced", max_iter=5000, random_state=seed),
        )

    x, y = train.features, train.labels
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    prob = cross_val_predict(model(), x, y, cv=folds, method="predict_proba")[:, 1]
    pred = prob >= 0.5
    cv = {
        "n_positive": int(y.sum()),
        "n_negative": int((y == 0).sum()),
        "cv_auc": round(float(roc_auc_score(y, prob)), 4),
        "cv_sensitivity": round(float(pred[y == 1].mean()), 4),
        "cv_specificity": round(float((~pred[y == 0]).mean()), 4),
    }
    fitted = model().fit(x, y)
    scaler, logreg = fitted[0], fitted[1]
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    clf = LesionClassifier(
        feature_names=FEATURE_NAMES,
        mean=scaler.mean_.astype(np.float64),
        scale=scale.astype(np.float64),
        coef=logreg.coef_[0].astype(np.float64),
        intercept=float(logreg.intercept_[0]),
        threshold=0.5,
        version="1",
        info={
            "trained_on": "negatives: all non-tumour candidates of whole-body STS_001 (its tumour left out); "
            "positives/negatives: candidates of PET crops STS_002..STS_020",
            "held_out": "whole-body STS_001 tumour; crops STS_021..STS_030",
            "seed": seed,
            "C": C_REGULARISATION,
            **cv,
        },
    )
    return clf, cv
