"""Check the whole config once, up front, before Ray or any model starts.

Every error names the full key, the value and what was expected, so a typo in a 40-override
launch script costs seconds, not a cluster allocation. The trainer and workers may then read
keys without defensive `.get(key, default)` calls.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

from omegaconf import DictConfig, ListConfig, OmegaConf

from verl.trainer.ppo.core_algos import ADVANTAGE_ESTIMATORS, KL_PENALTIES, LossAggMode
from verl.utils.dataset.curriculum import WEIGHTINGS as CURRICULUM_WEIGHTINGS

VLA_TYPES = ("openvla-oft", "openvla")
LOGGERS = ("console", "wandb", "tensorboard", "file")
WANDB_MODES = ("online", "offline", "disabled")
DEVICES = ("auto", "cpu", "cuda")
RESUME_MODES = ("auto", "disable", "resume_path")
WARMUP_STYLES = ("constant", "cosine")
DTYPES = ("auto", "float32", "bfloat16")
ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "flash_attention_2", "eager")
STRATEGIES = ("fsdp", "fsdp2")
START_METHODS = ("spawn", "forkserver")
MUJOCO_GL = ("egl", "osmesa")
CHECKPOINT_CONTENTS = ("model", "optimizer", "extra")


class ConfigError(ValueError):
    """A config value is invalid; the message names the key."""


def _get(cfg: DictConfig, key: str) -> Any:
    value = OmegaConf.select(cfg, key, throw_on_missing=False, default="__absent__")
    if value == "__absent__":
        raise ConfigError(f"{key} is missing from the config")
    return value


def _require(cond: bool, key: str, value: Any, expected: str) -> None:
    if not cond:
        raise ConfigError(f"{key}={value!r} is invalid: expected {expected}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # YAML's True is an int to Python


def _one_of(cfg: DictConfig, key: str, allowed: Iterable[str]) -> str:
    value = _get(cfg, key)
    allowed = tuple(allowed)
    _require(value in allowed, key, value, f"one of {list(allowed)}")
    return value


def _bool(cfg: DictConfig, key: str) -> bool:
    value = _get(cfg, key)
    _require(isinstance(value, bool), key, value, "True or False")
    return value


def _int_at_least(cfg: DictConfig, key: str, lowest: int) -> int:
    value = _get(cfg, key)
    ok = _is_int(value) and value >= lowest
    _require(ok, key, value, f"an integer >= {lowest}")
    return value


def _number_in(cfg: DictConfig, key: str, low: float, high: float, low_open: bool = False) -> float:
    value = _get(cfg, key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (value > low if low_open else value >= low) and value <= high
    bracket = "(" if low_open else "["
    _require(ok, key, value, f"a number in {bracket}{low}, {high}]")
    return float(value)


def _freq(cfg: DictConfig, key: str) -> None:
    value = _get(cfg, key)
    ok = _is_int(value) and (value == -1 or value > 0)
    _require(ok, key, value, "-1 (never) or a positive integer")


def world_size(cfg: DictConfig) -> int:
    """Worker processes: trainer.nnodes x trainer.n_gpus_per_node (each checked, since batch sizes are
    checked against their product before the trainer section is)."""
    return _int_at_least(cfg, "trainer.nnodes", 1) * _int_at_least(cfg, "trainer.n_gpus_per_node", 1)


def resolve_device(cfg: DictConfig) -> str:
    """'cuda' or 'cpu' for trainer.device (auto picks cuda when torch sees a GPU)."""
    device = cfg.trainer.device
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def validate_config(cfg: DictConfig, check_paths: bool = True) -> None:
    """Raise ConfigError on the first invalid key. `check_paths=False` skips filesystem checks."""
    _validate_data(cfg)
    _validate_model(cfg, check_paths)
    _validate_actor_batches(cfg)
    _validate_actor_update(cfg)
    _validate_rollout(cfg)
    _validate_env(cfg)
    _validate_algorithm(cfg)
    _validate_task_sampling(cfg)
    _validate_critic(cfg, check_paths)
    _validate_trainer(cfg, check_paths)


def _validate_data(cfg: DictConfig) -> None:
    from verl.envs.suites import validate_task_suite_name

    suite = _get(cfg, "data.task_suite_name")
    try:
        validate_task_suite_name(suite)
    except ValueError as err:
        raise ConfigError(f"data.task_suite_name={suite!r} is invalid: {err}") from None
    _int_at_least(cfg, "data.num_trials_per_task", 1)
    _validate_task_ids(cfg, suite)
    n_samples = _int_at_least(cfg, "data.n_samples", 1)
    lower = _number_in(cfg, "data.accuracy_lower_bound", 0.0, 1.0)
    upper = _number_in(cfg, "data.accuracy_upper_bound", 0.0, 1.0)
    if lower > upper:
        raise ConfigError(
            f"data.accuracy_lower_bound={lower} is above data.accuracy_upper_bound={upper}: "
            "no group could pass the dynamic-sampling filter"
        )
    if cfg.data.filter_accuracy and n_samples < 2:
        raise ConfigError("data.filter_accuracy=True needs data.n_samples >= 2 (a group success rate)")
    _int_at_least(cfg, "data.oversample_factor", 1)
    _int_at_least(cfg, "data.max_sample_rounds", 1)
    _int_at_least(cfg, "data.train_batch_size", 1)
    _int_at_least(cfg, "data.val_batch_size", 1)
    val_split = _one_of(cfg, "data.val_split", ("same", "held_out"))
    if suite.startswith("robotwin2_") and val_split == "held_out":
        raise ConfigError("data.val_split='held_out' is invalid for a RoboTwin suite: expected 'same' (RoboTwin "
                          "validates on the reference's 128 train + 128 held-out eval feasible seeds)")
    held_out = _int_at_least(cfg, "data.held_out_trials_per_task", 0)
    if cfg.data.val_split == "held_out" and not 0 < held_out < cfg.data.num_trials_per_task:
        raise ConfigError(
            f"data.held_out_trials_per_task={held_out} is invalid with data.val_split=held_out: "
            f"expected 1..{cfg.data.num_trials_per_task - 1} (data.num_trials_per_task - 1)"
        )


def _validate_task_ids(cfg: DictConfig, suite: str) -> None:
    from verl.utils.dataset.rob_dataset import select_task_ids, suite_num_tasks

    task_ids = _get(cfg, "data.task_ids")
    if task_ids is None:
        return
    ids = list(task_ids) if isinstance(task_ids, (list, tuple, ListConfig)) else task_ids
    reach_tasks = _int_at_least(cfg, "env.reach.num_targets", 1) if suite == "reach" else None
    num_tasks = suite_num_tasks(suite, reach_tasks)
    _require(isinstance(ids, list), "data.task_ids", task_ids,
             f"null (all tasks) or a list of distinct task ids in [0, {num_tasks - 1}] such as [0, 3]")
    try:
        select_task_ids(ids, num_tasks, suite)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _validate_model(cfg: DictConfig, check_paths: bool) -> None:
    path = OmegaConf.select(cfg, "actor_rollout_ref.model.path", throw_on_missing=False)
    if path is None or OmegaConf.is_missing(cfg.actor_rollout_ref.model, "path") or path in ("", "???"):
        raise ConfigError(
            "actor_rollout_ref.model.path is required: the OpenVLA(-OFT) checkpoint directory "
            "(set SFT_MODEL_PATH in the example scripts, or write a tiny one with "
            "scripts/make_tiny_checkpoint.py)"
        )
    if check_paths:
        config_json = Path(path) / "config.json"
        if not config_json.is_file():
            raise ConfigError(
                f"actor_rollout_ref.model.path={path!r} is not a checkpoint directory: {config_json} not found"
            )
    vla = _one_of(cfg, "actor_rollout_ref.model.vla", VLA_TYPES)
    _int_at_least(cfg, "actor_rollout_ref.model.action_token_len", 1)
    chunks = _int_at_least(cfg, "actor_rollout_ref.model.action_chunks_len", 1)
    if vla == "openvla" and chunks != 1:
        raise ConfigError(
            f"actor_rollout_ref.model.action_chunks_len={chunks} is invalid with vla=openvla: "
            "plain OpenVLA predicts one action per call (expected 1)"
        )
    _int_at_least(cfg, "actor_rollout_ref.model.lora_rank", 0)
    _one_of(cfg, "actor_rollout_ref.model.dtype", DTYPES)
    _one_of(cfg, "actor_rollout_ref.model.attn_implementation", ATTN_IMPLEMENTATIONS)


def _validate_actor_batches(cfg: DictConfig) -> None:
    a = "actor_rollout_ref.actor"
    _one_of(cfg, f"{a}.strategy", STRATEGIES)
    if _get(cfg, f"{a}.use_dynamic_bsz"):
        raise ConfigError(f"{a}.use_dynamic_bsz=True is not supported: every sample has the same length")
    n_workers = world_size(cfg)
    mini = _int_at_least(cfg, f"{a}.ppo_mini_batch_size", 1)
    micro = _int_at_least(cfg, f"{a}.ppo_micro_batch_size", 1)
    if cfg.trainer.val_only:  # evaluation never splits a training batch
        return
    _require(mini % n_workers == 0, f"{a}.ppo_mini_batch_size", mini,
             f"a multiple of the number of workers ({n_workers} = trainer.nnodes x trainer.n_gpus_per_node)")
    _require(micro % n_workers == 0, f"{a}.ppo_micro_batch_size", micro,
             f"a multiple of the number of workers ({n_workers})")
    _require(mini % micro == 0, f"{a}.ppo_mini_batch_size", mini,
             f"a multiple of {a}.ppo_micro_batch_size={micro}")
    trajectories = cfg.data.train_batch_size * cfg.data.n_samples
    _require(trajectories % mini == 0, f"{a}.ppo_mini_batch_size", mini,
             f"a divisor of data.train_batch_size x data.n_samples = {trajectories} trajectories")


def _validate_actor_update(cfg: DictConfig) -> None:
    a = "actor_rollout_ref.actor"
    _int_at_least(cfg, f"{a}.traj_mini_batch_size", 1)
    _int_at_least(cfg, f"{a}.ppo_epochs", 1)
    _validate_optimizer(cfg, a)
    _number_in(cfg, f"{a}.clip_ratio_low", 0.0, 1.0)
    _number_in(cfg, f"{a}.clip_ratio_high", 0.0, float("inf"))
    clip_c = _get(cfg, f"{a}.clip_ratio_c")
    _require(clip_c is None or (isinstance(clip_c, (int, float)) and clip_c > 1), f"{a}.clip_ratio_c", clip_c,
             "null or a number > 1")
    _one_of(cfg, f"{a}.loss_agg_mode", [m.value for m in LossAggMode])
    _number_in(cfg, f"{a}.entropy_coeff", 0.0, float("inf"))
    _bool(cfg, f"{a}.use_rollout_log_probs")
    _one_of(cfg, f"{a}.kl_loss_type", KL_PENALTIES)
    _require(_get(cfg, f"{a}.use_kl_loss") is False, f"{a}.use_kl_loss", _get(cfg, f"{a}.use_kl_loss"),
             "False: a KL loss needs a reference policy, which this version does not build")
    _require(_get(cfg, f"{a}.kl_loss_coef") == 0, f"{a}.kl_loss_coef", _get(cfg, f"{a}.kl_loss_coef"),
             "0: there is no KL loss (see use_kl_loss)")
    contents = _get(cfg, f"{a}.checkpoint.contents")
    contents = list(contents) if isinstance(contents, (list, tuple, ListConfig)) else contents
    _require(isinstance(contents, list) and sorted(contents) == sorted(CHECKPOINT_CONTENTS), f"{a}.checkpoint.contents",
             contents, f"{list(CHECKPOINT_CONTENTS)}: every checkpoint holds the model, the optimizer state and the "
             "extra (RNG, scheduler, dataloader) state so that a run resumes exactly")
    actor_images = _int_at_least(cfg, f"{a}.num_images_in_input", 1)
    rollout_images = _get(cfg, "actor_rollout_ref.rollout.num_images_in_input")
    _require(rollout_images == actor_images, "actor_rollout_ref.rollout.num_images_in_input", rollout_images,
             f"the same as {a}.num_images_in_input={actor_images}")


def _validate_rollout(cfg: DictConfig) -> None:
    r = "actor_rollout_ref.rollout"
    _one_of(cfg, f"{r}.name", ("hf",))
    _number_in(cfg, f"{r}.temperature", 0.0, float("inf"), low_open=True)
    _number_in(cfg, f"{r}.val_temperature", 0.0, float("inf"))
    _int_at_least(cfg, f"{r}.max_batch_size", 1)
    _int_at_least(cfg, f"{r}.log_prob_micro_batch_size", 1)
    _int_at_least(cfg, f"{r}.num_steps_wait", 0)
    max_steps = _get(cfg, f"{r}.max_env_steps")
    _require(max_steps is None or (isinstance(max_steps, int) and max_steps > 0), f"{r}.max_env_steps",
             max_steps, "null or a positive integer")
    _one_of(cfg, f"{r}.pipeline_stages", (1, 2))
    suite = _get(cfg, f"{r}.task_suite_name")
    data_suite = cfg.data.task_suite_name
    _require(suite == data_suite, f"{r}.task_suite_name", suite,
             f"the same suite as data.task_suite_name={data_suite!r}")
    _one_of(cfg, f"{r}.twin2_instruction_type", ("seen", "unseen"))
    videos = _get(cfg, f"{r}.max_videos_per_task")
    _require(videos is None or (_is_int(videos) and videos >= 0), f"{r}.max_videos_per_task", videos,
             "null (every validation episode) or an integer >= 0")


def _validate_env(cfg: DictConfig) -> None:
    _int_at_least(cfg, "env.num_workers", 1)
    _int_at_least(cfg, "env.envs_per_worker", 1)
    size = _get(cfg, "env.image_size")
    _require(size is None or (isinstance(size, int) and size >= 32), "env.image_size", size,
             "null (benchmark default) or an integer >= 32")
    _number_in(cfg, "env.step_timeout_s", 0.0, float("inf"), low_open=True)
    _number_in(cfg, "env.reset_timeout_s", 0.0, float("inf"), low_open=True)
    _int_at_least(cfg, "env.max_restarts", 0)
    _number_in(cfg, "env.restart_window_s", 0.0, float("inf"), low_open=True)
    _int_at_least(cfg, "env.max_consecutive_failures", 1)
    cores = _get(cfg, "env.cpu_cores")
    cores = list(cores) if isinstance(cores, (list, tuple, ListConfig)) else cores
    _require(cores is None or (isinstance(cores, list) and len(cores) > 0
                               and all(_is_int(c) and c >= 0 for c in cores)),
             "env.cpu_cores", cores, "null (any core) or a non-empty list of core ids such as [1, 2, 3]")
    _one_of(cfg, "env.start_method", START_METHODS)
    _one_of(cfg, "env.mujoco_gl", MUJOCO_GL)
    _int_at_least(cfg, "env.libero_cached_tasks", 1)
    _int_at_least(cfg, "env.reach.num_targets", 1)
    _int_at_least(cfg, "env.reach.max_episode_steps", 1)
    _number_in(cfg, "env.reach.success_radius", 0.0, float("inf"), low_open=True)
    _number_in(cfg, "env.reach.step_size", 0.0, float("inf"), low_open=True)
    distance = _get(cfg, "env.reach.target_distance")
    distances = list(distance) if isinstance(distance, (list, tuple, ListConfig)) else [distance]
    _require(len(distances) in (1, cfg.env.reach.num_targets)
             and all(isinstance(d, (int, float)) and not isinstance(d, bool) and d > 0 for d in distances),
             "env.reach.target_distance", distance,
             f"a number > 0, or a list of {cfg.env.reach.num_targets} numbers > 0 (one per target)")


def needs_critic(cfg: DictConfig) -> bool:
    """Whether algorithm.adv_estimator builds a critic worker group."""
    return ADVANTAGE_ESTIMATORS[cfg.algorithm.adv_estimator].needs_critic


def _validate_algorithm(cfg: DictConfig) -> None:
    _one_of(cfg, "algorithm.adv_estimator", ADVANTAGE_ESTIMATORS)
    _number_in(cfg, "algorithm.gamma", 0.0, 1.0)
    _number_in(cfg, "algorithm.lam", 0.0, 1.0)
    _bool(cfg, "algorithm.whiten_advantages")
    _one_of(cfg, "algorithm.kl_penalty", KL_PENALTIES)
    _one_of(cfg, "algorithm.kl_ctrl.type", ("fixed", "adaptive"))
    kl_coef = _get(cfg, "algorithm.kl_ctrl.kl_coef")
    _require(kl_coef == 0 and not isinstance(kl_coef, bool), "algorithm.kl_ctrl.kl_coef", kl_coef,
             "0 (SimpleVLA-RL's value): an in-reward KL penalty needs a reference policy, which this version "
             "does not build")
    _number_in(cfg, "verifier.reward_coef", 0.0, float("inf"), low_open=True)
    if _get(cfg, "reward_model.enable"):
        raise ConfigError("reward_model.enable=True is not supported yet: expected False")


def _validate_task_sampling(cfg: DictConfig) -> None:
    """data.curriculum.* and data.task_balanced: the two ways to choose each prompt's task."""
    c = "data.curriculum"
    curriculum = _bool(cfg, f"{c}.enable")
    _one_of(cfg, f"{c}.weighting", CURRICULUM_WEIGHTINGS)
    _number_in(cfg, f"{c}.temperature", 0.0, float("inf"), low_open=True)
    ema = _number_in(cfg, f"{c}.ema", 0.0, 1.0)
    _require(ema < 1.0, f"{c}.ema", ema, "a number in [0, 1) (1 would never update the estimates)")
    balanced = _bool(cfg, "data.task_balanced")
    _require(not (balanced and curriculum), "data.task_balanced", balanced,
             "False when data.curriculum.enable=True (both choose each prompt's task)")


def _validate_optimizer(cfg: DictConfig, owner: str) -> None:
    """The AdamW + LR-schedule keys of `owner` (the actor, the critic, or the SFT model): the same
    keys feed build_optimizer / build_lr_scheduler in every worker."""
    _number_in(cfg, f"{owner}.grad_clip", 0.0, float("inf"), low_open=True)
    o = f"{owner}.optim"
    _number_in(cfg, f"{o}.lr", 0.0, float("inf"), low_open=True)
    betas = _get(cfg, f"{o}.betas")
    betas = list(betas) if isinstance(betas, (list, tuple, ListConfig)) else betas
    _require(isinstance(betas, list) and len(betas) == 2
             and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas),
             f"{o}.betas", betas, "two numbers in [0, 1), e.g. [0.9, 0.999]")
    _number_in(cfg, f"{o}.weight_decay", 0.0, float("inf"))
    _one_of(cfg, f"{o}.warmup_style", WARMUP_STYLES)
    _int_at_least(cfg, f"{o}.lr_warmup_steps", -1)
    _number_in(cfg, f"{o}.lr_warmup_steps_ratio", 0.0, 1.0)
    _number_in(cfg, f"{o}.min_lr_ratio", 0.0, 1.0)


def _validate_critic(cfg: DictConfig, check_paths: bool) -> None:
    """The critic section, only when the estimator builds a critic (grpo ignores it)."""
    if not needs_critic(cfg):
        return
    c = "critic"
    path = _get(cfg, f"{c}.model.path")
    if check_paths:
        _require(bool(path) and (Path(str(path)) / "config.json").is_file(), f"{c}.model.path", path,
                 "an OpenVLA(-OFT) checkpoint directory (with config.json) for the critic's backbone")
    _int_at_least(cfg, f"{c}.model.value_head_hidden", 1)
    _int_at_least(cfg, f"{c}.model.lora_rank", 0)
    n_workers = world_size(cfg)
    mini = _int_at_least(cfg, f"{c}.ppo_mini_batch_size", 1)
    micro = _int_at_least(cfg, f"{c}.ppo_micro_batch_size", 1)
    _int_at_least(cfg, f"{c}.traj_mini_batch_size", 1)
    _int_at_least(cfg, f"{c}.forward_micro_batch_size", 1)
    _int_at_least(cfg, f"{c}.ppo_epochs", 1)
    if not cfg.trainer.val_only:
        _require(mini % n_workers == 0 and mini % micro == 0, f"{c}.ppo_mini_batch_size", mini,
                 f"a multiple of the number of workers ({n_workers}) and of {c}.ppo_micro_batch_size={micro}")
        _require(micro % n_workers == 0, f"{c}.ppo_micro_batch_size", micro,
                 f"a multiple of the number of workers ({n_workers})")
    _number_in(cfg, f"{c}.cliprange_value", 0.0, float("inf"), low_open=True)
    _validate_optimizer(cfg, c)
    warmup = _int_at_least(cfg, f"{c}.warmup_steps", 0)
    steps = cfg.trainer.total_training_steps
    _require(steps is None or warmup < steps, f"{c}.warmup_steps", warmup,
             f"fewer than trainer.total_training_steps={steps} (else the actor is never trained)")
    _bool(cfg, f"{c}.colocate")


def _cpu_threads_per_worker(cfg: DictConfig, t: str) -> None:
    threads = _get(cfg, f"{t}.cpu_threads_per_worker")
    _require(threads is None or (_is_int(threads) and threads >= 1), f"{t}.cpu_threads_per_worker", threads,
             "null or an integer >= 1")


def _validate_run(cfg: DictConfig, check_paths: bool) -> None:
    """The trainer keys RL and SFT share: device, length, loggers, evaluation / checkpoint
    frequencies, worker threads and timeouts, resume."""
    t = "trainer"
    device = _one_of(cfg, f"{t}.device", DEVICES)
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("trainer.device='cuda' but torch sees no CUDA device: expected 'cpu' or 'auto'")
    world_size(cfg)
    _int_at_least(cfg, f"{t}.total_epochs", 1)
    steps = _get(cfg, f"{t}.total_training_steps")
    _require(steps is None or (_is_int(steps) and steps > 0), f"{t}.total_training_steps", steps,
             "null or a positive integer")
    loggers = _get(cfg, f"{t}.logger")
    for name in [loggers] if isinstance(loggers, str) else loggers:
        _require(name in LOGGERS, f"{t}.logger", list(loggers), f"a list drawn from {list(LOGGERS)}")
    _one_of(cfg, f"{t}.wandb_mode", WANDB_MODES)
    _freq(cfg, f"{t}.save_freq")
    _freq(cfg, f"{t}.test_freq")
    _number_in(cfg, f"{t}.worker_timeout_s", 0.0, float("inf"), low_open=True)
    limit = _get(cfg, f"{t}.time_limit_s")
    _require(limit is None or (isinstance(limit, (int, float)) and not isinstance(limit, bool) and limit > 0),
             f"{t}.time_limit_s", limit, "null (no limit) or seconds > 0")
    _cpu_threads_per_worker(cfg, t)
    mode = _one_of(cfg, f"{t}.resume_mode", RESUME_MODES)
    if check_paths and mode == "resume_path":
        resume = _get(cfg, f"{t}.resume_from_path")
        _require(bool(resume) and os.path.isdir(resume), f"{t}.resume_from_path", resume,
                 "a global_step_N checkpoint directory when trainer.resume_mode=resume_path")


def _validate_trainer(cfg: DictConfig, check_paths: bool) -> None:
    t = "trainer"
    _validate_run(cfg, check_paths)
    n_workers = world_size(cfg)
    tbs = cfg.data.train_batch_size
    _require(tbs % n_workers == 0 or cfg.trainer.val_only, "data.train_batch_size", tbs,
             f"a multiple of the number of workers ({n_workers} = trainer.nnodes x trainer.n_gpus_per_node)")
    _int_at_least(cfg, f"{t}.max_worker_restarts", 0)
    _bool(cfg, f"{t}.entropy_after_update")
    keep = _get(cfg, f"{t}.max_actor_ckpt_to_keep")
    _require(keep is None or (_is_int(keep) and keep >= 1), f"{t}.max_actor_ckpt_to_keep", keep,
             "null or an integer >= 1")
    if not check_paths:
        return
    runtime_env = _get(cfg, f"{t}.runtime_env")
    if runtime_env:
        from verl.utils.runtime_env import load_runtime_env

        try:
            load_runtime_env(runtime_env)
        except (FileNotFoundError, ValueError) as err:
            raise ConfigError(f"trainer.runtime_env: {err}") from None



# ---------------------------------------------------------------------------------------------- SFT
def validate_sft_config(cfg: DictConfig, check_paths: bool = True) -> None:
    """The SFT config (sft_trainer.yaml): raise ConfigError on the first invalid key."""
    from verl.envs.suites import LIBERO_NUM_TASKS, canonical_libero_suite

    d = "data"
    files = _get(cfg, f"{d}.train_files")
    files = [files] if isinstance(files, str) else list(files) if isinstance(files, (list, ListConfig)) else files
    _require(isinstance(files, list) and len(files) > 0 and all(isinstance(f, str) for f in files),
             f"{d}.train_files", files, "a demo file / folder path or a list of them")
    if check_paths:
        for f in files:
            _require(os.path.exists(f), f"{d}.train_files", f, "existing files or folders")
    _one_of(cfg, f"{d}.format", ("auto", "libero_hdf5", "lerobot"))
    suite = _get(cfg, f"{d}.task_suite_name")
    try:
        canonical = canonical_libero_suite(suite)
    except ValueError:
        raise ConfigError(f"{d}.task_suite_name={suite!r} is invalid: expected a LIBERO suite "
                          f"{sorted(LIBERO_NUM_TASKS)}") from None
    cameras = list(_get(cfg, f"{d}.cameras"))
    images = _int_at_least(cfg, "actor_rollout_ref.actor.num_images_in_input", 1)
    _require(len(cameras) == images, f"{d}.cameras", cameras,
             f"{images} camera name(s) (actor_rollout_ref.actor.num_images_in_input)")
    per_task = _get(cfg, f"{d}.demos_per_task")
    _require(per_task is None or (_is_int(per_task) and per_task >= 1), f"{d}.demos_per_task", per_task,
             "null (all) or an integer >= 1")
    _int_at_least(cfg, f"{d}.val_demos_per_task", 0)
    n_workers = world_size(cfg)
    batch = _int_at_least(cfg, f"{d}.batch_size", 1)
    micro = _int_at_least(cfg, f"{d}.micro_batch_size", 1)
    _require(batch % n_workers == 0, f"{d}.batch_size", batch,
             f"a multiple of the number of workers ({n_workers} = trainer.nnodes x trainer.n_gpus_per_node)")
    _require(micro % n_workers == 0 and batch % micro == 0, f"{d}.micro_batch_size", micro,
             f"a multiple of the number of workers ({n_workers}) that divides data.batch_size={batch}")
    val_batch = _int_at_least(cfg, f"{d}.val_batch_size", 1)
    _require(val_batch % n_workers == 0, f"{d}.val_batch_size", val_batch,
             f"a multiple of the number of workers ({n_workers})")

    OmegaConf.set_struct(cfg, False)
    _validate_model(cfg, check_paths)
    _validate_optimizer(cfg, "actor_rollout_ref.actor")
    if _get(cfg, "actor_rollout_ref.rollout.use_proprio"):
        raise ConfigError("actor_rollout_ref.rollout.use_proprio=True is not supported by SFT yet: expected False "
                          "(the rollout would have to normalise proprio with the statistics SFT writes)")
    _int_at_least(cfg, "actor_rollout_ref.rollout.max_batch_size", 1)
    _int_at_least(cfg, "actor_rollout_ref.rollout.num_steps_wait", 0)
    max_steps = _get(cfg, "actor_rollout_ref.rollout.max_env_steps")
    _require(max_steps is None or (_is_int(max_steps) and max_steps > 0), "actor_rollout_ref.rollout.max_env_steps",
             max_steps, "null or a positive integer")
    _one_of(cfg, "actor_rollout_ref.rollout.pipeline_stages", (1, 2))

    e = "eval"
    task_ids = _get(cfg, f"{e}.task_ids")
    n_tasks = LIBERO_NUM_TASKS[canonical]
    if task_ids is not None:
        ids = list(task_ids) if isinstance(task_ids, (list, ListConfig)) else task_ids
        _require(isinstance(ids, list) and len(ids) > 0 and all(_is_int(i) and 0 <= i < n_tasks for i in ids)
                 and len(set(ids)) == len(ids), f"{e}.task_ids", ids,
                 f"null or distinct task ids in [0, {n_tasks}) of {suite}")
    trials = _int_at_least(cfg, f"{e}.num_trials_per_task", 1)
    held_out = _int_at_least(cfg, f"{e}.held_out_trials_per_task", 1)
    _require(held_out < trials, f"{e}.held_out_trials_per_task", held_out,
             f"fewer than {e}.num_trials_per_task={trials}")
    _int_at_least(cfg, f"{e}.batch_size", 1)
    _number_in(cfg, f"{e}.temperature", 0.0, float("inf"))
    _freq(cfg, f"{e}.freq")
    _validate_env(cfg)

    _validate_run(cfg, check_paths)
    _int_at_least(cfg, "trainer.log_freq", 1)
