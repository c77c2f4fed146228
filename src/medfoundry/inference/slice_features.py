"""The per-slice feature sources a whole-body slice model can be built with, by name: ``anatomy`` (PET-only
anatomy, :class:`~medfoundry.data.pet_slices.features.AnatomyFeatures`) and ``finder`` (the lesion finder's
evidence, :class:`~medfoundry.inference.slice_evidence.FinderEvidence`). ``classify build --features`` picks them;
``classify predict`` rebuilds them from the identity a model stores and refuses a model whose features this
version computes differently.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from medfoundry.data.pet_slices.anatomy_features import ANATOMY_VERSION
from medfoundry.data.pet_slices.features import AnatomyFeatures, CombinedFeatures
from medfoundry.errors import InputError

FEATURE_KINDS = ("anatomy", "finder")


def feature_source(kinds: Sequence[str], cache: str | Path | None = None, delineation: str = "threshold"):
    """The named sources side by side (``cache``: where the finder keeps the evidence of volumes it has seen)."""
    unknown = [k for k in kinds if k not in FEATURE_KINDS]
    if unknown:
        raise InputError(None, f"unknown feature source(s) {unknown}; use {', '.join(FEATURE_KINDS)}")
    sources = []
    for kind in dict.fromkeys(kinds):
        if kind == "anatomy":
            sources.append(AnatomyFeatures())
        else:
            from medfoundry.inference.slice_evidence import FinderEvidence

            sources.append(FinderEvidence(cache=cache, delineation=delineation))
    return CombinedFeatures(sources)


def source_for(identity: dict, model: str | Path | None = None):
    """The sources a model was trained with (its stored ``identity``), checked against this version."""
    kinds = [k for k in FEATURE_KINDS if k in identity]
    if "anatomy" in identity and identity["anatomy"] != ANATOMY_VERSION:
        raise InputError(model, f"the model's anatomy features are version {identity['anatomy']}, this medfoundry "
                         f"computes version {ANATOMY_VERSION}; rebuild and retrain it")  # fmt: skip
    source = feature_source(kinds, delineation=identity.get("finder_delineation", "threshold"))
    if "finder" in identity:
        now = source.identity
        for key in ("finder", "finder_classifier"):
            if now.get(key) != identity.get(key):
                raise InputError(model, f"the model's finder evidence has {key} {identity.get(key)!r}, this "
                                 f"medfoundry gives {now.get(key)!r}; rebuild and retrain it")  # fmt: skip
    return source
