"""What the RL worker makes of the config, without Ray or a model: the actor's per-rank settings,
the LR schedule (warm-up, then constant or cosine) and its env pool's config."""

import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from verl.envs.robotwin2_env import RoboTwin2Config
from verl.workers.fsdp_workers import ActorRolloutRefWorker, actor_settings, build_lr_scheduler

CONFIG_DIR = Path(__file__).resolve().parents[2] / "verl" / "trainer" / "config"


def ppo_config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose("ppo_trainer", overrides=list(overrides))
    OmegaConf.resolve(cfg)
    return cfg


def test_actor_settings_follow_the_config_per_rank():
    cfg = ppo_config(
        "actor_rollout_ref.actor.clip_ratio_low=0.15", "actor_rollout_ref.actor.clip_ratio_high=0.35",
        "actor_rollout_ref.actor.clip_ratio_c=4.0", "actor_rollout_ref.actor.entropy_coeff=0.01",
        "actor_rollout_ref.actor.ppo_epochs=3", "actor_rollout_ref.actor.shuffle=True",
        "actor_rollout_ref.actor.grad_clip=0.5", "actor_rollout_ref.actor.ppo_mini_batch_size=16",
        "actor_rollout_ref.actor.ppo_micro_batch_size=4", "actor_rollout_ref.actor.traj_mini_batch_size=5",
        "actor_rollout_ref.actor.loss_agg_mode=token-mean", "actor_rollout_ref.rollout.temperature=1.3",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size=7", "actor_rollout_ref.rollout.use_proprio=True",
    )
    s = actor_settings(cfg, world_size=2, pad_token_id=32000, reshard_after_forward=False)
    assert (s.clip_ratio_low, s.clip_ratio_high, s.clip_ratio_c) == (0.15, 0.35, 4.0)
    assert (s.entropy_coeff, s.ppo_epochs, s.shuffle, s.grad_clip) == (0.01, 3, True, 0.5)
    assert (s.ppo_mini_batch_size, s.ppo_micro_batch_size) == (8, 2)  # trajectories per rank
    assert (s.steps_per_forward, s.log_prob_micro_batch_size) == (5, 7)  # per rank already
    assert (s.loss_agg_mode, s.temperature, s.use_proprio) == ("token-mean", 1.3, True)
    assert (s.pad_token_id, s.reshard_after_forward) == (32000, False)
    # a micro-batch smaller than the world still gives every rank one trajectory per micro-batch
    assert actor_settings(cfg, world_size=8, pad_token_id=0, reshard_after_forward=True).ppo_micro_batch_size == 1


def lrs(optim_overrides: dict, total_steps: int, steps: int) -> list[float]:
    optim = OmegaConf.merge(ppo_config().actor_rollout_ref.actor.optim, {"lr": 1.0, **optim_overrides})
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=optim.lr)
    scheduler = build_lr_scheduler(optimizer, optim, total_steps)
    out = []
    for _ in range(steps):
        out.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return out


def test_lr_warmup_then_cosine_to_min_ratio():
    got = lrs({"warmup_style": "cosine", "lr_warmup_steps": 2, "min_lr_ratio": 0.1}, total_steps=6, steps=8)
    cosine = [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)) for p in (0.0, 0.25, 0.5, 0.75)]
    # warm-up reaches the full lr on its last step, cosine reaches min_lr_ratio at total_steps and stays
    assert got == pytest.approx([0.5, 1.0, *cosine, 0.1, 0.1])


def test_lr_warmup_from_ratio_then_constant():
    got = lrs({"warmup_style": "constant", "lr_warmup_steps": -1, "lr_warmup_steps_ratio": 0.5}, total_steps=8,
              steps=6)
    assert got == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    # no warm-up: the lr from the first step, whatever the style
    assert lrs({"warmup_style": "cosine", "min_lr_ratio": 0.0}, total_steps=2, steps=3) == pytest.approx([1.0, 0.5, 0.0])


def pool_config(*overrides: str):
    worker = object.__new__(ActorRolloutRefWorker)  # the config methods need no process group or model
    worker.config = ppo_config(*overrides)
    return worker._env_pool_config()


def test_env_pool_config_takes_the_env_keys():
    pool = pool_config("data.task_suite_name=reach", "env.num_workers=3", "env.envs_per_worker=5",
                       "env.step_timeout_s=7", "env.reach.num_targets=2", "env.reach.max_episode_steps=9",
                       "actor_rollout_ref.rollout.num_steps_wait=0")
    assert (pool.benchmark, pool.num_workers, pool.envs_per_worker, pool.step_timeout_s) == ("reach", 3, 5, 7)
    assert (pool.reach.num_targets, pool.max_episode_steps, pool.num_steps_wait) == (2, 9, 0)
    assert pool.robotwin2 == RoboTwin2Config()
    assert pool_config("data.task_suite_name=libero_10").max_episode_steps == 512


def test_env_pool_config_passes_the_robotwin_keys():
    pool = pool_config("data.task_suite_name=robotwin2_click_bell", "env.robotwin_path=/opt/robotwin",
                       "actor_rollout_ref.rollout.twin2_task_config=demo_clean",
                       "actor_rollout_ref.rollout.twin2_instruction_type=unseen")
    assert pool.benchmark == "robotwin2"
    assert pool.robotwin2 == RoboTwin2Config(root="/opt/robotwin", task_config="demo_clean", instruction_type="unseen")


def test_cpu_workers_get_the_cores_not_rays_one_thread(monkeypatch):
    """Ray starts a 1-CPU actor with one OpenMP thread; on CPU the worker sizes torch's pool itself."""
    import os

    from verl.workers.fsdp_workers import use_cpu_threads

    before = torch.get_num_threads()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})
    try:
        use_cpu_threads(ppo_config(), torch.device("cpu"), world_size=2)
        assert torch.get_num_threads() == 3  # 6 cores / 2 workers
        use_cpu_threads(ppo_config("trainer.cpu_threads_per_worker=1"), torch.device("cpu"), world_size=2)
        assert torch.get_num_threads() == 1
        use_cpu_threads(ppo_config(), torch.device("cpu"), world_size=8)
        assert torch.get_num_threads() == 1  # never 0
        torch.set_num_threads(2)
        use_cpu_threads(ppo_config("trainer.cpu_threads_per_worker=5"), torch.device("cuda"), world_size=1)
        assert torch.get_num_threads() == 2  # GPU workers keep what they have
    finally:
        torch.set_num_threads(before)
