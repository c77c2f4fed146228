"""Inserting lesion templates into a whole-body SUV background: seeded, geometry kept, exact label."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from medfoundry.data.insertion.lesions import LesionTemplate, added_blur_mm, blur_activity, resample_template
from medfoundry.data.insertion.placement import (
    BODY_MARGIN_MM,
    BODY_SUV,
    ORGAN_MARGIN_MM,
    PlacementMap,
    choose_corner,
    grow_mask,
    placement_map,
)
from medfoundry.errors import InputError
from medfoundry.io import MedicalImage

MIN_INSERTED_VOXELS = 8
CLINICAL_FWHM_MM = 7.0  # whole-body FDG PET as reconstructed: 5-9 mm FWHM (OSEM + post-filter); the middle


@dataclass(frozen=True)
class InsertionConfig:
    """How many lesions, how big and how bright (each drawn uniformly from its range), and where they may go.

    Defaults are general, not tuned to a scan: 1-3 lesions per scan; a target volume drawn log-uniformly from
    1-60 mL (the size of FDG-avid nodes and metastases; the source sarcomas are 17-2300 mL), reached by shrinking
    the source lesion (never enlarging it) with its shape kept; contrast 0.5-1.0 x the source's excess SUV
    (never brighter than a real lesion was); a left-right flip half of the time.

    ``resolution_fwhm_mm`` > 0 blurs each inserted lesion to the background's resolution: a template carries the
    blur of the scan it came from (``source_fwhm_mm``, default the same), shrinking it shrinks that blur too, so a
    1 mL lesion cut from a 500 mL sarcoma would have edges far sharper than the background scanner can image. The
    Gaussian added (:func:`~.lesions.added_blur_mm`) restores the background's blur; the activity spills outside
    the label (partial volume, as in a real scan) and its total is kept. 0 (the default here) adds nothing;
    :data:`CLINICAL_FWHM_MM` is what the whole-body slice builder uses.
    """

    lesions_per_scan: tuple[int, int] = (1, 3)
    volume_ml: tuple[float, float] = (1.0, 60.0)
    intensity_scale: tuple[float, float] = (0.5, 1.0)
    flip: bool = True
    body_suv: float = BODY_SUV
    body_margin_mm: float = BODY_MARGIN_MM
    organ_margin_mm: float = ORGAN_MARGIN_MM
    gap_mm: float = 10.0  # inserted lesions keep this distance from one another
    resolution_fwhm_mm: float = 0.0  # the background's resolution; 0 = no blur added
    source_fwhm_mm: float | None = None  # the templates' scanner resolution (None: the same as the background)

    def __post_init__(self) -> None:
        lo, hi = self.lesions_per_scan
        if lo < 1 or hi < lo:
            raise InputError(None, f"lesions per scan must be a range 1 <= lo <= hi, got {self.lesions_per_scan}")
        for name in ("volume_ml", "intensity_scale"):
            a, b = getattr(self, name)
            if not (0 < a <= b):
                raise InputError(None, f"{name} must be a range 0 < lo <= hi, got {(a, b)}")
        if self.resolution_fwhm_mm < 0 or (self.source_fwhm_mm is not None and self.source_fwhm_mm < 0):
            raise InputError(None, f"resolution FWHM must be >= 0 mm, got {self.resolution_fwhm_mm}")

    def blur_sigma_mm(self, scale: float) -> float:
        """Gaussian sigma (mm) added to a template shrunk by ``scale`` (0 without blur)."""
        if self.resolution_fwhm_mm <= 0:
            return 0.0
        source = self.resolution_fwhm_mm if self.source_fwhm_mm is None else self.source_fwhm_mm
        return added_blur_mm(self.resolution_fwhm_mm, source, scale)


@dataclass
class Placement:
    """One inserted lesion: its source, where it went (box corner, (z, y, x) voxels) and how it was changed."""

    source: str
    corner: tuple[int, int, int]
    shape: tuple[int, int, int]
    size_scale: float
    intensity_scale: float
    flipped: bool
    voxels: int
    volume_ml: float
    peak_suv: float  # largest added SUV
    blur_sigma_mm: float = 0.0  # Gaussian added to reach the background's resolution

    @property
    def z_range(self) -> tuple[int, int]:
        """First and last slice index the lesion touches."""
        return self.corner[0], self.corner[0] + self.shape[0] - 1

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "corner_zyx": list(self.corner),
            "shape_zyx": list(self.shape),
            "size_scale": round(self.size_scale, 4),
            "intensity_scale": round(self.intensity_scale, 4),
            "flipped": self.flipped,
            "voxels": self.voxels,
            "volume_ml": round(self.volume_ml, 3),
            "peak_suv": round(self.peak_suv, 4),
            "blur_sigma_mm": round(self.blur_sigma_mm, 3),
        }


@dataclass
class InsertionResult:
    """The new image (SUV, the background's geometry), its label (inserted + own lesions) and what was done."""

    image: MedicalImage
    label: MedicalImage
    inserted: np.ndarray  # bool (z, y, x): the inserted voxels only (the label; blurred uptake reaches further)
    placements: list[Placement] = field(default_factory=list)
    placement_map: PlacementMap | None = None


def _block_around(
    allowed: np.ndarray, mask: np.ndarray, corner: tuple[int, ...], spacing: tuple[float, ...], mm: float
) -> None:
    """Mark a placed lesion and ``mm`` around it as no longer allowed (in place, on a local box)."""
    pad = [int(np.ceil(mm / s)) + 1 for s in spacing]
    lo = [max(0, c - p) for c, p in zip(corner, pad, strict=True)]
    hi = [min(n, c + s + p) for c, s, p, n in zip(corner, mask.shape, pad, allowed.shape, strict=True)]
    local = np.zeros([h - lo_ for lo_, h in zip(lo, hi, strict=True)], bool)
    off = [c - lo_ for c, lo_ in zip(corner, lo, strict=True)]
    local[tuple(slice(o, o + s) for o, s in zip(off, mask.shape, strict=True))] = mask
    allowed[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] &= ~grow_mask(local, spacing, mm)


def _add_clipped(image: np.ndarray, values: np.ndarray, corner: tuple[int, ...]) -> None:
    """``image[corner : corner + values.shape] += values``, the part outside the image dropped."""
    dst, src = [], []
    for c, n, size in zip(corner, values.shape, image.shape, strict=True):
        lo, hi = max(0, c), min(size, c + n)
        dst.append(slice(lo, hi))
        src.append(slice(lo - c, hi - c))
    image[tuple(dst)] += values[tuple(src)]


def insert_lesions(
    background: MedicalImage,
    templates: Sequence[LesionTemplate],
    seed: int,
    config: InsertionConfig = InsertionConfig(),
    own_label: MedicalImage | np.ndarray | None = None,
    z_allowed: np.ndarray | None = None,
    pmap: PlacementMap | None = None,
) -> InsertionResult:
    """Insert 1..n randomly drawn, scaled and flipped ``templates`` into ``background`` (SUV) at allowed places.

    The same ``seed`` gives the same result. ``pmap`` (from :func:`placement_map` with the same ``own_label``
    and ``z_allowed``) saves recomputing the allowed region for every scan of one background. Lesions that fit
    nowhere are skipped (fewer placements, never a lesion outside the allowed region).
    """
    if background.spatial_ndim != 3:
        raise InputError(background.path, f"a 3D PET background is needed, got shape {background.array.shape}")
    if not templates:
        raise InputError(None, "no lesion templates to insert")
    spacing = tuple(float(s) for s in background.spacing_zyx)
    own = None
    if own_label is not None:
        own = np.asarray(own_label.array if isinstance(own_label, MedicalImage) else own_label) > 0
        if own.shape != background.array.shape:
            raise InputError(None, f"own label {own.shape} does not match the background {background.array.shape}")
    if pmap is None:
        pmap = placement_map(
            background.array,
            spacing,
            own,
            z_allowed,
            config.body_suv,
            config.body_margin_mm,
            config.organ_margin_mm,
        )
    rng = np.random.default_rng(seed)
    image = np.array(background.array, dtype=np.float32, copy=True)
    inserted = np.zeros(image.shape, bool)
    allowed = pmap.allowed.copy()
    placements: list[Placement] = []
    n = int(rng.integers(config.lesions_per_scan[0], config.lesions_per_scan[1] + 1))
    for _ in range(n):
        for _attempt in range(5):  # another lesion / scale when one does not fit
            template = templates[int(rng.integers(len(templates)))]
            target = float(np.exp(rng.uniform(*np.log(config.volume_ml))))
            scale = min(1.0, (target / max(template.volume_ml, 1e-6)) ** (1.0 / 3.0))
            gain = float(rng.uniform(*config.intensity_scale))
            flip = bool(config.flip and rng.random() < 0.5)
            activity, mask = resample_template(template, spacing, scale, flip)
            if mask.sum() < MIN_INSERTED_VOXELS:
                continue
            corner = choose_corner(allowed, mask, rng)
            if corner is None:
                continue
            box = tuple(slice(c, c + s) for c, s in zip(corner, mask.shape, strict=True))
            sigma = config.blur_sigma_mm(scale)
            blurred, pad = blur_activity(activity, spacing, sigma)
            _add_clipped(image, blurred * np.float32(gain), tuple(c - pad for c in corner))
            inserted[box] |= mask
            _block_around(allowed, mask, corner, spacing, config.gap_mm)
            placements.append(
                Placement(
                    template.source,
                    corner,
                    tuple(int(s) for s in mask.shape),
                    scale,
                    gain,
                    flip,
                    int(mask.sum()),
                    float(mask.sum() * np.prod(spacing) / 1000.0),
                    float(blurred.max() * gain),
                    sigma,
                )
            )
            break
    label = inserted if own is None else inserted | own
    return InsertionResult(
        image=background.with_array(image, modality="PET"),
        label=background.with_array(label.astype(np.uint8), modality="OTHER"),
        inserted=inserted,
        placements=placements,
        placement_map=pmap,
    )
