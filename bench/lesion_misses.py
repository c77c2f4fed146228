"""Why does ``medfoundry lesions`` miss a lesion? One line per reference lesion of the inserted-lesion scans of
``bench/lesions_wholebody.py`` (STS_001 with lesions of the held-out crops inserted, the same seeds and
templates), with where it was lost:

* ``below threshold``: its SUVmax does not exceed the scan's threshold (PERCIST: not measurable);
* ``no candidate``: its voxels above the threshold (mL, and in how many 26-connected pieces) give no candidate,
  i.e. every piece is under ``--min-volume`` (0.5 mL);
* ``rejected``: candidates overlap it but the classifier (or the symmetry rule) turned them down (scores shown);
* ``found``.

Detection happens before delineation, so this runs the fastest delineation (``threshold``).

    PYTHONPATH=src python bench/lesion_misses.py [--inserted 4] [--templates 21 ... 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import importlib.util
from collections import Counter
from pathlib import Path

import cc3d
import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def _lesions_bench():
    """bench/lesions_wholebody.py, for its inserted-lesion scans (one definition)."""
    spec = importlib.util.spec_from_file_location("lesions_wholebody", HERE / "lesions_wholebody.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data"))
    p.add_argument("--inserted", type=int, default=4)
    p.add_argument("--templates", type=int, nargs="+", default=list(range(21, 31)))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from medfoundry.api import make_predictor
    from medfoundry.inference.lesions.pipeline import find_lesions

    predictor = make_predictor()
    outcomes: Counter[str] = Counter()
    print("| scan | lesion | z | volume mL | SUVmax | threshold | above threshold mL (pieces) | outcome |")
    print("|---|---|---|---|---|---|---|---|")
    for name, image, ref in _lesions_bench().inserted_cases(Path(args.data), args.templates, args.inserted):
        res = find_lesions(image, delineation="threshold", predictor=predictor, progress=False)
        suv, t = res.suv.array, res.threshold.threshold
        voxel_ml = float(np.prod(res.suv.spacing)) / 1000.0
        lesions = cc3d.connected_components(ref.astype(np.uint8), connectivity=26)
        candidate_masks = [c.full_mask(suv.shape) for c in res.candidates]
        for index in range(1, int(lesions.max()) + 1):
            mask = lesions == index
            hot = mask & (suv > t)
            pieces = int(cc3d.connected_components(hot.astype(np.uint8), connectivity=26).max())
            hits = [i for i, m in enumerate(candidate_masks) if (m & mask).any()]
            if not hot.any():
                outcome = "below threshold"
            elif not hits:
                outcome = "no candidate"
            elif any(res.accepted[i] for i in hits):
                outcome = "found"
            else:
                scores = ", ".join(
                    f"{res.scores[i]:.2f}" + (" (mirror pair)" if res.symmetric[i] else "") for i in hits
                )
                outcome = f"rejected (scores {scores})"
            outcomes[outcome.split(" (")[0]] += 1
            z = np.nonzero(mask.any(axis=(1, 2)))[0]
            print(
                f"| {name} | {index} | {z.min()}-{z.max()} | {mask.sum() * voxel_ml:.1f} | {suv[mask].max():.2f} | "
                f"{t:.2f} | {hot.sum() * voxel_ml:.2f} ({pieces}) | {outcome} |"
            )
    print("\n" + ", ".join(f"{k}: {v}" for k, v in outcomes.most_common()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
