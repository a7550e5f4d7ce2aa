#!/usr/bin/env python
"""Collect LIBERO demonstrations with our scripted expert, in LIBERO's own HDF5 layout.

    python scripts/collect_libero_demos.py --suite libero_object [--tasks 0,1] [--init-states 0-19]
        --out DIR [--num-demos 10] [--cameras agentview,eye_in_hand] [--image-size 256]
        [--max-steps 400] [--report report.json]

For every task, the expert (verl/envs/libero_expert.py: privileged state in, ordinary OSC delta
actions out) runs one episode from each chosen init state through our LiberoAdapter (the
reference's reset: seed 0, init state, 10 no-op waits). Successful episodes become demos of
`<DIR>/<task bddl name>_demo.hdf5`, written as LIBERO's create_dataset.py lays files out and
at 256x256 like the regenerated datasets OpenVLA-OFT trains on: no-op actions dropped (position
and rotation deltas ~0 and gripper unchanged; they are still executed, only not recorded),
failed episodes discarded, images as rendered (upside down). With --num-demos a task stops once
it has that many demos (init states are tried in the order given).

The success table (per task and per init state: success, steps, recorded steps, seconds) is
printed as JSON and written to --report. Rendering dominates the cost (~70-110 ms per camera
and step on a CPU): record only the cameras you need. The layout is documented in
verl/utils/dataset/libero_hdf5.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from verl.utils.termination import exit_on_sigterm  # noqa: E402

# dataset camera name -> robosuite camera name
CAMERAS = {"agentview": "agentview", "eye_in_hand": "robot0_eye_in_hand"}
NOOP_THRESHOLD = 1e-4  # as OpenVLA's regenerate_libero_dataset.py


def parse_index_list(text: str, upper: Optional[int] = None) -> list[int]:
    """``"0,3,5-7"`` -> ``[0, 3, 5, 6, 7]``; ``"all"`` -> ``range(upper)``."""
    if text.strip() == "all":
        if upper is None:
            raise argparse.ArgumentTypeError("'all' is not allowed here")
        return list(range(upper))
    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers or ranges, e.g. 0,3,5-9") from None
    if len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(f"{text!r}: an index appears twice")
    return out


def is_noop(action: np.ndarray, prev_action: Optional[np.ndarray], threshold: float = NOOP_THRESHOLD) -> bool:
    """OpenVLA's no-op rule: position and rotation deltas ~0 and the gripper command unchanged
    from the previous recorded action (the first action: deltas ~0 is enough)."""
    if np.linalg.norm(action[:-1]) >= threshold:
        return False
    return prev_action is None or action[-1] == prev_action[-1]


def run_episode(adapter, spec, max_steps: int, record: bool, with_model_xml: bool = False):
    """One expert episode. Returns (result dict, LiberoDemoRecord or None)."""
    from verl.envs.libero_expert import LiberoScriptedExpert
    from verl.utils.dataset.libero_hdf5 import LiberoDemoRecord

    started = time.perf_counter()
    obs = adapter.reset(spec)
    expert = LiberoScriptedExpert(adapter)
    expert.reset()
    cams = list(adapter.camera_names)
    frames: dict[str, list[np.ndarray]] = {cam: [] for cam in cams}
    rows: dict[str, list[np.ndarray]] = {k: [] for k in ("actions", "states", "ee_states", "gripper_states",
                                                          "joint_states", "robot_states")}
    prev: Optional[np.ndarray] = None
    noops = 0
    success = False
    steps = 0
    for steps in range(1, max_steps + 1):
        action = expert.act()
        keep = not is_noop(action, prev)
        if keep:
            if record:
                for i, cam in enumerate(cams):
                    frames[cam].append(obs.images[i])
                robot = adapter.robot_state()
                for key in ("ee_states", "gripper_states", "joint_states", "robot_states"):
                    rows[key].append(robot[key])
                rows["states"].append(adapter.sim_state())
            rows["actions"].append(action)
            prev = action
        else:
            noops += 1
        obs, done, success = adapter.step(action, render=record)
        if done:
            break
    result = {"success": bool(success), "steps": steps, "recorded_steps": len(rows["actions"]),
              "noops_dropped": noops, "grasp_attempts": expert.attempts,
              "seconds": round(time.perf_counter() - started, 2)}
    if not (success and record):
        return result, None
    demo = LiberoDemoRecord(
        actions=np.asarray(rows["actions"]),
        states=np.asarray(rows["states"]),
        ee_states=np.asarray(rows["ee_states"]),
        gripper_states=np.asarray(rows["gripper_states"]),
        joint_states=np.asarray(rows["joint_states"]),
        robot_states=np.asarray(rows["robot_states"]),
        images={dataset_cam: np.stack(frames[robosuite_cam]) for dataset_cam, robosuite_cam in CAMERAS.items()
                if robosuite_cam in frames},
        init_state_id=spec.trial_id,
        model_file=adapter.model_xml() if with_model_xml else None,
    )
    return result, demo


def collect_task(args: argparse.Namespace, suite: str, task_id: int, init_states: list[int], cameras: list[str],
                 record: bool) -> dict:
    """Run the expert on one task's init states (in order, until --num-demos) in this process's own
    simulator and write the task's HDF5 file. Returns the task's entry of the success table."""
    from verl.envs.base import EnvSpec
    from verl.envs.libero_env import LiberoAdapter
    from verl.utils.dataset.libero_hdf5 import write_libero_hdf5

    config = SimpleNamespace(camera_names=[CAMERAS[c] for c in cameras], image_size=args.image_size,
                             num_steps_wait=10, libero_reset_mode="fast", max_episode_steps=args.max_steps)
    adapter = LiberoAdapter(config)
    try:
        task_started = time.perf_counter()
        demos, per_state = [], {}
        meta = None
        for state_id in init_states:
            if args.num_demos is not None and len(demos) >= args.num_demos:
                break
            result, demo = run_episode(adapter, EnvSpec("libero", suite, task_id, state_id), args.max_steps,
                                       record, with_model_xml=args.model_xml)
            meta = meta or adapter.task_metadata()
            per_state[str(state_id)] = result
            if demo is not None:
                demos.append(demo)
            print(f"[{suite} task {task_id} init {state_id}] success={result['success']} "
                  f"steps={result['steps']} recorded={result['recorded_steps']} {result['seconds']:.1f}s", flush=True)
        tried = len(per_state)
        successes = sum(r["success"] for r in per_state.values())
        entry = {
            "instruction": meta["instruction"] if meta else "",
            "successes": successes, "tried": tried, "success_rate": successes / max(tried, 1),
            "mean_steps_success": (float(np.mean([r["steps"] for r in per_state.values() if r["success"]]))
                                   if successes else None),
            "seconds": round(time.perf_counter() - task_started, 1),
            "init_states": per_state,
        }
        if record and demos:
            env_args = {"type": 1, "env_name": meta["env_name"], "problem_name": meta["problem_info"]["problem_name"],
                        "bddl_file": meta["bddl_file_name"], "env_kwargs": meta["env_kwargs"]}
            import robosuite.macros as macros

            entry["file"] = write_libero_hdf5(
                str(args.out), demos, problem_info=meta["problem_info"], bddl_file_name=meta["bddl_file_name"],
                bddl_file_content=meta["bddl_file_content"], env_name=meta["env_name"], env_args=env_args,
                macros_image_convention=macros.IMAGE_CONVENTION, task_suite_name=suite, task_id=task_id,
                compression=None if args.no_compress else "gzip")
            entry["num_demos"] = len(demos)
        elif record:
            print(f"[{suite} task {task_id}] no successful episode: no file written", flush=True)
        return entry
    finally:
        adapter.close()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="libero_object", help="LIBERO suite (default: libero_object)")
    parser.add_argument("--tasks", default="all", help="task ids, e.g. 0,1 or 0-4 (default: all tasks of the suite)")
    parser.add_argument("--init-states", default="all",
                        help="init state ids to try, in order, e.g. 0-19 (default: all 50)")
    parser.add_argument("--num-demos", type=int, default=None,
                        help="stop a task once it has this many successful demos (default: one per init state)")
    parser.add_argument("--out", type=Path, default=None, help="output folder for the <task>_demo.hdf5 files")
    parser.add_argument("--cameras", default="agentview",
                        help=f"cameras to record, comma-separated, of {sorted(CAMERAS)} (default: agentview)")
    parser.add_argument("--image-size", type=int, default=256, help="rendered image size (default: 256)")
    parser.add_argument("--max-steps", type=int, default=400, help="step budget of one expert episode (default: 400)")
    parser.add_argument("--report", type=Path, default=None, help="JSON file for the success table")
    parser.add_argument("--no-record", action="store_true",
                        help="only measure expert success: render nothing, write no HDF5 (--out not needed)")
    parser.add_argument("--no-compress", action="store_true", help="store images uncompressed (default: gzip)")
    parser.add_argument("--workers", type=int, default=1,
                        help="tasks collected at once, one process (and simulator) each; the demos are the same "
                             "as with 1 (the expert is deterministic), the wall time ~1/N on N free cores")
    parser.add_argument("--model-xml", action="store_true",
                        help="also store each demo's MuJoCo model XML (attr model_file, as LIBERO's raw datasets)")
    args = parser.parse_args(argv)

    from verl.envs.suites import LIBERO_NUM_INIT_STATES, LIBERO_NUM_TASKS, canonical_libero_suite

    try:
        suite = canonical_libero_suite(args.suite)
    except ValueError as err:
        parser.error(str(err))
    n_tasks = LIBERO_NUM_TASKS[suite]
    try:
        tasks = parse_index_list(args.tasks, n_tasks)
        init_states = parse_index_list(args.init_states, LIBERO_NUM_INIT_STATES)
    except argparse.ArgumentTypeError as err:
        parser.error(str(err))
    if bad := [t for t in tasks if not 0 <= t < n_tasks]:
        parser.error(f"--tasks {bad}: {suite} has tasks 0-{n_tasks - 1}")
    if bad := [s for s in init_states if not 0 <= s < LIBERO_NUM_INIT_STATES]:
        parser.error(f"--init-states {bad}: every task has init states 0-{LIBERO_NUM_INIT_STATES - 1}")
    cameras = [c.strip() for c in args.cameras.split(",") if c.strip()]
    if not cameras or (bad := [c for c in cameras if c not in CAMERAS]):
        parser.error(f"--cameras {args.cameras!r}: expected a comma-separated subset of {sorted(CAMERAS)}")
    if args.num_demos is not None and args.num_demos < 1:
        parser.error("--num-demos must be >= 1")
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    if args.max_steps < 1 or args.image_size < 8:
        parser.error("--max-steps must be >= 1 and --image-size >= 8")
    record = not args.no_record
    if record and args.out is None:
        parser.error("--out is required (or pass --no-record to measure success only)")

    os.environ.setdefault("MUJOCO_GL", "egl")
    report: dict = {"suite": suite, "cameras": cameras if record else [], "image_size": args.image_size,
                    "max_steps": args.max_steps, "init_states": init_states, "tasks": {}}
    started = time.perf_counter()
    jobs = [(args, suite, task_id, init_states, cameras, record) for task_id in tasks]
    workers = min(args.workers, len(tasks))
    if workers > 1:  # one task per process at a time: each has its own simulator and writes its own file
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            entries = pool.starmap(collect_task, jobs, chunksize=1)
    else:
        entries = [collect_task(*job) for job in jobs]
    for task_id, entry in zip(tasks, entries):
        report["tasks"][str(task_id)] = entry
    wall = time.perf_counter() - started
    episodes = [r for t in report["tasks"].values() for r in t["init_states"].values()]
    successes = [r for r in episodes if r["success"]]
    report["summary"] = {
        "episodes": len(episodes), "successes": len(successes),
        "success_rate": len(successes) / max(len(episodes), 1),
        "tasks_all_successful": sum(t["successes"] == t["tried"] for t in report["tasks"].values()),
        "mean_steps_success": float(np.mean([r["steps"] for r in successes])) if successes else None,
        "seconds_per_episode": round(float(np.mean([r["seconds"] for r in episodes])), 2) if episodes else None,
        "wall_seconds": round(wall, 1),
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(text + "\n")
    return 0 if successes else 1


if __name__ == "__main__":
    exit_on_sigterm()  # `kill <pid>` ends the Pool's `with` block, whose exit terminates the workers
    sys.exit(main())
