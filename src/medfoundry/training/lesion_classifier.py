"""Training of the physiological-uptake-vs-lesion classifier shipped in ``modeling/weights``.

Training set (all from ``shared/data``), candidates found exactly as the pipeline finds them:

* whole-body ``pet-wholebody/STS_001``: every candidate that does not touch the GTV_Mass is a negative (brain,
  heart, bladder, kidneys, ureters, bowel ...); candidates that touch the tumour are left out, so the whole-body
  tumour stays a held-out positive;
* PET crops ``pet-sts/STS_002..STS_020``: candidates with >= 50 % of their voxels in the GTV are positives,
  candidates outside the GTV negatives, the rest (partly inside) left out;
* inserted lesions (:mod:`medfoundry.data.insertion`): copies of the whole-body scan with 3-6 lesions of the
  training crops STS_002..STS_020 inserted (1-60 mL, 0.5-1 x their excess uptake, seeds from
  :data:`INSERT_SEED`), so that the model sees node- and metastasis-sized lesions in whole-body anatomy, not only
  large sarcomas in crops; candidates with >= 50 % of their voxels in an inserted lesion are positives (the
  scan's other candidates are the whole-body negatives again and are not repeated);
* crops STS_021..STS_030 are never used here: they are the test set of ``bench/lesions_wholebody.py`` (also the
  templates of its inserted-lesion scans, seeds 0..N-1).

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
VERSION = "2"
INSERTED_SCANS = 20  # whole-body copies with inserted training lesions
INSERT_SEED = 1000  # their seeds are INSERT_SEED + 0..INSERTED_SCANS-1 (the bench's test scans use 0..N-1)
INSERT_LESIONS_PER_SCAN = (3, 6)
FEATURE_NAMES = list(HANDCRAFTED) + [f"embedding_{i}" for i in range(EMBED_DIM)]


@dataclass
class TrainingSet:
    """Features (N, F), labels (N,) 1 lesion / 0 not, and the case each row comes from."""

    features: np.ndarray
    labels: np.ndarray
    cases: list[str]


def labelled_candidates(
    image: MedicalImage,
    mask: np.ndarray,
    predictor,
    positives: bool,
    threshold: float | None = None,
    negatives: bool = True,
):
    """Features and labels of one scan's candidates against its tumour ``mask`` (at the adaptive threshold,
    or ``threshold``); with ``positives=False`` candidates touching the tumour are dropped (negatives only), with
    ``negatives=False`` candidates outside it are dropped (positives only)."""
    suv_image = to_suv(image)
    suv, spacing = suv_image.array, suv_image.spacing_zyx
    info = adaptive_threshold(suv, spacing, threshold)
    cands = find_candidates(suv, spacing, info.threshold, DEFAULT_MIN_VOLUME_ML)
    keep, labels = [], []
    for c in cands:
        inside = float(mask[c.bbox][c.mask].mean())
        if inside == 0.0 and negatives:
            keep.append(c)
            labels.append(0)
        elif positives and inside >= POSITIVE_OVERLAP:
            keep.append(c)
            labels.append(1)
    if not keep:
        return np.zeros((0, len(FEATURE_NAMES))), np.zeros(0, dtype=int)
    return candidate_features(keep, suv, spacing, info.threshold, predictor), np.asarray(labels)


def inserted_scans(
    background: MedicalImage, own: np.ndarray, templates: list, n: int, seed: int = INSERT_SEED
) -> list[tuple[str, MedicalImage, np.ndarray]]:
    """``n`` copies of ``background`` (SUV) with 3-6 ``templates`` inserted each (seeds ``seed + i``), away from
    its own lesions ``own``: ``(name, image, inserted mask)``."""
    from medfoundry.data.insertion import InsertionConfig, insert_lesions, placement_map

    if n <= 0 or not templates:
        return []
    config = InsertionConfig(lesions_per_scan=INSERT_LESIONS_PER_SCAN)
    pmap = placement_map(background.array, background.spacing_zyx, own)
    out = []
    for i in range(n):
        res = insert_lesions(background, templates, seed=seed + i, config=config, own_label=own, pmap=pmap)
        out.append((f"inserted-{seed + i}", res.image, res.inserted))
    return out


def build_training_set(
    data_root: str | Path,
    predictor,
    progress: bool = True,
    thresholds: tuple = EXTRA_THRESHOLDS,
    inserted: int = INSERTED_SCANS,
) -> TrainingSet:
    """The training set described in the module docstring; candidates are taken at the adaptive threshold and
    again at each of ``thresholds`` (SUV), so that the model also sees the regions a ``--threshold`` gives;
    ``inserted`` whole-body copies with inserted training lesions add positives (0: none)."""
    from medfoundry.data.insertion import extract_lesions

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

    def add(case: str, image: MedicalImage, mask: np.ndarray, positives: bool, negatives: bool = True) -> None:
        for thr in (None, *thresholds):
            x, y = labelled_candidates(image, mask, predictor, positives, thr, negatives)
            feats.append(x)
            labels.append(y)
            cases.extend([case] * len(y))

    templates, wholebody = [], None
    for case, image_path, mask_path in tqdm(jobs, desc="training scans", unit="scan", disable=not progress):
        image = read_image(image_path)
        if case.startswith("wholebody"):  # the NIfTI is Bq/mL; the same factor as the DICOM header gives
            import json

            factor = json.loads((root / "pet-wholebody" / "STS_001" / "suv_info.json").read_text())["SUVbw_factor"]
            image = image.with_array(image.array.astype(np.float32) * np.float32(factor))
        mask_image = read_mask(mask_path, reference=image)
        mask = mask_image.array > 0
        if case.startswith("wholebody"):
            wholebody = (image, mask)
        else:
            templates += extract_lesions(image, mask_image, source=case)
        add(case, image, mask, not case.startswith("wholebody"))
    if wholebody is not None:
        scans = inserted_scans(to_suv(wholebody[0]), wholebody[1], templates, inserted)
        for case, image, mask in tqdm(scans, desc="inserted scans", unit="scan", disable=not progress):
            add(case, image, mask, positives=True, negatives=False)
    return TrainingSet(np.concatenate(feats), np.concatenate(labels), cases)


def fit(train: TrainingSet, seed: int = 0) -> tuple[LesionClassifier, dict]:
    """Fit the classifier on all rows and report 5-fold cross-validated scores (seeded), folds split by case
    (every row of one scan, at every threshold, in the same fold) so that no scan is scored by a model that saw it.
    Whole-body negatives are one case: the fold that holds them is scored by a model that saw no whole-body
    negative, which makes the specificity pessimistic rather than optimistic. The acceptance cut is the one that
    maximises Youden's J (sensitivity + specificity - 1) on these cross-validated scores."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def model():
        return make_pipeline(
            StandardScaler(),
            LogisticRegression(C=C_REGULARISATION, class_weight="balanced", max_iter=5000, random_state=seed),
        )

    x, y = train.features, train.labels
    folds = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed)
    prob = cross_val_predict(model(), x, y, groups=np.asarray(train.cases), cv=folds, method="predict_proba")[:, 1]
    from sklearn.metrics import roc_curve

    fpr, tpr, cuts = roc_curve(y, prob)
    best = int(np.argmax(tpr - fpr))  # Youden's J on the cross-validated scores: the cut, from training data only
    cut = float(min(max(cuts[best], 0.05), 0.95))
    pred = prob >= cut
    cv = {
        "cut": round(cut, 4),
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
        threshold=round(cut, 4),
        version=VERSION,
        info={
            "trained_on": "negatives: all non-tumour candidates of whole-body STS_001 (its tumour left out); "
            "positives/negatives: candidates of PET crops STS_002..STS_020; positives: lesions of those crops "
            f"inserted into STS_001 (seeds {INSERT_SEED}+, 3-6 per scan, 1-60 mL)",
            "held_out": "whole-body STS_001 tumour; crops STS_021..STS_030",
            "seed": seed,
            "C": C_REGULARISATION,
            **cv,
        },
    )
    return clf, cv
