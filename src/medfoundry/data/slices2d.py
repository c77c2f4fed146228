"""2D training samples (image slice, one object's mask) from labelled volumes and 2D files.

Volumes give every ``every``-th slice that has foreground (MedSAM's 2D training protocol on 3D data); 2D files
give their one slice. Each label value on a slice is one sample (one object, one box prompt). Intensities are
mapped to [0, 1] with :func:`medfoundry.preprocessing.normalize_intensity`, as at inference.

A training folder is found by :func:`find_pairs`: ``dataset.json`` (written by ``medfoundry synthesize``),
or files ``NAME_image.EXT`` beside ``NAME_mask.EXT`` / ``NAME_label.EXT`` (any depth), or ``images/`` beside
``labels/`` or ``masks/`` with the same file names.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from medfoundry.errors import InputError
from medfoundry.io import MedicalImage, read_image_for_model, read_mask
from medfoundry.io.dicom import DICOM_SUFFIXES
from medfoundry.io.paths import FORMAT_SUFFIXES, split_suffix
from medfoundry.preprocessing.boxes import label_boxes, mask_box
from medfoundry.preprocessing.intensity import IntensityWindow, normalize_intensity

IMAGE_SUFFIXES = tuple(s for s in FORMAT_SUFFIXES if s not in DICOM_SUFFIXES)  # single files


@dataclass
class Sample2D:
    """One object on one 2D slice: intensities in [0, 1], a boolean mask, in-plane spacing (y, x) in mm."""

    image: np.ndarray
    mask: np.ndarray
    spacing: tuple[float, float]
    case: str
    modality: str = "OTHER"
    label: int = 1
    slice_index: int | None = None
    source: str | None = None
    # volumes only: the in-plane extent [x0, y0, x1, y1] of the object's 3D bounding box (the box a user gives
    # for the whole object), and the tight boxes of the object on the adjacent slices that hold it (z - 1, z + 1)
    box3d: np.ndarray | None = None
    neighbour_boxes: tuple[np.ndarray, ...] = ()

    def box(self) -> np.ndarray:
        """The mask's bounding box ``[x0, y0, x1, y1]`` in pixels."""
        box = mask_box(self.mask)
        if box is None:
            raise InputError(self.source, f"{self.case}: empty mask has no box")
        return box


def find_pairs(root: str | Path, image_glob: str | None = None) -> list[tuple[Path, Path]]:
    """(image, mask) file pairs under ``root`` (see the module doc); ``image_glob`` filters image paths
    relative to ``root`` (e.g. ``'*/PET_image.nii.gz'``)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "training folder not found")
    manifest = root / "dataset.json"
    if manifest.is_file():
        try:
            entries = json.loads(manifest.read_text())["pairs"]
            pairs = [(root / e["image"], root / e["mask"]) for e in entries]
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(manifest, f"not a medfoundry dataset manifest ({exc.__class__.__name__})") from exc
        for image, mask in pairs:
            for path in (image, mask):
                if not path.is_file():
                    raise InputError(manifest, f"lists {path.name}, which does not exist")
        return pairs
    pairs = []
    pattern = image_glob or "**/*"
    for image in sorted(root.glob(pattern)):
        if not image.is_file() or split_suffix(image)[1] not in IMAGE_SUFFIXES:
            continue
        mask = label_beside(image)
        if mask is not None:
            pairs.append((image, mask))
    if not pairs:
        raise InputError(
            root,
            "no image/mask pairs found: expected NAME_image.EXT beside NAME_mask.EXT, images/ beside labels/, "
            "or a dataset.json" + (f" (filter {image_glob!r})" if image_glob else ""),
        )
    return pairs


MASK_TAGS = ("_mask", "_label", "_labels", "_seg", "_gt")  # NAME_image.EXT pairs with NAME<tag>.EXT


def is_paired_image_name(image: Path) -> bool:
    """Whether ``image`` is named as the image of a pair: ``NAME_image.EXT``, or a file in an ``images/`` folder."""
    return split_suffix(image)[0].endswith("_image") or image.parent.name == "images"


def label_beside(image: Path) -> Path | None:
    """The label file of a pair's image: ``NAME_mask.EXT`` (or another :data:`MASK_TAGS` name) beside
    ``NAME_image.EXT``, or the same name in ``labels/`` / ``masks/`` beside ``images/``; None when absent."""
    stem, suffix = split_suffix(image)
    if stem.endswith("_image"):
        candidates = [image.with_name(stem[: -len("_image")] + tag + suffix) for tag in MASK_TAGS]
    elif image.parent.name == "images":
        candidates = [image.parent.parent / folder / image.name for folder in ("labels", "masks")]
    else:
        return None
    return next((c for c in candidates if c.is_file()), None)


def case_name(image: Path, root: Path) -> str:
    """Patient/case id of an image: its folder relative to ``root`` if nested, else its name stem."""
    rel = image.relative_to(root) if image.is_relative_to(root) else Path(image.name)
    if len(rel.parts) > 1 and rel.parts[0] not in ("images",):
        return rel.parts[0]
    stem = split_suffix(image)[0]
    return re.sub(r"_image$", "", stem)


def _slices_with_foreground(mask: np.ndarray, every: int) -> list[int]:
    z = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    return z[:: max(1, every)].tolist()


def samples_from_image(
    image: MedicalImage,
    mask: MedicalImage,
    case: str,
    every: int = 5,
    window: IntensityWindow | None = None,
    slices: Sequence[int] | None = None,
) -> list[Sample2D]:
    """Samples from one image and its label map (same grid): every ``every``-th slice with foreground
    (or the given ``slices``) of a volume, or the one slice of a 2D image; one sample per label. Volume samples
    also carry the object's 3D box extent and its boxes on the adjacent slices (the prompts 3D inference gives)."""
    normalized = normalize_intensity(image, window)
    labels = mask.array
    spacing = image.spacing_zyx
    boxes3d: dict[int, np.ndarray] = {}
    if image.spatial_ndim == 2:
        planes = [(None, normalized, labels)]
        spacing2d = (spacing[0], spacing[1])
    else:
        zs = list(slices) if slices is not None else _slices_with_foreground(labels, every)
        planes = [(int(z), normalized[z], labels[z]) for z in zs]
        spacing2d = (spacing[1], spacing[2])
        values = [int(v) for v in np.unique(labels) if v > 0]
        boxes3d = {v: b[[0, 1, 3, 4]] for v, b in zip(values, label_boxes(labels), strict=True)}
    out = []
    for z, plane, lab in planes:
        image2d = np.ascontiguousarray(plane, dtype=np.float32)
        for value in np.unique(lab):
            if value == 0:
                continue
            neighbours: tuple[np.ndarray, ...] = ()
            if z is not None:
                near = [mask_box(labels[n] == value) for n in (z - 1, z + 1) if 0 <= n < labels.shape[0]]
                neighbours = tuple(b for b in near if b is not None)
            out.append(
                Sample2D(
                    image=image2d,
                    mask=lab == value,
                    spacing=spacing2d,
                    case=case,
                    modality=image.modality,
                    label=int(value),
                    slice_index=z,
                    source=image.path,
                    box3d=boxes3d.get(int(value)),
                    neighbour_boxes=neighbours,
                )
            )
    return out


def read_pair(image_path: Path, mask_path: Path, modality: str | None = None) -> tuple[MedicalImage, MedicalImage]:
    """An image and its label map, checked to share one grid (:class:`InputError` otherwise)."""
    image = read_image_for_model(image_path, modality)
    if image.spatial_ndim not in (2, 3):
        raise InputError(image_path, f"expected a 2D or 3D image, got shape {image.array.shape}")
    mask = read_mask(mask_path, reference=image)
    return image, mask


def load_samples(
    root: str | Path,
    *,
    image_glob: str | None = None,
    every: int = 5,
    modality: str | None = None,
    window: IntensityWindow | None = None,
    cases: Sequence[str] | None = None,
    progress: bool = True,
) -> list[Sample2D]:
    """All samples of a training folder (optionally only the listed ``cases``); refuses a folder with no
    foreground at all."""
    root = Path(root)
    pairs = find_pairs(root, image_glob)
    manifest = root / "dataset.json"
    if modality is None and manifest.is_file():
        modality = json.loads(manifest.read_text()).get("modality")
    wanted = None if cases is None else set(cases)
    samples: list[Sample2D] = []
    for image_path, mask_path in tqdm(pairs, desc="reading", unit="case", disable=not progress, leave=False):
        case = case_name(image_path, root)
        if wanted is not None and case not in wanted:
            continue
        image, mask = read_pair(image_path, mask_path, modality)
        samples.extend(samples_from_image(image, mask, case, every, window))
    if wanted is not None:
        missing = sorted(wanted - {case_name(p, root) for p, _ in pairs})
        if missing:
            raise InputError(root, f"cases not found: {', '.join(missing[:5])}")
    if not samples:
        raise InputError(root, f"no foreground in any of the {len(pairs)} masks: nothing to train on")
    return samples


def split_cases(
    samples: Sequence[Sample2D], val_fraction: float = 0.2, seed: int = 0, min_val: int = 1
) -> tuple[list[Sample2D], list[Sample2D]]:
    """Patient-wise split: whole cases go to validation, ``val_fraction`` of them but at least ``min_val`` where
    that leaves as many for training (and at least one case each side)."""
    cases = sorted({s.case for s in samples})
    if len(cases) < 2:
        raise InputError(None, f"a validation split needs at least 2 cases, found {len(cases)}; pass `val` FOLDER")
    rng = random.Random(seed)
    rng.shuffle(cases)
    floor = min(min_val, len(cases) // 2)
    n_val = min(len(cases) - 1, max(1, floor, round(len(cases) * val_fraction)))
    val = set(cases[:n_val])
    return [s for s in samples if s.case not in val], [s for s in samples if s.case in val]
