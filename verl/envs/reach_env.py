"""``reach``: a tiny rendered 2-D reaching task for proving the RL loop learns on a CPU.

The scene is a square arena (world coordinates x, y in [-1, 1], +y up) with several coloured
discs; the instruction names one ("move to the red target"). The agent, a grey square, moves by
``clip(action[:2], -1, 1) * step_size`` per step; action dims 2..6 are ignored so the action
shape matches LIBERO's 7. Success: the agent's centre within ``success_radius`` of the named
target. Actions use the policy's normalised convention [-1, 1] directly (no un-normalisation).

Images are 224x224 uint8 rendered upright (not upside down like LIBERO), so no rotation is
needed. Everything is deterministic from (task_id, trial_id, seed). It is not a benchmark: the
defaults keep the visual and semantic problem small enough for a tiny OpenVLA-OFT-shaped model
to learn with GRPO in minutes (fixed target layout, 4 colours, a few chunks per episode).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Final, Optional

import numpy as np

from verl.envs.base import EnvAdapter, EnvObs, EnvSpec

logger = logging.getLogger(__name__)

# Colour name -> RGB. Order fixes task_id -> colour (task k targets colour k).
TARGET_COLORS: Final[dict[str, tuple[int, int, int]]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 80, 240),
    "yellow": (240, 220, 40),
    "magenta": (220, 60, 220),
    "cyan": (50, 220, 230),
    "orange": (250, 140, 20),
    "purple": (120, 40, 160),
}
BACKGROUND_RGB: Final[tuple[int, int, int]] = (30, 30, 30)
AGENT_RGB: Final[tuple[int, int, int]] = (170, 170, 170)
REACH_NUM_TASKS_DEFAULT: Final[int] = 4


@dataclass
class ReachConfig:
    """Knobs of the reach task; the defaults are tuned for a learning test, not for difficulty."""

    num_targets: int = REACH_NUM_TASKS_DEFAULT  # tasks = one per target colour
    randomize_positions: bool = False  # False: targets on a fixed circle, only the start jitters
    target_distance: float | list[float] = 0.5  # radius of the fixed circle; one per target: targets of different difficulty
    success_radius: float = 0.2
    step_size: float = 0.1  # world units moved per step at |action| = 1
    start_jitter: float = 0.1  # per-trial uniform jitter of the agent's start around the centre
    max_episode_steps: int = 24  # three chunks of 8
    image_size: int = 224
    target_draw_radius: float = 0.12  # world units; visual size of a target disc
    agent_draw_half_size: float = 0.06  # world units; visual half side of the agent square

    def __post_init__(self) -> None:
        if not 1 <= self.num_targets <= len(TARGET_COLORS):
            raise ValueError(
                f"reach.num_targets={self.num_targets} must be in [1, {len(TARGET_COLORS)}]"
            )
        for key in ("success_radius", "step_size", "target_draw_radius"):
            if getattr(self, key) <= 0:
                raise ValueError(f"reach.{key}={getattr(self, key)} must be > 0")
        distances = np.atleast_1d(np.asarray(self.target_distance, dtype=np.float64))
        if len(distances) not in (1, self.num_targets) or (distances <= 0).any():
            raise ValueError(f"reach.target_distance={self.target_distance} must be a number > 0 or one per target "
                             f"({self.num_targets} numbers > 0)")
        if self.max_episode_steps < 1 or self.image_size < 16:
            raise ValueError(
                f"reach.max_episode_steps={self.max_episode_steps} must be >= 1 and "
                f"reach.image_size={self.image_size} >= 16"
            )


def reach_instruction(color: str) -> str:
    return f"move to the {color} target"


@dataclass
class ReachLayout:
    """Where everything starts in one episode (world coordinates)."""

    targets: np.ndarray  # float64 [num_targets, 2]
    agent_start: np.ndarray  # float64 [2]
    target_index: int


def reach_layout(cfg: ReachConfig, task_id: int, trial_id: int, seed: int = 0) -> ReachLayout:
    """Deterministic layout of (task_id, trial_id, seed).

    The scene depends on the trial only (the task picks which target is named), so the same
    trial under different tasks differs only in the instruction: the policy must read it.
    """
    if not 0 <= task_id < cfg.num_targets:
        raise ValueError(f"reach task_id={task_id} must be in [0, {cfg.num_targets})")
    if trial_id < 0:
        raise ValueError(f"reach trial_id={trial_id} must be >= 0")
    rng = np.random.default_rng([int(trial_id), int(seed), 0x5EAC])
    if cfg.randomize_positions:
        targets = _sample_separated_points(rng, cfg.num_targets, min_dist=2.5 * cfg.success_radius)
    else:
        angles = np.pi / 4 + 2 * np.pi * np.arange(cfg.num_targets) / cfg.num_targets
        distances = np.atleast_1d(np.asarray(cfg.target_distance, dtype=np.float64))[:, None]  # [1 or K, 1]
        targets = distances * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    agent_start = rng.uniform(-cfg.start_jitter, cfg.start_jitter, size=2)
    return ReachLayout(targets=targets, agent_start=agent_start, target_index=task_id)


def _sample_separated_points(rng: np.random.Generator, n: int, min_dist: float) -> np.ndarray:
    """Rejection-sample ``n`` points in [-0.8, 0.8]^2 pairwise ``min_dist`` apart and away from
    the start region around the centre."""
    points: list[np.ndarray] = []
    for _ in range(10_000):
        p = rng.uniform(-0.8, 0.8, size=2)
        if np.linalg.norm(p) < min_dist:
            continue
        if all(np.linalg.norm(p - q) >= min_dist for q in points):
            points.append(p)
            if len(points) == n:
                return np.stack(points)
    raise ValueError(f"cannot place {n} reach targets {min_dist:.2f} apart; lower success_radius")


class ReachRenderer:
    """Draws the arena with numpy masks (about a millisecond at 224 px)."""

    def __init__(self, cfg: ReachConfig) -> None:
        self.cfg = cfg
        size = cfg.image_size
        coords = np.linspace(-1.0, 1.0, size)
        # pixel row 0 is the top of the arena (y = +1): images are upright
        self._x = coords[None, :]  # [1, W]
        self._y = coords[::-1, None]  # [H, 1]
        self._colors = list(TARGET_COLORS.values())[: cfg.num_targets]

    def render(self, layout: ReachLayout, agent: np.ndarray) -> np.ndarray:
        """uint8 [H, W, 3] image of the targets and the agent (agent drawn on top)."""
        size = self.cfg.image_size
        image = np.empty((size, size, 3), dtype=np.uint8)
        image[:] = BACKGROUND_RGB
        r2 = self.cfg.target_draw_radius**2
        for (tx, ty), color in zip(layout.targets, self._colors):
            mask = (self._x - tx) ** 2 + (self._y - ty) ** 2 <= r2
            image[mask] = color
        half = self.cfg.agent_draw_half_size
        mask = (np.abs(self._x - agent[0]) <= half) & (np.abs(self._y - agent[1]) <= half)
        image[mask] = AGENT_RGB
        return image


class ReachAdapter(EnvAdapter):
    """The reach task behind the ``EnvAdapter`` contract (one camera, ``top``)."""

    action_dim = 7
    images_upside_down = False

    def __init__(self, config: Any = None, reach: Optional[ReachConfig] = None) -> None:
        self.cfg = reach or getattr(config, "reach", None) or ReachConfig()
        self._renderer = ReachRenderer(self.cfg)
        self._layout: Optional[ReachLayout] = None
        self._agent = np.zeros(2)
        self._instruction = ""

    def reset_builds(self, spec: EnvSpec) -> bool:
        return False  # a reset only draws a layout

    def reset(self, spec: EnvSpec) -> EnvObs:
        # No dynamics to settle, so the benchmark's no-op wait is skipped.
        self._layout = reach_layout(self.cfg, spec.task_id, spec.trial_id, spec.seed)
        self._agent = self._layout.agent_start.copy()
        color = list(TARGET_COLORS)[spec.task_id]
        self._instruction = reach_instruction(color)
        return self._observe()

    def step(self, action: np.ndarray, render: bool = True) -> tuple[Optional[EnvObs], bool, bool]:
        if self._layout is None:
            raise RuntimeError("ReachAdapter.step called before reset")
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (self.action_dim,) or not np.all(np.isfinite(action)):
            raise ValueError(
                f"reach action must be a finite array of shape ({self.action_dim},), got "
                f"shape {action.shape}"
            )
        self._agent = np.clip(self._agent + np.clip(action[:2], -1.0, 1.0) * self.cfg.step_size, -1.0, 1.0)
        success = self.distance_to_target() <= self.cfg.success_radius
        return (self._observe() if render else None), success, success

    def distance_to_target(self) -> float:
        assert self._layout is not None
        return float(np.linalg.norm(self._agent - self._layout.targets[self._layout.target_index]))

    def target_position(self) -> np.ndarray:
        """World position of the named target (for tests and scripted experts)."""
        assert self._layout is not None
        return self._layout.targets[self._layout.target_index].copy()

    @property
    def agent_position(self) -> np.ndarray:
        return self._agent.copy()

    def max_episode_steps(self, spec: EnvSpec) -> int:
        return self.cfg.max_episode_steps

    def observe(self) -> EnvObs:
        return self._observe()

    def _observe(self) -> EnvObs:
        assert self._layout is not None
        image = self._renderer.render(self._layout, self._agent)
        return EnvObs(
            images=image[None],  # [1, H, W, 3]
            instruction=self._instruction,
            proprio=self._agent.astype(np.float32),
        )
