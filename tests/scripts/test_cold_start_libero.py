"""scripts/cold_start_libero.py builds the commands a user would type: --quick's settings (which
explicit flags override), the RL stage's Hydra overrides (only keys our configs accept, with values
they validate), refusals of impossible splits, and never evaluates on init states its demos come
from; its report."""

import importlib.util
import json
from pathlib import Path

import pytest
from process_utils import COLD_START_DRIVER, start, wait_for

from verl.trainer.config_validation import validate_config, validate_sft_config

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
    # the GRPO settings the quick start's figures were measured with, not the whole experiment's defaults
    assert rl["actor_rollout_ref.rollout.temperature"] == "1.0" and rl["actor_rollout_ref.actor.optim.lr"] == "0.0001"
    assert "actor_rollout_ref.actor.optim.warmup_style" not in rl and args.time_budget_min is None
    assert rl["actor_rollout_ref.rollout.max_env_steps"] == "220" and rl["data.val_split"] == "held_out"
    validate_config(script.stage_config(script.rl_command(args, tmp_path, tmp_path / "sft_checkpoint"), "ppo_trainer"),
                    check_paths=False)
    # a full run's results stay in its run directory too: the committed benchmark is never overwritten
    assert script.parse_args(["--run-dir", str(tmp_path)]).out == tmp_path / "result.json"


def test_flags_given_with_quick_win(script, tmp_path):
    args = script.parse_args(["--quick", "--tasks", "0,1", "--rl-steps", "6", "--run-dir", str(tmp_path)])
    assert (args.tasks, args.rl_steps, args.prompts_per_step) == ("0,1", 6, 3)
    assert script.parse_args([]).rl_steps == 16 and not script.parse_args([]).quick
    assert script.parse_args([]).sft_steps == 2000  # the SFT length whose policy GRPO lifted on the 2-core Intel machine


def test_demos_may_not_reach_the_held_out_init_states(script):
    with pytest.raises(SystemExit, match="--demos-per-task=30 needs 31 training init states; only 30"):
        script.parse_args(["--demos-per-task", "30"])
    collect = script.setup_commands(script.parse_args(["--demos-per-task", "4"]), Path("/run"))["collect_demos"]
    assert collect[collect.index("--init-states") + 1] == "0-29" and collect[collect.index("--num-demos") + 1] == "5"


def test_a_sampled_validation_override_is_refused_because_the_results_are_greedy(script):
    with pytest.raises(SystemExit, match=r"--rl-override actor_rollout_ref.rollout.val_temperature=0.5: this script's "
                                         r"results are greedy"):
        script.parse_args(["--rl-override", "actor_rollout_ref.rollout.val_temperature=0.5"])
    assert script.parse_args(["--rl-override", "actor_rollout_ref.rollout.temperature=0.5"]).rl_override


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


@pytest.mark.parametrize("argv", [[], ["--tasks", "3", "--demos-per-task", "5", "--heldout", "40", "--rl-steps", "2"]])
def test_stage_commands_are_valid_configs(script, tmp_path, argv):
    args = script.parse_args(["--run-dir", str(tmp_path), *argv])
    commands = script.setup_commands(args, tmp_path)
    sft = script.stage_config(commands["sft"], "sft_trainer")
    validate_sft_config(sft, check_paths=False)
    rl = script.stage_config(script.rl_command(args, tmp_path, tmp_path / "sft" / "actor" / "global_step_9"), "ppo_trainer")
    validate_config(rl, check_paths=False)
    # demos come from init states [0, 50 - heldout); validation uses the last `heldout` states
    collect = commands["collect_demos"]
    assert collect[collect.index("--init-states") + 1] == f"0-{49 - args.heldout}"
    assert rl.data.val_split == "held_out" and rl.data.held_out_trials_per_task == args.heldout
    assert sft.eval.held_out_trials_per_task == args.heldout
    assert list(rl.data.task_ids) == [int(t) for t in args.tasks.split(",")]
    assert rl.data.val_batch_size == args.heldout * len(rl.data.task_ids)  # one validation round
    # the measured recipe: task-balanced steps, one cached simulator per task (never more than the tasks)
    assert rl.data.task_balanced is True
    assert rl.env.libero_cached_tasks == min(2, len(rl.data.task_ids))
    assert rl.trainer.save_freq == 2  # an interrupted RL stage resumes
    # no second forward for pi_old, no entropy pass after the update (the same training, ~8% less time)
    assert rl.actor_rollout_ref.actor.use_rollout_log_probs is True and rl.trainer.entropy_after_update is False


def test_no_task_balanced_reaches_the_rl_config(script, tmp_path):
    args = script.parse_args(["--run-dir", str(tmp_path), "--no-task-balanced", "--env-cached-tasks", "1",
                              "--rl-override", "data.curriculum.enable=True"])
    rl = script.stage_config(script.rl_command(args, tmp_path, tmp_path / "sft_checkpoint"), "ppo_trainer")
    validate_config(rl, check_paths=False)
    assert rl.data.task_balanced is False and rl.data.curriculum.enable is True and rl.env.libero_cached_tasks == 1


@pytest.mark.parametrize("argv, message", [
    # the curriculum chooses tasks itself; the error names both the override and the flag to change
    (["--rl-override", "data.curriculum.enable=True"], r"task_balanced.*--no-task-balanced.*--rl-override data.curriculum.enable=True"),
    (["--rl-override", "data.curriculum.enable=1"], r"curriculum.enable=1 is invalid: expected True or False"),
    (["--env-cached-tasks", "0"], r"env.libero_cached_tasks.*--env-cached-tasks"),
    (["--rl-temperature", "0"], r"rl stage.*temperature.*--rl-temperature"),
    (["--sft-lr", "-1"], r"sft stage.*optim.lr"),
    (["--sft-lr-schedule", "cosine", "--sft-min-lr-ratio", "2"], r"sft stage.*min_lr_ratio=2.0 is invalid.*--sft-min-lr-ratio"),
    (["--rl-lr-schedule", "cosine", "--rl-min-lr-ratio", "-1"], r"rl stage.*min_lr_ratio=-1.0 is invalid.*--rl-min-lr-ratio"),
    (["--rl-override", "data.no_such_key=1"], r"rl stage's overrides do not compose.*no_such_key"),
])
def test_a_bad_stage_config_is_refused_before_any_stage(script, tmp_path, argv, message):
    """Both stages' configs are composed and validated before the hour of demos and SFT."""
    run = tmp_path / "run"
    with pytest.raises(SystemExit, match=message):
        script.main(["--run-dir", str(run), *argv])
    assert not run.exists()  # refused before creating anything


def test_sft_lr_schedule_reaches_the_sft_config(script, tmp_path):
    """--sft-lr-schedule cosine (the default) decays the LR to --sft-min-lr-ratio x --sft-lr; constant keeps it."""
    for argv, style, ratio in (([], "cosine", 0.1), (["--sft-lr-schedule", "constant"], "constant", 0.1),
                               (["--sft-min-lr-ratio", "0.2"], "cosine", 0.2)):
        args = script.parse_args(["--run-dir", str(tmp_path), *argv])
        sft = script.stage_config(script.setup_commands(args, tmp_path)["sft"], "sft_trainer")
        validate_sft_config(sft, check_paths=False)
        assert sft.actor_rollout_ref.actor.optim.warmup_style == style
        assert sft.actor_rollout_ref.actor.optim.min_lr_ratio == ratio


def test_rl_lr_schedule_reaches_the_rl_config(script, tmp_path):
    """--rl-lr-schedule cosine (the default) decays the GRPO LR to --rl-min-lr-ratio x --rl-lr; constant
    adds no override, so a constant-LR run's command is the one earlier run directories recorded."""
    default = script.stage_config(script.rl_command(script.parse_args(["--run-dir", str(tmp_path)]), tmp_path,
                                                    tmp_path / "sft"), "ppo_trainer")
    assert default.actor_rollout_ref.actor.optim.warmup_style == "cosine"
    args = script.parse_args(["--run-dir", str(tmp_path), "--rl-lr-schedule", "constant"])
    command = script.rl_command(args, tmp_path, tmp_path / "sft")
    assert not any("warmup_style" in arg or "min_lr_ratio" in arg for arg in command)
    assert script.stage_config(command, "ppo_trainer").actor_rollout_ref.actor.optim.warmup_style == "constant"
    args = script.parse_args(["--run-dir", str(tmp_path), "--rl-lr-schedule", "cosine", "--rl-min-lr-ratio", "0.2"])
    rl = script.stage_config(script.rl_command(args, tmp_path, tmp_path / "sft"), "ppo_trainer")
    validate_config(rl, check_paths=False)
    assert rl.actor_rollout_ref.actor.optim.warmup_style == "cosine" and rl.actor_rollout_ref.actor.optim.min_lr_ratio == 0.2


def test_init_checkpoint_flags_are_make_tiny_checkpoint_flags(script, tmp_path):
    args = script.parse_args(["--run-dir", str(tmp_path)])
    command = script.setup_commands(args, tmp_path)["init_checkpoint"]
    assert "--qk-init-std=0.1" in command and "--llm-hidden=128" in command and "--seed=0" in command


def test_report_compares_runs_from_the_same_sft_policy(script, tmp_path):
    """--report-only --compare: PPO's curve beside GRPO's, GRPO's step-0 evaluation standing in for
    the step 0 PPO skipped (same checkpoint and held-out states); another checkpoint is refused."""
    run = tmp_path / "ppo"
    (run / "rl").mkdir(parents=True)
    command = ["python", "-m", "verl.trainer.main_ppo", "actor_rollout_ref.model.path=/ckpt/sft",
               "algorithm.adv_estimator=gae"]
    (run / "stages.json").write_text(json.dumps({"rl": {"wall_s": 60.0, "command": command}}))
    rows = [{"step": s, "val/test_score/all": v, "val/test_score/libero_object/0": v, "val/test_score/libero_object/1": v,
             "val/episodes": 40.0} for s, v in ((6, 0.4), (12, 0.55))]
    rows += [{"step": s, "train_verify_score/all": 0.3, "train_verify_score/libero_object/0": 0.1,
              "train_verify_score/libero_object/1": 0.5, "rollout/env_steps_per_s": 40.0} for s in range(1, 13)]
    (run / "rl" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    grpo = {"suite": "libero_object", "tasks": [0, 1], "sft_checkpoint": "/ckpt/sft",
            "heldout_init_states": list(range(30, 50)),
            "commands": {"rl": ["algorithm.adv_estimator=grpo", "actor_rollout_ref.rollout.temperature=0.7",
                                "actor_rollout_ref.rollout.temperature=0.25"]},
            "curve": [{"step": 0, "heldout_success": 0.35, "per_task": {"task_0": 0.05, "task_1": 0.65}, "episodes": 40.0},
                      {"step": 10, "heldout_success": 0.6, "per_task": {"task_0": 0.65, "task_1": 0.55}, "episodes": 40.0}]}
    (tmp_path / "grpo.json").write_text(json.dumps(grpo))
    out = tmp_path / "ppo.json"
    argv = ["--run-dir", str(run), "--report-only", "--skip-raw-limit", "--out", str(out)]
    assert script.main([*argv, "--compare", str(tmp_path / "grpo.json")]) == 0
    result = json.loads(out.read_text())
    assert result["algorithm"] == "PPO + critic" and result["compared_with"]["algorithm"] == "GRPO"
    assert result["compared_with"]["label"] == "GRPO, T=0.25"  # the last override wins, as in Hydra
    assert [(p["step"], p["heldout_success"]) for p in result["curve"]] == [(0, 0.35), (6, 0.4), (12, 0.55)]
    assert "grpo.json" in result["curve"][0]["source"] and "source" not in result["curve"][1]
    assert result["sft_heldout_success"] == 0.35 and result["rl_heldout_success"] == 0.55
    assert out.with_suffix(".png").is_file()
    assert result["rl_train_success_per_task_per_step"][0] == {"task_0": 0.1, "task_1": 0.5}
    # the bar beside the figures: +0.20 over 40 episodes; an RL stage alone is not the whole script's time
    assert result["bar"]["rl_minus_sft"] == pytest.approx(0.2) and not result["bar"]["lift_met"]
    assert not result["bar"]["whole_script_in_one_run"] and not result["bar"]["wall_met"]
    assert result["bar"]["heldout_episodes"] == 40

    grpo["sft_checkpoint"] = "/ckpt/another"
    (tmp_path / "grpo.json").write_text(json.dumps(grpo))
    with pytest.raises(SystemExit, match="not the same SFT checkpoint"):
        script.main([*argv, "--compare", str(tmp_path / "grpo.json")])

    # without a step-0 evaluation there is no SFT score: the first later evaluation is not one
    assert script.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["curve"][0]["step"] == 6
    assert result["sft_heldout_success"] is None and result["sft_heldout_per_task"] is None
    assert result["rl_heldout_success"] == 0.55
    assert result["rl_stopped_by_time_limit"] is False
    with open(run / "rl" / "metrics.jsonl", "a") as f:  # the trainer's mark at the step a time limit ended it
        f.write(json.dumps({"step": 12, "trainer/stopped_by_time_limit": 1.0}) + "\n")
    assert script.main(argv) == 0
    assert json.loads(out.read_text())["rl_stopped_by_time_limit"] is True

    # a run whose SFT stage did not run here does not list that stage's flags (their defaults, e.g.
    # patch_size 28, would misdescribe a checkpoint of another size), and lists them once it has run
    assert result["settings"]["rl_steps"] == 16 and result["demos_per_task"] is None
    assert not set(result["settings"]) & set(script.SFT_STAGE_SETTINGS)
    stages = json.loads((run / "stages.json").read_text())
    (run / "stages.json").write_text(json.dumps({"sft": {"wall_s": 1.0, "command": ["sft"]}, **stages}))
    assert script.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["settings"]["patch_size"] == 28 and result["demos_per_task"] == 10


def test_the_bar_is_checked_beside_each_measured_figure(script):
    """The issue's bar on the float32 scores the trainer logs: +0.25 exactly (0.35 -> 0.60 as logged)
    is met, +0.175 is not; an SFT start outside 0.05-0.6 fails the band; a wall time summed over
    resumed pieces never meets the 90-minute bar, however short."""
    bar = script.check_bar(0.3499999940395355, 0.6000000238418579, 40, 85 * 60, sft_ran=True, whole_run=True)
    assert bar["all_met"] and bar["lift_met"] and bar["sft_in_band"] and bar["wall_met"]
    assert bar["rl_minus_sft_standard_error"] == pytest.approx(((0.35 * 0.65 + 0.6 * 0.4) / 40) ** 0.5, rel=1e-6)
    bar = script.check_bar(0.55, 0.725, 40, 48.7 * 60, sft_ran=True, whole_run=True)
    assert not bar["lift_met"] and not bar["all_met"] and bar["sft_in_band"]
    assert not script.check_bar(0.675, 0.95, 40, 60 * 60, sft_ran=True, whole_run=True)["sft_in_band"]
    # the band's edges as logged (float32): 24/40 and 2/40 are in, 25/40 and 1/40 are not
    for edge in (0.6000000238418579, 0.05000000074505806):
        assert script.check_bar(edge, 0.9, 40, 60 * 60, sft_ran=True, whole_run=True)["sft_in_band"]
    assert not script.check_bar(0.625, 0.9, 40, 60 * 60, sft_ran=True, whole_run=True)["sft_in_band"]
    assert not script.check_bar(0.025000000372529, 0.3, 40, 60 * 60, sft_ran=True, whole_run=True)["sft_in_band"]
    assert not script.check_bar(0.0, 0.3, 40, 60 * 60, sft_ran=True, whole_run=True)["sft_in_band"]
    assert not script.check_bar(0.3, 0.6, 20, 60 * 60, sft_ran=True, whole_run=True)["episodes_met"]
    assert not script.check_bar(0.3, 0.6, 40, 91 * 60, sft_ran=True, whole_run=True)["wall_met"]
    resumed = script.check_bar(0.3, 0.6, 40, 60 * 60, sft_ran=True, whole_run=False)
    assert not resumed["wall_met"] and not resumed["all_met"]
    # GRPO from a shipped or given SFT policy: its start was not made from demos in this run
    assert not script.check_bar(0.3, 0.6, 40, 60 * 60, sft_ran=False, whole_run=True)["all_met"]
    # no step-0 evaluation: no SFT score, so no lift
    missing = script.check_bar(None, 0.6, 40, 60 * 60, sft_ran=True, whole_run=True)
    assert missing["rl_minus_sft"] is None and not missing["lift_met"] and not missing["sft_in_band"]


def test_only_the_whole_script_in_one_piece_counts_for_the_time_bar(script):
    """The 90-minute bar is the whole script's, demos included: an RL stage started from a given SFT
    checkpoint (--from-sft: 25 min here) or a stage resumed after a stop does not count, however short."""
    once = {"runs": [{"wall_s": 1.0}]}
    whole = {name: once for name in ("collect_demos", "init_checkpoint", "sft", "pack_sft", "rl")}
    assert script.whole_script_ran_once(whole)
    assert not script.whole_script_ran_once({"rl": once})
    assert not script.whole_script_ran_once({k: v for k, v in whole.items() if k != "collect_demos"})
    assert not script.whole_script_ran_once({**whole, "rl": {"runs": [{"wall_s": 1.0}, {"wall_s": 2.0}]}})
    assert script.whole_script_ran_once({**whole, "rl": {"wall_s": 1.0}})  # stages.json written before "runs" existed
    assert not script.whole_script_ran_once({**whole, "rl": {"runs": [{"wall_s": None}], "completed": False}})


STAGE_DRIVER = COLD_START_DRIVER + """
run = Path(sys.argv[1])
run.mkdir(parents=True)
stages = script.Stages(run)
stages.run("demos", [sys.executable, "-c", "pass"], run / "demos.log")
sleepy = f"import os, time; open({str(run / 'sft.pid')!r}, 'w').write(str(os.getpid())); time.sleep(60)"
stages.run("sft", [sys.executable, "-c", sleepy], run / "sft.log")
"""


def _driver_in_its_sft_stage(run: Path):
    """A cold-start driver whose second stage (sft) has been running for a second."""
    import time

    driver = start(STAGE_DRIVER, str(run))
    wait_for(run / "sft.pid", driver)
    time.sleep(1.0)
    return driver


def test_a_stopped_or_killed_stage_is_recorded_and_keeps_the_run_off_the_time_bar(script, tmp_path):
    """A stage stopped mid-run (SIGTERM: its wall time is known) or killed outright (SIGKILL: it is
    not) stays in stages.json as an unfinished attempt: the next run runs it again instead of
    skipping it, the stopped attempt's time counts in the stage's wall time, and the run no longer
    counts as the whole script in one piece."""
    import signal
    import sys

    stopped = _driver_in_its_sft_stage(tmp_path / "stopped")
    stopped.send_signal(signal.SIGTERM)
    assert stopped.wait(timeout=60) != 0
    record = json.loads((tmp_path / "stopped" / "stages.json").read_text())
    assert record["demos"]["completed"] and len(record["demos"]["runs"]) == 1
    assert not record["sft"]["completed"] and record["sft"]["wall_s"] >= 1.0
    assert record["sft"]["runs"][0]["wall_s"] == record["sft"]["wall_s"]

    killed = _driver_in_its_sft_stage(tmp_path / "killed")
    killed.kill()
    killed.wait(timeout=60)
    record = json.loads((tmp_path / "killed" / "stages.json").read_text())
    assert record["sft"]["runs"] == [{"wall_s": None, "command": record["sft"]["command"], "completed": False}]

    for run in (tmp_path / "stopped", tmp_path / "killed"):
        stages = script.Stages(run)
        assert stages.completed("demos") and not stages.completed("sft")
        before = stages.done["sft"]["wall_s"]
        stages.run("demos", [sys.executable, "-c", "pass"], run / "demos.log")  # skipped: finished
        stages.run("sft", stages.done["sft"]["command"][:2] + ["pass"], run / "sft.log")
        again = json.loads((run / "stages.json").read_text())
        assert len(again["demos"]["runs"]) == 1
        assert again["sft"]["completed"] and [r["completed"] for r in again["sft"]["runs"]] == [False, True]
        assert again["sft"]["wall_s"] == pytest.approx(before + again["sft"]["runs"][1]["wall_s"])
        whole = {**again, "collect_demos": again["demos"], "rl": again["demos"]}
        assert not script.whole_script_ran_once(whole)
        assert script.whole_script_ran_once({**whole, "sft": again["demos"]})


def test_time_budget_gives_grpo_what_the_earlier_stages_left(script, tmp_path):
    """--time-budget-min: the GRPO stage gets trainer.time_limit_s = budget - the stages so far (earlier
    attempts included) - the reserve; a valid override of the RL config; refused when nothing is left."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "stages.json").write_text(json.dumps({
        "collect_demos": {"wall_s": 100.0, "completed": True, "command": ["demos"]},
        "sft": {"wall_s": 1000.0, "completed": True, "command": ["sft"]},
        "rl": {"wall_s": 300.0, "completed": False, "command": ["rl"]},  # a stopped attempt
    }))
    stages = script.Stages(run)
    args = script.parse_args(["--run-dir", str(run), "--time-budget-min", "90"])
    left = 90 * 60 - 1400 - script.TIME_BUDGET_RESERVE_S
    assert script.rl_time_limit(args, stages) == [f"trainer.time_limit_s={left:.0f}"]
    rl = script.stage_config(script.rl_command(args, run, run / "sft_checkpoint") + script.rl_time_limit(args, stages),
                             "ppo_trainer")
    validate_config(rl, check_paths=False)
    assert rl.trainer.time_limit_s == left
    # the default is the 90 minutes; 0 means no budget
    assert script.rl_time_limit(script.parse_args(["--run-dir", str(run)]), stages) == [f"trainer.time_limit_s={left:.0f}"]
    assert script.rl_time_limit(script.parse_args(["--run-dir", str(run), "--time-budget-min", "0"]), stages) == []
    with pytest.raises(SystemExit, match=r"--time-budget-min=20: the stages before GRPO took 23.3 min"):
        script.rl_time_limit(script.parse_args(["--run-dir", str(run), "--time-budget-min", "20"]), stages)
    with pytest.raises(SystemExit, match=r"--time-budget-min=-5: expected minutes >= 0 \(0: no budget\)"):
        script.parse_args(["--run-dir", str(run), "--time-budget-min", "-5"])


def test_a_stages_extra_arguments_are_passed_but_are_not_what_the_stage_is(script, tmp_path):
    """The time limit is appended at launch and recorded, but a finished stage is not run again
    because the earlier stages left it a different limit this time."""
    import sys

    stages = script.Stages(tmp_path)
    argv_file = tmp_path / "argv.json"
    command = [sys.executable, "-c", f"import json, sys; open({str(argv_file)!r}, 'w').write(json.dumps(sys.argv[1:]))"]
    stages.run("rl", command, tmp_path / "rl.log", ["trainer.time_limit_s=100"])
    assert json.loads(argv_file.read_text()) == ["trainer.time_limit_s=100"]
    record = json.loads((tmp_path / "stages.json").read_text())["rl"]
    assert record["command"] == command and record["runs"][0]["extra"] == ["trainer.time_limit_s=100"]
    argv_file.unlink()
    script.Stages(tmp_path).run("rl", command, tmp_path / "rl.log", ["trainer.time_limit_s=50"])
    assert not argv_file.exists()  # skipped: done before


def test_rl_label_names_the_algorithm_and_its_rollout_temperature(script):
    """Two runs of one algorithm at two temperatures must differ in a --compare plot's legend."""
    assert script.rl_label(["algorithm.adv_estimator=gae", "actor_rollout_ref.rollout.temperature=1.0"]) == "PPO + critic, T=1.0"
    assert script.rl_label(["actor_rollout_ref.rollout.temperature=0.5"]) == "GRPO, T=0.5"
    assert script.rl_label(["actor_rollout_ref.rollout.val_temperature=0.5"]) == "GRPO"  # not the rollout's
    assert script.rl_label([]) == "GRPO"
