"""Pictures as files: matplotlib on its file-only backend, and every figure saved as a PNG the one atomic way."""

from __future__ import annotations

from pathlib import Path

from medfoundry.io.atomic import atomic_path


def pyplot_agg():
    """matplotlib.pyplot on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, overwrite: bool = False, dpi: float | None = None) -> Path:  # noqa: ANN001 - a matplotlib Figure
    """Write ``fig`` as a PNG at ``path`` atomically (:func:`~medfoundry.io.atomic.atomic_path`: an existing file
    is refused unless ``overwrite``, a failed save leaves nothing) and close it; ``dpi`` None is matplotlib's
    default."""
    plt = pyplot_agg()
    try:
        with atomic_path(path, overwrite=overwrite) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return Path(path)
