"""The built-in reach task: deterministic, instruction-grounded, solvable, not trivially solved."""

import numpy as np
import pytest

from verl.envs.base import EnvSpec, make_adapter
from verl.envs.reach_env import TARGET_COLORS, ReachAdapter, ReachConfig, reach_layout


def spec(task_id: int, trial_id: int) -> EnvSpec:
    return EnvSpec("reach", "reach", task_id, trial_id)


def expert_action(adapter: ReachAdapter) -> np.ndarray:
    action = np.zeros(7)
    delta = adapter.target_position() - adapter.agent_position
    action[:2] = np.clip(delta / adapter.cfg.step_size, -1, 1)
    return action


def test_reset_is_deterministic_and_instruction_names_the_task_colour():
    a, b = ReachAdapter(), ReachAdapter()
    obs_a, obs_b = a.reset(spec(2, 7)), b.reset(spec(2, 7))
    assert np.array_equal(obs_a.images, obs_b.images)
    assert obs_a.instruction == "move to the blue target" == obs_b.instruction
    assert obs_a.images.shape == (1, 224, 224, 3) and obs_a.images.dtype == np.uint8
    assert obs_a.proprio.dtype == np.float32 and obs_a.proprio.shape == (2,)
    # a different trial moves the start; a different task only changes the instruction
    assert not np.array_equal(a.reset(spec(2, 8)).images, obs_a.images)
    other_task = a.reset(spec(0, 7))
    assert np.array_equal(other_task.images, obs_a.images) and other_task.instruction != obs_a.instruction


def test_image_is_upright_and_shows_target_colours():
    adapter = ReachAdapter()
    image = adapter.reset(spec(0, 0)).images[0]
    layout = reach_layout(adapter.cfg, 0, 0)
    red_x, red_y = layout.targets[0]
    assert red_x > 0 and red_y > 0  # the fixed layout puts red up-right
    # up-right in the world is the top-right quadrant of the image (row 0 is the top)
    row = int((1 - red_y) / 2 * 223)
    col = int((1 + red_x) / 2 * 223)
    assert tuple(image[row, col]) == TARGET_COLORS["red"]


def test_expert_succeeds_quickly_and_zero_actions_never_do():
    adapter = ReachAdapter()
    for task_id in range(4):
        adapter.reset(spec(task_id, task_id + 10))
        for t in range(adapter.cfg.max_episode_steps):
            _, done, success = adapter.step(expert_action(adapter), render=False)
            if done:
                break
        assert success and t + 1 <= 8, (task_id, t)
        adapter.reset(spec(task_id, 3))
        assert not any(adapter.step(np.zeros(7), render=False)[2] for _ in range(24))


def test_random_policy_succeeds_sometimes_but_rarely():
    adapter = ReachAdapter()
    rng = np.random.default_rng(0)
    wins = 0
    for episode in range(300):
        adapter.reset(spec(episode % 4, episode))
        wins += any(adapter.step(rng.uniform(-1, 1, 7), render=False)[2] for _ in range(24))
    assert 0.02 < wins / 300 < 0.5


def test_render_flag_and_bad_inputs():
    adapter = make_adapter("reach", None)
    adapter.reset(spec(1, 1))
    assert adapter.step(np.zeros(7), render=False)[0] is None
    with pytest.raises(ValueError, match="shape"):
        adapter.step(np.zeros(6))
    with pytest.raises(ValueError, match="task_id"):
        adapter.reset(spec(4, 0))
    with pytest.raises(ValueError, match="num_targets"):
        ReachConfig(num_targets=9)


def test_randomised_layouts_keep_targets_apart():
    cfg = ReachConfig(randomize_positions=True, num_targets=6, success_radius=0.15)
    for trial in range(50):
        targets = reach_layout(cfg, 0, trial).targets
        dists = np.linalg.norm(targets[:, None] - targets[None], axis=-1) + np.eye(6) * 9
        assert dists.min() >= 2.5 * cfg.success_radius - 1e-9


def test_unknown_benchmark_lists_valid_names():
    with pytest.raises(ValueError, match="libero.*reach.*robotwin2"):
        make_adapter("mujoco_soccer", None)


def test_per_target_distances_make_targets_of_different_difficulty():
    """env.reach.target_distance=[near, far]: a random walk reaches the near target often and the far
    one rarely (the curriculum test's two difficulties), and a wrong-length list is refused."""
    cfg = ReachConfig(num_targets=2, target_distance=[0.3, 0.75], max_episode_steps=8, step_size=0.25)
    layout = reach_layout(cfg, 0, 0)
    np.testing.assert_allclose(np.linalg.norm(layout.targets, axis=1), [0.3, 0.75])
    adapter, rng = ReachAdapter(reach=cfg), np.random.default_rng(0)
    rates = []
    for task in (0, 1):
        wins = 0
        for trial in range(200):
            adapter.reset(spec(task, trial))
            wins += any(adapter.step(rng.uniform(-1, 1, 7), render=False)[2] for _ in range(8))
        rates.append(wins / 200)
    assert rates[0] > 0.25 and rates[1] < 0.12, rates
    with pytest.raises(ValueError, match="target_distance"):
        ReachConfig(num_targets=2, target_distance=[0.3, 0.5, 0.7])
