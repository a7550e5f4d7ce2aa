"""actor_rollout_ref.model.dtype=bfloat16 on CPU runs the GPU's configuration: FSDP2's
MixedPrecisionPolicy (bf16 all-gathers and compute, fp32 master shards, fp32 gradient
reduce-scatter) under gloo. Where bf16 and fp32 must agree they do, within bf16's rounding.

The policy is the shipped cold-start SFT policy (a trained tiny OpenVLA-OFT: confident logits,
as a real checkpoint has; a random one's near-uniform logits would hide rounding errors).

Tolerances. bf16 keeps 8 significant bits. The SFT policy's action logits reach |12.8|, where
bf16's spacing is 2^-4 = 0.0625, and they come out of ~20 rounded matmuls and norms, so a logit
is off by up to a few spacings: a log-prob error of ~0.1 is bf16 doing its job, and LOGPROB_TOL
= 0.25 (four spacings) is the bound we hold on a LIBERO episode (measured max 0.09). The
worst of 224 tokens on random frames depends on the CPU's bf16 kernels: the same inputs gave
0.17 on one machine and 0.32 on an AMD EPYC with AVX512-BF16, with the same mean (0.016 /
0.015), so that tail is bounded at RANDOM_FRAMES_LOGPROB_TOL = 0.4 and the mean at
LOGPROB_MEAN_TOL = 0.03 (half a spacing), which a real precision bug would exceed. A greedy token may flip only where fp32's top-2 logits are
within NEAR_TIE = 0.125 (two spacings) of each other; everywhere else bf16 must pick fp32's
token (measured on LIBERO: 19 flips in 672 tokens, fp32 margins all < 0.07).
"""

from __future__ import annotations

import json
import os
import traceback
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from verl.utils.network import get_free_port

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_SFT = ROOT / "examples" / "assets" / "cold_start_sft_libero_object.delta.safetensors"
LOGPROB_TOL = 0.25  # max |log p_bf16 - log p_fp32| per action token on LIBERO (see the module docstring)
RANDOM_FRAMES_LOGPROB_TOL = 0.4  # the same on random frames, whose worst token varies with the CPU
LOGPROB_MEAN_TOL = 0.03  # mean |log p_bf16 - log p_fp32| over action tokens
NEAR_TIE = 0.125  # a greedy flip is allowed only where fp32's top-2 logits are closer than this
GROUP_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def sft_policy(tmp_path_factory) -> Path:
    from verl.models.openvla_oft.tiny_delta import unpack_delta

    return unpack_delta(SHIPPED_SFT, tmp_path_factory.mktemp("sft") / "policy")


def policy_batch(ckpt: Path, rows: int, seed: int) -> dict[str, torch.Tensor]:
    """Model inputs the way the rollout builds them (PolicyInputBuilder), from random frames."""
    from verl.models.openvla_oft import OpenVLAProcessor
    from verl.workers.policy_inputs import PolicyInputBuilder

    processor = OpenVLAProcessor.from_pretrained(ckpt)
    build = PolicyInputBuilder(processor.preprocess_images, 32000, torch.device("cpu"))
    prompts = ["pick up the alphabet soup and place it in the basket", "pick up the cream cheese and place it in the basket"]
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (rows, 1, 224, 224, 3), dtype=torch.uint8, generator=generator)
    inputs = build([np.asarray(processor.prompt_token_ids(prompts[i % 2])) for i in range(rows)], images, None)
    return {k: v for k, v in inputs.items() if v is not None}  # no proprio: the policy does not use it


def shard_bf16(model: torch.nn.Module) -> torch.nn.Module:
    """The worker's sharding (verl.utils.fsdp_utils.apply_fsdp2) with the GPU's bf16 policy."""
    from verl.utils import fsdp_utils

    mesh = fsdp_utils.build_device_mesh("cpu")
    return fsdp_utils.apply_fsdp2(model, mesh, param_dtype=torch.bfloat16, param_offload=False,
                                  reshard_after_forward=True)


def token_log_probs(logits: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """[B, A, 256] logits, [B, A] bins -> [B, A] log-probs in fp32 (as the actor computes them)."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, bins[..., None])[..., 0]


def _rank_main(rank: int, port: int, ckpt: str, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=timedelta(seconds=GROUP_TIMEOUT_S))
    outcome: dict = {}
    try:
        from verl.models.openvla_oft import load_openvla_checkpoint

        torch.manual_seed(0)
        reference = load_openvla_checkpoint(ckpt)  # fp32, unsharded, on every rank
        model = shard_bf16(load_openvla_checkpoint(ckpt))
        batch = policy_batch(Path(ckpt), rows=4, seed=0)
        with torch.no_grad():
            bins = reference(**batch).argmax(-1)  # [4, A] the fp32 policy's greedy bins
        mine = {k: v[rank::2] for k, v in batch.items()}  # each rank trains on its half

        outcome["master_dtypes"] = sorted({str(p.dtype) for p in model.parameters()})
        logits = model(**mine)
        outcome["logits_dtype"] = str(logits.dtype)
        loss = -token_log_probs(logits, bins[rank::2]).mean()
        loss.backward()  # FSDP2 reduce-scatters in fp32 and averages over the 2 ranks
        outcome["grad_dtypes"] = sorted({str(p.grad.dtype) for p in model.parameters() if p.grad is not None})
        grads = {n: p.grad.full_tensor() for n, p in model.named_parameters() if p.grad is not None}
        # each rank's gradient comes out of a bf16 backward; averaged in fp32, (a + b) / 2 mostly
        # needs more than bf16's 8 significant bits. Averaged in bf16, every value would fit in them.
        flat = torch.cat([g.flatten() for g in grads.values()])
        flat = flat[flat != 0]
        outcome["grads_exact_in_bf16"] = (flat == flat.bfloat16().float()).float().mean().item()

        # the same objective in fp32 on one process: the mean of the two halves' losses
        ref_loss = sum(-token_log_probs(reference(**{k: v[r::2] for k, v in batch.items()}), bins[r::2]).mean()
                       for r in range(2)) / 2
        ref_loss.backward()
        ref_grads = {n: p.grad for n, p in reference.named_parameters() if p.grad is not None}
        outcome["same_params_get_grads"] = sorted(grads) == sorted(ref_grads)
        grads, ref_grads = (torch.cat([g[n].flatten() for n in sorted(ref_grads)]) for g in (grads, ref_grads))
        outcome["grad_cosine"] = torch.nn.functional.cosine_similarity(grads, ref_grads, dim=0).item()
        outcome["grad_rel_error"] = ((grads - ref_grads).norm() / ref_grads.norm()).item()
        with torch.no_grad():
            lp16 = token_log_probs(model(**batch), bins)
            lp32 = token_log_probs(reference(**batch), bins)
        outcome["logprob_max_abs_diff"] = (lp16 - lp32).abs().max().item()
        outcome["logprob_mean_abs_diff"] = (lp16 - lp32).abs().mean().item()
    except BaseException:
        outcome["error"] = traceback.format_exc()
    finally:
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(outcome))
        dist.destroy_process_group()


def test_bf16_policy_on_two_gloo_ranks_matches_fp32(sft_policy, tmp_path):
    """bf16 compute, fp32 master weights and gradients; the 2-rank bf16 gradient is the fp32
    gradient up to rounding (cosine >= 0.99, relative error <= 10%: bf16's ~2^-8 per operation,
    compounded through the layers); log-probs within the random-frames and mean bounds."""
    mp.spawn(_rank_main, args=(get_free_port(), str(sft_policy), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        out = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert "error" not in out, out["error"]
        print(f"rank {rank}:", out)
        assert out["master_dtypes"] == ["torch.float32"]
        assert out["logits_dtype"] == "torch.bfloat16"
        assert out["grad_dtypes"] == ["torch.float32"] and out["same_params_get_grads"]
        assert out["grads_exact_in_bf16"] < 0.9  # reduced in fp32 (measured 0.42), not in bf16 (1.0)
        assert out["grad_cosine"] >= 0.99 and out["grad_rel_error"] <= 0.1
        assert out["logprob_max_abs_diff"] <= RANDOM_FRAMES_LOGPROB_TOL
        assert 0 < out["logprob_mean_abs_diff"] <= LOGPROB_MEAN_TOL  # > 0: really computed in bf16


class RecordingPolicy:
    """The fp32 policy as EnvRollout sees it, keeping every call's inputs and logits."""

    def __init__(self, model: torch.nn.Module):
        self.model, self.calls = model, []

    def eval(self):
        self.model.eval()
        return self

    def sample_action_tokens(self, **kwargs):
        tokens, logits = self.model.sample_action_tokens(**kwargs)
        inputs = {k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
        self.calls.append({"inputs": inputs, "tokens": tokens, "logits": logits})
        return tokens, logits


def greedy_libero_episode(policy, ckpt: Path, task_id: int, trial_id: int, max_steps: int):
    """One greedy episode of libero_object through EnvRollout (the rollout's own input pipeline)."""
    from verl.envs.config import EnvPoolConfig
    from verl.envs.env_pool import EnvPool
    from verl.models.openvla_oft import OpenVLAProcessor, get_action_norm_stats, load_openvla_checkpoint
    from verl.protocol import DataProto
    from verl.workers import trajectory as tj
    from verl.workers.policy_inputs import PolicyInputBuilder
    from verl.workers.rollout.env_rollout import EnvRollout, RolloutSettings

    processor = OpenVLAProcessor.from_pretrained(ckpt)
    stats = get_action_norm_stats(load_openvla_checkpoint(ckpt, meta_device=True).config.norm_stats, "libero_object")
    pool = EnvPool(EnvPoolConfig(benchmark="libero", num_workers=1, envs_per_worker=1, max_episode_steps=max_steps,
                                 num_steps_wait=10))
    try:
        settings = RolloutSettings(benchmark="libero", temperature=1.0, action_chunk=8, action_dim=7,
                                   max_env_steps=max_steps, progress_bar=False)
        engine = EnvRollout(policy, processor.prompt_token_ids,
                            PolicyInputBuilder(processor.preprocess_images, 32000, torch.device("cpu")),
                            pool, settings, stats)
        prompts = DataProto.from_dict(non_tensors={
            tj.TASK_SUITE_NAME: np.array(["libero_object"], dtype=object),
            tj.TASK_ID: np.array([task_id], dtype=object), tj.TRIAL_ID: np.array([trial_id], dtype=object)})
        out = engine.generate_sequences(prompts, greedy=True, seed=0)
    finally:
        pool.close()
    calls = int(out.batch[tj.NUM_STEPS][0])
    return {"tokens": out.batch[tj.RESPONSES][0, :calls], "log_probs": out.batch[tj.ROLLOUT_LOG_PROBS][0, :calls],
            "complete": bool(out.batch[tj.COMPLETE][0]), "finish_step": int(out.batch[tj.FINISH_STEP][0])}


def _bf16_libero_main(rank: int, port: int, ckpt: str, recorded: str, out_file: str, episode: dict) -> None:
    """One gloo rank: the bf16-sharded policy on fp32's recorded inputs (open loop), then its own
    greedy episode (closed loop)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=0, world_size=1, timeout=timedelta(seconds=GROUP_TIMEOUT_S))
    try:
        from verl.models.openvla_oft import load_openvla_checkpoint

        model = shard_bf16(load_openvla_checkpoint(ckpt)).eval()
        open_loop = []
        with torch.no_grad():
            for call in torch.load(recorded):
                tokens, logits = model.sample_action_tokens(**call["inputs"], greedy=True)
                open_loop.append({"tokens": tokens, "logits": logits.float()})
        closed = greedy_libero_episode(model, Path(ckpt), **episode)
        torch.save({"open_loop": open_loop, "closed_loop": closed}, out_file)
    finally:
        dist.destroy_process_group()


def near_tie_margin(logits: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|logit[a] - logit[b]| under the fp32 logits [.., 256] for bins a, b [..]."""
    return (logits.gather(-1, a[..., None]) - logits.gather(-1, b[..., None])).abs()[..., 0]


@pytest.mark.slow
def test_bf16_greedy_libero_episode_agrees_with_fp32(sft_policy, tmp_path):
    """A real LIBERO episode, greedy, fp32 vs the bf16 GPU policy on 1 gloo rank:
    - open loop (bf16 on the observations fp32 saw): the same action token wherever fp32's choice
      was not a near-tie (top-2 logits closer than NEAR_TIE), and log-probs within LOGPROB_TOL;
    - closed loop (bf16 drives its own episode): the same tokens up to the first near-tie flip."""
    pytest.importorskip("libero")
    from verl.models.openvla_oft import load_openvla_checkpoint
    from verl.models.openvla_oft import ACTION_TOKEN_BEGIN

    episode = {"task_id": 1, "trial_id": 30, "max_steps": 96}  # a held-out init state, 12 model calls
    fp32 = RecordingPolicy(load_openvla_checkpoint(sft_policy))
    reference = greedy_libero_episode(fp32, sft_policy, **episode)
    torch.save(fp32.calls, tmp_path / "calls.pt")
    mp.spawn(_bf16_libero_main, nprocs=1, join=True, args=(
        get_free_port(), str(sft_policy), str(tmp_path / "calls.pt"), str(tmp_path / "bf16.pt"), episode))
    bf16 = torch.load(tmp_path / "bf16.pt")

    logits32 = torch.cat([c["logits"].float() for c in fp32.calls])  # [calls, A, 256]
    bins32 = torch.cat([c["tokens"] for c in fp32.calls]) - ACTION_TOKEN_BEGIN
    bins16 = torch.cat([c["tokens"] for c in bf16["open_loop"]]) - ACTION_TOKEN_BEGIN
    logits16 = torch.cat([c["logits"] for c in bf16["open_loop"]])
    flips = bins16 != bins32
    margins = near_tie_margin(logits32, bins32, bins16)
    lp_diff = (token_log_probs(logits16, bins32) - token_log_probs(logits32, bins32)).abs()
    print(f"{bins32.numel()} tokens: {int(flips.sum())} greedy flips (fp32 margins {margins[flips].tolist()}), "
          f"log-prob |diff| max {lp_diff.max():.4f} mean {lp_diff.mean():.4f}, "
          f"max |logit| {logits32.abs().max():.1f}; fp32 episode complete={reference['complete']} "
          f"finish={reference['finish_step']}, bf16 complete={bf16['closed_loop']['complete']} "
          f"finish={bf16['closed_loop']['finish_step']}")
    assert len(fp32.calls) == 12 and bins32.shape == (12, 56)
    assert (margins[flips] < NEAR_TIE).all()
    assert flips.float().mean() <= 0.05  # a trained policy is rarely at a tie
    assert lp_diff.max() <= LOGPROB_TOL

    # closed loop: identical until bf16 first flips a near-tie (then the episodes may part ways)
    tokens32, tokens16 = reference["tokens"], bf16["closed_loop"]["tokens"]
    same_calls = 0  # the episode is deterministic: equal tokens so far mean equal observations
    while (same_calls < min(len(tokens32), len(tokens16))
           and torch.equal(tokens32[same_calls], tokens16[same_calls])):
        same_calls += 1
    if same_calls < min(len(tokens32), len(tokens16)):
        first = same_calls
        a, b = tokens32[first] - ACTION_TOKEN_BEGIN, tokens16[first] - ACTION_TOKEN_BEGIN
        assert (near_tie_margin(fp32.calls[first]["logits"].float()[0], a, b)[a != b] < NEAR_TIE).all()
    else:
        assert reference["finish_step"] == bf16["closed_loop"]["finish_step"]
