"""Few-label adaptation of LiteMedSAM: decoder fine-tuning, LoRA, DB-SAM, class prompts (see docs/adaptation.md).

The methods are named in :data:`medfoundry.modeling.registry.ADAPTERS` and built with
:func:`medfoundry.modeling.registry.build_adapter`.
"""

from medfoundry.modeling.adapters.base import AdaptedLiteMedSAM

__all__ = ["AdaptedLiteMedSAM"]
