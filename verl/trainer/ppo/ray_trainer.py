"""RayPPOTrainer: the single controller's training loop.

One step: draw prompts (uniformly, or by the curriculum) -> roll out n_samples episodes each ->
score -> dynamic sampling (repeat until train_batch_size groups survive) -> old log-probs ->
(with a critic: values) -> advantages (the estimator algorithm.adv_estimator names) -> critic
update -> actor update (not during critic warm-up) -> (every test_freq) validation (greedy, or
sampled at rollout.val_temperature) ->
(every save_freq) checkpoint; with trainer.time_limit_s, a validated and saved stop before the
limit. The driver never touches torch.distributed or a model: workers own
compute, the driver owns data order and bookkeeping.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import defaultdict
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from verl.protocol import DataProto
from verl.single_controller.ray.base import WorkerError, WorkerTimeoutError
from verl.trainer.config_validation import needs_critic, world_size
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.reward import RobRewardManager, success_by_task
from verl.trainer.run_checkpoints import RunCheckpoints
from verl.trainer.time_limit import SAVE, STEP, VALIDATE, TimeLimit
from verl.trainer.worker_groups import make_resource_pool, start_worker_group, stop_worker_group
from verl.trainer.validation import prompts_from_dataset, report_validation, validation_episodes, weights_label
from verl.utils.tracking import Tracking
from verl.workers import trajectory as tj

logger = logging.getLogger(__name__)

# rollout metrics that count events: summed over ranks and rollout rounds (the others are averaged)
ROLLOUT_COUNTS = ("rollout/faulted_episodes", "rollout/recovered_episodes", "rollout/env_worker_restarts",
                  "rollout/env_worker_restarts_faulted", "rollout/env_worker_restarts_recovered",
                  "rollout/env_worker_restarts_idle")



@contextmanager
def timed(name: str, timings: dict[str, float]) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def reduce_metrics(metrics: dict[str, list[float]]) -> dict[str, float]:
    """Mean over ranks and mini-batches (lists come from DataProto.concat of the workers' metrics)."""
    out = {}
    for key, values in metrics.items():
        flat = np.asarray(values, dtype=np.float64).ravel()
        if flat.size:
            out[key] = float(flat.mean())
    return out


def value_metrics(batch: DataProto) -> dict[str, float]:
    """The critic's values and how much of the return variance they explain, over valid model calls."""
    mask = tj.step_mask(batch.batch[tj.RESPONSE_MASK], batch.batch[tj.RESPONSES].shape[-1]).bool()
    values, returns = batch.batch[tj.VALUES][mask], batch.batch[tj.STEP_RETURNS][mask]
    if values.numel() == 0:
        return {}
    explained = 1.0 - (returns - values).var(unbiased=False) / returns.var(unbiased=False).clamp(min=1e-8)
    return {**stats("critic/values", values), "critic/vf_explained_var": explained.item()}


def stats(prefix: str, values: torch.Tensor) -> dict[str, float]:
    values = values.float()
    if values.numel() == 0:
        return {}
    return {f"{prefix}/mean": values.mean().item(), f"{prefix}/max": values.max().item(), f"{prefix}/min": values.min().item()}


class RayPPOTrainer:
    def __init__(self, config: DictConfig):
        self.config = config
        self.global_steps = 0
        self.n_workers = world_size(config)
        self.reward_fn = RobRewardManager(config.verifier.reward_coef)
        self.checkpoints = RunCheckpoints(config.trainer.default_local_dir, config.trainer.max_actor_ckpt_to_keep,
                                          world_size=self.n_workers, critic=needs_critic(config))
        self._build_data()
        total = self._total_training_steps()
        OmegaConf.set_struct(config, False)
        config.actor_rollout_ref.actor.optim.total_training_steps = total
        config.critic.optim.total_training_steps = total
        self.total_training_steps = total
        self.estimator = core_algos.get_adv_estimator(config.algorithm.adv_estimator)
        self.use_critic = needs_critic(config)
        self.actor_wg = None
        self.critic_wg = None
        self.resource_pools: list = []
        self.worker_restarts = 0
        self._initial_sampler_state = self.sampler.state_dict()
        self.time_limit = TimeLimit(config.trainer.time_limit_s)  # counts from here, before Ray starts
        self.progress: Optional[tqdm] = None
        self.tracking: Optional[Tracking] = None
        # what validation evaluates: these weights while global_steps == weights_step, else the trained policy
        self.weights, self.weights_step = str(config.actor_rollout_ref.model.path), 0
        self.checkpoints.check_not_overwriting(config.trainer.resume_mode, config.trainer.val_only)
        self.checkpoints.check_output_dir(config.actor_rollout_ref.model.path,
                                          lora=config.actor_rollout_ref.model.lora_rank > 0,
                                          will_save=not config.trainer.val_only)

    # ------------------------------------------------------------------------------ data
    def _build_data(self) -> None:
        from verl.utils.dataset.rob_dataset import RobDataset
        from verl.utils.dataset.sampler import StatefulSampler

        d = self.config.data
        split_kwargs = dict(
            task_suite_name=d.task_suite_name, num_trials_per_task=d.num_trials_per_task,
            num_heldout_trials=d.held_out_trials_per_task if d.val_split == "held_out" else 0,
            robotwin2_seeds_dir=self._robotwin_seeds_dir(),
            num_tasks=self.config.env.reach.num_targets if d.task_suite_name == "reach" else None,
            task_ids=None if d.task_ids is None else [int(t) for t in d.task_ids],
        )
        self.train_dataset = RobDataset(split="train", **split_kwargs)
        self.val_dataset = RobDataset(split="val", **split_kwargs)
        tasks = [int(self.train_dataset[i][tj.TASK_ID]) for i in range(len(self.train_dataset))]
        if d.curriculum.enable:
            from verl.utils.dataset.curriculum import CurriculumSampler

            self.sampler = CurriculumSampler(tasks, temperature=d.curriculum.temperature, ema=d.curriculum.ema,
                                             seed=self.config.trainer.seed, weighting=d.curriculum.weighting,
                                             n_samples=d.n_samples)
        elif d.task_balanced:
            from verl.utils.dataset.task_balanced import TaskBalancedSampler

            self.sampler = TaskBalancedSampler(tasks, seed=self.config.trainer.seed)
        else:
            self.sampler = StatefulSampler(len(self.train_dataset), shuffle=d.shuffle, seed=self.config.trainer.seed)

    def _robotwin_seeds_dir(self) -> Optional[str]:
        """RoboTwin suites: data.robotwin_seeds_dir, else <RoboTwin checkout>/seeds (the checkout the
        env workers use: env.robotwin_path, $ROBOTWIN2_PATH or <project>/envs/robotwin2)."""
        from verl.envs.robotwin2_env import default_seeds_dir
        from verl.envs.suites import Benchmark, benchmark_of

        d = self.config.data
        if benchmark_of(d.task_suite_name) is not Benchmark.ROBOTWIN2:
            return None
        return str(d.robotwin_seeds_dir or default_seeds_dir(self.config.env.robotwin_path))

    def _total_training_steps(self) -> int:
        if self.config.trainer.total_training_steps:
            return int(self.config.trainer.total_training_steps)
        per_epoch = max(1, len(self.train_dataset) // self.config.data.train_batch_size)
        return per_epoch * self.config.trainer.total_epochs

    # ------------------------------------------------------------------------------ workers
    def init_workers(self) -> None:
        """The actor group; with a critic also the critic group, by default on the same bundles."""
        from verl.workers.fsdp_workers import ActorRolloutRefWorker, CriticWorker

        colocate = self.use_critic and self.config.critic.colocate
        pool = make_resource_pool(self.config, colocated_groups=2 if colocate else 1)
        self.resource_pools = [pool]
        _, self.actor_wg = start_worker_group(self.config, ActorRolloutRefWorker, "actor_rollout", pool)
        if self.use_critic:
            critic_pool = pool if colocate else make_resource_pool(self.config)
            if critic_pool is not pool:
                self.resource_pools.append(critic_pool)
            _, self.critic_wg = start_worker_group(self.config, CriticWorker, "critic", critic_pool)
        self.actor_wg.init_model()
        if self.critic_wg is not None:
            self.critic_wg.init_model()

    def shutdown(self) -> None:
        groups, pools = [self.actor_wg, self.critic_wg], self.resource_pools
        self.actor_wg, self.critic_wg, self.resource_pools = None, None, []
        with ExitStack() as stack:  # every group and pool is stopped even if one of them fails to
            for pool in pools:
                stack.callback(stop_worker_group, None, pool)
            for group in groups:  # callbacks run last-in first-out: the groups before the pools
                stack.callback(stop_worker_group, group, None)

    # ------------------------------------------------------------------------------ loop
    def fit(self) -> None:
        t = self.config.trainer
        resuming = not t.val_only and self.checkpoints.resume_dir(t.resume_mode, t.resume_from_path) is not None
        tracking = self.tracking = Tracking(
            t.project_name, t.experiment_name, [*t.logger, "file"],
            config=OmegaConf.to_container(self.config, resolve=True), wandb_mode=t.wandb_mode,
            log_dir=t.default_local_dir, resume=resuming,  # a resumed run continues its W&B run
        )
        try:
            if t.val_only:
                self._resume_for_val_only()
                tracking.log(self._validate(), step=self.global_steps)
                return
            self._maybe_resume()
            if t.val_before_train and self.global_steps == 0:
                with self.time_limit.measure(VALIDATE):
                    tracking.log(self._validate(), step=0)
            self.progress = tqdm(total=self.total_training_steps, initial=self.global_steps, desc="training",
                                 unit="step", dynamic_ncols=True, file=sys.stderr)
            while self.global_steps < self.total_training_steps:
                self.global_steps += 1
                try:
                    with self.time_limit.measure(STEP):
                        metrics = self._train_step()
                    validate_due = t.test_freq > 0 and self.global_steps % t.test_freq == 0
                    save_due = t.save_freq > 0 and self.global_steps % t.save_freq == 0
                    out_of_time = self.global_steps < self.total_training_steps and not self.time_limit.next_step_fits(
                        due_now=[VALIDATE] * validate_due + [SAVE] * save_due,
                        at_end=[VALIDATE] * (t.test_freq > 0) + [SAVE])
                    last = out_of_time or self.global_steps == self.total_training_steps
                    if validate_due or (last and t.test_freq > 0):
                        with self.time_limit.measure(VALIDATE):
                            metrics.update(self._validate())
                    if save_due or last:
                        with self.time_limit.measure(SAVE):
                            self._save_checkpoint()
                except (WorkerError, WorkerTimeoutError) as error:
                    self._restart_workers(error)  # re-raises once trainer.max_worker_restarts are used up
                    self.progress.n = self.global_steps
                    continue
                if out_of_time:
                    metrics["trainer/stopped_by_time_limit"] = 1.0
                tracking.log(metrics, step=self.global_steps)
                self.progress.update(1)
                self.progress.set_postfix(success=f"{metrics['train_verify_score/all']:.2f}", refresh=False)
                if out_of_time:
                    self.time_limit.announce_stop(self.global_steps, self.total_training_steps, self.progress)
                    break
        finally:
            if self.progress is not None:
                self.progress.close()
            tracking.finish()

    def _phase(self, text: str) -> None:
        """Show what the current step is doing on the console's progress bar."""
        if self.progress is not None:
            self.progress.set_description(f"step {self.global_steps}: {text}")

    def _train_step(self) -> dict[str, float]:
        timings: dict[str, float] = {}
        metrics: dict[str, float] = {}
        with timed("step", timings):
            batch, sample_metrics = self._collect_batch(timings)
            metrics.update(sample_metrics)
            if len(batch) == 0:
                logger.warning("step %d: no group passed the filter in %d rounds; skipping the update",
                               self.global_steps, self.config.data.max_sample_rounds)
            else:
                metrics.update(self._update(batch, timings))
        metrics.update({f"timing/{k}": v for k, v in timings.items()})
        metrics["train/epoch"] = float(self.sampler.epoch)
        return metrics

    def _collect_batch(self, timings: dict[str, float]) -> tuple[DataProto, dict[str, float]]:
        """Dynamic sampling: roll out prompt batches until train_batch_size groups pass the filter."""
        d = self.config.data
        kept: list[DataProto] = []
        kept_groups, rounds = 0, 0
        outcomes: list[DataProto] = []  # success, suite and task of every unfaulted episode, kept or not
        rollout_metrics: dict[str, list[float]] = defaultdict(list)
        while kept_groups < d.train_batch_size and rounds < d.max_sample_rounds:
            indices = self.sampler.take(d.train_batch_size * d.oversample_factor)
            prompts = prompts_from_dataset(self.train_dataset, indices, f"s{self.global_steps}r{rounds}")
            prompts = prompts.repeat(d.n_samples, interleave=True)
            prompts.meta_info.update(global_step=self.global_steps,
                                     greedy=not self.config.actor_rollout_ref.rollout.do_sample,
                                     seed=self.config.trainer.seed * 100003 + self.global_steps * 101 + rounds)
            self._phase(f"rollout round {rounds + 1} ({len(prompts)} episodes)")
            with timed("gen", timings):
                gen = self.actor_wg.generate_sequences(prompts)
            for k, v in gen.meta_info.pop("metrics", {}).items():
                rollout_metrics[k].extend(np.ravel(v).tolist())
            gen.meta_info = {}  # per-round seeds must not block concatenating the rounds
            with timed("verify", timings):
                success = gen.batch[tj.COMPLETE].numpy().astype(np.float64)
                ok = ~gen.batch[tj.FAULTED].numpy()  # an env fault's episode is neither success nor failure
                outcomes.append(gen[np.nonzero(ok)[0]].select(
                    batch_keys=[tj.COMPLETE], non_tensor_batch_keys=[tj.TASK_ID, tj.TASK_SUITE_NAME]))
                if d.filter_accuracy:
                    keep, _ = core_algos.filter_groups_by_accuracy(
                        success, gen.non_tensor_batch[tj.UID], d.accuracy_lower_bound, d.accuracy_upper_bound, valid=ok)
                    gen = gen[np.nonzero(keep)[0]]
            kept.append(gen)
            kept_groups += len(gen) // d.n_samples
            rounds += 1
        batch = DataProto.concat(kept) if kept else DataProto()
        rows = min(len(batch), d.train_batch_size * d.n_samples)
        rows -= rows % self.n_workers  # equal shares: no padded duplicates in the update
        batch = batch[:rows]
        outcomes = DataProto.concat(outcomes)
        all_success = outcomes.batch[tj.COMPLETE].float()
        # the curriculum's success estimates learn from every unfaulted episode, kept by the filter or not
        self.sampler.observe(outcomes.non_tensor_batch[tj.TASK_ID], all_success.numpy())
        counts = {key: float(np.sum(rollout_metrics.pop(key, []))) for key in ROLLOUT_COUNTS}
        metrics = {
            "train_verify_score/all": all_success.mean().item() if all_success.numel() else 0.0,
            **{f"train_verify_score/{key}": rate for key, rate in success_by_task(outcomes).items()},
            "data/sample_rounds": float(rounds),
            "data/kept_groups": float(rows // d.n_samples),
            **reduce_metrics(rollout_metrics),
            **counts,  # every episode rolled out this step, kept by the filter or not
            **self.sampler.metrics(),
        }
        return batch, metrics

    def _update(self, batch: DataProto, timings: dict[str, float]) -> dict[str, float]:
        metrics: dict[str, float] = {}
        batch.meta_info["seed"] = self.config.trainer.seed * 7919 + self.global_steps
        reuse_rollout = self.config.actor_rollout_ref.actor.use_rollout_log_probs
        if reuse_rollout:  # the rollout ran the same weights: its log-probs are pi_old, no second forward
            batch.batch[tj.OLD_LOG_PROBS] = batch.batch[tj.ROLLOUT_LOG_PROBS]
            batch.batch[tj.ENTROPY] = batch.batch[tj.ROLLOUT_ENTROPY]
        else:  # the reference's recompute by the actor
            self._phase(f"old log-probs ({len(batch)} episodes)")
            with timed("old_log_prob", timings):
                batch = batch.union(self.actor_wg.compute_log_prob(batch))
        if self.critic_wg is not None:
            self._phase(f"values ({len(batch)} episodes)")
            with timed("values", timings):
                batch = batch.union(self.critic_wg.compute_values(batch))
        with timed("adv", timings):
            # an episode an env fault ended has no valid token: no reward, no baseline, no training
            batch.batch[tj.RESPONSE_MASK] = batch.batch[tj.RESPONSE_MASK] * (~batch.batch[tj.FAULTED]).float()[:, None]
            scores, verifier = self.reward_fn(batch)
            batch.batch[tj.TOKEN_LEVEL_SCORES] = scores
            batch.batch[tj.TOKEN_LEVEL_REWARDS] = scores  # kl_coef = 0: no in-reward KL penalty
            out = self.estimator.fn(core_algos.AdvantageInputs(
                token_level_rewards=scores, response_mask=batch.batch[tj.RESPONSE_MASK],
                index=batch.non_tensor_batch[tj.UID], tokens_per_step=batch.batch[tj.RESPONSES].shape[-1],
                values=batch.batch[tj.VALUES] if self.critic_wg is not None else None,
            ), self.config.algorithm)
            adv, ret = out.advantages, out.returns
            batch.batch[tj.ADVANTAGES], batch.batch[tj.RETURNS] = adv, ret
            if out.step_returns is not None:
                batch.batch[tj.STEP_RETURNS] = out.step_returns
        if self.critic_wg is not None:
            self._phase("critic update")
            with timed("update_critic", timings):
                critic_out = self.critic_wg.update_critic(batch)
            metrics.update(reduce_metrics(critic_out.meta_info.get("metrics", {})))
            metrics.update(value_metrics(batch))
        mask = batch.batch[tj.RESPONSE_MASK].bool()
        if self.critic_wg is not None and self.global_steps <= self.config.critic.warmup_steps:
            metrics["actor/critic_warmup"] = 1.0  # VLA-RL's value_init_steps: the actor stays as it is
        else:
            self._phase("actor update")
            with timed("update_actor", timings):
                actor_out = self.actor_wg.update_actor(batch)
            metrics.update(reduce_metrics(actor_out.meta_info.get("metrics", {})))
            # the reference's entropy dashboards: the policy's entropy on this batch before and after the update
            if self.config.trainer.entropy_after_update:
                with timed("entropy_after", timings):
                    after = self.actor_wg.compute_log_prob(batch.select(
                        batch_keys=[tj.IMAGES, tj.RESPONSES, tj.NUM_STEPS] + ([tj.PROPRIO] if tj.PROPRIO in batch.batch else []),
                        non_tensor_batch_keys=[tj.PROMPT_IDS]))
                if mask.any():  # not when every episode of the batch faulted before acting
                    metrics["actor_after/entropy_loss_eval"] = after.batch[tj.ENTROPY][mask].mean().item()
        if mask.any():
            metrics["actor_before/entropy_loss_eval"] = batch.batch[tj.ENTROPY][mask].mean().item()
        seq_score = scores.sum(-1)
        metrics.update({
            "train_reward/verifier": verifier["verifier"],
            **stats("critic/score", seq_score), **stats("critic/rewards", seq_score),
            **stats("critic/advantages", adv[mask]), **stats("critic/returns", ret[mask]),
            "rollout/finish_step_mean": batch.batch[tj.FINISH_STEP].float().mean().item(),
            "rollout/faulted_episodes_kept": batch.batch[tj.FAULTED].float().sum().item(),
        })
        if not reuse_rollout:
            log_ratio = (batch.batch[tj.OLD_LOG_PROBS] - batch.batch[tj.ROLLOUT_LOG_PROBS])[mask]
            # the rollout's log-probs against the update's recompute of them (same weights): 0 up to the
            # kernels' batch-shape dependence; a large value means rollout and training disagree (bf16 / GPU
            # kernels), and that actor.use_rollout_log_probs=True would train on the wrong ratio
            metrics["rollout/old_vs_rollout_logprob_abs_diff"] = log_ratio.abs().mean().item() if log_ratio.numel() else 0.0
            metrics["rollout/old_vs_rollout_logprob_abs_diff_max"] = log_ratio.abs().max().item() if log_ratio.numel() else 0.0
        return metrics

    def _validate(self) -> dict[str, float]:
        """Episodes over the whole validation set (greedy unless rollout.val_temperature), in rounds
        of val_batch_size prompts; the report (console table, validation/step_<N>/ files, videos to
        W&B / TensorBoard); its metrics."""
        timings: dict[str, float] = {}
        r, run_dir = self.config.actor_rollout_ref.rollout, self.config.trainer.default_local_dir
        self._phase("validation")
        with timed("testing", timings):
            episodes = validation_episodes(self.actor_wg, self.val_dataset, self.config.data.val_batch_size,
                                           seed=self.config.trainer.seed, step=self.global_steps,
                                           max_videos_per_task=r.max_videos_per_task, temperature=r.val_temperature)
        weights = weights_label(self.weights, self.weights_step, self.global_steps, "training")
        metrics = report_validation(episodes, self.global_steps, weights, run_dir, r.save_video, self.tracking,
                                    temperature=r.val_temperature)
        return {**metrics, "timing/testing": timings["testing"]}

    # ------------------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self) -> None:
        self.checkpoints.save(self.global_steps, self._write_worker_checkpoints,
                              {"sampler": self.sampler.state_dict()})

    def _write_worker_checkpoints(self, directory: str) -> None:
        self.actor_wg.save_checkpoint(directory)
        if self.critic_wg is not None:
            self.critic_wg.save_checkpoint(directory)

    def _restart_workers(self, error: Exception) -> None:
        """After a worker failure (the group is stopped already): a new worker group continues from
        this run's latest checkpoint (or from the start), as elastic launchers do; up to
        trainer.max_worker_restarts times, then the error ends the run."""
        limit = self.config.trainer.max_worker_restarts
        if self.worker_restarts >= limit:
            raise error
        self.worker_restarts += 1
        logger.error("step %d: %s\nrestarting the worker group from the latest checkpoint (restart %d of %d)",
                     self.global_steps, error, self.worker_restarts, limit)
        self.shutdown()
        self.init_workers()
        directory = self.checkpoints.resume_dir("auto", None)
        if directory is None:  # nothing saved yet: from where this run began
            self.global_steps = 0
            self.sampler.load_state_dict(self._initial_sampler_state)
            self._maybe_resume()
            return
        self._resume_from(directory)

    def _resume_for_val_only(self) -> None:
        """val_only evaluates actor_rollout_ref.model.path, unless the user names a run's checkpoint
        (trainer.resume_mode=resume_path with trainer.resume_from_path): a run directory's latest
        checkpoint is never picked up silently."""
        t = self.config.trainer
        if t.resume_mode == "resume_path":
            self._maybe_resume()
        elif self.checkpoints.resume_dir(t.resume_mode, t.resume_from_path) is not None:
            logger.info("val_only: evaluating actor_rollout_ref.model.path=%s, not the latest checkpoint of %s "
                        "(to evaluate a checkpoint of this run: trainer.resume_mode=resume_path "
                        "trainer.resume_from_path=<its global_step_N>)", self.weights, self.checkpoints.root)
        logger.info("val_only: evaluating %s", self.weights)

    def _maybe_resume(self) -> None:
        t = self.config.trainer
        directory = self.checkpoints.resume_dir(t.resume_mode, t.resume_from_path)
        if directory is None:
            return
        self._resume_from(directory)

    def _resume_from(self, directory: Path) -> None:
        state = self.checkpoints.trainer_state(directory)
        self.actor_wg.load_checkpoint(str(directory))
        if self.critic_wg is not None:
            self.critic_wg.load_checkpoint(str(directory))
        self.global_steps = int(state["global_steps"])
        self.sampler.load_state_dict(state["sampler"])
        self.weights, self.weights_step = str(directory), self.global_steps
        logger.info("resumed from %s at step %d", directory, self.global_steps)
