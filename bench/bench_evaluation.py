"""Speed of medfoundry's surface metrics (NSD + HD95 from one pass) against DeepMind's ``surface-distance``
and MONAI's ``compute_surface_dice(use_subvoxels=True)`` on real masks, in one run; prints ratios.

    python bench/bench_evaluation.py            # needs ../shared/data and the test extra (surface-distance)

Each prediction is the ground truth dilated by 2 voxels and shifted by 2 voxels along x.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage

DATA = Path(os.environ.get("MEDFOUNDRY_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _best_of(fn, repeats: int = 3) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _bench_case(name: str, gt: np.ndarray, sp: tuple[float, ...]) -> None:
    import surface_distance as sd
    import torch
    from monai.metrics import compute_surface_dice

    from medfoundry.evaluation import surface_distances

    pred = np.roll(ndimage.binary_dilation(gt, iterations=2), 2, axis=-1)

    def ours():
        s = surface_distances(pred, gt, sp)
        return s.nsd(2.0), s.robust_hausdorff(95.0)

    def deepmind():
        d = sd.compute_surface_distances(gt, pred, sp)
        return sd.compute_surface_dice_at_tolerance(d, 2.0), sd.compute_robust_hausdorff(d, 95)

    y = torch.from_numpy(np.stack([~gt, gt])[None].astype(np.float32))
    yp = torch.from_numpy(np.stack([~pred, pred])[None].astype(np.float32))

    def monai():
        return compute_surface_dice(yp, y, [2.0], spacing=list(sp), use_subvoxels=True).item()

    t_ours, (nsd_ours, hd_ours) = _best_of(ours)
    t_sd, (nsd_sd, hd_sd) = _best_of(deepmind, 1)
    t_mo, nsd_mo = _best_of(monai, 1)
    print(
        f"{name:34s} {t_ours:8.3f} {t_sd:8.3f} {t_mo:8.3f} {t_sd / t_ours:7.1f}x {t_mo / t_ours:7.1f}x  "
        f"NSD {nsd_ours:.6f}/{nsd_sd:.6f}/{nsd_mo:.6f}  HD95 {hd_ours:.3f}/{hd_sd:.3f}"
    )


def main() -> None:
    import torch

    from medfoundry.evaluation import surface_distances
    from medfoundry.io import read_image, read_mask

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=FutureWarning)
    surface_distances(np.ones((2, 2, 2), bool), np.ones((2, 2, 2), bool), (1, 1, 1))  # warm-up (imports)
    print(f"{'case':34s} {'ours s':>8s} {'SD s':>8s} {'MONAI s':>8s} {'SD/ours':>8s} {'MONAI/ours':>8s}")
    masks = {
        "PET 267x128x128 GTV_Mass": "pet-wholebody/STS_001/nifti/STS_001_FDG_PET_mask_GTV_Mass.nii.gz",
        "CT 48x512x512 lung tumour": "ct-mr-tumour/lung1_label.nrrd",
        "MR 104x160x160 BraTS edema": "mr-brats/BraTS2021_01646_label_edema.nii.gz",
    }
    for name, rel in masks.items():
        img = read_mask(DATA / rel)
        _bench_case(name, img.array > 0, img.spacing_zyx)
    body = read_image(DATA / "ct-mr-tumour/lung1_image.nrrd")  # a worst case: the whole body, HU > -300
    _bench_case("CT 48x512x512 body (HU > -300)", body.array > -300, body.spacing_zyx)


if __name__ == "__main__":
    main()
