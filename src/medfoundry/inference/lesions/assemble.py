"""From one outline per accepted candidate to the lesion label map: touching lesions stay apart, parts of one
lesion join, and nothing is reported that is not a lesion.

1. **Split at the saddle.** Every voxel of the outlines goes to the candidate whose hot core it connects to at
   the highest SUV: a watershed of the SUV seeded by the candidates (each one's voxels above the threshold, kept
   in its lesion), within the union of the outlines. Outline voxels that reach no candidate are dropped (they
   have no score).
2. **One lesion or two.** Parts of one hot region (confluent above the candidate threshold) are one lesion, as
   RECIST 1.1 measures lesions that have coalesced as one; the candidate stage split them only so that the
   classifier judges each hot spot. Parts of different hot regions whose outlines touch are joined from the
   highest saddle down (a merge tree, as the maxima of a watershed are ranked by their dynamics): where two
   groups meet, the fainter one stays a lesion of its own when the SUV between them drops below half its
   contrast, ``saddle - background < MERGE_CONTRAST x (SUVmax - background)`` (its SUVmax and its local
   background, :func:`delineate.local_background`), and joins the other otherwise. That is the half-maximum
   criterion of two objects the scanner resolves: at half its contrast each focus is its own region (two nodes
   side by side), or both maxima lie in one region (hot spots of one tumour whose uptake between them stays
   high). A part accepted only through the hysteresis join (:mod:`.grouping`: its score is below the cut) joins
   the touching lesion it meets at the highest saddle: it was accepted as a piece of that lesion.
3. **Report only lesions.** A lesion smaller than ``min_volume_ml`` or whose SUVmax is not above the threshold
   (possible after the split, or after mapping a coarse detection back to a finer grid) joins the touching
   lesion with the highest saddle, or is dropped when it touches none. Each lesion's score is the highest score
   of its candidates, so every lesion has one.

Lesions may touch in the label map (distinct labels). ``medfoundry evaluate --lesion-wise`` binarises a
prediction and counts 18-connected components, as autoPET does, so two touching lesions are one predicted
component there; the label map keeps them apart for the per-lesion table (SUVmax, MTV, TLG per lesion).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import cc3d
import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

from medfoundry.inference.lesions.candidates import Candidate
from medfoundry.preprocessing.pet_background import grown_box

MERGE_CONTRAST = 0.5  # parts stay one lesion while the saddle keeps half of the fainter part's contrast
# the 9 "forward" offsets of the 18-neighbourhood, so that every 18-adjacent pair of voxels is seen once
_OFFSETS = [d for d in itertools.product((-1, 0, 1), repeat=3) if 0 < sum(map(abs, d)) <= 2 and d > (0, 0, 0)]


@dataclass
class Lesions:
    """The label map (1 = hottest lesion) and, per label, its score and the indices of its candidates."""

    labels: np.ndarray
    scores: list[float] = field(default_factory=list)
    members: list[list[int]] = field(default_factory=list)


def _saddles(parts: np.ndarray, suv: np.ndarray, n: int) -> np.ndarray:
    """(n + 1, n + 1) symmetric: the highest min(SUV) over 18-adjacent voxel pairs of two parts (-inf: not touching)."""
    saddle = np.full((n + 1, n + 1), -np.inf)
    shape = np.array(parts.shape)
    for d in _OFFSETS:
        src = tuple(slice(max(0, -k), s - max(0, k)) for k, s in zip(d, shape, strict=True))
        dst = tuple(slice(max(0, k), s - max(0, -k)) for k, s in zip(d, shape, strict=True))
        a, b = parts[src], parts[dst]
        pair = (a != b) & (a > 0) & (b > 0)
        if pair.any():
            low = np.minimum(suv[src][pair], suv[dst][pair])
            np.maximum.at(saddle, (a[pair], b[pair]), low)
    return np.maximum(saddle, saddle.T)


def _largest_pieces(labels: np.ndarray) -> np.ndarray:
    """Each label reduced to its largest 18-connected piece (``medfoundry evaluate --lesion-wise`` counts
    18-connected components; candidates are 26-connected, so a lesion may hold a voxel joined only by a corner)."""
    pieces = cc3d.connected_components(labels, connectivity=18)  # pieces of one label value each
    sizes = np.bincount(pieces.ravel())
    owner = np.zeros(sizes.size, dtype=np.int64)
    owner[pieces.ravel()] = labels.ravel()
    best = np.zeros(int(labels.max()) + 1, dtype=np.int64)
    order = np.argsort(sizes)  # ascending: the largest piece of each label is written last
    best[owner[order]] = order
    keep = np.isin(pieces, best[1:])
    return np.where(keep, labels, 0).astype(labels.dtype)


class _Groups:
    """Union-find over candidate indices, tracking each group's SUVmax, volume and whether it holds a candidate
    accepted on its own score."""

    def __init__(self, peaks: np.ndarray, volumes: np.ndarray, own: np.ndarray, backgrounds: np.ndarray) -> None:
        self.parent = list(range(len(peaks)))
        self.peak, self.volume, self.own = peaks.copy(), volumes.copy(), own.copy()
        self.background = backgrounds.copy()  # the local background of the group's hottest part

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, i: int, j: int) -> None:
        i, j = self.find(i), self.find(j)
        if i != j:
            self.parent[j] = i
            if self.peak[j] > self.peak[i]:
                self.peak[i], self.background[i] = self.peak[j], self.background[j]
            self.volume[i] += self.volume[j]
            self.own[i] |= self.own[j]

    def best_neighbour(self, i: int, saddle: np.ndarray, want_own: bool = False, skip: set | None = None):
        """The group touching group ``i`` at the highest saddle (one holding an own-accepted candidate if
        ``want_own``; never one in ``skip``), or None."""
        root = self.find(i)
        best, best_saddle = None, -np.inf
        for a in range(len(self.parent)):
            if self.find(a) != root:
                continue
            for b in np.flatnonzero(np.isfinite(saddle[a])):
                rb = self.find(int(b))
                usable = rb != root and (self.own[rb] or not want_own) and rb not in (skip or ())
                if usable and saddle[a, b] > best_saddle:
                    best, best_saddle = rb, saddle[a, b]
        return best


def assemble_lesions(
    masks: list[np.ndarray],
    candidates: list[Candidate],
    scores: list[float],
    cut: float,
    suv: np.ndarray,
    spacing_zyx: tuple[float, ...],
    threshold: float,
    min_volume_ml: float,
    backgrounds: list[float],
) -> Lesions:
    """The lesion label map from one whole-volume outline per accepted candidate (see the module docstring);
    ``backgrounds`` is each candidate's local background SUV, ``cut`` the classifier's acceptance cut."""
    empty = Lesions(np.zeros(suv.shape, dtype=np.uint16))
    if not masks:
        return empty
    union = np.logical_or.reduce(masks)
    for cand in candidates:  # every candidate seeds its lesion: its voxels in the outlines, or its hottest voxel
        if not union[cand.bbox][cand.mask].any():
            union[cand.peak_zyx] = True
    boxes = [ndimage.find_objects(union.astype(np.uint8))[0]] + [c.bbox for c in candidates]
    enclosing = tuple(slice(min(b[k].start for b in boxes), max(b[k].stop for b in boxes)) for k in range(3))
    box = grown_box(enclosing, suv.shape, spacing_zyx, 0.0)
    region, values = union[box], np.asarray(suv[box], dtype=np.float64)
    markers = np.zeros(region.shape, dtype=np.int32)
    for i, cand in enumerate(candidates):
        local = tuple(slice(b.start - g.start, b.stop - g.start) for b, g in zip(cand.bbox, box, strict=True))
        seed = cand.mask & region[local] & (markers[local] == 0)
        if not seed.any():
            seed = np.zeros_like(cand.mask)
            seed[tuple(p - b.start for p, b in zip(cand.peak_zyx, cand.bbox, strict=True))] = True
        markers[local][seed] = i + 1
    parts = watershed(-values, markers, mask=region, connectivity=2)
    n = len(candidates)
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    volumes = np.bincount(parts.ravel(), minlength=n + 1)[1:] * voxel_ml
    peaks = np.full(n + 1, -np.inf)
    np.maximum.at(peaks, parts.ravel(), values.ravel())
    peaks = peaks[1:]
    saddle = _saddles(parts, values, n)[1:, 1:]
    groups = _Groups(peaks, volumes, np.asarray(scores) >= cut, np.asarray(backgrounds, dtype=np.float64))
    first_of_region: dict[int, int] = {}
    for i, cand in enumerate(candidates):  # confluent above the threshold: one lesion (region 0: not known)
        if cand.region > 0:
            groups.join(first_of_region.setdefault(cand.region, i), i)
    # 2. one lesion or two: from the highest saddle down (where two groups first meet), the fainter group keeps
    # its own row when it rises above the saddle by more than half its contrast over its background
    pairs = np.argwhere(np.triu(np.isfinite(saddle), 1))
    for a, b in sorted(pairs.tolist(), key=lambda p: -saddle[p[0], p[1]]):
        ra, rb = groups.find(int(a)), groups.find(int(b))
        low = ra if groups.peak[ra] <= groups.peak[rb] else rb
        if ra != rb and saddle[a, b] - groups.background[low] >= MERGE_CONTRAST * (
            groups.peak[low] - groups.background[low]
        ):
            groups.join(ra, rb)
    for i in range(n):  # hysteresis-joined parts go to the lesion that vouched for them
        if not groups.own[groups.find(i)]:
            target = groups.best_neighbour(i, saddle, want_own=True)
            if target is not None:
                groups.join(target, i)
    # 3. what is too small or not above the threshold joins a neighbour or goes
    dropped: set[int] = set()
    while True:
        failing = [r for r in {groups.find(i) for i in range(n)} - dropped
                   if groups.volume[r] < min_volume_ml or groups.peak[r] <= threshold]  # fmt: skip
        if not failing:
            break
        root = min(failing, key=lambda r: groups.volume[r])
        target = groups.best_neighbour(root, saddle, skip=dropped)
        if target is None:
            dropped.add(root)
        else:
            groups.join(target, root)
    roots = sorted({groups.find(i) for i in range(n)} - dropped, key=lambda r: -groups.peak[r])
    number = {r: k + 1 for k, r in enumerate(roots)}
    lookup = np.zeros(n + 1, dtype=np.uint16)
    members: list[list[int]] = [[] for _ in roots]
    for i in range(n):
        root = groups.find(i)
        if root in number:
            lookup[i + 1] = number[root]
            members[number[root] - 1].append(i)
    labels = np.zeros(suv.shape, dtype=np.uint16)
    labels[box] = _largest_pieces(lookup[parts])
    return Lesions(labels, [max(float(scores[i]) for i in m) for m in members], members)
