"""Entry point: `python -m verl.trainer.main_sft key=value ...` (Hydra overrides, sft_trainer.yaml).

parse -> validate the config and the initial checkpoint's files (before Ray or any model, as
main_ppo does) -> load demos, statistics, samples -> ray.init -> SFT workers -> fit -> shut down.
The last checkpoint is what `main_ppo` starts from.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from verl.trainer.checkpoint_validation import validate_sft_checkpoint
from verl.trainer.config_validation import validate_sft_config
from verl.trainer.entry import run_cli, run_on_ray


def prepare_sft_config(config: DictConfig) -> DictConfig:
    """Resolve interpolations, validate the keys, then the checkpoint's files (a truncated shard,
    a mismatched key, a resumed run's checkpoint); raises ConfigError naming the key or file."""
    OmegaConf.resolve(config)
    validate_sft_config(config)
    validate_sft_checkpoint(config)
    return config


def run_sft(config: DictConfig) -> None:
    config = prepare_sft_config(config)
    from verl.trainer.sft.ray_sft_trainer import RaySFTTrainer

    run_on_ray(RaySFTTrainer(config), config)  # the trainer reads the demos and checks the output dir before Ray starts


@hydra.main(config_path="config", config_name="sft_trainer", version_base=None)
def main(config: DictConfig) -> None:
    run_cli(run_sft, config)


if __name__ == "__main__":
    main()
