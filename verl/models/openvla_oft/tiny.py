"""Tiny random OpenVLA(-OFT) checkpoints in the exact released format, for tests and the CPU demo.

Same module tree, key names, 32064-row vocabulary, 224 px input and patch size 14 as the real model, with
small widths and two blocks per tower / decoder. `patch_size` is a knob for CPU experiments: 28 gives each
tower 64 patch tokens per 224 px image instead of 256 (the same pixels in, a quarter of the decoder's image
tokens). Weights are drawn by our own deterministic rule from one seed (not by timm's or transformers'
initialisers), so a given seed gives the same model whatever library versions are installed. The
tokenizer is a character-level `tokenizers` model that keeps every id rule of the Llama-2 one: <unk> 0, BOS 1, EOS 2, byte tokens 3..258 (newline = 13), "▁" = 29871,
32000 base ids and `<PAD>` = 32000.
"""

from __future__ import annotations

import logging
import string
from pathlib import Path
from typing import Any, Optional

import torch

from verl.models.openvla_oft.checkpoint import save_openvla_checkpoint
from verl.models.openvla_oft.configuration import OpenVLAConfig
from verl.models.openvla_oft.constants import (
    IMAGE_SIZE,
    LIBERO_ACTION_CHUNK,
    LIBERO_ACTION_DIM,
    LIBERO_PROPRIO_DIM,
    PAD_TOKEN_ID,
    PADDED_VOCAB_SIZE,
    PATCH_SIZE,
    SPACE_TOKEN_ID,
    TEXT_VOCAB_SIZE,
)
from verl.models.openvla_oft.modeling import OpenVLAForActionPrediction
from verl.models.openvla_oft.processor import OpenVLAProcessor

logger = logging.getLogger(__name__)

TINY_VISION_WIDTH = 32
TINY_LLM_HIDDEN = 64
LIBERO_SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")
LAYER_SCALE_INIT = 0.1  # real DINOv2 starts at 1e-5; larger so the tiny tower's block matters


def tiny_config(
    parallel_decoding: bool = True,
    action_dim: int = LIBERO_ACTION_DIM,
    action_chunk: int = LIBERO_ACTION_CHUNK,
    use_proprio: bool = False,
    proprio_dim: int = LIBERO_PROPRIO_DIM,
    num_images_in_input: int = 1,
    vision_width: int = TINY_VISION_WIDTH,
    vision_depth: int = 2,
    llm_hidden: int = TINY_LLM_HIDDEN,
    llm_layers: int = 2,
    patch_size: int = PATCH_SIZE,
) -> OpenVLAConfig:
    """The tiny layout; the width/depth knobs build larger models of the same architecture (e.g. a
    model whose forward costs about as much as an env chunk, for the rollout overlap benchmark).
    `patch_size` (a divisor of 224) sets both towers' patch: the decoder sees (224 / patch_size)^2
    image tokens, the bulk of its sequence (256 of ~330 at the real 14)."""
    if IMAGE_SIZE % patch_size:
        raise ValueError(f"patch_size={patch_size}: expected a divisor of the {IMAGE_SIZE} px input (14, 16, 28, 32, ...)")
    heads = max(2, vision_width // 64)
    tower = {"embed_dim": vision_width, "depth": vision_depth, "num_heads": heads}
    if patch_size != PATCH_SIZE:
        tower["patch_size"] = patch_size
    return OpenVLAConfig(
        timm_model_overrides=[dict(tower), dict(tower, mlp_ratio=3.7362)],
        text_config={
            "model_type": "llama",
            "vocab_size": PADDED_VOCAB_SIZE,
            "pad_token_id": PAD_TOKEN_ID,
            "hidden_size": llm_hidden,
            "intermediate_size": 172 if llm_hidden == TINY_LLM_HIDDEN else int(llm_hidden * 2.6875),
            "num_hidden_layers": llm_layers,
            "num_attention_heads": max(2, llm_hidden // 128),
            "num_key_value_heads": max(2, llm_hidden // 128),
        },
        parallel_decoding=parallel_decoding,
        action_dim=action_dim,
        action_chunk=action_chunk,
        use_proprio=use_proprio,
        proprio_dim=proprio_dim,
        num_images_in_input=num_images_in_input,
        torch_dtype="float32",
    )


DEFAULT_INIT_STD = 0.02


@torch.no_grad()
def init_tiny_weights(model: torch.nn.Module, seed: int, qk_init_std: Optional[float] = None) -> None:
    """Deterministic init by parameter name: norms 1, biases 0, LayerScale 0.1, everything else N(0, 0.02).

    `qk_init_std` sets the decoder's query/key projections apart. At N(0, 0.02) a narrow decoder's
    attention starts uniform, and OFT's 56 action slots (zero embeddings, told apart only by their
    rotary positions) stay indistinguishable for hundreds of steps; ~1/sqrt(hidden) (0.1 for 128)
    gives position-dependent attention from the start, as a pretrained Llama has.
    """
    generator = torch.Generator().manual_seed(seed)
    for name, param in sorted(model.named_parameters()):
        leaf = name.rsplit(".", 2)
        if qk_init_std is not None and name.startswith("language_model.") and leaf[-2] in ("q_proj", "k_proj"):
            values = torch.empty(param.shape).normal_(0.0, DEFAULT_INIT_STD, generator=generator) * (qk_init_std / DEFAULT_INIT_STD)
        elif name.endswith(".gamma"):
            values = torch.full(param.shape, LAYER_SCALE_INIT)
        elif "norm" in leaf[-2] and leaf[-1] == "weight":
            values = torch.ones(param.shape)
        elif leaf[-1] == "bias":
            values = torch.zeros(param.shape)
        else:
            values = torch.empty(param.shape).normal_(0.0, DEFAULT_INIT_STD, generator=generator)
        param.copy_(values.to(param.dtype))


def build_tiny_model(seed: int = 0, qk_init_std: Optional[float] = None, **config_kwargs: Any) -> OpenVLAForActionPrediction:
    model = OpenVLAForActionPrediction(tiny_config(**config_kwargs), attn_implementation="sdpa")
    init_tiny_weights(model, seed, qk_init_std)
    return model


def build_tiny_tokenizer():
    """A `PreTrainedTokenizerFast` with the Llama-2 id layout (see module docstring)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = 3 + byte
    characters = [c for c in string.printable if c not in string.whitespace]
    for i, char in enumerate(characters):
        vocab[char] = 259 + i
    vocab["▁"] = SPACE_TOKEN_ID
    used = set(vocab.values())
    for token_id in range(TEXT_VOCAB_SIZE):
        if token_id not in used:
            vocab[f"<unused{token_id}>"] = token_id
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer.add_special_tokens([AddedToken("<PAD>", special=True, normalized=False)])
    if tokenizer.token_to_id("<PAD>") != PAD_TOKEN_ID:
        raise RuntimeError("tiny tokenizer: <PAD> did not land on id 32000")
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<PAD>",
        padding_side="left",
    )


def _stats(low: list[float], high: list[float], mask: Optional[list[bool]], n_transitions: int) -> dict[str, Any]:
    mean = [(a + b) / 2 for a, b in zip(low, high)]
    std = [(b - a) / 4 for a, b in zip(low, high)]
    entry = {"mean": mean, "std": std, "min": low, "max": high, "q01": low, "q99": high}
    if mask is not None:
        entry["mask"] = mask
    return entry


def tiny_dataset_statistics(action_dim: int = LIBERO_ACTION_DIM, proprio_dim: int = LIBERO_PROPRIO_DIM) -> dict[str, Any]:
    """LIBERO-layout statistics (synthetic values, NOT the real datasets') plus the toy `reach` task's."""
    gripper_mask = [True] * (action_dim - 1) + [False]
    proprio = _stats([-1.0] * proprio_dim, [1.0] * proprio_dim, None, 0)
    stats: dict[str, Any] = {}
    for i, suite in enumerate(LIBERO_SUITES):
        scale = 0.8 + 0.05 * i
        low = [-scale] * 3 + [-0.3 * scale] * 3 + [-1.0]
        high = [scale] * 3 + [0.3 * scale] * 3 + [1.0]
        stats[f"{suite}_no_noops"] = {
            "action": _stats(low[:action_dim], high[:action_dim], gripper_mask, 0),
            "proprio": proprio,
            "num_transitions": 50000 + 1000 * i,
            "num_trajectories": 400 + 10 * i,
        }
    stats["reach"] = {
        "action": _stats([-1.0] * action_dim, [1.0] * action_dim, gripper_mask, 0),
        "proprio": proprio,
        "num_transitions": 0,
        "num_trajectories": 0,
    }
    return stats


def make_tiny_checkpoint(
    out_dir: str | Path,
    *,
    parallel_decoding: bool = True,
    action_dim: int = LIBERO_ACTION_DIM,
    action_chunk: int = LIBERO_ACTION_CHUNK,
    use_proprio: bool = False,
    proprio_dim: int = LIBERO_PROPRIO_DIM,
    num_images_in_input: int = 1,
    seed: int = 0,
    overwrite: bool = False,
    qk_init_std: Optional[float] = None,
    **size: int,
) -> Path:
    """Write a tiny checkpoint directory (config, safetensors + index, statistics, tokenizer, processor).

    `size`: the size knobs of `tiny_config` (vision_width, vision_depth, llm_hidden, llm_layers, patch_size)."""
    model = build_tiny_model(
        seed,
        qk_init_std,
        **size,
        parallel_decoding=parallel_decoding,
        action_dim=action_dim,
        action_chunk=action_chunk,
        use_proprio=use_proprio,
        proprio_dim=proprio_dim,
        num_images_in_input=num_images_in_input,
    )
    processor = OpenVLAProcessor(build_tiny_tokenizer())
    save_openvla_checkpoint(
        model,
        out_dir,
        processor=processor,
        norm_stats=tiny_dataset_statistics(action_dim, proprio_dim),
        overwrite=overwrite,
    )
    return Path(out_dir)
