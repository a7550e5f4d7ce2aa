"""Model calls ("steps") of a trajectory batch, in forward-sized pieces: what the actor and the
critic both train and score on.

A sample is one (episode, step) pair: the prompt, the observation and the A action tokens of one
model call. Padded steps past an episode's end are never forwarded. Under FSDP every forward and
backward runs collectives, so in an update every rank must run the same number of pieces:
`pieces_on_all_ranks` agrees on the count and `pad_pieces` fills the gap with zero-weight replays.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from verl.models.openvla_oft import BOS_TOKEN_ID, SPACE_TOKEN_ID
from verl.protocol import DataProto
from verl.workers import trajectory as tj
from verl.workers.policy_inputs import PolicyInputBuilder


def split_steps(steps: torch.Tensor, size: int) -> list[torch.Tensor]:
    """[S, 2] -> pieces of at most `size` rows; none for S = 0 (`Tensor.split` would give one empty piece)."""
    return list(steps.split(size)) if len(steps) else []


def step_pieces(num_steps: torch.Tensor, micro_batch_size: int, steps_per_forward: int) -> list[torch.Tensor]:
    """The valid (episode, step) pairs of a mini-batch, in pieces of at most `steps_per_forward`.

    Steps of one micro-batch of `micro_batch_size` trajectories are pooled (1 trajectory per
    micro-batch, as in the reference, gives pieces that never mix episodes). Episodes with no
    valid step (faulted at reset) give no piece; a mini-batch of only such episodes gives none.
    """
    pieces = []
    for start in range(0, len(num_steps), micro_batch_size):
        ids = torch.arange(start, min(start + micro_batch_size, len(num_steps)))
        steps = tj.valid_step_index(num_steps[ids])
        steps[:, 0] = ids[steps[:, 0]]
        pieces.extend(split_steps(steps, steps_per_forward))
    return pieces


def pieces_on_all_ranks(local: int, device: torch.device) -> int:
    """The largest piece count of any rank (FSDP collectives run in every forward/backward)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    count = torch.tensor([local], dtype=torch.long, device=device)
    dist.all_reduce(count, op=dist.ReduceOp.MAX)
    return int(count.item())


def pad_pieces(pieces: list[torch.Tensor], total: int) -> list[torch.Tensor]:
    """`pieces` + replays up to max(total, 1) pieces; the caller gives replays (index >= the real
    count) zero weight. At least one piece, so a rank with nothing to learn still joins the
    gradient reduce-scatter; without a valid step the replay is step 0 of episode 0 (zero images)."""
    filler = pieces[0] if pieces else torch.zeros((1, 2), dtype=torch.long)
    return pieces + [filler] * (max(total, 1) - len(pieces))


def update_pieces(mini: DataProto, micro_batch_size: int, steps_per_forward: int,
                  device: torch.device) -> tuple[list[torch.Tensor], int]:
    """A mini-batch's forward/backward pieces, padded to the count every rank runs, and how many of
    them are real (the rest are replays the caller weighs 0)."""
    pieces = step_pieces(mini.batch[tj.NUM_STEPS], micro_batch_size, steps_per_forward)
    return pad_pieces(pieces, pieces_on_all_ranks(len(pieces), device)), len(pieces)


def episode_prompt(data: DataProto, episode: int) -> np.ndarray:
    """The episode's prompt ids; an empty prompt (BOS, "▁") for an episode that faulted before
    it had an instruction (only ever forwarded as a zero-weight replay: it must merely be finite)."""
    ids = data.non_tensor_batch[tj.PROMPT_IDS][episode]
    return ids if len(ids) else np.array([BOS_TOKEN_ID, SPACE_TOKEN_ID], dtype=np.int64)


def step_model_inputs(inputs: PolicyInputBuilder, data: DataProto, steps: torch.Tensor,
                      use_proprio: bool) -> dict[str, Any]:
    """Model keyword arguments for the (episode, step) pairs `steps` [S, 2]: prompts, images
    [S, n_img, H, W, 3] uint8 -> pixel values, proprio, and the stored action tokens [S, A]."""
    episodes, step_ids = steps[:, 0], steps[:, 1]
    proprio = data.batch[tj.PROPRIO][episodes, step_ids] if use_proprio else None
    kwargs = inputs([episode_prompt(data, int(i)) for i in episodes], data.batch[tj.IMAGES][episodes, step_ids], proprio)
    kwargs["action_tokens"] = data.batch[tj.RESPONSES][episodes, step_ids].to(inputs.device)  # [S, A]
    return kwargs


def gather_steps(per_step_tokens: torch.Tensor, steps: torch.Tensor, tokens_per_step: int) -> torch.Tensor:
    """[N, T*A] -> [S, A] rows for the (episode, step) pairs (A = 1 for per-step fields [N, T])."""
    n = per_step_tokens.shape[0]
    return per_step_tokens.view(n, -1, tokens_per_step)[steps[:, 0], steps[:, 1]]
