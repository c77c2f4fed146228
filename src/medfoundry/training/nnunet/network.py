"""The network of one nnU-Net model: nnU-Net's planned U-Net, wrapped with a frozen encoder for the fusion variants.

Used by the trainer classes (:mod:`.nnunet_trainers`) to build what they train and by :mod:`.predict` to rebuild it
for inference; nnunetv2 is imported only when a network is built.
"""

from __future__ import annotations

import torch

from medfoundry.modeling.fusion import FusionSpec, build_fusion_network


def build_network(
    plans_manager,  # noqa: ANN001 - nnU-Net's PlansManager
    configuration_manager,  # noqa: ANN001 - nnU-Net's ConfigurationManager
    num_input_channels: int,
    num_output_channels: int,
    enable_deep_supervision: bool,
    fusion: FusionSpec | None,
) -> torch.nn.Module:
    """nnU-Net's planned network, wrapped with a frozen encoder when ``fusion`` is given."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    unet = nnUNetTrainer.build_network_architecture(
        plans_manager, configuration_manager, num_input_channels, num_output_channels, enable_deep_supervision
    )
    if fusion is None:
        return unet
    return build_fusion_network(unet, fusion, list(configuration_manager.pool_op_kernel_sizes))


def attach_feature_runtime(network: torch.nn.Module, backend: str, device: torch.device | str) -> str:
    """On the CPU, run a fusion network's frozen forward on ``backend`` (``fast`` = ONNX Runtime); returns the
    runtime's name (``torch`` where the eager path stays: GPU, several feature maps, a plain U-Net)."""
    from medfoundry.modeling.fusion import FusionUNet

    if not isinstance(network, FusionUNet) or torch.device(device).type != "cpu":
        return "torch"
    from medfoundry.inference.encoder_backends import feature_map_runtime

    runtime = feature_map_runtime(network.frozen, network.feature_index, backend, threads=torch.get_num_threads())
    network.feature_runtime = runtime
    return runtime.name if runtime is not None else "torch"
