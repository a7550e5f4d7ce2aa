"""Driver-side checkpoint bookkeeping: atomic saves, the 'latest' pointer, pruning, resume lookup,
and the output directory checked before any worker starts.

The worker group is a stand-in that writes (a tiny real checkpoint and 2 ranks' states) or fails
on demand (the real worker's save/load is covered by tests/workers/test_fsdp_worker.py and the
end-to-end resume test)."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from verl.models.openvla_oft.tiny import make_tiny_checkpoint
from verl.trainer.config_validation import ConfigError
from verl.trainer.ppo.ray_trainer import RayPPOTrainer
from verl.trainer.run_checkpoints import CheckpointWriteError
from verl.trainer.time_limit import TimeLimit

CONFIG_DIR = Path(__file__).resolve().parents[2] / "verl" / "trainer" / "config"


@pytest.fixture(scope="module", autouse=True)
def tiny_model(tmp_path_factory):
    FakeWorkerGroup.model = make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "model", seed=0)
    return FakeWorkerGroup.model


class FakeWorkerGroup:
    model: Path  # a tiny checkpoint, copied as the workers' part of every save

    def __init__(self):
        self.fail = False
        self.truncate = False  # a shard cut short (a full disk the writer did not notice)
        self.ranks = 2
        self.loaded = None

    def save_checkpoint(self, directory):
        shutil.copytree(self.model, directory)
        (Path(directory) / "actor_state").mkdir()
        for rank in range(self.ranks):
            (Path(directory) / "actor_state" / f"rank_{rank}.pt").write_bytes(b"state")
        if self.truncate:
            shard = next(Path(directory).glob("model-*.safetensors"))
            os.truncate(shard, shard.stat().st_size // 2)
        if self.fail:
            raise RuntimeError("node lost mid-save")

    def load_checkpoint(self, directory):
        self.loaded = directory


def trainer(tmp_path, *overrides):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir(exist_ok=True)
    (ckpt / "config.json").write_text("{}")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose("ppo_trainer", overrides=[
            f"actor_rollout_ref.model.path={ckpt}", "data.task_suite_name=reach",
            "actor_rollout_ref.rollout.task_suite_name=reach", "trainer.device=cpu", "trainer.n_gpus_per_node=2",
            "data.train_batch_size=2", f"trainer.default_local_dir={tmp_path / 'run'}", *overrides])
    OmegaConf.resolve(cfg)
    t = RayPPOTrainer(cfg)
    t.actor_wg = FakeWorkerGroup()
    return t


def test_crash_mid_save_keeps_the_previous_checkpoint(tmp_path):
    t = trainer(tmp_path)
    t.global_steps = 2
    t._save_checkpoint()
    root = tmp_path / "run" / "actor"
    assert (root / "latest_checkpointed_iteration.txt").read_text() == "2"
    t.global_steps, t.actor_wg.fail = 3, True
    with pytest.raises(RuntimeError, match="mid-save"):
        t._save_checkpoint()
    assert not (root / "global_step_3").exists()
    assert (root / "latest_checkpointed_iteration.txt").read_text() == "2"
    assert (root / "global_step_2" / "trainer_state.json").is_file()
    # a resumed run picks step 2 and restores the sampler position saved with it
    t2 = trainer(tmp_path)
    t2._maybe_resume()
    assert t2.global_steps == 2 and t2.actor_wg.loaded == str(root / "global_step_2")
    # the next successful save replaces the stale temporary directory
    t2.global_steps = 3
    t2._save_checkpoint()
    assert (root / "global_step_3").is_dir() and not (root / "global_step_3.tmp").exists()


def test_the_trainer_draws_with_the_configured_curriculum(tmp_path):
    """data.curriculum.weighting and data.n_samples reach the trainer's sampler."""
    t = trainer(tmp_path, "data.curriculum.enable=True", "data.curriculum.weighting=informative", "data.n_samples=4",
                "data.curriculum.ema=0.0")
    tasks = sorted({t.sampler.trials.task_of_index[i] for i in range(len(t.sampler))})
    t.sampler.observe(tasks[:2], [0.0, 1.0])  # the first task never solved, the second always
    s = np.array([0.0, 1.0] + [0.5] * (len(tasks) - 2))  # the others untried: neutral
    logits = (1 - s ** 4 - (1 - s) ** 4) / t.config.data.curriculum.temperature
    np.testing.assert_allclose(t.sampler.probabilities(), np.exp(logits) / np.exp(logits).sum(), rtol=1e-12)


def test_sampler_position_round_trips_through_the_checkpoint(tmp_path):
    t = trainer(tmp_path, "data.num_trials_per_task=3")
    first = t.sampler.take(5)
    t.global_steps = 1
    t._save_checkpoint()
    expected_next = t.sampler.take(7)  # crosses into the next epoch (12 prompts per epoch)
    t2 = trainer(tmp_path, "data.num_trials_per_task=3")
    t2._maybe_resume()
    assert t2.sampler.take(7) == expected_next and len(set(first)) == 5


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    t = trainer(tmp_path, "trainer.max_actor_ckpt_to_keep=2")
    for step in (1, 2, 3, 4):
        t.global_steps = step
        t._save_checkpoint()
    kept = sorted(p.name for p in (tmp_path / "run" / "actor").glob("global_step_*"))
    assert kept == ["global_step_3", "global_step_4"]


@pytest.mark.parametrize("break_it, says", [("truncate", "is truncated"), ("ranks", "lacks the state of ranks [1]")])
def test_unreadable_save_never_becomes_latest(tmp_path, break_it, says):
    t = trainer(tmp_path)
    t.global_steps = 1
    t._save_checkpoint()
    t.global_steps = 2
    if break_it == "truncate":
        t.actor_wg.truncate = True
    else:
        t.actor_wg.ranks = 1
    with pytest.raises(CheckpointWriteError, match=says.replace("[", r"\[").replace("]", r"\]")):
        t._save_checkpoint()
    root = tmp_path / "run" / "actor"
    assert (root / "latest_checkpointed_iteration.txt").read_text() == "1"
    assert sorted(p.name for p in root.glob("global_step_*")) == ["global_step_1"]  # no half-written step left


def test_unwritable_output_dir_is_reported_before_workers_start(tmp_path):
    (tmp_path / "a_file").write_text("not a directory")
    with pytest.raises(ConfigError, match="trainer.default_local_dir=.* is not writable"):
        trainer(tmp_path, f"trainer.default_local_dir={tmp_path / 'a_file' / 'run'}")


def test_nearly_full_disk_is_reported_before_workers_start(tmp_path, tiny_model, monkeypatch):
    import verl.trainer.run_checkpoints as rc

    real = shutil.disk_usage
    monkeypatch.setattr(rc.shutil, "disk_usage", lambda path: real(path)._replace(free=10_000_000))  # 10 MB
    with pytest.raises(ConfigError, match=r"has 0.01 GB free but one checkpoint of this model takes about 0.05 GB"):
        trainer(tmp_path, f"actor_rollout_ref.model.path={tiny_model}")
    trainer(tmp_path, f"actor_rollout_ref.model.path={tiny_model}", "trainer.val_only=True")  # saves nothing


def test_resume_without_trainer_state_is_refused_before_loading(tmp_path):
    """A step directory without trainer_state.json (the step and sampler position) cannot be resumed
    exactly: the error names the file and the workers are not asked to load anything."""
    t = trainer(tmp_path)
    t.global_steps = 1
    t._save_checkpoint()
    state_file = tmp_path / "run" / "actor" / "global_step_1" / "trainer_state.json"
    state_file.unlink()
    t2 = trainer(tmp_path)
    with pytest.raises(FileNotFoundError, match=f"{state_file} not found: .* is not a complete checkpoint"):
        t2._maybe_resume()
    assert t2.actor_wg.loaded is None and t2.global_steps == 0


def test_resume_path_restores_that_step_and_its_sampler_position(tmp_path):
    t = trainer(tmp_path, "data.num_trials_per_task=3")
    t.sampler.take(5)
    t.global_steps = 4
    t._save_checkpoint()
    expected_next = t.sampler.take(3)
    t.global_steps = 5
    t._save_checkpoint()  # latest is 5: resume_path must still pick step 4
    step4 = tmp_path / "run" / "actor" / "global_step_4"
    t2 = trainer(tmp_path, "data.num_trials_per_task=3", "trainer.resume_mode=resume_path",
                 f"trainer.resume_from_path={step4}")
    t2._maybe_resume()
    assert t2.global_steps == 4 and t2.actor_wg.loaded == str(step4)
    assert t2.sampler.take(3) == expected_next


def timed_fit(tmp_path, limit_s, *overrides, step_s=100.0, validate_s=30.0):
    """fit() with stand-ins for the step and the validation that take `step_s` / `validate_s` on a
    fake clock (the real loop, TimeLimit and checkpoint bookkeeping); -> (trainer, validated steps)."""
    t = trainer(tmp_path, "trainer.logger=[console]", "trainer.total_training_steps=10", *overrides)
    clock = [0.0]
    t.time_limit = TimeLimit(limit_s, clock=lambda: clock[0])
    validated = []

    def train_step():
        clock[0] += step_s
        return {"train_verify_score/all": 0.5}

    def validate():
        clock[0] += validate_s
        validated.append(t.global_steps)
        return {}

    t._train_step, t._validate = train_step, validate
    t.fit()
    assert clock[0] <= (limit_s if limit_s is not None else float("inf"))
    return t, validated


def logged_steps(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("limit_s, test_freq, stop_at, validated", [
    # steps 100 s, validations 30 s, a save not measured yet: as long as a step (100 s)
    (450.0, 4, 2, [0, 2]),  # after step 2 (230 s): 230 + 100 + 30 + 100 > 450 -> validate and save step 2
    (600.0, 4, 4, [0, 4]),  # after step 4 (430 s, validation due): 430 + 30 + 230 > 600 -> step 4 validated once
    (None, 4, 10, [0, 4, 8, 10]),
])
def test_time_limit_ends_the_run_validated_and_saved_and_resume_continues(tmp_path, limit_s, test_freq, stop_at,
                                                                          validated):
    t, seen = timed_fit(tmp_path, limit_s, f"trainer.test_freq={test_freq}")
    assert t.global_steps == stop_at and seen == validated
    root = tmp_path / "run" / "actor"
    assert sorted(p.name for p in root.glob("global_step_*")) == [f"global_step_{stop_at}"]
    stopped = {m["step"]: m["trainer/stopped_by_time_limit"] for m in logged_steps(tmp_path / "run")
               if "trainer/stopped_by_time_limit" in m}
    assert stopped == ({stop_at: 1.0} if stop_at < 10 else {})  # logged at the stop only
    # resume_mode=auto continues from the stop to the planned end
    t2, seen2 = timed_fit(tmp_path, None, f"trainer.test_freq={test_freq}")
    assert t2.global_steps == 10 and t2.actor_wg.loaded == str(root / f"global_step_{stop_at}")
    assert seen2 == ([] if stop_at == 10 else [s for s in (4, 8, 10) if s > stop_at])
