"""Few-label adaptation of LiteMedSAM: decoder fine-tuning, LoRA, DB-SAM, class prompts (see docs/adaptation.md)."""

from medfoundry.modeling.adapters.base import METHODS, AdaptedLiteMedSAM, build_adapted, method_config

__all__ = ["METHODS", "AdaptedLiteMedSAM", "build_adapted", "method_config"]
