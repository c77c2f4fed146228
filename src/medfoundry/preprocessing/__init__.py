"""Intensity normalisation and the geometric transform to LiteMedSAM's model space (and back)."""

from medfoundry.preprocessing.intensity import CT_WINDOWS, IntensityWindow, normalize_intensity
from medfoundry.preprocessing.resize import ResizeLongestSide

__all__ = ["CT_WINDOWS", "IntensityWindow", "ResizeLongestSide", "normalize_intensity"]
