"""The built-in whole-body slice rule (``classify predict --model percist``, :mod:`medfoundry.inference.slice_rule`:
SUVpeak outside the anatomy's organs against the scan's PERCIST threshold, nothing trained) on both whole-body
scans, on copies as other scanners would show them and with held-out lesions inserted: the test scans of the
lesion finder's leave-one-scan-out bench (``bench/lesions_wholebody.py``: resampled to 3 and 5 mm, blurred by
8 mm FWHM, 2 copies with 3-5 lesions of the held-out crops STS_021..STS_030 inserted).

Per scan: ROC-AUC over the scored slices (slices through an unlabelled suspicious focus of the unmodified scan,
``evaluation.unlabelled_foci``, and a loose outline's label-free slices left out, as in the scan split) and over
every slice (those scored normal); sensitivity and specificity at the rule's threshold (p 0.5, ratio 1); the
scored normal slices through the brain / heart / kidneys / bladder that it flags (organs of the unmodified scan
mapped to the copy). The rule's probability is computed as ``classify predict`` computes it: the anatomy feature
``percist_ratio`` of the volume through the rule's head (``slice_rule.percist_probabilities``).

    PYTHONPATH=src python bench/classify_rule_copies.py [--inserted 2] [--out bench/out/classify_rule_copies]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from lesions_wholebody import TEST_CROPS, loso_variants

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ["original", "3mm", "5mm", "blur8"]
ORGANS = ("brain", "heart", "kidneys", "bladder")


def rule_probabilities(image) -> np.ndarray:
    """Per axial slice, the rule's probability on ``image`` (SUV), by the path ``classify predict`` takes."""
    from medfoundry.data.pet_slices.features import AnatomyFeatures
    from medfoundry.inference.slice_rule import percist_probabilities

    source = AnatomyFeatures()
    return percist_probabilities(source(image, "scan")[:, source.names.index("percist_ratio")])


def score(prob: np.ndarray, ref, uncertain, organs: dict, foci) -> dict:
    from sklearn.metrics import roc_auc_score

    from medfoundry.inference.slice_rule import THRESHOLD

    labelled = ref.any(axis=(1, 2))
    out_focus = foci.any(axis=(1, 2)) if foci is not None else np.zeros_like(labelled)
    loose = uncertain.any(axis=(1, 2)) if uncertain is not None else np.zeros_like(labelled)
    scored = labelled | ~(out_focus | loose)
    flags = prob >= THRESHOLD
    row = {
        "slices": int(labelled.size),
        "scored": int(scored.sum()),
        "abnormal": int(labelled.sum()),
        "roc_auc": float(roc_auc_score(labelled[scored], prob[scored])),
        "roc_auc_all_slices": float(roc_auc_score(labelled, prob)),
        "sensitivity": float(flags[labelled].mean()),
        "specificity": float((~flags[scored & ~labelled]).mean()),
        "flagged_unscored": int((flags & ~scored).sum()),
    }
    for organ in ORGANS:
        there = organs[organ].any(axis=(1, 2)) & scored & ~labelled
        row[organ] = [int((flags & there).sum()), int(there.sum())]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--inserted", type=int, default=2, help="copies with held-out crop lesions inserted, per scan")
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "classify_rule_copies"))
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = {}
    for name in ("STS_001", "ACRIN-042"):
        for title, image, ref, uncertain, organs, foci in loso_variants(
            Path(args.data), name, VARIANTS, args.inserted, TEST_CROPS
        ):
            t = time.perf_counter()
            rows[title] = {**score(rule_probabilities(image), ref, uncertain, organs, foci),
                           "seconds": round(time.perf_counter() - t, 1)}  # fmt: skip
            print(json.dumps({title: rows[title]}), flush=True)
    lines = [
        "| scan | slices (scored, abnormal) | ROC-AUC | ROC-AUC, every slice | sensitivity | specificity | "
        "flagged unscored | " + " | ".join(f"{o} flagged" for o in ORGANS) + " | s |",
        "|---|---|---|---|---|---|---|" + "---|" * len(ORGANS) + "---|",
    ]
    for title, r in rows.items():
        organs = " | ".join("-" if r[o][1] == 0 else f"{r[o][0]} / {r[o][1]}" for o in ORGANS)
        lines.append(
            f"| {title} | {r['slices']} ({r['scored']}, {r['abnormal']}) | {r['roc_auc']:.3f} | "
            f"{r['roc_auc_all_slices']:.3f} | {r['sensitivity']:.3f} | {r['specificity']:.3f} | "
            f"{r['flagged_unscored']} | {organs} | {r['seconds']} |"
        )
    md = "\n".join(lines) + f"\n\ntotal {time.perf_counter() - t0:.0f} s, {time.strftime('%Y-%m-%d %H:%M')}\n"
    (out / "rule_copies.json").write_text(json.dumps(rows, indent=1))
    (out / "rule_copies.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
