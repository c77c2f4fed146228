"""The command line's spelling of the parameters that messages below ``cli`` name.

A :class:`~medfoundry.errors.MedfoundryError` (or a :class:`~medfoundry.errors.MedfoundryWarning`) names a
parameter in backquotes, `` `min_volume_ml` ``; printed by the command line it reads ``--min-volume``.
"""

from __future__ import annotations

from medfoundry.errors import named_parameters

# parameter (as a message names it) -> its option
FLAGS = {
    "allow_absolute_out": "--allow-absolute-out",
    "allow_incomplete_splits": "--allow-incomplete-splits",
    "allow_one_class_splits": "--allow-one-class-splits",
    "amp": "--amp",
    "autopet": "--autopet",
    "backend": "--backend",
    "binarize": "--binarize",
    "box": "--box",
    "boxes": "--boxes",
    "cnn=False": "--no-cnn",
    "delineation": "--delineation",
    "device": "--device",
    "encoder_weights": "--encoder-weights",
    "epochs": "--epochs",
    "fractions": "--split",
    "imbalance": "--imbalance",
    "inserted": "--insert",
    "lesion_labels": "--lesion-labels",
    "level": "--level",
    "method": "--method",
    "min_slice_max": "--min-slice-max",
    "min_volume_ml": "--min-volume",
    "negative": "--negative",
    "negatives_only": "--negatives-only",
    "out": "--out",
    "out_dir": "--out",
    "overwrite": "--overwrite",
    "point": "--point",
    "regions": "--regions",
    "resume": "--resume",
    "run_dir": "--run-dir",
    "seed": "--seed",
    "suv_factor": "--suv-factor",
    "test_patients": "--test-patients",
    "threshold": "--threshold",
    "tracers": "--tracers",
    "train_patients": "--train-patients",
    "val": "--val",
    "val_cases": "--val-cases",
    "val_patients": "--val-patients",
    "weights": "--weights",
    "width": "--width",
}


def as_flags(message: str, parameters: tuple[str, ...] | None = None) -> str:
    """``message`` with each parameter it names in backquotes (and each of ``parameters``) spelled as its option."""
    for name in dict.fromkeys((*(parameters or ()), *named_parameters(message))):
        if name in FLAGS:
            message = message.replace(f"`{name}`", FLAGS[name])
    return message
