"""Configuration of an ``EnvPool`` and of the adapters it hosts (one dataclass, validated once)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from verl.envs.reach_env import ReachConfig
from verl.envs.robotwin2_env import RoboTwin2Config

START_METHODS = ("spawn", "forkserver")
LIBERO_RESET_MODES = ("fast", "hard")


@dataclass
class EnvPoolConfig:
    """How many env workers to run, how long to wait for them, and what the envs render."""

    benchmark: str = "libero"  # adapter name: "libero" | "robotwin2" | "reach" (or a registered one)
    num_workers: int = 1  # persistent worker processes; they step in parallel
    envs_per_worker: int = 1  # env slots per worker, stepped one after the other
    # A busy worker silent for longer than this (no env step, in-place reset or heartbeat done) is
    # considered hung, killed and restarted; a chunk of 8 actions is 8 signs of life, not one.
    step_timeout_s: float = 30.0
    # The same, while the worker starts or builds a simulator (a reset to a new task, LIBERO
    # "hard" resets, every RoboTwin reset) or writes a video: building a LIBERO env takes ~3.5 s
    # idle, much more under load.
    reset_timeout_s: float = 300.0
    # Restart budget, a rate: more than max_restarts restarts of one worker within any
    # restart_window_s raises EnvPoolError, so rare faults never end a multi-day run.
    max_restarts: int = 60
    restart_window_s: float = 3600.0
    # A worker failing this many requests in a row (crash, hang, error, or every env faulted)
    # without serving one raises EnvPoolError at once: it fails every time (a broken install).
    max_consecutive_failures: int = 5
    retry_faulted: bool = True  # retry a faulted reset once (on the restarted worker)
    image_size: Optional[int] = None  # None: benchmark default (LIBERO 256, reach 224, RoboTwin native)
    camera_names: tuple[str, ...] = ()  # (): benchmark default (LIBERO agentview, RoboTwin head_camera)
    num_steps_wait: int = 10  # no-op steps after reset so objects settle (LIBERO)
    max_episode_steps: Optional[int] = None  # None: per benchmark/suite (LIBERO 512, RoboTwin per task)
    start_method: str = "spawn"  # never fork: the pool lives in Ray actors and torch processes
    video_dir: Optional[str] = None  # when set, every episode is saved as an mp4 there
    video_fps: int = 20
    gl_backend: Optional[str] = None  # None: $MUJOCO_GL if set, else EGL then OSMesa
    # "fast": rebuild a LIBERO env only when the task changes, else seeded soft reset (bit-identical
    # to the reference's fresh env, checked by a test); "hard": seeded hard reset every episode.
    libero_reset_mode: str = "fast"
    # Built LIBERO envs a slot keeps, one per task (1: rebuild on every task switch, ~3.5 s; more:
    # a switch back to a parked task is a ~0.3 s soft reset, for ~0.75 GiB of host memory per env).
    libero_cached_tasks: int = 1
    reach: ReachConfig = field(default_factory=ReachConfig)
    robotwin2: RoboTwin2Config = field(default_factory=RoboTwin2Config)
    # CPU cores the env workers may use (None: any). Without a GPU, keeping the simulators and
    # their software renderers off the policy's cores lets model and env work overlap.
    cpu_cores: Optional[tuple[int, ...]] = None
    adapter_modules: tuple[str, ...] = ()  # modules a worker imports first (to register adapters)
    worker_log_level: str = "INFO"

    def __post_init__(self) -> None:
        self.camera_names = tuple(self.camera_names)
        self.adapter_modules = tuple(self.adapter_modules)
        if self.cpu_cores is not None:
            from verl.utils.cpu_affinity import check_cores

            self.cpu_cores = check_cores(self.cpu_cores, "env pool cpu_cores")
        if isinstance(self.reach, Mapping):
            self.reach = ReachConfig(**self.reach)
        if isinstance(self.robotwin2, Mapping):
            self.robotwin2 = RoboTwin2Config(**self.robotwin2)
        for key in ("num_workers", "envs_per_worker"):
            if getattr(self, key) < 1:
                raise ValueError(f"env pool {key}={getattr(self, key)} must be >= 1")
        for key in ("step_timeout_s", "reset_timeout_s", "restart_window_s"):
            if getattr(self, key) <= 0:
                raise ValueError(f"env pool {key}={getattr(self, key)} must be > 0")
        if self.libero_cached_tasks < 1:
            raise ValueError(f"env pool libero_cached_tasks={self.libero_cached_tasks} must be >= 1")
        if self.max_consecutive_failures < 1:
            raise ValueError(f"env pool max_consecutive_failures={self.max_consecutive_failures} must be >= 1")
        if self.max_restarts < 0 or self.num_steps_wait < 0:
            raise ValueError(
                f"env pool max_restarts={self.max_restarts} and num_steps_wait={self.num_steps_wait} "
                "must be >= 0"
            )
        if self.max_episode_steps is not None and self.max_episode_steps < 1:
            raise ValueError(f"env pool max_episode_steps={self.max_episode_steps} must be >= 1 or None")
        if self.start_method not in START_METHODS:
            raise ValueError(
                f"env pool start_method={self.start_method!r}; expected one of {list(START_METHODS)}"
            )
        if self.libero_reset_mode not in LIBERO_RESET_MODES:
            raise ValueError(
                f"env pool libero_reset_mode={self.libero_reset_mode!r}; expected one of "
                f"{list(LIBERO_RESET_MODES)}"
            )

    @property
    def num_envs(self) -> int:
        return self.num_workers * self.envs_per_worker

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "EnvPoolConfig":
        """Build from a plain mapping (e.g. an OmegaConf node converted to a dict).

        Unknown keys are an error naming the key, so a typo never falls back to a default.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown env pool config keys {unknown}; expected a subset of {sorted(known)}")
        return cls(**dict(values))
