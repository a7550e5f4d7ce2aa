"""scripts/cold_start_libero.py builds the commands a user would type: --quick's settings (which
explicit flags override), the RL stage's Hydra overrides, and refusals of impossible splits."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("cold_start_libero", ROOT / "scripts" / "cold_start_libero.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def overrides(command: list[str]) -> dict[str, str]:
    return dict(arg.split("=", 1) for arg in command if "=" in arg)


def test_quick_starts_from_the_shipped_policy_on_its_weak_task(script, tmp_path):
    args = script.parse_args(["--quick", "--run-dir", str(tmp_path)])
    assert args.from_sft == script.SHIPPED_SFT and args.skip_raw_limit and args.out == tmp_path / "result.json"
    assert (args.tasks, args.prompts_per_step, args.rl_steps, args.test_freq) == ("0", 3, 4, 2)
    rl = overrides(script.rl_command(args, tmp_path, Path("/sft")))
    assert rl["data.task_ids"] == "[0]" and rl["data.train_batch_size"] == "3" and rl["data.n_samples"] == "8"
    assert rl["data.val_batch_size"] == "20" and rl["trainer.total_training_steps"] == "4"
    assert rl["actor_rollout_ref.actor.ppo_mini_batch_size"] == "6"  # 24 episodes / 4 mini-batches
    assert rl["actor_rollout_ref.rollout.max_env_steps"] == "220" and rl["data.val_split"] == "held_out"


def test_flags_given_with_quick_win(script, tmp_path):
    args = script.parse_args(["--quick", "--tasks", "0,1", "--rl-steps", "6", "--run-dir", str(tmp_path)])
    assert (args.tasks, args.rl_steps, args.prompts_per_step) == ("0,1", 6, 3)
    assert script.parse_args([]).rl_steps == 14 and not script.parse_args([]).quick


def test_demos_may_not_reach_the_held_out_init_states(script):
    with pytest.raises(SystemExit, match="--demos-per-task=30 needs 31 training init states; only 30"):
        script.parse_args(["--demos-per-task", "30"])
    collect = script.setup_commands(script.parse_args(["--demos-per-task", "4"]), Path("/run"))["collect_demos"]
    assert collect[collect.index("--init-states") + 1] == "0-29" and collect[collect.index("--num-demos") + 1] == "5"


def test_sft_dtype_auto_follows_the_cpus_bf16_support_and_the_default_is_fp32(script, tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor : 0\nflags : fpu sse2 avx2 avx512f avx512_bf16\n")
    assert script.cpu_has_native_bf16(cpuinfo)
    cpuinfo.write_text("processor : 0\nflags : fpu sse2 avx2 avx512f avx512_vnni\n")
    assert not script.cpu_has_native_bf16(cpuinfo)
    assert not script.cpu_has_native_bf16(tmp_path / "absent")
    for native, dtype in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(script, "cpu_has_native_bf16", lambda native=native: native)
        sft = overrides(script.setup_commands(script.parse_args(["--sft-dtype", "auto"]), Path("/run"))["sft"])
        assert sft["actor_rollout_ref.model.dtype"] == dtype
        # the default is fp32 whatever the CPU: it fit the demos better than bf16 (loss 2.25 vs 2.57)
        default = overrides(script.setup_commands(script.parse_args([]), Path("/run"))["sft"])
        assert default["actor_rollout_ref.model.dtype"] == "float32"
    explicit = script.setup_commands(script.parse_args(["--sft-dtype", "float32"]), Path("/run"))["sft"]
    assert overrides(explicit)["actor_rollout_ref.model.dtype"] == "float32"


def test_an_interpreter_without_the_packages_is_refused_before_any_stage(script, tmp_path, monkeypatch):
    assert script.missing_packages() == []  # the test environment has them all
    assert script.missing_packages(("torch", "no_such_package_xyz")) == ["no_such_package_xyz"]
    monkeypatch.setattr(script, "missing_packages", lambda: ["h5py", "libero"])
    with pytest.raises(SystemExit, match="lacks h5py, libero: run this script with the virtualenv"):
        script.main(["--run-dir", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()  # refused before creating anything
