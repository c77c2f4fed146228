"""The class prompt's modality head is fitted class-balanced: a modality with 4 of 108 training slices is learnt."""

from __future__ import annotations

import torch

from medfoundry.modeling.lite_medsam import build_tiny_lite_medsam
from medfoundry.modeling.registry import build_adapter
from medfoundry.training.finetune.modality_head import balanced_subset, class_weights, fit_modality_head


class PooledCache:
    """Stands in for the frozen encoder's embedding cache: each sample is its own (1, 256, 1, 1) embedding."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def get(self, samples, flips):
        assert set(flips) == {0}
        self.calls.append(len(samples))
        return torch.stack([s[:, None, None] for s in samples])


def test_class_weights_and_balanced_subset():
    y = torch.tensor([2] * 8 + [0] * 2)
    w = class_weights(y, 5)
    assert torch.allclose(w, torch.tensor([2.5, 1, 0.625, 1, 1]))  # 10 / (2 * 2), 10 / (2 * 8), absent: 1
    sub = balanced_subset(y, 3, seed=0)
    assert sorted(y[sub].tolist()) == [0, 0, 2, 2, 2] and sub == sorted(sub)
    assert balanced_subset(y, 3, seed=0) == sub and set(balanced_subset(y, 3, seed=1)) <= set(range(10))


def test_minority_modalities_are_learnt_and_a_single_modality_is_left_alone():
    model = build_adapter(build_tiny_lite_medsam(seed=0), "classprompt")
    names = model.modalities
    gen = torch.Generator().manual_seed(0)
    centres = {m: torch.randn(256, generator=gen) for m in ("PET", "CT", "MR")}
    counts = {"PET": 100, "CT": 4, "MR": 4}
    samples = [centres[m] + 0.5 * torch.randn(256, generator=gen) for m, n in counts.items() for _ in range(n)]
    targets = torch.tensor([names.index(m) for m, n in counts.items() for _ in range(n)])
    cache = PooledCache()
    fitted = fit_modality_head(model, samples, targets, cache, per_class=16, seed=0)
    assert fitted["per_class"] == {"CT": 4, "MR": 4, "PET": 16} and sum(cache.calls) == 24
    assert fitted["balanced_accuracy"] == 1.0
    new = {m: torch.stack([c + 0.5 * torch.randn(256, generator=gen) for _ in range(10)]) for m, c in centres.items()}
    for m, emb in new.items():
        assert model.predict_modality(emb) == [m] * 10, m
    before = [p.detach().clone() for p in model.mask_decoder.head.parameters()]
    assert fit_modality_head(model, samples[:100], targets[:100], cache) is None  # PET only: nothing to fit
    assert all(torch.equal(a, b) for a, b in zip(before, model.mask_decoder.head.parameters(), strict=True))
