"""Training-curve picture: training loss and validation scores (3D DSC exact / loose box, 2D DSC / NSD) per epoch."""

from __future__ import annotations

from pathlib import Path

from medfoundry.io.figures import pyplot_agg, save_figure

_VAL_LINES = (
    ("val3d_dsc", "3D DSC, exact 3D box", "o-"),
    ("val3d_dsc_loose", "3D DSC, loose 3D box", "^-"),
    ("val_dsc", "2D DSC, exact box", "s--"),
    ("val_nsd", "2D NSD", "x:"),
)


def save_curves(history: list[dict], path: str | Path, title: str = "") -> Path:
    """Write a PNG of ``history`` (one dict per epoch with ``train_loss`` and the validation scores it has;
    epoch -1, the untrained adapter's validation, is drawn at epoch 0)."""
    plt = pyplot_agg()

    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(9, 3.5))
    trained = [h for h in history if h.get("train_loss") is not None]
    ax_loss.plot([h["epoch"] + 1 for h in trained], [h["train_loss"] for h in trained], "o-", color="tab:red")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    drawn = False
    for key, label, style in _VAL_LINES:
        points = [(h["epoch"] + 1, h[key]) for h in history if h.get(key) is not None]
        if points:
            ax_val.plot(*zip(*points, strict=True), style, label=label)
            drawn = True
    if drawn:
        ax_val.set_ylim(0, 1)
        ax_val.legend(fontsize=7)
    ax_val.set(xlabel="epoch (0: before training)", ylabel="score", title="validation")
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, overwrite=True, dpi=100)
    return Path(path)
