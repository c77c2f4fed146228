"""Ways to run the LiteMedSAM image encoder on CPU: eager PyTorch, or ONNX Runtime in fp32 or int8.

The ONNX graph is exported once per set of encoder weights and cached (see :mod:`.onnx_export`), so later runs
start at once.
"""

from __future__ import annotations

import numpy as np
import torch

from medfoundry.inference.onnx_export import cached_onnx, ort_session


class EncoderBackend:
    """Maps a (B, 3, 256, 256) float batch in [0, 1] to image embeddings (B, 256, 64, 64)."""

    name = "base"

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class TorchEncoder(EncoderBackend):
    """The encoder in eager PyTorch fp32 (the reference numerics)."""

    name = "torch"

    def __init__(self, encoder: torch.nn.Module) -> None:
        self.encoder = encoder.eval()

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.encoder(batch)


class OnnxEncoder(EncoderBackend):
    """The encoder exported to ONNX (batch 1) and run with ONNX Runtime; ``int8`` quantises MatMul/Gemm weights."""

    def __init__(self, encoder: torch.nn.Module, int8: bool = False, threads: int | None = None) -> None:
        self.name = "onnx-int8" if int8 else "onnx"

        def export(path):
            torch.onnx.export(
                encoder.eval(),
                (torch.zeros(1, 3, 256, 256),),
                str(path),
                input_names=["image"],
                output_names=["embedding"],
                opset_version=17,
                dynamo=False,
            )

        self.path = cached_onnx(encoder, "encoder", export, int8=int8)
        self.session = ort_session(self.path, threads)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        arrays = batch.detach().cpu().float().numpy()
        out = [self.session.run(None, {"image": arrays[i : i + 1]})[0] for i in range(len(arrays))]
        return torch.from_numpy(np.concatenate(out))
