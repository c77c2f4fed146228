"""Where LiteMedSAM's encoder spends its time on OpenVINO fp32 (what `--backend fast` runs), per operation.

OpenVINO's own per-node counters (``PERF_COUNT``) on one real PET slice, after warm-up, with the runtime's
settings (``--threads`` threads, latency hint, fp32). Each executed node is put in one class: dense matmuls
(fully connected layers and dense convolutions), fused attention (QK^T, softmax, AV), depthwise convolutions,
data movement (transposes, reorders, splits, pads, slices, concats), norms and the rest. Per class: time, share,
GFLOP and GFLOP/s, against this CPU's fp32 matmul rate measured in the same run (torch, 2048 x 2048). The last
lines give two lower bounds for an fp32 encoder on this CPU: every FLOP at the measured matmul rate, and the
dense matmuls as they run now with everything else free. They say how much an fp32 rewrite of the graph could
still gain.

    python bench/encoder_profile.py [--threads 2] [--repeats 10] [--top 15]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
MOVEMENT = {"Transpose", "Reorder", "VariadicSplit", "Split", "Pad", "Slice", "StridedSlice", "Concatenation"}


def _bench(name: str):
    """A sibling bench script as a module (for its helpers; one definition of each)."""
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _shape(port) -> tuple[int, ...] | None:
    shape = port.get_partial_shape()
    return tuple(shape.to_shape()) if shape.is_static else None


def classify(node) -> tuple[str, float]:
    """(class, FLOPs) of one executed node of OpenVINO's runtime model."""
    kind = node.get_rt_info()["layerType"].astype(str)
    ins = [_shape(node.input(i)) for i in range(node.get_input_size())]
    out = _shape(node.output(0)) if node.get_output_size() else None
    if kind == "FullyConnected" and ins[0] and ins[1] and out:
        return "dense matmul", 2.0 * np.prod(ins[0][:-1]) * ins[0][-1] * out[-1]
    if kind in ("Convolution", "GroupConvolution") and ins[1] and out:
        weight = ins[1]
        if kind == "GroupConvolution" or (len(weight) == 5 and weight[1] == 1 and weight[2] == 1):
            return "depthwise conv", 2.0 * np.prod(out) * np.prod(weight[-2:])
        return "dense matmul", 2.0 * np.prod(out) * np.prod(weight[1:])
    fused = node.get_rt_info()["originalLayersNames"].astype(str)
    if kind == "Subgraph" and "Softmax" in fused and ins[0] and len(ins[0]) == 4:
        b, n, h, d = ins[0]  # (windows, tokens, heads, head dim): QK^T and AV, 2 * n * n * d FLOPs each
        return "attention (QK^T, softmax, AV)", 4.0 * b * h * n * n * d
    if kind in MOVEMENT:
        return "data movement", 0.0
    if kind == "MVN":
        return "norms", 0.0
    if kind == "Subgraph":
        return "fused elementwise (norms, adds)", 0.0
    return "other", 0.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10, help="timed encodes (after 3 warm-up encodes)")
    parser.add_argument("--top", type=int, default=15, help="slowest nodes to list")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    import openvino as ov

    from medfoundry.inference.encoder_backends import export_encoder
    from medfoundry.inference.openvino_backend import compile_model
    from medfoundry.io import read_image, read_mask
    from medfoundry.modeling.lite_medsam import build_lite_medsam
    from medfoundry.preprocessing import normalize_intensity

    runtime_int8, segment_speed = _bench("runtime_int8"), _bench("segment_speed")
    model = build_lite_medsam()
    case = runtime_int8.DATA / "pet-sts" / "STS_003"
    image = normalize_intensity(read_image(case / "PET_image.nii.gz", modality="PET"))
    (slice_, _), *_ = runtime_int8._tumour_slices(image, read_mask(case / "PET_mask.nii.gz").array > 0, 1)
    x = runtime_int8.model_input(slice_)

    # the runtime's own compile (threads, latency hint, fp32), from the model so that no cached blob is reused
    graph = ov.Core().read_model(str(export_encoder(model.image_encoder)))
    compiled = compile_model(graph, args.threads, "f32", properties={"PERF_COUNT": "YES"})
    request = compiled.create_infer_request()
    for _ in range(3):
        request.infer({"image": x})
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        request.infer({"image": x})
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)

    rate = segment_speed.matmul_gflops(args.threads)
    gflop_torch = segment_speed.encoder_gflop(model)
    per_class: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    nodes = []
    for node in compiled.get_runtime_model().get_ordered_ops():
        rt = node.get_rt_info()
        try:
            ms = float(rt["execTimeMcs"].astype(str)) / 1e3  # the last inference's time
        except (KeyError, ValueError):  # not executed (constants, folded reshapes)
            continue
        name, flops = classify(node)
        entry = per_class[name]
        entry[0] += ms
        entry[1] += flops
        entry[2] += 1
        nodes.append((ms, name, flops, rt["layerType"].astype(str), rt["primitiveType"].astype(str), node))
    total_ms = sum(v[0] for v in per_class.values())
    total_gflop = sum(v[1] for v in per_class.values()) / 1e9

    print(
        f"LiteMedSAM encoder on OpenVINO {ov.__version__} fp32, {args.threads} threads, one 256 x 256 PET slice "
        f"(STS_003); {args.repeats} encodes: median {seconds:.3f} s (min {min(times):.3f}, max {max(times):.3f})"
    )
    print(
        f"fp32 matmul rate (torch, 2048^2) {rate:.0f} GFLOP/s; encoder FLOPs: {gflop_torch:.1f} GFLOP (torch "
        f"counter), {total_gflop:.1f} GFLOP counted below\n"
    )
    print(f"{'class':<32}{'nodes':>6}{'ms':>9}{'share':>8}{'GFLOP':>8}{'GFLOP/s':>9}{'of rate':>9}")
    for name, (ms, flops, count) in sorted(per_class.items(), key=lambda kv: -kv[1][0]):
        g = flops / 1e9
        speed = f"{g / ms * 1e3:9.0f}{g / ms * 1e3 / rate:9.0%}" if g else ""
        print(f"{name:<32}{count:>6}{ms:>9.1f}{ms / total_ms:>8.0%}{g:>8.1f}{speed}")
    print(f"{'total (per-node counters)':<32}{len(nodes):>6}{total_ms:>9.1f}")

    print(f"\nslowest {args.top} nodes")
    for ms, _class, flops, kind, primitive, node in sorted(nodes, key=lambda r: -r[0])[: args.top]:
        speed = f"{flops / 1e9 / ms * 1e3:6.0f} GFLOP/s" if flops else " " * 13
        print(f"{ms:7.2f} ms  {speed}  {kind:<16} {primitive:<24} {node.get_friendly_name()[:60]}")

    dense_ms = per_class["dense matmul"][0]
    print(
        f"\nlower bounds for fp32 on this CPU: every FLOP at the matmul rate {gflop_torch / rate:.3f} s; "
        f"the dense matmuls as they run now, everything else free {dense_ms / 1e3:.3f} s; "
        f"now {total_ms / 1e3:.3f} s (per-node sum)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
