"""ActorRolloutRefWorker: one process per GPU (or CPU slot) holding the FSDP2-sharded policy,
its AdamW state, and the env pool its rollouts run against.

The driver calls the registered methods below through a RayWorkerGroup; each is a thin shell
over the actor (verl/workers/actor/dp_actor.py) and the rollout engine
(verl/workers/rollout/env_rollout.py).
"""

from __future__ import annotations

import logging
import math
import os
from contextlib import contextmanager
from typing import Any, Iterator, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from verl.protocol import DataProto
from verl.single_controller.base.decorator import Dispatch, register
from verl.single_controller.base.worker import Worker
from verl.utils import fsdp_utils
from verl.utils.cpu_affinity import available_cores
from verl.utils.device import get_device_name
from verl.utils.distributed import all_ranks_succeed, init_process_group_from_env
from verl.workers import trajectory as tj
from verl.workers.actor.dp_actor import ActorSettings, DataParallelPPOActor
from verl.workers.policy_inputs import PolicyInputBuilder
from verl.workers.rollout.env_rollout import EnvRollout, RolloutSettings

logger = logging.getLogger(__name__)


def default_max_env_steps(task_suite_name: str) -> int:
    """The reference's per-benchmark episode budgets (LIBERO 512, RoboTwin per task)."""
    from verl.envs import suites

    benchmark = suites.benchmark_of(task_suite_name)
    if benchmark == suites.Benchmark.LIBERO:
        return suites.LIBERO_MAX_EPISODE_STEPS
    if benchmark == suites.Benchmark.ROBOTWIN2:
        return suites.ROBOTWIN2_MAX_STEPS[suites.robotwin2_task_name(task_suite_name)]
    raise AssertionError("reach episodes are budgeted by env.reach.max_episode_steps")


def memory_metrics(device: torch.device) -> dict[str, list[float]]:
    """This worker's resident memory and, on GPU, its peak allocated device memory (GB)."""
    import psutil

    out = {"perf/cpu_rss_gb": [psutil.Process().memory_info().rss / 1e9]}
    if device.type == "cuda":
        out["perf/max_memory_allocated_gb"] = [torch.cuda.max_memory_allocated(device) / 1e9]
        out["perf/max_memory_reserved_gb"] = [torch.cuda.max_memory_reserved(device) / 1e9]
    return out


def build_lr_scheduler(optimizer: torch.optim.Optimizer, optim_cfg: DictConfig, total_steps: int):
    """Linear warm-up, then constant or cosine decay to min_lr_ratio; steps once per training step."""
    warmup = optim_cfg.lr_warmup_steps
    if warmup < 0:
        warmup = int(optim_cfg.lr_warmup_steps_ratio * max(total_steps, 0))
    style, min_ratio = optim_cfg.warmup_style, optim_cfg.min_lr_ratio

    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if style == "constant" or total_steps <= warmup:
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def actor_settings(cfg: DictConfig, world_size: int, pad_token_id: int, reshard_after_forward: bool) -> ActorSettings:
    """One rank's actor settings: the config's mini- and micro-batch sizes count trajectories over all ranks."""
    actor_cfg, rollout_cfg = cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout
    return ActorSettings(
        temperature=rollout_cfg.temperature,
        ppo_mini_batch_size=actor_cfg.ppo_mini_batch_size // world_size,
        ppo_micro_batch_size=max(1, actor_cfg.ppo_micro_batch_size // world_size),
        steps_per_forward=actor_cfg.traj_mini_batch_size,
        log_prob_micro_batch_size=rollout_cfg.log_prob_micro_batch_size,
        ppo_epochs=actor_cfg.ppo_epochs, shuffle=actor_cfg.shuffle, grad_clip=actor_cfg.grad_clip,
        clip_ratio_low=actor_cfg.clip_ratio_low, clip_ratio_high=actor_cfg.clip_ratio_high,
        clip_ratio_c=actor_cfg.clip_ratio_c, loss_agg_mode=actor_cfg.loss_agg_mode,
        entropy_coeff=actor_cfg.entropy_coeff, pad_token_id=pad_token_id,
        use_proprio=rollout_cfg.use_proprio, reshard_after_forward=reshard_after_forward,
    )


def wants_optimizer_offload(fsdp_config: DictConfig, device: torch.device) -> bool:
    """actor.fsdp_config.optimizer_offload as documented: only on GPU and without param_offload
    (with it, FSDP2 keeps parameters, gradients and so the AdamW state on the CPU already)."""
    return bool(fsdp_config.optimizer_offload) and device.type == "cuda" and not fsdp_config.param_offload


def param_dtype(cfg: DictConfig, device: torch.device) -> torch.dtype:
    """actor_rollout_ref.model.dtype (shared by the critic): auto = bf16 on GPU, fp32 on CPU."""
    dtype = cfg.actor_rollout_ref.model.dtype
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]


def join_process_group(device: torch.device, seed: int) -> torch.device:
    """Join this worker group's process group (RANK, MASTER_* from the env); the device to use."""
    init_process_group_from_env()
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        device = torch.device("cuda", torch.cuda.current_device())
    torch.manual_seed(seed)
    return device


def load_vla(cfg: DictConfig, path: str, rank: int):
    """The OpenVLA(-OFT) checkpoint at `path` with the run's shape settings: rank 0 reads the
    weights, the other ranks build on the meta device (they get rank 0's weights in `shard_model`)."""
    from verl.models.openvla_oft import load_openvla_checkpoint

    m, r = cfg.actor_rollout_ref.model, cfg.actor_rollout_ref.rollout
    return load_openvla_checkpoint(
        path, meta_device=rank != 0, action_dim=m.action_token_len, action_chunk=m.action_chunks_len,
        parallel_decoding=m.vla == "openvla-oft", use_proprio=r.use_proprio,
        num_images_in_input=cfg.actor_rollout_ref.actor.num_images_in_input,
        attn_implementation=None if m.attn_implementation == "auto" else m.attn_implementation,
    )


def shard_model(model: torch.nn.Module, fsdp: DictConfig, device: torch.device, dtype: torch.dtype, rank: int):
    """FSDP2-shard `model` (rank 0 holds the real weights, the others meta tensors): every rank
    allocates its shards, then rank 0's full weights and buffers are scattered into them."""
    full_state = model.state_dict() if rank == 0 else {}
    buffers = {n: b for n, b in model.named_buffers() if n not in full_state} if rank == 0 else None
    mesh = fsdp_utils.build_device_mesh(device.type)
    model = fsdp_utils.apply_fsdp2(model, mesh, param_dtype=dtype, param_offload=bool(fsdp.param_offload),
                                   reshard_after_forward=bool(fsdp.reshard_after_forward))
    model.to_empty(device="cpu" if fsdp.param_offload else device)
    fsdp_utils.load_full_state_dict(model, full_state)
    fsdp_utils.broadcast_buffers_from_rank0(model, buffers)
    return model


def build_optimizer(model: torch.nn.Module, optim: DictConfig):
    """AdamW over the trainable parameters and its LR schedule."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=optim.lr,
                                  betas=tuple(optim.betas), weight_decay=optim.weight_decay)
    return optimizer, build_lr_scheduler(optimizer, optim, int(optim.total_training_steps))


@contextmanager
def optimizer_state_on(optimizer: torch.optim.Optimizer, device: torch.device, offload: bool) -> Iterator[None]:
    """With `offload`: the AdamW state on `device` for the body, on the CPU after it (freeing the
    device memory for the rollout's unsharded weights, or for the colocated worker's)."""
    if offload:
        fsdp_utils.move_optimizer_state(optimizer, device)
    try:
        yield
    finally:
        if offload:
            fsdp_utils.move_optimizer_state(optimizer, "cpu")


def use_cpu_threads(config: DictConfig, device: torch.device, world_size: int) -> None:
    """On CPU, give torch `trainer.cpu_threads_per_worker` threads (default: this process's cores /
    workers). Ray starts a 1-CPU actor with one OpenMP thread, which would run the updates and the
    rollout's forwards on one core while the env processes, waiting for them, leave the others idle."""
    if device.type != "cpu":
        return
    threads = config.trainer.get("cpu_threads_per_worker")
    if not threads:
        threads = max(1, len(available_cores()) // world_size)
    torch.set_num_threads(int(threads))


class PolicyWorker(Worker):
    """What every policy-training worker holds: the FSDP2-sharded VLA, its AdamW state and LR
    schedule, and the env pool its rollouts run against. RL (`ActorRolloutRefWorker`) and SFT
    (`verl/workers/sft_worker.py`) add their own update RPCs on top.

    Config keys read: actor_rollout_ref.model.*, actor_rollout_ref.actor.{num_images_in_input,
    fsdp_config, optim}, actor_rollout_ref.rollout.* (rollouts), env.*, data.task_suite_name,
    trainer.{device, seed, default_local_dir}.
    """

    def __init__(self, config: DictConfig):
        super().__init__()
        self.config = config
        self.device = torch.device(get_device_name() if config.trainer.device != "cpu" else "cpu")
        self.pool = None
        self.offload_optimizer = False  # AdamW state on the CPU outside updates (RL: actor.fsdp_config.optimizer_offload)

    # ------------------------------------------------------------------------------ set-up
    def _param_dtype(self) -> torch.dtype:
        return param_dtype(self.config, self.device)

    def _load_model(self):
        """Rank 0 reads the weights; the other ranks build on the meta device and get a broadcast."""
        return load_vla(self.config, self.config.actor_rollout_ref.model.path, self.rank)

    def _init_policy(self, norm_stats: Optional[dict[str, Any]] = None) -> None:
        """Process group, sharded model, processor, action statistics, AdamW and LR schedule.

        `norm_stats` replaces the checkpoint's statistics (SFT computes its own from the demos).
        """
        from verl.models.openvla_oft import OpenVLAProcessor, apply_lora

        cfg = self.config
        self.device = join_process_group(self.device, cfg.trainer.seed)
        use_cpu_threads(cfg, self.device, self.world_size)
        m, actor_cfg = cfg.actor_rollout_ref.model, cfg.actor_rollout_ref.actor

        # rank 0 reads the files; a truncated shard must stop every rank, not leave the others
        # waiting for the weights' broadcast until the process group times out
        model = all_ranks_succeed("loading the checkpoint", self._load_model)
        self.model_config = model.config
        if norm_stats is not None:
            self.model_config.norm_stats = norm_stats
        if m.lora_rank > 0:  # before capturing the state: LoRA factors are initialised on rank 0 and broadcast
            model = apply_lora(model, rank=m.lora_rank, alpha=m.lora_alpha, target_modules=m.target_modules)
        if m.enable_gradient_checkpointing:
            model.gradient_checkpointing_enable()
        self.reshard_after_forward = bool(actor_cfg.fsdp_config.reshard_after_forward)
        self.model = shard_model(model, actor_cfg.fsdp_config, self.device, self._param_dtype(), self.rank)
        self.processor = OpenVLAProcessor.from_pretrained(m.path)
        self._set_statistics(self.model_config.norm_stats or {})
        self.optimizer, self.lr_scheduler = build_optimizer(self.model, actor_cfg.optim)
        logger.info("rank %d: model ready on %s (%s params)", self.rank, self.device,
                    sum(p.numel() for p in self.model.parameters()))

    def _set_statistics(self, norm_stats: dict[str, Any]) -> None:
        """The action (and, with use_proprio, proprio) statistics of rollout.unnorm_key: RoboTwin
        keys lose their robotwin2_ prefix, LIBERO keys may gain _no_noops (as the reference)."""
        from verl.models.openvla_oft.normalization import get_action_norm_stats, get_proprio_norm_stats

        r = self.config.actor_rollout_ref.rollout
        self.action_stats = get_action_norm_stats(norm_stats, r.unnorm_key)
        self.proprio_stats = get_proprio_norm_stats(norm_stats, r.unnorm_key) if r.use_proprio else None

    def _optimizer_state_on_device(self):
        """With `offload_optimizer`: the AdamW state on the device for the body, on the CPU after it."""
        return optimizer_state_on(self.optimizer, self.device, self.offload_optimizer)

    def _policy_inputs(self) -> PolicyInputBuilder:
        return PolicyInputBuilder(self.processor.preprocess_images, self.model_config.pad_token_id, self.device)

    def _rollout_engine(self) -> EnvRollout:
        """The env pool starts on first use and lives as long as the worker."""
        if self.pool is None:
            from verl.envs.env_pool import EnvPool

            self.pool = EnvPool(self._env_pool_config())
        cfg = self.config
        r = cfg.actor_rollout_ref.rollout
        settings = RolloutSettings(
            benchmark=self._benchmark(), temperature=r.temperature,
            action_chunk=cfg.actor_rollout_ref.model.action_chunks_len,
            action_dim=cfg.actor_rollout_ref.model.action_token_len,
            max_env_steps=self._max_env_steps(), max_batch_size=r.max_batch_size, center_crop=r.center_crop,
            num_images=r.num_images_in_input, use_proprio=r.use_proprio, proprio_dim=self.model_config.proprio_dim,
            pipeline_stages=r.pipeline_stages, pad_token_id=self.model_config.pad_token_id,
        )
        return EnvRollout(self.model, self.processor.prompt_token_ids, self._policy_inputs(), self.pool,
                          settings, self.action_stats, self.proprio_stats)

    def _benchmark(self) -> str:
        from verl.envs.suites import benchmark_of

        return benchmark_of(self.config.data.task_suite_name).value

    def _max_env_steps(self) -> int:
        configured = self.config.actor_rollout_ref.rollout.max_env_steps
        if configured:
            return configured
        if self._benchmark() == "reach":
            return self.config.env.reach.max_episode_steps
        return default_max_env_steps(self.config.data.task_suite_name)

    def _env_pool_config(self):
        from verl.envs.env_pool import EnvPoolConfig

        env, r = self.config.env, self.config.actor_rollout_ref.rollout
        return EnvPoolConfig(
            benchmark=self._benchmark(), num_workers=env.num_workers, envs_per_worker=env.envs_per_worker,
            step_timeout_s=env.step_timeout_s, reset_timeout_s=env.reset_timeout_s,
            max_restarts=env.max_restarts, restart_window_s=env.restart_window_s,
            max_consecutive_failures=env.max_consecutive_failures, retry_faulted=env.retry_faulted,
            image_size=env.image_size,
            num_steps_wait=r.num_steps_wait, max_episode_steps=self._max_env_steps(),
            start_method=env.start_method, gl_backend=env.mujoco_gl,
            libero_cached_tasks=env.libero_cached_tasks,
            cpu_cores=None if env.cpu_cores is None else list(env.cpu_cores),
            reach=OmegaConf.to_container(env.reach),
            robotwin2=self._robotwin2_options(),
            video_dir=os.path.join(self.config.trainer.default_local_dir, "videos") if r.save_video else None,
        )

    def _robotwin2_options(self) -> dict[str, Any]:
        """The RoboTwin adapter's checkout, task config and instruction split; defaults for other
        benchmarks (SFT configs have no twin2_* keys). Episode seeds come with the prompts."""
        if self._benchmark() != "robotwin2":
            return {}
        r = self.config.actor_rollout_ref.rollout
        return dict(root=self.config.env.robotwin_path, task_config=r.twin2_task_config,
                    instruction_type=r.twin2_instruction_type)

    # ------------------------------------------------------------------------------ RPCs
    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def generate_sequences(self, prompts: DataProto) -> DataProto:
        """meta_info: greedy (bool), seed (int), optional temperature (float: sample at it instead of
        rollout.temperature) and validation (bool). Returns the trajectory batch for these prompts."""
        meta = prompts.meta_info
        greedy = bool(meta.get("greedy", False))
        seed = int(meta.get("seed", 0)) * 1009 + self.rank
        temperature = meta.get("temperature")
        validation = meta.get("validation")
        engine = self._rollout_engine()
        self.pool.set_global_step(int(meta.get("global_step", 0)))
        with fsdp_utils.full_params_for_inference(self.model, self.reshard_after_forward):
            out = engine.generate_sequences(prompts, greedy=greedy, seed=seed,
                                            temperature=None if temperature is None else float(temperature),
                                            validation=None if validation is None else bool(validation))
        return out

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def save_checkpoint(self, directory: str, extra_state: Optional[dict[str, Any]] = None) -> None:
        from verl.workers.checkpoint import save_actor_checkpoint

        with self._optimizer_state_on_device():
            save_actor_checkpoint(self, directory)

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def load_checkpoint(self, directory: str) -> None:
        from verl.workers.checkpoint import load_actor_checkpoint

        with self._optimizer_state_on_device():
            load_actor_checkpoint(self, directory)

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def close_envs(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None


class ActorRolloutRefWorker(PolicyWorker):
    """The RL worker: rollouts (inherited), old log-probs and the clip-higher PPO update."""

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def init_model(self) -> None:
        self._init_policy()
        self.offload_optimizer = wants_optimizer_offload(self.config.actor_rollout_ref.actor.fsdp_config, self.device)
        self.actor = DataParallelPPOActor(
            actor_settings(self.config, self.world_size, self.model_config.pad_token_id, self.reshard_after_forward),
            model=self.model, inputs=self._policy_inputs(), optimizer=self.optimizer, lr_scheduler=self.lr_scheduler,
        )

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def compute_log_prob(self, data: DataProto) -> DataProto:
        log_probs, entropy = self.actor.compute_log_prob(data)
        return DataProto.from_dict(tensors={tj.OLD_LOG_PROBS: log_probs, tj.ENTROPY: entropy})

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def update_actor(self, data: DataProto) -> DataProto:
        seed = int(data.meta_info.get("seed", 0)) * 1009 + self.rank
        with self._optimizer_state_on_device():
            metrics = self.actor.update_policy(data, seed=seed)
        metrics.update(memory_metrics(self.device))
        return DataProto(meta_info={"metrics": metrics})


class CriticWorker(Worker):
    """The value model's worker (algorithm.adv_estimator=gae): the FSDP2-sharded
    `OpenVLAValueModel`, its own AdamW state and LR schedule, its own process group. By default
    it shares the actor's resource pool (colocated: half of each bundle, the same GPU).

    Config keys read: critic.*, actor_rollout_ref.model.{action_token_len, action_chunks_len,
    vla, attn_implementation, dtype}, actor_rollout_ref.actor.num_images_in_input,
    actor_rollout_ref.rollout.use_proprio, trainer.{device, seed}.
    """

    def __init__(self, config: DictConfig):
        super().__init__()
        self.config = config
        self.device = torch.device(get_device_name() if config.trainer.device != "cpu" else "cpu")
        self.offload_optimizer = False

    def _load_value_model(self):
        from verl.models.openvla_oft.value_model import OpenVLAValueModel

        c = self.config.critic
        return OpenVLAValueModel(load_vla(self.config, c.model.path, self.rank), head_hidden=c.model.value_head_hidden)

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def init_model(self) -> None:
        from verl.models.openvla_oft import OpenVLAProcessor, apply_lora
        from verl.workers.critic.dp_critic import CriticSettings, DataParallelPPOCritic

        cfg, c = self.config, self.config.critic
        self.device = join_process_group(self.device, cfg.trainer.seed)
        use_cpu_threads(cfg, self.device, self.world_size)
        model = all_ranks_succeed("loading the critic's checkpoint", self._load_value_model)
        if c.model.lora_rank > 0:  # adapters on the backbone; the value head trains in full
            targets = c.model.target_modules
            if targets == "all-linear":
                from verl.models.openvla_oft.lora import lora_target_modules

                targets = [n for n in lora_target_modules(model) if not n.startswith("value_head.")]
            model = apply_lora(model, rank=c.model.lora_rank, alpha=c.model.lora_alpha, target_modules=targets,
                               modules_to_save=["value_head"])
        if c.model.enable_gradient_checkpointing:
            model.gradient_checkpointing_enable()
        self.model = shard_model(model, c.fsdp_config, self.device, param_dtype(cfg, self.device), self.rank)
        self.optimizer, self.lr_scheduler = build_optimizer(self.model, c.optim)
        self.offload_optimizer = wants_optimizer_offload(c.fsdp_config, self.device)
        processor = OpenVLAProcessor.from_pretrained(c.model.path)
        pad_token_id = fsdp_utils.fsdp_root(self.model).config.pad_token_id
        n = self.world_size
        self.critic = DataParallelPPOCritic(
            CriticSettings(
                ppo_mini_batch_size=c.ppo_mini_batch_size // n, ppo_micro_batch_size=max(1, c.ppo_micro_batch_size // n),
                steps_per_forward=c.traj_mini_batch_size, forward_micro_batch_size=c.forward_micro_batch_size,
                ppo_epochs=c.ppo_epochs, shuffle=c.shuffle, grad_clip=c.grad_clip, cliprange_value=c.cliprange_value,
                use_proprio=cfg.actor_rollout_ref.rollout.use_proprio,
                reshard_after_forward=bool(c.fsdp_config.reshard_after_forward),
            ),
            model=self.model, inputs=PolicyInputBuilder(processor.preprocess_images, pad_token_id, self.device),
            optimizer=self.optimizer, lr_scheduler=self.lr_scheduler,
        )
        logger.info("rank %d: critic ready on %s (%s params)", self.rank, self.device,
                    sum(p.numel() for p in self.model.parameters()))

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def compute_values(self, data: DataProto) -> DataProto:
        return DataProto.from_dict(tensors={tj.VALUES: self.critic.compute_values(data)})

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def update_critic(self, data: DataProto) -> DataProto:
        seed = int(data.meta_info.get("seed", 0)) * 1013 + self.rank
        with optimizer_state_on(self.optimizer, self.device, self.offload_optimizer):
            metrics = self.critic.update_critic(data, seed=seed)
        return DataProto(meta_info={"metrics": metrics})

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def save_checkpoint(self, directory: str) -> None:
        from verl.workers.checkpoint import save_critic_checkpoint

        with optimizer_state_on(self.optimizer, self.device, self.offload_optimizer):
            save_critic_checkpoint(self, directory)

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def load_checkpoint(self, directory: str) -> None:
        from verl.workers.checkpoint import load_critic_checkpoint

        with optimizer_state_on(self.optimizer, self.device, self.offload_optimizer):
            load_critic_checkpoint(self, directory)

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def close_envs(self) -> None:
        """The critic has no env pool (the worker-group shutdown calls this on every group)."""
