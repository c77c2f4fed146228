"""Can part of LiteMedSAM's encoder run in bf16 and the rest in fp32, keeping masks within DSC 0.99 of fp32?

The encoder is exported in five pieces (patch embedding + stage 0, stages 1, 2, 3, the neck), each compiled on
OpenVINO in fp32 and in bf16 and chained in every pattern tried: all fp32, all bf16, one piece in bf16 (the rest
fp32), one piece in fp32 (the rest bf16), and stage 3 + neck in bf16. Per pattern: seconds per encode and the
mask DSC (eager fp32 decoder) against eager fp32 on the held-out slices of ``bench/runtime_int8.py`` (PET, CT,
MR; min / mean). Two other routes are checked on the whole encoder: OpenVINO's per-node
``disable_fp16_compression`` marks on every MatMul / Convolution before a bf16 compile (does the output change?)
and ``openvino.convert_model`` straight from PyTorch instead of the ONNX export (fp32 seconds per encode).

    python bench/bf16_split.py [--threads 2] [--held-out 16]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch


def _runtime_int8():
    """bench/runtime_int8.py, for its held-out slices and masks, model input, DSC and timing (one definition of
    each)."""
    spec = importlib.util.spec_from_file_location("runtime_int8", Path(__file__).resolve().parent / "runtime_int8.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pieces(encoder: torch.nn.Module) -> list[torch.nn.Module]:
    """The encoder's forward cut into five modules that chain to the same output."""

    class Stem(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.stage = encoder.patch_embed, encoder.layers[0]

        def forward(self, x):
            return self.stage(self.embed(x))

    class Neck(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.neck = encoder.neck

        def forward(self, x):
            b, _, c = x.size()
            return self.neck(x.view(b, 64, 64, c).permute(0, 3, 1, 2))

    return [Stem(), encoder.layers[1], encoder.layers[2], encoder.layers[3], Neck()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--held-out", type=int, default=16, help="held-out slices per modality")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import openvino as ov

    from medfoundry.inference.encoder_backends import EncoderBackend, TorchEncoder, export_encoder
    from medfoundry.inference.openvino_backend import compile_model, cpu_has_bf16
    from medfoundry.inference.predictor import LiteMedSAMPredictor
    from medfoundry.modeling.lite_medsam import build_lite_medsam

    r8 = _runtime_int8()
    model_input, per_call = r8.model_input, r8.per_call
    model = build_lite_medsam()
    encoder = model.image_encoder.eval()
    sets = r8.modality_sets(4, args.held_out)
    print(f"threads {args.threads}; CPU bf16: {'yes' if cpu_has_bf16() else 'no (bf16 runs fp32)'}; held out: "
          + ", ".join(f"{m} {len(held)}" for m, (_, held) in sets.items()))  # fmt: skip
    reference = r8.held_out_masks(LiteMedSAMPredictor(model=model, backend=TorchEncoder(encoder)), sets)
    x = torch.from_numpy(model_input(sets["PET"][1][0][0]))

    def score(backend: EncoderBackend) -> str:
        values = r8.held_out_dsc(LiteMedSAMPredictor(model=model, backend=backend), sets, reference)
        return "  ".join(f"{m} {min(v):.4f}/{np.mean(v):.4f}" for m, v in values.items())

    requests = {}
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        h = x
        for i, piece in enumerate(pieces(encoder)):
            path = Path(tmp) / f"piece{i}.onnx"
            torch.onnx.export(piece.eval(), (h,), str(path), input_names=["x"], output_names=["y"], opset_version=17,
                              dynamo=False)  # fmt: skip
            for precision in ("f32", "bf16"):
                graph = ov.Core().read_model(str(path))  # a model, not a file: no compiled-blob cache for pieces
                requests[i, precision] = compile_model(graph, args.threads, precision).create_infer_request()
            h = piece(h)

    class Chain(EncoderBackend):
        def __init__(self, pattern: str) -> None:
            self.name = pattern

        def __call__(self, batch: torch.Tensor) -> torch.Tensor:
            h = batch.detach().float().numpy()
            for i, letter in enumerate(self.name):
                h = np.array(requests[i, "bf16" if letter == "b" else "f32"].infer({"x": h})[0])
            return torch.from_numpy(h)

    patterns = ["fffff", "bbbbb"]
    patterns += ["".join("b" if j == i else "f" for j in range(5)) for i in range(5)]
    patterns += ["".join("f" if j == i else "b" for j in range(5)) for i in range(5)]
    patterns += ["fffbb"]
    print("\npieces: stem (patch embedding + stage 0), stage 1, stage 2, stage 3, neck; f = fp32, b = bf16")
    print(f"{'pattern':<10}{'s / encode':>11}   DSC vs eager fp32 (min/mean)")
    for pattern in patterns:
        chain = Chain(pattern)
        print(f"{pattern:<10}{per_call(chain, [(x,)], repeats=3):>11.3f}   {score(chain)}", flush=True)

    path = export_encoder(encoder)
    plain = compile_model(ov.Core().read_model(str(path)), args.threads, "bf16").create_infer_request()
    marked_model = ov.Core().read_model(str(path))
    n_marked = 0
    for op in marked_model.get_ordered_ops():
        if op.get_type_name() in ("MatMul", "Convolution", "GroupConvolution"):
            op.get_rt_info()["disable_fp16_compression_0"] = ""
            n_marked += 1
    marked = compile_model(marked_model, args.threads, "bf16").create_infer_request()
    xn = x.numpy()
    same = np.array_equal(np.array(plain.infer({"image": xn})[0]), np.array(marked.infer({"image": xn})[0]))
    print(f"\nbf16 with disable_fp16_compression on {n_marked} MatMul / Convolution nodes: output "
          f"{'identical to plain bf16 (the marks have no effect)' if same else 'differs from plain bf16'}")  # fmt: skip

    fp32_onnx = compile_model(ov.Core().read_model(str(path)), args.threads, "f32").create_infer_request()
    fp32_torch = compile_model(ov.convert_model(encoder, example_input=x), args.threads, "f32").create_infer_request()
    for name, request in (("ONNX export -> OpenVINO", fp32_onnx), ("openvino.convert_model(PyTorch)", fp32_torch)):
        seconds = per_call(lambda r=request: r.infer({0: xn}), [()], repeats=8)
        print(f"fp32 {name:<34}{seconds:.3f} s per encode")
    return 0


if __name__ == "__main__":
    sys.exit(main())
