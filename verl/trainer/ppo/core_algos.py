"""The RL algorithms as pure tensor functions: advantages, losses, KL, dynamic sampling.

Shapes follow veRL: a batch of B trajectories, each flattened to L response (action) tokens.
For OpenVLA-OFT, L = num_chunks * chunk_len * action_dim; `response_mask` is 1 on the tokens the
env actually executed (see `verl.workers.rollout`), 0 on padding and on steps after the episode
ended. Every loss returns `(loss, metrics)` and never logs.

References: PPO (Schulman et al. 2017), GAE (Schulman et al. 2016), GRPO (Shao et al. 2024),
clip-higher and dynamic sampling (DAPO, Yu et al. 2025), SimpleVLA-RL (Li et al. 2025),
KL estimators k1/k2/k3 (Schulman, "Approximating KL divergence", 2020).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable

import numpy as np
import torch

from verl.utils.torch_functional import entropy_from_logits, masked_mean, masked_whiten


class AdvantageEstimator(str, Enum):
    GRPO = "grpo"
    GAE = "gae"


class LossAggMode(str, Enum):
    TOKEN_MEAN = "token-mean"
    SEQ_MEAN_TOKEN_MEAN = "seq-mean-token-mean"
    SEQ_MEAN_TOKEN_SUM = "seq-mean-token-sum"


# --------------------------------------------------------------------------------------------
# Advantages
# --------------------------------------------------------------------------------------------


def compute_grpo_outcome_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray,
    epsilon: float = 1e-6,
    norm_adv_by_std_in_grpo: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO: each trajectory's outcome score, normalised within its group of samples.

    token_level_rewards, response_mask: [B, L]; index: [B] group ids (same prompt -> same uid).
    score_i = sum_t r_i,t ;  adv_i = (score_i - mean_g) / (std_g + eps), std unbiased.
    A group of one sample has mean 0 and std 1 (its advantage is its raw score).
    Returns (advantages, returns), both [B, L], broadcast over the valid tokens.
    """
    scores = token_level_rewards.sum(dim=-1).float()  # [B]
    groups: dict[object, list[int]] = defaultdict(list)
    for i, uid in enumerate(index):
        groups[uid].append(i)
    adv = torch.empty_like(scores)
    for members in groups.values():
        group_scores = scores[members]
        if len(members) == 1:
            mean, std = torch.tensor(0.0), torch.tensor(1.0)
        else:
            mean, std = group_scores.mean(), group_scores.std(unbiased=True)
        centered = group_scores - mean
        adv[members] = centered / (std + epsilon) if norm_adv_by_std_in_grpo else centered
    advantages = adv.unsqueeze(-1) * response_mask  # [B, L]
    return advantages, advantages


def compute_gae_advantage_return(
    token_level_rewards: torch.Tensor,
    values: torch.Tensor,
    response_mask: torch.Tensor,
    gamma: float,
    lam: float,
    whiten: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation along the last axis, [B, L] each (L tokens or model calls).

    delta_t = r_t + gamma V_{t+1} - V_t,  A_t = delta_t + gamma lam A_{t+1},  R_t = A_t + V_t.
    Past the last valid position V = 0 and A = 0: the trajectory's end is terminal (no bootstrap).
    Masked positions are skipped: the recursion carries the last valid value and advantage
    across them, so padding between valid positions does not break bootstrapping. With `whiten`
    the advantages are whitened over the valid positions; returns use the raw advantages.
    """
    with torch.no_grad():
        mask = response_mask.float()
        next_value = torch.zeros_like(values[:, 0])
        last_gae = torch.zeros_like(values[:, 0])
        advantages_reversed = []
        for t in reversed(range(token_level_rewards.shape[-1])):
            delta = token_level_rewards[:, t] + gamma * next_value - values[:, t]
            gae = delta + gamma * lam * last_gae
            m = mask[:, t]
            next_value = values[:, t] * m + next_value * (1 - m)
            last_gae = gae * m + last_gae * (1 - m)
            advantages_reversed.append(last_gae)
        advantages = torch.stack(advantages_reversed[::-1], dim=1)  # [B, L]
        returns = (advantages + values) * mask
        advantages = (masked_whiten(advantages, response_mask) if whiten else advantages) * mask
    return advantages, returns


# --------------------------------------------------------------------------------------------
# Advantage estimators: one registry, one call shape, so the trainer has a single path
# --------------------------------------------------------------------------------------------


@dataclass
class AdvantageInputs:
    """What any estimator may read. N episodes, T model calls, A action tokens per call.

    token_level_rewards, response_mask: [N, T*A] (a faulted episode's mask is all 0: it has no
    valid token, takes no part in any baseline and gets no advantage); index: [N] group ids;
    values: [N, T] the critic's value per model call (estimators with needs_critic only).
    """

    token_level_rewards: torch.Tensor
    response_mask: torch.Tensor
    index: np.ndarray
    tokens_per_step: int
    values: torch.Tensor | None = None


@dataclass
class AdvantageOutputs:
    advantages: torch.Tensor  # [N, T*A], 0 on invalid tokens
    returns: torch.Tensor  # [N, T*A]
    step_returns: torch.Tensor | None = None  # [N, T] the critic's targets (estimators with needs_critic)


@dataclass(frozen=True)
class AdvantageEstimatorSpec:
    fn: Callable[[AdvantageInputs, Any], AdvantageOutputs]
    needs_critic: bool


ADVANTAGE_ESTIMATORS: dict[str, AdvantageEstimatorSpec] = {}


def register_adv_est(name: str, needs_critic: bool = False):
    """Decorator: `fn(inputs: AdvantageInputs, algorithm_config) -> AdvantageOutputs` under `name`
    (the value of algorithm.adv_estimator)."""

    def wrap(fn):
        if name in ADVANTAGE_ESTIMATORS:
            raise ValueError(f"advantage estimator {name!r} is registered twice")
        ADVANTAGE_ESTIMATORS[name] = AdvantageEstimatorSpec(fn, needs_critic)
        return fn

    return wrap


def get_adv_estimator(name: str) -> AdvantageEstimatorSpec:
    if name not in ADVANTAGE_ESTIMATORS:
        raise ValueError(
            f"algorithm.adv_estimator={name!r} is not known; valid: {sorted(ADVANTAGE_ESTIMATORS)}"
        )
    return ADVANTAGE_ESTIMATORS[name]


@register_adv_est(AdvantageEstimator.GRPO.value)
def grpo_estimator(inputs: AdvantageInputs, cfg: Any) -> AdvantageOutputs:
    """GRPO over the episodes that have a valid token (faulted ones are neither baseline nor trained)."""
    valid = inputs.response_mask.sum(dim=-1) > 0  # [N]
    advantages = torch.zeros_like(inputs.response_mask, dtype=torch.float32)
    rows = torch.nonzero(valid)[:, 0]
    if len(rows):
        adv, _ = compute_grpo_outcome_advantage(
            inputs.token_level_rewards[rows], inputs.response_mask[rows], inputs.index[rows.numpy()],
            norm_adv_by_std_in_grpo=cfg.norm_adv_by_std_in_grpo)
        advantages[rows] = adv
    return AdvantageOutputs(advantages, advantages)


@register_adv_est(AdvantageEstimator.GAE.value, needs_critic=True)
def gae_estimator(inputs: AdvantageInputs, cfg: Any) -> AdvantageOutputs:
    """GAE over model calls (VLA-RL): one step = one model call (an action chunk for OFT, one
    7-token action for plain OpenVLA); the call's reward is the sum of its tokens' rewards (the
    outcome reward sits on the episode's last executed token, so on its last call). Every episode
    end is terminal, success or cut by the step budget (see algorithm.gamma in ppo_trainer.yaml).
    The call's advantage is broadcast to its valid action tokens."""
    n, a = inputs.response_mask.shape[0], inputs.tokens_per_step
    step_rewards = inputs.token_level_rewards.float().view(n, -1, a).sum(dim=-1)  # [N, T]
    step_mask = inputs.response_mask.view(n, -1, a).amax(dim=-1)  # [N, T]
    values = inputs.values.float() * step_mask
    step_adv, step_returns = compute_gae_advantage_return(step_rewards, values, step_mask, cfg.gamma, cfg.lam,
                                                          whiten=cfg.whiten_advantages)
    advantages = step_adv.repeat_interleave(a, dim=1) * inputs.response_mask
    returns = step_returns.repeat_interleave(a, dim=1) * inputs.response_mask
    return AdvantageOutputs(advantages, returns, step_returns)


# --------------------------------------------------------------------------------------------
# Dynamic sampling
# --------------------------------------------------------------------------------------------


def filter_groups_by_accuracy(
    success: np.ndarray, index: np.ndarray, lower: float, upper: float, valid: np.ndarray | None = None
) -> tuple[np.ndarray, dict[object, float]]:
    """Dynamic sampling: keep trajectories whose group's success rate lies in [lower, upper].

    success: [B] 0/1 per trajectory; index: [B] group ids. Bounds are inclusive, as in the
    reference (8 samples with [0.1, 0.9] keep groups with 1..7 successes).
    valid: [B] bool, the episodes that count (default all). An episode an env fault ended is
    neither a success nor a failure: the rate is over the group's valid episodes, and a group
    with none has rate NaN and is dropped.
    Returns (keep mask [B] bool, success rate per group id).
    """
    success = np.asarray(success, dtype=np.float64)
    valid = np.ones(len(success), dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    rates: dict[object, float] = {}
    for uid in dict.fromkeys(index.tolist()):
        counted = (index == uid) & valid
        rates[uid] = float(success[counted].mean()) if counted.any() else float("nan")
    keep = np.array([lower <= rates[uid] <= upper for uid in index.tolist()], dtype=bool)  # NaN compares False
    return keep, rates


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------


def agg_loss(loss_mat: torch.Tensor, loss_mask: torch.Tensor, loss_agg_mode: str) -> torch.Tensor:
    """Reduce a [B, L] per-token loss to a scalar over the valid tokens.

    token-mean:           sum(loss * mask) / sum(mask)              (all tokens weigh the same)
    seq-mean-token-mean:  mean_b [ sum_t(loss * mask) / sum_t(mask) ] (SimpleVLA-RL's choice)
    seq-mean-token-sum:   mean_b [ sum_t(loss * mask) ]
    Trajectories with no valid token count in no mean.
    """
    mask = loss_mask.to(loss_mat.dtype)
    if loss_agg_mode == LossAggMode.TOKEN_MEAN:
        return masked_mean(loss_mat, mask)
    seq_valid = mask.sum(dim=-1) > 0  # [B]
    seq_sum = (loss_mat * mask).sum(dim=-1)  # [B]
    if loss_agg_mode == LossAggMode.SEQ_MEAN_TOKEN_MEAN:
        per_seq = seq_sum / mask.sum(dim=-1).clamp(min=1.0)
    elif loss_agg_mode == LossAggMode.SEQ_MEAN_TOKEN_SUM:
        per_seq = seq_sum
    else:
        raise ValueError(
            f"loss_agg_mode={loss_agg_mode!r} is not known; valid: {[m.value for m in LossAggMode]}"
        )
    return masked_mean(per_seq, seq_valid)


def token_loss_weights(loss_mask: torch.Tensor, loss_agg_mode: str) -> torch.Tensor:
    """Per-token weights w [B, L] with agg_loss(loss, mask, mode) == (loss * w).sum().

    Lets the actor split one mini-batch into many small forward/backward pieces (a few steps
    of a few trajectories each) and still optimise exactly the mini-batch loss: each piece
    backpropagates (piece_loss * piece_weights).sum(), and the gradients add up.
    """
    mask = loss_mask.float()
    if loss_agg_mode == LossAggMode.TOKEN_MEAN:
        return mask / mask.sum().clamp(min=1.0)
    seq_tokens = mask.sum(dim=-1, keepdim=True)  # [B, 1]
    num_seqs = (seq_tokens > 0).sum().clamp(min=1).float()
    if loss_agg_mode == LossAggMode.SEQ_MEAN_TOKEN_MEAN:
        return mask / seq_tokens.clamp(min=1.0) / num_seqs
    if loss_agg_mode == LossAggMode.SEQ_MEAN_TOKEN_SUM:
        return mask / num_seqs
    raise ValueError(f"loss_agg_mode={loss_agg_mode!r} is not known; valid: {[m.value for m in LossAggMode]}")


def compute_policy_loss(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip_ratio_low: float = 0.2,
    clip_ratio_high: float = 0.28,
    clip_ratio_c: float | None = None,
    loss_agg_mode: str = LossAggMode.TOKEN_MEAN.value,
    token_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate with asymmetric clipping (clip-higher) and optional dual clip.

    All inputs [B, L]. ratio = exp(log_prob - old_log_prob);
    pg_loss = max(-A * ratio, -A * clip(ratio, 1 - eps_low, 1 + eps_high)).
    Dual clip (Ye et al. 2020): for A < 0 the loss is also capped at -A * clip_ratio_c.
    Metrics: pg_clipfrac (tokens where the clipped branch is active), ppo_kl (k1 estimate of
    KL(old || new)), pg_clipfrac_lower (tokens capped by the dual clip).
    With `token_weights` (from `token_loss_weights` over the whole mini-batch) the loss is
    (pg_losses * token_weights).sum() instead of the aggregation over this batch alone.
    """
    negative_approx_kl = log_prob - old_log_prob
    ratio = torch.exp(negative_approx_kl)
    ppo_kl = masked_mean(-negative_approx_kl, response_mask)

    pg_losses1 = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1.0 - clip_ratio_low, 1.0 + clip_ratio_high)
    clipped_losses = torch.maximum(pg_losses1, pg_losses2)
    pg_clipfrac = masked_mean(torch.gt(pg_losses2, pg_losses1).float(), response_mask)

    if clip_ratio_c is not None:
        if clip_ratio_c <= 1.0:
            raise ValueError(f"clip_ratio_c must be > 1.0 for dual clip, got {clip_ratio_c}")
        pg_losses3 = -advantages * clip_ratio_c
        dual_clipped = torch.minimum(pg_losses3, clipped_losses)
        lower_active = torch.gt(clipped_losses, pg_losses3) & (advantages < 0)
        pg_losses = torch.where(advantages < 0, dual_clipped, clipped_losses)
        pg_clipfrac_lower = masked_mean(lower_active.float(), response_mask)
    else:
        pg_losses = clipped_losses
        pg_clipfrac_lower = torch.zeros((), device=pg_losses.device)

    if token_weights is None:
        pg_loss = agg_loss(pg_losses, response_mask, loss_agg_mode)
    else:
        pg_loss = (pg_losses * token_weights).sum()
    metrics = {
        "pg_clipfrac": pg_clipfrac.detach(),
        "ppo_kl": ppo_kl.detach(),
        "pg_clipfrac_lower": pg_clipfrac_lower.detach(),
    }
    return pg_loss, metrics


def compute_entropy_loss(
    logits: torch.Tensor, response_mask: torch.Tensor, loss_agg_mode: str = LossAggMode.TOKEN_MEAN.value
) -> torch.Tensor:
    """Mean entropy of the [B, L, V] logits over the valid tokens (an entropy bonus subtracts it)."""
    return agg_loss(entropy_from_logits(logits), response_mask, loss_agg_mode)


def compute_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    response_mask: torch.Tensor,
    cliprange_value: float,
    loss_agg_mode: str = LossAggMode.TOKEN_MEAN.value,
    token_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss for the critic: 0.5 * max((V - R)^2, (V_clipped - R)^2), where
    V_clipped = V_old + clip(V - V_old, -cliprange_value, cliprange_value). Any shape (per token
    [B, L] or per model call [S]); with `token_weights` (see token_loss_weights) the loss is
    0.5 * (losses * token_weights).sum() instead of the aggregation over this batch alone."""
    values_clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    vf_losses1 = (values - returns) ** 2
    vf_losses2 = (values_clipped - returns) ** 2
    losses = torch.maximum(vf_losses1, vf_losses2)
    if token_weights is None:
        vf_loss = 0.5 * agg_loss(losses, response_mask, loss_agg_mode)
    else:
        vf_loss = 0.5 * (losses * token_weights).sum()
    vf_clipfrac = masked_mean(torch.gt(vf_losses2, vf_losses1).float(), response_mask)
    return vf_loss, {"vf_clipfrac": vf_clipfrac.detach()}


# --------------------------------------------------------------------------------------------
# KL
# --------------------------------------------------------------------------------------------

KL_PENALTIES = ("kl", "abs", "mse", "low_var_kl")


def kl_penalty(log_prob: torch.Tensor, ref_log_prob: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi.

    kl (k1): log p - log q;  abs: |k1|;  mse (k2): 0.5 * k1^2;
    low_var_kl (k3): exp(log q - log p) - (log q - log p) - 1, clamped to [-10, 10].
    """
    logr = log_prob - ref_log_prob
    if kind == "kl":
        return logr
    if kind == "abs":
        return logr.abs()
    if kind == "mse":
        return 0.5 * logr.square()
    if kind == "low_var_kl":
        neg = -logr
        return torch.clamp(torch.exp(neg) - neg - 1, min=-10.0, max=10.0)
    raise ValueError(f"kl penalty {kind!r} is not known; valid: {list(KL_PENALTIES)}")


class FixedKLController:
    """A constant KL coefficient (SimpleVLA-RL runs with 0: no reference model is built)."""

    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        return None


class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al. 2019): move towards a target KL over a horizon."""

    def __init__(self, init_kl_coef: float, target_kl: float, horizon: int):
        self.value = init_kl_coef
        self.target = target_kl
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = float(np.clip(current_kl / self.target - 1, -0.2, 0.2))
        self.value *= 1 + proportional_error * n_steps / self.horizon
