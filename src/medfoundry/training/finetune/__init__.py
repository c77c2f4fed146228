"""Fine-tuning LiteMedSAM adapters on a few labelled 2D samples (``medfoundry finetune``)."""

from medfoundry.training.finetune.engine import FinetuneConfig, FinetuneResult, evaluate_samples, finetune

__all__ = ["FinetuneConfig", "FinetuneResult", "evaluate_samples", "finetune"]
