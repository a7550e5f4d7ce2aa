"""Running `python -m verl.trainer.main_ppo` as users do, and reading what it logged."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Metric families whose values depend on wall-clock time or process memory, not on the computation.
NOT_DETERMINISTIC = ("timing/", "perf/", "rollout/env_steps_per_s", "rollout/model_time_s",
                     "rollout/env_wait_time_s", "rollout/env_busy_time_s", "rollout/wall_time_s")


def reach_overrides(ckpt: Path, run_dir: Path, *extra: str) -> list[str]:
    """A small reach run on 2 CPU workers (each with one env process)."""
    return [
        f"actor_rollout_ref.model.path={ckpt}", "data.task_suite_name=reach",
        "actor_rollout_ref.rollout.task_suite_name=reach", "actor_rollout_ref.rollout.unnorm_key=reach",
        "trainer.device=cpu", "trainer.n_gpus_per_node=2", "trainer.ray_num_cpus=3",
        "data.train_batch_size=2", "data.n_samples=4", "data.num_trials_per_task=4", "data.val_batch_size=8",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4", "actor_rollout_ref.actor.ppo_micro_batch_size=2",
        "actor_rollout_ref.actor.traj_mini_batch_size=3", "actor_rollout_ref.actor.optim.lr=1e-3",
        "env.num_workers=1", "env.envs_per_worker=4", "trainer.logger=[console]",
        f"trainer.default_local_dir={run_dir}", *extra,
    ]


def main_ppo_command(overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "verl.trainer.main_ppo", *overrides]


def run_main(overrides: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(main_ppo_command(overrides), capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if proc.returncode != 0:
        raise AssertionError(f"main_ppo failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


def run_until(overrides: list[str], done: "callable", timeout: float = 600) -> None:
    """Start main_ppo and SIGKILL its whole process group once `done()` is true (a crash, not a stop)."""
    proc = subprocess.Popen(main_ppo_command(overrides), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + timeout
    try:
        while not done():
            if proc.poll() is not None:
                raise AssertionError(f"main_ppo exited ({proc.returncode}) before the kill point")
            if time.time() > deadline:
                raise AssertionError("kill point not reached in time")
            time.sleep(0.2)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def read_metrics(run_dir: Path) -> dict[int, dict[str, float]]:
    """step -> merged metrics from metrics.jsonl (a resumed run appends to the same file)."""
    out: dict[int, dict[str, float]] = {}
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        out.setdefault(row.pop("step"), {}).update(row)
    return out


def deterministic(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if not k.startswith(NOT_DETERMINISTIC)}
