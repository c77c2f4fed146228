"""What an organ detector returns: a mask on the working grid (or None), a status and a short reason."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FOUND = "found"
NOT_IN_FOV = "not in field of view"
NOT_FOUND = "not found"


@dataclass
class Organ:
    """One organ: ``status`` is :data:`FOUND` (``mask`` set), :data:`NOT_IN_FOV` or :data:`NOT_FOUND` (``mask``
    None), ``reason`` says why in a few words; ``info`` holds numbers worth reporting (uptake, position)."""

    name: str
    status: str
    reason: str
    mask: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    @property
    def found(self) -> bool:
        return self.status == FOUND and self.mask is not None


def found(name: str, mask: np.ndarray, reason: str, **info) -> Organ:
    return Organ(name, FOUND, reason, mask, info)


def not_found(name: str, reason: str, **info) -> Organ:
    return Organ(name, NOT_FOUND, reason, None, info)


def not_in_fov(name: str, reason: str, **info) -> Organ:
    return Organ(name, NOT_IN_FOV, reason, None, info)
