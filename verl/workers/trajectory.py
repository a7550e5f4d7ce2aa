"""The trajectory batch: field names and the few functions that read its layout.

A rollout returns one row per episode. A row holds T model calls ("steps", padded to the
benchmark's maximum), each with its observation and its A = action_chunks_len * action_token_len
action tokens. Images are stored as uint8 at model resolution and turned into pixel values on
the fly, so a 512-step LIBERO episode costs ~9.6 MB instead of the reference's 77 MB of float32.

Tensor fields (leading dim N = episodes):
    images            uint8   [N, T, n_img, 224, 224, 3]  observation at each model call
    proprio           float32 [N, T, P]                   (only with use_proprio)
    responses         int64   [N, T, A]                   action token ids (31744..31999)
    rollout_log_probs float32 [N, T*A]                    log-probs under the rollout policy (temperature applied)
    rollout_entropy   float32 [N, T*A]                    entropy of the rollout policy's softmax(logits / T) per token
    response_mask     float32 [N, T*A]                    1 on tokens of actions the env executed
    finish_step       int64   [N]                         env steps executed (the reference's finish_step)
    num_steps         int64   [N]                         model calls made (valid rows of the T axis)
    complete          bool    [N]                         task success
    faulted           bool    [N]                         the env worker failed during the episode
Added by the trainer: old_log_probs, entropy, token_level_scores, token_level_rewards, advantages, returns [N, T*A];
with a critic also values, step_returns [N, T] (one per model call).
Non-tensor fields: prompt_ids (object: int64 arrays), instruction, task_suite_name, task_id, trial_id,
seed (simulator seed of the episode), uid.
"""

from __future__ import annotations

import numpy as np
import torch

IMAGES = "images"
PROPRIO = "proprio"
RESPONSES = "responses"
ROLLOUT_LOG_PROBS = "rollout_log_probs"
ROLLOUT_ENTROPY = "rollout_entropy"
OLD_LOG_PROBS = "old_log_probs"
ENTROPY = "entropy"
RESPONSE_MASK = "response_mask"
FINISH_STEP = "finish_step"
NUM_STEPS = "num_steps"
COMPLETE = "complete"
FAULTED = "faulted"
TOKEN_LEVEL_SCORES = "token_level_scores"
TOKEN_LEVEL_REWARDS = "token_level_rewards"
ADVANTAGES = "advantages"
RETURNS = "returns"
VALUES = "values"  # [N, T] the critic's value of each model call (adv_estimator=gae)
STEP_RETURNS = "step_returns"  # [N, T] GAE returns per model call: the critic's targets

PROMPT_IDS = "prompt_ids"
INSTRUCTION = "instruction"
TASK_SUITE_NAME = "task_suite_name"
TASK_ID = "task_id"
TRIAL_ID = "trial_id"
SEED = "seed"
DATA_SOURCE = "data_source"  # what validation reports success per (the reference's name)
UID = "uid"
RECORD_VIDEO = "record_video"  # prompt flag: save this episode's video (validation's per-task cap)


def response_mask_from_finish_step(
    finish_step: torch.Tensor, max_steps: int, action_chunk: int, action_dim: int
) -> torch.Tensor:
    """[N] executed env steps -> [N, max_steps * chunk * dim] 1/0 mask over the action tokens.

    Tokens are laid out step-major, then chunk, then dim, so token j belongs to the action
    j // action_dim of the episode; it is valid iff that action was executed.
    """
    num_tokens = max_steps * action_chunk * action_dim
    action_index = torch.arange(num_tokens, device=finish_step.device) // action_dim  # [T*A]
    return (action_index.unsqueeze(0) < finish_step.unsqueeze(1)).float()  # [N, T*A]


def step_mask(response_mask: torch.Tensor, tokens_per_step: int) -> torch.Tensor:
    """[N, T*A] token mask -> [N, T] model-call mask: a call counts iff any of its tokens does."""
    n = response_mask.shape[0]
    return response_mask.view(n, -1, tokens_per_step).amax(dim=-1)


def left_pad(sequences: list[np.ndarray] | list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token id sequences to one length: (input_ids [B, L], attention_mask [B, L])."""
    length = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if len(seq):
            # a copy: prompts that came through Ray are read-only arrays, which torch.as_tensor warns about
            input_ids[row, length - len(seq):] = torch.from_numpy(np.array(seq, dtype=np.int64))
            attention_mask[row, length - len(seq):] = 1
    return input_ids, attention_mask


def valid_step_index(num_steps: torch.Tensor) -> torch.Tensor:
    """[N] model calls per episode -> [S, 2] (episode, step) pairs of every valid step, in order."""
    rows = [torch.stack([torch.full((int(n),), i), torch.arange(int(n))], dim=1) for i, n in enumerate(num_steps.tolist())]
    return torch.cat(rows) if rows else torch.zeros((0, 2), dtype=torch.long)
