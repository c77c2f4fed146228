"""How long nnU-Net trains: the :class:`Schedule` the medfoundry trainers apply, and the named schedules.

A module of its own so that the trainer classes (:mod:`.nnunet_trainers`, which import nnunetv2) and the training
entry point (:mod:`.trainers`) both read it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from medfoundry.errors import InputError


@dataclass(frozen=True)
class Schedule:
    """How long nnU-Net trains: epochs x iterations, validation iterations, batch size (None = nnU-Net's plan).

    ``snapshot_epochs``: after each of these epochs the weights are also kept as ``checkpoint_epN.pth`` (for
    test-Dice-against-training-length curves); the last epoch is ``checkpoint_final.pth`` as usual.
    """

    epochs: int = 1000
    iterations_per_epoch: int = 250
    val_iterations: int = 50
    batch_size: int | None = None
    initial_lr: float = 1e-2
    save_every: int = 50
    snapshot_epochs: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in ("epochs", "iterations_per_epoch", "val_iterations", "save_every"):
            if int(getattr(self, name)) < 1:
                raise InputError(None, f"schedule {name} must be at least 1, got {getattr(self, name)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(None, f"batch size must be at least 1, got {self.batch_size}")
        if not self.initial_lr > 0:
            raise InputError(None, f"learning rate must be positive, got {self.initial_lr}")
        snaps = tuple(sorted({int(e) for e in self.snapshot_epochs}))
        if any(not 1 <= e <= int(self.epochs) for e in snaps):
            raise InputError(None, f"snapshot epochs must lie in 1..{self.epochs}, got {list(snaps)}")
        object.__setattr__(self, "snapshot_epochs", snaps)


def snapshot_name(epoch: int) -> str:
    """File name of the weights kept after ``epoch`` epochs (see :attr:`Schedule.snapshot_epochs`)."""
    return f"checkpoint_ep{int(epoch)}.pth"


SCHEDULES: dict[str, Schedule] = {
    # nnU-Net's own: 1000 epochs of 250 iterations, batch size from the plan (a GPU setting)
    "nnunet": Schedule(),
    # a short CPU schedule: 8 epochs of 25 iterations at batch size 4, checkpoint every epoch
    "cpu": Schedule(epochs=8, iterations_per_epoch=25, val_iterations=2, batch_size=4, save_every=1),
    # for tests and smoke runs
    "tiny": Schedule(epochs=1, iterations_per_epoch=2, val_iterations=1, batch_size=2, save_every=1),
}


def make_schedule(name: str = "cpu", **overrides: int | float | None) -> Schedule:
    """A named schedule with some fields replaced (``None`` values are ignored)."""
    if name not in SCHEDULES:
        raise InputError(None, f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    return replace(SCHEDULES[name], **changes)
