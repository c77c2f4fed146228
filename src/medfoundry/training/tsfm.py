"""Training loop shared by ``medfoundry pretrain`` and ``medfoundry transfer`` (single or multi-process)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from medfoundry.data.pool import PoolDataset, load_pool_index
from medfoundry.data.sampler import WeightedDistributedSampler
from medfoundry.errors import InputError, MedfoundryError
from medfoundry.io.figures import pyplot_agg, save_figure
from medfoundry.modeling.tsfm.checkpoint import load_checkpoint, make_payload, save_checkpoint
from medfoundry.modeling.tsfm.loss import PartialLabelBCEDiceLoss
from medfoundry.modeling.tsfm.network import TSFM, set_activation_checkpointing
from medfoundry.training.distributed import DistEnv, all_mean, barrier
from medfoundry.training.parallel import check_parallel, checkpoint_state, load_optimizer_state, wrap
from medfoundry.training.resume import resume_or_refuse

LAST = "last.pt"
FINAL = "model.pt"


class TrainingStopped(MedfoundryError, RuntimeError):
    """Training failed part-way (a crashed data worker, a failed process); the last checkpoint is kept."""


@dataclass
class TrainSettings:
    """Optimisation settings (nnU-Net / paper defaults: SGD, Nesterov 0.99, poly learning rate)."""

    epochs: int = 10
    iters_per_epoch: int = 250
    batch_size: int = 2
    lr: float = 1e-2
    optimizer: str = "sgd"  # or "adamw"
    momentum: float = 0.99
    weight_decay: float = 1e-3
    grad_clip: float = 12.0
    num_workers: int = 0
    seed: int = 0
    mirror: bool = True
    foreground_share: float | None = None  # None: the pool's value
    amp: bool = False  # bf16 autocast on CUDA (refused on other devices)
    parallel: str = "ddp"  # several processes: "ddp" (a full copy each) or "fsdp" (sharded; training.parallel)
    checkpointing: bool = False  # activation checkpointing: recompute blocks in the backward pass


def preprocessing_of(index: dict) -> dict:
    """What inference needs to preprocess a new image like the pool was: spacing, CT stats, modalities."""
    return {
        "spacing_xyz_mm": index["spacing_xyz_mm"],
        "ct_stats": index.get("ct_stats"),
        "modalities": sorted({s["modality"] for s in index["sources"].values()}),
        "patch_size_zyx": index["patch_size_zyx"],
    }


def _optimizer(model: torch.nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    if s.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=s.lr, momentum=s.momentum, nesterov=True, weight_decay=s.weight_decay
        )
    if s.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    raise InputError(None, f"unknown optimizer {s.optimizer!r}; use 'sgd' or 'adamw'")


def poly_lr(base: float, epoch: int, epochs: int, exponent: float = 0.9) -> float:
    """nnU-Net's polynomial learning-rate decay."""
    return base * (1 - epoch / max(epochs, 1)) ** exponent


def _plot_history(history: list[dict], path: Path, title: str) -> None:
    plt = pyplot_agg()

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([h["epoch"] for h in history], [h["loss"] for h in history], marker="o")
    ax.set_xlabel("epoch")
    ax.set_ylabel("BCE + Dice loss")
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path, overwrite=True, dpi=100)


def _restore(model: TSFM, last: Path, classes: list, env: DistEnv) -> dict:
    """Load the weights of ``last.pt`` into ``model`` (not yet wrapped) and return the checkpoint (its optimiser
    state is loaded once the optimiser exists). Refuses another network or label table."""
    ckpt = load_checkpoint(last)
    mine = model.config.to_dict()
    diff = sorted(k for k in set(mine) | set(ckpt["config"]) if mine.get(k) != ckpt["config"].get(k))
    if diff or ckpt["classes"] != classes:
        what = f"network settings {diff}" if diff else f"classes {ckpt['classes']} vs {classes}"
        raise InputError(
            last,
            f"cannot resume: the checkpoint (preset {ckpt['config'].get('preset')!r}) differs from this run "
            f"(preset {model.config.preset!r}) in {what}",
        )
    model.load_state_dict({k: v.to(env.device) for k, v in ckpt["model"].items()})
    return ckpt


def check_amp(settings: TrainSettings, device: torch.device) -> None:
    """:class:`InputError` when mixed precision is asked for on a device without it (only CUDA here)."""
    if settings.amp and device.type != "cuda":
        raise InputError(None, f"`amp` (bf16 mixed precision) needs a CUDA device; this run is on {device.type}")


def _autocast(settings: TrainSettings, device: torch.device):
    """bf16 autocast on CUDA when ``settings.amp`` (no loss scaling needed for bf16), else a no-op context."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=settings.amp and device.type == "cuda")


def _pool_loader(pool_dir: str | Path, model: TSFM, settings: TrainSettings, env: DistEnv):
    """(loader, sampler) drawing ``iters_per_epoch`` foreground-weighted patch batches per epoch and rank."""
    dataset = PoolDataset(pool_dir, model.config.patch_size, settings.foreground_share, settings.mirror)
    sampler = WeightedDistributedSampler(
        dataset.weights,
        settings.iters_per_epoch * settings.batch_size,
        env.rank,
        env.world_size,
        settings.seed,
    )
    loader = DataLoader(
        dataset,
        batch_size=settings.batch_size,
        sampler=sampler,
        num_workers=settings.num_workers,
        drop_last=True,
        persistent_workers=settings.num_workers > 0,
        pin_memory=env.device.type == "cuda",  # page-locked batches: asynchronous host-to-GPU copies
    )
    return loader, sampler


def _train_epoch(net, loader, optimizer, loss_fn, settings: TrainSettings, env: DistEnv, bar_desc: str, progress: bool):
    """One pass over ``loader``; returns the per-iteration losses."""
    net.train()
    losses = []
    bar = tqdm(loader, desc=bar_desc, unit="it", disable=not (progress and env.is_main), leave=False)
    for batch in bar:
        image = batch["image"].to(env.device, non_blocking=True)
        target = batch["target"].to(env.device, non_blocking=True)
        annotated = batch["annotated"].to(env.device)
        with _autocast(settings, env.device):
            logits = net(image)
        loss = loss_fn(logits.float(), target, annotated)  # the loss in float32
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.grad_clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), settings.grad_clip)
        optimizer.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return losses


def _write_final(model: TSFM, out_dir: Path, final_payload: dict, history: list[dict], kind: str) -> None:
    """``model.pt``, ``history.json`` and the loss plot (rank 0)."""
    from medfoundry.io.atomic import atomic_path

    save_checkpoint(out_dir / FINAL, final_payload, overwrite=True)
    with atomic_path(out_dir / "history.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps(history, indent=2))
    if history:
        _plot_history(history, out_dir / "loss.png", f"{kind} ({model.config.preset})")


def fit(
    model: TSFM,
    pool_dir: str | Path,
    out_dir: str | Path,
    settings: TrainSettings,
    env: DistEnv | None = None,
    kind: str = "pretrain",
    resume: bool = False,
    overwrite: bool = False,
    info: dict | None = None,
    progress: bool = True,
) -> list[dict]:
    """Train ``model`` on the preprocessed pool in ``pool_dir``; checkpoints go to ``out_dir`` (``last.pt``
    after every epoch, ``model.pt`` at the end, written by rank 0 only). Returns the per-epoch history.

    With ``resume`` the run continues from ``out_dir/last.pt`` (its network and label table must match). Several
    processes share the work as ``settings.parallel`` says (:mod:`medfoundry.training.parallel`).
    """
    env = env or DistEnv()
    check_parallel(settings.parallel)
    out_dir = Path(out_dir)
    index = load_pool_index(pool_dir)
    classes = list(index["classes"])
    if model.config.num_classes != len(classes):
        raise InputError(pool_dir, f"the pool has {len(classes)} classes, the network {model.config.num_classes}")
    last = out_dir / LAST
    check_amp(settings, env.device)
    model.to(env.device)  # before the optimizer, so resumed optimiser state lands on the right device
    set_activation_checkpointing(model, settings.checkpointing)
    ckpt = None
    if resume_or_refuse(out_dir, [last] if last.exists() else [], resume=resume, overwrite=overwrite):
        ckpt = _restore(model, last, classes, env)
    net = wrap(model, env, settings.parallel)  # FSDP shards ``model`` in place: the optimizer comes after
    optimizer = _optimizer(model, settings)
    history: list[dict] = []
    start = 0
    if ckpt is not None:
        if ckpt.get("optimizer"):
            load_optimizer_state(model, optimizer, ckpt["optimizer"])
        history, start = list(ckpt.get("history", [])), int(ckpt["epoch"])
        del ckpt
    if start >= settings.epochs and env.is_main:
        print(f"{last}: already trained for {start} epochs (asked for {settings.epochs}); nothing to do")

    torch.manual_seed(settings.seed * 1000 + env.rank + 7919 * start)
    loader, sampler = _pool_loader(pool_dir, model, settings, env)
    loss_fn = PartialLabelBCEDiceLoss()
    payload_extra = {"kind": kind, "settings": asdict(settings), "info": info or {}}
    preprocessing = preprocessing_of(index)

    epoch = start
    try:
        for epoch in range(start, settings.epochs):
            for group in optimizer.param_groups:
                group["lr"] = poly_lr(settings.lr, epoch, settings.epochs)
            sampler.set_epoch(epoch)
            t0 = time.time()
            desc = f"{kind} epoch {epoch + 1}/{settings.epochs}"
            losses = _train_epoch(net, loader, optimizer, loss_fn, settings, env, desc, progress)
            mean_loss = all_mean(float(np.mean(losses)) if losses else float("nan"), env)
            history.append(
                {
                    "epoch": epoch + 1,
                    "loss": mean_loss,
                    "lr": optimizer.param_groups[0]["lr"],
                    "s": time.time() - t0,
                }
            )
            weights, optim = checkpoint_state(model, optimizer, env)  # every rank calls it (FSDP gathers)
            if env.is_main:
                if progress:
                    print(
                        f"{kind} epoch {epoch + 1}/{settings.epochs}: loss {mean_loss:.4f} ({time.time() - t0:.0f} s)"
                    )
                payload = make_payload(
                    model,
                    classes,
                    preprocessing,
                    weights=weights,
                    epoch=epoch + 1,
                    optimizer=optim,
                    history=history,
                    **payload_extra,
                )
                save_checkpoint(last, payload, overwrite=True)
            del weights, optim
            barrier(env)
    except (MedfoundryError, KeyboardInterrupt):
        raise
    except (RuntimeError, OSError) as exc:
        where = f"the last checkpoint ({last}, epoch {epoch}) is kept" if last.exists() else "no checkpoint yet"
        raise TrainingStopped(
            f"{kind} stopped in epoch {epoch + 1}: {type(exc).__name__}: {str(exc).splitlines()[0]}; "
            f"{where}; run the same command with `resume` to continue"
        ) from exc

    weights, _ = checkpoint_state(model, None, env)  # every rank calls it (FSDP gathers)
    if env.is_main:
        final = make_payload(
            model, classes, preprocessing, weights=weights, epoch=settings.epochs, history=history, **payload_extra
        )
        _write_final(model, out_dir, final, history, kind)
    barrier(env)
    return history
