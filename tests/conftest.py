"""Session-wide test set-up: CPU only, headless rendering, workers that can import verl."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Ray workers and env subprocesses inherit the environment: make `import verl` work for them
# even without an editable install.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


import pytest

# Logical CPUs for the test session's one Ray cluster: a 2-worker group (1 CPU per bundle) plus
# a spare, so the "pending placement" test has something that fits the cluster but is not free.
RAY_NUM_CPUS = 3


@pytest.fixture(scope="session")
def ray_session():
    """One Ray cluster for the whole test session (start-up costs seconds)."""
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(num_cpus=RAY_NUM_CPUS, num_gpus=0, include_dashboard=False, logging_level="ERROR",
                 log_to_driver=True)
    yield ray
    if started_here:
        ray.shutdown()


@pytest.fixture(scope="module")
def one_rank_group():
    """A 1-rank gloo process group for one test module (FSDP2 and the checkpoint code need one)."""
    from datetime import timedelta

    import torch.distributed as dist

    from verl.utils.network import get_free_port

    assert not dist.is_initialized()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{get_free_port()}", rank=0, world_size=1,
                            timeout=timedelta(seconds=120))
    yield
    dist.destroy_process_group()
