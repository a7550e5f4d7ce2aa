"""The reference-style launch scripts pass only keys our config accepts, with valid values."""

import os
import stat
import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from verl.trainer.config_validation import validate_config

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "verl" / "trainer" / "config"


def captured_overrides(script: str, tmp_path: Path, env_extra: dict) -> list[str]:
    """Run the script with a `python` shim on PATH that records its arguments instead of training."""
    shim_dir = tmp_path / "bin"
    shim_dir.mkdir()
    record = tmp_path / "argv.txt"
    shim = shim_dir / "python"
    shim.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > {record}\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{shim_dir}:{os.environ['PATH']}", **env_extra}
    subprocess.run(["bash", str(ROOT / "examples" / script), "trainer.device=cpu"], check=True, env=env, timeout=60)
    argv = record.read_text().splitlines()
    assert argv[:3] == ["-u", "-m", "verl.trainer.main_ppo"]
    return argv[3:]


@pytest.mark.parametrize("script, dataset, suite", [
    ("run_openvla_oft_rl_libero.sh", "libero_10", "libero_10"),
    ("run_openvla_oft_rl_twin2.sh", "lift_pot", "robotwin2_lift_pot"),  # the reference's DATASET_NAME: the bare task
    ("run_openvla_oft_rl_twin2.sh", "robotwin2_click_bell", "robotwin2_click_bell"),
])
def test_script_overrides_validate(script, dataset, suite, tmp_path):
    ckpt = tmp_path / "sft"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    overrides = captured_overrides(script, tmp_path, {
        "EXPERIMENT_NAME": "exp", "SFT_MODEL_PATH": str(ckpt), "CKPT_PATH": str(tmp_path / "ckpt"),
        "DATASET_NAME": dataset, "NUM_GPUS": "8", "NUM_NODES": "1",
    })
    assert overrides[-1] == "trainer.device=cpu"  # user overrides come last and win
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose("ppo_trainer", overrides=overrides)
    OmegaConf.resolve(cfg)
    validate_config(cfg)
    assert cfg.data.task_suite_name == cfg.actor_rollout_ref.rollout.task_suite_name == suite
    if suite.startswith("robotwin2_"):  # the reference's RoboTwin keys, as its script sets them
        assert cfg.actor_rollout_ref.rollout.unnorm_key == f"{suite}_1k"
        assert cfg.actor_rollout_ref.model.resume is False and cfg.actor_rollout_ref.rollout.use_proprio is True
    assert cfg.trainer.default_local_dir == f"{tmp_path}/ckpt/SimpleVLA-RL/exp"
    assert cfg.actor_rollout_ref.rollout.temperature == 1.6
    assert cfg.trainer.logger == ["console", "wandb"]


@pytest.mark.parametrize("script, missing, says", [
    ("run_openvla_oft_rl_libero.sh", "EXPERIMENT_NAME", "EXPERIMENT_NAME (the run name)"),
    ("run_openvla_rl_libero_ppo.sh", "EXPERIMENT_NAME", "EXPERIMENT_NAME (the run name)"),
    ("run_openvla_oft_rl_twin2.sh", "SFT_MODEL_PATH", "the OpenVLA-OFT SFT checkpoint directory"),
    ("run_openvla_rl_libero_ppo.sh", "SFT_MODEL_PATH", "the OpenVLA checkpoint directory"),
    ("run_openvla_rl_libero_ppo.sh", "CKPT_PATH", "CKPT_PATH (where checkpoints go)"),
])
def test_script_requires_its_variables(tmp_path, script, missing, says):
    """Every launch script checks the shared variables (examples/launch_variables.sh) before Python starts."""
    env = {k: v for k, v in os.environ.items() if k not in ("EXPERIMENT_NAME", "SFT_MODEL_PATH", "CKPT_PATH")}
    env.update({k: "x" for k in ("EXPERIMENT_NAME", "SFT_MODEL_PATH", "CKPT_PATH") if k != missing})
    env["PATH"] = f"{tmp_path}:{env['PATH']}"
    (tmp_path / "python").write_text("#!/bin/sh\necho python-started >&2\nexit 7\n")  # must never be reached
    (tmp_path / "python").chmod(0o755)
    proc = subprocess.run(["bash", str(ROOT / "examples" / script)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode != 0 and says in proc.stderr and "python-started" not in proc.stderr


def test_vla_rl_ppo_recipe_validates_with_the_papers_settings(tmp_path):
    ckpt = tmp_path / "openvla"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    overrides = captured_overrides("run_openvla_rl_libero_ppo.sh", tmp_path, {
        "EXPERIMENT_NAME": "ppo", "SFT_MODEL_PATH": str(ckpt), "CKPT_PATH": str(tmp_path / "ckpt"),
        "NUM_GPUS": "8", "NUM_NODES": "1"})
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose("ppo_trainer", overrides=overrides)
    OmegaConf.resolve(cfg)
    validate_config(cfg)
    a, c = cfg.actor_rollout_ref, cfg.critic
    assert (a.model.vla, a.model.action_chunks_len, a.model.lora_rank) == ("openvla", 1, 32)
    assert (a.rollout.temperature, a.actor.optim.lr, c.optim.lr) == (1.5, 5e-6, 5e-5)
    assert (cfg.algorithm.adv_estimator, cfg.algorithm.gamma, cfg.algorithm.lam) == ("gae", 0.99, 0.95)
    assert (a.actor.clip_ratio_low, a.actor.clip_ratio_high, c.cliprange_value, c.warmup_steps) == (0.2, 0.2, 0.2, 5)
    assert cfg.data.curriculum.enable is True and cfg.data.task_suite_name == "libero_spatial"
    assert cfg.verifier.reward_coef == 1
    assert c.model.path == str(ckpt)  # the critic's backbone: the actor's checkpoint
    assert cfg.trainer.default_local_dir == f"{tmp_path}/ckpt/VLA-RL/ppo"
