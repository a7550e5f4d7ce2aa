"""VLA-RL's "homogeneous" critic: the policy's own backbone with a small MLP value head.

The value of an observation is read from the language model's hidden state at the last prompt
position (the "▁" that ends every prompt, where the policy's first action token is predicted),
so there is ONE value per model call, not one per action token. The action part of the policy's
sequence is not fed: V(s) depends on the observation and the instruction only.

    images + instruction -> vision towers -> projector -> Llama -> h[last prompt position] [B, D]
                         -> Linear(D, H) -> GELU -> Linear(H, 1) -> value [B]

The LM head is dropped (a value model never predicts tokens; on the 7B model that is 131M
parameters fewer to shard, gather and optimise).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from verl.models.openvla_oft.modeling import OpenVLAForActionPrediction

VALUE_HEAD_PREFIX = "value_head."


class ValueHead(nn.Module):
    """[..., D] -> [...]: a two-layer MLP; the last layer starts at zero so V = 0 before training
    (no arbitrary initial values for warm-up to unlearn)."""

    def __init__(self, hidden_size: int, head_hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, head_hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(head_hidden, 1)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # a fresh tensor, not a view of fc2's output: FSDP2 hooks the root's output for its backward
        return self.fc2(self.act(self.fc1(hidden)))[..., 0].float().clone()


class OpenVLAValueModel(nn.Module):
    """V(observation, instruction): the OpenVLA(-OFT) backbone + `ValueHead`, as a critic."""

    def __init__(self, backbone: OpenVLAForActionPrediction, head_hidden: int = 512) -> None:
        super().__init__()
        backbone.language_model.lm_head = None  # unused: values come from hidden states
        self.vla = backbone
        self.value_head = ValueHead(backbone.config.llm_config()["hidden_size"], head_hidden)

    # the units FSDP2 shards (see verl.utils.fsdp_utils.apply_fsdp2), the same as the policy's
    def vision_blocks(self) -> list[nn.Module]:
        return self.vla.vision_blocks()

    def decoder_layers(self) -> list[nn.Module]:
        return self.vla.decoder_layers()

    @property
    def projector(self) -> nn.Module:
        return self.vla.projector

    @property
    def proprio_projector(self) -> Optional[nn.Module]:
        return self.vla.proprio_projector

    @property
    def config(self):
        return self.vla.config

    def gradient_checkpointing_enable(self) -> None:
        self.vla.gradient_checkpointing_enable()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor,
        proprio: Optional[torch.Tensor] = None,
        action_tokens: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Values [B] (float32) of B observations; `action_tokens` is accepted and ignored, so the
        critic takes exactly the policy's inputs."""
        hidden = self.vla.prompt_hidden_state(input_ids, attention_mask, pixel_values, proprio)  # [B, D]
        return self.value_head(hidden)
