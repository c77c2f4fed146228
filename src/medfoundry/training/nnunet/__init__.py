"""The nnU-Net arm: real nnU-Net v2 baselines and frozen-encoder fusion variants on training fractions.

prepare (:mod:`.export`) -> plan (:mod:`.plan`) -> train (:mod:`.trainers`, models in
:mod:`medfoundry.modeling.fusion`) -> predict (:mod:`.predict`) -> evaluate (:mod:`.report`). See docs/nnunet.md.
Importing this package does not import nnunetv2 or torch-heavy modules.
"""

from __future__ import annotations

__all__ = ["export", "plan", "predict", "report", "runtime", "trainers"]
