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
]


@pytest.mark.parametrize("cls, argv, given", VERBS, ids=[v[0].__name__ for v in VERBS])
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
