"""``pretrain`` and ``transfer``: train the 3D tumour foundation model (TSFM) on a preprocessed pool, fine-tune
it on a new label set, or segment volumes with a checkpoint (``transfer_predict``). Multi-process runs go under
``torchrun`` (docs/tsfm.md): every process calls the same function; one writes the checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medfoundry.api.common import resolve_device, resolve_options, warn_if_no_contrast
from medfoundry.errors import InputError


@dataclass
class TrainOptions:
    """The training options ``pretrain`` and ``transfer`` share: the ``pool`` (from ``pool``), the ``out`` folder
    (last.pt every epoch, model.pt, loss.png) and the schedule (docs/tsfm.md)."""

    pool: Path | None = None
    out: Path | None = None
    epochs: int = 100
    iters: int = 250
    batch_size: int = 2
    lr: float = 1e-2
    optimizer: str = "sgd"
    weight_decay: float = 1e-3
    patch_size: tuple[int, int, int] | None = None
    workers: int = 0
    seed: int = 0
    no_mirror: bool = False
    device: str | None = None
    amp: bool = False
    parallel: str = "ddp"
    checkpointing: bool = False
    threads: int | None = None
    resume: bool = False
    overwrite: bool = False
    progress: bool = True

    def settings(self):
        """The :class:`~medfoundry.training.tsfm.TrainSettings` of these options."""
        from medfoundry.training.tsfm import TrainSettings

        return TrainSettings(
            epochs=self.epochs,
            iters_per_epoch=self.iters,
            batch_size=self.batch_size,
            lr=self.lr,
            optimizer=self.optimizer,
            weight_decay=self.weight_decay,
            num_workers=self.workers,
            seed=self.seed,
            mirror=not self.no_mirror,
            amp=self.amp,
            parallel=self.parallel,
            checkpointing=self.checkpointing,
        )


@dataclass
class PretrainOptions(TrainOptions):
    """``pretrain``: the shared training options and the model size ``preset``."""

    preset: str = "small"


@dataclass
class TransferOptions(TrainOptions):
    """``transfer`` (training): start from the backbone of ``init`` (a pretrain checkpoint), or ``from_scratch``
    with a ``preset`` (a baseline); ``preset`` must match ``init`` when both are given."""

    epochs: int = 10
    init: Path | None = None
    from_scratch: bool = False
    preset: str | None = None


@dataclass
class TrainResult:
    """What a training call did: the model's preset, the cases of the pool, and whether this process is the one
    that wrote the checkpoints (under torchrun, only one is)."""

    preset: str
    cases: int
    is_main: bool
    out: Path | None = None


def require(options, *names: str) -> None:
    """InputError unless the named options were given (named as the CLI spells them)."""
    for name in names:
        if getattr(options, name, None) in (None, ""):
            raise InputError(None, f"--{name.replace('_', '-')} is required")


def set_threads(threads: int | None) -> None:
    """Torch's thread budget, when one is given."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def pretrain(options: PretrainOptions | None = None, **fields) -> TrainResult:
    """Build the TSFM network for the pool's classes and train it (one process, or every process of a torchrun)."""
    from medfoundry.data.pool import load_pool_index
    from medfoundry.modeling.tsfm.network import build_tsfm
    from medfoundry.training.distributed import cleanup, init_distributed
    from medfoundry.training.tsfm import fit

    o = resolve_options(PretrainOptions, options, fields)
    require(o, "pool", "out")
    set_threads(o.threads)
    index = load_pool_index(o.pool)
    patch = tuple(o.patch_size or index["patch_size_zyx"])
    env = init_distributed(resolve_device(o.device))
    try:
        model = build_tsfm(o.preset, num_classes=len(index["classes"]), patch_size=patch)
        fit(
            model,
            o.pool,
            o.out,
            o.settings(),
            env,
            kind="pretrain",
            resume=o.resume,
            overwrite=o.overwrite,
            info={"pool": str(o.pool), "world_size": env.world_size},
            progress=o.progress,
        )
    finally:
        cleanup(env)
    return TrainResult(o.preset, len(index["cases"]), env.is_main, Path(o.out))


def transfer(options: TransferOptions | None = None, **fields) -> TrainResult:
    """Fine-tune a pretrained TSFM on the classes of ``pool`` (or train one from scratch, the baseline)."""
    from medfoundry.data.pool import load_pool_index
    from medfoundry.modeling.tsfm.checkpoint import load_checkpoint, model_for_transfer
    from medfoundry.modeling.tsfm.network import build_tsfm
    from medfoundry.training.distributed import cleanup, init_distributed
    from medfoundry.training.tsfm import fit

    o = resolve_options(TransferOptions, options, fields)
    require(o, "pool", "out")
    if bool(o.init) == bool(o.from_scratch):
        raise InputError(None, "give either --init CHECKPOINT (transfer) or --from-scratch --preset NAME")
    set_threads(o.threads)
    ckpt = load_checkpoint(o.init) if o.init else None  # a refused file stops before any other work
    index = load_pool_index(o.pool)
    k = len(index["classes"])
    patch = tuple(o.patch_size or index["patch_size_zyx"])
    if ckpt is not None:
        model = model_for_transfer(ckpt, k, o.init, preset=o.preset, patch_size=patch)
        info = {"init": str(o.init), "pretrained_classes": ckpt["classes"]}
    else:
        require(o, "preset")
        model = build_tsfm(o.preset, num_classes=k, patch_size=patch)
        info = {"init": None}
    env = init_distributed(resolve_device(o.device))
    info.update(pool=str(o.pool), world_size=env.world_size)
    try:
        fit(
            model,
            o.pool,
            o.out,
            o.settings(),
            env,
            kind="transfer" if o.init else "scratch",
            resume=o.resume,
            overwrite=o.overwrite,
            info=info,
            progress=o.progress,
        )
    finally:
        cleanup(env)
    return TrainResult(model.config.preset, len(index["cases"]), env.is_main, Path(o.out))


@dataclass
class TransferPredictOptions:
    """``transfer --predict``: segment the 3D images ``predict`` with the checkpoint ``model`` into ``out_dir``
    (IMAGE name + ``_tsfm.nii.gz``); ``modality`` defaults to the checkpoint's (if it has one)."""

    predict: list[Path] = field(default_factory=list)
    model: Path | None = None
    out_dir: Path | None = None
    modality: str | None = None
    preset: str | None = None
    overlap: float = 0.5
    sw_batch: int = 4
    device: str | None = None
    threads: int | None = None
    overwrite: bool = False
    progress: bool = True


def transfer_predict(options: TransferPredictOptions | None = None, on_written=None, **fields) -> list[Path]:
    """Label maps on each input's grid (MONAI sliding-window inference); every output is checked before any work.
    ``on_written(image, out, classes)`` is called as each map is written. Returns the outputs."""
    from tqdm import tqdm

    from medfoundry.inference.sliding_window import predict_labels
    from medfoundry.io import read_image, write_mask
    from medfoundry.io.atomic import check_writable
    from medfoundry.io.paths import split_suffix
    from medfoundry.modeling.tsfm.checkpoint import load_checkpoint, model_from_checkpoint

    o = resolve_options(TransferPredictOptions, options, fields)
    require(o, "model", "out_dir")
    set_threads(o.threads)
    outs = []
    for image_path in o.predict:  # refuse existing outputs before any work
        name = split_suffix(image_path)[0]
        out = Path(o.out_dir) / f"{name}_tsfm.nii.gz"
        check_writable(out, o.overwrite)
        outs.append(out)
    ckpt = load_checkpoint(o.model)
    model = model_from_checkpoint(ckpt, o.model, o.preset)
    prep = ckpt["preprocessing"]
    modality = o.modality
    if modality is None:
        mods = prep.get("modalities", [])
        if len(mods) != 1:
            raise InputError(o.model, f"the model was trained on {mods}; say --modality for the images")
        modality = mods[0]
    device = resolve_device(o.device)
    for image_path, out in tqdm(list(zip(o.predict, outs, strict=True)), desc="segmenting", unit="image"):
        image = read_image(image_path, modality=modality, progress=o.progress)
        warn_if_no_contrast(image)
        labels = predict_labels(model, image, prep, overlap=o.overlap, sw_batch_size=o.sw_batch, device=device)
        write_mask(labels, out, reference=image, overwrite=o.overwrite)
        if on_written is not None:
            on_written(image_path, out, ckpt["classes"])
    return outs
