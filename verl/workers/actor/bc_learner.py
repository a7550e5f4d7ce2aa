"""Supervised fine-tuning of the VLA on demonstrations: cross-entropy over the action tokens.

OpenVLA-OFT: the whole chunk (e.g. 8 x 7 = 56 tokens) comes out of ONE parallel-decoding forward,
as the reference's SFT checkpoints were trained (discrete tokens, not the L1 regression head).
Plain OpenVLA: the 7 tokens are teacher-forced through the causal decoder. Both are the same call
here: `model(..., action_tokens=targets)` returns the action-bin logits [B, A, 256] at the action
positions.

Works on one rank's share of a batch. Every rank runs the same number of forward/backward
passes (the driver sends equal shares), as FSDP2's per-block collectives require.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from verl.models.openvla_oft import ACTION_TOKEN_BEGIN
from verl.protocol import DataProto
from verl.utils import fsdp_utils
from verl.utils.dataset import sft_dataset as sd
from verl.workers.policy_inputs import PolicyInputBuilder

NEAR_BINS = 8  # "within +-8 bins" accuracy: about 6% of the action range, a useful coarse signal


def action_token_loss(logits: torch.Tensor, target_bins: torch.Tensor, action_dim: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean cross-entropy of action-bin logits [B, A, 256] against target bins [B, A] (0..255).

    Metrics (detached, means over the B * A tokens): token_acc (exact bin), near_acc (within
    NEAR_BINS), gripper_acc (exact bin on the last action dim, the open/close decision).
    """
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target_bins.reshape(-1))
    with torch.no_grad():
        predicted = logits.argmax(-1)  # [B, A]
        exact = (predicted == target_bins).float()
        near = ((predicted - target_bins).abs() <= NEAR_BINS).float()
        is_gripper = (torch.arange(target_bins.shape[1], device=target_bins.device) % action_dim) == action_dim - 1
    metrics = {"token_acc": exact.mean(), "near_acc": near.mean(), "gripper_acc": exact[:, is_gripper].mean()}
    return loss, metrics


@dataclass
class BCSettings:
    micro_batch_size: int  # samples per forward/backward on this rank
    grad_clip: float
    action_dim: int
    use_proprio: bool = False


class BehaviorCloningLearner:
    def __init__(self, settings: BCSettings, model: nn.Module, inputs: PolicyInputBuilder,
                 optimizer: torch.optim.Optimizer, lr_scheduler: Optional[torch.optim.lr_scheduler.LRScheduler] = None):
        self.settings = settings
        self.model = model
        self.inputs = inputs
        self.device = inputs.device
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler

    def _loss(self, data: DataProto, rows: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        proprio = data.batch[sd.PROPRIO][rows] if self.settings.use_proprio else None
        inputs = self.inputs([data.non_tensor_batch[sd.PROMPT_IDS][int(i)] for i in rows],
                             data.batch[sd.IMAGES][rows], proprio)
        targets = data.batch[sd.ACTION_TOKENS][rows].to(self.device)  # [b, A] token ids
        logits = self.model(**inputs, action_tokens=targets)  # [b, A, 256]
        return action_token_loss(logits, targets - ACTION_TOKEN_BEGIN, self.settings.action_dim)

    def train_step(self, data: DataProto) -> dict[str, list[float]]:
        """One optimizer step on this rank's share; gradients of the micro-batches add up to the mean loss."""
        started = time.perf_counter()
        self.model.train()
        n = len(data)
        sums: dict[str, float] = defaultdict(float)
        self.optimizer.zero_grad(set_to_none=True)
        for rows in torch.arange(n).split(self.settings.micro_batch_size):
            loss, metrics = self._loss(data, rows)
            (loss * (len(rows) / n)).backward()
            sums["loss"] += loss.item() * len(rows) / n
            for name, value in metrics.items():
                sums[name] += value.item() * len(rows) / n
        grad_norm = fsdp_utils.clip_grad_norm(self.model, self.settings.grad_clip)
        out = {f"sft/{k}": [v] for k, v in sums.items()}
        if torch.isfinite(grad_norm):
            self.optimizer.step()
        else:
            out["sft/skipped_steps"] = [1.0]
        self.optimizer.zero_grad(set_to_none=True)
        out["sft/grad_norm"] = [grad_norm.item()]
        out["timing/update"] = [time.perf_counter() - started]
        if self.lr_scheduler is not None:
            out["sft/lr"] = [self.lr_scheduler.get_last_lr()[0]]
            self.lr_scheduler.step()
        return out

    @torch.no_grad()
    def evaluate(self, data: DataProto) -> dict[str, list[float]]:
        """Teacher-forced loss and accuracies on this rank's share, as sample-weighted sums (the
        driver divides by the total count, so uneven last batches average exactly)."""
        self.model.eval()
        sums: dict[str, float] = defaultdict(float)
        for rows in torch.arange(len(data)).split(self.settings.micro_batch_size):
            loss, metrics = self._loss(data, rows)
            sums["loss"] += loss.item() * len(rows)
            for name, value in metrics.items():
                sums[name] += value.item() * len(rows)
        sums["count"] = float(len(data))
        return {f"sft_val_sum/{k}": [v] for k, v in sums.items()}
