"""Classification heads on frozen embeddings."""

from medfoundry.modeling.heads.linear_head import LinearHead, predict_proba

__all__ = ["LinearHead", "predict_proba"]
