#!/usr/bin/env python
"""Mutation check: break one line of the code at a time and see whether the tests that should
notice it do. A tool for finding blind spots in the suite, not a CI step.

    nice -n 19 python scripts/mutation_check.py [--only ID ...] [--list] [--ref HEAD]
        [--out docs/benchmarks/mutation_check.json] [--timeout-s 600]

Each mutation names a file, one line (or a unique part of it) exactly as it stands, its
replacement, and the narrow test selection that should fail under it. The committed tree at
`--ref` is exported to a temporary directory (`git archive`: the working tree and its other
writers are never touched); every selection is first run unmutated there (it must pass, or its
mutations are reported as `baseline_failed`), then each mutation is applied alone, its tests
run with `-x`, and the file restored. A mutation is `caught` when the tests fail, `missed` when
they pass, `timeout` when they run past --timeout-s (a hang, e.g. a collective left unmatched),
`stale` when its line is no longer in the file exactly once. Results go to --out as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

logger = logging.getLogger("mutation_check")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "benchmarks" / "mutation_check.json"

CORE = "verl/trainer/ppo/core_algos.py"
ACTOR = "verl/workers/actor/dp_actor.py"
WORKER = "verl/workers/fsdp_workers.py"
TRAJ = "verl/workers/trajectory.py"
ROLLOUT = "verl/workers/rollout/env_rollout.py"
TWIN_ENV = "verl/envs/robotwin2_env.py"
NORM = "verl/models/openvla_oft/normalization.py"
FSDP = "verl/utils/fsdp_utils.py"
REWARD = "verl/trainer/ppo/reward.py"
SAMPLER = "verl/utils/dataset/sampler.py"
CKPT = "verl/workers/checkpoint.py"
RUN_CKPTS = "verl/trainer/run_checkpoints.py"
TRAINER = "verl/trainer/ppo/ray_trainer.py"

# test selections: pytest arguments
T_CORE = ("tests/trainer/test_core_algos.py",)
T_REWARD = ("tests/trainer/test_reward.py",)
T_SETTINGS = ("tests/workers/test_worker_settings.py",)
T_ACTOR_CLIP = ("tests/workers/test_dp_actor.py", "-k", "clips_with or advantage_sign")
T_ACTOR_ENTROPY = ("tests/workers/test_dp_actor.py", "-k", "entropy")
T_ACTOR_GRAD_CLIP = ("tests/workers/test_dp_actor.py", "-k", "grad_clip")
T_ACTOR_EPOCHS = ("tests/workers/test_dp_actor.py", "-k", "every_epoch or seeded_shuffle")
T_ACTOR_SHUFFLE = ("tests/workers/test_dp_actor.py", "-k", "seeded_shuffle")
T_ACTOR_FILLER = ("tests/workers/test_dp_actor.py", "-k", "filler")
T_ACTOR_PIECES = ("tests/workers/test_dp_actor.py", "-k", "pieces_give_the_same_gradient")
T_ACTOR_LOGPROB = ("tests/workers/test_dp_actor.py", "-k", "compute_log_prob or mask_counts")
T_MASK = ("tests/workers/test_dp_actor.py::test_response_mask_counts_executed_actions",
          "tests/workers/test_dp_actor.py::test_compute_log_prob_matches_direct_forward_and_zeros_padding",
          "tests/trainer/test_reward.py")
T_PIECE_COUNT = ("tests/workers/test_dp_actor_distributed.py", "-k", "busiest")
T_CKPT = ("tests/workers/test_actor_checkpoint.py",)
T_TRAINER_CKPT = ("tests/trainer/test_checkpointing.py",)
T_SAMPLER = ("tests/dataset/test_sampler.py", "tests/dataset/test_rob_dataset.py", "-k", "sampler")
T_SAMPLER_RESUME = ("tests/dataset/test_rob_dataset.py", "tests/trainer/test_checkpointing.py", "-k", "sampler")
T_ROBOTWIN = ("tests/workers/test_worker_settings.py", "tests/envs/test_robotwin2_env.py", "-k", "robotwin or rl_worker")
T_RAY_ROLLOUT = ("tests/workers/test_fsdp_worker.py", "-k", "well_formed")
T_ROBOTWIN_ENV = ("tests/envs/test_robotwin2_env.py",)
T_MIXED_PRECISION = ("tests/workers/test_mixed_precision.py", "-k", "two_gloo_ranks")
T_ROBOTWIN_STATS = ("tests/models/test_robotwin_statistics.py",)
T_ROBOTWIN_OBS = ("tests/models/test_robotwin_observation.py",)


@dataclass(frozen=True)
class Mutation:
    id: str
    path: str
    original: str  # must occur exactly once in the file
    replacement: str
    tests: tuple[str, ...]  # pytest arguments
    bug: str  # what a user would hit


MUTATIONS: tuple[Mutation, ...] = (
    # ---------------------------------------------------------------- loss (core_algos)
    Mutation("loss/clip_bounds_swapped", CORE,
             "torch.clamp(ratio, 1.0 - clip_ratio_low, 1.0 + clip_ratio_high)",
             "torch.clamp(ratio, 1.0 - clip_ratio_high, 1.0 + clip_ratio_low)", T_CORE,
             "clip-higher applied to the wrong side"),
    Mutation("loss/clip_max_to_min", CORE, "clipped_losses = torch.maximum(pg_losses1, pg_losses2)",
             "clipped_losses = torch.minimum(pg_losses1, pg_losses2)", T_CORE, "optimistic instead of pessimistic bound"),
    Mutation("loss/clipfrac_inverted", CORE, "torch.gt(pg_losses2, pg_losses1).float()",
             "torch.lt(pg_losses2, pg_losses1).float()", T_CORE, "pg_clipfrac reports the unclipped tokens"),
    Mutation("loss/ppo_kl_sign", CORE, "ppo_kl = masked_mean(-negative_approx_kl, response_mask)",
             "ppo_kl = masked_mean(negative_approx_kl, response_mask)", T_CORE, "ppo_kl with the wrong sign"),
    Mutation("loss/dual_clip_side", CORE, "pg_losses = torch.where(advantages < 0, dual_clipped, clipped_losses)",
             "pg_losses = torch.where(advantages > 0, dual_clipped, clipped_losses)", T_CORE,
             "dual clip caps positive advantages"),
    Mutation("loss/agg_seq_mean_divides_by_length", CORE,
             "per_seq = seq_sum / mask.sum(dim=-1).clamp(min=1.0)", "per_seq = seq_sum / mask.shape[-1]", T_CORE,
             "seq-mean-token-mean divides by the padded length"),
    Mutation("loss/agg_counts_empty_sequences", CORE, "return masked_mean(per_seq, seq_valid)",
             "return per_seq.mean()", T_CORE, "empty trajectories dilute the loss"),
    Mutation("loss/token_weights_count_empty_sequences", CORE,
             "num_seqs = (seq_tokens > 0).sum().clamp(min=1).float()", "num_seqs = float(seq_tokens.shape[0])",
             T_CORE, "split pieces no longer add up to the mini-batch loss"),
    Mutation("loss/value_max_to_min", CORE, "agg_loss(torch.maximum(vf_losses1, vf_losses2)",
             "agg_loss(torch.minimum(vf_losses1, vf_losses2)", T_CORE, "value clip loosens instead of bounds"),
    Mutation("loss/value_no_half", CORE, "vf_loss = 0.5 * agg_loss(", "vf_loss = agg_loss(", T_CORE,
             "value loss twice as large"),
    Mutation("loss/value_clip_around_new", CORE,
             "values_clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)",
             "values_clipped = values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)", T_CORE,
             "value clipped around the new value"),
    Mutation("kl/abs_without_abs", CORE, "return logr.abs()", "return logr", T_CORE, "abs KL can be negative"),
    Mutation("kl/low_var_without_clamp", CORE,
             "return torch.clamp(torch.exp(neg) - neg - 1, min=-10.0, max=10.0)", "return torch.exp(neg) - neg - 1",
             T_CORE, "k3 explodes for far-apart policies"),
    Mutation("kl/mse_without_half", CORE, "return 0.5 * logr.square()", "return logr.square()", T_CORE,
             "k2 twice as large"),
    Mutation("kl/adaptive_clip", CORE, "np.clip(current_kl / self.target - 1, -0.2, 0.2)",
             "np.clip(current_kl / self.target - 1, -0.1, 0.1)", T_CORE, "adaptive KL moves at half speed"),
    Mutation("sampling/faults_count_as_failures", CORE, "counted = (index == uid) & valid", "counted = index == uid",
             T_CORE, "dynamic sampling rates a group with its faulted episodes as failures"),
    Mutation("sampling/filter_exclusive_bounds", CORE, "lower <= rates[uid] <= upper", "lower < rates[uid] < upper",
             T_CORE, "dynamic sampling drops groups on the bounds"),
    # ---------------------------------------------------------------- advantage
    Mutation("adv/grpo_biased_std", CORE, "group_scores.std(unbiased=True)", "group_scores.std(unbiased=False)",
             T_CORE, "GRPO std differs from the reference"),
    Mutation("adv/grpo_not_centred", CORE, "centered = group_scores - mean", "centered = group_scores", T_CORE,
             "advantages not centred on the group"),
    Mutation("adv/grpo_unmasked", CORE, "advantages = adv.unsqueeze(-1) * response_mask",
             "advantages = adv.unsqueeze(-1).expand_as(response_mask).clone()", T_CORE,
             "advantage on padding tokens"),
    Mutation("adv/grpo_singleton_centred", CORE, "mean, std = torch.tensor(0.0), torch.tensor(1.0)",
             "mean, std = group_scores.mean(), torch.tensor(1.0)", T_CORE,
             "a group of one always gets advantage 0"),
    Mutation("adv/gae_no_gap_skip", CORE, "next_value = values[:, t] * m + next_value * (1 - m)",
             "next_value = values[:, t]", T_CORE, "GAE bootstraps from padded values"),
    Mutation("adv/gae_no_lambda", CORE, "gae = delta + gamma * lam * last_gae", "gae = delta + gamma * last_gae",
             T_CORE, "GAE ignores lambda"),
    Mutation("adv/reward_on_first_token", REWARD, "last = (num_valid - 1).clamp(min=0)",
             "last = torch.zeros_like(num_valid)", T_REWARD, "reward on the first instead of the last token"),
    Mutation("adv/reward_coef_ignored", REWARD, "success[has_tokens] * self.reward_coef", "success[has_tokens]",
             T_REWARD, "verifier.reward_coef ignored"),
    # ---------------------------------------------------------------- actor
    Mutation("actor/clip_ratios_swapped", ACTOR,
             "clip_ratio_low=s.clip_ratio_low, clip_ratio_high=s.clip_ratio_high,",
             "clip_ratio_low=s.clip_ratio_high, clip_ratio_high=s.clip_ratio_low,", T_ACTOR_CLIP,
             "the actor passes the clip bounds swapped"),
    Mutation("actor/entropy_bonus_sign", ACTOR, "loss = pg_loss - s.entropy_coeff * entropy_term",
             "loss = pg_loss + s.entropy_coeff * entropy_term", T_ACTOR_ENTROPY, "entropy bonus lowers entropy"),
    Mutation("actor/grad_clip_disabled", ACTOR, "grad_norm = clip_grad_norm(self.model, s.grad_clip)",
             "grad_norm = clip_grad_norm(self.model, float('inf'))", T_ACTOR_GRAD_CLIP, "grad_clip ignored"),
    Mutation("actor/ppo_epochs_ignored", ACTOR, "for _ in range(s.ppo_epochs):", "for _ in range(1):",
             T_ACTOR_EPOCHS, "ppo_epochs ignored"),
    Mutation("actor/shuffle_ignored", ACTOR,
             "order = torch.randperm(n, generator=generator) if self.settings.shuffle else torch.arange(n)",
             "order = torch.arange(n)", T_ACTOR_SHUFFLE, "actor.shuffle ignored"),
    Mutation("actor/shuffle_unseeded", ACTOR, "generator = torch.Generator().manual_seed(seed)",
             "generator = torch.Generator().manual_seed(0)", T_ACTOR_SHUFFLE, "every step shuffles the same way"),
    Mutation("actor/filler_keeps_weight", ACTOR, "piece_weights = torch.zeros_like(piece_weights)",
             "piece_weights = piece_weights", T_ACTOR_FILLER, "filler pieces add gradient"),
    Mutation("actor/filler_keeps_metrics", ACTOR, "piece_mask = torch.zeros_like(piece_mask)",
             "piece_mask = piece_mask", T_ACTOR_FILLER, "filler pieces count in the metrics"),
    Mutation("actor/piece_count_min", ACTOR, "dist.all_reduce(count, op=dist.ReduceOp.MAX)",
             "dist.all_reduce(count, op=dist.ReduceOp.MIN)", T_PIECE_COUNT,
             "ranks run different forward counts (FSDP collectives mismatch)"),
    Mutation("actor/pieces_lose_episode_index", ACTOR, "steps[:, 0] = ids[steps[:, 0]]", "steps[:, 0] = steps[:, 0]",
             T_ACTOR_PIECES, "micro-batches > 1 trajectory train on the wrong episodes"),
    Mutation("actor/temperature_ignored", ACTOR, "scaled = logits.float() / self.settings.temperature",
             "scaled = logits.float()", T_ACTOR_LOGPROB, "log-probs at T=1, rollout at T=1.6"),
    Mutation("actor/lr_scheduler_not_stepped", ACTOR, "            self.lr_scheduler.step()",
             "            pass", T_CKPT, "the LR schedule never advances"),
    Mutation("worker/settings_clip_swapped", WORKER,
             "clip_ratio_low=actor_cfg.clip_ratio_low, clip_ratio_high=actor_cfg.clip_ratio_high,",
             "clip_ratio_low=actor_cfg.clip_ratio_high, clip_ratio_high=actor_cfg.clip_ratio_low,", T_SETTINGS,
             "the worker passes the clip bounds swapped"),
    Mutation("worker/mini_batch_not_per_rank", WORKER,
             "ppo_mini_batch_size=actor_cfg.ppo_mini_batch_size // world_size,",
             "ppo_mini_batch_size=actor_cfg.ppo_mini_batch_size,", T_SETTINGS, "mini-batches world_size times larger"),
    Mutation("worker/lr_warmup_off_by_one", WORKER, "return (step + 1) / warmup", "return step / warmup", T_SETTINGS,
             "the first step runs at lr 0"),
    Mutation("worker/lr_cosine_inverted", WORKER, "(1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))",
             "(1 - min_ratio) * 0.5 * (1 - math.cos(math.pi * progress))", T_SETTINGS, "cosine schedule rises"),
    Mutation("worker/robotwin_keys_dropped", WORKER, "robotwin2=self._robotwin2_options(),", "robotwin2={},",
             T_ROBOTWIN, "RoboTwin env options never reach the env workers"),
    # ---------------------------------------------------------------- rollout masks
    Mutation("mask/inclusive_finish_step", TRAJ, "(action_index.unsqueeze(0) < finish_step.unsqueeze(1)).float()",
             "(action_index.unsqueeze(0) <= finish_step.unsqueeze(1)).float()", T_MASK,
             "one unexecuted action counted as valid"),
    Mutation("mask/per_chunk_not_per_action", TRAJ,
             "action_index = torch.arange(num_tokens, device=finish_step.device) // action_dim",
             "action_index = torch.arange(num_tokens, device=finish_step.device) // (action_chunk * action_dim)",
             T_MASK, "mask covers whole chunks past the episode's end"),
    Mutation("mask/valid_steps_of_episode_0", TRAJ, "torch.stack([torch.full((int(n),), i), torch.arange(int(n))]",
             "torch.stack([torch.full((int(n),), 0), torch.arange(int(n))]", T_ACTOR_LOGPROB,
             "every step attributed to episode 0"),
    Mutation("mask/finish_step_overwritten", ROLLOUT, "ep.finish_step += res.steps_taken",
             "ep.finish_step = res.steps_taken", T_RAY_ROLLOUT, "finish_step counts only the last chunk"),
    Mutation("fsdp/bf16_reduces_in_bf16", FSDP, "return MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32,",
             "return MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=param_dtype,", T_MIXED_PRECISION,
             "gradients averaged over ranks in bf16"),
    Mutation("fsdp/bf16_policy_dropped", FSDP, "    if param_dtype == torch.float32:", "    if True:",
             T_MIXED_PRECISION, "model.dtype=bfloat16 silently trains in fp32"),
    # ---------------------------------------------------------------- RoboTwin 2.0 adapter and statistics
    Mutation("robotwin/gripper_uneven_shares", TWIN_ENV,
             "shares = [n_steps // n_targets + (1 if i < n_steps % n_targets else 0) for i in range(n_targets)]",
             "shares = [n_steps // n_targets for i in range(n_targets)]", T_ROBOTWIN_ENV,
             "a chunk's gripper schedule is shorter than its arm motion"),
    Mutation("robotwin/gripper_jumps", TWIN_ENV, "values += np.linspace(stops[i], stops[i + 1], share + 1)[1:].tolist()",
             "values += [stops[i + 1]] * share", T_ROBOTWIN_ENV, "the gripper jumps instead of moving linearly"),
    Mutation("robotwin/success_not_checked_per_step", TWIN_ENV, "            if env.check_success():",
             "            if False:", T_ROBOTWIN_ENV, "a success mid-chunk is missed"),
    Mutation("robotwin/unnorm_prefix_kept", NORM, "candidates.append(unnorm_key[len(prefix):])",
             "candidates.append(unnorm_key)", T_ROBOTWIN_STATS, "robotwin2_<task> statistics not found"),
    Mutation("robotwin/proprio_unclipped", NORM, "return np.clip(np.where(mask, scaled, proprio), -1.0, 1.0)",
             "return np.where(mask, scaled, proprio)", T_ROBOTWIN_STATS, "proprio outside [-1, 1] reaches the model"),
    # ---------------------------------------------------------------- sampler
    Mutation("sampler/same_order_every_epoch", SAMPLER,
             "return np.random.default_rng([self.seed, epoch]).permutation(self.data_len)",
             "return np.random.default_rng([self.seed, 0]).permutation(self.data_len)", T_SAMPLER,
             "every epoch visits prompts in the same order"),
    Mutation("sampler/position_not_restored", SAMPLER, 'self.position = int(state["position"])',
             "self.position = 0", T_SAMPLER_RESUME, "resume repeats the epoch's first prompts"),
    Mutation("sampler/take_does_not_advance", SAMPLER, "self.position += count", "self.position += 0",
             T_SAMPLER, "every step draws the same prompts"),
    # ---------------------------------------------------------------- checkpoint restore
    Mutation("ckpt/lr_scheduler_not_restored", CKPT, 'worker.lr_scheduler.load_state_dict(saved["lr_scheduler"])',
             "pass", T_CKPT, "resumed run restarts the LR schedule"),
    Mutation("ckpt/rng_not_restored", CKPT, '    set_rng_state(saved["rng"])', "    pass", T_CKPT,
             "resumed run draws other random numbers"),
    Mutation("ckpt/numpy_rng_not_restored", CKPT, 'np.random.set_state(state["numpy"])', "pass", T_CKPT,
             "numpy RNG not restored"),
    Mutation("ckpt/optimizer_not_restored", CKPT,
             'fsdp_utils.load_sharded_optimizer_state(worker.model, worker.optimizer, saved["optimizer"])', "pass",
             T_CKPT, "AdamW moments restart at zero"),
    Mutation("ckpt/weights_not_restored", CKPT, "fsdp_utils.load_full_state_dict(worker.model, full)", "pass",
             T_CKPT, "resumed run trains the initial weights"),
    Mutation("ckpt/world_size_unchecked", CKPT, 'if saved["world_size"] != worker.world_size:', "if False:", T_CKPT,
             "a shard of another world size is loaded"),
    Mutation("ckpt/trainer_step_not_restored", TRAINER, 'self.global_steps = int(state["global_steps"])',
             "self.global_steps = 0", T_TRAINER_CKPT, "resumed run starts counting at 0"),
    Mutation("ckpt/trainer_sampler_not_restored", TRAINER, 'self.sampler.load_state_dict(state["sampler"])',
             "pass", T_TRAINER_CKPT, "resumed run replays prompts"),
    Mutation("ckpt/save_not_verified", RUN_CKPTS, "            self.verify(tmp)", "            pass",
             T_TRAINER_CKPT, "a truncated save becomes latest"),
    Mutation("ckpt/latest_off_by_one", RUN_CKPTS, "return self.step_dir(int(latest.read_text().strip()))",
             "return self.step_dir(int(latest.read_text().strip()) - 1)", T_TRAINER_CKPT,
             "resume picks the step before latest"),
)


@dataclass
class Result:
    id: str
    path: str
    bug: str
    tests: list[str]
    status: str  # caught | missed | timeout | stale | baseline_failed
    failed_tests: list[str]
    seconds: float
    note: str = ""


def export_tree(ref: str, dest: Path) -> str:
    """The committed tree at `ref` under `dest`; returns the commit id."""
    commit = subprocess.run(["git", "rev-parse", ref], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout.strip()
    archive = subprocess.Popen(["git", "archive", "--format=tar", commit], cwd=ROOT, stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        raise RuntimeError(f"git archive {commit} failed")
    return commit


def run_tests(copy: Path, tests: tuple[str, ...], timeout_s: float) -> tuple[Optional[int], str]:
    """pytest in the copy (its own `verl` first on the path); (exit code or None on timeout, output)."""
    env = dict(os.environ, PYTHONPATH=str(copy), MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    proc = subprocess.Popen(cmd, cwd=copy, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own process group: a hang is killed whole
    try:
        out, _ = proc.communicate(timeout=timeout_s)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out


def failed_tests(output: str) -> list[str]:
    return list(dict.fromkeys(re.findall(r"^(?:FAILED|ERROR) (\S+)", output, flags=re.MULTILINE)))


def check_imports_copy(copy: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(copy))
    where = subprocess.run([sys.executable, "-c", "import verl; print(verl.__file__)"], cwd=copy, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    if not Path(where).resolve().is_relative_to(copy.resolve()):
        raise RuntimeError(f"the tests would import verl from {where}, not from the mutated copy {copy}")


def check_mutation(copy: Path, m: Mutation, timeout_s: float) -> Result:
    target = copy / m.path
    source = target.read_text()
    start = time.monotonic()
    if source.count(m.original) != 1:
        return Result(m.id, m.path, m.bug, list(m.tests), "stale", [], 0.0)
    target.write_text(source.replace(m.original, m.replacement))
    try:
        code, output = run_tests(copy, m.tests, timeout_s)
    finally:
        target.write_text(source)
    failures = failed_tests(output)
    note = ""
    if code is None and failures:  # a test failed, then tearing down (e.g. a Ray group) ran out the clock
        status, note = "caught", f"failed, then ran past --timeout-s={timeout_s:.0f} after the failure"
    elif code is None:
        status = "timeout"
    elif code == 0:
        status = "missed"
    elif code == 1:
        status = "caught"
    else:  # 2-5: interrupted, internal error, usage error, nothing collected
        status = f"pytest_exit_{code}"
        logger.warning("%s: pytest exit %d:\n%s", m.id, code, output[-2000:])
    return Result(m.id, m.path, m.bug, list(m.tests), status, failures, round(time.monotonic() - start, 1), note)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", default="HEAD", help="commit to mutate (default HEAD; uncommitted edits are not seen)")
    parser.add_argument("--only", nargs="*", default=None, help="mutation ids (or id prefixes such as 'actor/')")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="JSON report; with --only, the re-run ids replace theirs in an existing report")
    parser.add_argument("--timeout-s", type=float, default=600.0, help="per test run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    mutations = [m for m in MUTATIONS if not args.only or any(m.id.startswith(p) for p in args.only)]
    if args.list:
        for m in mutations:
            print(f"{m.id:45s} {m.path}: {m.bug}")
        return 0
    if not mutations:
        parser.error(f"--only {args.only} matches no mutation; see --list")

    started = time.time()
    with tempfile.TemporaryDirectory(prefix="verl_mutation_") as tmp:
        copy = Path(tmp) / "repo"
        copy.mkdir()
        commit = export_tree(args.ref, copy)
        check_imports_copy(copy)
        baseline: dict[tuple[str, ...], bool] = {}
        for tests in dict.fromkeys(m.tests for m in mutations):
            code, output = run_tests(copy, tests, args.timeout_s)
            baseline[tests] = code == 0
            logger.info("baseline %s: %s", " ".join(tests), "pass" if code == 0 else f"FAILS ({code})")
            if code != 0:
                logger.warning("%s", output[-3000:])
        results = []
        for m in mutations:
            if not baseline[m.tests]:
                results.append(Result(m.id, m.path, m.bug, list(m.tests), "baseline_failed", [], 0.0))
            else:
                results.append(check_mutation(copy, m, args.timeout_s))
            r = results[-1]
            logger.info("%-45s %-8s %5.0fs %s", r.id, r.status, r.seconds, " ".join(r.failed_tests[:2]))

    run = {"commit": commit, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
           "wall_s": round(time.time() - started)}
    reruns = []
    if args.only and args.out.is_file():  # a partial re-run replaces those ids in the last full report
        last = json.loads(args.out.read_text())
        previous = {r["id"]: r for r in last["results"]}
        previous.update({r.id: asdict(r) for r in results})
        order = [m.id for m in MUTATIONS]
        reruns = [*last.get("reruns", []), {**run, "ids": [r.id for r in results]}]
        run = {k: last[k] for k in ("commit", "date", "wall_s")}
        results = [Result(**previous[i]) for i in sorted(previous, key=lambda i: order.index(i) if i in order else 1e9)]
    caught = [r for r in results if r.status in ("caught", "timeout")]
    report = {
        **run,
        "reruns": reruns,
        "total": len(results),
        "caught": len(caught),
        "missed": [r.id for r in results if r.status == "missed"],
        "not_run": {r.id: r.status for r in results if r.status not in ("caught", "timeout", "missed")},
        "results": [asdict(r) for r in results],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{len(caught)}/{len(results)} mutations caught; missed: {report['missed'] or 'none'}; "
          f"not run: {report['not_run'] or 'none'} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
