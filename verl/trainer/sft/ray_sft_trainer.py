"""RaySFTTrainer: the single controller's supervised fine-tuning loop.

Driver: load demos -> split train / held-out demos per task -> statistics -> samples (each demo
step through the rollout's observation pipeline) -> per step, the next `batch_size` samples
(random crops drawn from (seed, step), so a resumed run crops exactly as an uninterrupted one)
-> workers' `train_step` -> every test_freq steps held-out loss / token accuracy -> every
eval.freq steps closed-loop episodes (greedy unless eval.temperature) on held-out init states -> checkpoints that
`main_ppo` loads as they are.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Optional

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from verl.trainer.config_validation import ConfigError, world_size
from verl.trainer.ppo.ray_trainer import reduce_metrics
from verl.trainer.run_checkpoints import RunCheckpoints
from verl.trainer.time_limit import EVALUATE, SAVE, STEP, VALIDATE, TimeLimit
from verl.trainer.worker_groups import start_worker_group, stop_worker_group
from verl.trainer.validation import report_validation, validation_episodes, weights_label
from verl.utils.dataset import sft_dataset as sd
from verl.utils.tracking import Tracking

logger = logging.getLogger(__name__)


class RaySFTTrainer:
    def __init__(self, config: DictConfig):
        self.config = config
        self.global_steps = 0
        self.n_workers = world_size(config)
        # world_size: every save is read back for each rank's state before it becomes latest (as in RL)
        self.checkpoints = RunCheckpoints(config.trainer.default_local_dir, config.trainer.max_actor_ckpt_to_keep,
                                          world_size=self.n_workers)
        self.checkpoints.check_not_overwriting(config.trainer.resume_mode, val_only=False)
        self.checkpoints.check_output_dir(config.actor_rollout_ref.model.path,
                                          lora=config.actor_rollout_ref.model.lora_rank > 0,
                                          will_save=True)  # a final checkpoint is always written
        self._build_data()
        total = self._total_training_steps()
        OmegaConf.set_struct(config, False)
        config.actor_rollout_ref.actor.optim.total_training_steps = total
        self.total_training_steps = total
        self.wg = None
        self.resource_pool = None
        self.progress: Optional[tqdm] = None
        self.tracking: Optional[Tracking] = None  # set by fit(); evaluation videos go to it
        self._sampler_state: dict[str, Any] = self.sampler.state_dict()  # as of the last trained step
        self._prefetch: Optional[ThreadPoolExecutor] = None
        self.time_limit = TimeLimit(config.trainer.time_limit_s)  # counts from here, before Ray starts

    # ------------------------------------------------------------------------------ data
    def _build_data(self) -> None:
        """Demos -> train / val samples and the statistics the checkpoint will carry (all before Ray)."""
        from verl.models.openvla_oft import OpenVLAProcessor
        from verl.utils.dataset.rob_dataset import RobDataset
        from verl.utils.dataset.sampler import StatefulSampler

        cfg, d = self.config, self.config.data
        files = [d.train_files] if isinstance(d.train_files, str) else list(d.train_files)
        start = time.perf_counter()
        demos = sd.load_demos(files, d.format, cameras=list(d.cameras))
        train, val = sd.split_demos(demos, d.demos_per_task, d.val_demos_per_task)
        self.eval_dataset = RobDataset(
            task_suite_name=d.task_suite_name, num_trials_per_task=cfg.eval.num_trials_per_task, split="val",
            num_heldout_trials=cfg.eval.held_out_trials_per_task,
            task_ids=None if cfg.eval.task_ids is None else list(cfg.eval.task_ids))
        self._check_no_leak(train + val)
        action_dim = cfg.actor_rollout_ref.model.action_token_len
        if train[0].actions.shape[1] != action_dim:
            raise ConfigError(f"actor_rollout_ref.model.action_token_len={action_dim} but the demos' actions have "
                              f"{train[0].actions.shape[1]} dims ({train[0].source})")
        entry = sd.dataset_statistics(train, benchmark="libero")
        self.norm_stats = {cfg.actor_rollout_ref.rollout.unnorm_key: entry}
        tokenize = OpenVLAProcessor.from_pretrained(cfg.actor_rollout_ref.model.path).prompt_token_ids
        common = dict(benchmark="libero", cameras=list(d.cameras), action_chunk=cfg.actor_rollout_ref.model.action_chunks_len,
                      action_stats=entry["action"], tokenize=tokenize)
        self.train_data = sd.DemoFrameDataset(train, **common)
        self.val_data = sd.DemoFrameDataset(val, **common) if val else None
        self.sampler = StatefulSampler(len(self.train_data), shuffle=d.shuffle, seed=cfg.trainer.seed)
        logger.info("SFT data: %d train demos (%d samples), %d held-out demos (%d samples), %d tasks; built in %.1f s",
                    len(train), len(self.train_data), len(val), 0 if self.val_data is None else len(self.val_data),
                    len(self.train_data.instructions), time.perf_counter() - start)

    def _check_no_leak(self, demos: list) -> None:
        """A demo recorded from an evaluation init state would make the evaluation meaningless."""
        held_out = {(int(self.eval_dataset[i]["task_id"]), int(self.eval_dataset[i]["trial_id"]))
                    for i in range(len(self.eval_dataset))}
        suite = self.config.data.task_suite_name
        for ep in demos:
            if ep.task_suite_name not in (None, suite) or ep.task_id is None or ep.init_state_id is None:
                continue
            if (ep.task_id, ep.init_state_id) in held_out:
                raise ConfigError(
                    f"eval.held_out_trials_per_task={self.config.eval.held_out_trials_per_task}: demo {ep.source} was "
                    f"recorded from init state {ep.init_state_id} of task {ep.task_id}, which the closed-loop "
                    "evaluation uses; collect demos on other init states or hold out fewer")

    def _total_training_steps(self) -> int:
        if self.config.trainer.total_training_steps:
            return int(self.config.trainer.total_training_steps)
        per_epoch = max(1, len(self.train_data) // self.config.data.batch_size)
        return per_epoch * self.config.trainer.total_epochs

    # ------------------------------------------------------------------------------ workers
    def init_workers(self) -> None:
        from verl.workers.sft_worker import SFTWorker

        self.resource_pool, self.wg = start_worker_group(self.config, SFTWorker, "sft")
        self.wg.init_model(norm_stats=self.norm_stats)

    def shutdown(self) -> None:
        group, pool, self.wg, self.resource_pool = self.wg, self.resource_pool, None, None
        stop_worker_group(group, pool)

    # ------------------------------------------------------------------------------ loop
    def fit(self) -> None:
        t = self.config.trainer
        tracking = self.tracking = Tracking(t.project_name, t.experiment_name, [*t.logger, "file"],
                            config=OmegaConf.to_container(self.config, resolve=True), wandb_mode=t.wandb_mode,
                            log_dir=t.default_local_dir)
        try:
            self._maybe_resume()
            if self.config.eval.before_train and self.global_steps == 0:
                with self.time_limit.measure(EVALUATE):
                    tracking.log(self._evaluate_closed_loop(), step=0)
            # the phases a step may be followed by: (validation loss, closed-loop evaluation) and how often
            phases = [(VALIDATE, t.test_freq), (EVALUATE, self.config.eval.freq)]
            self.progress = tqdm(total=self.total_training_steps, initial=self.global_steps, desc="sft",
                                 unit="step", dynamic_ncols=True, file=sys.stderr)
            window: dict[str, list[float]] = defaultdict(list)
            prefetch = self._prefetch = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sft-batches")
            pending = self._prepare_batch(self.global_steps + 1, prefetch)
            while self.global_steps < self.total_training_steps:
                self.global_steps += 1
                step_start = time.perf_counter()
                with self.time_limit.measure(STEP):
                    batch_future, self._sampler_state = pending
                    batch = batch_future.result()
                    window["timing/batch_wait"].append(time.perf_counter() - step_start)  # > 0: crops lag the update
                    if self.global_steps < self.total_training_steps:  # the next batch is cropped while this one trains
                        pending = self._prepare_batch(self.global_steps + 1, prefetch)
                    for key, values in self.wg.train_step(batch).meta_info["metrics"].items():
                        window[key].extend(np.ravel(values).tolist())
                window["timing/step"].append(time.perf_counter() - step_start)
                last = self.global_steps == self.total_training_steps
                out_of_time = not last and not self.time_limit.next_step_fits(
                    due_now=[phase for phase, freq in [*phases, (SAVE, t.save_freq)] if self._due(freq, last=False)],
                    at_end=[phase for phase, freq in phases if freq > 0] + [SAVE])
                last = last or out_of_time
                metrics: dict[str, float] = {}
                if self._due(t.test_freq, last):
                    with self.time_limit.measure(VALIDATE):
                        metrics.update(self._validation_loss())
                if self._due(self.config.eval.freq, last):
                    with self.time_limit.measure(EVALUATE):
                        metrics.update(self._evaluate_closed_loop())
                if self._due(t.save_freq, last) or last:
                    with self.time_limit.measure(SAVE):
                        self._save_checkpoint()
                if out_of_time:
                    metrics["trainer/stopped_by_time_limit"] = 1.0
                if metrics or self.global_steps % t.log_freq == 0 or last:
                    metrics.update(reduce_metrics(window))
                    metrics["train/epoch"] = float(self._sampler_state["epoch"])
                    tracking.log(metrics, step=self.global_steps)
                    window.clear()
                self.progress.update(1)
                if "sft/loss" in metrics:
                    self.progress.set_postfix(loss=f"{metrics['sft/loss']:.3f}", refresh=False)
                if out_of_time:
                    self.time_limit.announce_stop(self.global_steps, self.total_training_steps, self.progress)
                    break
        finally:
            if self._prefetch is not None:
                self._prefetch.shutdown(wait=False, cancel_futures=True)
            if self.progress is not None:
                self.progress.close()
            tracking.finish()

    def _due(self, freq: int, last: bool) -> bool:
        return freq > 0 and (self.global_steps % freq == 0 or last)

    def _prepare_batch(self, step: int, pool: ThreadPoolExecutor) -> tuple[Future, dict[str, Any]]:
        """Step `step`'s batch, built in `pool`; and the sampler state after taking it (what a
        checkpoint written after that step must hold, whatever was prefetched since)."""
        indices = self.sampler.take(self.config.data.batch_size)
        rng = np.random.default_rng([self.config.trainer.seed, step]) if self.config.data.image_aug else None
        return pool.submit(self.train_data.batch, indices, rng), self.sampler.state_dict()

    def _validation_loss(self) -> dict[str, float]:
        """Teacher-forced loss and accuracies on every sample of the held-out demos (centred crop)."""
        if self.val_data is None:
            return {}
        if self.progress is not None:
            self.progress.set_description(f"step {self.global_steps}: validation loss")
        usable = len(self.val_data) - len(self.val_data) % self.n_workers  # equal shares: no padded duplicates
        sums: dict[str, float] = defaultdict(float)
        size = self.config.data.val_batch_size
        for start in range(0, usable, size):
            out = self.wg.eval_step(self.val_data.batch(range(start, min(start + size, usable))))
            for key, values in out.meta_info["metrics"].items():
                sums[key.split("/", 1)[1]] += float(np.sum(values))
        count = max(sums.pop("count", 0.0), 1.0)
        if self.progress is not None:
            self.progress.set_description("sft")
        return {f"val/{name}": value / count for name, value in sums.items()}

    def _evaluate_closed_loop(self) -> dict[str, float]:
        if self.progress is not None:
            self.progress.set_description(f"step {self.global_steps}: closed-loop evaluation")
        start = time.perf_counter()
        episodes = validation_episodes(self.wg, self.eval_dataset, self.config.eval.batch_size,
                                       seed=self.config.trainer.seed, step=self.global_steps,
                                       temperature=self.config.eval.temperature)
        weights = weights_label(str(self.config.actor_rollout_ref.model.path), 0, self.global_steps, "SFT")
        metrics = report_validation(episodes, self.global_steps, weights, self.config.trainer.default_local_dir,
                                    self.config.actor_rollout_ref.rollout.save_video, self.tracking,
                                    temperature=self.config.eval.temperature)
        metrics["timing/testing"] = time.perf_counter() - start
        if self.progress is not None:
            self.progress.set_description("sft")
        return metrics

    # ------------------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self) -> None:
        self.checkpoints.save(self.global_steps, self.wg.save_checkpoint, {"sampler": self._sampler_state})

    def _maybe_resume(self) -> None:
        t = self.config.trainer
        directory = self.checkpoints.resume_dir(t.resume_mode, t.resume_from_path)
        if directory is None:
            return
        state = self.checkpoints.trainer_state(directory)
        self.wg.load_checkpoint(str(directory))
        self.global_steps = int(state["global_steps"])
        self.sampler.load_state_dict(state["sampler"])
        logger.info("resumed from %s at step %d", directory, self.global_steps)
