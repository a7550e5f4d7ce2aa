"""Actor checkpoints: an HF model directory that evaluates alone, plus what exact resume needs.

Layout of one `global_step_N/` directory (written by every rank into the directory the
driver names; the driver makes it appear atomically by renaming a temporary directory):
    config.json, model-0000x-of-0000y.safetensors, model.safetensors.index.json,
    dataset_statistics.json, tokenizer / processor files        <- gathered to rank 0, real format
    lora_adapter.pt, lora_config.json                            <- LoRA factors and their settings (only with LoRA)
    actor_state/rank_{r}.pt                                      <- AdamW shard, LR scheduler, RNG
    critic/model.safetensors, critic/critic_state/rank_{r}.pt    <- only with a critic (adv_estimator=gae)
With LoRA the safetensors hold the merged weights (what rollout and evaluation use); resume
rebuilds base + adapter from the original model path and lora_adapter.pt. The critic's file holds
its trained tensors: the whole value model, or with LoRA the adapters and the value head (resume
rebuilds the backbone from critic.model.path).
"""

from __future__ import annotations

import json
import logging
import random
from types import SimpleNamespace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist

from verl.utils import fsdp_utils
from verl.utils.distributed import all_ranks_succeed

if TYPE_CHECKING:
    from verl.workers.fsdp_workers import ActorRolloutRefWorker

logger = logging.getLogger(__name__)

ACTOR_STATE_DIR = "actor_state"
CRITIC_DIR = "critic"
CRITIC_WEIGHTS = "model.safetensors"
CRITIC_STATE_DIR = "critic_state"
LORA_FILE = "lora_adapter.pt"
LORA_CONFIG_FILE = "lora_config.json"  # rank, alpha, targets, base model: what a PEFT export needs


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _is_lora(worker: "ActorRolloutRefWorker") -> bool:
    return worker.config.actor_rollout_ref.model.lora_rank > 0


def merge_lora_state_dict(state: dict[str, torch.Tensor], scaling: float) -> dict[str, torch.Tensor]:
    """A peft LoRA model's full state dict -> the plain model's, with W += scaling * B @ A folded in."""
    merged: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if "lora_" not in key:
            merged[key.removeprefix("base_model.model.").replace(".base_layer.", ".")] = value.clone()
    for key, lora_a in state.items():
        if ".lora_A." not in key:
            continue
        module, _, adapter_part = key.partition(".lora_A.")
        lora_b = state[f"{module}.lora_B.{adapter_part}"]
        weight_key = module.removeprefix("base_model.model.") + ".weight"
        merged[weight_key] += (scaling * (lora_b.float() @ lora_a.float())).to(merged[weight_key].dtype)
    return merged


def save_actor_checkpoint(worker: "ActorRolloutRefWorker", directory: str) -> None:
    """Every rank calls this with the same directory."""
    from verl.models.openvla_oft import save_openvla_checkpoint

    path = Path(directory)
    state = fsdp_utils.full_state_dict(worker.model)  # collective: all ranks, rank 0 gets tensors

    def write_model() -> None:  # rank 0 only; a full disk must fail every rank, not leave them at a barrier
        if worker.rank != 0:
            return
        path.mkdir(parents=True, exist_ok=True)
        plain_state = state
        if _is_lora(worker):
            torch.save({k: v for k, v in state.items() if "lora_" in k}, path / LORA_FILE)
            m = worker.config.actor_rollout_ref.model
            targets = m.target_modules if isinstance(m.target_modules, str) else list(m.target_modules)
            (path / LORA_CONFIG_FILE).write_text(json.dumps({
                "r": int(m.lora_rank), "lora_alpha": int(m.lora_alpha), "target_modules": targets,
                "base_model_name_or_path": str(m.path),
            }, indent=2) + "\n")
            plain_state = merge_lora_state_dict(state, scaling=m.lora_alpha / m.lora_rank)
        save_openvla_checkpoint(
            SimpleNamespace(config=worker.model_config), path, processor=worker.processor,
            norm_stats=worker.model_config.norm_stats, state_dict=plain_state, overwrite=True,
        )

    all_ranks_succeed("writing the model files", write_model)
    del state
    _write_rank_state(worker, path / ACTOR_STATE_DIR, rng=rng_state())


def _write_rank_state(worker, state_dir: Path, **extra) -> None:
    """This rank's AdamW shard and LR schedule (and `extra`) as <state_dir>/rank_<r>.pt; every rank calls."""
    optimizer_state = fsdp_utils.sharded_optimizer_state(worker.model, worker.optimizer)

    def write() -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        torch.save({"optimizer": optimizer_state, "lr_scheduler": worker.lr_scheduler.state_dict(),
                    "world_size": worker.world_size, **extra}, state_dir / f"rank_{worker.rank}.pt")

    all_ranks_succeed(f"writing the optimizer state to {state_dir}", write)


def _read_rank_state(worker, state_dir: Path, checkpoint: Path) -> dict:
    """What `_write_rank_state` wrote for this rank; one error naming the file if it is missing or torn."""
    shard_file = state_dir / f"rank_{worker.rank}.pt"
    if not shard_file.is_file():
        raise FileNotFoundError(f"{shard_file} not found: {checkpoint} is not a resumable checkpoint for this world size")
    try:
        saved = torch.load(shard_file, map_location="cpu", weights_only=False)
    except Exception as err:  # a torn or overwritten file: name it (torch's own message does not)
        raise ValueError(f"{shard_file} is unreadable ({type(err).__name__}: {err}): the checkpoint is corrupt") from err
    if saved["world_size"] != worker.world_size:
        raise ValueError(f"{checkpoint} was saved by {saved['world_size']} workers; this run has {worker.world_size}")
    return saved


def _module_state(directory: str | Path) -> dict[str, torch.Tensor]:
    """A checkpoint directory's weights in fp32, under the model's module key names."""
    from verl.models.openvla_oft.checkpoint import checkpoint_key_to_module_key, read_checkpoint_weights

    return {checkpoint_key_to_module_key(k): v.float() for k, v in read_checkpoint_weights(directory).items()}


def _lora_state(worker: "ActorRolloutRefWorker", path: Path) -> dict[str, torch.Tensor]:
    """Full peft state for resume: base weights from the original model, factors from the checkpoint."""
    base = _module_state(worker.config.actor_rollout_ref.model.path)
    factors = torch.load(path / LORA_FILE, map_location="cpu", weights_only=True)
    state = {}
    for key in worker.model.state_dict():
        plain = key.removeprefix("base_model.model.").replace(".base_layer.", ".")
        state[key] = factors[key] if "lora_" in key else base[plain]
    return state


def load_actor_checkpoint(worker: "ActorRolloutRefWorker", directory: str) -> None:
    """Restore weights, AdamW shard, LR scheduler and RNG saved by `save_actor_checkpoint`."""

    path = Path(directory)

    def read_files() -> tuple[dict[str, torch.Tensor], dict]:  # every rank learns if any rank failed
        saved = _read_rank_state(worker, path / ACTOR_STATE_DIR, path)
        if worker.rank != 0:
            return {}, saved
        return (_lora_state(worker, path) if _is_lora(worker) else _module_state(path)), saved

    full, saved = all_ranks_succeed(f"reading the checkpoint {path}", read_files)
    fsdp_utils.load_full_state_dict(worker.model, full)
    del full
    fsdp_utils.load_sharded_optimizer_state(worker.model, worker.optimizer, saved["optimizer"])
    worker.lr_scheduler.load_state_dict(saved["lr_scheduler"])
    set_rng_state(saved["rng"])
    _barrier()


# ------------------------------------------------------------------------------------------ critic
def _critic_trained_keys(worker) -> set[str]:
    """State-dict keys the critic trains: all (full fine-tuning) or adapters + value head (LoRA)."""
    return {name for name, p in worker.model.named_parameters() if p.requires_grad}


def save_critic_checkpoint(worker, directory: str) -> None:
    """<directory>/critic/: the trained tensors (rank 0) and every rank's AdamW shard; all ranks call."""
    from safetensors.torch import save_file

    path = Path(directory) / CRITIC_DIR
    state = fsdp_utils.full_state_dict(worker.model)  # collective: all ranks, rank 0 gets tensors
    lora = worker.config.critic.model.lora_rank > 0

    def write_model() -> None:
        if worker.rank != 0:
            return
        path.mkdir(parents=True, exist_ok=True)
        keys = _critic_trained_keys(worker) if lora else set(state)
        save_file({k: v.contiguous() for k, v in state.items() if k in keys}, str(path / CRITIC_WEIGHTS))

    all_ranks_succeed("writing the critic's weights", write_model)
    del state
    _write_rank_state(worker, path / CRITIC_STATE_DIR)


def load_critic_checkpoint(worker, directory: str) -> None:
    """Restore what `save_critic_checkpoint` wrote (the backbone of a LoRA critic stays as loaded
    from critic.model.path at start-up)."""
    from verl.models.openvla_oft.checkpoint import load_safetensors_file

    checkpoint = Path(directory)
    path = checkpoint / CRITIC_DIR
    lora = worker.config.critic.model.lora_rank > 0

    def read_files() -> tuple[dict[str, torch.Tensor], dict]:
        saved = _read_rank_state(worker, path / CRITIC_STATE_DIR, checkpoint)
        return (load_safetensors_file(path / CRITIC_WEIGHTS) if worker.rank == 0 else {}), saved

    weights, saved = all_ranks_succeed(f"reading the critic's checkpoint {path}", read_files)
    fsdp_utils.load_full_state_dict(worker.model, weights, strict=not lora)
    del weights
    fsdp_utils.load_sharded_optimizer_state(worker.model, worker.optimizer, saved["optimizer"])
    worker.lr_scheduler.load_state_dict(saved["lr_scheduler"])
    _barrier()
