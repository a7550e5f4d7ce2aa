"""Critic checkpoints on one gloo rank (FSDP2 over a 1-rank mesh, no Ray): save after a step, load
into a fresh critic, and the next update is identical, for a fully trained critic and for a LoRA
one (whose file holds only the adapters and the value head)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from test_dp_critic import batch_of
from verl.models.openvla_oft import OpenVLAProcessor, apply_lora, load_openvla_checkpoint
from verl.models.openvla_oft.tiny import make_tiny_checkpoint
from verl.models.openvla_oft.value_model import OpenVLAValueModel
from verl.utils import fsdp_utils
from verl.workers import trajectory as tj
from verl.workers.checkpoint import CRITIC_DIR, CRITIC_WEIGHTS, load_critic_checkpoint, save_critic_checkpoint
from verl.workers.critic.dp_critic import CriticSettings, DataParallelPPOCritic
from verl.workers.fsdp_workers import build_optimizer
from verl.workers.policy_inputs import PolicyInputBuilder

OPTIM = {"lr": 1e-3, "betas": [0.9, 0.999], "weight_decay": 0.01, "warmup_style": "cosine", "lr_warmup_steps": 3,
         "lr_warmup_steps_ratio": 0.0, "min_lr_ratio": 0.1, "total_training_steps": 10}


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("critic_ckpt") / "tiny", seed=0)


def make_critic(ckpt: Path, lora_rank: int, seed: int) -> SimpleNamespace:
    """What save/load_critic_checkpoint read from a CriticWorker, built the same way."""
    torch.manual_seed(seed)
    model = OpenVLAValueModel(load_openvla_checkpoint(ckpt), head_hidden=16)
    if lora_rank:
        targets = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and not n.startswith("value_head")]
        model = apply_lora(model, rank=lora_rank, alpha=16, target_modules=targets, modules_to_save=["value_head"])
    model = fsdp_utils.apply_fsdp2(model, fsdp_utils.build_device_mesh("cpu"), param_dtype=torch.float32,
                                   param_offload=False, reshard_after_forward=True)
    optimizer, scheduler = build_optimizer(model, OmegaConf.create(OPTIM))
    processor = OpenVLAProcessor.from_pretrained(ckpt)
    critic = DataParallelPPOCritic(
        CriticSettings(ppo_mini_batch_size=4, ppo_micro_batch_size=2, steps_per_forward=4, forward_micro_batch_size=4,
                       ppo_epochs=1, shuffle=True, grad_clip=1.0, cliprange_value=0.5, use_proprio=False),
        model, PolicyInputBuilder(processor.preprocess_images, 32000, torch.device("cpu")), optimizer, scheduler)
    config = OmegaConf.create({"critic": {"model": {"lora_rank": lora_rank, "path": str(ckpt)}}})
    return SimpleNamespace(model=model, optimizer=optimizer, lr_scheduler=scheduler, rank=0, world_size=1,
                           config=config, critic=critic)


def step(worker, batch, seed):
    batch.batch[tj.VALUES] = worker.critic.compute_values(batch)
    return worker.critic.update_critic(batch, seed=seed)


def trained_state(worker) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in fsdp_utils.full_state_dict(worker.model).items()}


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_critic_round_trip_resumes_exactly(one_rank_group, tiny_ckpt, tmp_path, lora_rank):
    processor = OpenVLAProcessor.from_pretrained(tiny_ckpt)
    batch = batch_of(processor, finish_steps=(24, 10, 17, 3))
    a = make_critic(tiny_ckpt, lora_rank, seed=0)
    step(a, batch, seed=1)
    save_critic_checkpoint(a, str(tmp_path))
    saved = load_file(str(tmp_path / CRITIC_DIR / CRITIC_WEIGHTS))
    trainable = {n for n, p in a.model.named_parameters() if p.requires_grad}
    if lora_rank:  # adapters and the value head only: the backbone comes from critic.model.path
        assert set(saved) == trainable and all("lora_" in k or "value_head" in k for k in saved)
    else:
        assert len(saved) == len(trained_state(a))
    next_a = step(a, batch, seed=2)

    b = make_critic(tiny_ckpt, lora_rank, seed=123)  # another value-head init: the checkpoint must overwrite it
    load_critic_checkpoint(b, str(tmp_path))
    next_b = step(b, batch, seed=2)
    assert next_b["critic/vf_loss"] == pytest.approx(next_a["critic/vf_loss"], rel=1e-6)
    assert next_b["critic/lr"] == next_a["critic/lr"]
    sa, sb = trained_state(a), trained_state(b)
    # peft keeps the frozen, unused original of a modules_to_save head: nothing reads it, nothing saves it
    used = [k for k in sa if "original_module" not in k]
    assert len(used) > 10
    for key in used:
        assert torch.equal(sa[key], sb[key]), key


def test_missing_critic_state_names_the_file(one_rank_group, tiny_ckpt, tmp_path):
    worker = make_critic(tiny_ckpt, 0, seed=0)
    with pytest.raises(Exception, match="critic_state/rank_0.pt"):
        load_critic_checkpoint(worker, str(tmp_path))
