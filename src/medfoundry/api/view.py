"""``view``: what the local web viewer opens, checked before it starts (the viewer itself, interactive, lives in
:mod:`medfoundry.viewer`, above this layer: ``medfoundry.viewer.ViewerSession(inputs.image, ...)``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medfoundry.api.common import ModelFields, WindowFields, resolve_options


@dataclass
class ViewOptions(WindowFields, ModelFields):
    """``view``: the label map to correct (``labels``), where 'save' writes (``out``), the server's ``host`` and
    ``port`` (0: a free one), ``open_browser``, the mask ``threshold``, the intensity options
    (:class:`~medfoundry.api.common.WindowFields`) and the model (:class:`~medfoundry.api.common.ModelFields`)."""

    labels: str | Path | None = None
    out: str | Path | None = None
    host: str = "127.0.0.1"
    port: int = 0
    open_browser: bool = True
    threshold: float = 0.5


@dataclass
class ViewInputs:
    """The image (read with the modality rule of ``segment`` and training) and the label map to correct, if any."""

    image: Any
    labels: Any = None


def view_inputs(image: str | Path, options: ViewOptions | None = None, **fields) -> ViewInputs:
    """Check ``out`` (a type that can be written, an existing folder, a writable place: refused now, not at the first
    save; an existing file is replaced only when a save confirms it), then read the image and ``labels``."""
    from medfoundry.errors import InputError
    from medfoundry.io import check_writable, read_mask
    from medfoundry.io.readers import file_suffix, read_image_for_model
    from medfoundry.io.writers import WRITE_SUFFIXES

    o = resolve_options(ViewOptions, options, fields)
    if o.out and file_suffix(o.out) not in WRITE_SUFFIXES:
        raise InputError(o.out, f"cannot write this file type; use one of {', '.join(WRITE_SUFFIXES)}")
    if o.out and not Path(o.out).resolve().parent.is_dir():
        raise InputError(o.out, "the output folder does not exist")
    if o.out:
        check_writable(o.out, overwrite=True)
    picture = read_image_for_model(image, o.modality)  # as api.read_for_segmentation
    labels = read_mask(o.labels, reference=picture) if o.labels else None
    return ViewInputs(picture, labels)
