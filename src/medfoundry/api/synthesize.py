"""``synthesize``: exemplar-guided cut-and-paste training data from a few labelled scans."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medfoundry.api.common import resolve_options
from medfoundry.errors import InputError, OutputExistsError


@dataclass
class SynthesizeOptions:
    """``exemplars``: a folder of NAME_image / NAME_mask pairs (or images/ + labels/); ``out`` the folder to write
    (refused if it exists unless ``overwrite``); ``count`` synthetic images from the exemplar ``cases`` (or the
    first ``n_exemplars``), images matching ``image_glob``."""

    exemplars: Path
    out: Path
    count: int = 100
    n_exemplars: int | None = None
    cases: list[str] | None = None
    image_glob: str | None = None
    modality: str | None = None
    seed: int = 0
    overwrite: bool = False


@dataclass
class SynthesizeResult:
    """The folder written and the exemplar cases used."""

    out: Path
    cases: list[str]
    count: int


def synthesize(options: SynthesizeOptions | None = None, **fields) -> SynthesizeResult:
    """Cut each labelled object from the exemplar slices, transform it and paste it onto a transformed slice
    without foreground; writes ``OUT/syn_NNNN_{image,mask}.nii.gz``, ``dataset.json`` and ``synthesis.png``."""
    from medfoundry.data.slices2d import case_name, find_pairs, read_pair
    from medfoundry.data.synthesis import synthesize_dataset
    from medfoundry.io.paths import modality_from_name

    o = resolve_options(SynthesizeOptions, options, fields)
    out = Path(o.out)
    if out.exists() and not o.overwrite:
        raise OutputExistsError(out)
    root = Path(o.exemplars)
    pairs = find_pairs(root, o.image_glob)
    by_case: dict[str, list] = {}
    for image_path, mask_path in pairs:
        by_case.setdefault(case_name(image_path, root), []).append((image_path, mask_path))
    cases = sorted(by_case)
    if o.cases:
        missing = sorted(set(o.cases) - set(cases))
        if missing:
            raise InputError(root, f"exemplar cases not found: {', '.join(missing[:5])}")
        cases = list(o.cases)
    if o.n_exemplars is not None:
        if o.n_exemplars > len(cases):
            raise InputError(root, f"asked for {o.n_exemplars} exemplars but only {len(cases)} cases exist")
        cases = cases[: o.n_exemplars]
    loaded = []
    for case in cases:
        for image_path, mask_path in by_case[case]:
            image, mask = read_pair(image_path, mask_path, o.modality)
            loaded.append((image, mask, case))
    modality = o.modality or modality_from_name(by_case[cases[0]][0][0])
    synthesize_dataset(loaded, out, o.count, modality=modality, seed=o.seed, overwrite=o.overwrite)
    return SynthesizeResult(out, cases, o.count)
