"""OpenVLA / OpenVLA-OFT in our own code: config, model, processor, action tokenizer, checkpoint I/O, LoRA.

The names below are imported on first use (PEP 562), not with the package: the controller's
checks of a checkpoint's files (`checkpoint_files`, `constants`, `normalization`) then run without
importing transformers and timm, so a bad key or file is reported in about a second, before the
model code loads. `from verl.models.openvla_oft import X` works as for any package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the submodule that defines it
_EXPORTS: dict[str, str] = {
    "ActionTokenizer": "action_tokenizer",
    "load_openvla_checkpoint": "checkpoint",
    "read_checkpoint_weights": "checkpoint",
    "save_openvla_checkpoint": "checkpoint",
    "OpenVLAConfig": "configuration",
    **{name: "constants" for name in ("ACTION_TOKEN_BEGIN", "ACTION_TOKEN_END", "BOS_TOKEN_ID", "EOS_TOKEN_ID",
                                        "N_ACTION_BINS", "PAD_TOKEN_ID", "SPACE_TOKEN_ID")},
    "libero_observation_pipeline": "libero_observation",
    "apply_lora": "lora",
    "merge_lora": "lora",
    "merged_state_dict": "lora",
    "OpenVLAForActionPrediction": "modeling",
    "sample_action_bins": "modeling",
    "get_action_norm_stats": "normalization",
    "load_dataset_statistics": "normalization",
    "postprocess_libero_gripper": "normalization",
    "unnormalize_actions": "normalization",
    "OpenVLAProcessor": "processor",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and IDEs: _EXPORTS's names, imported eagerly (a test keeps the two equal)
    from verl.models.openvla_oft.action_tokenizer import ActionTokenizer
    from verl.models.openvla_oft.checkpoint import (load_openvla_checkpoint, read_checkpoint_weights,
                                                   save_openvla_checkpoint)
    from verl.models.openvla_oft.configuration import OpenVLAConfig
    from verl.models.openvla_oft.constants import (ACTION_TOKEN_BEGIN, ACTION_TOKEN_END, BOS_TOKEN_ID, EOS_TOKEN_ID,
                                                  N_ACTION_BINS, PAD_TOKEN_ID, SPACE_TOKEN_ID)
    from verl.models.openvla_oft.libero_observation import libero_observation_pipeline
    from verl.models.openvla_oft.lora import apply_lora, merge_lora, merged_state_dict
    from verl.models.openvla_oft.modeling import OpenVLAForActionPrediction, sample_action_bins
    from verl.models.openvla_oft.normalization import (get_action_norm_stats, load_dataset_statistics,
                                                      postprocess_libero_gripper, unnormalize_actions)
    from verl.models.openvla_oft.processor import OpenVLAProcessor
