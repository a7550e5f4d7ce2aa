"""CPU pinning: every thread of the process moves, thread pools are sized to the core set, and
env workers started with `cpu_cores` run only there."""

import multiprocessing as mp
import os

import pytest

from verl.utils.cpu_affinity import available_cores, check_cores, pin_process

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux-only")


def thread_affinities(pid: int | str = "self") -> dict[int, set[int]]:
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        out[int(tid)] = os.sched_getaffinity(int(tid))
    return out


def _pin_and_report(cores, queue) -> None:
    import threading

    import torch

    torch.set_num_threads(2)  # a pool started before pinning, as in the rollout benchmark
    torch.ones(256, 256) @ torch.ones(256, 256)
    stop = threading.Event()
    early = threading.Thread(target=stop.wait)  # a thread that exists before pinning
    early.start()
    pin_process(cores)
    queue.put((thread_affinities(), torch.get_num_threads(), os.environ.get("LP_NUM_THREADS"),
               early.native_id))
    stop.set()
    early.join()


def test_pin_process_moves_every_thread_and_sizes_thread_pools():
    core = min(available_cores())
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    env = {k: os.environ.pop(k) for k in ("LP_NUM_THREADS",) if k in os.environ}
    try:
        proc = ctx.Process(target=_pin_and_report, args=([core], queue))
        proc.start()
        affinities, torch_threads, lp_threads, early_tid = queue.get(timeout=120)
        proc.join(timeout=60)
    finally:
        os.environ.update(env)
    assert early_tid in affinities
    assert all(cores == {core} for cores in affinities.values()), affinities
    assert torch_threads == 1 and lp_threads == "1"


def test_check_cores_names_the_key():
    assert check_cores([min(available_cores())], "env.cpu_cores") == (min(available_cores()),)
    with pytest.raises(ValueError, match="env.cpu_cores=\\[\\] names no CPU core"):
        check_cores([], "env.cpu_cores")
    with pytest.raises(ValueError, match="env.cpu_cores=\\[100000\\] names cores \\[100000\\]"):
        check_cores([100000], "env.cpu_cores")


def test_env_pool_workers_run_on_their_cores():
    from verl.envs.env_pool import EnvPool, EnvPoolConfig

    core = max(available_cores())
    with EnvPool(EnvPoolConfig(benchmark="reach", num_workers=2, envs_per_worker=1, cpu_cores=[core])) as pool:
        pool.reset([0, 1], [pool_spec(0), pool_spec(1)])  # the worker is serving: its set-up is done
        for pid in pool.worker_pids():
            assert all(cores == {core} for cores in thread_affinities(pid).values())
    with pytest.raises(ValueError, match="cpu_cores"):
        EnvPoolConfig(benchmark="reach", cpu_cores=[100000])


def pool_spec(task_id: int):
    from verl.envs.base import EnvSpec

    return EnvSpec("reach", "reach", task_id, 0)
