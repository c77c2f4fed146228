"""When a fine-tuning run stops, what it says when no epoch beat the untrained adapter, and how long it has left.

Early stopping counts only after ``min_epochs`` epochs (and after a decoder warm-up), and never stops a run whose
best state is still the untrained adapter: that run trains on to its last epoch, and if no epoch has beaten the
untrained adapter by then, :func:`untrained_notice` says so (``best.pt`` is then the untrained adapter)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class StopRule:
    """Early stopping: at most ``max_epochs``; after at least ``min_epochs`` (and ``warm_epochs`` + 1 when a decoder
    warm-up runs), stop once ``patience`` epochs in a row have not beaten the best trained epoch. ``patience`` 0:
    never stop early. The best state being the untrained adapter (``best_epoch`` -1) never stops a run."""

    max_epochs: int
    patience: int = 0
    min_epochs: int = 0
    warm_epochs: int = 0

    @property
    def first_stop(self) -> int:
        """The fewest epochs a run can stop after."""
        return max(self.min_epochs, self.warm_epochs + 1 if self.warm_epochs else 0, 1)

    def should_stop(self, epochs_done: int, best_epoch: int) -> bool:
        """Whether a run with ``epochs_done`` epochs behind it, whose best is epoch ``best_epoch`` (0-based; -1:
        the untrained adapter), stops here."""
        if epochs_done >= self.max_epochs:
            return True
        if not self.patience or best_epoch < 0 or epochs_done < self.first_stop:
            return False
        return epochs_done - 1 - best_epoch >= self.patience

    def end_if_no_better(self, epochs_done: int, best_epoch: int) -> int:
        """How many epochs the run has in all if no later epoch beats epoch ``best_epoch``."""
        if not self.patience or best_epoch < 0:
            return self.max_epochs
        return min(self.max_epochs, max(self.first_stop, best_epoch + 1 + self.patience, epochs_done))


def format_duration(seconds: float) -> str:
    """``"45 s"``, ``"3 min 05 s"`` or ``"1 h 02 min"``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def time_left(rule: StopRule, epochs_done: int, best_epoch: int, epoch_seconds: Sequence[float | None]) -> str:
    """The remaining time after ``epochs_done`` epochs, from the wall time of the epochs run so far
    (``epoch_seconds[e]``, training + validation; ``None`` where not known), the last one of each phase standing
    for the epochs to come in that phase (decoder warm-up, then the epochs through the encoder): until the early
    stop if no better epoch comes, and at most (every epoch). Epochs through the encoder not yet timed are
    named, not guessed."""
    last = {}
    for e, sec in enumerate(epoch_seconds[:epochs_done]):
        if sec is not None:
            last[e < rule.warm_epochs] = sec

    def estimate(end: int) -> tuple[float, int]:
        known, untimed = 0.0, 0
        for e in range(epochs_done, end):
            sec = last.get(e < rule.warm_epochs)
            if sec is None:
                untimed += 1
            else:
                known += sec
        return known, untimed

    def text(seconds: float, untimed: int) -> str:
        if not untimed:
            return format_duration(seconds)
        more = f"{untimed} epoch{'s' if untimed > 1 else ''} through the encoder, not yet timed"
        return f"{format_duration(seconds)} + {more}" if seconds else more

    if rule.should_stop(epochs_done, best_epoch):
        return "the run stops here"
    end = rule.end_if_no_better(epochs_done, best_epoch)
    most = text(*estimate(rule.max_epochs))
    if end >= rule.max_epochs:
        return f"left: at most {most} ({rule.max_epochs - epochs_done} of {rule.max_epochs} epochs)"
    return (f"left: {text(*estimate(end))} if no better epoch comes (stop after epoch {end}), at most {most} "
            f"({rule.max_epochs} epochs)")  # fmt: skip


def untrained_notice(epochs: int, val_what: str, best_trained: float | None, untrained: float) -> str:
    """What a run says when no epoch beat the untrained adapter (``best.pt`` is then that adapter), with advice."""
    trained = f"best trained epoch {best_trained:.3f}" if best_trained is not None else "no trained epoch scored"
    return (
        f"no epoch of {epochs} beat the untrained adapter on validation ({val_what}: untrained {untrained:.3f}, "
        f"{trained}), so best.pt is the untrained adapter: segmenting with it is no better than the base model "
        "(zero-shot) on these patients. Validate on more patients (--val-cases; a 3D score of 3 patients is "
        "noisy), train longer (--epochs), check the labels, or use last.pt (the last trained state) knowingly"
    )
