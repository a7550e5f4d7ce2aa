"""Give a process a fixed set of CPU cores and size its thread pools to match.

Without a GPU, the policy and the simulators share the machine's cores; MuJoCo's physics, the
llvmpipe software renderer and torch's OpenMP pool each start as many threads as there are cores,
and threads that spin-wait on cores someone else is using are very slow (a forward pass slowed
10x in our 2-core benchmark). Disjoint core sets let the rollout overlap model and env work the
way a GPU node does naturally.
"""

from __future__ import annotations

import os
import sys
from typing import Iterable, Optional

# thread-pool sizes read at library start-up: OpenMP (torch, numpy BLAS), MKL, llvmpipe (Mesa)
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "LP_NUM_THREADS")


def available_cores() -> set[int]:
    return set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def check_cores(cores: Iterable[int], key: str) -> tuple[int, ...]:
    """Validate a user's core list against the cores this process may use; errors name `key`."""
    cores = tuple(int(c) for c in cores)
    if not cores:
        raise ValueError(f"{key}=[] names no CPU core; use null for 'any core' or e.g. [1, 2, 3]")
    missing = sorted(set(cores) - available_cores())
    if missing:
        raise ValueError(f"{key}={list(cores)} names cores {missing} this process cannot use; "
                         f"available: {sorted(available_cores())}")
    return cores


def set_process_affinity(cores: Iterable[int]) -> None:
    """Set the affinity of every thread of this process, not only the calling one: thread pools
    started earlier (OpenMP, OpenBLAS) would otherwise keep spinning on the other cores."""
    if not hasattr(os, "sched_setaffinity"):
        return  # not Linux: nothing to pin
    cores = set(cores)
    try:
        threads = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        threads = [0]
    for tid in threads:
        try:
            os.sched_setaffinity(tid, cores)
        except (ProcessLookupError, PermissionError):
            pass  # the thread ended meanwhile, or belongs to a runtime that forbids it


def pin_process(cores: Optional[Iterable[int]]) -> None:
    """Restrict this process to `cores` and size thread pools not yet started to their number.

    Call it first thing in a fresh process (before torch/Mesa start their pools). Thread counts
    the user set explicitly in the environment are kept. `None` leaves the process untouched.
    """
    if cores is None:
        return
    cores = sorted(set(cores))
    set_process_affinity(cores)
    for var in THREAD_ENV_VARS:
        os.environ.setdefault(var, str(len(cores)))
    if "torch" in sys.modules:  # already imported: its pool size is set through the API
        sys.modules["torch"].set_num_threads(len(cores))
