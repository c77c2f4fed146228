"""TSFM: the 3D tumour segmentation foundation model (residual U-Net with a transformer bottleneck)."""

from medfoundry.modeling.tsfm.checkpoint import (
    load_checkpoint,
    make_payload,
    model_for_transfer,
    model_from_checkpoint,
    save_checkpoint,
)
from medfoundry.modeling.tsfm.loss import PartialLabelBCEDiceLoss
from medfoundry.modeling.tsfm.network import TSFM, build_tsfm, count_parameters, set_activation_checkpointing
from medfoundry.modeling.tsfm.presets import PRESETS, TSFMConfig, get_preset

__all__ = [
    "PRESETS",
    "TSFM",
    "PartialLabelBCEDiceLoss",
    "TSFMConfig",
    "build_tsfm",
    "count_parameters",
    "get_preset",
    "load_checkpoint",
    "make_payload",
    "model_for_transfer",
    "model_from_checkpoint",
    "save_checkpoint",
    "set_activation_checkpointing",
]
