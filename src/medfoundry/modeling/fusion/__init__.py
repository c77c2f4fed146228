"""Frozen-encoder fusion for nnU-Net's 2D U-Net (nnSAM, nnConvNeXt1/2, nnDINO); see :mod:`.unet`."""

from medfoundry.modeling.fusion.spec import (
    DEFAULT_INPUT_SIZE,
    TINY_INPUT_SIZE,
    VARIANT_ENCODERS,
    VARIANTS,
    FusionSpec,
)
from medfoundry.modeling.fusion.unet import FusionUNet, assign_levels, build_fusion_network, level_strides

__all__ = [
    "DEFAULT_INPUT_SIZE",
    "TINY_INPUT_SIZE",
    "VARIANTS",
    "VARIANT_ENCODERS",
    "FusionSpec",
    "FusionUNet",
    "assign_levels",
    "build_fusion_network",
    "level_strides",
]
