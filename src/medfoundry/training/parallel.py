"""How TSFM training spreads the network over its processes (``TrainSettings.parallel``, ``--parallel``).

* ``ddp`` (default): every process holds the whole network, its gradients and the optimiser state;
  ``DistributedDataParallel`` averages the gradients after each backward pass.
* ``fsdp``: torch's fully sharded data parallel (FSDP2, ``fully_shard``): each process holds 1/N of the weights,
  gradients and optimiser state. Every residual block and the transformer bottleneck is a unit that is gathered
  just before it runs and freed after; the gradients are reduce-scattered. This is what the 1.6 B-parameter
  ``huge`` preset needs (the memory arithmetic is in docs/tsfm.md).

Checkpoints hold the full (unsharded) weights and optimiser state either way, so a model trained with FSDP loads
for transfer and prediction like any other and a run can resume under the other mode. Gathering them is a
collective call: every process makes it, rank 0 writes.
"""

from __future__ import annotations

from itertools import chain

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from medfoundry.errors import InputError
from medfoundry.modeling.tsfm.blocks import PreActResBlock
from medfoundry.modeling.tsfm.bottleneck import TransformerBottleneck
from medfoundry.training.distributed import DistEnv

PARALLEL = ("ddp", "fsdp")


def check_parallel(parallel: str) -> None:
    """:class:`InputError` for a mode that is not one of :data:`PARALLEL`."""
    if parallel not in PARALLEL:
        raise InputError(None, f"unknown parallel mode {parallel!r}; use one of {', '.join(PARALLEL)}")


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The modules FSDP gathers one at a time: every residual block and the transformer bottleneck (the stem,
    up-sampling projections and head stay with the root)."""
    return [m for m in model.modules() if isinstance(m, (PreActResBlock, TransformerBottleneck))]


def is_sharded(model: nn.Module) -> bool:
    """Whether ``fully_shard`` was applied to ``model``."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def wrap(model: nn.Module, env: DistEnv, parallel: str = "ddp") -> nn.Module:
    """The module the training loop calls: ``model`` alone (one process), wrapped in DDP, or sharded in place
    (FSDP, which first gives every process rank 0's weights, as DDP does)."""
    check_parallel(parallel)
    if not env.distributed:
        return model
    if parallel == "ddp":
        return DistributedDataParallel(model, device_ids=[env.device.index] if env.device.type == "cuda" else None)
    from torch.distributed.fsdp import fully_shard

    with torch.no_grad():
        for tensor in chain(model.parameters(), model.buffers()):
            dist.broadcast(tensor, src=0)
    for unit in shard_units(model):
        fully_shard(unit)
    fully_shard(model)
    return model


def _full_options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full weights on the CPU (under FSDP gathered from every process: all call it; rank 0 receives them,
    the others an empty dict)."""
    if is_sharded(model):
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(model, options=_full_options())
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimiser state: torch's own (parameters by index), or under FSDP the gathered full state with
    parameters by name (a collective call, like :func:`model_state`)."""
    if is_sharded(model):
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return get_optimizer_state_dict(model, optimizer, options=_full_options())
    return optimizer.state_dict()


def _rekey(state: dict, keys: dict) -> dict:
    return {
        "state": {keys[k]: v for k, v in state["state"].items()},
        "param_groups": [{**g, "params": [keys[p] for p in g["params"]]} for g in state["param_groups"]],
    }


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Restore a state written by :func:`optimizer_state` in either mode (parameters re-keyed by index or by
    name, in the order of ``model.parameters()``, which is the optimiser's)."""
    names = [n for n, _ in model.named_parameters()]
    by_name = any(isinstance(p, str) for g in state["param_groups"] for p in g["params"])
    if is_sharded(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        full = state if by_name else _rekey(state, dict(enumerate(names)))
        set_optimizer_state_dict(model, optimizer, full, options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(_rekey(state, {n: i for i, n in enumerate(names)}) if by_name else state)


def checkpoint_state(model: nn.Module, optimizer: torch.optim.Optimizer | None, env: DistEnv) -> tuple[dict, dict]:
    """(full weights, optimiser state or ``{}`` without ``optimizer``) for rank 0 to write; the other ranks get
    empty dicts. Under FSDP a collective call that every rank makes; otherwise only rank 0 copies anything."""
    if not (env.is_main or is_sharded(model)):
        return {}, {}
    return model_state(model), {} if optimizer is None else optimizer_state(model, optimizer)
