"""Training-curve picture: training loss and validation DSC / NSD per epoch."""

from __future__ import annotations

from pathlib import Path

from medfoundry.io.atomic import atomic_path


def save_curves(history: list[dict], path: str | Path, title: str = "") -> Path:
    """Write a PNG of ``history`` (one dict per epoch with ``train_loss``, ``val_dsc``, ``val_nsd``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] + 1 for h in history]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", color="tab:red")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    if any(h.get("val_dsc") is not None for h in history):
        ax_val.plot(epochs, [h.get("val_dsc") for h in history], "o-", label="DSC")
        ax_val.plot(epochs, [h.get("val_nsd") for h in history], "s-", label="NSD")
        ax_val.set_ylim(0, 1)
        ax_val.legend()
    ax_val.set(xlabel="epoch", ylabel="score", title="validation")
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(path)
