"""Embedding cache: written once per key, reused without encoder work, resumed after an interruption."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_classify_data import synthetic_case

from medfoundry.data.pet_slices import CaseSpec, SliceConfig, build_slice_dataset
from medfoundry.errors import InputError
from medfoundry.inference.embedding_cache import EmbeddingMemo, cache_key, embed_dataset, find_caches, open_cache
from medfoundry.modeling.encoders import build_encoder


class CountingEncoder:
    """Wraps a frozen encoder and counts the slices it embeds."""

    def __init__(self, encoder):
        self.inner = encoder
        self.calls = 0
        self.slices = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def embed(self, x):
        self.calls += 1
        self.slices += x.shape[0]
        return self.inner.embed(x)


@pytest.fixture()
def dataset(tmp_path):
    cases = []
    for i in range(3):
        image, label, _, _ = synthetic_case(tmp_path, f"c{i}", seed=i, nz=7, lesion_slices=(2, 3))
        cases.append(CaseSpec(f"c{i}", image, label))
    return build_slice_dataset(cases, tmp_path / "ds", SliceConfig(grid=(0, 0, 0), size=16), progress=False)


def tiny(seed=0):
    return build_encoder("convnext_base", pretrained=False, tiny=True, input_size=32, seed=seed)


def test_second_run_with_the_same_key_does_no_encoder_work(dataset, tmp_path):
    enc = CountingEncoder(tiny())
    cache = embed_dataset(dataset, enc, tmp_path / "cache", batch_size=4, chunk_rows=5, progress=False)
    assert enc.slices == len(dataset) == 21
    emb = np.asarray(cache.embeddings)
    assert emb.dtype == np.float16 and emb.shape == (21, enc.out_dim)
    assert cache.path.name == cache_key("convnext_base", enc.weights_id, dataset.preprocessing_hash)
    with torch.inference_mode():
        direct = enc.inner.embed(enc.inner.prepare(torch.from_numpy(dataset.images([0, 20])))).numpy()
    np.testing.assert_allclose(emb[[0, 20]], direct, rtol=2e-3, atol=2e-3)
    again = CountingEncoder(tiny())
    cache2 = embed_dataset(dataset, again, tmp_path / "cache", batch_size=4, chunk_rows=5, progress=False)
    assert again.calls == 0
    np.testing.assert_array_equal(np.asarray(cache2.embeddings), emb)
    assert [c.path for c in find_caches(tmp_path / "cache", dataset)] == [cache.path]


def test_interrupted_run_resumes_where_it_stopped(dataset, tmp_path):
    full = embed_dataset(dataset, tiny(), tmp_path / "full", chunk_rows=5, progress=False)
    first = CountingEncoder(tiny())
    assert embed_dataset(dataset, first, tmp_path / "c", chunk_rows=5, max_chunks=2, progress=False) is None
    assert first.slices == 10
    folder = tmp_path / "c" / full.path.name
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["complete"] is False and manifest["done"] == 10
    with pytest.raises(InputError, match="incomplete"):
        open_cache(folder)
    # the chunks are the shared memo's disk tier: a memo on that folder reads chunk 1 back without an encoder
    chunk1 = EmbeddingMemo(disk=folder / "chunks").get_one("00001", lambda: pytest.fail("chunk 1 recomputed"))
    assert chunk1.dtype == torch.float16
    np.testing.assert_array_equal(chunk1.numpy(), np.asarray(full.embeddings)[5:10])
    second = CountingEncoder(tiny())
    done = embed_dataset(dataset, second, tmp_path / "c", chunk_rows=5, progress=False)
    assert second.slices == 11  # only the rows that were missing
    np.testing.assert_array_equal(np.asarray(done.embeddings), np.asarray(full.embeddings))
    assert not (folder / "chunks").exists()


def test_a_cache_of_another_encoder_or_preprocessing_is_refused(dataset, tmp_path):
    cache = embed_dataset(dataset, tiny(), tmp_path / "cache", progress=False)
    # another dataset (other pixels) cannot use this cache
    other_cases = []
    for i in range(2):
        image, label, _, _ = synthetic_case(tmp_path, f"o{i}", seed=10 + i, nz=7)
        other_cases.append(CaseSpec(f"o{i}", image, label))
    other = build_slice_dataset(other_cases, tmp_path / "ds2", SliceConfig(grid=(0, 0, 0), size=16), progress=False)
    with pytest.raises(InputError, match="other slices"):
        open_cache(cache.path, other)
    # a folder holding another encoder's embeddings under this key is refused, not overwritten
    before = (cache.path / "embeddings.npy").read_bytes()
    manifest = json.loads((cache.path / "manifest.json").read_text())
    manifest["encoder"]["weights_id"] = "0" * 64
    (cache.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="written by encoder convnext_base"):
        embed_dataset(dataset, tiny(), tmp_path / "cache", progress=False)
    assert (cache.path / "embeddings.npy").read_bytes() == before
    # a different seed means different weights: a separate key, not a reuse
    assert tiny(seed=1).weights_id != tiny(seed=0).weights_id
    with pytest.raises(InputError, match="not an embedding cache"):
        open_cache(tmp_path)
