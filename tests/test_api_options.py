"""The front door: each verb's options dataclass is filled from the real parser by field name, so a field the parser
does not have would silently keep its default; this lists, per verb, the only fields the CLI gives otherwise."""

from __future__ import annotations

import dataclasses

import pytest

import medfoundry.api as api
from medfoundry.cli.main import build_parser

# options class, a command line, the fields the CLI sets itself (not parser options of that name)
VERBS = [
    (api.ClassifyBuildOptions, ["classify", "build", "ds"], set()),
    (api.ClassifyEmbedOptions, ["classify", "embed", "ds"], {"chunk_rows", "progress"}),
    (api.ClassifyCompareOptions, ["classify", "compare", "ds", "--out", "o"], set()),
    (api.ClassifyPredictOptions, ["classify", "predict", "s", "--model", "m", "--out", "o"], {"embedding_cache"}),
    (api.FinetuneOptions, ["finetune", "train", "out"], set()),
    (api.NnunetPrepareOptions, ["nnunet", "prepare", "data", "--run-dir", "r"], set()),
    (api.NnunetPlanOptions, ["nnunet", "plan", "--run-dir", "r"], set()),
    (api.NnunetTrainOptions, ["nnunet", "train", "--run-dir", "r"], set()),
    (api.NnunetPredictOptions, ["nnunet", "predict", "--run-dir", "r"], set()),
    (api.NnunetEvaluateOptions, ["nnunet", "evaluate", "--run-dir", "r"], set()),
    (api.PoolOptions, ["pool", "config.json"], set()),
    (api.PretrainOptions, ["pretrain"], set()),
    (api.TransferOptions, ["transfer"], set()),
    (api.TransferPredictOptions, ["transfer", "--predict", "x.nii.gz"], set()),
    (api.SynthesizeOptions, ["synthesize", "ex", "out"], set()),
    (api.SegmentOptions, ["segment", "ct.nii.gz", "--box", "1", "2", "3", "4", "--out", "m.nii.gz"], {"predictor"}),
    (api.SegmentOptions, ["segment", "--manifest", "m.csv", "--out", "masks"], {"predictor"}),
    (api.SegmentNpzOptions, ["segment-npz", "in", "out"], {"predictor"}),
    (api.EvaluateOptions, ["evaluate", "pred", "gt", "--out", "o.csv"], {"tolerance_mm"}),
    (api.LesionsOptions, ["lesions", "pet/", "--out", "o"], {"organ_rule"}),
    (api.LesionsOptions, ["lesions", "--manifest", "m.csv", "--out", "o"], {"organ_rule"}),
    (
        api.LesionsTrainOptions,
        ["lesions", "train", "data", "--out", "m.json"],
        {"roi_names", "inserted", "embedding", "anatomy", "cache"},
    ),  # fmt: skip
    (api.ViewOptions, ["view", "ct.nii.gz"], {"open_browser"}),
]


@pytest.mark.parametrize("cls, argv, given", VERBS, ids=[f"{v[0].__name__}-{i}" for i, v in enumerate(VERBS)])
def test_every_option_field_is_a_parser_option(cls, argv, given):
    from medfoundry.cli.common import options_from_args

    args = build_parser().parse_args(argv)
    names = {f.name for f in dataclasses.fields(cls)}
    missing = {n for n in names - set(vars(args)) if not (n == "progress" and hasattr(args, "no_progress"))}
    assert missing == given
    options = options_from_args(cls, args)  # every field without a default comes from the parser
    assert {n: getattr(options, n) for n in names - missing - {"progress"}} == {
        n: getattr(args, n) for n in names - missing - {"progress"}
    }


def test_options_by_object_or_by_keyword_and_unknown_ones_refused(tmp_path):
    from medfoundry.api.common import resolve_options
    from medfoundry.errors import InputError

    base = api.SynthesizeOptions(exemplars=tmp_path, out=tmp_path / "o")
    assert resolve_options(api.SynthesizeOptions, base, {"count": 3}).count == 3 and base.count == 100
    assert resolve_options(api.SynthesizeOptions, None, {"exemplars": tmp_path, "out": tmp_path}).count == 100
    with pytest.raises(InputError, match="SynthesizeOptions has no option cuont"):
        api.synthesize(base, cuont=3)


def test_the_window_and_model_fields_build_what_the_cli_built():
    from medfoundry.api.common import build_predictor
    from medfoundry.cli.common import options_from_args
    from medfoundry.preprocessing import IntensityWindow

    argv = ["segment", "pet.nii.gz", "--point", "1", "2", "3", "--out", "m.nii.gz", "--suv-range", "0", "8"]
    args = build_parser().parse_args([*argv, "--level", "40", "--width", "400", "--threads", "2"])
    options = options_from_args(api.SegmentOptions, args)
    assert options.intensity_window() == IntensityWindow(level=40.0, width=400.0, suv_range=(0.0, 8.0))
    factory = options.predictor_factory()  # not built yet: a picklable factory for Ray actors
    assert factory.func is build_predictor and factory.args == (None, "fast", None, 2)
    given = IntensityWindow(ct_window="lung")
    assert api.SegmentOptions(window=given).intensity_window() is given
    assert api.SegmentOptions(predictor=factory).predictor_factory() is factory


def test_the_rules_between_options_live_in_the_options(tmp_path):
    from medfoundry.errors import InputError

    with pytest.raises(InputError, match="with --manifest, give overlays in an 'overlay' column"):
        api.segment_many([], overlay=tmp_path / "o.png")
    with pytest.raises(InputError, match="give each scan's factor in a suv_factor column"):
        api.lesions_manifest(tmp_path / "m.csv", tmp_path / "out", suv_factor=2.0)
    with pytest.raises(InputError, match="--labels does not apply to --lesion-wise"):
        api.evaluate(tmp_path, tmp_path, tmp_path / "o.csv", lesion_wise=True, labels=[1])
    with pytest.raises(InputError, match="LesionsTrainOptions has no option roi"):
        api.lesions_train(tmp_path, tmp_path / "m.json", roi=["x"])
    assert not (tmp_path / "out").exists() and not (tmp_path / "o.csv").exists()
