"""Small tensor functions shared by the rollout, the actor and the losses.

They work on logits of any leading shape; the last dimension is the (action-bin) vocabulary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Log-probability of `labels` under `softmax(logits)`.

    logits: [..., V] (any float dtype; computed in fp32 for stability), labels: [...] in [0, V).
    Returns [...] fp32.
    """
    logp = F.log_softmax(logits.float(), dim=-1)  # [..., V]
    return torch.gather(logp, -1, labels.unsqueeze(-1).long()).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution `softmax(logits)`, [..., V] -> [...] fp32."""
    logits = logits.float()
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def action_log_prob_and_entropy(logits: torch.Tensor, bins: torch.Tensor, temperature: float
                                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of the drawn `bins` and entropy under softmax(logits / temperature): the one definition
    the rollout and the actor's recompute share, so reusing the rollout's values (actor.use_rollout_log_probs)
    means the same thing as recomputing them. logits [..., V], bins [...] in [0, V) -> ([...], [...]) fp32."""
    scaled = logits.float() / temperature
    return logprobs_from_logits(scaled, bins), entropy_from_logits(scaled)


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    return (values * mask).sum() if dim is None else (values * mask).sum(dim=dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean over the positions where `mask` is 1; 0 when the mask is empty (never NaN)."""
    mask = mask.to(values.dtype)
    return masked_sum(values, mask, dim) / mask.sum(dim=dim).clamp(min=1.0)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    mask = mask.to(values.dtype)
    mean = masked_mean(values, mask)
    centered = (values - mean) * mask
    count = mask.sum()
    var = (centered**2).sum() / count.clamp(min=1.0)
    if unbiased:
        if count <= 1:
            raise ValueError("masked_var(unbiased=True) needs at least two unmasked values")
        var = var * count / (count - 1)
    return var


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Normalise to zero mean / unit variance over the unmasked positions (used by GAE)."""
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    return whitened if shift_mean else whitened + mean
