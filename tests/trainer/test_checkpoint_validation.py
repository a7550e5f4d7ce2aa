"""The checkpoint is checked against the config before Ray starts: each mismatched key, a
truncated shard and a broken resume checkpoint give one error naming the key or the file."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from verl.models.openvla_oft.tiny import make_tiny_checkpoint
from verl.trainer.checkpoint_validation import validate_checkpoint
from verl.trainer.config_validation import ConfigError, validate_config

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "verl" / "trainer" / "config"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    return {"plain": make_tiny_checkpoint(root / "plain", seed=0),
            "proprio": make_tiny_checkpoint(root / "proprio", seed=0, use_proprio=True)}


def cfg(ckpt, tmp_path, *overrides):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        c = compose("ppo_trainer", overrides=[
            f"actor_rollout_ref.model.path={ckpt}", "trainer.device=cpu", "trainer.n_gpus_per_node=2",
            "data.train_batch_size=2", "actor_rollout_ref.actor.ppo_mini_batch_size=16",
            f"trainer.default_local_dir={tmp_path / 'run'}", *overrides])
    OmegaConf.resolve(c)
    validate_config(c)  # the keys alone are fine: only the checkpoint disagrees
    return c


def test_matching_config_passes(tiny, tmp_path):
    files = validate_checkpoint(cfg(tiny["plain"], tmp_path))
    assert files.config["action_dim"] == 7
    validate_checkpoint(cfg(tiny["proprio"], tmp_path, "actor_rollout_ref.rollout.use_proprio=True"))


@pytest.mark.parametrize("which, overrides, key, says", [
    ("plain", ["actor_rollout_ref.model.action_token_len=14"], "actor_rollout_ref.model.action_token_len=14",
     "takes 7-dim actions"),
    ("plain", ["actor_rollout_ref.model.action_chunks_len=4"], "actor_rollout_ref.model.action_chunks_len=4",
     "action_chunk=8"),
    ("plain", ["actor_rollout_ref.rollout.unnorm_key=bridge_orig"], "actor_rollout_ref.rollout.unnorm_key='bridge_orig'",
     "libero_10_no_noops"),
    ("plain", ["actor_rollout_ref.rollout.use_proprio=True"], "actor_rollout_ref.rollout.use_proprio=True",
     "no proprio projector"),
    ("proprio", [], "actor_rollout_ref.rollout.use_proprio=False", "proprio projector"),
    ("plain", ["actor_rollout_ref.actor.num_images_in_input=2", "actor_rollout_ref.rollout.num_images_in_input=2"],
     "actor_rollout_ref.actor.num_images_in_input=2", "num_images_in_input=1"),
])
def test_mismatched_key_is_named(tiny, tmp_path, which, overrides, key, says):
    with pytest.raises(ConfigError) as err:
        validate_checkpoint(cfg(tiny[which], tmp_path, *overrides))
    assert key in str(err.value) and says in str(err.value)


def test_statistics_of_another_action_dim_are_named(tiny, tmp_path):
    """A 7-dim env and model, but the statistics under unnorm_key describe 6-dim actions."""
    ckpt = make_tiny_checkpoint(tmp_path / "odd_stats", seed=0)
    stats = json.loads((ckpt / "dataset_statistics.json").read_text())
    for bound in ("q01", "q99", "mean", "std", "min", "max", "mask"):
        if bound in stats["libero_10_no_noops"]["action"]:
            stats["libero_10_no_noops"]["action"][bound] = stats["libero_10_no_noops"]["action"][bound][:6]
    (ckpt / "dataset_statistics.json").write_text(json.dumps(stats))
    with pytest.raises(ConfigError, match=r"action_token_len=7 disagrees .* unnorm_key 'libero_10_no_noops' have 6 dims"):
        validate_checkpoint(cfg(ckpt, tmp_path))


def test_continuous_action_head_checkpoint_is_refused(tmp_path):
    """An OFT checkpoint trained with the L1-regression head never trained its action tokens: refused by name."""
    ckpt = make_tiny_checkpoint(tmp_path / "l1_head", seed=0)
    (ckpt / "action_head--150000_checkpoint.pt").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"action_head--150000_checkpoint.pt.*L1-regression.*0%"):
        validate_checkpoint(cfg(ckpt, tmp_path))


def test_truncated_shard_is_named(tmp_path):
    ckpt = make_tiny_checkpoint(tmp_path / "cut", seed=0)
    shard = next(ckpt.glob("model-*.safetensors"))
    os.truncate(shard, shard.stat().st_size // 2)
    with pytest.raises(ConfigError, match="actor_rollout_ref.model.path=.* is not a loadable checkpoint") as err:
        validate_checkpoint(cfg(ckpt, tmp_path))
    assert f"weight file {shard} is truncated" in str(err.value)


def test_resume_checkpoint_is_checked(tiny, tmp_path):
    step = tmp_path / "run" / "actor" / "global_step_3"
    step.mkdir(parents=True)
    (tmp_path / "run" / "actor" / "latest_checkpointed_iteration.txt").write_text("3")
    with pytest.raises(ConfigError, match="trainer.default_local_dir: the checkpoint to resume from"):
        validate_checkpoint(cfg(tiny["plain"], tmp_path))
    for name in os.listdir(tiny["plain"]):
        (step / name).write_bytes((tiny["plain"] / name).read_bytes())
    (step / "actor_state").mkdir()
    (step / "actor_state" / "rank_0.pt").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"lacks actor_state/rank_<r>.pt for ranks \[1\]"):
        validate_checkpoint(cfg(tiny["plain"], tmp_path))
    (step / "actor_state" / "rank_1.pt").write_bytes(b"x")
    validate_checkpoint(cfg(tiny["plain"], tmp_path))


def test_cli_names_a_truncated_shard_before_ray(tmp_path):
    """main_ppo with a truncated checkpoint: exit 2 and one line naming the file, no Ray, no model."""
    ckpt = make_tiny_checkpoint(tmp_path / "cut", seed=0)
    shard = next(ckpt.glob("model-*.safetensors"))
    os.truncate(shard, shard.stat().st_size - 4096)
    proc = subprocess.run(
        [sys.executable, "-m", "verl.trainer.main_ppo", f"actor_rollout_ref.model.path={ckpt}", "trainer.device=cpu",
         "trainer.n_gpus_per_node=2", "data.train_batch_size=2", "actor_rollout_ref.actor.ppo_mini_batch_size=16",
         f"trainer.default_local_dir={tmp_path / 'run'}"],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert f"weight file {shard} is truncated" in out
    assert "Traceback" not in out and "Started a local Ray" not in out


def test_config_and_checkpoint_checks_load_no_model_code(tiny, tmp_path):
    """What runs before Ray (the keys, then the checkpoint's files) imports neither transformers nor
    timm, so a typo is reported in about a second, not after the model code has loaded."""
    script = f"""
import sys
from hydra import compose, initialize_config_dir
from verl.trainer.main_ppo import prepare_config
with initialize_config_dir(config_dir={str(CONFIG_DIR)!r}, version_base=None):
    c = compose("ppo_trainer", overrides=["actor_rollout_ref.model.path={tiny['plain']}", "trainer.device=cpu",
                "trainer.n_gpus_per_node=2", "data.train_batch_size=2",
                "actor_rollout_ref.actor.ppo_mini_batch_size=16", "trainer.default_local_dir={tmp_path / 'run'}"])
prepare_config(c)
print("loaded:", sorted(m for m in ("transformers", "timm", "ray") if m in sys.modules))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "loaded: []" in proc.stdout, proc.stdout
