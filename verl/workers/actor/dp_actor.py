"""The PPO actor over action tokens: log-prob recomputation and the clip-higher update.

Works on one rank's share of the trajectory batch (see verl/workers/trajectory.py). A training
sample is one model call (episode, step): its prompt, its observation and its A action tokens.
Padded steps past an episode's end are never forwarded (the reference forwards them and masks
the result). The mini-batch loss is split into pieces of `traj_mini_batch_size` steps whose
weighted losses add up exactly to the aggregated mini-batch loss (core_algos.token_loss_weights).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
from torch import nn

from verl.models.openvla_oft import ACTION_TOKEN_BEGIN
from verl.protocol import DataProto
from verl.trainer.ppo import core_algos
from verl.utils.fsdp_utils import full_params_for_inference
from verl.utils.torch_functional import action_log_prob_and_entropy
from verl.workers import step_batches as sb
from verl.workers import trajectory as tj
from verl.workers.optim_step import optimizer_step, scheduler_step
from verl.workers.policy_inputs import PolicyInputBuilder

logger = logging.getLogger(__name__)


@dataclass
class ActorSettings:
    """What the actor needs from the config, resolved per rank by the worker."""

    temperature: float
    ppo_mini_batch_size: int  # trajectories per optimizer step on this rank
    ppo_micro_batch_size: int  # trajectories whose steps are pooled into pieces
    steps_per_forward: int  # traj_mini_batch_size: (episode, step) samples per forward/backward
    log_prob_micro_batch_size: int  # samples per forward in compute_log_prob
    ppo_epochs: int
    shuffle: bool
    grad_clip: float
    clip_ratio_low: float
    clip_ratio_high: float
    clip_ratio_c: Optional[float]
    loss_agg_mode: str
    entropy_coeff: float
    pad_token_id: int
    use_proprio: bool
    reshard_after_forward: bool = True


class DataParallelPPOActor:
    def __init__(
        self,
        settings: ActorSettings,
        model: nn.Module,
        inputs: PolicyInputBuilder,
        optimizer: Optional[torch.optim.Optimizer] = None,
        lr_scheduler: Optional[torch.optim.lr_scheduler.LRScheduler] = None,
    ):
        self.settings = settings
        self.model = model
        self.inputs = inputs
        self.device = inputs.device
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler

    # ------------------------------------------------------------------------------ forward
    def _forward_steps(self, data: DataProto, steps: torch.Tensor) -> torch.Tensor:
        """Raw action-bin logits [S, A, 256] for the (episode, step) pairs `steps` [S, 2]."""
        # FSDP2's MixedPrecisionPolicy casts to bf16 on GPU: no autocast needed here
        return self.model(**sb.step_model_inputs(self.inputs, data, steps, self.settings.use_proprio))

    def _log_prob_and_entropy(self, logits: torch.Tensor, data: DataProto, steps: torch.Tensor):
        """Per-token log-prob and entropy [S, A] of the taken actions under softmax(logits / T)."""
        bins = data.batch[tj.RESPONSES][steps[:, 0], steps[:, 1]].to(self.device) - ACTION_TOKEN_BEGIN
        return action_log_prob_and_entropy(logits, bins, self.settings.temperature)

    # ------------------------------------------------------------------------------ log-probs
    @torch.no_grad()
    def compute_log_prob(self, data: DataProto) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs and entropies [N, T*A] of the stored actions under the current weights (0 on padding)."""
        self.model.eval()
        responses = data.batch[tj.RESPONSES]  # [N, T, A]
        n, t, a = responses.shape
        log_probs = torch.zeros(n, t, a, dtype=torch.float32)
        entropies = torch.zeros(n, t, a, dtype=torch.float32)
        steps = tj.valid_step_index(data.batch[tj.NUM_STEPS])
        # the only collectives are the gathers on entering the context, whatever the step count:
        # a rank whose episodes all faulted before their first model call runs no forward at all
        with full_params_for_inference(self.model, self.settings.reshard_after_forward):
            for piece in sb.split_steps(steps, self.settings.log_prob_micro_batch_size):
                logits = self._forward_steps(data, piece)
                log_prob, entropy = self._log_prob_and_entropy(logits, data, piece)
                log_probs[piece[:, 0], piece[:, 1]] = log_prob.cpu()
                entropies[piece[:, 0], piece[:, 1]] = entropy.cpu()
        return log_probs.view(n, t * a), entropies.view(n, t * a)

    # ------------------------------------------------------------------------------ update
    def _mini_batches(self, n: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
        order = torch.randperm(n, generator=generator) if self.settings.shuffle else torch.arange(n)
        yield from order.split(self.settings.ppo_mini_batch_size)

    def update_policy(self, data: DataProto, seed: int = 0) -> dict[str, list[float]]:
        """PPO epochs over the batch; one optimizer step per mini-batch. Returns metric lists."""
        assert self.optimizer is not None, "update_policy needs an optimizer (this actor is a reference policy)"
        s = self.settings
        self.model.train()
        tokens_per_step = data.batch[tj.RESPONSES].shape[-1]
        metrics: dict[str, list[float]] = defaultdict(list)
        generator = torch.Generator().manual_seed(seed)
        for _ in range(s.ppo_epochs):
            for mini_ids in self._mini_batches(len(data), generator):
                mini = data[mini_ids]
                mask = mini.batch[tj.RESPONSE_MASK].float()
                weights = core_algos.token_loss_weights(mask, s.loss_agg_mode)  # [m, T*A]
                pieces, num_real = sb.update_pieces(mini, s.ppo_micro_batch_size, s.steps_per_forward, self.device)

                self.optimizer.zero_grad(set_to_none=True)
                stats = defaultdict(float)
                valid_tokens = mask.sum().clamp(min=1.0)
                for k, steps in enumerate(pieces):
                    logits = self._forward_steps(mini, steps)
                    log_prob, entropy = self._log_prob_and_entropy(logits, mini, steps)
                    take = lambda key: sb.gather_steps(mini.batch[key], steps, tokens_per_step).to(self.device)
                    piece_mask = take(tj.RESPONSE_MASK).float()
                    piece_weights = sb.gather_steps(weights, steps, tokens_per_step).to(self.device)
                    if k >= num_real:
                        piece_weights = torch.zeros_like(piece_weights)
                        piece_mask = torch.zeros_like(piece_mask)
                    pg_loss, pg_metrics = core_algos.compute_policy_loss(
                        old_log_prob=take(tj.OLD_LOG_PROBS), log_prob=log_prob, advantages=take(tj.ADVANTAGES),
                        response_mask=piece_mask, clip_ratio_low=s.clip_ratio_low, clip_ratio_high=s.clip_ratio_high,
                        clip_ratio_c=s.clip_ratio_c, loss_agg_mode=s.loss_agg_mode, token_weights=piece_weights,
                    )
                    entropy_term = (entropy * piece_weights).sum()
                    loss = pg_loss - s.entropy_coeff * entropy_term if s.entropy_coeff > 0 else pg_loss
                    loss.backward()
                    # piece metrics are means over the piece's valid tokens: weight them by that count
                    share = piece_mask.sum() / valid_tokens
                    stats["pg_loss"] += pg_loss.item()
                    stats["entropy"] += (entropy.detach() * piece_mask).sum().item() / valid_tokens.item()
                    for name in ("pg_clipfrac", "ppo_kl", "pg_clipfrac_lower"):
                        stats[name] += (pg_metrics[name] * share).item()
                for name, value in stats.items():
                    metrics[f"actor/{name}"].append(value)
                optimizer_step(self.model, self.optimizer, s.grad_clip, metrics, "actor")
        scheduler_step(self.lr_scheduler, metrics, "actor")
        return dict(metrics)
