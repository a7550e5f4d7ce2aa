"""FSDP2 (torch.distributed.fsdp.fully_shard) for the VLA, in one place and one fixed order.

Order (as torchtitan): activation checkpointing, then `fully_shard` on every vision block and
every decoder layer, then the projector(s), then the root. Each sharded unit all-gathers its
parameters just before its forward and frees them after, so peak memory holds one block's full
parameters at a time, not the model's.

The rollout and log-prob passes do not go through per-block gathers: `full_params_for_inference`
gathers every unit once and keeps it gathered until the context exits, so a rank can run as many
forwards as its own envs need without matching collectives on the other ranks.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, fully_shard

logger = logging.getLogger(__name__)


def build_device_mesh(device_type: str) -> DeviceMesh:
    """A 1-D data-parallel mesh over all ranks (FSDP shards over it)."""
    return init_device_mesh(device_type, (dist.get_world_size(),), mesh_dim_names=("fsdp",))


def mixed_precision_policy(param_dtype: torch.dtype) -> MixedPrecisionPolicy | None:
    """bf16 compute with fp32 gradient reduction, the same policy on GPU and on CPU (gloo carries
    bf16 all-gathers and fp32 reduce-scatters), so a CPU run with model.dtype=bfloat16 exercises the
    GPU's casts; None (plain fp32) when the parameters are fp32."""
    if param_dtype == torch.float32:
        return None
    return MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32, output_dtype=param_dtype)


def apply_fsdp2(
    model: nn.Module,
    mesh: DeviceMesh,
    *,
    param_dtype: torch.dtype,
    param_offload: bool,
    reshard_after_forward: bool,
) -> nn.Module:
    """Shard the VLA with FSDP2: per vision block, per decoder layer, projectors, root.

    `model` must expose `vision_blocks()` and `decoder_layers()` (see OpenVLAForActionPrediction).
    Parameters stay fp32 as the master copy; `MixedPrecisionPolicy` casts them for compute.
    `param_offload` keeps the sharded parameters (and so their gradients and the AdamW state
    built from them) on the CPU; FSDP2 offloads gradients together with parameters.
    """
    kwargs: dict = {"mesh": mesh, "reshard_after_forward": reshard_after_forward}
    mp = mixed_precision_policy(param_dtype)
    if mp is not None:
        kwargs["mp_policy"] = mp
    if param_offload:
        kwargs["offload_policy"] = CPUOffloadPolicy(pin_memory=mesh.device_type == "cuda")
    for block in model.vision_blocks():
        fully_shard(block, **kwargs)
    for layer in model.decoder_layers():
        fully_shard(layer, **kwargs)
    for name in ("projector", "proprio_projector"):
        sub = getattr(model, name, None)
        if sub is not None:
            fully_shard(sub, **kwargs)
    # the root holds embeddings, lm_head and the tower stems; it is gathered for the whole
    # forward anyway, so resharding it early buys nothing. With LoRA the root is the wrapped
    # OpenVLA module, not peft's wrapper: the model's own methods (sample_action_tokens) call it.
    fully_shard(fsdp_root(model), **{**kwargs, "reshard_after_forward": False})
    return model


def fsdp_root(model: nn.Module) -> nn.Module:
    """The module FSDP2 treats as root: the model itself, or the base model under a peft wrapper."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def fsdp_modules(model: nn.Module) -> list[FSDPModule]:
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def full_params_for_inference(model: nn.Module, reshard_after_forward: bool = True) -> Iterator[nn.Module]:
    """Gather every FSDP unit once and keep it gathered: forwards then need no collectives.

    Costs the full parameters' memory per rank for the duration (one bf16 7B copy = 15 GB).
    On exit every unit is resharded and gets back `reshard_after_forward` (the value given to
    `apply_fsdp2`; the root keeps False). A no-op for a model that is not sharded.
    """
    units = fsdp_modules(model)
    root = fsdp_root(model)
    if not units:
        yield model
        return
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()
    try:
        yield model
    finally:
        for unit in units:
            unit.reshard()
            unit.set_reshard_after_forward(reshard_after_forward and unit is not root, recurse=False)


def full_state_dict(model: nn.Module, cpu_offload: bool = True) -> dict[str, torch.Tensor]:
    """Gather the full (unsharded) model state dict; every rank must call, rank 0 gets tensors."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=cpu_offload)
    return get_model_state_dict(model, options=options)


def load_full_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor], strict: bool = True) -> None:
    """Load a full state dict held by rank 0 into the sharded model (broadcast to all ranks);
    `strict=False` loads a subset (a LoRA critic's adapters and head) and leaves the rest."""
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=strict)
    set_model_state_dict(model, state_dict, options=options)


def broadcast_buffers_from_rank0(model: nn.Module, buffers: dict[str, torch.Tensor] | None) -> None:
    """Copy rank 0's non-persistent buffers (e.g. RoPE frequencies, absent from state dicts) to all ranks.

    `buffers` is rank 0's {name: tensor}; other ranks pass None. Ranks that built the model on the
    meta device get real values here, after `to_empty` left them uninitialised.
    """
    payload = [buffers]
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast_object_list(payload, src=0)
    named = dict(model.named_buffers())
    for name, value in (payload[0] or {}).items():
        named[name].copy_(value.to(named[name].device, named[name].dtype))


def sharded_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """This rank's shard of the optimizer state (saved per rank: no gather needed)."""
    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=False))


def load_sharded_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    # strict=False: parameters that never get a gradient (the towers' unused last block) have no AdamW state
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=False, strict=False))


@torch.no_grad()
def move_optimizer_state(optimizer: torch.optim.Optimizer, device: torch.device | str) -> None:
    """Every non-scalar state tensor of `optimizer` (AdamW's exp_avg, exp_avg_sq: DTensor shards
    under FSDP2) to `device`. AdamW's scalar step counters stay where torch keeps them (on the CPU
    unless capturable/fused). Synchronous: the memory is free when it returns."""
    for state in optimizer.state.values():
        for key, value in state.items():
            if torch.is_tensor(value) and value.dim() > 0 and value.device != torch.device(device):
                state[key] = value.to(device)


def clip_grad_norm(model: nn.Module, max_norm: float) -> torch.Tensor:
    """Global grad-norm clip over DTensor (sharded) gradients; returns the pre-clip norm."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm=max_norm, foreach=True)
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return norm
