"""Each adaptation method: forward + backward, frozen parameters stay frozen and unchanged, only adapter tensors
are saved, and adapter files refuse another method or base model."""

from __future__ import annotations

import pytest
import torch

from medfoundry.errors import InputError
from medfoundry.modeling.adapters.io import base_fingerprint, load_adapted_model, read_adapter, save_adapter
from medfoundry.modeling.lite_medsam import build_tiny_lite_medsam
from medfoundry.modeling.registry import build_adapter

METHODS = ["decoder", "lora", "dbsam", "classprompt"]
BOX = torch.tensor([[[60.0, 70.0, 150.0, 170.0]]])


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


def _step(model, images, embeddings=None):
    model.train()
    emb = model.embed(images) if embeddings is None else embeddings
    modality = torch.tensor([2]) if model.method == "classprompt" else None
    out = model.decode(emb, BOX, modality=modality)
    target = torch.zeros_like(out["logits"])
    target[..., 70:170, 60:150] = 1
    loss = torch.nn.functional.binary_cross_entropy_with_logits(out["logits"], target)
    if "modality_logits" in out:
        loss = loss + torch.nn.functional.cross_entropy(out["modality_logits"], modality)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    loss.backward()
    opt.step()
    return out


@pytest.mark.parametrize("method", METHODS)
def test_step_trains_only_the_adapter(method, tmp_path):
    base = build_tiny_lite_medsam(seed=0)
    fingerprint = base_fingerprint(base)
    live = base.state_dict()  # shares storage with the base tensors
    before = {k: v.clone() for k, v in live.items()}
    model = build_adapter(base, method)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    trainable_ptrs = {p.data_ptr() for p in model.trainable_parameters()}
    assert trainable
    images = torch.rand(1, 3, 256, 256)
    embeddings = None if model.encoder_trainable else torch.randn(1, 256, 64, 64)
    trained_before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    out = _step(model, images, embeddings)
    assert out["logits"].shape == (1, 1, 256, 256)
    for param in model.parameters():
        if not param.requires_grad:
            assert param.grad is None
    # every frozen base tensor (weights and batch-norm statistics) is unchanged; trained ones moved
    frozen_changed = [
        k for k, v in live.items() if v.data_ptr() not in trainable_ptrs and not torch.equal(v, before[k])
    ]
    assert not frozen_changed, frozen_changed[:5]
    state = model.adapter_state()
    assert set(trainable) <= set(state)
    # the step changed the values of every trainable tensor that received a gradient (base or new module)
    params = dict(model.named_parameters())
    with_grad = {n for n in trained_before if params[n].grad is not None and params[n].grad.abs().sum() > 0}
    changed = {n for n in trained_before if not torch.equal(params[n].detach(), trained_before[n])}
    assert with_grad and with_grad <= changed, sorted(with_grad - changed)[:5]
    # only adapter tensors are saved: no frozen parameter, far fewer values than the model
    frozen_names = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert not (set(state) & frozen_names)
    assert sum(v.numel() for v in state.values()) < sum(v.numel() for v in model.state_dict().values())
    path = save_adapter(model, tmp_path / "a.pt", base_fingerprint=fingerprint, base_name="tiny-lite-medsam:0")
    payload = read_adapter(path)
    assert payload["method"] == method and set(payload["state"]) == set(state)
    # round trip: the loaded model gives the trained model's output
    loaded = load_adapted_model(path, base_model=build_tiny_lite_medsam(seed=0), merge=False)
    model.eval()
    with torch.no_grad():
        emb = model.embed(images) if embeddings is None else embeddings
        emb2 = loaded.embed(images) if embeddings is None else embeddings
        ref = model.decode(emb, BOX)["logits"]
        got = loaded.decode(emb2, BOX)["logits"]
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_frozen_parameters_unchanged_after_step():
    base = build_tiny_lite_medsam(seed=0)
    reference = {k: v.clone() for k, v in build_tiny_lite_medsam(seed=0).state_dict().items()}
    model = build_adapter(base, "dbsam")
    _step(model, torch.rand(1, 3, 256, 256))
    vit = model.image_encoder.vit.state_dict()
    for name, value in vit.items():
        if "channel_attention" in name:
            continue
        original = "image_encoder." + name.replace(".block.", ".")
        assert torch.equal(reference[original], value), name  # weights and BN running stats untouched


def test_lora_rank_and_merge():
    model = build_adapter(build_tiny_lite_medsam(seed=0), "lora", {"rank": 4})
    lora_a = [p for n, p in model.named_parameters() if "lora_A" in n]
    assert lora_a and all(p.shape[0] == 4 for p in lora_a)
    names = [n for n, _ in model.named_parameters() if "lora_A" in n]
    assert any("image_encoder" in n and "attn.qkv" in n for n in names)
    assert any("mask_decoder" in n and "q_proj" in n for n in names)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.normal_(0, 0.05)
    emb = torch.randn(1, 256, 64, 64)
    model.eval()
    with torch.no_grad():
        ref = model.decode(emb, BOX)["logits"]
        merged = model.for_inference()
        got = merged.decode(emb, BOX)["logits"]
    assert not any("lora" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_lora_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 256, 256)
    boxes = torch.tensor([[[40.0, 50.0, 150.0, 160.0]], [[10.0, 20.0, 90.0, 100.0]]])
    grads, saved = [], []
    for stages in ([], [1, 2, 3]):
        model = build_adapter(build_tiny_lite_medsam(seed=0), "lora", {"checkpoint_stages": stages})
        with torch.no_grad():
            for p in model.trainable_parameters():
                p.normal_(0, 0.05)
        model.train()
        saved.append(0)

        def pack(t: torch.Tensor) -> torch.Tensor:
            saved[-1] += t.numel()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model(images, boxes)["logits"].square().mean()
        loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert saved[1] < 0.8 * saved[0]  # checkpointed stages keep only their inputs for backward
    assert grads[0].keys() == grads[1].keys()
    assert any("image_encoder.layers.2" in n and g.abs().sum() > 0 for n, g in grads[1].items())
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-6, rtol=1e-4, msg=name)
    with pytest.raises(ValueError, match="stage 7"):
        build_adapter(build_tiny_lite_medsam(seed=0), "lora", {"checkpoint_stages": [7]})


def test_classprompt_modality_prompt():
    model = build_adapter(build_tiny_lite_medsam(seed=0), "classprompt")
    with torch.no_grad():
        model.mask_decoder.class_embed.weight.normal_(0, 1.0)
    emb = torch.randn(1, 256, 64, 64)
    model.eval()
    with torch.no_grad():
        model.set_modality_prompt("PET")
        pet = model.decode(emb, BOX)["logits"]
        model.set_modality_prompt("CT")
        ct = model.decode(emb, BOX)["logits"]
        model.set_modality_prompt(None)
        auto = model.decode(emb, BOX)
    assert not torch.allclose(pet, ct)
    chosen = model.modalities[int(auto["modality_logits"].argmax())]
    model.set_modality_prompt(chosen)
    with torch.no_grad():
        torch.testing.assert_close(model.decode(emb, BOX)["logits"], auto["logits"])
    with pytest.raises(InputError, match="not one this adapter knows"):
        model.set_modality_prompt("ULTRASOUND")


def test_adapter_refuses_other_method_and_base(tmp_path):
    base = build_tiny_lite_medsam(seed=0)
    fingerprint = base_fingerprint(base)
    model = build_adapter(base, "decoder")
    path = save_adapter(model, tmp_path / "dec.pt", base_fingerprint=fingerprint)
    with pytest.raises(InputError, match="trained with method 'decoder', not 'lora'"):
        load_adapted_model(path, base_model=build_tiny_lite_medsam(seed=0), method="lora")
    with pytest.raises(InputError, match="another base model"):
        load_adapted_model(path, base_model=build_tiny_lite_medsam(seed=1))
    junk = tmp_path / "junk.pt"
    torch.save({"weights": torch.zeros(2)}, junk)
    with pytest.raises(InputError, match="not a medfoundry adapter"):
        load_adapted_model(junk, base_model=build_tiny_lite_medsam(seed=0))
    with pytest.raises(InputError, match="not found"):
        load_adapted_model(tmp_path / "missing.pt", base_model=build_tiny_lite_medsam(seed=0))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dbsam", "classprompt"])
def test_adapted_model_runs_on_onnx_backends(method):
    """DB-SAM changes the encoder and the class prompt the decoder: both still export to ONNX and match."""
    import numpy as np

    from medfoundry.inference.predictor import LiteMedSAMPredictor, Prompts

    model = build_adapter(build_tiny_lite_medsam(seed=0), method)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(torch.randn_like(p) * 0.01)
    model = model.for_inference()
    image = np.random.default_rng(0).random((100, 120)).astype(np.float32)
    logits = {}
    for backend in ("torch", "onnx"):
        predictor = LiteMedSAMPredictor(model=model, backend=backend)
        predictor.set_image(image)
        logits[backend] = predictor.predict_logits(Prompts(boxes=[[20, 20, 80, 70]]))
    torch.testing.assert_close(logits["onnx"], logits["torch"], atol=1e-4, rtol=1e-4)
