"""The config surface: reference keys exist, every field is documented, bad values are named."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from verl.trainer.config_validation import ConfigError, validate_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "verl" / "trainer" / "config"
SNAPSHOT = Path(__file__).parent / "fixtures" / "config_keys.txt"

# SimpleVLA-RL's LIBERO and RoboTwin scripts set these (spec section 2); they must keep existing.
REFERENCE_KEYS = """
data.task_suite_name data.num_trials_per_task data.n_samples data.filter_accuracy
data.accuracy_lower_bound data.accuracy_upper_bound data.oversample_factor data.train_batch_size
data.val_batch_size data.max_prompt_length data.max_response_length
actor_rollout_ref.model.path actor_rollout_ref.model.vla actor_rollout_ref.model.action_token_len
actor_rollout_ref.model.action_chunks_len actor_rollout_ref.model.enable_gradient_checkpointing
actor_rollout_ref.model.use_remove_padding actor_rollout_ref.model.lora_rank actor_rollout_ref.model.lora_alpha
actor_rollout_ref.model.target_modules
actor_rollout_ref.actor.optim.lr actor_rollout_ref.actor.optim.warmup_style actor_rollout_ref.actor.ppo_mini_batch_size
actor_rollout_ref.actor.ppo_micro_batch_size actor_rollout_ref.actor.use_dynamic_bsz
actor_rollout_ref.actor.fsdp_config.param_offload actor_rollout_ref.actor.fsdp_config.grad_offload
actor_rollout_ref.actor.fsdp_config.optimizer_offload actor_rollout_ref.actor.grad_clip
actor_rollout_ref.actor.clip_ratio_high actor_rollout_ref.actor.clip_ratio_low actor_rollout_ref.actor.entropy_coeff
actor_rollout_ref.actor.num_images_in_input actor_rollout_ref.actor.traj_mini_batch_size
actor_rollout_ref.rollout.num_images_in_input actor_rollout_ref.rollout.use_proprio
actor_rollout_ref.rollout.val_micro_batch_size actor_rollout_ref.rollout.micro_batch_size
actor_rollout_ref.rollout.temperature actor_rollout_ref.rollout.experiment_name actor_rollout_ref.rollout.unnorm_key
actor_rollout_ref.rollout.model_family actor_rollout_ref.rollout.task_suite_name actor_rollout_ref.rollout.num_steps_wait
actor_rollout_ref.rollout.pretrained_checkpoint actor_rollout_ref.rollout.center_crop
actor_rollout_ref.rollout.max_prompt_length actor_rollout_ref.rollout.log_prob_micro_batch_size
actor_rollout_ref.rollout.tensor_model_parallel_size actor_rollout_ref.rollout.name
actor_rollout_ref.rollout.gpu_memory_utilization actor_rollout_ref.rollout.twin2_task_config
actor_rollout_ref.rollout.twin2_instruction_type
actor_rollout_ref.ref.log_prob_micro_batch_size actor_rollout_ref.ref.fsdp_config.param_offload
algorithm.kl_ctrl.kl_coef algorithm.adv_estimator algorithm.adv_params.verifier_gamma
algorithm.adv_params.reward_model_gamma verifier.reward_coef
trainer.logger trainer.project_name trainer.experiment_name trainer.default_local_dir trainer.n_gpus_per_node
trainer.nnodes trainer.save_freq trainer.test_freq trainer.total_epochs trainer.val_only trainer.val_before_train
trainer.runtime_env trainer.wandb_mode
""".split()


def leaf_keys(cfg, prefix=""):
    if not isinstance(cfg, dict):
        cfg = OmegaConf.to_container(cfg, resolve=False)
    keys = []
    for k, v in cfg.items():
        full = f"{prefix}{k}"
        if isinstance(v, dict):
            keys += leaf_keys(v, full + ".")
        else:
            keys.append(full)
    return keys


def raw_config():
    cfg = OmegaConf.load(CONFIG_DIR / "ppo_trainer.yaml")
    cfg.pop("hydra")
    return cfg


def test_reference_keys_exist():
    keys = set(leaf_keys(raw_config()))
    missing = [k for k in REFERENCE_KEYS if k not in keys]
    assert not missing


def test_config_surface_is_frozen():
    """Adding, renaming or removing a key must be deliberate: update the snapshot in the same change."""
    keys = leaf_keys(raw_config())
    assert keys == SNAPSHOT.read_text().split(), "config keys drifted from tests/trainer/fixtures/config_keys.txt"


def test_every_field_has_a_comment():
    undocumented = []
    for line in (CONFIG_DIR / "ppo_trainer.yaml").read_text().splitlines():
        if re.match(r"^\s*[a-z_0-9]+:", line) and "#" not in line:
            section_header = line.rstrip().endswith(":")
            if not section_header:
                undocumented.append(line.strip())
    assert not undocumented


@pytest.fixture
def make_cfg(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")

    def _make(*overrides):
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
            cfg = compose("ppo_trainer", overrides=[f"actor_rollout_ref.model.path={ckpt}", *overrides])
        OmegaConf.resolve(cfg)
        return cfg

    return _make


def test_default_reference_config_is_valid(make_cfg):
    validate_config(make_cfg("trainer.device=cpu"))


def test_ppo_with_critic_and_curriculum_is_valid_and_the_critic_follows_the_actor(make_cfg):
    cfg = make_cfg("trainer.device=cpu", "algorithm.adv_estimator=gae", "data.curriculum.enable=True",
                   "critic.warmup_steps=5", "actor_rollout_ref.actor.ppo_mini_batch_size=64")
    validate_config(cfg)
    assert cfg.critic.model.path == cfg.actor_rollout_ref.model.path  # the actor's checkpoint by default
    assert cfg.critic.ppo_mini_batch_size == 64
    validate_config(make_cfg("trainer.device=cpu", "env.cpu_cores=[0]"))


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["data.accuracy_lower_bound=0.95"], "data.accuracy_lower_bound"),
        (["data.accuracy_upper_bound=1.5"], "data.accuracy_upper_bound"),
        (["data.train_batch_size=60"], "data.train_batch_size"),  # 8 workers
        (["data.task_suite_name=libero_11", "actor_rollout_ref.rollout.task_suite_name=libero_11"], "data.task_suite_name"),
        (["actor_rollout_ref.rollout.task_suite_name=libero_goal"], "actor_rollout_ref.rollout.task_suite_name"),
        (["actor_rollout_ref.model.vla=pi0"], "actor_rollout_ref.model.vla"),
        (["actor_rollout_ref.actor.ppo_mini_batch_size=100"], "actor_rollout_ref.actor.ppo_mini_batch_size"),
        (["actor_rollout_ref.actor.use_dynamic_bsz=True"], "actor_rollout_ref.actor.use_dynamic_bsz"),
        (["actor_rollout_ref.rollout.temperature=0"], "actor_rollout_ref.rollout.temperature"),
        (["trainer.logger=[console,mlflow]"], "trainer.logger"),
        (["trainer.wandb_mode=maybe"], "trainer.wandb_mode"),
        (["trainer.save_freq=0"], "trainer.save_freq"),
        (["trainer.resume_mode=resume_path"], "trainer.resume_from_path"),
        (["trainer.runtime_env=/nonexistent/align.json"], "trainer.runtime_env"),
        (["algorithm.adv_estimator=gae", "critic.warmup_steps=-1"], "critic.warmup_steps"),
        (["algorithm.adv_estimator=gae", "critic.cliprange_value=0"], "critic.cliprange_value"),
        (["algorithm.adv_estimator=gae", "critic.ppo_mini_batch_size=3"], "critic.ppo_mini_batch_size"),
        (["algorithm.adv_estimator=gae", "critic.model.path=/nonexistent/critic"], "critic.model.path"),
        (["algorithm.adv_estimator=gae", "trainer.total_training_steps=5", "critic.warmup_steps=5"], "critic.warmup_steps"),
        (["algorithm.gamma=1.5"], "algorithm.gamma"),
        (["algorithm.whiten_advantages=maybe"], "algorithm.whiten_advantages"),
        (["data.curriculum.temperature=0"], "data.curriculum.temperature"),
        (["data.curriculum.ema=1.0"], "data.curriculum.ema"),
        (["data.curriculum.weighting=easiest"], "data.curriculum.weighting"),
        (["data.task_balanced=maybe"], "data.task_balanced"),
        (["actor_rollout_ref.actor.use_rollout_log_probs=1"], "actor_rollout_ref.actor.use_rollout_log_probs"),
        (["trainer.entropy_after_update=yes"], "trainer.entropy_after_update"),
        (["data.task_balanced=True", "data.curriculum.enable=True"], "data.task_balanced"),
        (["env.reach.num_targets=2", "env.reach.target_distance=[0.3,0.5,0.7]"], "env.reach.target_distance"),
        (["env.reach.target_distance=0"], "env.reach.target_distance"),
        (["algorithm.adv_estimator=ppo2"], "algorithm.adv_estimator"),
        (["actor_rollout_ref.rollout.num_images_in_input=2"], "actor_rollout_ref.rollout.num_images_in_input"),
        (["data.n_samples=1"], "data.filter_accuracy"),
        (["env.cpu_cores=[]"], "env.cpu_cores"),
        (["env.max_consecutive_failures=0"], "env.max_consecutive_failures"),
        (["env.libero_cached_tasks=0"], "env.libero_cached_tasks"),
        (["env.restart_window_s=0"], "env.restart_window_s"),
        (["trainer.worker_timeout_s=0"], "trainer.worker_timeout_s"),
        (["trainer.max_worker_restarts=-1"], "trainer.max_worker_restarts"),
        (["trainer.time_limit_s=0"], "trainer.time_limit_s"),
        (["trainer.time_limit_s=true"], "trainer.time_limit_s"),
        (["trainer.time_limit_s=1h"], "trainer.time_limit_s"),
        (["actor_rollout_ref.rollout.val_temperature=-0.5"], "actor_rollout_ref.rollout.val_temperature"),
        (["actor_rollout_ref.rollout.val_temperature=hot"], "actor_rollout_ref.rollout.val_temperature"),
        (["trainer.cpu_threads_per_worker=0"], "trainer.cpu_threads_per_worker"),
        (["env.cpu_cores=[1,-2]"], "env.cpu_cores"),
        (["actor_rollout_ref.actor.optim.betas=[0.9]"], "actor_rollout_ref.actor.optim.betas"),
        (["actor_rollout_ref.actor.optim.betas=[0.9,1.0]"], "actor_rollout_ref.actor.optim.betas"),
        (["actor_rollout_ref.actor.optim.weight_decay=-0.1"], "actor_rollout_ref.actor.optim.weight_decay"),
        (["actor_rollout_ref.actor.optim.lr_warmup_steps=-2"], "actor_rollout_ref.actor.optim.lr_warmup_steps"),
        (["actor_rollout_ref.actor.optim.lr_warmup_steps=1.5"], "actor_rollout_ref.actor.optim.lr_warmup_steps"),
        (["actor_rollout_ref.actor.optim.min_lr_ratio=2"], "actor_rollout_ref.actor.optim.min_lr_ratio"),
        (["algorithm.adv_estimator=gae", "critic.optim.betas=[0.9,0.999,0.5]"], "critic.optim.betas"),
        (["algorithm.adv_estimator=gae", "critic.optim.lr_warmup_steps=-5"], "critic.optim.lr_warmup_steps"),
        (["trainer.total_training_steps=true"], "trainer.total_training_steps"),
        (["trainer.max_actor_ckpt_to_keep=true"], "trainer.max_actor_ckpt_to_keep"),
        (["trainer.nnodes=0"], "trainer.nnodes"),
        (["trainer.n_gpus_per_node=two"], "trainer.n_gpus_per_node"),
        (["env.cpu_cores=one"], "env.cpu_cores"),
        (["data.task_ids=[10]"], "data.task_ids"),  # libero_10 has tasks 0..9
        (["data.task_ids=[1,1]"], "data.task_ids"),
        (["data.task_ids=[]"], "data.task_ids"),
        (["data.task_ids=[a]"], "data.task_ids"),
        (["data.task_ids=3"], "data.task_ids"),
        (["data.task_suite_name=reach", "actor_rollout_ref.rollout.task_suite_name=reach", "env.reach.num_targets=4",
          "data.task_ids=[4]"], "data.task_ids"),
    ],
)
def test_bad_values_name_the_key(make_cfg, overrides, key):
    with pytest.raises(ConfigError) as err:
        validate_config(make_cfg("trainer.device=cpu", *overrides))
    assert key in str(err.value)


def test_task_ids_subset_is_valid(make_cfg):
    validate_config(make_cfg("trainer.device=cpu", "data.task_ids=[0,9,3]"))
    validate_config(make_cfg("trainer.device=cpu", "data.task_suite_name=reach",
                             "actor_rollout_ref.rollout.task_suite_name=reach", "env.reach.num_targets=4",
                             "data.task_ids=[3]"))


def test_evaluate_checkpoint_passes_task_ids_to_the_config(tmp_path, capsys):
    """--task-ids becomes data.task_ids; a bad id is refused by the config validation before Ray."""
    import importlib.util

    script = CONFIG_DIR.parents[2] / "scripts" / "evaluate_checkpoint.py"
    spec = importlib.util.spec_from_file_location("evaluate_checkpoint", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    assert module.main([str(ckpt), "--suite", "libero_goal", "--task-ids", "2,10", "trainer.device=cpu"]) == 2
    assert "data.task_ids=[2, 10] is invalid" in capsys.readouterr().err


def test_missing_model_path_is_named(make_cfg, tmp_path):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose("ppo_trainer", overrides=["trainer.device=cpu"])
    with pytest.raises(ConfigError, match="actor_rollout_ref.model.path is required"):
        validate_config(cfg)
    with pytest.raises(ConfigError, match="config.json not found"):
        validate_config(make_cfg("trainer.device=cpu", f"actor_rollout_ref.model.path={tmp_path / 'nope'}"))


def test_cli_rejects_bad_value_before_ray(tmp_path):
    """The entry point fails with one line naming the key, before Ray starts or a model loads."""
    proc = subprocess.run(
        [sys.executable, "-m", "verl.trainer.main_ppo", f"actor_rollout_ref.model.path={tmp_path}",
         "trainer.device=cpu", f"trainer.default_local_dir={tmp_path}/run", "data.accuracy_lower_bound=0.95"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 2
    out = proc.stdout + proc.stderr
    assert "data.accuracy_lower_bound=0.95 is above data.accuracy_upper_bound=0.9" in out
    assert "Traceback" not in out and "ray" not in out.lower().replace("array", "")
