"""Per-candidate features for the physiological-uptake-vs-lesion classifier.

* shape / intensity features (:data:`HANDCRAFTED`), physical units, independent of the reference region;
* the frozen LiteMedSAM encoder embedding (256 numbers) of an axial window of fixed physical size
  (:data:`WINDOW_MM`, so scans of any voxel size show the encoder the same field of view) around the candidate's
  hottest voxel (kept inside the image), mean-pooled over the candidate's footprint on that slice; windows are
  encoded in batches.

* (feature set v3) features relative to the patient's anatomy (:mod:`medfoundry.inference.lesions.anatomy_features`):
  cranio-caudal position, nearness to each organ of physiological uptake, the left-right partner, SUVmax over the
  liver. Tumour crops carry no body position: there these features are NaN (not in the field of view) and the model
  imputes its training mean, so that they cannot learn "crop versus whole-body scan".

Columns are computed and picked by name (:func:`candidate_features`), so a model of an older feature set (v2:
handcrafted + embedding) runs unchanged.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medfoundry.errors import InputError
from medfoundry.inference.lesions.anatomy_features import ANATOMY
from medfoundry.inference.lesions.candidates import Candidate
from medfoundry.preprocessing.intensity import DEFAULT_PET_SUV_RANGE

HANDCRAFTED = (
    "log_volume_ml",
    "log_suv_max",
    "suv_mean_over_max",
    "suv_cv",
    "z_extent_mm",
    "max_inplane_extent_mm",
    "elongation",
    "box_fill",
    "hot_core_fraction",
    "log_contrast",
    "peak_over_threshold",
)
WINDOW_MM = 112.5  # in-plane window around the hottest voxel (24 voxels at 4.69 mm); smaller than every training crop
MIN_WINDOW_VOXELS = 8
EMBED_DIM = 256
EMBED_BATCH = 8


def handcrafted_features(
    cand: Candidate, suv: np.ndarray, spacing_zyx: tuple[float, ...], threshold: float
) -> np.ndarray:
    """The :data:`HANDCRAFTED` features of one candidate."""
    values = suv[cand.bbox][cand.mask].astype(np.float64)
    mean, smax = float(values.mean()), float(values.max())
    coords = np.argwhere(cand.mask) * np.asarray(spacing_zyx)
    extent = coords.max(0) - coords.min(0) + np.asarray(spacing_zyx)
    if len(coords) >= 3:
        eig = np.sort(np.linalg.eigvalsh(np.cov(coords.T) + 1e-6 * np.eye(3)))[::-1]
        elongation = float(np.sqrt(eig[0] / max(eig[-1], 1e-6)))
    else:
        elongation = 1.0
    # background: a shell of about 1 cm around the candidate, inside a grown box
    grow = [max(1, int(round(10.0 / s))) for s in spacing_zyx]
    big = tuple(
        slice(max(0, b.start - g), min(n, b.stop + g)) for b, g, n in zip(cand.bbox, grow, suv.shape, strict=False)
    )
    inner = np.zeros([b.stop - b.start for b in big], dtype=bool)
    inner[tuple(slice(b.start - B.start, b.stop - B.start) for b, B in zip(cand.bbox, big, strict=False))] = cand.mask
    shell = ndimage.binary_dilation(inner, iterations=max(grow)) & ~inner
    background = float(np.median(suv[big][shell])) if shell.any() else 0.0
    box_volume = float(np.prod(extent))
    return np.array(
        [
            np.log(cand.volume_ml),
            np.log(max(smax, 1e-3)),
            mean / max(smax, 1e-6),
            float(values.std()) / max(mean, 1e-6),
            float(extent[0]),
            float(max(extent[1], extent[2])),
            elongation,
            len(values) * float(np.prod(spacing_zyx)) / max(box_volume, 1e-6),
            float((values > 0.5 * smax).mean()),
            np.log(max(smax, 1e-3) / max(background, 0.1)),
            smax / max(threshold, 1e-6),
        ],
        dtype=np.float64,
    )


def window_voxels(spacing_zyx: tuple[float, ...]) -> tuple[int, int]:
    """The (y, x) size in voxels of the :data:`WINDOW_MM` window on this grid."""
    return tuple(max(MIN_WINDOW_VOXELS, int(round(WINDOW_MM / float(s)))) for s in spacing_zyx[1:])  # type: ignore


def _window(suv: np.ndarray, z: int, cy: int, cx: int, size: tuple[int, int]) -> tuple[np.ndarray, int, int]:
    """The ``size`` (y, x) axial window around (cy, cx) on slice z, shifted to stay inside the image
    (zero-padded only when the image is smaller), SUV mapped to [0, 1]. Keeping the window inside the image
    means a tumour crop and a whole-body scan show the encoder the same kind of picture: tissue, not padding."""
    h, w = suv.shape[1:]
    wy, wx = size
    y0 = int(np.clip(cy - wy // 2, 0, max(0, h - wy)))
    x0 = int(np.clip(cx - wx // 2, 0, max(0, w - wx)))
    out = np.zeros((wy, wx), dtype=np.float32)
    part = suv[z, y0 : y0 + wy, x0 : x0 + wx]
    out[: part.shape[0], : part.shape[1]] = part
    low, high = DEFAULT_PET_SUV_RANGE
    return np.clip((out - low) / (high - low), 0.0, 1.0), y0, x0


def embedding_features(
    candidates: list[Candidate], suv: np.ndarray, predictor, spacing_zyx: tuple[float, ...], progress=None
) -> np.ndarray:
    """(N, 256) encoder embeddings pooled over each candidate's footprint on its hottest slice."""
    if not candidates:
        return np.zeros((0, EMBED_DIM))
    size = window_voxels(spacing_zyx)
    windows, origins = [], []
    for cand in candidates:
        win, y0, x0 = _window(suv, *cand.peak_zyx, size)
        windows.append(win)
        origins.append((y0, x0))
    feats = np.zeros((len(candidates), EMBED_DIM))
    for start in range(0, len(windows), EMBED_BATCH):
        emb = predictor.embed(windows[start : start + EMBED_BATCH]).float().numpy()  # (B, 256, 64, 64)
        for j, e in enumerate(emb):
            i = start + j
            cand, (y0, x0) = candidates[i], origins[i]
            z = cand.peak_zyx[0]
            footprint = cand.mask[z - cand.bbox[0].start]
            ys, xs = np.nonzero(footprint)
            ys, xs = ys + cand.bbox[1].start - y0, xs + cand.bbox[2].start - x0
            scale = e.shape[-1] / max(size)  # feature cells per voxel (the window's long side fills the frame)
            cells = np.zeros(e.shape[-2:], dtype=bool)
            cells[
                np.clip((ys * scale).astype(int), 0, e.shape[-2] - 1),
                np.clip((xs * scale).astype(int), 0, e.shape[-1] - 1),
            ] = True
            cells = ndimage.binary_dilation(cells, iterations=max(1, int(scale) // 2))
            feats[i] = e[:, cells].mean(axis=1)
        if progress is not None:
            progress(min(len(windows), start + EMBED_BATCH))
    return feats


def feature_names(embedding: bool = True, anatomy: bool = True) -> list[str]:
    """The names of the feature columns, in order: :data:`HANDCRAFTED`, then the anatomy features
    (:data:`~medfoundry.inference.lesions.anatomy_features.ANATOMY`, feature set v3) unless ``anatomy=False``, then
    ``embedding_0..255`` unless ``embedding=False``. Models of feature set v2 list HANDCRAFTED (+ embedding)."""
    return (
        list(HANDCRAFTED)
        + (list(ANATOMY) if anatomy else [])
        + ([f"embedding_{i}" for i in range(EMBED_DIM)] if embedding else [])
    )


KNOWN = frozenset(feature_names(True, True))


def check_feature_names(classifier) -> None:
    """A classifier may use any features computed here (by name, in any order: a v2 model without the anatomy
    features runs as well as a v3 one); a name this version does not compute is an InputError naming the file."""
    names = list(classifier.feature_names)
    unknown = [n for n in names if n not in KNOWN]
    if unknown or len(set(names)) != len(names) or not names:
        what = f"unknown features {unknown[:5]}" if unknown else "repeated or no feature names"
        raise InputError(
            classifier.path,
            f"the lesion classifier uses features that this version does not compute ({what}; known: "
            f"{len(HANDCRAFTED)} handcrafted, {len(ANATOMY)} anatomy, {EMBED_DIM} embedding features)",
        )


def uses_anatomy(names) -> bool:
    """Whether a model with these feature names needs the anatomy features."""
    return any(n in ANATOMY for n in names)


def uses_embedding_names(names) -> bool:
    """Whether a model with these feature names needs the LiteMedSAM embedding."""
    return any(n.startswith("embedding_") for n in names)


def candidate_features(
    candidates: list[Candidate],
    suv: np.ndarray,
    spacing_zyx: tuple[float, ...],
    threshold: float,
    predictor,
    names: list[str] | None = None,
    anatomy_rows: np.ndarray | None = None,
) -> np.ndarray:
    """(N, len(names)) features, columns in the order of ``names`` (default: :func:`feature_names` with the
    embedding when ``predictor`` is given and the anatomy features when ``anatomy_rows`` is): the handcrafted ones,
    the anatomy ones from ``anatomy_rows`` ((N, len(ANATOMY)), from
    :func:`~medfoundry.inference.lesions.anatomy_features.anatomy_features`; NaN when not given) and the pooled
    embedding (computed only when a name asks for it)."""
    if names is None:
        names = feature_names(predictor is not None, anatomy_rows is not None)
    n = len(candidates)
    hand = np.array([handcrafted_features(c, suv, spacing_zyx, threshold) for c in candidates]).reshape(
        n, len(HANDCRAFTED)
    )
    columns = {name: hand[:, i] for i, name in enumerate(HANDCRAFTED)}
    if uses_anatomy(names):
        rows = np.full((n, len(ANATOMY)), np.nan) if anatomy_rows is None else np.asarray(anatomy_rows, np.float64)
        columns.update({name: rows[:, i] for i, name in enumerate(ANATOMY)})
    if uses_embedding_names(names):
        if predictor is None:
            raise InputError(None, "the lesion classifier needs the LiteMedSAM embedding but no predictor was given")
        emb = embedding_features(candidates, suv, predictor, spacing_zyx)
        columns.update({f"embedding_{i}": emb[:, i] for i in range(EMBED_DIM)})
    return np.stack([columns[name] for name in names], axis=1) if names else np.zeros((n, 0))
