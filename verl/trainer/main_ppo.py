"""Entry point: `python -m verl.trainer.main_ppo key=value ...` (Hydra overrides).

parse -> validate the config and the checkpoint's files (before Ray or any model) -> ray.init
with align.json's env -> build the trainer -> fit (or validate only) -> shut down.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from verl.trainer.checkpoint_validation import validate_checkpoint
from verl.trainer.config_validation import validate_config
from verl.trainer.entry import run_cli, run_on_ray


def prepare_config(config: DictConfig) -> DictConfig:
    """Resolve interpolations, validate the keys, then the checkpoint's files and their agreement
    with the keys; raises ConfigError naming the bad key or file."""
    OmegaConf.resolve(config)
    validate_config(config)
    validate_checkpoint(config)
    return config


def run_ppo(config: DictConfig) -> None:
    config = prepare_config(config)
    from verl.trainer.ppo.ray_trainer import RayPPOTrainer

    run_on_ray(RayPPOTrainer(config), config)  # the trainer checks data and the output directory before Ray starts


@hydra.main(config_path="config", config_name="ppo_trainer", version_base=None)
def main(config: DictConfig) -> None:
    run_cli(run_ppo, config)


if __name__ == "__main__":
    main()
