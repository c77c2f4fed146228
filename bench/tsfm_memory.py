"""Memory arithmetic of TSFM training per GPU: DDP vs FSDP, with and without activation checkpointing.

Nothing is allocated: the network is built on PyTorch's meta device, and one forward pass on a meta input counts
the tensors autograd saves for the backward pass (``torch.autograd.graph.saved_tensors_hooks``), in float32 at
batch 1. With checkpointing, the count is what stays saved (block inputs and the few tensors outside blocks) plus
the largest block's own saved tensors, which exist while that block is recomputed in the backward pass. The
floating-point operations of one training step are counted the same way (``torch.utils.flop_counter``).

Training state per GPU (P parameters, 4 bytes each in float32):
    DDP:  weights 4P + gradients 4P + optimiser (SGD momentum 4P; AdamW 8P) + DDP's gradient buckets 4P
    FSDP over N GPUs: (weights + gradients + optimiser) / N + the gathered units in flight: the running unit's
          weights and gradients and the next unit's prefetched weights, about 3 x 4U for the largest unit U

    python bench/tsfm_memory.py                                # huge at 112 x 160 x 192, 8 GPUs, SGD
    python bench/tsfm_memory.py --preset base --patch 96 128 128 --gpus 4 --optimizer adamw

bf16 autocast (--amp) keeps convolution outputs in bfloat16, about half of the float32 activations counted here;
the weights, gradients and optimiser state stay float32.
"""

from __future__ import annotations

import argparse
import sys

import torch

GIB = 2**30


def saved_bytes(module: torch.nn.Module, *inputs: torch.Tensor) -> int:
    """Bytes of the distinct tensors autograd saves in one forward pass of ``module`` (meta tensors are fine)."""
    kept: dict[int, torch.Tensor] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        kept[id(t)] = t
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(*inputs)
    return sum(t.numel() * t.element_size() for t in kept.values())


def largest_block_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """The saved tensors of the most expensive residual block, computed alone (the recomputation peak)."""
    from medfoundry.modeling.tsfm.blocks import PreActResBlock

    shapes: dict[int, torch.Size] = {}
    hooks = [
        m.register_forward_pre_hook(lambda m, a: shapes.__setitem__(id(m), a[0].shape))
        for m in model.modules()
        if isinstance(m, PreActResBlock)
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    blocks = [m for m in model.modules() if isinstance(m, PreActResBlock)]
    return max(saved_bytes(m, torch.empty(shapes[id(m)], device="meta")) for m in blocks)


def report(preset: str, patch: tuple[int, int, int], gpus: int, optimizer: str, batch: int) -> dict:
    from medfoundry.modeling.tsfm import build_tsfm, count_parameters, set_activation_checkpointing
    from medfoundry.training.parallel import shard_units

    model = build_tsfm(preset, device="meta", patch_size=patch)
    x = torch.empty(batch, 1, *patch, device="meta")
    params = count_parameters(model)
    plain = saved_bytes(model, x)
    peak = largest_block_bytes(model, x)
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    set_activation_checkpointing(model, True)
    kept = saved_bytes(model, x)
    unit = max(count_parameters(u) for u in shard_units(model))
    opt = {"sgd": 4, "adamw": 8}[optimizer] * params
    ddp = 4 * params + 4 * params + opt + 4 * params
    fsdp = (8 * params + opt) / gpus + 3 * 4 * unit
    return {
        "params": params,
        "unit": unit,
        "ddp": ddp,
        "fsdp": fsdp,
        "act": plain,
        "act_ckpt": kept + peak,
        "ckpt_kept": kept,
        "ckpt_peak": peak,
        "tflop": counter.get_total_flops() / 1e12,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="huge")
    p.add_argument("--patch", type=int, nargs=3, default=[112, 160, 192], metavar=("Z", "Y", "X"))
    p.add_argument("--gpus", type=int, default=8, help="processes FSDP shards over")
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd")
    p.add_argument("--batch", type=int, default=1, help="patches per GPU")
    args = p.parse_args(argv)
    r = report(args.preset, tuple(args.patch), args.gpus, args.optimizer, args.batch)
    g = lambda b: f"{b / GIB:.1f} GiB"  # noqa: E731
    print(f"{args.preset}, patch {tuple(args.patch)}, batch {args.batch} per GPU, {args.optimizer}, {args.gpus} GPUs")
    print(f"parameters {r['params']:,} ({g(4 * r['params'])} in float32); largest FSDP unit {r['unit']:,}")
    print(
        f"{r['tflop']:.1f} TFLOP per step and GPU (forward + backward; checkpointing adds one forward, about a third)"
    )
    print(f"training state per GPU: DDP {g(r['ddp'])}, FSDP {g(r['fsdp'])}")
    print(
        f"activations (float32): {g(r['act'])} without checkpointing; {g(r['act_ckpt'])} with it "
        f"({g(r['ckpt_kept'])} kept + {g(r['ckpt_peak'])} while the largest block is recomputed)"
    )
    print("| mode | state | activations fp32 | total fp32 | total with bf16 activations (about half) |")
    print("|---|---|---|---|---|")
    for mode in ("ddp", "fsdp"):
        for ckpt in (False, True):
            act = r["act_ckpt"] if ckpt else r["act"]
            name = f"{mode.upper()}{' + checkpointing' if ckpt else ''}"
            print(f"| {name} | {g(r[mode])} | {g(act)} | {g(r[mode] + act)} | {g(r[mode] + act / 2)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
