"""The one 3D resampler: MONAI's ``Resize`` over the same field of view (outer voxel edges kept).

Trilinear for intensities (no anti-aliasing, as nnU-Net), nearest (``nearest-exact``) for label maps. Voxel
centres map as ``(i + 0.5) * in / out - 0.5``, so the physical grid of the output is the input's field of view cut
into ``shape`` voxels (see :func:`medfoundry.data.pet_slices.grid_geometry`).
"""

from __future__ import annotations

import numpy as np
import torch


def _resize(x: torch.Tensor, shape: tuple[int, ...], is_label: bool) -> torch.Tensor:
    from monai.transforms import Resize

    mode = "nearest-exact" if is_label else "trilinear"
    kwargs = {} if is_label else {"anti_aliasing": False}
    out = Resize(spatial_size=tuple(int(s) for s in shape), mode=mode, **kwargs)(x)
    return out.as_tensor() if hasattr(out, "as_tensor") else torch.as_tensor(out)


def resample_volume(volume: np.ndarray, shape: tuple[int, ...], is_label: bool = False) -> np.ndarray:
    """A (z, y, x) array on ``shape`` voxels over the same field of view (float32; labels keep their dtype)."""
    volume = np.asarray(volume)
    if tuple(volume.shape) == tuple(shape):
        return volume.copy()
    src = torch.as_tensor(volume[None].astype(np.int32 if is_label else np.float32)).float()
    out = _resize(src, shape, is_label).cpu().numpy()[0]
    return np.rint(out).astype(volume.dtype) if is_label else out.astype(np.float32)


def resample_channels(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """(C, z, y, x) tensor (any device) trilinearly on ``shape`` voxels over the same field of view."""
    if tuple(x.shape[1:]) == tuple(shape):
        return x
    return _resize(x, shape, is_label=False)
