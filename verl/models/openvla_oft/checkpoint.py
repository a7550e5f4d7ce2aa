"""Load and save OpenVLA(-OFT) checkpoints in the released Hugging Face directory format.

A directory holds `config.json`, sharded safetensors with `model.safetensors.index.json`,
`dataset_statistics.json`, and the tokenizer / processor files. Two quirks of the real files:
timm's LayerScale parameter `gamma` is stored as `scale_factor`, and OFT fine-tunes may keep the
proprio projector in a separate torch file `proprio_projector--<step>_checkpoint.pt` (keys possibly
prefixed by DDP's `module.`). Any missing or unreadable file raises one error naming that file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import Any, Optional, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from verl.models.openvla_oft.configuration import CONFIG_NAME, OpenVLAConfig
from verl.models.openvla_oft.modeling import OpenVLAForActionPrediction
from verl.models.openvla_oft.normalization import DATASET_STATISTICS_NAME, load_dataset_statistics

logger = logging.getLogger(__name__)

WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
SINGLE_WEIGHTS_NAME = "model.safetensors"
PROPRIO_CHECKPOINT_PATTERN = re.compile(r"^proprio_projector--(\d+)_checkpoint\.pt$")
PROPRIO_PREFIX = "proprio_projector."

_CHECKPOINT_TO_TIMM = ((".ls1.scale_factor", ".ls1.gamma"), (".ls2.scale_factor", ".ls2.gamma"))
_DTYPE_NAMES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}


def checkpoint_key_to_module_key(key: str) -> str:
    """`...ls1.scale_factor` (file) -> `...ls1.gamma` (timm module)."""
    for stored, module in _CHECKPOINT_TO_TIMM:
        if key.endswith(stored):
            return key[: -len(stored)] + module
    return key


def module_key_to_checkpoint_key(key: str) -> str:
    """`...ls1.gamma` (timm module) -> `...ls1.scale_factor` (file)."""
    for stored, module in _CHECKPOINT_TO_TIMM:
        if key.endswith(module):
            return key[: -len(module)] + stored
    return key


def load_safetensors_file(path: Path) -> dict[str, torch.Tensor]:
    """One safetensors file; a missing or unreadable file raises one error naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"weight file {path} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"weight file {path} is not a readable safetensors file ({err})") from err


def read_checkpoint_weights(directory: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory under their stored (file) names."""
    directory = Path(directory)
    index_path = directory / WEIGHTS_INDEX_NAME
    if not index_path.is_file():
        single = directory / SINGLE_WEIGHTS_NAME
        if single.is_file():
            return load_safetensors_file(single)
        raise FileNotFoundError(f"{directory} has neither {WEIGHTS_INDEX_NAME} nor {SINGLE_WEIGHTS_NAME}")
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{index_path} is not a valid safetensors index with a 'weight_map' ({err})") from err
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        shard_tensors = load_safetensors_file(directory / shard)
        expected = {k for k, v in weight_map.items() if v == shard}
        missing = sorted(expected - set(shard_tensors))
        if missing:
            raise ValueError(f"weight file {directory / shard} lacks {len(missing)} tensors listed in the index: {missing[:5]}")
        tensors.update(shard_tensors)
    return tensors


def _read_proprio_projector(directory: Path) -> dict[str, torch.Tensor]:
    """The OFT proprio projector from `proprio_projector--<step>_checkpoint.pt` (latest step), keys prefixed."""
    candidates = [(int(m.group(1)), p) for p in directory.iterdir() if (m := PROPRIO_CHECKPOINT_PATTERN.match(p.name))]
    if not candidates:
        return {}
    step, path = max(candidates)
    if len(candidates) > 1:
        logger.warning("several proprio projector files in %s; using step %d (%s)", directory, step, path.name)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several unrelated types for a corrupt pickle/zip
        raise ValueError(f"{path} is not a readable torch state dict ({err})") from err
    return {PROPRIO_PREFIX + k.removeprefix("module."): v for k, v in state.items()}


def load_openvla_checkpoint(
    path: str | Path,
    *,
    device: Union[str, torch.device] = "cpu",
    dtype: torch.dtype = torch.float32,
    action_dim: Optional[int] = None,
    action_chunk: Optional[int] = None,
    parallel_decoding: Optional[bool] = None,
    use_proprio: Optional[bool] = None,
    proprio_dim: Optional[int] = None,
    num_images_in_input: Optional[int] = None,
    attn_implementation: Optional[str] = None,
    meta_device: bool = False,
) -> OpenVLAForActionPrediction:
    """Build the model from `config.json` (overridden by the given keyword fields) and load its weights.

    `meta_device=True` returns the model on the meta device without reading any weight (for shape checks
    and for FSDP ranks that receive weights by broadcast).
    """
    directory = Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    config = OpenVLAConfig.from_pretrained(directory)
    overrides = {
        "action_dim": action_dim,
        "action_chunk": action_chunk,
        "parallel_decoding": parallel_decoding,
        "use_proprio": use_proprio,
        "proprio_dim": proprio_dim,
        "num_images_in_input": num_images_in_input,
    }
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    if config.norm_stats is None and (directory / DATASET_STATISTICS_NAME).is_file():
        config.norm_stats = load_dataset_statistics(directory)

    with torch.device("meta"):
        model = OpenVLAForActionPrediction(config, attn_implementation=attn_implementation)
    if meta_device:
        return model

    stored = read_checkpoint_weights(directory)
    if config.use_proprio and not any(k.startswith(PROPRIO_PREFIX) for k in stored):
        stored.update(_read_proprio_projector(directory))
    state = {checkpoint_key_to_module_key(k): v.to(dtype) for k, v in stored.items()}
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{directory}: weights do not match the model built from {CONFIG_NAME}: "
            f"{len(missing)} missing (e.g. {missing[:5]}), {len(unexpected)} unexpected (e.g. {unexpected[:5]})"
        )
    wrong_shape = [(k, tuple(v.shape), tuple(expected[k].shape)) for k, v in state.items() if v.shape != expected[k].shape]
    if wrong_shape:
        raise ValueError(f"{directory}: tensor shapes differ from {CONFIG_NAME} (key, stored, expected): {wrong_shape[:5]}")
    model.load_state_dict(state, strict=True, assign=True)
    # RoPE frequencies are a non-persistent buffer (not in the files): rebuild it off the meta device.
    llama = model.language_model.model
    llama.rotary_emb = LlamaRotaryEmbedding(config=model.language_model.config)
    still_meta = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if still_meta:
        raise RuntimeError(f"tensors left uninitialised after loading {directory}: {still_meta[:5]}")
    return model.to(device)


def _parse_size(size: Union[int, str]) -> int:
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?B)\s*", size.upper())
    if not match:
        raise ValueError(f"max_shard_size must be an int or like '5GB' / '500MB', got {size!r}")
    scale = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9}[match.group(2)]
    return int(float(match.group(1)) * scale)


def _shard(state: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    current = 0
    for key, tensor in state.items():
        size = tensor.numel() * tensor.element_size()
        if shards[-1] and current + size > max_bytes:
            shards.append({})
            current = 0
        shards[-1][key] = tensor
        current += size
    return shards


def save_openvla_checkpoint(
    model: OpenVLAForActionPrediction,
    path: str | Path,
    *,
    processor: Any = None,
    norm_stats: Optional[dict[str, Any]] = None,
    max_shard_size: Union[int, str] = "5GB",
    state_dict: Optional[dict[str, torch.Tensor]] = None,
    overwrite: bool = False,
) -> None:
    """Write `model` (or `state_dict`, e.g. a gathered FSDP or LoRA-merged one, with module key names) to `path`.

    Writes only inside `path`. A directory that already holds a model is refused unless `overwrite`.
    """
    directory = Path(path)
    existing = [p.name for p in directory.glob("*") if p.name in (CONFIG_NAME, WEIGHTS_INDEX_NAME) or p.suffix == ".safetensors"]
    if existing and not overwrite:
        raise FileExistsError(f"{directory} already holds a model ({sorted(existing)}); pass overwrite=True to replace it")
    directory.mkdir(parents=True, exist_ok=True)
    for name in existing:  # no stale shard of an older model may survive next to the new index
        (directory / name).unlink()

    source = model.state_dict() if state_dict is None else state_dict
    state: dict[str, torch.Tensor] = {}
    seen_storage: set[int] = set()
    for key, tensor in source.items():
        tensor = tensor.detach().to("cpu").contiguous()
        if tensor.untyped_storage().data_ptr() in seen_storage:  # safetensors refuses shared storage
            tensor = tensor.clone()
        seen_storage.add(tensor.untyped_storage().data_ptr())
        state[module_key_to_checkpoint_key(key)] = tensor

    shards = _shard(state, _parse_size(max_shard_size))
    weight_map: dict[str, str] = {}
    for i, shard in enumerate(shards, start=1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(directory / name), metadata={"format": "pt"})
        weight_map.update({key: name for key in shard})
    total_size = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    (directory / WEIGHTS_INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")

    config = dataclasses.replace(model.config)
    if norm_stats is not None:
        config.norm_stats = norm_stats
    first_dtype = next(iter(state.values())).dtype
    config.torch_dtype = _DTYPE_NAMES.get(first_dtype, str(first_dtype).removeprefix("torch."))
    config.save_pretrained(directory)
    if config.norm_stats is not None:
        (directory / DATASET_STATISTICS_NAME).write_text(json.dumps(config.norm_stats, indent=2) + "\n")
    if processor is not None:
        processor.save_pretrained(directory)
    logger.info("saved OpenVLA checkpoint to %s (%d shards, %.1f MB)", directory, len(shards), total_size / 1e6)
