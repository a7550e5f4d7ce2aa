"""What the two entry points (main_ppo, main_sft) share: Ray start-up with align.json's env, a
trainer's lifetime on its workers, and the command line's handling of a bad config.

Both validate everything they can before `run_on_ray` starts Ray: a bad key or file costs a
second, not a cluster start-up and a model load.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

from omegaconf import DictConfig

from verl.trainer.config_validation import ConfigError
from verl.utils.runtime_env import apply_env_vars, describe_runtime_env, load_runtime_env

logger = logging.getLogger(__name__)


def init_ray(config: DictConfig) -> None:
    """ray.init with align.json's runtime env (trainer.runtime_env); MUJOCO_GL for every worker."""
    import ray

    runtime_env: dict = {}
    if config.trainer.runtime_env:
        runtime_env = load_runtime_env(config.trainer.runtime_env)
        apply_env_vars(runtime_env)  # the driver logs to W&B; workers get the vars from Ray
        logger.info(describe_runtime_env(runtime_env))
    env_vars = dict(runtime_env.get("env_vars", {}))
    env_vars.setdefault("MUJOCO_GL", config.env.mujoco_gl)
    env_vars.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not ray.is_initialized():
        ray.init(
            runtime_env={**runtime_env, "env_vars": env_vars},
            num_cpus=config.trainer.ray_num_cpus,
            include_dashboard=False,
            logging_level=logging.WARNING,
        )


def run_on_ray(trainer: Any, config: DictConfig) -> None:
    """A trainer built (and its data and output directory checked) before Ray starts: start Ray,
    its workers, fit; the workers are shut down however fit ends."""
    init_ray(config)
    try:
        trainer.init_workers()
        trainer.fit()
    finally:
        trainer.shutdown()


def run_cli(run: Callable[[DictConfig], None], config: DictConfig) -> None:
    """`run(config)` as a command: log lines with time and module; a bad config is one clear
    line (no traceback, exit code 2), since the user typed a bad value."""
    logging.basicConfig(level=os.environ.get("VERL_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run(config)
    except ConfigError as err:
        logger.error("invalid config: %s", err)
        raise SystemExit(2) from None
