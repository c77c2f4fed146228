"""Patch sampling with a foreground share (nnU-Net's oversampling of annotated classes)."""

from __future__ import annotations

import numpy as np

from medfoundry.errors import InputError

MAX_LOCATIONS_PER_CLASS = 10_000


def class_locations(label: np.ndarray, class_ids, seed: int = 0) -> dict[int, np.ndarray]:
    """Up to 10 000 voxel coordinates (N, 3) per class id present in ``label`` (for foreground sampling)."""
    rng = np.random.default_rng(seed)
    out: dict[int, np.ndarray] = {}
    for c in class_ids:
        coords = np.argwhere(label == c)
        if len(coords) == 0:
            continue
        if len(coords) > MAX_LOCATIONS_PER_CLASS:
            coords = coords[rng.choice(len(coords), MAX_LOCATIONS_PER_CLASS, replace=False)]
        out[int(c)] = coords.astype(np.int32)
    return out


def check_patch_fits(shape: tuple[int, ...], patch_size: tuple[int, ...], name: str | None) -> None:
    """Raise :class:`InputError` when ``patch_size`` is larger than the (preprocessed) volume on any axis."""
    if any(p > s for p, s in zip(patch_size, shape, strict=True)):
        raise InputError(
            name,
            f"patch size {tuple(patch_size)} (z, y, x) is larger than the volume {tuple(shape)} after "
            "resampling; choose a smaller patch_size_zyx or a finer spacing_xyz_mm in the pool config",
        )


def patch_start(
    shape: tuple[int, ...],
    patch_size: tuple[int, ...],
    rng: np.random.Generator,
    centre: np.ndarray | None = None,
) -> tuple[int, ...]:
    """Corner of a patch inside the volume: random, or placed so that ``centre`` lies inside it (jittered)."""
    start = []
    for axis, (n, p) in enumerate(zip(shape, patch_size, strict=True)):
        hi = n - p
        if centre is None:
            s = int(rng.integers(0, hi + 1))
        else:
            c = int(centre[axis])
            s = int(rng.integers(max(0, c - p + 1), min(hi, c) + 1))
        start.append(s)
    return tuple(start)


def sample_patch(
    image: np.ndarray,
    label: np.ndarray,
    patch_size: tuple[int, ...],
    rng: np.random.Generator,
    locations: dict[int, np.ndarray] | None = None,
    foreground_share: float = 0.33,
    name: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A (z, y, x) patch of ``image`` and ``label``; with probability ``foreground_share`` it contains a
    voxel of a randomly chosen class present in the case."""
    check_patch_fits(image.shape, patch_size, name)
    centre = None
    if locations and rng.random() < foreground_share:
        cls = list(locations)[int(rng.integers(len(locations)))]
        coords = locations[cls]
        centre = coords[int(rng.integers(len(coords)))]
    s = patch_start(image.shape, patch_size, rng, centre)
    sl = tuple(slice(a, a + p) for a, p in zip(s, patch_size, strict=True))
    return image[sl], label[sl]
