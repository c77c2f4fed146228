"""Frozen pretrained encoders behind one registry (:mod:`medfoundry.modeling.registry`).

``build_encoder(name, weights=None, pretrained=True, **kw)`` returns a :class:`FrozenEncoder` with
``.embed(x) -> (B, D)``, ``.feature_maps(x) -> [(B, C, H, W), ...]`` (non-decreasing strides), ``.prepare``,
``.input_size``, ``.mean``, ``.std``, ``.out_dim`` and ``.weights_id``. ``tiny=True`` builds a small random
variant of the same family (for tests). Weights are read from local files only.
"""

from __future__ import annotations

from medfoundry.modeling.encoders.base import FrozenEncoder, weights_dir
from medfoundry.modeling.registry import ENCODERS, build_encoder, encoder_names

__all__ = ["ENCODERS", "FrozenEncoder", "build_encoder", "encoder_names", "weights_dir"]
