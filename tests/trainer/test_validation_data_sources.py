"""Validation metrics per data source: RoboTwin's `<suite>_train_iid` and `<suite>_eval_ood`, as the reference logs them."""

import json

import numpy as np
import torch

from verl.protocol import DataProto
from verl.trainer.validation import validation_episodes, success_tables
from verl.utils.dataset import RobDataset
from verl.workers import trajectory as tj


class EchoWorkers:
    """A worker group whose greedy episodes succeed on even seeds; it returns the prompts' keys as the rollout does."""

    def __init__(self):
        self.calls = []

    def generate_sequences(self, prompts: DataProto) -> DataProto:
        self.calls.append(prompts.meta_info)
        seeds = np.array(prompts.non_tensor_batch[tj.SEED], dtype=np.int64)
        out = DataProto.from_dict(tensors={tj.COMPLETE: torch.from_numpy(seeds % 2 == 0),
                                           tj.FINISH_STEP: torch.full((len(seeds),), 25),
                                           tj.FAULTED: torch.zeros(len(seeds), dtype=torch.bool)})
        return out.union(prompts)


def test_robotwin_validation_reports_train_iid_and_eval_ood(tmp_path):
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    # train seeds: the first 128 have 64 even ones; eval seeds: all even among the first 128
    for split, values in (("train", list(range(100_000, 100_300))), ("eval", [100_100_000 + 2 * i for i in range(130)])):
        (seeds / f"robotwin2_{split}_seeds.json").write_text(json.dumps({"lift_pot": {"success_seeds": values}}))
    val = RobDataset("robotwin2_lift_pot", 10, split="val", robotwin2_seeds_dir=str(seeds))
    workers = EchoWorkers()
    metrics = success_tables(validation_episodes(workers, val, batch_size=100, seed=1, step=4))
    assert metrics["val/test_score/robotwin2_lift_pot_train_iid"] == 0.5
    assert metrics["val/test_score/robotwin2_lift_pot_eval_ood"] == 1.0
    assert metrics["val/test_score/all"] == 0.75 and metrics["val/episodes"] == 256
    assert all(call["greedy"] and call["validation"] and call["temperature"] is None for call in workers.calls)
    assert len(workers.calls) == 3


def test_libero_validation_keeps_the_suite_metric():
    episodes = DataProto.from_dict(
        tensors={tj.COMPLETE: torch.tensor([True, False, True, True]), tj.FINISH_STEP: torch.tensor([8, 512, 16, 8]),
                 tj.FAULTED: torch.zeros(4, dtype=torch.bool)},
        non_tensors={tj.TASK_SUITE_NAME: np.array(["libero_10"] * 4, dtype=object),
                     tj.TASK_ID: np.array([0, 0, 1, 1], dtype=object),
                     tj.DATA_SOURCE: np.array(["libero_10"] * 4, dtype=object)})
    metrics = success_tables(episodes)
    assert metrics["val/test_score/libero_10"] == 0.75 and metrics["val/test_score/all"] == 0.75
    assert metrics["val/test_score/libero_10/0"] == 0.5
