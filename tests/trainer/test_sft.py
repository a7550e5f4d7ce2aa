"""SFT: config validation before Ray, the YAML's documentation, and `main_sft` end to end on 2 CPU
workers (exact resume; its checkpoint evaluated by `main_ppo` as it is, with the same greedy result
the SFT run's own closed-loop evaluation found)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from safetensors.torch import load_file

from e2e_utils import ROOT, read_metrics, run_main
from verl.trainer.config_validation import ConfigError, validate_sft_config
from verl.utils.dataset.demo_episode import DemoEpisode

CONFIG_DIR = ROOT / "verl" / "trainer" / "config"
SOUP = "pick up the alphabet soup and place it in the basket"  # libero_object task 0
CHEESE = "pick up the cream cheese and place it in the basket"  # libero_object task 1


def synthetic_demo(seed: int, instruction: str, task_id: int, init_state: int, steps: int = 10) -> DemoEpisode:
    rng = np.random.default_rng(seed)
    direction = rng.uniform(-0.5, 0.5, size=6)
    actions = np.concatenate([np.tile(direction, (steps, 1)) + rng.normal(0, 0.05, (steps, 6)),
                              np.where(np.arange(steps) < steps // 2, -1.0, 1.0)[:, None]], axis=1).astype(np.float32)
    frames = rng.integers(0, 256, size=(steps, 128, 128, 3), dtype=np.uint8)
    return DemoEpisode(instruction=instruction, images={"agentview": frames}, actions=actions,
                       task_suite_name="libero_object", task_id=task_id, init_state_id=init_state, source=f"demo{seed}")


@pytest.fixture(scope="module")
def demos_dir(tmp_path_factory):
    """Six demos of two libero_object tasks in the LeRobot format (written by our own writer)."""
    from verl.utils.dataset.lerobot_dataset import write_lerobot_dataset

    root = tmp_path_factory.mktemp("sft_demos") / "lerobot"
    episodes = [synthetic_demo(i, SOUP if i < 3 else CHEESE, 0 if i < 3 else 1, i % 3) for i in range(6)]
    write_lerobot_dataset(root, episodes, fps=10)
    return root


@pytest.fixture(scope="module")
def init_ckpt(tmp_path_factory):
    from verl.models.openvla_oft.tiny import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("sft_init") / "tiny", seed=0, llm_layers=4)


def sft_cfg(*overrides):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose("sft_trainer", overrides=list(overrides))
    OmegaConf.resolve(cfg)
    return cfg


# ------------------------------------------------------------------------------------------ config
def test_default_sft_config_is_valid(demos_dir, init_ckpt):
    validate_sft_config(sft_cfg(f"data.train_files=[{demos_dir}]", f"actor_rollout_ref.model.path={init_ckpt}",
                                "trainer.device=cpu"))


@pytest.mark.parametrize("overrides, key", [
    (["data.train_files=[/nonexistent/demos]"], "data.train_files"),
    (["data.format=rlds"], "data.format"),
    (["data.task_suite_name=robotwin2_lift_pot"], "data.task_suite_name"),
    (["data.cameras=[agentview,eye_in_hand]"], "data.cameras"),
    (["data.batch_size=12"], "data.batch_size"),  # 8 workers
    (["data.micro_batch_size=24"], "data.micro_batch_size"),  # does not divide 32
    (["data.demos_per_task=0"], "data.demos_per_task"),
    (["actor_rollout_ref.rollout.use_proprio=True"], "actor_rollout_ref.rollout.use_proprio"),
    (["actor_rollout_ref.actor.optim.lr=0"], "actor_rollout_ref.actor.optim.lr"),
    (["actor_rollout_ref.actor.optim.betas=[1.5,0.999]"], "actor_rollout_ref.actor.optim.betas"),
    (["actor_rollout_ref.actor.optim.lr_warmup_steps=-3"], "actor_rollout_ref.actor.optim.lr_warmup_steps"),
    (["actor_rollout_ref.actor.optim.min_lr_ratio=-1"], "actor_rollout_ref.actor.optim.min_lr_ratio"),
    (["trainer.nnodes=0"], "trainer.nnodes"),
    (["trainer.save_freq=0"], "trainer.save_freq"),
    (["trainer.resume_mode=resume_path"], "trainer.resume_from_path"),
    (["eval.task_ids=[10]"], "eval.task_ids"),
    (["eval.held_out_trials_per_task=50"], "eval.held_out_trials_per_task"),
    (["eval.freq=0"], "eval.freq"),
    (["trainer.logger=[console,mlflow]"], "trainer.logger"),
    (["trainer.worker_timeout_s=0"], "trainer.worker_timeout_s"),
    (["trainer.time_limit_s=-5"], "trainer.time_limit_s"),
    (["eval.temperature=-1"], "eval.temperature"),
    (["trainer.cpu_threads_per_worker=0"], "trainer.cpu_threads_per_worker"),
    (["env.max_consecutive_failures=0"], "env.max_consecutive_failures"),
])
def test_bad_sft_values_name_the_key(demos_dir, init_ckpt, overrides, key):
    cfg = sft_cfg(f"data.train_files=[{demos_dir}]", f"actor_rollout_ref.model.path={init_ckpt}", "trainer.device=cpu",
                  *overrides)
    with pytest.raises(ConfigError) as err:
        validate_sft_config(cfg)
    assert key in str(err.value)


def test_missing_required_keys_are_named(init_ckpt):
    with pytest.raises(Exception, match="train_files"):
        validate_sft_config(sft_cfg(f"actor_rollout_ref.model.path={init_ckpt}", "trainer.device=cpu"))


def test_every_sft_field_has_a_comment_and_env_matches_rl():
    text = (CONFIG_DIR / "sft_trainer.yaml").read_text()
    undocumented = [line.strip() for line in text.splitlines()
                    if re.match(r"^\s*[a-z_0-9]+:", line) and "#" not in line and not line.rstrip().endswith(":")]
    assert not undocumented
    # the env section is the RL one (same keys and defaults): one meaning per key across entry points
    sft = OmegaConf.load(CONFIG_DIR / "sft_trainer.yaml").env
    rl = OmegaConf.load(CONFIG_DIR / "ppo_trainer.yaml").env
    assert OmegaConf.to_container(sft) == OmegaConf.to_container(rl)


# ------------------------------------------------------------------------------------------ end to end
def sft_overrides(demos_dir, init_ckpt, run_dir, *extra):
    return [f"data.train_files=[{demos_dir}]", f"actor_rollout_ref.model.path={init_ckpt}", "trainer.device=cpu",
            "trainer.n_gpus_per_node=2", "trainer.ray_num_cpus=3", "data.batch_size=8", "data.micro_batch_size=4",
            "data.val_batch_size=8", "trainer.log_freq=1", f"trainer.default_local_dir={run_dir}",
            "trainer.logger=[console]", *extra]


def run_sft(overrides, timeout=600):
    proc = subprocess.run([sys.executable, "-m", "verl.trainer.main_sft", *overrides], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    if proc.returncode != 0:
        raise AssertionError(f"main_sft failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


RESUME_SETTINGS = ("trainer.total_training_steps=4", "trainer.test_freq=2")


@pytest.fixture(scope="module")
def straight_sft(demos_dir, init_ckpt, tmp_path_factory):
    """4 uninterrupted SFT steps: what every resumed run must reproduce."""
    straight = tmp_path_factory.mktemp("straight_sft")
    run_sft(sft_overrides(demos_dir, init_ckpt, straight, *RESUME_SETTINGS))
    return straight


def assert_same_steps_3_and_4(straight: Path, resumed: Path) -> None:
    a, b = read_metrics(straight), read_metrics(resumed)
    for step in (3, 4):
        for key in ("sft/loss", "sft/token_acc", "sft/grad_norm"):
            assert a[step][key] == pytest.approx(b[step][key], rel=1e-6), (step, key)
    assert a[4]["val/loss"] == pytest.approx(b[4]["val/loss"], rel=1e-6)
    wa = load_file(str(next((straight / "actor" / "global_step_4").glob("model-*.safetensors"))))
    wb = load_file(str(next((resumed / "actor" / "global_step_4").glob("model-*.safetensors"))))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
def test_sft_exact_resume(demos_dir, init_ckpt, straight_sft, tmp_path):
    """4 steps straight == 2 steps, then a resumed run to 4: same losses, same weights."""
    resumed = tmp_path / "resumed"
    run_sft(sft_overrides(demos_dir, init_ckpt, resumed, "trainer.total_training_steps=2", "trainer.test_freq=2"))
    run_sft(sft_overrides(demos_dir, init_ckpt, resumed, *RESUME_SETTINGS))
    a = read_metrics(straight_sft)
    assert a[4]["sft/loss"] < a[1]["sft/loss"]
    timed = [step for step in a if "timing/step" in a[step]]
    assert 4 in timed
    for step in timed:  # the driver's wait for the next batch is part of the step, never more
        assert 0 <= a[step]["timing/batch_wait"] <= a[step]["timing/step"], step
    assert_same_steps_3_and_4(straight_sft, resumed)


@pytest.mark.slow
def test_a_time_limited_sft_run_stops_validated_and_saved_and_resumes_exactly(demos_dir, init_ckpt, straight_sft,
                                                                             tmp_path):
    """trainer.time_limit_s=1 has passed by the end of step 1 (Ray and the model take longer to
    start): the validation loss runs although test_freq=2, step 1 is saved, the run says so and exits
    0; run again without a limit it reaches step 4, equal to the uninterrupted run."""
    limited = tmp_path / "limited"
    proc = run_sft(sft_overrides(demos_dir, init_ckpt, limited, *RESUME_SETTINGS, "trainer.time_limit_s=1"))
    metrics = read_metrics(limited)
    assert max(metrics) == 1 and metrics[1]["trainer/stopped_by_time_limit"] == 1.0 and "val/loss" in metrics[1]
    assert (limited / "actor" / "latest_checkpointed_iteration.txt").read_text().strip() == "1"
    assert "trainer.time_limit_s=1: stopped after step 1 of 4" in proc.stdout + proc.stderr
    run_sft(sft_overrides(demos_dir, init_ckpt, limited, *RESUME_SETTINGS))
    assert "trainer/stopped_by_time_limit" not in read_metrics(limited)[4]
    assert_same_steps_3_and_4(straight_sft, limited)


@pytest.mark.slow
def test_sft_checkpoint_runs_in_main_ppo_with_the_same_greedy_result(demos_dir, init_ckpt, tmp_path):
    """SFT with a closed-loop evaluation on real LIBERO, then main_ppo val_only on the checkpoint, same
    held-out states: greedy rollouts are deterministic, so both find the same episodes' outcome and length."""
    sft_dir = tmp_path / "sft"
    held_out = ["eval.task_ids=[0,1]", "eval.held_out_trials_per_task=1", "actor_rollout_ref.rollout.max_env_steps=16",
                "env.num_workers=1", "env.envs_per_worker=2"]
    run_sft(sft_overrides(demos_dir, init_ckpt, sft_dir, "trainer.total_training_steps=2", "eval.freq=2", *held_out),
            timeout=900)
    sft_metrics = read_metrics(sft_dir)[2]
    ckpt = sft_dir / "actor" / "global_step_2"
    stats = json.loads((ckpt / "dataset_statistics.json").read_text())
    assert list(stats) == ["libero_object"] and stats["libero_object"]["num_trajectories"] == 4  # 2 of 3 demos/task
    assert stats["libero_object"]["action"]["mask"] == [True] * 6 + [False]

    rl_dir = tmp_path / "rl"
    run_main([f"actor_rollout_ref.model.path={ckpt}", "data.task_suite_name=libero_object",
              "actor_rollout_ref.rollout.task_suite_name=libero_object", "actor_rollout_ref.rollout.unnorm_key=libero_object",
              "data.task_ids=[0,1]", "data.val_split=held_out", "data.held_out_trials_per_task=1",
              "data.num_trials_per_task=50", "data.val_batch_size=2", "trainer.val_only=True", "trainer.device=cpu",
              "trainer.n_gpus_per_node=1", "data.train_batch_size=2", "actor_rollout_ref.rollout.max_env_steps=16",
              "env.num_workers=1", "env.envs_per_worker=2", "trainer.logger=[console]",
              f"trainer.default_local_dir={rl_dir}"], timeout=900)
    rl_metrics = read_metrics(rl_dir)[0]
    for key in ("val/test_score/all", "val/test_score/libero_object/0", "val/test_score/libero_object/1",
                "val/finish_step_mean", "val/episodes"):
        assert rl_metrics[key] == sft_metrics[key], key
    assert rl_metrics["val/episodes"] == 2
    # both write the same validation report: per-episode records of the same held-out episodes
    def episodes(run_dir, step):
        rows = [json.loads(line) for line in (run_dir / "validation" / f"step_{step}" / "episodes.jsonl").read_text().splitlines()]
        return sorted((r["suite"], r["task_id"], r["init_state"], r["success"], r["steps"]) for r in rows)
    assert episodes(sft_dir, 2) == episodes(rl_dir, 0) and len(episodes(sft_dir, 2)) == 2
    report = json.loads((sft_dir / "validation" / "step_2" / "report.json").read_text())
    assert report["step"] == 2 and "after SFT step 2" in report["weights"]
    assert report["success_rate"] == sft_metrics["val/test_score/all"]


def test_demo_from_an_evaluation_init_state_is_refused_before_ray(tmp_path, init_ckpt, demos_dir, monkeypatch):
    from verl.trainer.sft import ray_sft_trainer

    leaky = [synthetic_demo(0, SOUP, 0, 3), synthetic_demo(1, SOUP, 0, 49)]  # init state 49 is held out
    monkeypatch.setattr(ray_sft_trainer.sd, "load_demos", lambda *a, **k: leaky)
    cfg = sft_cfg(f"data.train_files=[{demos_dir}]", f"actor_rollout_ref.model.path={init_ckpt}", "trainer.device=cpu",
                  "trainer.n_gpus_per_node=1", "data.val_demos_per_task=0", f"trainer.default_local_dir={tmp_path / 'run'}")
    validate_sft_config(cfg)
    with pytest.raises(ConfigError, match="init state 49 of task 0"):
        ray_sft_trainer.RaySFTTrainer(cfg)


@pytest.mark.slow
def test_lora_sft_writes_merged_weights_that_main_ppo_loads(demos_dir, init_ckpt, tmp_path):
    """LoRA SFT: the saved safetensors hold base + B @ A merged (what rollouts use), the adapter is
    kept for resume, and only LoRA factors were trained (the merged delta is low rank)."""
    from verl.models.openvla_oft import load_openvla_checkpoint
    from verl.models.openvla_oft.checkpoint import read_checkpoint_weights

    run_dir = tmp_path / "lora"
    run_sft(sft_overrides(demos_dir, init_ckpt, run_dir, "trainer.total_training_steps=3", "trainer.test_freq=-1",
                          "actor_rollout_ref.model.lora_rank=4", "actor_rollout_ref.actor.optim.lr=1e-2"))
    ckpt = run_dir / "actor" / "global_step_3"
    assert (ckpt / "lora_adapter.pt").is_file()
    base, merged = read_checkpoint_weights(init_ckpt), read_checkpoint_weights(ckpt)
    key = next(k for k in base if "layers.0.self_attn.q_proj.weight" in k)
    delta = merged[key].float() - base[key].float()
    assert delta.abs().max() > 0 and torch.linalg.matrix_rank(delta).item() <= 4
    embed = next(k for k in base if k.endswith("embed_tokens.weight"))
    assert torch.equal(merged[embed], base[embed])  # not a LoRA target: untouched
    load_openvla_checkpoint(ckpt)  # a plain checkpoint again
