"""Make the shipped lesion classifier (seeded) with ``medfoundry lesions train``: feature set v3 (handcrafted +
anatomy + embedding) in ``src/medfoundry/modeling/weights/lesion_classifier_v3.json``, which the finder then loads
instead of v2's file (``modeling.lesion_classifier.DEFAULT_CLASSIFIER``: the newest shipped file).

PYTHONPATH=src python bench/train_lesion_classifier.py [--data ../shared/data] [--out PATH] [--threads 2]
    [--features train.npz]   # cache of the candidate features (rebuilt when absent)
    [--dry-run]              # print the training folder and the command, train nothing
    [--crops 2 3 --insert 1 --out /tmp/model.json]   # a smoke test of the same path on fewer scans

The shipped recipe as a training folder (links into ``shared/data``, made in a temporary folder) and one command,
so that what users run is what was measured:

* ``STS_001/image`` + ``STS_001/mask``: the whole-body scan, DICOM + RTSTRUCT (ROI ``GTV_Mass``), negatives
  only (``--negatives-only STS_001``: its tumour stays a held-out positive of the bench);
* ``STS_002`` .. ``STS_020``: the training crops in autoPET layout (``SUV.nii.gz`` + ``SEG.nii.gz``);
* ``--insert 20 --insert-seed 1000``: 20 copies of the whole-body scan with 3-6 crop tumours inserted each;
* ``--scanner-copies 2``: 2 copies of the whole-body scan as other scanners would show it (voxels, resolution,
  noise, SUV scale);
* ``--thresholds 2.5 5.0``: candidates also at SUV 2.5 and 5.0 besides the adaptive threshold.

The crops STS_021..STS_030 are never used: they are the test set of ``bench/lesions_wholebody.py``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import tempfile
import time
from pathlib import Path

from medfoundry.cli.main import main as medfoundry
from medfoundry.modeling.lesion_classifier import NEXT_SHIPPED

ROOT = Path(__file__).resolve().parents[1]
TRAIN_CROPS = tuple(range(2, 21))
INSERTED, INSERT_SEED = 20, 1000
SCANNER_COPIES = 2


def shipped_training_folder(data: Path, folder: Path, crops: tuple[int, ...] = TRAIN_CROPS) -> Path:
    """The shipped model's training scans under ``folder`` as links (see the module docstring)."""
    wholebody = folder / "STS_001"
    wholebody.mkdir(parents=True)
    for part in ("image", "mask"):
        os.symlink(data / "pet-wholebody" / "STS_001" / "dicom" / part, wholebody / part)
    for i in crops:
        crop, study = data / "pet-sts" / f"STS_{i:03d}", folder / f"STS_{i:03d}"
        study.mkdir()
        os.symlink(crop / "PET_image.nii.gz", study / "SUV.nii.gz")
        os.symlink(crop / "PET_mask.nii.gz", study / "SEG.nii.gz")
    return folder


def train_command(
    folder: Path, out: str, seed: int, threads: int, backend: str, features: str | None, inserted: int = INSERTED
) -> list[str]:
    """The ``medfoundry lesions train`` arguments of the shipped recipe."""
    args = ["lesions", "train", str(folder), "--out", out, "--overwrite", "--roi", "GTV_Mass",
            "--negatives-only", "STS_001", "--insert", str(inserted), "--insert-seed", str(INSERT_SEED),
            "--scanner-copies", str(SCANNER_COPIES), "--thresholds", "2.5", "5.0", "--seed", str(seed),
            "--threads", str(threads), "--backend", backend]  # fmt: skip
    return args + (["--features-cache", features] if features else [])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--out", default=str(NEXT_SHIPPED))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backend", default="fast")
    p.add_argument("--features", help="cache of the training set (.npz): read when it exists, else written")
    p.add_argument("--dry-run", action="store_true", help="lay out the folder, print the command, train nothing")
    p.add_argument("--crops", type=int, nargs="*", default=list(TRAIN_CROPS), help="training crops (2..20)")
    p.add_argument("--insert", type=int, default=INSERTED, help=f"inserted whole-body copies ({INSERTED})")
    args = p.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lesion-training-") as tmp:
        folder = shipped_training_folder(Path(args.data).resolve(), Path(tmp) / "data", tuple(args.crops))
        command = train_command(folder, args.out, args.seed, args.threads, args.backend, args.features, args.insert)
        print("medfoundry " + shlex.join(command))
        if args.dry_run:
            for path in sorted(folder.iterdir()):
                print(f"  {path.name}/: {', '.join(sorted(q.name for q in path.iterdir()))}")
            return
        rc = medfoundry(command)
    print(f"exit code {rc} after {time.perf_counter() - start:.0f} s")
    raise SystemExit(rc)


if __name__ == "__main__":
    main()
