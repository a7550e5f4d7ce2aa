"""One optimizer step and one LR-schedule step, as the actor and the critic both take them."""

from __future__ import annotations

import logging
from typing import Optional

import torch
from torch import nn

from verl.utils.fsdp_utils import clip_grad_norm

logger = logging.getLogger(__name__)


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float,
                   metrics: dict[str, list[float]], prefix: str) -> None:
    """Clip the global grad norm, step (skipped when the norm is not finite: one bad batch must not
    write NaN into the weights), zero the grads. Logs <prefix>/grad_norm and <prefix>/skipped_steps."""
    grad_norm = clip_grad_norm(model, grad_clip)
    if torch.isfinite(grad_norm):
        optimizer.step()
    else:
        logger.warning("%s: non-finite grad norm %s: skipping this optimizer step", prefix, grad_norm.item())
        metrics[f"{prefix}/skipped_steps"].append(1.0)
    optimizer.zero_grad(set_to_none=True)
    metrics[f"{prefix}/grad_norm"].append(grad_norm.item())


def scheduler_step(lr_scheduler: Optional[torch.optim.lr_scheduler.LRScheduler], metrics: dict[str, list[float]],
                   prefix: str) -> None:
    """Once per training step: log the LR this step trained with (<prefix>/lr), then advance."""
    if lr_scheduler is not None:
        metrics[f"{prefix}/lr"].append(lr_scheduler.get_last_lr()[0])
        lr_scheduler.step()
