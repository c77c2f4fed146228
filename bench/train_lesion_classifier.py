"""Regenerate ``src/medfoundry/modeling/weights/lesion_classifier_v2.json`` (seeded) and print its CV scores.

PYTHONPATH=src python bench/train_lesion_classifier.py [--data ../shared/data] [--out PATH] [--threads 2]
    [--features train.npz]   # cache of the candidate features (rebuilt when absent)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from medfoundry.api import make_predictor
from medfoundry.modeling.lesion_classifier import DEFAULT_CLASSIFIER
from medfoundry.training.lesion_classifier import TrainingSet, build_training_set, fit

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--out", default=str(DEFAULT_CLASSIFIER))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backend", default="fast")
    p.add_argument("--features", help="cache of the training set (.npz): read when it exists, else written")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    np.random.seed(args.seed)
    start = time.perf_counter()
    if args.features and Path(args.features).is_file():
        with np.load(args.features) as z:
            train = TrainingSet(z["features"], z["labels"], [str(c) for c in z["cases"]])
    else:
        train = build_training_set(args.data, make_predictor(backend=args.backend))
        if args.features:
            np.savez_compressed(args.features, features=train.features, labels=train.labels, cases=train.cases)
    clf, cv = fit(train, seed=args.seed)
    clf.save(args.out)
    per_case = {}
    for case, label in zip(train.cases, train.labels, strict=False):
        per_case.setdefault(case, [0, 0])[int(label)] += 1
    print("| case | negatives | positives |\n|---|---|---|")
    for case, (neg, pos) in per_case.items():
        print(f"| {case} | {neg} | {pos} |")
    print(json.dumps(cv, indent=1))
    print(f"wrote {args.out} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
