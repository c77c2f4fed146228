"""Shared options are declared once: same name, type, range and default in every verb."""

from __future__ import annotations

import argparse

import pytest

from medfoundry.cli import common
from medfoundry.cli.main import build_parser


def _verb_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every leaf parser: 'segment', 'classify build', 'nnunet train', ..."""
    found = {}

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            found[name] = parser
        for action in subs:
            for sub_name, sub in action.choices.items():
                walk(sub, f"{name} {sub_name}".strip())

    walk(build_parser(), "")
    return found


def test_shared_options_have_one_definition_everywhere():
    expected = {
        "device": (common.device_type, None),
        "threads": (common.positive_int, None),
        "seed": (common.nonnegative_int, 0),
        "no_progress": (None, False),
        "overwrite": (None, False),
    }
    seen = {k: [] for k in expected}
    for verb, parser in _verb_parsers().items():
        for action in parser._actions:
            if action.dest in expected:
                kind, default = expected[action.dest]
                assert action.type is kind and action.default == default, f"{verb}: {action.option_strings}"
                seen[action.dest].append(verb)
    assert {"pretrain", "transfer", "nnunet train", "nnunet predict"} <= set(seen["device"])
    assert {"segment", "segment-npz", "demo", "evaluate", "pretrain", "transfer"} <= set(seen["no_progress"])
    assert len(seen["overwrite"]) >= 12 and len(seen["seed"]) >= 6 and len(seen["threads"]) >= 5


@pytest.mark.parametrize(
    "kind, text, ok",
    [
        (common.positive_int, "1", 1), (common.positive_int, "0", None), (common.positive_int, "1.5", None),
        (common.finite_float, "-3.5", -3.5), (common.finite_float, "nan", None), (common.finite_float, "inf", None),
        (common.probability, "0.3", 0.3), (common.probability, "0", None), (common.probability, "1", None),
        (common.device_type, "CUDA:1", "cuda:1"), (common.device_type, "tpu9", None),
        (common.device_type, "cuda:", None),
    ],
)  # fmt: skip
def test_argparse_types(kind, text, ok):
    if ok is None:
        with pytest.raises(argparse.ArgumentTypeError):
            kind(text)
    else:
        assert kind(text) == ok


def test_device_default_is_cuda_when_available_else_cpu(monkeypatch):
    import torch

    from medfoundry.errors import InputError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert common.resolve_device(None) == "cpu"
    with pytest.raises(InputError, match="--device"):
        common.resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert common.resolve_device(None) == "cuda" and common.resolve_device("cuda:0") == "cuda:0"
    with pytest.raises(InputError, match="cuda:3"):
        common.resolve_device("cuda:3")
