"""A whole-body slice model that learns nothing: the PERCIST rule outside the organs (``classify predict --model
percist``).

A slice is flagged when its PERCIST SUVpeak (mean SUV in a 1 mL sphere) outside every organ of physiological
uptake the PET-only anatomy finds (brain, salivary glands / tonsils, heart, liver, kidneys, ureters, bladder,
bowel, each grown by 10 mm) reaches the scan's own PERCIST threshold, 1.5 x liver SUVmean + 2 SD: what a reader
measures as a lesion, on any scan from any scanner, with nothing trained on anyone's scans. Its probability is
``sigmoid(SHARPNESS x log(SUVpeak outside / threshold))`` (the anatomy feature ``percist_ratio``), so 0.5 is the
threshold itself and a larger ratio ranks higher.

It shares its threshold, organs and margin with the unscored-slice rule of the scan-split bench
(:mod:`medfoundry.evaluation.unlabelled_foci`), so on a partly labelled scan its specificity on the scored slices
is high by construction; judge it where every slice is labelled, or with the unlabelled slices scored normal.
What it cannot know: physiological uptake the anatomy does not model (thyroid, muscle, brown fat, marrow,
testes, a focal stomach) is flagged, and a lesion below the threshold or inside an organ's margin is not.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import torch

from medfoundry.data.pet_slices import SliceConfig
from medfoundry.data.pet_slices.anatomy_features import ANATOMY_VERSION
from medfoundry.modeling.heads import LinearHead, predict_proba

RULE_NAME = "PERCIST rule outside organs (no training)"
SHARPNESS = 8.0  # logit per unit of log ratio: p 0.30 / 0.68 at 10 % below / above the threshold
THRESHOLD = 0.5  # p at ratio 1: the PERCIST threshold itself


def _head() -> LinearHead:
    """The rule as a linear head on ``percist_ratio``: weight :data:`SHARPNESS`, no bias, no standardising."""
    head = LinearHead(1, dropout=0.0)
    with torch.no_grad():
        head.linear.weight.fill_(SHARPNESS)
    return head


def percist_rule_bundle() -> dict:
    """The rule as a linear-head bundle on the one feature ``percist_ratio`` (threshold :data:`THRESHOLD`):
    ``classify predict`` runs it as it runs a trained anatomy head."""
    return {
        "kind": "linear",
        "name": RULE_NAME,
        "rule": "percist",
        "encoder": None,
        "weights_path": None,
        "features": {"names": ["percist_ratio"], "identity": {"anatomy": ANATOMY_VERSION}},
        "head_dim": 1,
        "dropout": 0.0,
        "state_dict": _head().state_dict(),
        "threshold": THRESHOLD,
        # native slices; the pixels are not used (no encoder), a small size keeps slicing cheap
        "preprocessing": {"config": asdict(SliceConfig(grid=(0, 0, 0), size=32))},
    }


def percist_probabilities(percist_ratio: np.ndarray) -> np.ndarray:
    """The rule's p(abnormal) for values of the anatomy feature ``percist_ratio`` (one per slice), the head of
    :func:`percist_rule_bundle` (for callers that have the features already, e.g. a built dataset)."""
    return predict_proba(_head(), np.asarray(percist_ratio, np.float32).reshape(-1, 1))


RULE_MODELS = {"percist": percist_rule_bundle}  # built-in models by the name ``classify predict --model`` takes
