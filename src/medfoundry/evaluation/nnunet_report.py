"""Deprecated: reports that read nnU-Net run folders moved to :mod:`medfoundry.training.nnunet.report`; this path
works for one more release."""

from __future__ import annotations

from medfoundry._deprecated import moved

__getattr__ = moved(__name__, "medfoundry.training.nnunet.report")
