#!/usr/bin/env python
"""Per-GPU peak memory of an RL step by phase, for any OpenVLA(-OFT) config and run settings.

    python scripts/memory_plan.py --model openvla-7b --gpus 8 --preset reference-libero [--out plan.json]
    python scripts/memory_plan.py --model /path/to/checkpoint --gpus 4 --lora-rank 32 --gpu-memory-gb 24
    python scripts/memory_plan.py --reference-predictions --out docs/benchmarks/memory_plan.json
    python scripts/memory_plan.py --cpu-check --out docs/benchmarks/memory_plan_cpu_check.json

Why a model and not a table: what decides whether a run fits is the sum of a few terms whose size
depends on the config (sharded fp32 master weights, gathered compute-dtype weights, gradients,
AdamW moments, activations of a forward), and each phase holds a different subset of them.

Where the numbers come from (nothing hand-typed):
  * parameters: the model is BUILT from its config with our own model code on the meta device
    (no memory, no weights read) and counted per FSDP2 unit, in the order `apply_fsdp2` shards it
    (every vision block, every decoder layer, the projector(s), the root with embeddings, lm_head
    and the tower stems). LoRA adds r*(in+out) per targeted nn.Linear (`lora_target_modules`).
  * activations: the model's forward (and backward) is RUN on the meta device with a dispatch
    mode that tracks the bytes of every tensor storage alive at each op; the peak, minus the
    parameters, is the activation peak of that batch. Attention is replaced during the trace by a
    stand-in that allocates what a fused kernel does (output + log-sum-exp, saves q/k/v/out):
    FlashAttention-2, PyTorch's memory-efficient SDPA on GPU and its CPU flash kernel all avoid
    the [B, H, L, L] score matrix that the meta device's math fallback would build.
  * FSDP2 terms (see verl/utils/fsdp_utils.py): master weights stay fp32 and sharded (bytes
    4 * P / N); `full_params_for_inference` gathers every unit in the compute dtype for the
    rollout and the log-prob pass (2 * P on bf16); the update gathers one unit at a time (the
    root stays gathered; the next block is prefetched) and reduce-scatters fp32 gradients; the
    AdamW moments are 2 x 4 bytes per trainable parameter, sharded.

Phases (per GPU, bytes held at the phase's peak):
  rollout  = sharded params [+ AdamW state unless optimizer_offload] + gathered params
             + activations of one batched forward of `rollout_rows` env observations
  log_prob = the same with `log_prob_micro_batch_size` rows
  update   = max(forward/backward of one `traj_mini_batch_size` piece, optimizer step):
             sharded params + fp32 grads + AdamW state + gathered root + 2 largest units
             (+ its fp32 reduce-scatter copy) + activations / the step's temporaries
The CUDA context (about 0.5 GB per process, outside the allocator) is added in `*_with_context`.
Host memory per GPU worker (trajectory batch, offloaded state) and per env worker (measured RSS of
LIBERO env workers, docs/benchmarks/bench_env_pool_libero_object_rss.json) are reported beside.

`--cpu-check` runs the real phases (FSDP2 via verl.utils.fsdp_utils on one gloo rank, fp32, the
AdamW step) for a tiny and a mid-size model in a subprocess and compares peak RSS growth
(VmHWM, reset per phase through /proc/self/clear_refs) with this plan's prediction.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import subprocess
import sys
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_flatten  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GB = 1e9
CUDA_CONTEXT_GB = 0.5  # CUDA context + cuBLAS workspace per process, outside torch's allocator statistics
ENV_POOL_RSS_JSON = ROOT / "docs" / "benchmarks" / "bench_env_pool_libero_object_rss.json"
PROMPT_TOKENS = 34  # a LIBERO prompt with the Llama-2 tokenizer: BOS + "In: What action ... ?\nOut:" + 29871 (~30-40)
DTYPE_BYTES = {"bfloat16": 2, "float32": 4}

# the tiny / mid-size models of the CPU check (scripts/make_tiny_checkpoint.py size flags)
CHECK_MODELS = {
    "tiny": {},
    "mid": {"vision_width": 384, "vision_depth": 6, "llm_hidden": 768, "llm_layers": 6},
}


# ----------------------------------------------------------------------------------------- settings
@dataclass
class RunSettings:
    """What the plan needs from a run config (names as in ppo_trainer.yaml)."""

    gpus: int = 8  # trainer.n_gpus_per_node * nnodes: the FSDP world size
    dtype: str = "bfloat16"  # actor_rollout_ref.model.dtype (compute dtype; master weights stay fp32)
    device: str = "cuda"  # cuda: foreach AdamW (a full-size temporary); cpu: per-parameter AdamW
    lora_rank: int = 0
    param_offload: bool = False
    optimizer_offload: bool = True
    reshard_after_forward: bool = True
    gradient_checkpointing: bool = False
    rollout_rows: int = 64  # observations per rollout forward: min(rollout.max_batch_size, env slots per GPU)
    log_prob_micro_batch_size: int = 32
    traj_mini_batch_size: int = 16  # model calls per update forward/backward piece
    num_images: int = 1
    action_chunk: int = 8
    action_dim: int = 7
    use_proprio: bool = False
    prompt_tokens: int = PROMPT_TOKENS
    # host side (per GPU worker / per env worker)
    episodes_per_gpu: int = 64  # trajectories a worker holds after a rollout (train_batch_size * n_samples / gpus)
    max_env_steps: int = 512
    env_workers_per_gpu: int = 2
    envs_per_worker: int = 4
    libero_cached_tasks: int = 1  # env.libero_cached_tasks: built LIBERO envs per slot
    gpu_memory_gb: Optional[float] = None  # the card's memory, for the "fits" verdict

    def validate(self) -> None:
        def need(cond: bool, flag: str, what: str) -> None:
            if not cond:
                raise SystemExit(f"--{flag.replace('_', '-')}: expected {what}, got {getattr(self, flag)!r}")

        need(self.dtype in DTYPE_BYTES, "dtype", "bfloat16 or float32")
        need(self.device in ("cuda", "cpu"), "device", "cuda or cpu")
        for name in ("gpus", "rollout_rows", "log_prob_micro_batch_size", "traj_mini_batch_size", "num_images",
                     "action_chunk", "action_dim", "prompt_tokens", "episodes_per_gpu", "max_env_steps",
                     "env_workers_per_gpu", "envs_per_worker", "libero_cached_tasks"):
            need(int(getattr(self, name)) >= 1, name, "an integer >= 1")
        need(self.lora_rank >= 0, "lora_rank", "an integer >= 0")
        need(self.prompt_tokens >= 2, "prompt_tokens", "an integer >= 2 (BOS and the final 29871)")
        need(self.gpu_memory_gb is None or self.gpu_memory_gb > 0, "gpu_memory_gb", "a positive number")


# ------------------------------------------------------------------------------------------ models
def model_config(model: str, settings: RunSettings):
    """`openvla-7b` (the released architecture, config defaults), `tiny` / `mid` (the CPU check's),
    or a checkpoint directory's config.json; the run's action/image/proprio settings on top."""
    from verl.models.openvla_oft.configuration import OpenVLAConfig
    from verl.models.openvla_oft.tiny import tiny_config

    shape = dict(action_dim=settings.action_dim, action_chunk=settings.action_chunk,
                 use_proprio=settings.use_proprio, num_images_in_input=settings.num_images)
    if model == "openvla-7b":
        return OpenVLAConfig(**shape)
    if model in CHECK_MODELS:
        return tiny_config(**CHECK_MODELS[model], **shape)
    path = Path(model)
    if not (path / "config.json").is_file():
        raise SystemExit(f"--model: expected openvla-7b, tiny, mid or a checkpoint directory with config.json, got {model!r}")
    return dataclasses.replace(OpenVLAConfig.from_pretrained(path), **shape)


def build_meta_model(config) -> nn.Module:
    """Our OpenVLA(-OFT) module tree on the meta device: shapes only, no memory."""
    from verl.models.openvla_oft.modeling import OpenVLAForActionPrediction

    with torch.device("meta"):
        return OpenVLAForActionPrediction(config, attn_implementation="sdpa")


def numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def lora_param_count(model: nn.Module, rank: int) -> int:
    """r * (in + out) per LoRA-targeted linear layer (every nn.Linear but lm_head)."""
    from verl.models.openvla_oft.lora import lora_target_modules

    modules = dict(model.named_modules())
    return sum(rank * (modules[n].in_features + modules[n].out_features) for n in lora_target_modules(model))


def param_table(model: nn.Module, lora_rank: int) -> dict[str, Any]:
    """Parameter counts per FSDP2 unit, as `apply_fsdp2` wraps them (vision blocks, decoder layers,
    projector(s), root = the rest). LoRA factors sit in the unit of the layer they adapt."""
    from verl.models.openvla_oft.lora import lora_target_modules

    units: list[tuple[str, nn.Module]] = [(f"vision_block_{i}", b) for i, b in enumerate(model.vision_blocks())]
    units += [(f"decoder_layer_{i}", layer) for i, layer in enumerate(model.decoder_layers())]
    units += [(n, getattr(model, n)) for n in ("projector", "proprio_projector") if getattr(model, n, None) is not None]
    total = numel(model)
    lora_by_unit = {}
    if lora_rank:
        modules = dict(model.named_modules())
        targets = lora_target_modules(model)
        for name, unit in units:
            ids = {id(m) for m in unit.modules()}
            lora_by_unit[name] = sum(lora_rank * (modules[t].in_features + modules[t].out_features)
                                     for t in targets if id(modules[t]) in ids)
    unit_sizes = {name: numel(unit) + lora_by_unit.get(name, 0) for name, unit in units}
    lora = lora_param_count(model, lora_rank) if lora_rank else 0
    root = total + lora - sum(unit_sizes.values())
    groups = {
        "vision_backbone": numel(model.vision_backbone),
        "projector": numel(model.projector),
        "proprio_projector": numel(model.proprio_projector) if model.proprio_projector is not None else 0,
        "llm_embed_tokens": numel(model.language_model.model.embed_tokens),
        "llm_decoder_layers": sum(numel(x) for x in model.decoder_layers()),
        "llm_lm_head": numel(model.language_model.lm_head),
    }
    groups["other"] = total - sum(groups.values())
    return {
        "total": total + lora,
        "base": total,
        "lora": lora,
        "trainable": lora if lora_rank else total,
        "groups": groups,
        "root_unit": root,
        "largest_unit": max(unit_sizes.values()),
        "num_units": len(units) + 1,
    }


# ------------------------------------------------------------------------------- activation tracing
class LiveBytes(TorchDispatchMode):
    """Tracks the bytes of every tensor storage created by an op while it is alive; `peak` is
    the most alive at once. Storages that existed before (parameters, inputs) are not counted."""

    def __init__(self, preexisting: list[torch.Tensor]):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._refs: dict[int, Any] = {}
        for t in preexisting:
            st = t.untyped_storage()
            self._refs[id(st)] = (weakref.ref(st), 0)

    def _track(self, t: torch.Tensor) -> None:
        st = t.untyped_storage()
        key = id(st)
        if key in self._refs:
            return
        size = st.nbytes()

        def release(_ref, key=key, size=size):
            self.live -= size
            self._refs.pop(key, None)

        self._refs[key] = (weakref.ref(st, release), size)
        self.live += size
        self.peak = max(self.peak, self.live)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out


class _FusedAttention(torch.autograd.Function):
    """Memory stand-in for a fused attention kernel: output [B, H, Q, Dv] + log-sum-exp [B, H, Q]
    fp32, saves q, k, v, out, lse; the backward gives dq, dk, dv. Shapes only (meta tensors)."""

    @staticmethod
    def forward(ctx, q, k, v):
        out = q.new_empty(q.shape[:-1] + v.shape[-1:])
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, _, _ = ctx.saved_tensors
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _fused_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    return _FusedAttention.apply(query, key, value)


def _meta_inputs(config, rows: int, prompt_tokens: int) -> dict[str, torch.Tensor]:
    """What the rollout / actor hands the model for `rows` observations: left-padded prompts of one
    length, pixel values [rows, 6*n_img, 224, 224] float32 (built from uint8 images [rows, n, 224, 224, 3])."""
    size = config.image_sizes[0]
    images = torch.empty(rows, config.num_images_in_input, size, size, 3, dtype=torch.uint8, device="meta")
    pixel_values = images.permute(0, 1, 4, 2, 3).reshape(rows, -1, size, size).float().repeat(1, 2, 1, 1)
    out = {
        "input_ids": torch.empty(rows, prompt_tokens, dtype=torch.long, device="meta"),
        "attention_mask": torch.empty(rows, prompt_tokens, dtype=torch.long, device="meta"),
        "pixel_values": pixel_values,
    }
    if config.use_proprio:
        out["proprio"] = torch.empty(rows, config.proprio_dim, device="meta")
    return out


def trace_activation_peak(model: nn.Module, config, rows: int, prompt_tokens: int, dtype: torch.dtype,
                          train: bool) -> int:
    """Peak bytes beyond the weights of one forward (train: forward + backward) of `rows`
    observations, model in `dtype`, run on the meta device. Weight gradients are dropped as soon
    as they are accumulated (FSDP2 reduce-scatters and frees them per unit; the sharded fp32
    gradient is counted apart), so the peak is activations + activation gradients + one unit's
    transient weight gradients. Inputs (pixel values) are counted."""
    import torch.nn.functional as F

    from verl.models.openvla_oft.modeling import OpenVLAForActionPrediction

    model = model.to(dtype)
    base: OpenVLAForActionPrediction = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = list(model.parameters()) + list(model.buffers())
    hooks = [p.register_post_accumulate_grad_hook(lambda p: setattr(p, "grad", None))
             for p in model.parameters() if p.requires_grad] if train else []
    original_sdpa, original_check = F.scaled_dot_product_attention, base._check_prompt_batch
    F.scaled_dot_product_attention = _fused_sdpa
    # the prompt check reads values (one host sync); meta tensors have none: prompts are valid by construction
    base._check_prompt_batch = lambda ids, mask: torch.zeros(ids.shape[0], dtype=torch.long, device=ids.device)
    try:
        model.train(train)
        with LiveBytes(params) as tracker:
            inputs = _meta_inputs(config, rows, prompt_tokens)
            if train:
                logits = base(**inputs)  # [rows, A, 256] float32
                logits.logsumexp(-1).sum().backward()
            else:
                with torch.no_grad():
                    base(**inputs)
        return tracker.peak
    finally:
        F.scaled_dot_product_attention = original_sdpa
        base._check_prompt_batch = original_check
        for h in hooks:
            h.remove()


def trace_model(config, settings: RunSettings) -> nn.Module:
    """The meta model as the run trains it: LoRA adapters (peft) and gradient checkpointing applied."""
    model = build_meta_model(config)
    if settings.lora_rank:
        from verl.models.openvla_oft.lora import apply_lora

        model = apply_lora(model, rank=settings.lora_rank, alpha=32)
    if settings.gradient_checkpointing:
        (model.get_base_model() if hasattr(model, "get_base_model") else model).gradient_checkpointing_enable()
    return model


# ---------------------------------------------------------------------------------------- the plan
def host_env_worker_gb(envs_per_worker: int, cached_tasks: int = 1) -> dict[str, Any]:
    """RSS of one LIBERO env worker hosting `envs_per_worker` slots of up to `cached_tasks` built
    envs each, from the measured 1- and 4-slot workers (linear in the number of built envs: a
    parked env costs what an active one does)."""
    if not ENV_POOL_RSS_JSON.is_file():
        return {"gb": None, "source": f"{ENV_POOL_RSS_JSON.name} missing"}
    data = json.loads(ENV_POOL_RSS_JSON.read_text())
    one, four = data["worker_rss_mib"]["1"], data["worker_rss_mib"]["4"]
    per_slot = (four - one) / 3
    mib = one + per_slot * (envs_per_worker * cached_tasks - 1)
    return {"gb": round(mib * 2**20 / GB, 3), "per_slot_gb": round(per_slot * 2**20 / GB, 3),
            "source": str(ENV_POOL_RSS_JSON.relative_to(ROOT))}


def plan(model_name: str, settings: RunSettings) -> dict[str, Any]:
    """The per-GPU peak by phase (bytes and GB) and host memory, with every term named."""
    settings.validate()
    config = model_config(model_name, settings)
    meta = build_meta_model(config)
    table = param_table(meta, settings.lora_rank)
    n, b, master = settings.gpus, DTYPE_BYTES[settings.dtype], 4
    dtype = getattr(torch, settings.dtype)
    p_all, p_train = table["total"], table["trainable"]

    acts = {}
    for phase, rows, train in (("rollout", settings.rollout_rows, False),
                               ("log_prob", settings.log_prob_micro_batch_size, False),
                               ("update", settings.traj_mini_batch_size, True)):
        acts[phase] = trace_activation_peak(trace_model(config, settings), config, rows, settings.prompt_tokens,
                                            dtype, train)

    on_gpu = not settings.param_offload
    sharded = p_all * master / n if on_gpu else 0
    grads = p_train * master / n if on_gpu else 0
    adam = 2 * p_train * master / n if on_gpu else 0
    adam_outside_update = 0 if settings.optimizer_offload else adam
    gathered_full = p_all * b
    if settings.reshard_after_forward:
        gathered_update = (table["root_unit"] + 2 * table["largest_unit"]) * b
    else:
        gathered_update = gathered_full
    reduce_copy = table["largest_unit"] * master if b != master else 0  # unsharded grad cast to fp32 for reduce-scatter
    # foreach AdamW (CUDA) makes one full-size temporary (sqrt of the second moment); per-parameter on CPU
    step_temp = p_train * master / n if settings.device == "cuda" else table["largest_unit"] * master / n
    if not on_gpu:
        step_temp = 0

    terms = {
        "rollout": {"sharded_params": sharded, "adam_state": adam_outside_update, "gathered_params": gathered_full,
                    "activations": acts["rollout"]},
        "log_prob": {"sharded_params": sharded, "adam_state": adam_outside_update, "gathered_params": gathered_full,
                     "activations": acts["log_prob"]},
        "update_forward_backward": {"sharded_params": sharded, "grads_fp32": grads, "adam_state": adam,
                                    "gathered_root_and_2_units": gathered_update, "grad_reduce_copy": reduce_copy,
                                    "activations": acts["update"]},
        "update_optimizer_step": {"sharded_params": sharded, "grads_fp32": grads, "adam_state": adam,
                                  "step_temporaries": step_temp},
    }
    phases = {name: sum(t.values()) for name, t in terms.items()}
    phases["update"] = max(phases["update_forward_backward"], phases["update_optimizer_step"])
    peak_phase = max(("rollout", "log_prob", "update"), key=lambda k: phases[k])

    calls = math.ceil(settings.max_env_steps / settings.action_chunk)
    tokens = settings.action_chunk * settings.action_dim
    per_call = settings.num_images * 224 * 224 * 3 + tokens * (8 + 4 + 4) + (4 * 8 if settings.use_proprio else 0)
    host_worker = {
        "trajectory_batch": settings.episodes_per_gpu * calls * per_call,
        "offloaded_params_grads_adam": (p_all + 3 * p_train) * master / n if settings.param_offload else 0,
        "offloaded_adam_outside_update": 2 * p_train * master / n if settings.optimizer_offload and on_gpu else 0,
        "checkpoint_full_state_rank0": p_all * master,
    }
    gb = lambda x: round(x / GB, 3)  # noqa: E731
    result = {
        "model": model_name,
        "settings": dataclasses.asdict(settings),
        "params": table,
        "params_B": round(p_all / 1e9, 4),
        "phases_gb": {k: gb(v) for k, v in phases.items()},
        "terms_gb": {k: {name: gb(v) for name, v in t.items()} for k, t in terms.items()},
        "peak_phase": peak_phase,
        "peak_gb": gb(phases[peak_phase]),
        "host_per_gpu_worker_gb": {k: gb(v) for k, v in host_worker.items()},
        "host_per_env_worker": host_env_worker_gb(settings.envs_per_worker, settings.libero_cached_tasks),
        "sequence_tokens": 1 + 256 * settings.num_images + int(settings.use_proprio) + (settings.prompt_tokens - 1)
        + tokens + 1,
    }
    if settings.device == "cuda":
        result["peak_with_context_gb"] = gb(phases[peak_phase] + CUDA_CONTEXT_GB * GB)
        if settings.gpu_memory_gb:
            result["gpu_memory_gb"] = settings.gpu_memory_gb
            result["fits"] = result["peak_with_context_gb"] <= settings.gpu_memory_gb
    return result


# ------------------------------------------------------------------------ the reference's settings
def reference_settings(gpus: int, gpu_memory_gb: float, **changes: Any) -> RunSettings:
    """SimpleVLA-RL's LIBERO run (examples/common_simplevla_rl.sh + ppo_trainer.yaml defaults):
    64 prompts x 8 samples over `gpus` workers, traj_mini_batch_size 16, log_prob_micro_batch_size
    32, rollout.max_batch_size 64, grad + optimizer offload (ours: AdamW on the host outside the
    update), no param offload, no gradient checkpointing, one image, no proprio, chunk 8 x 7."""
    episodes = 64 * 8 // gpus
    values = dict(gpus=gpus, dtype="bfloat16", device="cuda", lora_rank=0, param_offload=False,
                  optimizer_offload=True, reshard_after_forward=True, gradient_checkpointing=False,
                  rollout_rows=min(64, episodes), log_prob_micro_batch_size=32, traj_mini_batch_size=16,
                  num_images=1, action_chunk=8, action_dim=7, use_proprio=False, episodes_per_gpu=episodes,
                  max_env_steps=512, env_workers_per_gpu=2, envs_per_worker=4, gpu_memory_gb=gpu_memory_gb)
    values.update(changes)
    return RunSettings(**values)


def reference_predictions() -> dict[str, Any]:
    cases = {
        "8xA800-80GB_reference_libero": ("openvla-7b", reference_settings(8, 80.0)),
        "8xH100-80GB_reference_libero": ("openvla-7b", reference_settings(8, 80.0)),
        "4x24GB_lora32": ("openvla-7b", reference_settings(4, 24.0, lora_rank=32)),
        "4x24GB_lora32_gradient_checkpointing_small_batches": (
            "openvla-7b", reference_settings(4, 24.0, lora_rank=32, gradient_checkpointing=True, rollout_rows=16,
                                             log_prob_micro_batch_size=8, traj_mini_batch_size=4)),
        "4x24GB_lora32_param_offload_gradient_checkpointing_small_batches": (
            "openvla-7b", reference_settings(4, 24.0, lora_rank=32, param_offload=True, gradient_checkpointing=True,
                                             rollout_rows=16, log_prob_micro_batch_size=8, traj_mini_batch_size=4)),
    }
    out = {"note": ("A800 and H100 both have 80 GB: same plan (memory does not depend on speed). Peaks are "
                    "torch allocator peaks + a 0.5 GB CUDA context; fragmentation can add a few GB. "
                    "Not yet checked on a GPU (none available to this project); checked on CPU, see "
                    "memory_plan_cpu_check.json."),
           "predictions": {}}
    for name, (model, settings) in cases.items():
        out["predictions"][name] = plan(model, settings)
    return out


# ----------------------------------------------------------------------------------- the CPU check
MEASURE_ROWS = {"rollout": 16, "log_prob": 16, "update": 8}


def _rss_bytes(field: str) -> int:
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w", encoding="utf-8") as f:
        f.write("5")  # resets VmHWM (peak RSS) to the current RSS


def _cpu_inputs(config, rows: int, prompt_tokens: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    from verl.models.openvla_oft.constants import BOS_TOKEN_ID, SPACE_TOKEN_ID

    ids = torch.randint(259, 300, (rows, prompt_tokens), generator=generator)
    ids[:, 0], ids[:, -1] = BOS_TOKEN_ID, SPACE_TOKEN_ID
    images = torch.randint(0, 256, (rows, config.num_images_in_input, 224, 224, 3), dtype=torch.uint8, generator=generator)
    pixel_values = images.permute(0, 1, 4, 2, 3).reshape(rows, -1, 224, 224).float().repeat(1, 2, 1, 1) / 255.0
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixel_values}


def _run_phases(model_name: str, rows: dict[str, int], prompt_tokens: int, measure: bool) -> dict[str, float]:
    """The three phases for real on this CPU: FSDP2 (fsdp_utils.apply_fsdp2 on a one-rank gloo
    group, fp32), full_params_for_inference for rollout / log-probs, forward + backward + clip +
    AdamW for the update. Returns each phase's peak RSS above the RSS before the model was built."""
    from verl.models.openvla_oft.tiny import build_tiny_model
    from verl.utils import fsdp_utils

    generator = torch.Generator().manual_seed(0)
    gc.collect()
    baseline = _rss_bytes("VmRSS")
    model = build_tiny_model(0, **CHECK_MODELS[model_name])
    config = model.config
    mesh = fsdp_utils.build_device_mesh("cpu")
    model = fsdp_utils.apply_fsdp2(model, mesh, param_dtype=torch.float32, param_offload=False, reshard_after_forward=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01)
    gc.collect()
    out = {"after_setup_gb": (_rss_bytes("VmRSS") - baseline) / GB}

    def measured(name: str, fn) -> None:
        gc.collect()
        _reset_peak()
        t0 = time.perf_counter()
        fn()
        out[f"{name}_gb"] = (_rss_bytes("VmHWM") - baseline) / GB
        out[f"{name}_s"] = time.perf_counter() - t0

    def rollout():
        inputs = _cpu_inputs(config, rows["rollout"], prompt_tokens, generator)
        with fsdp_utils.full_params_for_inference(model):
            model.sample_action_tokens(**inputs, temperature=1.6)

    def log_prob():
        inputs = _cpu_inputs(config, rows["log_prob"], prompt_tokens, generator)
        with torch.no_grad(), fsdp_utils.full_params_for_inference(model):
            model(**inputs).log_softmax(-1)

    state = {}

    def update_forward_backward():
        model.train()
        inputs = _cpu_inputs(config, rows["update"], prompt_tokens, generator)
        model(**inputs).logsumexp(-1).mean().backward()
        del inputs
        state["norm"] = fsdp_utils.clip_grad_norm(model, 1.0)

    def update_step():
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    # one unmeasured update first: AdamW creates its state at the first step, and a run's rollouts
    # after step 1 hold it too (the plan counts it in every phase unless optimizer_offload)
    saved_rows, rows = rows, dict(rows, update=1)
    update_forward_backward()
    update_step()
    rows = saved_rows
    model.eval()
    measured("rollout", rollout)
    measured("log_prob", log_prob)
    measured("update_forward_backward", update_forward_backward)
    measured("update_optimizer_step", update_step)
    out["update_gb"] = max(out["update_forward_backward_gb"], out["update_optimizer_step_gb"])
    return out


def _measure_child(model_name: str, prompt_tokens: int) -> None:
    """Subprocess body: one gloo rank, a warm-up pass on the tiny model (imports, kernels, allocator
    arenas), then the measured pass; prints one JSON line."""
    import tempfile

    import torch.distributed as dist

    torch.set_num_threads(1)
    store = tempfile.NamedTemporaryFile(delete=False)
    dist.init_process_group("gloo", init_method=f"file://{store.name}", rank=0, world_size=1)
    _run_phases("tiny", {"rollout": 2, "log_prob": 2, "update": 2}, prompt_tokens, measure=False)
    gc.collect()
    result = _run_phases(model_name, MEASURE_ROWS, prompt_tokens, measure=True)
    dist.destroy_process_group()
    print("MEASURED " + json.dumps(result), flush=True)


def cpu_check(models: list[str], prompt_tokens: int = PROMPT_TOKENS, tolerance: float = 0.2) -> dict[str, Any]:
    """Measured (subprocess, RSS) vs predicted (plan on cpu, fp32, 1 rank) peaks by phase."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0", OMP_NUM_THREADS="1")
    report: dict[str, Any] = {"tolerance": tolerance, "rows": MEASURE_ROWS, "prompt_tokens": prompt_tokens,
                              "method": ("peak RSS (VmHWM, reset per phase via /proc/self/clear_refs) minus the RSS "
                                         "before the model was built, in a subprocess after a warm-up pass; glibc "
                                         "mmap threshold fixed at 64 KiB so freed tensors leave the RSS"),
                              "models": {}}
    for name in models:
        proc = subprocess.run([sys.executable, __file__, "--_measure-child", name, "--prompt-tokens", str(prompt_tokens)],
                              env=env, capture_output=True, text=True, check=False)
        lines = [x for x in proc.stdout.splitlines() if x.startswith("MEASURED ")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"CPU measurement of {name} failed:\n{proc.stderr[-3000:]}")
        measured = json.loads(lines[-1][len("MEASURED "):])
        settings = RunSettings(gpus=1, dtype="float32", device="cpu", optimizer_offload=False,
                               rollout_rows=MEASURE_ROWS["rollout"], log_prob_micro_batch_size=MEASURE_ROWS["log_prob"],
                               traj_mini_batch_size=MEASURE_ROWS["update"], prompt_tokens=prompt_tokens)
        predicted = plan(name, settings)
        compare = {}
        for phase in ("rollout", "log_prob", "update_forward_backward", "update_optimizer_step", "update"):
            m, p = measured[f"{phase}_gb"], predicted["phases_gb"][phase]
            compare[phase] = {"measured_gb": round(m, 4), "predicted_gb": round(p, 4),
                              "rel_error": round((p - m) / m, 4)}
        report["models"][name] = {
            "params_M": round(predicted["params"]["total"] / 1e6, 3),
            "phases": compare,
            "measured_after_setup_gb": round(measured["after_setup_gb"], 4),
            "phase_seconds": {k[:-2]: round(v, 2) for k, v in measured.items() if k.endswith("_s")},
            "terms_gb": predicted["terms_gb"],
            "max_abs_rel_error": max(abs(c["rel_error"]) for c in compare.values()),
        }
    report["passes"] = all(m["max_abs_rel_error"] <= tolerance for m in report["models"].values())
    return report


# ----------------------------------------------------------------------------------------------- CLI
def _print_plan(result: dict[str, Any]) -> None:
    print(f"{result['model']}: {result['params_B']} B params ({result['params']['trainable'] / 1e6:.1f} M trainable), "
          f"{result['settings']['gpus']} GPU(s), {result['settings']['dtype']}")
    for phase in ("rollout", "log_prob", "update"):
        terms = result["terms_gb"].get(phase) or {**result["terms_gb"]["update_forward_backward"]}
        print(f"  {phase:9s} {result['phases_gb'][phase]:8.2f} GB   " + ", ".join(f"{k} {v:.2f}" for k, v in terms.items()))
    extra = f" (+context {result.get('peak_with_context_gb', '-')} GB" + (
        f", fits {result['gpu_memory_gb']} GB: {result['fits']})" if "fits" in result else ")")
    print(f"  peak: {result['peak_phase']} {result['peak_gb']} GB{extra if result['settings']['device'] == 'cuda' else ''}")
    print(f"  host per GPU worker: {result['host_per_gpu_worker_gb']}; per env worker: {result['host_per_env_worker']}")


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="openvla-7b", help="openvla-7b | tiny | mid | a checkpoint directory")
    parser.add_argument("--preset", choices=["none", "reference-libero"], default="none",
                        help="reference-libero: SimpleVLA-RL's LIBERO settings for --gpus (flags below then ignored)")
    defaults = RunSettings()
    for f in dataclasses.fields(RunSettings):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(flag, type=_parse_bool, default=getattr(defaults, f.name), metavar="BOOL")
        elif f.name == "gpu_memory_gb":
            parser.add_argument(flag, type=float, default=None)
        else:
            kind = {"int": int, "str": str}.get(str(f.type), int if isinstance(getattr(defaults, f.name), int) else str)
            parser.add_argument(flag, type=kind, default=getattr(defaults, f.name))
    parser.add_argument("--reference-predictions", action="store_true",
                        help="8xA800-80GB, 8xH100-80GB (reference LIBERO) and 4x24GB with LoRA")
    parser.add_argument("--cpu-check", action="store_true", help="measure tiny and mid-size models on this CPU")
    parser.add_argument("--check-models", default="tiny,mid", help="models of --cpu-check (tiny, mid)")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here")
    parser.add_argument("--_measure-child", dest="measure_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.measure_child:
        _measure_child(args.measure_child, args.prompt_tokens)
        return
    if args.cpu_check:
        models = [m for m in args.check_models.split(",") if m]
        bad = [m for m in models if m not in CHECK_MODELS]
        if bad or not models:
            raise SystemExit(f"--check-models: expected a comma-separated list of {sorted(CHECK_MODELS)}, got {args.check_models!r}")
        result = cpu_check(models, args.prompt_tokens)
        for name, m in result["models"].items():
            for phase, c in m["phases"].items():
                print(f"{name:5s} {phase:24s} measured {c['measured_gb']:.4f} GB predicted {c['predicted_gb']:.4f} GB "
                      f"({c['rel_error']:+.1%})")
        print(f"within {result['tolerance']:.0%}: {result['passes']}")
    elif args.reference_predictions:
        result = reference_predictions()
        for name, r in result["predictions"].items():
            print(f"== {name}")
            _print_plan(r)
    else:
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(RunSettings)}
        settings = reference_settings(args.gpus, args.gpu_memory_gb or 80.0) if args.preset == "reference-libero" \
            else RunSettings(**values)
        result = plan(args.model, settings)
        _print_plan(result)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")


def _parse_bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


if __name__ == "__main__":
    main()
