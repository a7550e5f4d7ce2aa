"""Actor checkpoints on one gloo rank (FSDP2 over a 1-rank mesh, no Ray): a save/load round trip
restores weights, AdamW state, LR schedule and every RNG, and a broken checkpoint is refused with
the file named (a missing rank shard, a world-size mismatch, a corrupt shard)."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from test_dp_actor import settings, synthetic_batch
from verl.models.openvla_oft import OpenVLAProcessor, load_openvla_checkpoint
from verl.models.openvla_oft.tiny import make_tiny_checkpoint
from verl.utils import fsdp_utils
from verl.workers import trajectory as tj
from verl.workers.actor.dp_actor import DataParallelPPOActor
from verl.workers.checkpoint import ACTOR_STATE_DIR, load_actor_checkpoint, save_actor_checkpoint
from verl.workers.fsdp_workers import build_lr_scheduler
from verl.workers.policy_inputs import PolicyInputBuilder

OPTIM = {"lr": 1e-3, "warmup_style": "cosine", "lr_warmup_steps": 4, "lr_warmup_steps_ratio": 0.0,
         "min_lr_ratio": 0.1}  # the LR changes every step: a schedule restored at step 0 shows


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("actor_ckpt") / "tiny", seed=0)


def make_worker(ckpt: Path) -> SimpleNamespace:
    """What save/load_actor_checkpoint read from an ActorRolloutRefWorker, built the same way."""
    model = load_openvla_checkpoint(ckpt)
    model = fsdp_utils.apply_fsdp2(model, fsdp_utils.build_device_mesh("cpu"), param_dtype=torch.float32,
                                   param_offload=False, reshard_after_forward=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=OPTIM["lr"])
    scheduler = build_lr_scheduler(optimizer, OmegaConf.create(OPTIM), total_steps=10)
    processor = OpenVLAProcessor.from_pretrained(ckpt)
    config = OmegaConf.create({"actor_rollout_ref": {"model": {"lora_rank": 0, "path": str(ckpt)}}})
    actor = DataParallelPPOActor(settings(), model, PolicyInputBuilder(processor.preprocess_images, 32000,
                                                                       torch.device("cpu")), optimizer, scheduler)
    return SimpleNamespace(model=model, optimizer=optimizer, lr_scheduler=scheduler, rank=0, world_size=1,
                           config=config, model_config=model.config, processor=processor, actor=actor)


def train_step(worker: SimpleNamespace, batch) -> None:
    old, _ = worker.actor.compute_log_prob(batch)
    batch.batch[tj.OLD_LOG_PROBS] = old
    batch.batch[tj.ADVANTAGES] = batch.batch[tj.RESPONSE_MASK]
    worker.actor.update_policy(batch)  # one optimizer step and one scheduler step


def weights(worker: SimpleNamespace) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in fsdp_utils.full_state_dict(worker.model).items()}


def rng_draws() -> tuple:
    return random.random(), float(np.random.rand()), torch.rand(3)


@pytest.fixture(scope="module")
def saved(one_rank_group, tiny_ckpt, tmp_path_factory):
    """A worker trained 2 steps and saved; what it does next (LR, RNG draws, the next step's weights)."""
    processor = OpenVLAProcessor.from_pretrained(tiny_ckpt)
    batch = synthetic_batch(processor, n=1, finish_steps=(3,))
    worker = make_worker(tiny_ckpt)
    for _ in range(2):
        train_step(worker, batch)
    directory = tmp_path_factory.mktemp("saved") / "global_step_2"
    random.seed(11), np.random.seed(11), torch.manual_seed(11)
    save_actor_checkpoint(worker, str(directory))
    after_save = {"lr": worker.lr_scheduler.get_last_lr()[0], "rng": rng_draws(), "saved_weights": weights(worker)}
    train_step(worker, batch)
    after_save["next_weights"] = weights(worker)
    return directory, batch, after_save


def test_resume_continues_exactly(saved, tiny_ckpt):
    directory, batch, expected = saved
    worker = make_worker(tiny_ckpt)  # fresh weights, fresh AdamW, LR schedule at step 0
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    assert worker.lr_scheduler.get_last_lr()[0] != pytest.approx(expected["lr"])
    load_actor_checkpoint(worker, str(directory))
    assert worker.lr_scheduler.get_last_lr()[0] == pytest.approx(expected["lr"])  # warm-up step 3 of 4
    draws = rng_draws()
    assert draws[:2] == expected["rng"][:2] and torch.equal(draws[2], expected["rng"][2])
    restored = weights(worker)
    assert all(torch.equal(restored[k], v) for k, v in expected["saved_weights"].items())
    # the next step needs the AdamW moments and step count too, not only the weights
    train_step(worker, batch)
    after = weights(worker)
    for key, value in expected["next_weights"].items():
        assert torch.allclose(after[key], value, atol=1e-7, rtol=0), key


def broken_copy(directory: Path, tmp_path: Path) -> tuple[Path, Path]:
    import shutil

    copy = tmp_path / directory.name
    shutil.copytree(directory, copy)
    return copy, copy / ACTOR_STATE_DIR / "rank_0.pt"


def test_missing_rank_shard_is_named(saved, tiny_ckpt, tmp_path):
    copy, shard = broken_copy(saved[0], tmp_path)
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=f"{shard} not found: .* not a resumable checkpoint for this world size"):
        load_actor_checkpoint(make_worker(tiny_ckpt), str(copy))


def test_world_size_mismatch_is_refused(saved, tiny_ckpt, tmp_path):
    copy, shard = broken_copy(saved[0], tmp_path)
    state = torch.load(shard, weights_only=False)
    state["world_size"] = 2
    torch.save(state, shard)
    with pytest.raises(ValueError, match="was saved by 2 workers; this run has 1"):
        load_actor_checkpoint(make_worker(tiny_ckpt), str(copy))


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_optimizer_shard_is_named(saved, tiny_ckpt, tmp_path, damage):
    copy, shard = broken_copy(saved[0], tmp_path)
    if damage == "garbage":
        shard.write_bytes(b"not a torch file" * 64)
    else:
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    worker = make_worker(tiny_ckpt)
    before = weights(worker)
    with pytest.raises(ValueError, match=f"{shard} is unreadable"):
        load_actor_checkpoint(worker, str(copy))
    after = weights(worker)
    assert all(torch.equal(after[k], v) for k, v in before.items())  # nothing half-loaded
