"""Deprecated: the fusion models moved to :mod:`medfoundry.modeling.fusion` and the SAM TinyViT encoder to
:mod:`medfoundry.modeling.encoders.sam_tinyvit`; these paths work for one more release."""

from __future__ import annotations

from medfoundry._deprecated import moved

_FUSION = moved(__name__, "medfoundry.modeling.fusion")
_SAM = moved(__name__, "medfoundry.modeling.encoders.sam_tinyvit", ("SamTinyViTEncoder", "build_sam_tinyvit"))


def __getattr__(name: str) -> object:
    if name in ("SamTinyViTEncoder", "build_sam_tinyvit"):
        return _SAM(name)
    if name == "_to_unit_range":
        return moved(__name__, "medfoundry.modeling.fusion.unet")(name)
    return _FUSION(name)
