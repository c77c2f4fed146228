"""The fine-tuning loop: AdamW on the adapter parameters, per-epoch validation, best and last checkpoints
holding only the trained tensors, early stopping, resume after interruption, and a training-curve PNG.

With validation volumes, validation is the 3D path users take (one 3D box per object, middle slice, propagation:
:mod:`medfoundry.inference.volume_eval`), scored before training and after every epoch; ``best.pt`` is the state
with the best mean of exact-box and loose-box 3D DSC, and training stops after ``patience`` epochs without a
better score, counted only after ``min_epochs`` epochs (:mod:`.stopping`). A run whose best is still the untrained
adapter trains on to its last epoch; if no epoch beats it, ``best.pt`` is the untrained adapter and the run says
so (a :class:`~medfoundry.errors.MedfoundryWarning`, ``history.json``, :attr:`FinetuneResult.notice`). Without
volumes, the 2D exact-box DSC of the validation samples decides. After every epoch the run prints its scores and
the time it has left.

Methods whose encoder stays frozen (``decoder``, ``classprompt``) reuse cached image embeddings (one per
sample and flip), so an epoch costs decoder passes only. Methods that train inside the encoder (``lora``,
``dbsam``) can start with ``decoder_warmup_epochs``: their decoder-side parameters train first, on cached
embeddings of their still untrained encoder, at the frozen methods' cost per step; then every adapter parameter
trains (a staged fine-tuning: the cheap part first, the encoder's adapters on top).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from medfoundry._deprecated import moved
from medfoundry.data.slices2d import Sample2D
from medfoundry.errors import InputError, MedfoundryWarning
from medfoundry.evaluation import dice, nsd
from medfoundry.inference.embedding_cache import EmbeddingMemo, content_key
from medfoundry.inference.encoder_backends import OnnxEncoder
from medfoundry.inference.volume_eval import Volume3D, evaluate_volumes, fp32_encoder
from medfoundry.io.atomic import atomic_path
from medfoundry.modeling.adapters.base import AdaptedLiteMedSAM
from medfoundry.modeling.adapters.io import read_adapter, save_adapter
from medfoundry.preprocessing.resize import ResizeLongestSide
from medfoundry.training.finetune.augment import (
    Augment,
    flip_code,
    jitter_box,
    model_image,
    model_images,
    prepare_targets,
)
from medfoundry.training.finetune.curves import save_curves
from medfoundry.training.finetune.losses import make_loss
from medfoundry.training.finetune.modality_head import class_weights, fit_modality_head
from medfoundry.training.finetune.schedules import make_scheduler
from medfoundry.training.finetune.stopping import StopRule, format_duration, time_left, untrained_notice
from medfoundry.training.resume import resume_or_refuse

DEFAULT_LR = {"decoder": 1e-4, "lora": 1e-3, "dbsam": 3e-4, "classprompt": 1e-4}

# renamed; the old name works for one more release
__getattr__ = moved(__name__, __name__, {"EmbeddingCache": "MemoryEmbeddingCache"})


@dataclass
class FinetuneConfig:
    """Training settings (method options live in the adapter's own config)."""

    epochs: int = 10
    batch_size: int = 4
    lr: float | None = None  # None: the method's default (DEFAULT_LR)
    weight_decay: float = 0.01
    loss: str = "dice+focal"
    schedule: str = "warmup-exp"
    warmup_steps: int | None = 10  # linear learning-rate warm-up; None: one epoch (steps_per_epoch)
    decay: float = 0.995  # per step after warm-up
    steps_per_epoch: int | None = None  # None: one pass over the training samples
    flip_prob: float = 0.5
    jitter: float = 20.0  # box jitter per side, px on MedSAM's 1024 frame (5 px at 256)
    point_prob: float = 0.2
    points: int = 1
    box3d_prob: float = 0.3  # prompts: the 3D box's in-plane extent (augment.prompt_box)
    neighbour_prob: float = 0.4  # prompts: an adjacent slice's box + the propagation margin; the rest exact
    patience: int = 0  # stop after this many epochs without a better validation score (0: never)
    min_epochs: int = 0  # early stopping counts only after this many epochs (stopping.StopRule)
    # lora / dbsam: train only the decoder-side adapter parameters for the first epochs, on cached embeddings of
    # the (untrained) encoder, then everything (0: off; frozen-encoder methods ignore it)
    decoder_warmup_epochs: int = 0
    # 3D validation encoder, fp32: "onnx" (as `segment` runs) or "torch"; None: onnx for a frozen encoder (one
    # export of the base), torch for a trained one (no export of every epoch's weights into the cache)
    val_backend: str | None = None
    nsd_tolerance_mm: float = 2.0
    seed: int = 0


@dataclass
class FinetuneResult:
    """Where the checkpoints went and the per-epoch history."""

    out_dir: Path
    best: Path
    last: Path
    curves: Path
    history: list[dict] = field(default_factory=list)
    trainable: int = 0
    total: int = 0
    seconds_per_step: float = 0.0
    best_epoch: int = -1  # the epoch best.pt holds (-1: the untrained adapter)
    stopped: str = ""  # why the run ended
    notice: str | None = None  # set when no epoch beat the untrained adapter (best.pt is that adapter)
    seconds: float = 0.0  # wall time of the training (medfoundry.api.finetune sets it)

    @property
    def best_is_untrained(self) -> bool:
        """Whether ``best.pt`` holds the untrained adapter (validated before training and never beaten)."""
        return untrained_is_best(self.history, self.best_epoch)


def untrained_is_best(history: list[dict], best_epoch: int) -> bool:
    """Whether the untrained adapter (validated before training, epoch -1) is the best state of ``history``."""
    return best_epoch < 0 and any(h["epoch"] == -1 for h in history)


class MemoryEmbeddingCache:
    """Image embeddings of a frozen encoder per (sample, flip), stored in float16: an
    :class:`~medfoundry.inference.embedding_cache.EmbeddingMemo` keyed by the sample's image content and the flip
    (the on-disk cache of ``classify embed`` is :class:`~medfoundry.inference.embedding_cache.DiskEmbeddingCache`).
    One cache may serve several runs (and their validation) that share the same frozen base encoder. ``encoder``
    (e.g. an ONNX Runtime backend of the same frozen encoder, ~2x faster on CPU) computes them instead of
    ``model.embed``."""

    def __init__(
        self,
        model: AdaptedLiteMedSAM,
        backend: str = "fast",
        encoder: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.model = model
        self.backend = backend  # the frozen encoder's runtime (inference.encoder_backends; CPU only)
        self.memo = EmbeddingMemo(encoder, dtype=torch.float16)  # an explicit encoder wins over ``backend``

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen encoder on model-space ``images`` (not memoised)."""
        if self.memo.encoder is None:
            from medfoundry.inference.encoder_backends import make_encoder_backend

            on_cpu = all(p.device.type == "cpu" for p in self.model.image_encoder.parameters())
            self.memo.encoder = (
                make_encoder_backend(self.model.image_encoder, self.backend) if on_cpu else self.model.embed
            )
        with torch.no_grad():
            return self.memo.encoder(images)

    def get(self, samples: list[Sample2D], flips: list[int]) -> torch.Tensor:
        """(B, 256, 64, 64) float32 embeddings of ``samples`` flipped as ``flips`` say."""
        keys = [content_key(s.image, c) for s, c in zip(samples, flips, strict=True)]
        return self.memo.get(keys, lambda idx: self.encode(model_images([samples[i] for i in idx],
                                                                          [flips[i] for i in idx])))  # fmt: skip


def modality_targets(model: AdaptedLiteMedSAM, samples: list[Sample2D]) -> torch.Tensor | None:
    """Class indices of the samples' modalities for a class-prompt model (else ``None``)."""
    if model.method != "classprompt":
        return None
    known = model.config["modalities"]
    bad = sorted({s.modality for s in samples} - set(known))
    if bad:
        raise InputError(samples[0].source, f"modality {bad[0]} is not among the class prompts {known}")
    return torch.tensor([known.index(s.modality) for s in samples], dtype=torch.long)


@torch.no_grad()
def evaluate_samples(
    model: torch.nn.Module,
    samples: list[Sample2D],
    tolerance_mm: float = 2.0,
    cache: MemoryEmbeddingCache | None = None,
    progress: bool = False,
    loose_jitter: float | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Mean DSC and NSD of ``model`` on samples, each prompted with its exact ground-truth box. With
    ``loose_jitter`` also ``dsc_loose`` / ``nsd_loose`` with each box side moved out by a seeded random 0 to
    ``loose_jitter`` px of MedSAM's 1024-pixel frame (as the training augmentation does), like a hand-drawn box."""
    model.eval()
    if not isinstance(model, AdaptedLiteMedSAM):  # a plain LiteMedSAM: the same modules, the same decode
        model = AdaptedLiteMedSAM(model, "base", {}, set())
    rng = np.random.default_rng(seed)
    scores: dict[str, list[float]] = {"dsc": [], "nsd": [], "dsc_loose": [], "nsd_loose": []}
    for sample in tqdm(samples, desc="validating", unit="slice", disable=not progress, leave=False):
        t = ResizeLongestSide(tuple(sample.mask.shape[:2]))
        if cache is not None:
            emb = cache.get([sample], [0])
        else:
            emb = model.embed(model_image(sample.image)[None])
        exact = t.apply_boxes(sample.box())[0]
        boxes = {"": exact}
        if loose_jitter is not None:
            boxes["_loose"] = jitter_box(exact, rng, loose_jitter, t.resized_size)
        for suffix, box in boxes.items():
            logits = model.decode(emb, torch.from_numpy(np.asarray(box, dtype=np.float32))[None, None])["logits"]
            pred = (t.logits_to_original(logits)[0, 0] > 0).numpy()
            scores["dsc" + suffix].append(dice(pred, sample.mask))
            scores["nsd" + suffix].append(nsd(pred, sample.mask, sample.spacing, tolerance_mm))
    return {k: float(np.mean(v)) for k, v in scores.items() if v}


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return {"numpy": json.dumps(rng.bit_generator.state), "torch": torch.get_rng_state()}


def _restore(model: AdaptedLiteMedSAM, last_path: Path, base_fingerprint: str, optimizer, scheduler, rng) -> dict:
    """Load ``last.pt`` into the model, optimiser, schedule and random generators; returns its train state."""
    payload = read_adapter(last_path)
    if payload["method"] != model.method or payload["base_fingerprint"] != base_fingerprint:
        raise InputError(last_path, f"holds a {payload['method']} run on another base; use a new output folder")
    if payload["config"] != model.config:
        raise InputError(last_path, f"was trained with options {payload['config']}, not {model.config}")
    model.load_state_dict(payload["state"], strict=False)
    state = payload["train_state"]
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng.bit_generator.state = json.loads(state["rng"]["numpy"])
    torch.set_rng_state(state["rng"]["torch"])
    return state


def encoder_side_parameters(model: AdaptedLiteMedSAM) -> list[torch.nn.Parameter]:
    """The trainable parameters inside the image encoder (what a decoder warm-up holds still)."""
    return [p for p in model.image_encoder.parameters() if p.requires_grad]


def _same_embeddings(model: AdaptedLiteMedSAM, encode: Callable[[torch.Tensor], torch.Tensor], image) -> bool:
    """Whether ``encode`` (a lent cache's or memo's encoder) gives ``model``'s own embeddings of ``image``."""
    x = model_image(image)[None]
    with torch.no_grad():
        own, lent = model.embed(x), encode(x)
    return float((own - lent).abs().max()) <= 1e-3 * max(float(own.abs().max()), 1.0)


def _frozen_inputs(model, train, val_volumes, config, cache, memo, lent_checked: bool):  # noqa: ANN202
    """(cache, memo) for training on a frozen encoder: the lent ones where they give this model's embeddings
    (always for a frozen-encoder method; checked on one slice for a warm-up, whose encoder may differ from the
    base the cache was made with), else new ones of this model. A new cache embeds with the validation memo's
    ONNX Runtime encoder where there is one, so the encoder is exported and loaded once."""
    if cache is not None and not lent_checked:
        cache = cache if _same_embeddings(model, cache.encode, train[0].image) else None
    if memo is not None and not lent_checked:
        memo = memo if _same_embeddings(model, memo, train[0].image) else None
    if val_volumes and memo is None:
        memo = fp32_encoder(model, config.val_backend or "onnx")
    if cache is None:
        inner = None if memo is None else memo.encoder
        on_cpu = all(p.device.type == "cpu" for p in model.image_encoder.parameters())
        shared = inner if on_cpu and isinstance(inner, OnnxEncoder) else None
        cache = MemoryEmbeddingCache(model, encoder=shared)
    return cache, memo


def _train_step(model, batch, flips, prompts, cache, modality, loss_fn, optimizer, class_w=None) -> float:
    """One optimiser step on a batch of prepared prompts and targets; returns the loss."""
    emb = cache.get(batch, flips) if cache is not None else model.embed(model_images(batch, flips))
    out = model.decode(emb, prompts["boxes"], prompts["points"], prompts["point_labels"], modality)
    loss = loss_fn(out["logits"], prompts["targets"])
    if modality is not None:
        ce = F.cross_entropy(out["modality_logits"], modality, weight=class_w)
        loss = loss + model.config["modality_weight"] * ce
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def write_history(out_dir: Path, history: list[dict], best_epoch: int, stopped: str = "",
                  notice: str | None = None) -> Path:  # fmt: skip
    """``history.json``: the epoch records (``epochs``; epoch -1 is the untrained adapter's validation), the epoch
    ``best.pt`` holds, whether that is the untrained adapter, why the run stopped (empty while it runs) and the
    notice a run without a better epoch gives."""
    untrained = untrained_is_best(history, best_epoch)
    summary = {"best_epoch": best_epoch, "best_is_untrained": untrained, "stopped": stopped, "notice": notice,
               "epochs": history}  # fmt: skip
    with atomic_path(out_dir / "history.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    return out_dir / "history.json"


def _save_epoch(model, out_dir: Path, optimizer, scheduler, rng, train_state: dict, base_fingerprint: str,
                base_name: str, meta: dict, title: str) -> None:  # fmt: skip
    """``last.pt`` (adapter + everything needed to resume), ``history.json`` and ``curves.png``."""
    state = {**train_state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "rng": _rng_state(rng)}  # fmt: skip
    save_adapter(model, out_dir / "last.pt", base_fingerprint=base_fingerprint, base_name=base_name, meta=meta,
                 train_state=state, overwrite=True)  # fmt: skip
    write_history(out_dir, train_state["history"], train_state["best_epoch"])
    save_curves(train_state["history"], out_dir / "curves.png", title=title)


def _validate(model, val, val_volumes, config, cache, memo, progress: bool = False) -> dict:
    """Validation scores: 3D (``val3d_*``, with 2D ``val_dsc`` / ``val_nsd`` from the same embeddings, and the
    3D DSC per case) when there are volumes, else 2D exact-box DSC / NSD of the samples; ``score`` is what model
    selection uses."""
    if val_volumes:
        if memo is None or model.encoder_trainable:  # a trained encoder: fresh embeddings every time
            memo = fp32_encoder(model, config.val_backend or ("torch" if model.encoder_trainable else "onnx"))
        r = evaluate_volumes(model, val_volumes, tolerance_mm=config.nsd_tolerance_mm, slices2d=True, memo=memo,
                             seed=config.seed, progress=progress)  # fmt: skip
        per_case = {c["case"]: [round(c["dsc"], 4), round(c["dsc_loose"], 4)] for c in r["per_case"]}
        scores = {"val_dsc": r["dsc2d"], "val_nsd": r["nsd2d"], "val3d_dsc": r["dsc"], "val3d_nsd": r["nsd"],
                  "val3d_dsc_loose": r["dsc_loose"], "val3d_nsd_loose": r["nsd_loose"],
                  "val3d_per_case": per_case}  # fmt: skip
    elif val:
        r = evaluate_samples(model, val, config.nsd_tolerance_mm, cache=cache)
        scores = {"val_dsc": r["dsc"], "val_nsd": r["nsd"]}
    else:
        scores = {"val_dsc": None, "val_nsd": None}
    return {**scores, "score": _selection_score(scores)}


def _selection_score(record: dict) -> float | None:
    """The score ``best.pt`` is chosen by: the mean of exact- and loose-box 3D DSC, else the 2D DSC."""
    if record.get("val3d_dsc") is not None:
        return (record["val3d_dsc"] + record["val3d_dsc_loose"]) / 2
    return record.get("val_dsc")


def _fit_head(model, train, modality_all, cache, seed: int, progress: bool) -> None:
    """A class-prompt model's modality head fitted alone, class-balanced, before the first step (see
    :mod:`.modality_head`); nothing for other methods or a single-modality training set."""
    if modality_all is None or cache is None:
        return
    fitted = fit_modality_head(model, train, modality_all, cache, seed=seed)
    if fitted and progress:
        counts = ", ".join(f"{k} {v}" for k, v in fitted["per_class"].items())
        tqdm.write(f"modality head fitted on {counts} slices: balanced accuracy {fitted['balanced_accuracy']:.3f}")


def _epoch_text(epoch: int, epochs: int, record: dict) -> str:
    """One line per epoch: loss and validation scores."""
    text = f"epoch {epoch + 1}/{epochs}: loss {record['train_loss']:.4f}"
    if record.get("val3d_dsc") is not None:
        text += f", 3D val DSC {record['val3d_dsc']:.3f} (loose box {record['val3d_dsc_loose']:.3f})"
    if record["val_dsc"] is not None:
        text += f", 2D val DSC {record['val_dsc']:.3f} NSD {record['val_nsd']:.3f}"
    return text


def _untrained_notice(history: list[dict], val_volumes) -> str:
    """The notice of a run in which no epoch beat the untrained adapter."""
    trained = [s for h in history if h["epoch"] >= 0 and (s := _selection_score(h)) is not None]
    what = f"mean 3D DSC, exact and loose box, of {len(val_volumes)} volumes" if val_volumes else "2D DSC"
    return untrained_notice(len([h for h in history if h["epoch"] >= 0]), what, max(trained, default=None),
                            _selection_score(history[0]))  # fmt: skip


def finetune(
    model: AdaptedLiteMedSAM,
    train: list[Sample2D],
    val: list[Sample2D],
    out_dir: str | Path,
    *,
    config: FinetuneConfig | None = None,
    base_fingerprint: str,
    base_name: str = "lite_medsam",
    resume: bool = False,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    cache: MemoryEmbeddingCache | None = None,
    val_volumes: list[Volume3D] | None = None,
    memo: EmbeddingMemo | None = None,
) -> FinetuneResult:
    """Train ``model``'s adapter on ``train``, validate each epoch, write ``best.pt``, ``last.pt``,
    ``history.json`` and ``curves.png`` to ``out_dir``. With ``resume`` it continues from ``last.pt``.

    ``val_volumes`` switches validation to the 3D path (then ``val`` is not used); ``cache`` (2D samples) and
    ``memo`` (3D validation slices) lend embeddings of the same frozen base encoder from an earlier run (ignored
    when the method trains inside the encoder). If no epoch beats the untrained adapter, ``best.pt`` is that
    adapter and the run warns (:class:`~medfoundry.errors.MedfoundryWarning`; ``result.notice``, ``history.json``)."""
    config = config or FinetuneConfig()
    if not train:
        raise InputError(out_dir, "no training samples")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    best_path, last_path = out_dir / "best.pt", out_dir / "last.pt"
    curves_path = out_dir / "curves.png"
    lr = config.lr if config.lr is not None else DEFAULT_LR.get(model.method, 1e-4)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    params = model.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)
    steps_per_epoch = config.steps_per_epoch or int(np.ceil(len(train) / config.batch_size))
    warmup_steps = steps_per_epoch if config.warmup_steps is None else config.warmup_steps
    scheduler = make_scheduler(optimizer, config.schedule, warmup_steps, config.decay)
    loss_fn = make_loss(config.loss)
    augment = Augment(config.flip_prob, config.jitter, config.point_prob, config.points, config.box3d_prob,
                      config.neighbour_prob)  # fmt: skip
    warm_params = encoder_side_parameters(model) if config.decoder_warmup_epochs > 0 else []
    warm_epochs = config.decoder_warmup_epochs if warm_params else 0
    rule = StopRule(config.epochs, config.patience, config.min_epochs, warm_epochs)
    lent = (cache, memo)
    if model.encoder_trainable:
        cache, memo = None, None  # fresh embeddings at every step; a warm-up takes its own below
    else:  # base embeddings, kept for every epoch
        cache, memo = _frozen_inputs(model, train, val_volumes, config, cache, memo, lent_checked=True)
    modality_all = modality_targets(model, train)
    class_w = None if modality_all is None else class_weights(modality_all, len(model.modalities))
    history: list[dict] = []
    start_epoch, best_score, best_epoch = 0, -np.inf, -1
    meta = {"train_config": asdict(config), "lr": lr, "train_cases": sorted({s.case for s in train}),
            "val_cases": sorted({v.case for v in val_volumes} if val_volumes else {s.case for s in val})}  # fmt: skip

    earlier = [p for p in (last_path, best_path) if p.exists()]
    resumed = resume_or_refuse(out_dir, earlier, resume=resume) and last_path.is_file()
    if resumed:
        state = _restore(model, last_path, base_fingerprint, optimizer, scheduler, rng)
        history, start_epoch, best_score = state["history"], state["epoch"] + 1, state["best_score"]
        best_epoch = state.get("best_epoch", state["epoch"])
    else:
        _fit_head(model, train, modality_all, cache, config.seed, progress)
    trainable, total = model.count_parameters()
    warming = start_epoch < warm_epochs
    if warming:  # decoder side only, on cached embeddings of this (not yet trained) encoder
        for p in warm_params:
            p.requires_grad_(False)
        cache, memo = _frozen_inputs(model, train, val_volumes, config, *lent, lent_checked=False)
    if not resumed and val_volumes:
        # the untrained adapter is the first candidate: best.pt is never worse on validation
        t0 = time.perf_counter()
        scores = _validate(model, val, val_volumes, config, cache, memo, progress)
        best_score = scores.pop("score")
        record = {"epoch": -1, "train_loss": None, **scores, "lr": 0.0, "seconds_per_step": 0.0,
                  "seconds": time.perf_counter() - t0}  # fmt: skip
        history.append(record)
        save_adapter(model, best_path, base_fingerprint=base_fingerprint, base_name=base_name,
                     meta={**meta, **record}, overwrite=True)  # fmt: skip
        write_history(out_dir, history, best_epoch)
        if progress:
            tqdm.write(f"before training: 3D val DSC {scores['val3d_dsc']:.3f} (loose box "
                       f"{scores['val3d_dsc_loose']:.3f}), 2D {scores['val_dsc']:.3f}")  # fmt: skip

    step_times: list[float] = []
    epoch_seconds: list[float | None] = [h.get("seconds") for h in history if h["epoch"] >= 0]
    stopped = f"{config.epochs} epoch{'s' if config.epochs > 1 else ''}, the most allowed (--epochs)"
    for epoch in range(start_epoch, config.epochs):
        if rule.should_stop(epoch, best_epoch):
            stopped = f"early stop after {epoch} epochs: {config.patience} without a better validation score"
            break
        t_epoch = time.perf_counter()
        if epoch >= warm_epochs and warming:  # the encoder's adapters join; embeddings change every step
            for p in warm_params:
                p.requires_grad_(True)
            cache, memo, warming = None, None, False
            if progress:
                tqdm.write(f"decoder warm-up done after {warm_epochs} epochs; the encoder's adapters train now")
        model.train()
        losses = []
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress)
        order = rng.permutation(len(train))
        for step in bar:
            t0 = time.perf_counter()
            idx = [int(order[(step * config.batch_size + j) % len(train)]) for j in range(config.batch_size)]
            batch = [train[i] for i in idx]
            flips = [flip_code(rng, augment.flip_prob) for _ in batch]
            with_points = augment.points > 0 and rng.random() < augment.point_prob
            prompts = prepare_targets(batch, flips, rng, augment, with_points)
            modality = None if modality_all is None else modality_all[idx]
            loss = _train_step(model, batch, flips, prompts, cache, modality, loss_fn, optimizer, class_w)
            if config.schedule != "plateau":
                scheduler.step()
            losses.append(loss)
            step_times.append(time.perf_counter() - t0)
            bar.set_postfix(loss=f"{np.mean(losses):.4f}")
        scores = _validate(model, val, val_volumes, config, cache, memo, progress)
        score = scores.pop("score")
        record = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            **scores,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds_per_step": float(np.mean(step_times[-len(losses) :])),
        }
        history.append(record)
        score = -record["train_loss"] if score is None else score
        if config.schedule == "plateau":
            scheduler.step(score)
        if score > best_score:
            best_score, best_epoch = score, epoch
            save_adapter(model, best_path, base_fingerprint=base_fingerprint, base_name=base_name,
                         meta={**meta, "epoch": epoch, **record}, overwrite=True)  # fmt: skip
        record["seconds"] = time.perf_counter() - t_epoch  # training + validation (+ saving the best)
        epoch_seconds.append(record["seconds"])
        train_state = {"history": history, "epoch": epoch, "best_score": best_score, "best_epoch": best_epoch}
        _save_epoch(model, out_dir, optimizer, scheduler, rng, train_state, base_fingerprint, base_name,
                    {**meta, "epoch": epoch}, f"{model.method} ({trainable:,} trainable parameters)")  # fmt: skip
        if progress:
            tqdm.write(f"{_epoch_text(epoch, config.epochs, record)}; {format_duration(record['seconds'])}; "
                       f"{time_left(rule, epoch + 1, best_epoch, epoch_seconds)}")  # fmt: skip
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
    for p in warm_params:  # the model leaves as it came: every adapter parameter trainable
        p.requires_grad_(True)
    result = FinetuneResult(
        out_dir=out_dir,
        best=best_path,
        last=last_path,
        curves=curves_path,
        history=history,
        trainable=trainable,
        total=total,
        seconds_per_step=float(np.mean(step_times)) if step_times else 0.0,
        best_epoch=best_epoch,
        stopped=stopped,
    )
    if result.best_is_untrained and len(history) > 1:
        result.notice = _untrained_notice(history, val_volumes)
        warnings.warn(result.notice, MedfoundryWarning, stacklevel=2)
    write_history(out_dir, history, best_epoch, stopped, result.notice)
    return result
