"""Loading ``.pt`` / ``.pth`` files safely: tensors and plain Python values only, never code.

Every checkpoint, adapter, model bundle and weights file goes through ``torch.load(..., weights_only=True)``:
a pickle that would import or call anything else (a payload in ``__reduce__``) is refused before it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medfoundry.errors import InputError, WeightsError


def _numpy_scalar_globals() -> list:
    """numpy's scalar reconstructor and dtype classes: data, not code (nnU-Net logs numpy floats)."""
    import numpy as np

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar
    dtypes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType") and not n.startswith("_")]
    return [scalar, np.dtype, *dtypes]


def plain(value: Any) -> Any:
    """``value`` with numpy scalars/arrays, paths and other leaves turned into plain dict/list/str/int/float
    (tensors are kept), so that it loads with ``weights_only=True``."""
    import numpy as np
    import torch

    if isinstance(value, torch.Tensor) or value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {k if isinstance(k, (str, int)) else str(k): plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def load_torch_file(path: str | Path, what: str = "checkpoint", numpy_scalars: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU; :class:`InputError` naming ``path`` if the file is missing,
    unreadable, or holds anything but tensors and plain values. ``numpy_scalars`` also allows numpy scalar values
    (nnU-Net's own checkpoints hold them)."""
    import pickle
    import re

    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"{what} not found")
    allowed = _numpy_scalar_globals() if numpy_scalars else []
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if re.search(r"Unsupported operand|invalid load key|truncated|ran out of input", str(exc), re.IGNORECASE):
            # not a pickle at all (garbage, a text file): unreadable, not a refused object
            raise InputError(path, f"cannot be read as a {what} (not a PyTorch file)") from None
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        detail = f"it imports {found.group(1)}" if found else "unsupported content"
        raise InputError(
            path, f"refused as a {what}: it holds Python objects, not only tensors ({detail}); such files are never run"
        ) from None
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a broken file
        first = (str(exc).splitlines() or [""])[0][:160]
        raise InputError(path, f"cannot be read as a {what} ({type(exc).__name__}: {first})") from None


def load_weights_file(path: str | Path, what: str = "PyTorch checkpoint") -> Any:
    """:func:`load_torch_file` for model weights: the same checks, a failure raised as :class:`WeightsError` (what
    the weights loaders raise for a missing or wrong weights file)."""
    try:
        return load_torch_file(path, what)
    except InputError as exc:
        raise WeightsError(str(exc)) from None
