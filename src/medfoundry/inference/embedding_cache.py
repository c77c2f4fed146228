"""The one cache of encoder embeddings: :class:`EmbeddingMemo`, and the on-disk dataset cache of ``classify embed``.

:class:`EmbeddingMemo` is the memoising encoder every path shares: training's per-(sample, flip) embeddings
(:class:`medfoundry.training.finetune.engine.MemoryEmbeddingCache` keys into one), 3D validation
(:func:`medfoundry.inference.volume_eval.fp32_encoder`), propagation and the viewer
(:class:`medfoundry.inference.propagation.SliceEmbeddings`) and ``classify predict``'s per-scan cache
(:func:`medfoundry.inference.slice_classifier.scan_embeddings`). One memo wraps one encoder (its identity), so
its key is what the encoder sees: the bytes of the model-space input (:func:`content_key`), or a caller's key
that names the image and its preprocessing (a sample's content and flip, a volume's slice index). Entries are
evicted least recently used first once ``max_bytes`` (or ``max_items``) is passed; with ``disk`` every entry is
also written (atomically, one ``.npy`` per key) and read back by the next memo on that folder.

For a slice dataset, ``classify embed`` embeds through the same memo (one entry per chunk of rows, its disk tier
the run's ``chunks/`` folder) and writes one folder per key ``ENCODER-WEIGHTS12-PREPROC12`` (encoder name,
first 12 hex digits of the weights' SHA-256 and of the dataset's preprocessing hash) under the cache root.
While embedding, finished chunks are written atomically as ``chunks/NNNNN.npy`` so that an interrupted run
resumes at the first missing chunk; at the end they are joined into ``embeddings.npy`` (float16,
``(n_slices, out_dim)``, manifest row order) and ``manifest.json`` says ``"complete": true``. A complete cache
is reused without running the encoder.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medfoundry._deprecated import moved
from medfoundry.errors import InputError
from medfoundry.inference.backend_base import EncoderBackend
from medfoundry.io.atomic import atomic_path

CACHE_FORMAT = 1

# renamed; the old name works for one more release
__getattr__ = moved(__name__, __name__, {"EmbeddingCache": "DiskEmbeddingCache"})


def content_key(array: np.ndarray | torch.Tensor, *parts: Hashable) -> tuple:
    """A key for an image by its content (16-byte BLAKE2b of its bytes, dtype and shape) plus ``parts`` (what
    was done to it before the encoder: a flip code, a preprocessing name)."""
    a = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    digest = hashlib.blake2b(np.ascontiguousarray(a).tobytes(), digest_size=16)
    digest.update(f"{a.dtype}{a.shape}".encode())
    return (digest.hexdigest(), *parts)


class EmbeddingMemo(EncoderBackend):
    """A memoising encoder: ``encoder``'s output per key, computed once and kept.

    Called on a model-space batch it is an encoder backend keyed by each item's content (:func:`content_key`);
    :meth:`get` takes the caller's keys and a function that computes the missing ones. ``dtype`` is how entries
    are stored (float16 halves the memory; :meth:`get` returns float32 then); ``max_bytes`` / ``max_items``
    bound the store, least recently used out first (``None``: unbounded); ``disk`` (a folder) is a second tier
    that outlives the process, one ``.npy`` per key (named by the key where it is a plain name), written as
    ``disk_dtype``; ``on_compute(key)`` is called for every entry computed.
    """

    name = "memo"

    def __init__(
        self,
        encoder: Callable[[torch.Tensor], torch.Tensor] | None = None,
        *,
        dtype: torch.dtype | None = None,
        max_bytes: int | None = None,
        max_items: int | None = None,
        disk: str | Path | None = None,
        disk_dtype: torch.dtype | None = None,
        on_compute: Callable[[Hashable], None] | None = None,
    ) -> None:
        self.encoder = encoder
        self.dtype = dtype
        self.max_bytes = max_bytes
        self.max_items = max_items
        self.disk = None if disk is None else Path(disk)
        self.disk_dtype = disk_dtype
        self.on_compute = on_compute
        self.computed = 0  # entries the encoder computed (not found in memory or on disk)
        self.nbytes = 0
        self._store: OrderedDict[Hashable, torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._store)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._store

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        keys = [content_key(item) for item in batch]
        return self.get(keys, lambda idx: self._encode(batch[idx]))

    def _encode(self, batch: torch.Tensor) -> torch.Tensor:
        if self.encoder is None:
            raise TypeError("this EmbeddingMemo has no encoder; pass the embeddings' computation to get()")
        return self.encoder(batch)

    def get(self, keys: Sequence[Hashable], compute: Callable[[list[int]], torch.Tensor]) -> torch.Tensor:
        """The stacked embeddings of ``keys``; ``compute(indices)`` gives those of ``keys[i]`` for the indices
        found neither in memory nor on disk (one call per :meth:`get`)."""
        held = {k: e for k in keys if (e := self._lookup(k)) is not None}
        missing = [i for i, k in enumerate(keys) if k not in held]
        if missing:
            emb = compute(missing)
            for i, e in zip(missing, emb, strict=True):  # a key asked twice: the last computation is kept
                held[keys[i]] = self._computed(keys[i], e)
        return self._out(torch.stack([held[k] for k in keys]))

    def get_one(self, key: Hashable, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The entry of one ``key`` as ``compute()`` gave it (kept as is: e.g. ``(1, 256, 64, 64)``)."""
        entry = self._lookup(key)
        return self._out(entry if entry is not None else self._computed(key, compute()))

    def _out(self, t: torch.Tensor) -> torch.Tensor:
        return t.float() if self.dtype is not None and self.dtype != torch.float32 else t

    def _lookup(self, key: Hashable) -> torch.Tensor | None:
        if key in self._store:
            self._store.move_to_end(key)
            return self._store[key]
        return self._load(key)

    def _computed(self, key: Hashable, embedding: torch.Tensor) -> torch.Tensor:
        entry = self._put(key, embedding)
        self.computed += 1
        if self.on_compute is not None:
            self.on_compute(key)
        return entry

    def _path(self, key: Hashable) -> Path:
        plain = isinstance(key, str) and key.replace("-", "").replace("_", "").isalnum()
        name = key if plain else hashlib.blake2b(repr(key).encode(), digest_size=16).hexdigest()
        return self.disk / f"{name}.npy"  # type: ignore[operator]

    def _load(self, key: Hashable) -> torch.Tensor | None:
        if self.disk is None or not (path := self._path(key)).is_file():
            return None
        return self._put(key, torch.from_numpy(np.load(path)), write=False)

    def _put(self, key: Hashable, embedding: torch.Tensor, write: bool = True) -> torch.Tensor:
        e = embedding.to(self.dtype) if self.dtype is not None else embedding
        if write and self.disk is not None:
            self.disk.mkdir(parents=True, exist_ok=True)
            on_disk = e if self.disk_dtype is None else e.to(self.disk_dtype)
            _save_npy_atomic(self._path(key), on_disk.detach().cpu().numpy())
        if key in self._store:
            self.nbytes -= _nbytes(self._store.pop(key))
        self._store[key] = e
        self.nbytes += _nbytes(e)
        while len(self._store) > 1 and (
            (self.max_items is not None and len(self._store) > self.max_items)
            or (self.max_bytes is not None and self.nbytes > self.max_bytes)
        ):
            self.nbytes -= _nbytes(self._store.popitem(last=False)[1])
        return e

    def clear(self) -> None:
        """Forget every entry held in memory (the disk tier stays)."""
        self._store.clear()
        self.nbytes = 0


def _nbytes(t: torch.Tensor) -> int:
    return t.element_size() * t.nelement()


def cache_key(encoder_name: str, weights_id: str, preprocessing_hash: str) -> str:
    """Folder name of the cache for one (encoder, weights, preprocessing) triple."""
    return f"{encoder_name}-{weights_id[:12]}-{preprocessing_hash[:12]}"


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, overwrite=True) as tmp:
        np.save(tmp, array)


def _write_json_atomic(path: Path, obj: dict) -> None:
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(obj, indent=1))


@dataclass
class DiskEmbeddingCache:
    """A complete cache folder, as ``classify embed`` left it: embeddings (float16, written through
    :class:`EmbeddingMemo`'s disk tier and joined) plus the manifest that identifies them; read only."""

    path: Path
    manifest: dict

    @property
    def embeddings(self) -> np.ndarray:
        """``(n_slices, out_dim)`` float16, in the dataset's manifest row order."""
        return np.load(self.path / "embeddings.npy", mmap_mode="r")

    @property
    def encoder_name(self) -> str:
        """Registry name of the encoder that wrote the cache."""
        return self.manifest["encoder"]["name"]


def open_cache(path: str | Path, dataset=None) -> DiskEmbeddingCache:
    """Open a complete cache folder; with ``dataset``, refuse one written for other slices."""
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise InputError(path, "not an embedding cache (manifest.json missing); run 'medfoundry classify embed'")
    manifest = json.loads(manifest_path.read_text())
    if not manifest.get("complete"):
        raise InputError(
            path,
            f"embedding cache is incomplete ({manifest.get('done', 0)} of {manifest.get('n_rows')} rows); "
            "run 'medfoundry classify embed' again to resume it",
        )
    if dataset is not None:
        check_cache_matches(path, manifest, dataset)
    return DiskEmbeddingCache(path, manifest)


def check_cache_matches(path: Path, manifest: dict, dataset, encoder=None) -> None:
    """Raise InputError when a cache was written for other slices or by another encoder / weights."""
    if manifest.get("preprocessing_hash") != dataset.preprocessing_hash:
        raise InputError(
            path,
            f"embedding cache was written for other slices (preprocessing "
            f"{str(manifest.get('preprocessing_hash'))[:12]}, this dataset is "
            f"{dataset.preprocessing_hash[:12]}); embed this dataset again",
        )
    if int(manifest.get("n_rows", -1)) != len(dataset):
        raise InputError(path, f"embedding cache holds {manifest.get('n_rows')} rows, the dataset {len(dataset)}")
    if encoder is not None:
        enc = manifest.get("encoder", {})
        if enc.get("name") != encoder.name or enc.get("weights_id") != encoder.weights_id:
            raise InputError(
                path,
                f"embedding cache was written by encoder {enc.get('name')} "
                f"(weights {str(enc.get('weights_id'))[:12]}), not {encoder.name} "
                f"(weights {encoder.weights_id[:12]})",
            )


@dataclass
class EmbeddingRun:
    """A cache being written: its folder and manifest, the chunking, and the chunks still to embed
    (``complete``: the finished cache, when there is nothing to do)."""

    folder: Path
    manifest: dict
    chunk_rows: int
    n_rows: int
    todo: list[int]
    complete: DiskEmbeddingCache | None = None

    @property
    def chunks(self) -> Path:
        return self.folder / "chunks"

    def chunk_path(self, chunk: int) -> Path:
        return self.chunks / f"{chunk:05d}.npy"

    def chunk_size(self, chunk: int) -> int:
        return min(self.chunk_rows, self.n_rows - chunk * self.chunk_rows)

    def done_rows(self) -> int:
        return self.n_rows - sum(self.chunk_size(c) for c in self.todo)


def start_embedding(
    dataset, encoder, cache_root: str | Path, chunk_rows: int = 128, weights_path: str | Path | None = None
) -> EmbeddingRun:
    """Open (resume) or start the cache of ``dataset`` by ``encoder`` under ``cache_root``: the chunks not
    written yet, or the complete cache."""
    key = cache_key(encoder.name, encoder.weights_id, dataset.preprocessing_hash)
    folder = Path(cache_root) / key
    manifest_path = folder / "manifest.json"
    n = len(dataset)
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        check_cache_matches(folder, manifest, dataset, encoder)
        if manifest.get("complete") and (folder / "embeddings.npy").is_file():
            return EmbeddingRun(folder, manifest, chunk_rows, n, [], DiskEmbeddingCache(folder, manifest))
        if int(manifest.get("chunk_rows", chunk_rows)) != chunk_rows:
            chunk_rows = int(manifest["chunk_rows"])  # resume with the chunking already on disk
    else:
        folder.mkdir(parents=True, exist_ok=True)
        manifest = {
            "format": CACHE_FORMAT,
            "encoder": encoder.describe(),
            "weights_path": None if weights_path is None else str(Path(weights_path).resolve()),
            "preprocessing_hash": dataset.preprocessing_hash,
            "dataset": str(Path(dataset.root).resolve()),
            "n_rows": n,
            "dim": encoder.out_dim,
            "dtype": "float16",
            "chunk_rows": chunk_rows,
            "complete": False,
            "done": 0,
        }
        _write_json_atomic(manifest_path, manifest)
    n_chunks = (n + chunk_rows - 1) // chunk_rows
    run = EmbeddingRun(folder, manifest, chunk_rows, n, [])
    run.todo = [c for c in range(n_chunks) if not run.chunk_path(c).is_file()]
    return run


def embed_chunk(dataset, encoder, run: EmbeddingRun, chunk: int, batch_size: int = 16, bar=None) -> int:
    """Embed the rows of one chunk and write it (atomically: an existing chunk is a finished one); its rows."""
    rows = np.arange(chunk * run.chunk_rows, chunk * run.chunk_rows + run.chunk_size(chunk))

    def compute() -> torch.Tensor:
        parts = []
        encoder.eval()
        with torch.inference_mode():
            for b in range(0, rows.size, batch_size):
                batch = torch.from_numpy(dataset.images(rows[b : b + batch_size]))
                parts.append(encoder.embed(encoder.prepare(batch)).float().cpu())
                if bar is not None:
                    bar.update(min(batch_size, rows.size - b))
        return torch.cat(parts)

    # the chunk is one entry of the shared memo, its disk tier the chunks folder (``chunks/NNNNN.npy``, float16)
    EmbeddingMemo(disk=run.chunks, disk_dtype=torch.float16, max_items=1).get_one(run.chunk_path(chunk).stem, compute)
    return int(rows.size)


def note_progress(run: EmbeddingRun, finished: list[int]) -> None:
    """Record in the manifest how many rows are embedded (``finished``: the chunks written by this run)."""
    left = [c for c in run.todo if c not in set(finished)]
    run.manifest["done"] = int(run.n_rows - sum(run.chunk_size(c) for c in left))
    _write_json_atomic(run.folder / "manifest.json", run.manifest)


def finish_embedding(run: EmbeddingRun, out_dim: int, seconds: float) -> DiskEmbeddingCache:
    """Join the chunks into ``embeddings.npy``, mark the manifest complete and remove the chunks."""
    n_chunks = (run.n_rows + run.chunk_rows - 1) // run.chunk_rows
    parts = [np.load(run.chunk_path(c)) for c in range(n_chunks)]
    embeddings = np.concatenate(parts) if parts else np.zeros((0, out_dim), np.float16)
    if embeddings.shape != (run.n_rows, out_dim):
        expected = (run.n_rows, out_dim)
        raise InputError(run.folder, f"cache chunks hold {embeddings.shape}, expected {expected}; delete it")
    _save_npy_atomic(run.folder / "embeddings.npy", embeddings)
    run.manifest.update(
        complete=True,
        done=run.n_rows,
        seconds_last_run=round(seconds, 2),
        finished=time.strftime("%Y-%m-%d %H:%M:%S"),
    )
    _write_json_atomic(run.folder / "manifest.json", run.manifest)
    shutil.rmtree(run.chunks, ignore_errors=True)
    return DiskEmbeddingCache(run.folder, run.manifest)


def embed_dataset(
    dataset,
    encoder,
    cache_root: str | Path,
    batch_size: int = 16,
    chunk_rows: int = 128,
    weights_path: str | Path | None = None,
    progress: bool = True,
    max_chunks: int | None = None,
) -> DiskEmbeddingCache | None:
    """Embed every slice of ``dataset`` once with a frozen ``encoder``; reuse or resume the cache.

    ``max_chunks`` stops after that many new chunks (returns ``None``: the cache stays resumable); it is how
    tests and time-limited jobs interrupt a run on purpose. ``medfoundry.api.classify.embed`` runs the chunks on
    Ray actors with the same pieces (:func:`start_embedding`, :func:`embed_chunk`, :func:`finish_embedding`).
    """
    from tqdm.auto import tqdm

    run = start_embedding(dataset, encoder, cache_root, chunk_rows, weights_path)
    if run.complete is not None:
        return run.complete
    started = time.perf_counter()
    desc = f"embedding ({encoder.name})"
    bar = tqdm(total=run.n_rows, initial=run.done_rows(), desc=desc, unit="slice", disable=not progress)
    finished: list[int] = []
    for c in run.todo:
        if max_chunks is not None and len(finished) >= max_chunks:
            bar.close()
            return None
        embed_chunk(dataset, encoder, run, c, batch_size, bar)
        finished.append(c)
        note_progress(run, finished)
    bar.close()
    return finish_embedding(run, encoder.out_dim, time.perf_counter() - started)


def find_caches(cache_root: str | Path, dataset) -> list[DiskEmbeddingCache]:
    """Every complete cache under ``cache_root`` written for ``dataset``'s slices."""
    found = []
    root = Path(cache_root)
    if not root.is_dir():
        return found
    for sub in sorted(root.iterdir()):
        manifest_path = sub / "manifest.json"
        if not manifest_path.is_file():
            continue
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("complete") and manifest.get("preprocessing_hash") == dataset.preprocessing_hash:
            found.append(DiskEmbeddingCache(sub, manifest))
    return found
