"""The nnU-Net v2 trainer classes of the nnU-Net arm, at module level (importable and picklable).

This module imports nnunetv2 (which reads its folder variables lazily); :func:`.trainers.trainer_class` imports it
on first use. The schedules are in :mod:`.schedule`, the networks in :mod:`.network`, the training entry point in
:mod:`.trainers`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from medfoundry.modeling.fusion import FusionSpec
from medfoundry.training.nnunet.network import attach_feature_runtime, build_network
from medfoundry.training.nnunet.schedule import Schedule, snapshot_name


class nnUNetTrainerMF(nnUNetTrainer):  # noqa: N801 - nnU-Net's naming, shown in its output folder names
    """nnU-Net's 2D trainer with a medfoundry :class:`Schedule` (batch size override included)."""

    variant = "baseline"
    mf_schedule: Schedule | None = None
    mf_fusion: FusionSpec | None = None
    mf_encoder_backend: str = "fast"
    mf_runtime: str | None = None

    def configure(self, schedule: Schedule, fusion: FusionSpec | None = None, encoder_backend: str = "fast") -> None:
        """Set the schedule (and the frozen encoder and its CPU runtime) before nnU-Net's ``initialize``."""
        self.mf_schedule = schedule
        self.mf_fusion = fusion
        self.mf_encoder_backend = encoder_backend
        self.num_epochs = int(schedule.epochs)
        self.num_iterations_per_epoch = int(schedule.iterations_per_epoch)
        self.num_val_iterations_per_epoch = int(schedule.val_iterations)
        self.initial_lr = float(schedule.initial_lr)
        self.save_every = int(schedule.save_every)

    def initialize(self) -> None:
        if len(self.configuration_manager.pool_op_kernel_sizes) < 3:
            # nnU-Net's deep-supervision weights are all zero (loss NaN) for a 2-stage U-Net (tiny images)
            self.enable_deep_supervision = False
        super().initialize()

    def on_epoch_end(self) -> None:
        super().on_epoch_end()  # nnU-Net's logging and checkpoints; then current_epoch = epochs done
        snaps = self.mf_schedule.snapshot_epochs if self.mf_schedule is not None else ()
        if self.current_epoch in snaps and self.current_epoch < self.num_epochs:
            self.save_checkpoint(str(Path(self.output_folder) / snapshot_name(self.current_epoch)))

    def _set_batch_size_and_oversample(self) -> None:
        super()._set_batch_size_and_oversample()
        if self.mf_schedule is not None and self.mf_schedule.batch_size and not self.is_ddp:
            self.batch_size = int(self.mf_schedule.batch_size)


class nnUNetTrainerMFFusion(nnUNetTrainerMF):  # noqa: N801
    """Base of the fusion trainers: nnU-Net's network plus a frozen encoder (see :mod:`medfoundry.modeling.fusion`)."""

    variant = "fusion"

    def build_network_architecture(
        self,
        plans_manager,  # noqa: ANN001 - nnU-Net's PlansManager
        configuration_manager,  # noqa: ANN001 - nnU-Net's ConfigurationManager
        num_input_channels: int,
        num_output_channels: int,
        enable_deep_supervision: bool = True,
    ) -> torch.nn.Module:
        fusion = self.mf_fusion or FusionSpec(self.variant)
        channels = (num_input_channels, num_output_channels)
        network = build_network(plans_manager, configuration_manager, *channels, enable_deep_supervision, fusion)
        self.mf_runtime = attach_feature_runtime(network, self.mf_encoder_backend, self.device)
        return network

    def _do_i_compile(self) -> bool:
        return False  # the frozen encoder runs eagerly under no_grad


class nnUNetTrainerMF_nnSAM(nnUNetTrainerMFFusion):  # noqa: N801
    variant = "sam"


class nnUNetTrainerMF_nnConvNeXt1(nnUNetTrainerMFFusion):  # noqa: N801
    variant = "convnext1"


class nnUNetTrainerMF_nnConvNeXt2(nnUNetTrainerMFFusion):  # noqa: N801
    variant = "convnext2"


class nnUNetTrainerMF_nnDINO(nnUNetTrainerMFFusion):  # noqa: N801
    variant = "dino"
