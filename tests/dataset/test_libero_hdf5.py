"""LIBERO HDF5 demo files: our writer -> reader round trip in LIBERO's layout (synthetic arrays),
the reader on files laid out like the official LIBERO / OpenVLA-regenerated ones (written here with
h5py directly, without our extra attributes), and the collector end to end on one real episode."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from process_utils import is_running

h5py = pytest.importorskip("h5py")

from verl.utils.dataset.libero_hdf5 import (
    LiberoDemoRecord,
    instruction_from_file_name,
    read_libero_hdf5,
    task_file_name,
    write_libero_hdf5,
)

ROOT = Path(__file__).resolve().parents[2]
BDDL = "/somewhere/bddl_files/libero_object/pick_up_the_alphabet_soup_and_place_it_in_the_basket.bddl"
INSTRUCTION = "pick up the alphabet soup and place it in the basket"


def _record(t: int, seed: int, cams=("agentview",), size: int = 8) -> LiberoDemoRecord:
    rng = np.random.default_rng(seed)
    return LiberoDemoRecord(
        actions=rng.uniform(-1, 1, (t, 7)),
        states=rng.normal(size=(t, 45)),
        ee_states=rng.normal(size=(t, 6)),
        gripper_states=rng.normal(size=(t, 2)),
        joint_states=rng.normal(size=(t, 7)),
        robot_states=rng.normal(size=(t, 9)),
        images={cam: rng.integers(0, 256, (t, size, size, 3), dtype=np.uint8) for cam in cams},
        init_state_id=seed,
    )


def _write(tmp_path, demos, **kw):
    return write_libero_hdf5(
        str(tmp_path), demos,
        problem_info={"problem_name": "libero_floor_manipulation", "domain_name": "robosuite",
                      "language_instruction": "pick the alphabet soup and place it in the basket"},
        bddl_file_name=BDDL, bddl_file_content="(define (problem x))", env_name="Libero_Floor_Manipulation",
        env_args={"type": 1, "env_name": "Libero_Floor_Manipulation", "env_kwargs": {"camera_heights": 8}},
        task_suite_name="libero_object", task_id=0, **kw)


def test_hdf5_round_trip_official_layout(tmp_path):
    demos = [_record(5, 3, cams=("agentview", "eye_in_hand")), _record(7, 11, cams=("agentview", "eye_in_hand"))]
    path = _write(tmp_path, demos)
    assert Path(path).name == "pick_up_the_alphabet_soup_and_place_it_in_the_basket_demo.hdf5"
    assert not Path(path + ".tmp").exists()
    with h5py.File(path, "r") as f:
        data = f["data"]
        assert data.attrs["env_name"] == "Libero_Floor_Manipulation"
        assert json.loads(data.attrs["problem_info"])["language_instruction"].startswith("pick the alphabet soup")
        assert data.attrs["bddl_file_name"] == BDDL
        assert json.loads(data.attrs["env_args"])["type"] == 1
        assert data.attrs["macros_image_convention"] == "opengl"
        assert data.attrs["num_demos"] == 2 and data.attrs["total"] == 12
        assert sorted(data.keys()) == ["demo_0", "demo_1"]
        for key, demo in zip(("demo_0", "demo_1"), demos):
            grp = data[key]
            t = len(demo.actions)
            assert grp.attrs["num_samples"] == t and grp.attrs["init_state_id"] == demo.init_state_id
            np.testing.assert_array_equal(grp.attrs["init_state"], demo.states[0])
            assert grp["actions"].shape == (t, 7) and grp["states"].shape == (t, 45)
            assert grp["robot_states"].shape == (t, 9)
            for name in ("rewards", "dones"):
                assert grp[name].dtype == np.uint8 and list(grp[name][()]) == [0] * (t - 1) + [1]
            obs = grp["obs"]
            assert obs["agentview_rgb"].shape == (t, 8, 8, 3) and obs["agentview_rgb"].dtype == np.uint8
            assert obs["eye_in_hand_rgb"].shape == (t, 8, 8, 3)
            np.testing.assert_array_equal(obs["agentview_rgb"][()], demo.images["agentview"])
            assert obs["ee_states"].shape == (t, 6) and obs["gripper_states"].shape == (t, 2)
            assert obs["joint_states"].shape == (t, 7)
            np.testing.assert_array_equal(obs["ee_pos"][()], demo.ee_states[:, :3])
            np.testing.assert_array_equal(obs["ee_ori"][()], demo.ee_states[:, 3:])

    episodes = read_libero_hdf5(path, cameras=("agentview", "eye_in_hand"))
    assert len(episodes) == 2
    for ep, demo in zip(episodes, demos):
        assert ep.instruction == INSTRUCTION  # the env's wording (bddl file name), not the bddl's :language
        assert ep.task_suite_name == "libero_object" and ep.task_id == 0 and ep.init_state_id == demo.init_state_id
        assert ep.actions.dtype == np.float32
        np.testing.assert_allclose(ep.actions, demo.actions.astype(np.float32))
        np.testing.assert_array_equal(ep.images["eye_in_hand"], demo.images["eye_in_hand"])
        assert ep.proprio.shape == (len(demo.actions), 8) and ep.proprio.dtype == np.float32
        np.testing.assert_allclose(ep.proprio, np.concatenate([demo.ee_states, demo.gripper_states], 1).astype(np.float32))
    assert len(read_libero_hdf5(path, max_demos=1)) == 1
    assert list(read_libero_hdf5(path)[0].images) == ["agentview"]


def test_hdf5_writer_uncompressed_and_rejects_bad_records(tmp_path):
    path = _write(tmp_path, [_record(3, 0)], compression=None)
    with h5py.File(path, "r") as f:
        assert f["data/demo_0/obs/agentview_rgb"].compression is None
    with pytest.raises(ValueError, match="rows"):
        LiberoDemoRecord(actions=np.zeros((3, 7)), states=np.zeros((2, 4)), ee_states=np.zeros((3, 6)),
                         gripper_states=np.zeros((3, 2)), joint_states=np.zeros((3, 7)))


def _official_demo(grp, t, rng, cams=("agentview", "eye_in_hand")):
    """A demo group as OpenVLA's regenerate_libero_dataset.py writes it (no attributes at all)."""
    obs = grp.create_group("obs")
    obs.create_dataset("gripper_states", data=rng.normal(size=(t, 2)))
    obs.create_dataset("joint_states", data=rng.normal(size=(t, 7)))
    ee = rng.normal(size=(t, 6))
    obs.create_dataset("ee_states", data=ee)
    obs.create_dataset("ee_pos", data=ee[:, :3])
    obs.create_dataset("ee_ori", data=ee[:, 3:])
    for cam in cams:
        obs.create_dataset(f"{cam}_rgb", data=rng.integers(0, 256, (t, 16, 16, 3), dtype=np.uint8))
    grp.create_dataset("actions", data=rng.uniform(-1, 1, (t, 7)))
    grp.create_dataset("states", data=rng.normal(size=(t, 79)))
    grp.create_dataset("robot_states", data=rng.normal(size=(t, 9)))
    grp.create_dataset("rewards", data=np.eye(t, dtype=np.uint8)[-1])
    grp.create_dataset("dones", data=np.eye(t, dtype=np.uint8)[-1])


def test_hdf5_reader_on_openvla_regenerated_layout(tmp_path):
    """No data attrs (instruction from the file name), failed replays leave gaps in demo numbers."""
    path = tmp_path / "pick_up_the_alphabet_soup_and_place_it_in_the_basket_demo.hdf5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        for i, t in ((0, 4), (2, 6), (10, 3)):  # demo_1 failed and was dropped
            _official_demo(data.create_group(f"demo_{i}"), t, rng)
    episodes = read_libero_hdf5(path, cameras=("agentview", "eye_in_hand"))
    assert [len(ep) for ep in episodes] == [4, 6, 3]  # numeric order: demo_10 last
    assert [ep.extra["demo_key"] for ep in episodes] == ["demo_0", "demo_2", "demo_10"]
    ep = episodes[1]
    assert ep.instruction == INSTRUCTION
    assert ep.task_suite_name is None and ep.task_id is None and ep.init_state_id is None
    assert ep.images["agentview"].shape == (6, 16, 16, 3) and ep.actions.dtype == np.float32
    with h5py.File(path, "r") as f:
        g = f["data/demo_2"]
        np.testing.assert_allclose(ep.proprio, np.concatenate([g["obs/ee_states"][()], g["obs/gripper_states"][()]], 1),
                                   rtol=1e-6)
        np.testing.assert_array_equal(ep.images["agentview"], g["obs/agentview_rgb"][()])
    assert [len(ep) for ep in read_libero_hdf5(path, max_demos=2)] == [4, 6]
    with pytest.raises(KeyError, match="obs/frontview_rgb"):
        read_libero_hdf5(path, cameras=("frontview",))


def test_hdf5_reader_on_libero_raw_layout(tmp_path):
    """LIBERO's create_dataset.py attrs: the instruction comes from the bddl file name as the env
    derives it (scene prefix dropped), the suite from the bddl path; problem_info is the fallback
    for files named otherwise."""
    path = tmp_path / "KITCHEN_SCENE3_turn_on_the_stove_demo.hdf5"
    rng = np.random.default_rng(1)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_name"] = "Libero_Kitchen_Tabletop_Manipulation"
        data.attrs["problem_info"] = json.dumps({"problem_name": "libero_kitchen_tabletop_manipulation",
                                                 "domain_name": "robosuite",
                                                 "language_instruction": "turn on the stove now"})
        data.attrs["macros_image_convention"] = "opengl"
        data.attrs["bddl_file_name"] = "chiliocosm/bddl_files/libero_90/KITCHEN_SCENE3_turn_on_the_stove.bddl"
        data.attrs["env_args"] = json.dumps({"type": 1})
        data.attrs["num_demos"] = 1
        data.attrs["total"] = 5
        grp = data.create_group("demo_0")
        _official_demo(grp, 5, rng, cams=("agentview",))
        grp.attrs["num_samples"] = 5
        grp.attrs["init_state"] = grp["states"][0]
    (ep,) = read_libero_hdf5(path)
    assert ep.instruction == "turn on the stove" and ep.task_suite_name == "libero_90"
    renamed = tmp_path / "my_demos.hdf5"
    path.rename(renamed)
    with h5py.File(renamed, "a") as f:
        del f["data"].attrs["bddl_file_name"]
    (ep,) = read_libero_hdf5(renamed)
    assert ep.instruction == "turn on the stove now" and ep.task_suite_name is None
    assert instruction_from_file_name(str(path)) == "turn on the stove"
    assert instruction_from_file_name("LIVING_ROOM_SCENE2_put_both_the_alphabet_soup_and_the_tomato_sauce_in_the_basket.bddl") \
        == "put both the alphabet soup and the tomato sauce in the basket"
    assert task_file_name(BDDL) == "pick_up_the_alphabet_soup_and_place_it_in_the_basket_demo.hdf5"


def _collector():
    spec = importlib.util.spec_from_file_location("collect_libero_demos", ROOT / "scripts" / "collect_libero_demos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hdf5_collector_helpers():
    collect = _collector()
    assert collect.parse_index_list("0,3,5-7") == [0, 3, 5, 6, 7]
    assert collect.parse_index_list("all", 3) == [0, 1, 2]
    noop = np.array([0, 0, 0, 0, 0, 0, -1.0])
    assert collect.is_noop(noop, None)
    assert collect.is_noop(noop, noop)
    assert not collect.is_noop(noop, np.array([0, 0, 0, 0, 0, 0, 1.0]))  # gripper changes: kept
    assert not collect.is_noop(np.array([0.01, 0, 0, 0, 0, 0, -1.0]), noop)


@pytest.mark.slow
def test_hdf5_collector_writes_a_readable_demo(tmp_path):
    """One real expert episode (libero_object task 0, init state 0) at 64x64, written and read back."""
    pytest.importorskip("libero")
    report = tmp_path / "report.json"
    rc = _collector().main(["--suite", "libero_object", "--tasks", "0", "--init-states", "0", "--out", str(tmp_path),
                            "--image-size", "64", "--report", str(report)])
    assert rc == 0
    table = json.loads(report.read_text())
    result = table["tasks"]["0"]["init_states"]["0"]
    assert result["success"] and result["recorded_steps"] <= result["steps"] <= 400
    (ep,) = read_libero_hdf5(tmp_path / task_file_name(BDDL))
    assert ep.instruction == INSTRUCTION and ep.init_state_id == 0 and ep.task_suite_name == "libero_object"
    assert len(ep) == result["recorded_steps"] and ep.images["agentview"].shape[1:] == (64, 64, 3)
    assert np.all(np.abs(ep.actions) <= 1.0) and set(np.unique(ep.actions[:, -1])) <= {-1.0, 1.0}
    with h5py.File(tmp_path / task_file_name(BDDL), "r") as f:
        data = f["data"]
        assert data.attrs["bddl_file_name"].endswith("libero_object/pick_up_the_alphabet_soup_and_place_it_in_the_basket.bddl")
        assert json.loads(data.attrs["env_args"])["env_kwargs"]["camera_heights"] == 64
        demo = data["demo_0"]
        assert demo["states"].shape[0] == len(ep) and demo["obs/joint_states"].shape == (len(ep), 7)
        # the first recorded proprio is the adapter's observation after the reset's no-op wait
        assert abs(demo["obs/gripper_states"][0, 0] - demo["obs/gripper_states"][0, 1]) > 0.05  # open


@pytest.mark.slow
def test_collector_workers_give_the_serial_results(tmp_path):
    """--workers 2 runs the two tasks in two processes: the same episodes, step for step, as one process."""
    pytest.importorskip("libero")
    tables = []
    for workers in (1, 2):
        report = tmp_path / f"report_{workers}.json"
        proc = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "collect_libero_demos.py"), "--suite", "libero_object",
             "--tasks", "0,1", "--init-states", "0", "--no-record", "--workers", str(workers), "--report", str(report)],
            capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-3000:]
        tables.append(json.loads(report.read_text()))
    serial, parallel = ({task: {state: {k: v for k, v in r.items() if k != "seconds"} for state, r in t["init_states"].items()}
                         for task, t in table["tasks"].items()} for table in tables)
    assert list(serial) == ["0", "1"] and serial == parallel
    assert all(r["success"] for t in serial.values() for r in t.values())


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    except FileNotFoundError:  # ended between the listing and the read
        return ""


@pytest.mark.slow
def test_sigterm_stops_the_collectors_worker_processes():
    """`kill <pid>` of a --workers 2 collector ends its pool's simulator processes too, not only the
    parent (SIGTERM's default action would leave them collecting for minutes)."""
    pytest.importorskip("libero")
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "collect_libero_demos.py"), "--suite", "libero_object",
         "--tasks", "0,1", "--init-states", "0-9", "--no-record", "--workers", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.time() + 300
    workers: list[int] = []
    while len(workers) < 2:  # the pool's two workers (spawned: "spawn_main ... pipe_handle")
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:]
        workers = [c for c in _children(proc.pid) if "pipe_handle" in _cmdline(c)]
        time.sleep(0.2)
    time.sleep(3)  # into their episodes
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode == 143
    deadline = time.time() + 30
    while any(is_running(w) for w in workers) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(is_running(w) for w in workers)
