"""Where a scan's uptake is physiological: every organ the anatomy found, grown by a margin for its spill-over.

:data:`MARGIN_MM` is 10 mm: about 1.5 x the 5-9 mm FWHM of clinical PET, so the blur of an organ's own uptake past
its edge stays inside, plus the anatomy's 4 mm working grid. The unlabelled-foci rule
(:mod:`medfoundry.evaluation.unlabelled_foci`) and the slice classifier's anatomy features
(:mod:`medfoundry.data.pet_slices.anatomy_features`) use the same mask.
"""

from __future__ import annotations

import numpy as np

from medfoundry.preprocessing.anatomy.morphology import dilate_mm

MARGIN_MM = 10.0


def physiological_mask(
    anatomy, shape: tuple[int, ...], spacing_zyx: tuple[float, ...], margin_mm: float = MARGIN_MM
) -> np.ndarray:
    """Every organ ``anatomy`` (a :class:`~medfoundry.preprocessing.anatomy.Anatomy`) found, grown by
    ``margin_mm``, as a boolean volume of ``shape``."""
    union = np.zeros(shape, bool)
    for organ in anatomy.organs.values():
        if organ.mask is not None:
            union |= organ.mask
    return dilate_mm(union, spacing_zyx, margin_mm) if union.any() else union
