"""The class prompt's modality head, fitted so that a minority modality is not drowned by the majority.

Trained only through the joint loss, the head sees each modality as often as the training set holds it: on 501
PET + 62 CT + 62 MR slices it learnt "always PET" in the 50 steps the segmentation's early stopping kept
(`bench/adapt_pet.py --multimodal`, 2026-12-04: 0 of 11 CT / MR volumes right). The encoder is frozen for
``classprompt``, so the head's input, the pooled image embedding, does not change during training: before the
first step the head is fitted alone on the pooled embeddings of up to ``per_class`` seeded samples per modality
(full batch, class-balanced cross-entropy, cheap), and the joint loss then weights its cross-entropy by inverse
class frequency.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def class_weights(targets: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse-frequency weights of ``k`` classes (mean 1 over the classes present; 1 for absent ones)."""
    counts = torch.bincount(targets, minlength=k).float()
    present = counts > 0
    weights = torch.ones(k)
    weights[present] = counts[present].sum() / (present.sum() * counts[present])
    return weights


def balanced_subset(targets: torch.Tensor, per_class: int, seed: int) -> list[int]:
    """Indices of at most ``per_class`` samples of each class present (seeded, sorted)."""
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for c in torch.unique(targets).tolist():
        idx = np.flatnonzero(targets.numpy() == c)
        chosen += rng.choice(idx, size=min(per_class, len(idx)), replace=False).tolist()
    return sorted(chosen)


@torch.no_grad()
def pooled_embeddings(cache, samples: list, batch: int = 8) -> torch.Tensor:
    """(N, 256) spatial means of the frozen encoder's embeddings of ``samples`` (not flipped), via ``cache``."""
    parts = [cache.get(samples[i : i + batch], [0] * len(samples[i : i + batch])).mean(dim=(2, 3))
             for i in range(0, len(samples), batch)]  # fmt: skip
    return torch.cat(parts)


def fit_modality_head(
    model, samples: list, targets: torch.Tensor, cache, *, per_class: int = 64, steps: int = 300,
    lr: float = 1e-3, seed: int = 0,
) -> dict | None:  # fmt: skip
    """Fit ``model``'s modality head alone on a balanced subset of the training samples; returns the balanced
    accuracy on that subset and the samples used per class, or ``None`` when the set holds one modality."""
    if len(torch.unique(targets)) < 2:
        return None
    idx = balanced_subset(targets, per_class, seed)
    pooled, y = pooled_embeddings(cache, [samples[i] for i in idx]), targets[idx]
    head = model.mask_decoder.head
    weights = class_weights(y, len(model.modalities))
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.01)
    for _ in range(steps):
        loss = F.cross_entropy(head(pooled), y, weight=weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        pred = head(pooled).argmax(dim=1)
    recalls = [float((pred[y == c] == c).float().mean()) for c in torch.unique(y).tolist()]
    names = model.modalities
    return {"balanced_accuracy": float(np.mean(recalls)),
            "per_class": {names[c]: int((y == c).sum()) for c in torch.unique(y).tolist()}}  # fmt: skip
