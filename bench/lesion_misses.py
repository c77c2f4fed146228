"""Why does ``medfoundry lesions`` miss a lesion? One line per reference lesion of the inserted-lesion scans of
``bench/lesions_wholebody.py`` (STS_001 with lesions of the held-out crops inserted, the same seeds and
templates), with where it was lost:

* ``below threshold``: its SUVmax does not exceed the scan's threshold (PERCIST: not measurable);
* ``no candidate``: its voxels above the threshold (mL, and in how many 26-connected pieces) give no candidate,
  i.e. every piece is under ``--min-volume`` (0.5 mL);
* ``rejected``: candidates overlap it but the classifier (or the symmetry rule) turned them down (scores shown);
* ``found``.

Each line also gives the lesion's SUVmax had its inserted uptake been imaged at PET resolution: the excess over
the background blurred by a Gaussian of ``--fwhm`` mm (6 mm, a current scanner's), a check on how much of a
small inserted lesion's SUVmax is texture finer than the scanner can show.

Detection happens before delineation, so this runs the fastest delineation (``threshold``). A second table
asks whether another candidate rule would give these lesions a candidate, and at what cost: per rule, the
lesions with a candidate-size component and the other components (hot organs, which the classifier then has to
turn down): ``--min-volume`` 0.5 (now), 0.25 and 0.15 mL; pieces within one voxel of each other grouped; the
size taken on the SUV smoothed by 0.7 and 1 voxel.

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
from scipy import ndimage

HERE = Path(__file__).resolve().parent


def _lesions_bench():
    """bench/lesions_wholebody.py, for its inserted-lesion scans (one definition)."""
    spec = importlib.util.spec_from_file_location("lesions_wholebody", HERE / "lesions_wholebody.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def candidate_rules(suv: np.ndarray, threshold: float, voxel_ml: float) -> dict[str, np.ndarray]:
    """Rule name -> labels of the components that rule keeps (0 elsewhere)."""
    hot = suv > threshold
    pieces = cc3d.connected_components(hot, connectivity=26)
    grouped = cc3d.connected_components(ndimage.binary_dilation(hot, np.ones((3, 3, 3), bool)), connectivity=26)
    labelled = {f"min volume {m} mL": (pieces, m) for m in (0.5, 0.25, 0.15)}
    labelled["pieces within 1 voxel grouped, 0.5 mL"] = (np.where(hot, grouped, 0), 0.5)
    for sigma in (0.7, 1.0):
        smooth = ndimage.gaussian_filter(suv.astype(np.float32), sigma) > threshold
        labelled[f"size on SUV smoothed {sigma} voxel, 0.5 mL"] = (cc3d.connected_components(smooth), 0.5)
    out = {}
    for name, (labels, min_ml) in labelled.items():
        small = np.bincount(labels.ravel()) * voxel_ml < min_ml
        small[0] = True
        out[name] = np.where(small[labels], 0, labels)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data"))
    p.add_argument("--inserted", type=int, default=4)
    p.add_argument("--templates", type=int, nargs="+", default=list(range(21, 31)))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--fwhm", type=float, default=6.0, help="PET resolution (mm) for the blurred SUVmax column")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from medfoundry.api import make_predictor
    from medfoundry.inference.lesions.pipeline import find_lesions

    bench = _lesions_bench()
    predictor = make_predictor()
    background = bench.wholebody_suv(Path(args.data))
    outcomes: Counter[str] = Counter()
    rules: dict[str, list[int]] = {}
    print(
        f"| scan | lesion | z | volume mL | SUVmax | SUVmax at {args.fwhm:g} mm | threshold "
        "| above threshold mL (pieces) | outcome |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, image, ref in bench.inserted_cases(Path(args.data), args.templates, args.inserted, background):
        res = find_lesions(image, delineation="threshold", predictor=predictor, progress=False)
        suv, t = res.suv.array, res.threshold.threshold
        voxel_ml = float(np.prod(res.suv.spacing)) / 1000.0
        lesions = cc3d.connected_components(ref.astype(np.uint8), connectivity=26)
        masks = [lesions == i for i in range(1, int(lesions.max()) + 1)]
        sigma = args.fwhm / 2.3548 / np.asarray(res.suv.spacing_zyx)
        imaged = background.array + ndimage.gaussian_filter((suv - background.array).astype(np.float32), sigma)
        candidate_masks = [c.full_mask(suv.shape) for c in res.candidates]
        for rule, labels in candidate_rules(suv, t, voxel_ml).items():
            hit = {int(i) for i in np.unique(labels[lesions > 0])} - {0}
            kept = {int(i) for i in np.unique(labels)} - {0}
            counts = rules.setdefault(rule, [0, 0, 0])
            counts[0] += sum(bool(labels[mask].any()) for mask in masks)
            counts[1] += len(masks)
            counts[2] += len(kept - hit)
        for index, mask in enumerate(masks, start=1):
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
                f"{imaged[mask].max():.2f} | {t:.2f} | {hot.sum() * voxel_ml:.2f} ({pieces}) | {outcome} |"
            )
    print("\n" + ", ".join(f"{k}: {v}" for k, v in outcomes.most_common()))
    print("\n| candidate rule | lesions with a candidate-size component | other components |")
    print("|---|---|---|")
    for rule, (found, total, other) in rules.items():
        print(f"| {rule} | {found} / {total} | {other} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
