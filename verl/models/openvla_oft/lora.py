"""LoRA with peft on every linear layer except `lm_head` (as openvla / SimpleVLA-RL fine-tune), and merging.

Rollout uses merged weights; `merged_state_dict` computes them without touching the adapters (so training
continues), `merge_lora` folds them in for good (for saving a plain checkpoint).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

logger = logging.getLogger(__name__)

LORA_INITS = ("gaussian", "default")  # peft names; "default" is Kaiming-uniform A, zero B


def lora_target_modules(model: nn.Module) -> list[str]:
    """Names of all nn.Linear modules except the LM head."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear) and not name.endswith("lm_head")]


def apply_lora(model: nn.Module, rank: int, alpha: int, target_modules: str | list[str] = "all-linear", init: str = "gaussian",
               modules_to_save: list[str] | None = None):
    """Wrap `model` in a peft `PeftModel` with LoRA adapters (dropout 0). Returns the wrapped model.

    `modules_to_save`: modules trained in full beside the adapters (the critic's value head)."""
    from peft import LoraConfig, get_peft_model

    if rank <= 0:
        raise ValueError(f"lora rank must be > 0, got {rank}")
    if init not in LORA_INITS:
        raise ValueError(f"lora init must be one of {LORA_INITS}, got {init!r}")
    targets = lora_target_modules(model) if target_modules == "all-linear" else list(target_modules)
    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets,
        init_lora_weights=True if init == "default" else init, modules_to_save=modules_to_save,
    )
    return get_peft_model(model, config)


def _base_key(peft_key: str) -> str:
    return peft_key.removeprefix("base_model.model.").replace(".base_layer.", ".")


@torch.no_grad()
def merged_state_dict(peft_model: nn.Module) -> dict[str, torch.Tensor]:
    """Plain-model state dict (module key names) with every LoRA delta added; adapters stay untouched."""
    from peft.tuners.lora import LoraLayer

    merged: dict[str, torch.Tensor] = {}
    for key, value in peft_model.state_dict().items():
        if "lora_" not in key:
            merged[_base_key(key)] = value.detach().clone()
    for name, module in peft_model.named_modules():
        if isinstance(module, LoraLayer):
            weight_key = _base_key(f"{name}.weight")
            for adapter in module.active_adapters:
                if adapter in module.lora_A:
                    merged[weight_key] += module.get_delta_weight(adapter).to(merged[weight_key].dtype)
    return merged


def merge_lora(peft_model: nn.Module) -> nn.Module:
    """Fold the adapters into the base weights and return the plain model (the adapters are gone)."""
    return peft_model.merge_and_unload()
