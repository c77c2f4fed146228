"""Learning-rate schedules: linear warm-up then exponential decay (per step), or ReduceLROnPlateau on the
validation DSC (per epoch)."""

from __future__ import annotations

import torch

from medfoundry.errors import InputError

SCHEDULES = ("warmup-exp", "plateau")


def make_scheduler(
    optimizer: torch.optim.Optimizer, name: str, warmup_steps: int, decay_per_step: float
) -> torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau:
    """``warmup-exp``: factor ``(s + 1) / warmup`` for the first steps, then ``decay ** (s - warmup)``;
    ``plateau``: halve the rate after 2 epochs without a better validation DSC."""
    if name == "warmup-exp":
        warmup = max(1, int(warmup_steps))

        def factor(step: int) -> float:
            return (step + 1) / warmup if step < warmup else decay_per_step ** (step - warmup)

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=2)
    raise InputError(None, f"unknown schedule {name!r}; use one of {SCHEDULES}")
