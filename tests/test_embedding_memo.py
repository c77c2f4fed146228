"""The one memoising encoder (inference.embedding_cache.EmbeddingMemo) and errors that name parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medfoundry.cli.parameter_flags import FLAGS, as_flags
from medfoundry.errors import InputError
from medfoundry.inference.embedding_cache import EmbeddingMemo, content_key
from medfoundry.training.resume import resume_or_refuse


class CountingEncoder:
    """A deterministic encoder that counts the items it embedded."""

    def __init__(self) -> None:
        self.items = 0

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.items += len(batch)
        return torch.stack([torch.full((4, 2, 2), float(x.sum())) for x in batch])


def _batch(*values: float) -> torch.Tensor:
    return torch.stack([torch.full((3, 8, 8), v) for v in values])


def test_memo_keys_by_content_and_returns_the_encoders_embeddings():
    enc = CountingEncoder()
    memo = EmbeddingMemo(enc)
    first = memo(_batch(1.0, 2.0))
    again = memo(_batch(2.0, 1.0, 3.0))  # new tensors, same contents: only 3.0 is new
    assert enc.items == 3 and memo.computed == 3 and len(memo) == 3
    torch.testing.assert_close(again[:2], first.flip(0), rtol=0, atol=0)
    torch.testing.assert_close(again, CountingEncoder()(_batch(2.0, 1.0, 3.0)), rtol=0, atol=0)
    assert content_key(np.zeros(4, np.float32)) != content_key(np.zeros(4, np.float64))
    assert content_key(np.zeros(4), 0) != content_key(np.zeros(4), 1)  # e.g. another flip


def test_memo_evicts_least_recently_used_by_bytes():
    enc = CountingEncoder()
    entry = 4 * 2 * 2 * 4  # bytes of one float32 embedding
    memo = EmbeddingMemo(enc, max_bytes=2 * entry)
    memo(_batch(1.0))
    memo(_batch(2.0))
    memo(_batch(1.0))  # 1.0 is now the most recently used
    memo(_batch(3.0))  # evicts 2.0
    assert len(memo) == 2 and memo.nbytes == 2 * entry and enc.items == 3
    memo(_batch(1.0))
    assert enc.items == 3
    memo(_batch(2.0))
    assert enc.items == 4


def test_memo_disk_tier_serves_a_new_memo_and_float16_storage(tmp_path):
    enc = CountingEncoder()
    memo = EmbeddingMemo(enc, dtype=torch.float16, disk=tmp_path / "tier", disk_dtype=torch.float16)
    out = memo.get(["a", ("b", 1)], lambda idx: enc(_batch(*[0.1 + i for i in idx])))
    assert out.dtype == torch.float32 and len(list((tmp_path / "tier").iterdir())) == 2
    later = EmbeddingMemo(dtype=torch.float16, disk=tmp_path / "tier")  # no encoder: everything from disk
    read = later.get([("b", 1), "a"], lambda idx: pytest.fail("computed again"))
    torch.testing.assert_close(read, out.flip(0), rtol=0, atol=0)
    assert later.computed == 0 and (tmp_path / "tier" / "a.npy").is_file()  # a plain name is the file name


def test_get_one_keeps_the_entry_as_computed():
    memo = EmbeddingMemo(max_items=1)
    e = memo.get_one(0, lambda: torch.ones(1, 4, 2, 2))
    assert memo.get_one(0, lambda: pytest.fail("computed again")) is e and e.shape == (1, 4, 2, 2)
    memo.get_one(1, lambda: torch.zeros(1, 4, 2, 2))
    assert 0 not in memo and memo.computed == 2


def test_errors_name_parameters_and_the_cli_spells_them_as_options(tmp_path):
    with pytest.raises(InputError) as info:
        resume_or_refuse(tmp_path, [], resume=True, overwrite=True)
    exc = info.value
    assert "--" not in str(exc) and exc.parameters == ("resume", "overwrite") and exc.parameter == "resume"
    assert as_flags(str(exc), exc.parameters).endswith(
        "choose --resume (continue) or --overwrite (start again), not both"
    )
    assert InputError(None, "bad", parameter="threshold").parameters == ("threshold",)
    assert all(flag.startswith("--") for flag in FLAGS.values())
