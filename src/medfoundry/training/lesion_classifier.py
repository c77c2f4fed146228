"""Training of the physiological-uptake-vs-lesion classifier: ``medfoundry lesions train DATA --out model.json``.

The training set is built from a folder of labelled PET scans (:mod:`medfoundry.data.lesion_scans`), candidates
found exactly as the pipeline finds them, at the scan's adaptive threshold and again at each of ``thresholds``
(so that the model also sees the regions a ``--threshold`` gives):

* every scan: candidates with >= ``POSITIVE_OVERLAP`` of their voxels in the lesion label are positives,
  candidates that do not touch it negatives (those in the brain, kidneys, bladder, heart and every other organ
  included: they teach the anatomy features), the rest (partly inside) left out;
* ``scanner_copies`` copies (default :data:`SCANNER_COPIES`) of every whole-body / torso scan as another scanner
  would show it (:func:`medfoundry.data.scanner_variation.scanner_copy`: voxels 2-5 mm, resolution 5-9 mm FWHM,
  noise, SUV scale 0.8-1.25; seeds ``scanner_seed + k``), labelled like the scan (same patient group);
* ``negatives_only`` scans: only their negatives (candidates touching the label are dropped), e.g. to keep a
  scan's lesion held out for testing while its normal anatomy trains the model;
* ``inserted`` copies (:mod:`medfoundry.data.insertion`) of the scans that show a whole body section (whole-body
  or torso scans, not crops cut around a tumour, as the anatomy's body outline tells them apart), each with 3-6
  lesions of the other scans inserted (1-60 mL, 0.5-1 x their excess uptake, blurred to the background's
  resolution with ``InsertionConfig.resolution_fwhm_mm``, seeds ``insert_seed + k``), away
  from the scan's own lesions; candidates with >= ``POSITIVE_OVERLAP`` of their voxels in an inserted lesion are
  positives (the copy's other candidates are the scan's negatives again and are not repeated). Templates come
  from every scan but the ``negatives_only`` ones.

Features (:func:`~medfoundry.inference.lesions.features.feature_names`): feature set v3, the handcrafted shape /
uptake features, the anatomy features (``anatomy=True``; NaN where an organ is out of view, imputed with the
column mean, which the model stores as its ``mean``) and the LiteMedSAM embedding (``embedding=True``).

Model: standardised features -> logistic regression (L2, class-balanced), fitted with scikit-learn and exported to
the numpy :class:`~medfoundry.modeling.lesion_classifier.LesionClassifier` (JSON). Cross-validation folds are split
by patient group (every row of a patient's scans, at every threshold, in one fold); each inserted copy is a group
of its own (it holds only inserted positives). The acceptance cut maximises Youden's J on the cross-validated
scores.

The shipped model (``modeling/weights``) is made by ``bench/train_lesion_classifier.py``, which lays out the
shared data as such a folder and runs ``medfoundry lesions train`` on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from medfoundry.data.lesion_scans import LabelledScan, find_labelled_scans, names_scan, read_labelled_scan
from medfoundry.errors import InputError
from medfoundry.inference.lesions.candidates import find_candidates
from medfoundry.inference.lesions.features import candidate_features, feature_names
from medfoundry.inference.lesions.pipeline import DEFAULT_MIN_VOLUME_ML, to_suv
from medfoundry.inference.lesions.threshold import adaptive_threshold
from medfoundry.io import MedicalImage
from medfoundry.modeling.lesion_classifier import LesionClassifier

POSITIVE_OVERLAP = 0.5
C_REGULARISATION = 0.05
EXTRA_THRESHOLDS = (2.5, 5.0)  # candidate thresholds besides the adaptive one (augmentation)
VERSION = "3"  # feature set v3: handcrafted + anatomy (+ embedding)
INSERT_SEED = 1000  # inserted copies use seeds INSERT_SEED + 0..N-1 (the bench's test scans use 0..N-1)
INSERT_LESIONS_PER_SCAN = (3, 6)
SCANNER_COPIES = 2  # copies of each whole-body / torso scan as other scanners would show it
SCANNER_SEED = 2000
FOLDS = 5
FEATURE_NAMES = feature_names()


@dataclass
class TrainingConfig:
    """What ``lesions train`` does besides reading the scans (see the module docstring)."""

    thresholds: tuple[float, ...] = EXTRA_THRESHOLDS
    inserted: int = 0
    insert_seed: int = INSERT_SEED
    negatives_only: tuple[str, ...] = ()
    roi_names: tuple[str, ...] | None = None
    embedding: bool = True
    anatomy: bool = True
    scanner_copies: int = SCANNER_COPIES
    scanner_seed: int = SCANNER_SEED
    seed: int = 0
    C: float = C_REGULARISATION
    folds: int = FOLDS


@dataclass
class TrainingSet:
    """Features (N, F), labels (N,) 1 lesion / 0 not, the case each row comes from and its cross-validation group."""

    features: np.ndarray
    labels: np.ndarray
    cases: list[str]
    groups: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.groups:
            self.groups = list(self.cases)


@dataclass
class TrainResult:
    """The fitted classifier, the cross-validation summary (``None`` when there were too few scans) and one
    row per case: rows, positives, negatives, and the cross-validated sensitivity / specificity at the cut."""

    classifier: LesionClassifier
    cv: dict | None
    per_case: list[dict]
    scans: list[LabelledScan]


def labelled_candidates(
    image: MedicalImage,
    mask: np.ndarray,
    predictor,
    positives: bool,
    threshold: float | None = None,
    negatives: bool = True,
    anatomy=None,
    use_anatomy: bool = False,
):
    """Features and labels of one scan's candidates against its lesion ``mask``, found as the finder finds them
    (:func:`~medfoundry.inference.lesions.pipeline.detect`: on the detection grid, at the adaptive threshold with
    the anatomy's liver as fallback, or at ``threshold``; judged on the native grid); with ``positives=False``
    candidates touching the lesions are dropped (negatives only), with ``negatives=False`` candidates outside them
    are dropped (positives only). ``predictor=None``: no embedding features; ``use_anatomy``: the anatomy features
    (of ``anatomy``, the scan's :func:`~medfoundry.preprocessing.anatomy.find_anatomy`; NaN where it is None).
    Candidates inside the brain, urinary tract or heart are kept as negatives like any other."""
    from medfoundry.inference.lesions.anatomy_features import anatomy_features, liver_suv_mean
    from medfoundry.inference.lesions.detection_grid import detection_grid, to_native
    from medfoundry.inference.lesions.pipeline import liver_on_grid

    suv_image = to_suv(image)
    suv, spacing = suv_image.array, suv_image.spacing_zyx
    grid = detection_grid(suv, spacing)
    info = adaptive_threshold(grid.suv, grid.spacing_zyx, threshold, liver=liver_on_grid(grid, anatomy))
    cands = find_candidates(grid.suv, grid.spacing_zyx, info.threshold, DEFAULT_MIN_VOLUME_ML)
    native = to_native(cands, grid, suv, info.threshold)
    keep, labels = [], []
    for i, c in enumerate(native):
        inside = float(mask[c.bbox][c.mask].mean())
        if inside == 0.0 and negatives:
            keep.append(i)
            labels.append(0)
        elif positives and inside >= POSITIVE_OVERLAP:
            keep.append(i)
            labels.append(1)
    names = feature_names(predictor is not None, use_anatomy)
    if not keep:
        return np.zeros((0, len(names))), np.zeros(0, dtype=int)
    rows = None
    if use_anatomy:
        rows = anatomy_features([native[i] for i in keep], suv, anatomy, liver_suv_mean(suv, spacing, anatomy))
    x = candidate_features([cands[i] for i in keep], grid.suv, grid.spacing_zyx, info.threshold, predictor, names,
                           rows)  # fmt: skip
    return x, np.asarray(labels)


def inserted_scans(
    background: MedicalImage, own: np.ndarray, templates: list, n: int, seed: int = INSERT_SEED
) -> list[tuple[str, MedicalImage, np.ndarray]]:
    """``n`` copies of ``background`` (SUV) with 3-6 ``templates`` inserted each (seeds ``seed + i``), away from
    its own lesions ``own``: ``(name, image, inserted mask)``."""
    from medfoundry.data.insertion import placement_map

    if n <= 0 or not templates:
        return []
    pmap = placement_map(background.array, background.spacing_zyx, own)
    return [inserted_scan(background, own, templates, seed + i, pmap) for i in range(n)]


def inserted_scan(background: MedicalImage, own: np.ndarray, templates: list, seed: int, pmap=None):
    """One copy of ``background`` with 3-6 ``templates`` inserted (``seed``): ``(name, image, inserted mask)``."""
    from medfoundry.data.insertion import CLINICAL_FWHM_MM, InsertionConfig, insert_lesions, placement_map

    # blurred to the background's resolution: a shrunk template would otherwise have edges sharper than PET images
    config = InsertionConfig(lesions_per_scan=INSERT_LESIONS_PER_SCAN, resolution_fwhm_mm=CLINICAL_FWHM_MM)
    if pmap is None:
        pmap = placement_map(background.array, background.spacing_zyx, own)
    res = insert_lesions(background, templates, seed=seed, config=config, own_label=own, pmap=pmap)
    return f"inserted-{seed}", res.image, res.inserted


def shows_body_section(image: MedicalImage) -> bool:
    """Whether lesions can be inserted into this scan (SUV): it shows a section of a whole body (a whole-body or
    torso scan), not a crop cut around a tumour, by the anatomy's body outline
    (:func:`medfoundry.preprocessing.anatomy.body.find_body`)."""
    from medfoundry.preprocessing.anatomy.body import find_body
    from medfoundry.preprocessing.anatomy.grid import work_grid

    body = find_body(work_grid(image.array, image.spacing_zyx, image.direction))
    return bool(body.found and not body.crop)


def check_negatives_only(scans: Sequence[LabelledScan], names: Sequence[str]) -> None:
    """Every name of ``--negatives-only`` must be a scan's name or group."""
    unknown = [n for n in names if not any(names_scan(s, n) for s in scans)]
    if unknown:
        listing = ", ".join(sorted({s.name for s in scans})[:8])
        raise InputError("`negatives_only`", f"no scan named {', '.join(unknown)} (scans: {listing}...)")


def build_training_set(
    scans: Sequence[LabelledScan], predictor, config: TrainingConfig = TrainingConfig(), progress: bool = True
) -> TrainingSet:
    """The training set of the module docstring from ``scans`` (``predictor``: LiteMedSAM for the embedding
    features, None for handcrafted ones only)."""
    from medfoundry.data.insertion import extract_lesions

    feats, labels, cases, groups = [], [], [], []

    def add(case: str, group: str, image: MedicalImage, mask: np.ndarray, positives: bool, negatives: bool) -> None:
        anatomy = None
        if config.anatomy:
            from medfoundry.preprocessing.anatomy import find_anatomy

            anatomy = find_anatomy(image.array, image.spacing_zyx, image.direction)
        for thr in (None, *config.thresholds):
            x, y = labelled_candidates(image, mask, predictor, positives, thr, negatives, anatomy, config.anatomy)
            feats.append(x)
            labels.append(y)
            cases.extend([case] * len(y))
            groups.extend([group] * len(y))

    held = set(config.negatives_only)
    templates, backgrounds = [], []
    for scan in tqdm(scans, desc="training scans", unit="scan", disable=not progress):
        image, mask = read_labelled_scan(scan, config.roi_names)
        negatives_only = any(names_scan(scan, n) for n in held)
        add(scan.name, scan.group, image, mask, positives=not negatives_only, negatives=True)
        if config.inserted and not negatives_only:
            templates += extract_lesions(image, image.with_array(mask.astype(np.uint8)), source=scan.name)
        if (config.inserted or config.scanner_copies) and shows_body_section(image):
            backgrounds.append(scan)
            add_scanner_copies(scan, image, mask, not negatives_only, config, add)
    if config.inserted:
        if not backgrounds or not templates:
            what = "no scan shows a whole body section to insert into" if not backgrounds else "no lesion to insert"
            raise InputError("`inserted`", what)
        add_inserted(backgrounds, templates, config, add, progress)
    width = len(feature_names(predictor is not None, config.anatomy))
    x = np.concatenate(feats) if feats else np.zeros((0, width))
    y = np.concatenate(labels) if labels else np.zeros(0, dtype=int)
    return TrainingSet(x, y, cases, groups)


def add_scanner_copies(
    scan: LabelledScan, image: MedicalImage, mask: np.ndarray, positives: bool, config: TrainingConfig, add
) -> None:
    """``config.scanner_copies`` copies of a whole-body / torso scan as other scanners would show it
    (:func:`medfoundry.data.scanner_variation.scanner_copy`, seeds ``scanner_seed + k``): the same patient (its
    group), its candidates labelled against the copied label like the scan's own (negatives only when the scan is)."""
    from medfoundry.data.scanner_variation import scanner_copy

    for k in range(config.scanner_copies):
        copy = scanner_copy(image, [mask], config.scanner_seed + k)
        add(f"{scan.name} scanner-{config.scanner_seed + k}", scan.group, copy.image, copy.masks[0], positives, True)


def add_inserted(backgrounds: list[LabelledScan], templates: list, config: TrainingConfig, add, progress: bool) -> None:
    """Copy ``k`` of ``config.inserted`` goes into background ``k mod len(backgrounds)`` with seed
    ``insert_seed + k``; its candidates in the inserted lesions are added as positives."""
    from medfoundry.data.insertion import placement_map

    bar = tqdm(total=config.inserted, desc="inserted scans", unit="scan", disable=not progress)
    for b, scan in enumerate(backgrounds):
        copies = range(b, config.inserted, len(backgrounds))
        if not copies:
            continue
        image, own = read_labelled_scan(scan, config.roi_names)
        pmap = placement_map(image.array, image.spacing_zyx, own)
        for k in copies:
            case, copy, inserted = inserted_scan(image, own, templates, config.insert_seed + k, pmap)
            add(case, case, copy, inserted, positives=True, negatives=False)
            bar.update(1)
    bar.close()


def fit(
    train: TrainingSet, seed: int = 0, C: float = C_REGULARISATION, folds: int = FOLDS, names: list[str] | None = None
) -> tuple[LesionClassifier, dict | None, np.ndarray | None]:
    """Fit the classifier on all rows; cross-validate (seeded) with folds split by group so that no scan is scored
    by a model that saw it: ``(classifier, summary, cross-validated score per row)``, the last two None when there
    are fewer than two groups or a fold would lack a class. The acceptance cut maximises Youden's J on the
    cross-validated scores (0.5 without cross-validation)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score, roc_curve
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def model():
        return make_pipeline(
            StandardScaler(),
            LogisticRegression(C=C, class_weight="balanced", max_iter=5000, random_state=seed),
        )

    x, y = impute_mean(train.features), train.labels
    if names is None:  # the feature set of this width (v3 with / without the embedding, else v2)
        names = next((feature_names(e, a) for a in (True, False) for e in (True, False)
                      if len(feature_names(e, a)) == x.shape[1]), None)  # fmt: skip
    if names is None or len(names) != x.shape[1]:
        raise InputError(None, f"{x.shape[1]} feature columns do not match the feature names {names}")
    groups = np.asarray(train.groups)
    splits = min(folds, len(np.unique(groups)))
    cv, prob, cut = None, None, 0.5
    if splits >= 2:
        try:
            cvs = StratifiedGroupKFold(n_splits=splits, shuffle=True, random_state=seed)
            prob = cross_val_predict(model(), x, y, groups=groups, cv=cvs, method="predict_proba")[:, 1]
        except ValueError:  # a fold without one of the classes
            prob = None
    if prob is not None:
        fpr, tpr, cuts = roc_curve(y, prob)
        best = int(np.argmax(tpr - fpr))  # Youden's J on the cross-validated scores: the cut, from training data only
        cut = float(min(max(cuts[best], 0.05), 0.95))
        pred = prob >= cut
        cv = {
            "folds": splits,
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
        feature_names=list(names),
        mean=scaler.mean_.astype(np.float64),
        scale=scale.astype(np.float64),
        coef=logreg.coef_[0].astype(np.float64),
        intercept=float(logreg.intercept_[0]),
        threshold=round(cut, 4),
        version=VERSION,
        info={"seed": seed, "C": C, "n_positive": int(y.sum()), "n_negative": int((y == 0).sum()), **(cv or {})},
    )
    return clf, cv, prob


def impute_mean(x: np.ndarray) -> np.ndarray:
    """NaN features (not measurable on a scan: an organ out of view, a crop) replaced by their column's mean (0 for
    a column without any value), the value :meth:`LesionClassifier.score` imputes, as the fitted scaler's mean."""
    x = np.asarray(x, dtype=np.float64)
    if not np.isnan(x).any():
        return x
    with np.errstate(invalid="ignore"):
        means = np.where(np.isnan(x).all(axis=0), 0.0, np.nanmean(np.where(np.isnan(x).all(axis=0), 0.0, x), axis=0))
    return np.where(np.isnan(x), means, x)


def per_case_table(train: TrainingSet, prob: np.ndarray | None, cut: float) -> list[dict]:
    """One row per case: its rows, positives, negatives, and (with cross-validated scores) the fraction of its
    positives scored >= ``cut`` (sensitivity) and of its negatives below it (specificity)."""
    cases = np.asarray(train.cases)
    rows = []
    for case in dict.fromkeys(train.cases):
        sel = cases == case
        pos, neg = sel & (train.labels == 1), sel & (train.labels == 0)
        row = {"case": case, "rows": int(sel.sum()), "positives": int(pos.sum()), "negatives": int(neg.sum())}
        if prob is not None:
            row["cv_sensitivity"] = float((prob[pos] >= cut).mean()) if pos.any() else None
            row["cv_specificity"] = float((prob[neg] < cut).mean()) if neg.any() else None
        rows.append(row)
    return rows


def train_lesion_classifier(
    data: str | Path,
    predictor: Callable[[], object] | object | None,
    config: TrainingConfig = TrainingConfig(),
    progress: bool = True,
    cache: str | Path | None = None,
) -> TrainResult:
    """Find the labelled scans under ``data``, check them all (each read once: a bad file fails before the
    slow part), build the training set (or read it from the ``cache`` .npz, written when absent) and fit.
    ``predictor`` (or a function returning one) gives the embedding features; unused with
    ``config.embedding=False``."""
    scans = find_labelled_scans(data)
    check_negatives_only(scans, config.negatives_only)
    if cache is not None and Path(cache).is_file():
        train = read_training_set(cache, config.embedding, config.anatomy)
    else:
        for scan in tqdm(scans, desc="checking scans", unit="scan", disable=not progress):
            read_labelled_scan(scan, config.roi_names)
        if config.embedding and callable(predictor) and not hasattr(predictor, "embed"):
            predictor = predictor()
        train = build_training_set(scans, predictor if config.embedding else None, config, progress)
        if cache is not None:
            write_training_set(train, cache)
    if not train.labels.any() or train.labels.all():
        missing = "positive (no candidate lies in a labelled lesion)" if not train.labels.any() else "negative"
        raise InputError(data, f"no {missing} candidate to learn from in {len(scans)} scan(s)")
    names = feature_names(config.embedding, config.anatomy)
    clf, cv, prob = fit(train, seed=config.seed, C=config.C, folds=config.folds, names=names)
    clf.info.update(
        {
            "trained_on": {
                "scans": [s.name for s in scans],
                "negatives_only": list(config.negatives_only),
                "inserted_copies": config.inserted,
                "scanner_copies": config.scanner_copies,
                "scanner_seed": config.scanner_seed if config.scanner_copies else None,
                "feature_set": "v3 (anatomy)" if config.anatomy else "v2",
                "insert_seed": config.insert_seed if config.inserted else None,
                "thresholds": ["adaptive", *config.thresholds],
                "roi_names": None if config.roi_names is None else list(config.roi_names),
            },
            "command": "medfoundry lesions train",
        }
    )
    return TrainResult(clf, cv, per_case_table(train, prob, clf.threshold), scans)


def write_training_set(train: TrainingSet, path: str | Path) -> Path:
    """The training set as a compressed .npz (written atomically)."""
    from medfoundry.io.atomic import atomic_path

    with atomic_path(path, overwrite=True) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **{k: np.asarray(v) for k, v in asdict(train).items()})
    return Path(path)


def read_training_set(path: str | Path, embedding: bool = True, anatomy: bool = True) -> TrainingSet:
    """A training set written by :func:`write_training_set`; its width must match the features asked for."""
    try:
        with np.load(path, allow_pickle=False) as z:
            train = TrainingSet(z["features"], z["labels"], [str(c) for c in z["cases"]], [str(g) for g in z["groups"]])
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(path, f"cannot read the cached training set ({exc})") from exc
    if train.features.shape[1] != len(feature_names(embedding, anatomy)):
        raise InputError(path, f"the cached training set has {train.features.shape[1]} features, not the "
                         f"{len(feature_names(embedding, anatomy))} asked for (delete it to rebuild)")  # fmt: skip
    return train
