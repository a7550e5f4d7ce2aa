"""The PPO critic over model calls: value prediction and the clipped value-loss update.

One value per (episode, step) sample: V(observation, instruction) at the call, read by
`OpenVLAValueModel`. Steps are batched exactly as the actor's (verl/workers/step_batches.py),
so an update runs the same number of forward/backward pieces on every rank.

Batch fields read (one rank's share):
    values        float32 [N, T]   V under the critic that scored the rollout (the clip anchor)
    step_returns  float32 [N, T]   GAE returns, the regression targets
    response_mask float32 [N, T*A] a step counts iff one of its tokens does (faulted episodes: none)
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch
from torch import nn

from verl.protocol import DataProto
from verl.trainer.ppo import core_algos
from verl.utils.fsdp_utils import full_params_for_inference
from verl.workers import step_batches as sb
from verl.workers import trajectory as tj
from verl.workers.optim_step import optimizer_step, scheduler_step
from verl.workers.policy_inputs import PolicyInputBuilder


@dataclass
class CriticSettings:
    ppo_mini_batch_size: int  # trajectories per optimizer step on this rank
    ppo_micro_batch_size: int  # trajectories whose steps are pooled into pieces
    steps_per_forward: int  # model calls per forward/backward
    forward_micro_batch_size: int  # model calls per forward in compute_values
    ppo_epochs: int
    shuffle: bool
    grad_clip: float
    cliprange_value: float
    use_proprio: bool
    reshard_after_forward: bool = True


class DataParallelPPOCritic:
    def __init__(self, settings: CriticSettings, model: nn.Module, inputs: PolicyInputBuilder,
                 optimizer: torch.optim.Optimizer, lr_scheduler=None):
        self.settings = settings
        self.model = model
        self.inputs = inputs
        self.device = inputs.device
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler

    def _values(self, data: DataProto, steps: torch.Tensor) -> torch.Tensor:
        """[S] values of the (episode, step) pairs `steps` [S, 2]."""
        return self.model(**sb.step_model_inputs(self.inputs, data, steps, self.settings.use_proprio))

    @torch.no_grad()
    def compute_values(self, data: DataProto) -> torch.Tensor:
        """[N, T] values of every valid model call (0 on padding)."""
        self.model.eval()
        n, t = data.batch[tj.RESPONSES].shape[:2]
        values = torch.zeros(n, t, dtype=torch.float32)
        steps = tj.valid_step_index(data.batch[tj.NUM_STEPS])
        with full_params_for_inference(self.model, self.settings.reshard_after_forward):
            for piece in sb.split_steps(steps, self.settings.forward_micro_batch_size):
                values[piece[:, 0], piece[:, 1]] = self._values(data, piece).float().cpu()
        return values

    def update_critic(self, data: DataProto, seed: int = 0) -> dict[str, list[float]]:
        """Clipped value regression on the GAE returns; one optimizer step per mini-batch."""
        s = self.settings
        self.model.train()
        tokens_per_step = data.batch[tj.RESPONSES].shape[-1]
        metrics: dict[str, list[float]] = defaultdict(list)
        generator = torch.Generator().manual_seed(seed)
        for _ in range(s.ppo_epochs):
            order = torch.randperm(len(data), generator=generator) if s.shuffle else torch.arange(len(data))
            for mini_ids in order.split(s.ppo_mini_batch_size):
                mini = data[mini_ids]
                mask = tj.step_mask(mini.batch[tj.RESPONSE_MASK], tokens_per_step)  # [m, T]
                weights = core_algos.token_loss_weights(mask, core_algos.LossAggMode.TOKEN_MEAN.value)  # each call equal
                pieces, num_real = sb.update_pieces(mini, s.ppo_micro_batch_size, s.steps_per_forward, self.device)
                self.optimizer.zero_grad(set_to_none=True)
                stats = defaultdict(float)
                valid = mask.sum().clamp(min=1.0)
                for k, steps in enumerate(pieces):
                    take = lambda field: sb.gather_steps(mini.batch[field], steps, 1)[:, 0].to(self.device)
                    piece_mask = sb.gather_steps(mask, steps, 1)[:, 0].to(self.device)
                    piece_weights = sb.gather_steps(weights, steps, 1)[:, 0].to(self.device)
                    if k >= num_real:
                        piece_mask, piece_weights = torch.zeros_like(piece_mask), torch.zeros_like(piece_weights)
                    vpreds = self._values(mini, steps)  # [S]
                    loss, loss_metrics = core_algos.compute_value_loss(
                        vpreds, take(tj.VALUES), take(tj.STEP_RETURNS), piece_mask, s.cliprange_value,
                        token_weights=piece_weights)
                    loss.backward()
                    share = (piece_mask.sum() / valid).item()
                    stats["vf_loss"] += loss.item()
                    stats["vf_clipfrac"] += loss_metrics["vf_clipfrac"].item() * share
                    stats["vpred_mean"] += (vpreds.detach().float() * piece_mask).sum().item() / valid.item()
                for name, value in stats.items():
                    metrics[f"critic/{name}"].append(value)
                optimizer_step(self.model, self.optimizer, s.grad_clip, metrics, "critic")
        scheduler_step(self.lr_scheduler, metrics, "critic")
        return dict(metrics)
