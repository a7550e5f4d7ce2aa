"""Real LIBERO (libero_spatial task 0), short episodes: deterministic resets identical to the
reference's fresh env, render skipping that changes no pixel, success detection, budgets and a
2-worker pool. A rendered LIBERO step costs ~0.1 s on this machine, so episodes stay short."""

import os
import signal

import numpy as np
import pytest

pytest.importorskip("libero")

from verl.envs.base import EnvSpec
from verl.envs.env_pool import EnvPool, EnvPoolConfig
from verl.envs.libero_env import LIBERO_NOOP_ACTION, LiberoAdapter, quat_to_axis_angle

SPEC = EnvSpec("libero", "libero_spatial", 0, 0)


@pytest.fixture(scope="module")
def adapter():
    a = LiberoAdapter(EnvPoolConfig(benchmark="libero", num_steps_wait=2))
    yield a
    a.close()


def test_quat_to_axis_angle():
    half = np.pi / 4  # 90 degrees about z
    assert np.allclose(quat_to_axis_angle(np.array([0, 0, np.sin(half), np.cos(half)])), [0, 0, np.pi / 2])
    assert np.allclose(quat_to_axis_angle(np.array([0, 0, 0, 1.0])), 0)


def test_reset_obs_and_warm_reset_is_deterministic(adapter):
    obs = adapter.reset(SPEC)
    assert obs.images.shape == (1, 256, 256, 3) and obs.images.dtype == np.uint8
    assert obs.proprio.shape == (8,) and obs.proprio.dtype == np.float32
    assert obs.instruction.startswith("pick up the black bowl")
    state = adapter.sim_state()
    rng = np.random.default_rng(0)
    for action in rng.uniform(-1, 1, (3, 7)):
        adapter.step(action, render=False)
    assert not np.array_equal(adapter.sim_state(), state)  # a step changes the state
    again = adapter.reset(SPEC)
    assert np.array_equal(again.images, obs.images) and np.array_equal(again.proprio, obs.proprio)
    assert np.array_equal(adapter.sim_state(), state)
    other = adapter.reset(EnvSpec("libero", "libero_spatial", 0, 1))
    assert not np.array_equal(other.images, obs.images)


def test_skipping_renders_changes_no_pixel(adapter):
    actions = np.random.default_rng(1).uniform(-1, 1, (4, 7))
    adapter.reset(SPEC)
    for action in actions:
        every, _, _ = adapter.step(action, render=True)
    state = adapter.sim_state()
    adapter.reset(SPEC)
    for i, action in enumerate(actions):
        last, _, _ = adapter.step(action, render=i == len(actions) - 1)
    assert np.array_equal(every.images, last.images) and np.array_equal(adapter.sim_state(), state)


def test_teleporting_the_bowl_onto_the_plate_is_a_success(adapter):
    adapter.reset(SPEC)
    (predicate, obj, target), = adapter.goal_predicates()
    assert predicate == "on"
    assert not adapter.step(LIBERO_NOOP_ACTION, render=False)[2]
    adapter.teleport_onto(obj, target)
    successes = [adapter.step(LIBERO_NOOP_ACTION, render=False)[2] for _ in range(5)]
    assert any(successes)


@pytest.mark.slow
def test_fast_reset_equals_the_reference_fresh_env():
    """Reference: a brand-new OffScreenRenderEnv, seed(0), (hard) reset, set_init_state, waits."""
    import os as _os

    from libero.libero import benchmark, get_libero_path
    from libero.libero.envs import OffScreenRenderEnv

    suite = benchmark.get_benchmark_dict()["libero_spatial"]()
    task = suite.get_task(0)
    env = OffScreenRenderEnv(bddl_file_name=_os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file),
                             camera_heights=256, camera_widths=256, camera_names=["agentview"])
    env.seed(0)
    env.reset()
    env.set_init_state(suite.get_task_init_states(0)[3])
    actions = np.random.default_rng(2).uniform(-1, 1, (3, 7))
    for _ in range(2):
        raw, *_ = env.step(LIBERO_NOOP_ACTION)
    for action in actions:
        raw, *_ = env.step(action)
    reference_state, reference_image = np.asarray(env.get_sim_state()).copy(), raw["agentview_image"].copy()
    env.close()

    ours = LiberoAdapter(EnvPoolConfig(benchmark="libero", num_steps_wait=2))
    spec = EnvSpec("libero", "libero_spatial", 0, 3)
    for _ in range(2):  # cold (fresh build), then warm (soft reset of a used env)
        ours.reset(spec)
        for i, action in enumerate(actions):
            obs, _, _ = ours.step(action, render=i == len(actions) - 1)
        assert np.array_equal(ours.sim_state(), reference_state)
        assert np.array_equal(obs.images[0], reference_image)
        ours.step(np.full(7, 0.5), render=False)  # dirty the env before the warm reset
    ours.close()


@pytest.mark.slow
def test_pool_of_two_libero_workers_budget_and_crash(tmp_path):
    config = EnvPoolConfig(benchmark="libero", num_workers=2, envs_per_worker=1, num_steps_wait=2,
                           max_episode_steps=12, step_timeout_s=20, reset_timeout_s=120)
    specs = [SPEC, EnvSpec("libero", "libero_spatial", 0, 1)]
    with EnvPool(config) as pool:
        first = pool.reset([0, 1], specs)
        assert not any(r.faulted for r in first)
        total = np.zeros(2, dtype=int)
        for _ in range(2):
            results = pool.step_chunk([0, 1], [np.tile(LIBERO_NOOP_ACTION, (8, 1))] * 2)
            total += [r.steps_taken for r in results]
        assert total.tolist() == [12, 12] and all(r.done and not r.success for r in results)
        # kill worker 0 mid-episode: its episode faults, the pool restarts it and goes on
        pool.reset([0, 1], specs)
        os.kill(pool.worker_pids()[0], signal.SIGKILL)
        results = pool.step_chunk([0, 1], [np.tile(LIBERO_NOOP_ACTION, (4, 1))] * 2)
        assert results[0].faulted and not results[1].faulted
        again = pool.reset([0], [SPEC])[0]
        assert not again.faulted and np.array_equal(again.obs.images, first[0].obs.images)


def test_a_parked_task_env_is_reused_and_resets_like_a_fresh_one():
    """libero_cached_tasks=2: switching back to a task soft-resets its parked env (no rebuild), with
    the same state and pixels as a freshly built env; a third task drops the least recently used."""
    cached = LiberoAdapter(EnvPoolConfig(benchmark="libero", num_steps_wait=2, libero_cached_tasks=2))
    a, b, c = (EnvSpec("libero", "libero_spatial", task, 3) for task in (0, 1, 2))
    actions = np.random.default_rng(4).uniform(-1, 1, (3, 7))
    cached.reset(a)
    env_a = cached._env
    for action in actions:
        cached.step(action, render=False)
    assert cached.reset_builds(b)
    cached.reset(b)
    cached.step(actions[0], render=False)
    assert not cached.reset_builds(a) and cached.reset_builds(c)
    cached.reset(a)
    assert cached._env is env_a  # unparked, not rebuilt
    for i, action in enumerate(actions):
        obs, _, _ = cached.step(action, render=i == len(actions) - 1)

    fresh = LiberoAdapter(EnvPoolConfig(benchmark="libero", num_steps_wait=2))
    fresh.reset(a)
    for i, action in enumerate(actions):
        reference, _, _ = fresh.step(action, render=i == len(actions) - 1)
    assert np.array_equal(cached.sim_state(), fresh.sim_state())
    assert np.array_equal(obs.images, reference.images) and np.array_equal(obs.proprio, reference.proprio)
    assert fresh.reset_builds(b)  # the default keeps one env: every switch rebuilds
    fresh.close()

    cached.reset(c)  # a is parked, b (least recently used) is closed
    assert not cached.reset_builds(a) and cached.reset_builds(b)
    cached.close()
    assert cached._env is None and not cached._parked


def test_an_env_renders_its_own_scene_when_another_tasks_env_was_built_after_it():
    """robosuite draws into whichever GL context is current, and building an env makes its own
    current: without the adapter making its context current, an env worker's slot would render its
    scene with the meshes and textures of another task's env (2.7/255 mean pixel error measured)."""
    cfg = EnvPoolConfig(benchmark="libero", num_steps_wait=2)
    first, other = EnvSpec("libero", "libero_object", 0, 0), EnvSpec("libero", "libero_object", 1, 0)
    action = np.array([0.1, 0, 0, 0, 0, 0, -1.0])
    alone = LiberoAdapter(cfg)
    alone.reset(first)
    expected = alone.step(action)[0].images
    alone.close()
    x, y = LiberoAdapter(cfg), LiberoAdapter(cfg)
    x.reset(first)
    y.reset(other)  # built last: its GL context is the current one
    assert np.array_equal(x.step(action)[0].images, expected)
    x.close()
    y.close()


def test_closing_an_env_leaves_another_slots_scene_intact():
    """robosuite frees an env's MuJoCo render context (GL textures, meshes, buffers) in whatever GL
    context is current. A slot switching task with libero_cached_tasks=1 closes its env; if another
    slot's context was current (it rendered last), that slot's GL objects were deleted and it drew
    a damaged scene for the rest of its episodes (7.2/255 mean pixel error measured; in validation
    it turned a policy's 0.35 held-out success into 0.10)."""
    cfg = EnvPoolConfig(benchmark="libero", num_steps_wait=10)
    mine, switching, other = (EnvSpec("libero", "libero_object", t, i) for t, i in ((0, 30), (0, 31), (1, 32)))
    actions = np.random.default_rng(0).uniform(-0.5, 0.5, (3, 7))
    alone = LiberoAdapter(cfg)
    alone.reset(mine)
    expected = [alone.step(a)[0].images for a in actions]
    alone.close()
    x, y = LiberoAdapter(cfg), LiberoAdapter(cfg)
    y.reset(switching)
    y.step(actions[0])
    x.reset(mine)
    assert np.array_equal(x.step(actions[0])[0].images, expected[0])  # x's context is current now
    y.reset(other)  # y closes its task-0 env and builds a task-1 one
    for action, image in zip(actions[1:], expected[1:]):
        assert np.array_equal(x.step(action)[0].images, image)
    x.close()
    y.close()
