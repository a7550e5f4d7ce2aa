"""Validation people can read: video flags capped per task, per-task metrics, the console table,
report.json and episodes.jsonl, and val_only evaluating the weights it was given."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from omegaconf import OmegaConf

from verl.protocol import DataProto
from verl.trainer.ppo.ray_trainer import RayPPOTrainer
from verl.trainer.run_checkpoints import RunCheckpoints
from verl.trainer.sft.ray_sft_trainer import RaySFTTrainer
from verl.trainer.validation import build_report, validation_episodes
from verl.utils.dataset import RobDataset
from verl.utils.video import episode_video_name
from verl.workers import trajectory as tj


class ScriptedWorkers:
    """A worker group whose greedy episodes succeed on even trials, after 8 * (trial + 1) steps."""

    def __init__(self):
        self.prompts = []

    def generate_sequences(self, prompts: DataProto) -> DataProto:
        self.prompts.append(prompts)
        trials = np.array(prompts.non_tensor_batch[tj.TRIAL_ID], dtype=np.int64)
        out = DataProto.from_dict(
            tensors={tj.COMPLETE: torch.from_numpy(trials % 2 == 0), tj.FINISH_STEP: torch.from_numpy(8 * (trials + 1)),
                     tj.FAULTED: torch.from_numpy(trials == 3)},
            non_tensors={tj.INSTRUCTION: np.array([f"reach target {t}" for t in prompts.non_tensor_batch[tj.TASK_ID]],
                                                  dtype=object)})
        out.meta_info["metrics"] = {"rollout/x": [1.0]}
        return out.union(prompts)


def reach_val_set() -> RobDataset:
    return RobDataset("reach", 4, split="val", num_tasks=3)  # 3 tasks x 4 trials, in task order


def test_videos_are_capped_per_task_and_named_by_uid(tmp_path):
    workers = ScriptedWorkers()
    episodes = validation_episodes(workers, reach_val_set(), batch_size=5, seed=0, step=6, max_videos_per_task=1)
    flags = np.concatenate([p.non_tensor_batch[tj.RECORD_VIDEO] for p in workers.prompts]).astype(bool)
    tasks = np.concatenate([p.non_tensor_batch[tj.TASK_ID] for p in workers.prompts]).astype(int)
    assert flags.sum() == 3 and sorted(tasks[flags]) == [0, 1, 2]  # one per task, across rounds of 5
    assert len(episodes) == 12 and tj.UID in episodes.non_tensor_batch

    # the pool names a recorded episode's file by its uid: the report finds exactly those
    video_dir = tmp_path / "videos"
    video_dir.mkdir()
    recorded = [i for i in range(12) if episodes.non_tensor_batch[tj.RECORD_VIDEO][i]]
    for i in recorded:
        nt = episodes.non_tensor_batch
        name = episode_video_name(6, nt[tj.TASK_SUITE_NAME][i], nt[tj.TASK_ID][i], nt[tj.TRIAL_ID][i],
                                  bool(episodes.batch[tj.COMPLETE][i]), nt[tj.UID][i])
        (video_dir / name).write_bytes(b"mp4")
    report = build_report(episodes, step=6, weights="/ckpt", video_dir=str(video_dir))
    assert [i for i, r in enumerate(report.episodes) if r["video"]] == recorded
    assert report.videos_by_task() == {f"val/videos/reach/{t}": [report.episodes[i]["video"]]
                                       for t, i in zip(range(3), recorded)}

    no_cap = ScriptedWorkers()
    validation_episodes(no_cap, reach_val_set(), batch_size=12, seed=0, step=6)
    assert tj.RECORD_VIDEO not in no_cap.prompts[0].non_tensor_batch  # the rollout then records every episode


def test_report_metrics_table_and_files(tmp_path):
    episodes = validation_episodes(ScriptedWorkers(), reach_val_set(), batch_size=12, seed=0, step=3)
    report = build_report(episodes, step=3, weights="/runs/a/actor/global_step_3")
    m = report.metrics
    assert m["val/test_score/all"] == 0.5 and m["val/test_score/reach"] == 0.5
    assert m["val/test_score/reach/0"] == m["val/test_score/reach/2"] == 0.5  # trials 0..3: 0 and 2 succeed
    assert m["val/test_score/reach/1"] == 0.5 and m["val/faulted_episodes"] == 3.0

    table = report.table()
    assert "validation at step 3: success 0.500 (6/12 episodes, 3 faulted, greedy)" in table
    assert "weights: /runs/a/actor/global_step_3" in table
    row = next(line for line in table.splitlines() if line.startswith("reach") and " 1 " in line[:30])
    assert "0.500" in row and "2/4" in row and "20.0" in row and "reach target 1" in row  # mean of 8, 16, 24, 32

    directory = report.write(tmp_path)
    assert directory == tmp_path / "validation" / "step_3"
    saved = json.loads((directory / "report.json").read_text())
    assert saved["weights"] == "/runs/a/actor/global_step_3" and saved["success_rate"] == 0.5
    assert saved["decoding"] == "greedy" and saved["metrics"]["val/temperature"] == 0.0
    assert saved["suites"] == {"reach": {"episodes": 12, "successes": 6, "success_rate": 0.5}}
    assert [(t["task_id"], t["successes"], t["episodes"]) for t in saved["tasks"]] == [(0, 2, 4), (1, 2, 4), (2, 2, 4)]
    lines = [json.loads(line) for line in (directory / "episodes.jsonl").read_text().splitlines()]
    assert len(lines) == 12
    assert lines[1] == {"suite": "reach", "task_id": 0, "init_state": 1, "seed": lines[1]["seed"],
                        "data_source": "reach", "instruction": "reach target 0", "success": False, "steps": 16,
                        "faulted": False, "video": None}


def test_sampled_validation_asks_the_workers_to_sample_and_says_so_in_the_report(tmp_path):
    workers = ScriptedWorkers()
    episodes = validation_episodes(workers, reach_val_set(), batch_size=5, seed=4, step=2, temperature=0.7)
    assert [p.meta_info["greedy"] for p in workers.prompts] == [False] * 3  # rounds of 5, 5, 2
    assert all(p.meta_info["temperature"] == 0.7 and p.meta_info["validation"] for p in workers.prompts)
    assert [p.meta_info["seed"] for p in workers.prompts] == [4000, 4001, 4002]
    report = build_report(episodes, step=2, weights="/ckpt", temperature=0.7)
    assert report.metrics["val/temperature"] == 0.7 and report.decoding == "sampled at T=0.7"
    assert "(6/12 episodes, 3 faulted, sampled at T=0.7)" in report.table()
    written = report.write(tmp_path)
    assert written == tmp_path / "validation" / "step_2_T0.7"
    assert json.loads((written / "report.json").read_text())["decoding"] == "sampled at T=0.7"


def _validating(trainer_class, tmp_path: Path, config: dict):
    """A trainer with only what its validation reads: `config`, scripted workers, the reach val set."""
    trainer = trainer_class.__new__(trainer_class)
    trainer.config = OmegaConf.create(config)
    trainer.actor_wg = trainer.wg = ScriptedWorkers()
    trainer.val_dataset = trainer.eval_dataset = reach_val_set()
    trainer.weights, trainer.weights_step, trainer.global_steps = "/ckpt", 0, 2
    trainer.progress, trainer.tracking = None, None
    return trainer


def test_both_trainers_validate_at_the_configured_temperature(tmp_path):
    rollout = {"val_temperature": 0.7, "max_videos_per_task": None, "save_video": False}
    rl = _validating(RayPPOTrainer, tmp_path / "rl", {
        "data": {"val_batch_size": 5}, "actor_rollout_ref": {"rollout": rollout},
        "trainer": {"seed": 3, "default_local_dir": str(tmp_path / "rl")}})
    sft = _validating(RaySFTTrainer, tmp_path / "sft", {
        "eval": {"batch_size": 5, "temperature": 0.7}, "actor_rollout_ref": {"model": {"path": "/ckpt"}, "rollout": rollout},
        "trainer": {"seed": 3, "default_local_dir": str(tmp_path / "sft")}})
    for trainer, validate in ((rl, rl._validate), (sft, sft._evaluate_closed_loop)):
        metrics = validate()
        sent = [p.meta_info for p in trainer.actor_wg.prompts]
        assert len(sent) == 3 and all(m["temperature"] == 0.7 and not m["greedy"] for m in sent)
        assert len({m["seed"] for m in sent}) == 3  # each round its own draws
        assert metrics["val/temperature"] == 0.7
        report = json.loads((Path(trainer.config.trainer.default_local_dir) / "validation" / "step_2_T0.7" / "report.json").read_text())
        assert report["decoding"] == "sampled at T=0.7"
    rl.config.actor_rollout_ref.rollout.val_temperature = 0
    rl.actor_wg.prompts.clear()
    assert rl._validate()["val/temperature"] == 0.0
    assert all(p.meta_info["greedy"] and p.meta_info["temperature"] is None for p in rl.actor_wg.prompts)
    # the same step evaluated greedy and sampled: two reports, neither replaced
    reports = sorted(d.name for d in (tmp_path / "rl" / "validation").iterdir())
    assert reports == ["step_2", "step_2_T0.7"]
    assert json.loads((tmp_path / "rl" / "validation" / "step_2" / "report.json").read_text())["decoding"] == "greedy"


def _val_only_trainer(tmp_path: Path, resume_mode: str, resume_from_path=None) -> RayPPOTrainer:
    """A trainer as fit() sees it in val_only, with a run directory that holds a checkpoint at step 5."""
    (tmp_path / "actor" / "global_step_5").mkdir(parents=True)
    (tmp_path / "actor" / "latest_checkpointed_iteration.txt").write_text("5")
    trainer = RayPPOTrainer.__new__(RayPPOTrainer)
    trainer.config = OmegaConf.create({"trainer": {"resume_mode": resume_mode, "resume_from_path": resume_from_path}})
    trainer.checkpoints = RunCheckpoints(str(tmp_path))
    trainer.weights, trainer.weights_step, trainer.global_steps = "/models/sft", 0, 0
    trainer.loaded = []
    trainer._resume_from = lambda directory: trainer.loaded.append(Path(directory))
    return trainer


def test_val_only_evaluates_model_path_unless_a_checkpoint_is_named(tmp_path, caplog):
    caplog.set_level("INFO")
    auto = _val_only_trainer(tmp_path / "auto", "auto")
    auto._resume_for_val_only()
    assert auto.loaded == [] and "val_only: evaluating /models/sft" in caplog.text
    assert "not the latest checkpoint" in caplog.text

    named = _val_only_trainer(tmp_path / "named", "resume_path", str(tmp_path / "named" / "actor" / "global_step_5"))
    named._resume_for_val_only()
    assert named.loaded == [tmp_path / "named" / "actor" / "global_step_5"]


def test_weights_label_names_the_loaded_weights_or_the_policy_trained_from_them():
    from verl.trainer.validation import weights_label

    assert weights_label("/ckpt/sft", 0, 0, "training") == "/ckpt/sft"
    # a resumed run loaded global_step_4: at step 4 that checkpoint is what is evaluated
    assert weights_label("/runs/a/actor/global_step_4", 4, 4, "training") == "/runs/a/actor/global_step_4"
    assert weights_label("/runs/a/actor/global_step_4", 4, 6, "training") == \
        "the policy after training step 6 (the run started from /runs/a/actor/global_step_4)"
    assert weights_label("/init", 0, 200, "SFT").startswith("the policy after SFT step 200")
