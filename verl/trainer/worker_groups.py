"""Starting and stopping a trainer's worker group: one place for the RL and SFT trainers.

A rank that fails or hangs stops the whole group at once (its peers are usually blocked in a
collective with it); the error names the rank and the call, with a traceback or stack.
"""

from __future__ import annotations

from typing import Any, Optional

from omegaconf import DictConfig

from verl.trainer.config_validation import resolve_device


def make_resource_pool(config: DictConfig, colocated_groups: int = 1) -> Any:
    """One bundle per GPU (or CPU slot) of the config, shared by `colocated_groups` worker groups
    (each of their actors takes that fraction of a bundle: the actor and critic on one GPU)."""
    from verl.single_controller.ray import RayResourcePool

    t = config.trainer
    return RayResourcePool([t.n_gpus_per_node] * t.nnodes, use_gpu=resolve_device(config) == "cuda",
                           max_colocate_count=colocated_groups)


def start_worker_group(config: DictConfig, worker_cls: type, name_prefix: str, pool: Optional[Any] = None) -> tuple[Any, Any]:
    """(resource pool, worker group) of `worker_cls`, one worker per bundle of `pool` (a new pool
    of one bundle per GPU or CPU slot of the config if None)."""
    from verl.single_controller.ray import RayClassWithInitArgs, RayWorkerGroup

    t = config.trainer
    pool = pool if pool is not None else make_resource_pool(config)
    group = RayWorkerGroup(pool, RayClassWithInitArgs(worker_cls, config=config), name_prefix=name_prefix,
                           init_timeout_s=t.worker_timeout_s, call_timeout_s=t.worker_timeout_s, abort_on_failure=True)
    return pool, group


def stop_worker_group(group: Optional[Any], pool: Optional[Any]) -> None:
    """Close the env pools (unless the group failed: it is stopped already), then the workers and the pool."""
    try:
        if group is not None:
            try:
                if group.failure is None:
                    group.close_envs()
            finally:
                group.shutdown()
    finally:
        if pool is not None:
            pool.release()
