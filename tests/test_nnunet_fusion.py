"""nnU-Net arm: frozen-encoder fusion networks (tiny random encoders) around nnU-Net's own PlainConvUNet."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from medfoundry.errors import InputError, WeightsError
from medfoundry.modeling.encoders.sam_tinyvit import build_sam_tinyvit
from medfoundry.modeling.fusion import (
    FusionSpec,
    FusionUNet,
    assign_levels,
    build_fusion_network,
    level_strides,
)

STRIDES = [[1, 1], [2, 2], [2, 2], [2, 2]]


def _unet(deep_supervision: bool = True) -> nn.Module:
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    torch.manual_seed(0)
    return PlainConvUNet(
        input_channels=1, n_stages=4, features_per_stage=[8, 16, 32, 32], conv_op=nn.Conv2d, kernel_sizes=3,
        strides=STRIDES, n_conv_per_stage=1, num_classes=2, n_conv_per_stage_decoder=1, conv_bias=True,
        norm_op=nn.InstanceNorm2d, norm_op_kwargs={"affine": True}, nonlin=nn.LeakyReLU,
        nonlin_kwargs={"inplace": True}, deep_supervision=deep_supervision,
    )  # fmt: skip


def test_levels_follow_strides() -> None:
    assert level_strides(STRIDES) == [1, 2, 4, 8]
    assert level_strides([[1, 1], [2, 1], [2, 2]]) == [1, 2, 4]
    assert assign_levels([4, 8, 16, 32], [1, 2, 4, 8], "multilevel") == [2, 3, 3, 3]
    assert assign_levels([4, 8, 16, 32], [1, 2, 4, 8, 16, 32], "multilevel") == [2, 3, 4, 5]
    assert assign_levels([14], [1, 2, 4, 8], "bottleneck") == [3]


@pytest.mark.parametrize("variant", ["convnext1", "convnext2", "dino"])
def test_fusion_network_shapes_and_fuse_levels(variant: str) -> None:
    net = build_fusion_network(_unet(), FusionSpec(variant, tiny=True), STRIDES)
    expected = {"convnext1": ["3"], "convnext2": ["2", "3"], "dino": ["3"]}[variant]
    assert list(net.fuse.keys()) == expected
    out = net(torch.randn(2, 1, 48, 40))
    assert [tuple(o.shape) for o in out] == [(2, 2, 48, 40), (2, 2, 24, 20), (2, 2, 12, 10)]


def test_frozen_encoder_gets_no_gradient_and_stays_unchanged() -> None:
    net = build_fusion_network(_unet(), FusionSpec("convnext2", tiny=True), STRIDES)
    frozen = net.frozen
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    trainable = list(net.parameters())
    assert all(p.requires_grad for p in trainable)
    assert not any(p is q for p in trainable for q in frozen.parameters())
    assert not any(k.startswith("frozen") for k in net.state_dict())
    opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9)
    net.train()
    assert not frozen.training
    x = torch.randn(2, 1, 48, 40)
    loss = sum(o.float().pow(2).mean() for o in net(x))
    loss.backward()
    opt.step()
    assert all(p.grad is None and not p.requires_grad for p in frozen.parameters())
    assert all(torch.equal(before[k], v) for k, v in frozen.state_dict().items())
    # the fusion convolution is trained: its weights got a gradient and changed
    assert all(p.grad is not None for p in net.fuse.parameters())
    # the frozen features take part in the output: different encoder weights, different output
    net.eval()
    with torch.no_grad():
        ref = net(x)[0].clone()
        for p in frozen.parameters():
            p.add_(0.5 * torch.randn_like(p))
        assert not torch.allclose(ref, net(x)[0])


def test_to_moves_the_unregistered_encoder() -> None:
    net = build_fusion_network(_unet(False), FusionSpec("dino", tiny=True), STRIDES).double()
    assert all(p.dtype == torch.float64 for p in net.frozen.parameters())
    out = net(torch.randn(1, 1, 32, 32, dtype=torch.float64))
    assert out.dtype == torch.float64 and out.shape == (1, 2, 32, 32)


@pytest.mark.slow
def test_tiny_sam_variant_runs() -> None:
    net = build_fusion_network(_unet(False), FusionSpec("sam", tiny=True), STRIDES)
    assert isinstance(net, FusionUNet) and net.frozen.input_size == 256
    assert net(torch.randn(1, 1, 32, 32)).shape == (1, 2, 32, 32)


def test_missing_or_wrong_weights_are_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(WeightsError, match="MobileSAM encoder needs its weights file"):
        FusionSpec("sam", encoder="mobilesam")
    with pytest.raises(WeightsError, match="not found"):
        FusionSpec("dino", weights=str(tmp_path / "nope.safetensors"))
    with pytest.raises(InputError, match="takes the encoder"):
        FusionSpec("convnext1", encoder="dinov2_base")
    monkeypatch.setenv("MEDFOUNDRY_WEIGHTS", str(tmp_path))
    with pytest.raises(WeightsError, match="pretrained weights not found"):
        FusionSpec("convnext1").build_encoder()
    junk = tmp_path / "mobile_sam.pt"
    torch.save({"image_encoder.foo": torch.zeros(3)}, junk)
    with pytest.raises(WeightsError, match="not a MobileSAM"):
        build_sam_tinyvit("mobilesam", str(junk), tiny=True)


def test_mobilesam_checkpoint_layout_loads(tmp_path: Path) -> None:
    enc = build_sam_tinyvit("mobilesam", None, tiny=True, seed=1)
    state = {f"image_encoder.{k}": v for k, v in enc.backbone.state_dict().items()}
    state["mask_decoder.w"] = torch.zeros(1)  # MobileSAM files hold the whole model
    path = tmp_path / "mobile_sam.pt"
    torch.save(state, path)
    loaded = build_sam_tinyvit("mobilesam", str(path), tiny=True, seed=2)
    assert loaded.input_size == 1024 and loaded.mean != (0.0, 0.0, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(enc.state_dict().values(), loaded.state_dict().values(), strict=True))
    assert len(loaded.weights_id) == 64


@pytest.mark.parametrize("variant", ["baseline", "sam", "convnext1", "convnext2", "dino"])
def test_trainer_classes_are_module_level_and_picklable(variant: str) -> None:
    import pickle

    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from medfoundry.training.nnunet import nnunet_trainers
    from medfoundry.training.nnunet.trainers import trainer_class, trainer_name

    cls = trainer_class(variant)
    assert issubclass(cls, nnUNetTrainer) and cls.variant == variant
    assert cls.__name__ == trainer_name(variant) and "<locals>" not in cls.__qualname__
    assert getattr(nnunet_trainers, cls.__name__) is cls
    assert pickle.loads(pickle.dumps(cls)) is cls


def test_onnx_runtime_of_the_frozen_forward_matches_eager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medfoundry.inference.encoder_backends import fast_backend, feature_map_runtime
    from medfoundry.training.nnunet.network import attach_feature_runtime

    monkeypatch.setenv("MEDFOUNDRY_CACHE", str(tmp_path))
    net = build_fusion_network(_unet(False), FusionSpec("dino", tiny=True), STRIDES).eval()
    x = torch.randn(2, 1, 48, 40)
    with torch.no_grad():
        eager_maps, eager = net.frozen_features(x), net(x)
        assert attach_feature_runtime(net, "fast", "cpu") == fast_backend() and net.feature_runtime is not None
        fast_maps, fast = net.frozen_features(x), net(x)
    assert [m.shape for m in fast_maps] == [m.shape for m in eager_maps]
    assert max(float((a - b).abs().max()) for a, b in zip(fast_maps, eager_maps, strict=True)) < 1e-4
    assert float((fast - eager).abs().max()) < 1e-3
    assert attach_feature_runtime(net, "torch", "cpu") == "torch" and net.feature_runtime is None
    multi = build_fusion_network(_unet(False), FusionSpec("convnext2", tiny=True), STRIDES)
    assert feature_map_runtime(multi.frozen, multi.feature_index, "fast") is None  # several maps: eager
    assert attach_feature_runtime(multi, "fast", "cpu") == "torch"
