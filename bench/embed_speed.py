"""Embedding speed per frozen encoder: eager PyTorch vs the encoder runtime of ``classify embed``, against the
FLOP floor.

For each encoder (full-size architecture; random weights give the same speed as pretrained ones) it prints
slices per second of

* eager b1: one slice at a time, prepare + forward under ``inference_mode`` (the baseline);
* eager bN: the same in batches of ``--batch-size`` (the batching gain alone: bN / b1);
* runtime: ``encoder_runtime(encoder, --backend)``, the path of ``classify embed`` (``fast``: OpenVINO fp32 where
  installed, else ONNX Runtime fp32; one slice per run: the runtime gain alone: runtime / b1), with the max abs
  difference from eager;
* for litemedsam also the rate of ``segment``'s image encoder (the same runtime on the bare TinyViT), which
  ``classify embed`` should match within 10 %;

the encoder's FLOPs per slice (torch's FlopCounterMode, 2 FLOPs per multiply-add) and the FLOP floor =
FLOPs / this CPU's fp32 matmul rate (the better of two measurements taken just before and after the
batched run, since the machine may be shared), so that "% of floor" = floor time / measured time per slice.
It also times training the linear head on cached-size embeddings next to training the CNN baseline.

    python bench/embed_speed.py                      # litemedsam, dinov2_small, resnet50
    python bench/embed_speed.py --encoders all --n 16
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch


def matmul_rate(size: int = 1024, seconds: float = 2.0) -> float:
    """Sustained fp32 matmul FLOP/s of this CPU with torch's current thread count."""
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    torch.mm(a, b)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        n += 1
    return 2.0 * size**3 * n / (time.perf_counter() - start)


def encoder_flops(encoder, size: int) -> float:
    """FLOPs of one slice's forward pass (prepare excluded)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(1, 3, size, size)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        encoder.embed(x)
    return float(counter.get_total_flops())


def time_naive(encoder, slices: torch.Tensor) -> float:
    """Seconds per slice: one slice at a time under ``inference_mode``."""
    return time_batched(encoder, slices, 1)


def time_batched(encoder, slices: torch.Tensor, batch_size: int) -> float:
    """Seconds per slice on the cache's path: inference_mode, batches."""
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, slices.shape[0], batch_size):
            encoder.embed(encoder.prepare(slices[i : i + batch_size]))
    return (time.perf_counter() - start) / slices.shape[0]


def head_vs_cnn(n: int = 300, dim: int = 256, epochs_head: int = 300, epochs_cnn: int = 12) -> tuple[float, float]:
    """Seconds to train the linear head (cached embeddings) and the CNN (224 x 224 slices) on ``n`` slices."""
    from medfoundry.training.cnn_baseline import CNNConfig, train_cnn
    from medfoundry.training.heads import HeadConfig, train_linear_head

    rng = np.random.default_rng(0)
    y = (rng.random(n) < 0.4).astype(int)
    y[:2] = (0, 1)
    emb = rng.normal(size=(n, dim)).astype(np.float32)
    n_val = max(4, n // 8)
    head = train_linear_head(
        emb[n_val:], y[n_val:], emb[:n_val], y[:n_val], HeadConfig(epochs=epochs_head, patience=10**6)
    )
    imgs = rng.random((n, 224, 224), dtype=np.float32)
    cnn = train_cnn(
        imgs[n_val:], y[n_val:], imgs[:n_val], y[:n_val], CNNConfig(epochs=epochs_cnn, patience=10**6), progress=False
    )
    return head.seconds, cnn.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--encoders", nargs="+", default=["litemedsam", "dinov2_small", "resnet50"], help="registry names, or 'all'"
    )
    parser.add_argument("--n", type=int, default=8, help="slices per measurement")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="torch / ONNX Runtime threads (default 2)")
    parser.add_argument(
        "--backend", default="fast", help="runtime of classify embed: fast, onnx, openvino, onnx-int8, torch"
    )
    parser.add_argument("--skip-training", action="store_true", help="skip the head-vs-CNN training timing")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from medfoundry.modeling.encoders import build_encoder, encoder_names

    names = encoder_names() if args.encoders == ["all"] else args.encoders
    rate = matmul_rate()
    print(
        f"CPU: {os.cpu_count()} cores visible, torch threads {torch.get_num_threads()}, "
        f"load average {os.getloadavg()[0]:.1f}; fp32 matmul {rate / 1e9:.1f} GFLOP/s"
    )
    print(
        f"{'encoder':14s} {'GFLOP/slice':>11s} {'eager b1':>9s} {'eager bN':>9s} {'batching':>8s} {'runtime':>8s} "
        f"{'runtime gain':>12s} {'max|diff|':>9s} {'floor sl/s':>10s} {'% of floor':>10s}   (slices/s)"
    )
    from medfoundry.inference.encoder_backends import encoder_runtime, make_encoder_backend

    slices = torch.rand(args.n, 224, 224)
    for name in names:
        if name == "rad_dino":  # same ViT-B/14 as dinov2_base, through transformers; built tiny unless weights
            encoder = build_encoder(name, tiny=True)
        else:
            encoder = build_encoder(name, pretrained=False)
        flops = encoder_flops(encoder, encoder.input_size)
        with torch.inference_mode():
            encoder.embed(encoder.prepare(slices[:2]))  # warm-up
        naive = time_naive(encoder, slices)
        before = matmul_rate(seconds=1.0)  # re-measured around each batched run: the machine may be shared
        batched = time_batched(encoder, slices, args.batch_size)
        local_rate = max(before, matmul_rate(seconds=1.0))
        floor = flops / local_rate
        runtime = encoder_runtime(encoder, args.backend, threads=args.threads)
        with torch.inference_mode():
            x = encoder.prepare(slices[:2])
            diff = float((runtime.embed(x) - encoder.embed(x)).abs().max())
        rt = time_batched(runtime, slices, args.batch_size)
        label = name + (" (tiny)" if name == "rad_dino" else "")
        print(
            f"{label:14s} {flops / 1e9:11.2f} {1 / naive:9.2f} {1 / batched:9.2f} {naive / batched:7.2f}x "
            f"{1 / rt:8.2f} {naive / rt:11.2f}x {diff:9.1e} {1 / floor:10.2f} {100 * floor / rt:9.0f}%  "
            f"[{runtime.runtime}; matmul {local_rate / 1e9:.1f} GFLOP/s]"
        )
        if name == "litemedsam":
            seg = make_encoder_backend(encoder.backbone, args.backend, threads=args.threads)
            x = encoder.prepare(slices)
            start = time.perf_counter()
            for i in range(x.shape[0]):
                seg(x[i : i + 1])
            seg_rate = x.shape[0] / (time.perf_counter() - start)
            print(
                f"{'':14s} segment's encoder ({seg.name}): {seg_rate:.2f} slices/s; classify embed / segment = "
                f"{(1 / rt) / seg_rate:.2f} (target >= 0.90)"
            )
    if not args.skip_training:
        head_s, cnn_s = head_vs_cnn()
        print(
            f"training on 300 slices: linear head (300 epochs, 256-d cached embeddings) {head_s:.1f} s; "
            f"CNN baseline (12 epochs, 224 x 224) {cnn_s:.1f} s; ratio {cnn_s / head_s:.0f}x"
        )


if __name__ == "__main__":
    main()
