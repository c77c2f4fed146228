"""Lesion insertion: real 3D lesions from labelled PET crops added to whole-body SUV backgrounds.

:mod:`.lesions` cuts lesions out (excess SUV over a local background shell) and resamples them,
:mod:`.placement` decides where they may go (inside the body, away from hot organs), :mod:`.insert` adds them
with a seeded generator and returns the new image (same geometry) and the exact label. Pictures of examples:
:func:`medfoundry.evaluation.wholebody_figures.save_insertion_examples`.
"""

from medfoundry.data.insertion.insert import (
    CLINICAL_FWHM_MM,
    InsertionConfig,
    InsertionResult,
    Placement,
    insert_lesions,
)
from medfoundry.data.insertion.lesions import LesionTemplate, extract_lesions, resample_template
from medfoundry.data.insertion.placement import PlacementMap, body_mask, placement_map, restrict

__all__ = [
    "CLINICAL_FWHM_MM",
    "InsertionConfig",
    "InsertionResult",
    "LesionTemplate",
    "Placement",
    "PlacementMap",
    "body_mask",
    "extract_lesions",
    "insert_lesions",
    "placement_map",
    "resample_template",
    "restrict",
]
