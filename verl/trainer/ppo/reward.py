"""Outcome reward for robot episodes: reward_coef on success, 0 otherwise (SimpleVLA-RL).

The reward sits on the last executed action token, so a discounted return (a later critic)
sees it at the step where the episode ended; GRPO only uses the per-episode sum.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from verl.protocol import DataProto
from verl.workers import trajectory as tj


class RobRewardManager:
    def __init__(self, reward_coef: float):
        self.reward_coef = reward_coef

    def __call__(self, data: DataProto) -> tuple[torch.Tensor, dict[str, float]]:
        """token_level_scores [N, T*A] and verifier metrics for the batch."""
        mask = data.batch[tj.RESPONSE_MASK]  # [N, T*A]
        success = data.batch[tj.COMPLETE].float()  # [N]
        scores = torch.zeros_like(mask, dtype=torch.float32)
        num_valid = mask.sum(dim=-1).long()  # [N]
        has_tokens = num_valid > 0
        last = (num_valid - 1).clamp(min=0)
        rows = torch.arange(len(data))
        scores[rows[has_tokens], last[has_tokens]] = success[has_tokens] * self.reward_coef
        metrics = {"verifier": float(success.mean()) if len(data) else 0.0}
        return scores, metrics


def success_by_suite(data: DataProto) -> dict[str, float]:
    """Mean success per task suite and over all episodes: {suite: rate, 'all': rate}."""
    success = data.batch[tj.COMPLETE].float().numpy()
    suites = data.non_tensor_batch[tj.TASK_SUITE_NAME]
    out = {str(s): float(success[suites == s].mean()) for s in np.unique(suites)}
    out["all"] = float(success.mean()) if len(success) else 0.0
    return out


def success_by_task(data: DataProto) -> dict[str, float]:
    """Mean success per (suite, task): {'<suite>/<task_id>': rate}."""
    success = data.batch[tj.COMPLETE].float().numpy()
    by_task: dict[str, list[float]] = defaultdict(list)
    for ok, suite, task in zip(success, data.non_tensor_batch[tj.TASK_SUITE_NAME], data.non_tensor_batch[tj.TASK_ID]):
        by_task[f"{suite}/{int(task)}"].append(float(ok))
    return {key: float(np.mean(values)) for key, values in sorted(by_task.items())}
