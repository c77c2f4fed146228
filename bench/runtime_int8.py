"""LiteMedSAM's encoder and decoder on ONNX Runtime and OpenVINO, fp32, bf16 and int8, on this CPU in one run.

bf16: OpenVINO's bfloat16 inference precision (``--backend openvino-bf16``; AMX / AVX-512 BF16 CPUs, else fp32).
int8: ONNX Runtime's dynamic per-channel weight quantisation (``--backend onnx-int8``) and OpenVINO + NNCF static
post-training quantisation calibrated on ``--calib`` real slices per modality. Accuracy: mask DSC of each
runtime's encoder (decoded by the eager fp32 decoder) against fp32 eager PyTorch, on held-out slices that were
not used for calibration (other patients / scans):

* PET: pet-sts crops, calibration STS_011..030, held out STS_001..010 (tumour's largest slice, SUV 0..10);
* CT: DeepLesion npz, calibration the two 000015 stacks, held out the 000001 stack (lesion slices);
* MR: calibration BraTS FLAIR (edema slices), held out the pyradiomics brain1 and breast1 tumour slices.

    python bench/runtime_int8.py [--threads 2] [--calib 24] [--held-out 8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def _tumour_slices(image: np.ndarray, gt: np.ndarray, n: int | None = None) -> list[tuple[np.ndarray, list]]:
    """(slice, box) for slices with the most tumour first (at most ``n``)."""
    areas = gt.reshape(len(gt), -1).sum(1)
    order = [int(z) for z in np.argsort(-areas) if areas[z] >= 4]
    out = []
    for z in order[:n]:
        ys, xs = np.nonzero(gt[z])
        out.append((image[z].astype(np.float32), [xs.min(), ys.min(), xs.max(), ys.max()]))
    return out


def modality_sets(n_calib: int, n_held: int) -> dict[str, tuple[list, list]]:
    """modality -> (calibration slices, held-out (slice, box) pairs), all in [0, 1]."""
    from medfoundry.io import read_image, read_mask, read_npz_case
    from medfoundry.preprocessing import normalize_intensity

    def nifti(img_path, mask_path, modality, n):
        image = normalize_intensity(read_image(img_path, modality=modality))
        return _tumour_slices(image, read_mask(mask_path).array > 0, n)

    pet = sorted((DATA / "pet-sts").glob("STS_*"))
    pet_cal = [s for c in pet[10:30] for s, _ in nifti(c / "PET_image.nii.gz", c / "PET_mask.nii.gz", "PET", 2)][
        :n_calib
    ]
    pet_held = [nifti(c / "PET_image.nii.gz", c / "PET_mask.nii.gz", "PET", 1)[0] for c in pet[:10]][:n_held]
    ct_cal = []
    for name in ("CT_Lesion_000015_01_01_081-093.npz", "CT_Lesion_000015_01_01_103-115.npz"):
        case = read_npz_case(DATA / "ct-lesion-npz" / name)
        ct_cal += [z.astype(np.float32) / 255.0 for z in case.imgs]
    case = read_npz_case(DATA / "ct-lesion-npz" / "CT_Lesion_000001_02_01_008-023.npz")
    ct_held = _tumour_slices(case.imgs.astype(np.float32) / 255.0, case.gts > 0, n_held)
    brats = DATA / "mr-brats"
    mr_cal = [
        s
        for s, _ in nifti(
            brats / "BraTS2021_01646_flair.nii.gz", brats / "BraTS2021_01646_label_edema.nii.gz", "MR", 47
        )[::2]
    ][:n_calib]
    tum = DATA / "ct-mr-tumour"
    mr_held = nifti(tum / "brain1_image.nrrd", tum / "brain1_label.nrrd", "MR", (n_held + 1) // 2)
    mr_held += nifti(tum / "breast1_image.nrrd", tum / "breast1_label.nrrd", "MR", n_held // 2)
    return {"PET": (pet_cal, pet_held), "CT": (ct_cal[:n_calib], ct_held), "MR": (mr_cal, mr_held[:n_held])}


def model_input(image: np.ndarray) -> np.ndarray:
    """A [0, 1] slice as LiteMedSAM's (1, 3, 256, 256) input (the predictor's own transform)."""
    from medfoundry.preprocessing.resize import ResizeLongestSide, image_to_tensor

    batch = image_to_tensor(image)
    return ResizeLongestSide(tuple(batch.shape[-2:])).apply_images(batch).numpy()


def dsc(a, b) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * (a & b).sum() / total)


def held_out_masks(predictor, sets: dict) -> dict[tuple[str, int], np.ndarray]:
    """``predictor``'s mask for each held-out (slice, box) of ``sets``, keyed by (modality, index)."""
    out = {}
    for m, (_, held) in sets.items():
        for i, (image, box) in enumerate(held):
            predictor.set_image(image)
            out[m, i] = predictor.predict(boxes=[box])[0]
    return out


def held_out_dsc(predictor, sets: dict, reference: dict) -> dict[str, list[float]]:
    """Per modality, the DSC of ``predictor``'s held-out masks against ``reference`` (:func:`held_out_masks`)."""
    masks = held_out_masks(predictor, sets)
    return {m: [dsc(masks[m, i], reference[m, i]) for i in range(len(held))] for m, (_, held) in sets.items()}


def per_call(fn, args_list, repeats: int = 1) -> float:
    """Median seconds per call over ``args_list`` (after one warm-up call)."""
    fn(*args_list[0])
    times = []
    for _ in range(repeats):
        for args in args_list:
            start = time.perf_counter()
            fn(*args)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calib", type=int, default=24, help="calibration slices per modality")
    parser.add_argument("--held-out", type=int, default=8, help="held-out slices per modality")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        import openvino  # noqa: F401
    except ImportError:
        print("OpenVINO is not installed (pip install 'medfoundry[openvino]'); nothing to compare")
        return 0
    from medfoundry.inference.decoder_backends import OnnxDecoder
    from medfoundry.inference.encoder_backends import OnnxEncoder, TorchEncoder
    from medfoundry.inference.openvino_backend import OpenVinoDecoder, OpenVinoEncoder, quantize_int8
    from medfoundry.inference.predictor import LiteMedSAMPredictor
    from medfoundry.modeling.lite_medsam import build_lite_medsam

    model = build_lite_medsam()
    sets = modality_sets(args.calib, args.held_out)
    ort_fp32 = OnnxEncoder(model.image_encoder, threads=args.threads)
    calib = [{"image": model_input(s)} for m in sets for s in sets[m][0]]
    start = time.perf_counter()
    ov_int8_model = quantize_int8(ort_fp32.path, calib)
    quant_s = time.perf_counter() - start
    encoders = {
        "torch fp32 (eager)": TorchEncoder(model.image_encoder),
        "ORT fp32": ort_fp32,
        "ORT int8 (dynamic)": OnnxEncoder(model.image_encoder, int8=True, threads=args.threads),
        "OpenVINO fp32": OpenVinoEncoder(ort_fp32.path, args.threads),
        "OpenVINO bf16": OpenVinoEncoder(ort_fp32.path, args.threads, name="openvino-bf16", precision="bf16"),
        "OpenVINO int8 (NNCF static)": OpenVinoEncoder(ov_int8_model, args.threads, name="openvino-int8"),
    }
    ort_dec = OnnxDecoder(model, threads=args.threads)
    decoders = {"ORT fp32": ort_dec, "OpenVINO fp32": OpenVinoDecoder(ort_dec.path, args.threads)}
    from medfoundry.inference.openvino_backend import cpu_has_bf16

    print(f"CPU bf16 (AMX / AVX-512 BF16): {'yes' if cpu_has_bf16() else 'no: the bf16 row runs fp32'}")
    print(
        f"threads {args.threads}; calibration {len(calib)} slices ({', '.join(f'{m} {len(sets[m][0])}' for m in sets)})"
        f", NNCF quantisation {quant_s:.0f} s; held out: {', '.join(f'{m} {len(sets[m][1])}' for m in sets)}"
    )

    x = torch.from_numpy(model_input(sets["PET"][1][0][0]))
    print(f"\n{'encoder':<30}{'s / slice':>10}{'vs ORT fp32':>12}" + "".join(f"{'DSC ' + m:>13}" for m in sets))
    reference = held_out_masks(LiteMedSAMPredictor(model=model, backend=encoders["torch fp32 (eager)"]), sets)
    t_ort = None
    for name, enc in encoders.items():
        t = per_call(enc, [(x,)], repeats=5)
        t_ort = t if name == "ORT fp32" else t_ort
        pred = LiteMedSAMPredictor(model=model, backend=enc)  # eager fp32 decoder: the encoder's effect alone
        scores = [f"{min(v):.3f}/{np.mean(v):.3f}" for v in held_out_dsc(pred, sets, reference).values()]
        ratio = "" if t_ort is None else f"{t_ort / t:.2f}x"
        print(f"{name:<30}{t:>10.3f}{ratio:>12}" + "".join(f"{s:>13}" for s in scores))
    print("(DSC: min/mean over held-out slices vs fp32 eager masks)")

    emb = torch.from_numpy(ort_fp32(x).numpy())
    sparse, dense = model.prompt_encoder(points=None, boxes=torch.tensor([[[10.0, 10.0, 120.0, 140.0]]]), masks=None)
    sparse, dense = sparse.detach(), dense.detach()
    ref_logits = decoders["ORT fp32"](emb, sparse, dense)
    print(f"\n{'decoder (one box)':<30}{'ms / prompt':>12}{'max |logit diff|':>18}")
    for name, dec in decoders.items():
        t = per_call(dec, [(emb, sparse, dense)], repeats=20)
        diff = float((dec(emb, sparse, dense) - ref_logits).abs().max())
        print(f"{name:<30}{1000 * t:>12.1f}{diff:>18.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
