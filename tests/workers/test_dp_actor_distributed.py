"""The PPO actor on 2 gloo ranks (FSDP2, CPU, no Ray): faulted episodes never change the
sequence of collectives a rank runs.

Rank 1's share holds episodes with 0 valid steps (faulted at reset) or nothing valid at all,
rank 0's is normal. Both ranks must finish `compute_log_prob` and `update_policy` with the same
results as one process computing the same shares (a mismatched collective would make one rank
wait until the process group's timeout, set short here as a hang guard).
"""

from __future__ import annotations

import os
import time
import traceback
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from verl.models.openvla_oft.processor import OpenVLAProcessor
from verl.models.openvla_oft.tiny import build_tiny_model, build_tiny_tokenizer
from verl.protocol import DataProto
from verl.utils.network import get_free_port
from verl.utils import fsdp_utils
from verl.workers import trajectory as tj
from verl.workers.actor.dp_actor import ActorSettings, DataParallelPPOActor
from verl.workers.policy_inputs import PolicyInputBuilder
from verl.workers.step_batches import pieces_on_all_ranks

CHUNK, DIM, T = 8, 7, 3
A = CHUNK * DIM
GROUP_TIMEOUT_S = 120  # a collective mismatch fails after this instead of hanging the test run


def settings() -> ActorSettings:
    # one trajectory per micro-batch (the reference's setting) and small pieces: many collectives
    return ActorSettings(
        temperature=1.6, ppo_mini_batch_size=2, ppo_micro_batch_size=1, steps_per_forward=2,
        log_prob_micro_batch_size=2, ppo_epochs=1, shuffle=False, grad_clip=1.0, clip_ratio_low=0.2,
        clip_ratio_high=0.28, clip_ratio_c=None, loss_agg_mode="seq-mean-token-mean", entropy_coeff=0.0,
        pad_token_id=32000, use_proprio=False,
    )


def share(processor: OpenVLAProcessor, finish_steps: list[int], seed: int) -> DataProto:
    """A rank's share: episodes with these finish steps; 0 means faulted at reset (no prompt either)."""
    g = torch.Generator().manual_seed(seed)
    n = len(finish_steps)
    finish = torch.tensor(finish_steps)
    prompt_ids = np.empty(n, dtype=object)
    for i, f in enumerate(finish_steps):
        prompt_ids[i] = (np.asarray(processor.prompt_token_ids("open the drawer"), dtype=np.int64) if f
                         else np.zeros(0, dtype=np.int64))
    mask = tj.response_mask_from_finish_step(finish, T, CHUNK, DIM)
    return DataProto.from_dict(tensors={
        tj.IMAGES: torch.randint(0, 256, (n, T, 1, 224, 224, 3), dtype=torch.uint8, generator=g),
        tj.RESPONSES: torch.randint(31744, 32000, (n, T, A), generator=g),
        tj.FINISH_STEP: finish,
        tj.NUM_STEPS: (finish + CHUNK - 1) // CHUNK,
        tj.RESPONSE_MASK: mask,
        tj.ADVANTAGES: mask * torch.randn(n, 1, generator=g),
    }, non_tensors={tj.PROMPT_IDS: prompt_ids})


# rank 0: ordinary episodes; rank 1: case -> its share
RANK1_SHARES = {
    "one_faulted_episode": [24, 0, 17, 9],  # the reproduction: 1 of 4 episodes has no step
    "no_valid_step": [0, 0, 0, 0],  # every episode of the rank faulted at reset
    "uneven": [1, 1, 1, 1],  # valid but far fewer steps than rank 0
}
RANK0_SHARE = [24, 10, 17, 3]


def _rank_main(rank: int, world_size: int, port: int, case: str, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    result: dict = {}
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=timedelta(seconds=GROUP_TIMEOUT_S))
        processor = OpenVLAProcessor(build_tiny_tokenizer())
        model = build_tiny_model(seed=0)
        mesh = fsdp_utils.build_device_mesh("cpu")
        model = fsdp_utils.apply_fsdp2(model, mesh, param_dtype=torch.float32, param_offload=False,
                                       reshard_after_forward=True)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        inputs = PolicyInputBuilder(processor.preprocess_images, 32000, torch.device("cpu"))
        actor = DataParallelPPOActor(settings(), model, inputs, optimizer=optimizer)
        data = share(processor, RANK0_SHARE if rank == 0 else RANK1_SHARES[case], seed=rank)
        old, _ = actor.compute_log_prob(data)
        data.batch[tj.OLD_LOG_PROBS] = old - 0.05 * data.batch[tj.RESPONSE_MASK]
        metrics = actor.update_policy(data, seed=0)
        new, _ = actor.compute_log_prob(data)
        result = {"old": old, "new": new, "metrics": metrics, "valid": data.batch[tj.RESPONSE_MASK].bool()}
    except BaseException:
        result = {"error": traceback.format_exc()}
    finally:
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
        if dist.is_initialized():
            dist.destroy_process_group()


def run_two_ranks(case: str, tmp_path) -> list[dict]:
    ctx = mp.start_processes(_rank_main, args=(2, get_free_port(), case, str(tmp_path)), nprocs=2, join=False,
                             start_method="spawn")
    # hang guard only: a mismatched collective fails by the group timeout well before this
    deadline = time.monotonic() + GROUP_TIMEOUT_S * 4
    while not ctx.join(timeout=10):  # True once every rank exited (join returns after each exit)
        if time.monotonic() > deadline:
            for process in ctx.processes:
                process.kill()
            raise AssertionError("the ranks did not finish (deadlock past the process group timeout?)")
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    errors = [r["error"] for r in results if "error" in r]
    assert not errors, "\n".join(errors)
    return results


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(RANK1_SHARES))
def test_faulted_episodes_keep_ranks_in_step(case, tmp_path):
    ranks = run_two_ranks(case, tmp_path)
    for rank in ranks:
        assert torch.isfinite(rank["old"]).all() and torch.isfinite(rank["new"]).all()
        assert all(np.isfinite(v).all() for v in rank["metrics"].values())
        # the same optimizer steps ran on both ranks (one per mini-batch)
        assert len(rank["metrics"]["actor/grad_norm"]) == 2
    # both ranks see the same global grad norm: they ran the same update together
    assert ranks[0]["metrics"]["actor/grad_norm"] == ranks[1]["metrics"]["actor/grad_norm"]
    # rank 0's update moved its log-probs (advantages are random, so only check something changed)
    valid0 = ranks[0]["valid"]
    assert not torch.allclose(ranks[0]["old"][valid0], ranks[0]["new"][valid0])
    # rank 1's log-probs are those one process computes for its share alone
    processor = OpenVLAProcessor(build_tiny_tokenizer())
    single = DataParallelPPOActor(settings(), build_tiny_model(seed=0),
                                  PolicyInputBuilder(processor.preprocess_images, 32000, torch.device("cpu")))
    expected, _ = single.compute_log_prob(share(processor, RANK1_SHARES[case], seed=1))
    assert torch.allclose(ranks[1]["old"], expected, atol=1e-5)
    if case == "no_valid_step":
        assert (ranks[1]["old"] == 0).all()
        assert ranks[1]["metrics"]["actor/pg_loss"] == [0.0, 0.0]


def _piece_count_main(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    result: dict = {}
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=timedelta(seconds=GROUP_TIMEOUT_S))
        cpu = torch.device("cpu")
        result = {"busy_rank0": pieces_on_all_ranks([5, 2][rank], cpu),
                  "idle_rank1": pieces_on_all_ranks([3, 0][rank], cpu)}
    except BaseException:
        result = {"error": traceback.format_exc()}
    finally:
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
        if dist.is_initialized():
            dist.destroy_process_group()


def test_every_rank_runs_as_many_pieces_as_the_busiest(tmp_path):
    """The forward/backward count is agreed as the maximum over ranks: a rank with fewer pieces
    pads with fillers (a smaller agreed count would leave the busiest rank's collectives unmatched)."""
    ctx = mp.start_processes(_piece_count_main, args=(2, get_free_port(), str(tmp_path)), nprocs=2, join=False,
                             start_method="spawn")
    while not ctx.join(timeout=10):  # the group's timeout ends a rank stuck in the all-reduce
        pass
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert not [r["error"] for r in results if "error" in r]
    assert results == [{"busy_rank0": 5, "idle_rank1": 3}] * 2
