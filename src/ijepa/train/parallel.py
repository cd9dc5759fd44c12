"""Data-parallel wrapping of the I-JEPA networks (DDP or FSDP2) and their full state dicts.

Modes (see ``docs/distributed.md``):

- ``single``: one process; nothing is wrapped.
- ``ddp``: the encoder and the predictor are each wrapped in ``DistributedDataParallel``. The
  predictor consumes the encoder's output in the same backward pass; each wrapper averages the
  gradients of its own parameters over ranks. The EMA target is not wrapped: it never gets
  gradients and stays identical on every rank because its source does.
- ``fsdp``: FSDP2 (``fully_shard``) on every transformer block, then on the encoder, the predictor
  and the target encoder, over one 1-D mesh of all ranks. The target encoder is sharded exactly
  like the encoder, so the EMA ``t = m t + (1 - m) c`` runs on matching local shards with foreach
  kernels and no communication. On CUDA with bf16 the parameters are all-gathered in bf16 and the
  gradients reduced in fp32.

Activation checkpointing (any mode) recomputes each block's forward during backward.

Single-file checkpoints hold full, unsharded state in the single-process layout, whatever the
mode and world size: module state dicts without prefixes and the optimizer's id-keyed state dict
(the official layout). Sharded checkpoints (``meta.parallel=fsdp``, see
:mod:`ijepa.sharded_checkpoint`) hold each rank's shards as they are
(:meth:`ParallelModels.sharded_state`) and are resharded on load. Under FSDP, saving gathers them onto rank 0's CPU; loading happens on rank 0
into the unwrapped modules, which are then broadcast before wrapping; the optimizer state is
broadcast from rank 0 and resharded by ``torch.distributed.checkpoint.state_dict``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ijepa.models import Block, JEPAModels

logger = logging.getLogger(__name__)

#: Data-parallel modes of ``meta.parallel``.
PARALLEL_MODES = ("ddp", "fsdp")


def transformer_blocks(module: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a network, in order (the units of sharding and recompute)."""
    return [m for m in module.modules() if isinstance(m, Block)]


def enable_activation_checkpointing(module: nn.Module) -> int:
    """Recompute every transformer block's forward in backward instead of storing activations.

    The block's ``forward`` is replaced on the instance, so parameter names and state-dict keys
    are unchanged. Returns the number of blocks changed.
    """
    blocks = transformer_blocks(module)
    for block in blocks:
        inner = block.forward

        def forward(*args: Any, _inner: Any = inner, **kwargs: Any) -> Any:
            return checkpoint(_inner, *args, use_reentrant=False, **kwargs)

        block.forward = forward
    return len(blocks)


def _holder(models: JEPAModels) -> nn.Module:
    """A container naming the optimised parameters ``encoder.*`` and ``predictor.*``."""
    return nn.ModuleDict({"encoder": models.encoder, "predictor": models.predictor})


def optimizer_param_names(
    groups: Iterable[Mapping[str, Any]], encoder: nn.Module, predictor: nn.Module
) -> list[str]:
    """Names (``encoder.<fqn>``/``predictor.<fqn>``) of the parameters in optimizer order.

    Args:
        groups: the optimizer's ``param_groups`` (or :func:`ijepa.train.optim.param_groups`).
    """
    holder = nn.ModuleDict({"encoder": encoder, "predictor": predictor})
    names = {id(p): name for name, p in holder.named_parameters()}
    out = []
    for group in groups:
        for p in group["params"]:
            if id(p) not in names:
                raise ValueError("the optimizer holds a parameter outside encoder and predictor")
            out.append(names[id(p)])
    return out


def optimizer_state_to_names(state: Mapping[str, Any], names: list[str]) -> dict[str, Any]:
    """An id-keyed optimizer state dict (torch's layout) re-keyed by parameter name.

    Raises:
        ValueError: the state does not describe ``len(names)`` parameters.
    """
    groups = state.get("param_groups")
    if not isinstance(groups, list) or "state" not in state:
        raise ValueError("optimizer state has no 'state'/'param_groups'")
    ids = [int(i) for g in groups for i in g["params"]]
    if sorted(ids) != list(range(len(names))):
        raise ValueError(
            f"optimizer state covers {len(ids)} parameters but the model has {len(names)}"
        )
    return {
        "state": {names[int(i)]: v for i, v in state["state"].items()},
        "param_groups": [{**g, "params": [names[int(i)] for i in g["params"]]} for g in groups],
    }


def optimizer_state_to_ids(state: Mapping[str, Any], names: list[str]) -> dict[str, Any]:
    """The inverse of :func:`optimizer_state_to_names`."""
    index = {name: i for i, name in enumerate(names)}
    return {
        "state": {index[name]: v for name, v in state["state"].items()},
        "param_groups": [
            {**g, "params": [index[name] for name in g["params"]]} for g in state["param_groups"]
        ],
    }


@dataclass
class ParallelModels:
    """The networks of a (possibly) data-parallel run.

    Attributes:
        models: the modules that own the parameters (under FSDP, sharded in place); checkpoints
            and the EMA use these.
        step_models: what the training step calls (DDP wrappers, or ``models`` itself).
        mode: ``single``, ``ddp`` or ``fsdp``.
        rank: this process's rank.
    """

    models: JEPAModels
    step_models: JEPAModels
    mode: str
    rank: int = 0

    @staticmethod
    def _options(*, cpu_offload: bool = False, broadcast_from_rank0: bool = False) -> Any:
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(
            full_state_dict=True, cpu_offload=cpu_offload, broadcast_from_rank0=broadcast_from_rank0
        )

    def model_state(self) -> dict[str, dict[str, Any]] | None:
        """Full state dicts of ``encoder``, ``predictor`` and ``target_encoder`` on rank 0.

        A collective under FSDP (call it on every rank); None on the other ranks.
        """
        names = ("encoder", "predictor", "target_encoder")
        if self.mode == "fsdp":
            from torch.distributed.checkpoint.state_dict import get_model_state_dict

            opts = self._options(cpu_offload=True)
            out = {n: get_model_state_dict(getattr(self.models, n), options=opts) for n in names}
            return out if self.rank == 0 else None
        if self.rank != 0:
            return None
        return {n: getattr(self.models, n).state_dict() for n in names}

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        """The optimizer's full id-keyed state dict on rank 0 (a collective under FSDP)."""
        if self.mode == "fsdp":
            from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

            full = get_optimizer_state_dict(
                _holder(self.models), optimizer, options=self._options(cpu_offload=True)
            )
            if self.rank != 0:
                return None
            names = optimizer_param_names(
                optimizer.param_groups, self.models.encoder, self.models.predictor
            )
            return optimizer_state_to_ids(full, names)
        return optimizer.state_dict() if self.rank == 0 else None

    def sharded_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """This rank's part of the state, for a sharded checkpoint (a collective under FSDP).

        Returns:
            ``{"models": {"encoder": ..., "predictor": ..., "target_encoder": ...}, "optim":
            ...}``: state dicts with plain names (DTensor shards under FSDP, whole tensors on
            one process); the optimizer's is keyed by ``encoder.<fqn>``/``predictor.<fqn>``.
        """
        from torch.distributed.checkpoint.state_dict import (
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        names = ("encoder", "predictor", "target_encoder")
        models = {n: get_model_state_dict(getattr(self.models, n)) for n in names}
        return {
            "models": models,
            "optim": get_optimizer_state_dict(_holder(self.models), optimizer),
        }

    def load_sharded_optimizer(self, optimizer: torch.optim.Optimizer, path: Any) -> None:
        """Load the optimizer state of the sharded checkpoint ``path`` (a collective), resharded
        to this run's layout."""
        from torch.distributed.checkpoint.state_dict import (
            get_optimizer_state_dict,
            set_optimizer_state_dict,
        )

        from ijepa.sharded_checkpoint import load_sharded

        holder = _holder(self.models)
        template = {"optim": get_optimizer_state_dict(holder, optimizer)}
        load_sharded(path, template)
        set_optimizer_state_dict(holder, optimizer, template["optim"])

    def load_optimizer_state(
        self, optimizer: torch.optim.Optimizer, named_state: dict[str, Any] | None
    ) -> None:
        """Load a name-keyed full optimizer state given on rank 0 (None elsewhere) on all ranks.

        ``named_state`` comes from :func:`optimizer_state_to_names`; it is broadcast from rank 0
        (and resharded under FSDP).
        """
        if self.mode == "single":
            if named_state is None:
                raise ValueError("load_optimizer_state: no state given to the single process")
            names = optimizer_param_names(
                optimizer.param_groups, self.models.encoder, self.models.predictor
            )
            optimizer.load_state_dict(optimizer_state_to_ids(named_state, names))
            return
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        set_optimizer_state_dict(
            _holder(self.models),
            optimizer,
            named_state if self.rank == 0 and named_state is not None else {},
            options=self._options(broadcast_from_rank0=True),
        )


def wrap_models(
    models: JEPAModels,
    *,
    mode: str,
    world_size: int,
    rank: int,
    device: torch.device,
    bf16: bool = False,
    activation_checkpointing: bool = False,
) -> ParallelModels:
    """Wrap freshly built (and, across ranks, identical) networks for data-parallel training.

    Args:
        models: encoder, predictor and target encoder, on ``device``.
        mode: ``ddp`` or ``fsdp`` (ignored with one process).
        world_size: number of processes; 1 means no wrapping.
        rank: this process's rank.
        device: the device of this process.
        bf16: under FSDP on CUDA, all-gather parameters in bf16 (gradients reduced in fp32).
        activation_checkpointing: recompute the blocks of encoder and predictor in backward.

    Raises:
        ValueError: unknown mode.
    """
    if mode not in PARALLEL_MODES:
        raise ValueError(f"meta.parallel must be one of {', '.join(PARALLEL_MODES)}; got {mode!r}")
    if activation_checkpointing:
        n = enable_activation_checkpointing(models.encoder)
        n += enable_activation_checkpointing(models.predictor)
        logger.info("activation checkpointing on %d blocks", n)
    if world_size <= 1:
        return ParallelModels(models=models, step_models=models, mode="single", rank=rank)
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None

        def ddp(module: nn.Module) -> nn.Module:
            # the networks have no buffers, so DDP has nothing to synchronise per forward
            return DDP(module, device_ids=ids, gradient_as_bucket_view=True)

        step = JEPAModels(
            encoder=ddp(models.encoder),
            predictor=ddp(models.predictor),
            target_encoder=models.target_encoder,
        )
        return ParallelModels(models=models, step_models=step, mode="ddp", rank=rank)

    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (world_size,))
    if bf16 and device.type == "cuda":
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    else:
        policy = MixedPrecisionPolicy()
    # The target encoder is sharded exactly like the encoder, so their local shards line up.
    for module in (models.encoder, models.predictor, models.target_encoder):
        for block in transformer_blocks(module):
            fully_shard(block, mesh=mesh, mp_policy=policy)
        fully_shard(module, mesh=mesh, mp_policy=policy)
    # FSDP keeps a root module's own parameters unsharded after its forward (backward would need
    # them again); the target has no backward, so reshard it at once: the EMA needs the shards.
    models.target_encoder.register_forward_hook(_reshard_after_forward)
    # Targets from several blocks call get_intermediate_layers, not forward: without this its
    # root parameters (patch embedding, positions, norm) stay sharded and the first step fails
    # with "mixed torch.Tensor and DTensor".
    for module in (models.encoder, models.target_encoder):
        _fsdp_intermediate_layers(module, reshard=module is models.target_encoder)
    return ParallelModels(models=models, step_models=models, mode="fsdp", rank=rank)


def _fsdp_intermediate_layers(module: nn.Module, *, reshard: bool) -> None:
    """Make a sharded module's ``get_intermediate_layers`` (if any) gather its parameters as its
    forward does, and with ``reshard`` free them afterwards (as ``_reshard_after_forward``)."""
    from torch.distributed.fsdp import FSDPModule, register_fsdp_forward_method

    if not callable(getattr(module, "get_intermediate_layers", None)):
        return
    register_fsdp_forward_method(module, "get_intermediate_layers")
    if not (reshard and isinstance(module, FSDPModule)):
        return
    inner: Callable[..., Any] = getattr(module, "get_intermediate_layers")  # noqa: B009

    @functools.wraps(inner)
    def get_intermediate_layers(*args: Any, **kwargs: Any) -> Any:
        out = inner(*args, **kwargs)
        module.reshard()
        return out

    object.__setattr__(module, "get_intermediate_layers", get_intermediate_layers)


def _reshard_after_forward(module: nn.Module, args: Any, output: Any) -> None:
    from torch.distributed.fsdp import FSDPModule

    if isinstance(module, FSDPModule):
        module.reshard()
