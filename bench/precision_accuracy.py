"""Does a lower-precision encoder cost accuracy against the reference masks, not only agreement with fp32?

``bench/segment_speed.py`` and ``bench/runtime_int8.py`` score bf16 and int8 against fp32's own masks. This one
segments every labelled 3D volume the way users do (the reference mask's 3D box, middle slice first, then
propagation: ``medfoundry segment --box``) with each backend and reports, per case and on average, the DSC
against the reference label and the DSC against the first backend's (fp32) mask, plus the paired difference
(mean +- sd, Wilcoxon signed-rank p) and win / loss counts (a case counts when it moves by more than 0.05).

Volumes: the 30 FDG-PET sarcoma crops (``pet-sts``, SUV), the sarcoma of the whole-body FDG-PET STS_001 (read
from DICOM in SUV, ``GTV_Mass``) and the three DeepLesion CT stacks.

    python bench/precision_accuracy.py [--backend openvino openvino-bf16 onnx-int8] [--threads 2] [--cases N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def volumes(n_pet: int | None):
    """The labelled PET crops (first ``n_pet``), the whole-body PET's sarcoma and the DeepLesion CT stacks, as the
    3D path reads them."""
    from medfoundry.inference.volume_eval import Volume3D, load_volumes, read_volume
    from medfoundry.io import read_image, read_mask
    from medfoundry.preprocessing import normalize_intensity

    pet = load_volumes(DATA / "pet-sts", image_glob="*/PET_image.nii.gz", modality="PET")[:n_pet]
    wb = read_image(DATA / "pet-wholebody" / "STS_001" / "dicom" / "image")
    gt = read_mask(DATA / "pet-wholebody" / "STS_001" / "nifti" / "STS_001_FDG_PET_mask_GTV_Mass.nii.gz").array
    pet.append(Volume3D("whole-body STS_001", normalize_intensity(wb), (gt > 0).astype(np.uint8), wb.spacing_zyx))
    ct = [read_volume(p, p, p.stem, modality="CT") for p in sorted((DATA / "ct-lesion-npz").glob("*.npz"))]
    return [("PET", v) for v in pet] + [("CT", v) for v in ct]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", nargs="+", default=["openvino", "openvino-bf16", "onnx-int8"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cases", type=int, default=None, help="only the first N PET crops (default: all 30)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from scipy.stats import wilcoxon

    from medfoundry.evaluation import dice
    from medfoundry.inference.predictor import LiteMedSAMPredictor
    from medfoundry.inference.prompts import ObjectPrompt
    from medfoundry.inference.segment import segment_array
    from medfoundry.inference.volume_eval import reference_box
    from medfoundry.modeling.lite_medsam import build_lite_medsam

    model = build_lite_medsam()
    names = list(args.backend)
    predictors = {n: LiteMedSAMPredictor(model=model, backend=n) for n in names}
    cases = volumes(args.cases)
    print(f"threads {args.threads}; {len(cases)} volumes; backends {', '.join(names)} (first: the agreement reference)")
    header = f"{'case':<40}{'slices':>7}" + "".join(f"{'GT ' + n:>22}" for n in names)
    header += "".join(f"{'agree ' + n:>24}" for n in names[1:])
    print(header)
    rows, seconds = [], dict.fromkeys(names, 0.0)
    for modality, vol in cases:
        ref = vol.labels > 0
        box = reference_box(ref)
        masks = {}
        for n in names:
            start = time.perf_counter()
            masks[n] = segment_array(predictors[n], vol.volume, [ObjectPrompt(box=box)], is_3d=True) > 0
            seconds[n] += time.perf_counter() - start
        row = {"modality": modality, "case": vol.case, **{f"gt {n}": dice(masks[n], ref) for n in names}}
        row.update({f"agree {n}": dice(masks[n], masks[names[0]]) for n in names[1:]})
        rows.append(row)
        n_slices = int(np.flatnonzero(ref.reshape(len(ref), -1).any(1)).size)
        print(
            f"{modality + ' ' + vol.case:<40}{n_slices:>7}"
            + "".join(f"{row[f'gt {n}']:>22.4f}" for n in names)
            + "".join(f"{row[f'agree {n}']:>24.4f}" for n in names[1:]),
            flush=True,
        )
    print(f"\nseconds in segment_array: {', '.join(f'{n} {s:.0f} s' for n, s in seconds.items())}")
    for modality in ("PET", "CT", "all"):
        sel = [r for r in rows if modality in ("all", r["modality"])]
        if not sel:
            continue
        base = np.array([r[f"gt {names[0]}"] for r in sel])
        print(f"\n{modality} ({len(sel)} volumes): DSC vs reference label, mean +- sd")
        print(f"  {names[0]:<16}{base.mean():.4f} +- {base.std():.4f}")
        for n in names[1:]:
            gt = np.array([r[f"gt {n}"] for r in sel])
            agree = np.array([r[f"agree {n}"] for r in sel])
            delta = gt - base
            sd = delta.std(ddof=1) if len(delta) > 1 else 0.0
            p = wilcoxon(delta).pvalue if len(delta) > 1 and delta.any() else float("nan")
            print(
                f"  {n:<16}{gt.mean():.4f} +- {gt.std():.4f}   paired difference {delta.mean():+.4f} +- "
                f"{sd:.4f} (min {delta.min():+.4f}, max {delta.max():+.4f}; "
                f"Wilcoxon p = {p:.2f}); better / worse by > 0.05: "
                f"{int((delta > 0.05).sum())} / {int((delta < -0.05).sum())}; agreement with {names[0]} "
                f"min {agree.min():.4f}, mean {agree.mean():.4f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
