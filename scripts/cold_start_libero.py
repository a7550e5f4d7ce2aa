#!/usr/bin/env python
"""The cold-start experiment in miniature, on real LIBERO on a CPU: a few scripted demos per task ->
SFT of a small model of the exact OpenVLA-OFT architecture -> greedy evaluation on held-out init
states -> GRPO -> greedy evaluation on the same held-out states. The paper's headline (one demo per
task, SFT, then RL lifts LIBERO-Long from 17% to 92%) at a size a 2-core CPU machine runs in 90 minutes.
The defaults are the recipe of the run that met the issue's bars on a 2-core Intel Xeon (with --seed 9:
SFT 0.525 -> GRPO 0.85 on 40 held-out greedy episodes, 77.5 min: demos 2 min, SFT 19, GRPO 56;
docs/benchmarks/cold_start_libero_cpu.json); other seeds start elsewhere and lift less (README).

Every stage is the command a user runs (collect_libero_demos.py, main_sft, main_ppo), started as a
subprocess; stages whose outputs exist are skipped, so an interrupted experiment continues where it
stopped (stage wall times are kept in <run>/stages.json). The held-out success before RL is the RL
run's validation at step 0 (`val_before_train`: greedy, so identical to evaluating the SFT
checkpoint alone); after RL, its last validation.

    python scripts/cold_start_libero.py --run-dir runs/cold_start [--suite libero_object --tasks 0,1]
        [--demos-per-task 10] [--heldout 20] [--sft-steps 2000] [--rl-steps 16] [--seed 9] [--out <run-dir>/result.json]

Writes the JSON result (held-out success before / after RL, per task, the curve, wall time per stage,
env steps/s against the raw env limit measured on this machine) and a PNG of held-out success vs RL step.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from verl.utils.termination import exit_on_sigterm, stop_child  # noqa: E402
NUM_INIT_STATES = 50  # LIBERO init states per task
SHIPPED_SFT = ROOT / "examples" / "assets" / "cold_start_sft_libero_object.delta.safetensors"
# --quick: the shipped policy's weak task (held-out 0.05, against 0.65 on task 1), 24 episodes per step
# and the GRPO settings it was measured with (T=1.0, constant lr 1e-4, no time budget)
QUICK = {"tasks": "0", "prompts_per_step": 3, "rl_steps": 4, "test_freq": 2, "rl_temperature": 1.0, "rl_lr": 1e-4,
         "rl_lr_schedule": "constant", "time_budget_min": 0}
# flags of the demo, init and SFT stages: unused when those stages did not run (--from-sft: the
# checkpoint decides), so such a result does not list them (patch_size=14 there would misdescribe a
# patch-28 checkpoint)
SFT_STAGE_SETTINGS = ("demos_per_task", "sft_epochs", "sft_steps", "sft_lr", "sft_lr_schedule", "sft_min_lr_ratio",
                      "sft_dtype", "llm_layers", "llm_hidden", "patch_size", "qk_init_std", "init_seed")


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True when the CPU multiplies bf16 in hardware (AVX512-BF16 or AMX). There FSDP2's bf16 mixed
    precision trains the small model 1.2-1.5x faster than fp32 (1.14 vs 1.72 s per SFT step on a 2-core
    AMD EPYC), at a higher loss after 1500 steps (2.57 vs 2.25 on an Intel Xeon); elsewhere bf16 is
    emulated and slower than fp32."""
    try:
        flags = set(cpuinfo.read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def missing_packages(modules=("torch", "h5py", "omegaconf", "ray", "robosuite", "libero")) -> list[str]:
    """The packages every stage needs that this interpreter lacks (each stage runs with sys.executable)."""
    import importlib.util

    return [m for m in modules if importlib.util.find_spec(m) is None]


def log(message: str) -> None:
    print(f"[cold-start {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Stages:
    """Run each stage once; remember every attempt's wall time in <run>/stages.json.

    A stage's record: `runs` (one entry per attempt: wall_s, command, completed), `wall_s` (their sum:
    the time spent, stopped attempts included), `command` and `completed` (the last attempt's). An
    attempt is written before it starts, so one whose process was killed outright (SIGKILL, power
    loss) stays in the file with wall_s null: the next run knows the stage did not run in one piece."""

    def __init__(self, run_dir: Path) -> None:
        self.file = run_dir / "stages.json"
        self.done = json.loads(self.file.read_text()) if self.file.is_file() else {}

    def completed(self, name: str) -> bool:
        """Whether stage `name` finished (a record without `completed` predates it and was only
        written on success)."""
        return name in self.done and self.done[name].get("completed", True)

    def run(self, name: str, command: list[str], log_file: Path, extra: Sequence[str] = ()) -> float:
        """Run `command` unless this stage already finished it. A stage run again (after a stop, or
        with another command, e.g. SFT with more steps: it resumes from its last checkpoint) adds
        its wall time. `extra`: arguments appended at launch that are not part of what the stage is
        (a time limit that depends on how long the earlier stages took); kept in the attempt's record."""
        previous = self.done.get(name)
        if self.completed(name) and previous["command"] == command:
            log(f"{name}: done before ({previous['wall_s']:.0f} s), skipped")
            return previous["wall_s"]
        log(f"{name}: {' '.join([*command, *extra])}")
        attempt = self._start(name, command)
        if extra:
            attempt["extra"] = list(extra)
        start = time.perf_counter()
        with open(log_file, "a") as out:
            proc = subprocess.Popen([*command, *extra], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
            try:
                returncode = proc.wait()
            except BaseException as stop:  # Ctrl-C, SIGTERM (exit_on_sigterm): the stage must not outlive us
                try:
                    stop_child(proc, interrupted_by_ctrl_c=isinstance(stop, KeyboardInterrupt))
                finally:  # a log line that fails (a closed pipe) must not keep the stage alive
                    attempt["wall_s"] = time.perf_counter() - start
                    self._save(name)
                    log(f"{name}: stopped the stage (pid {proc.pid}) after {attempt['wall_s']:.0f} s")
                raise
        attempt.update(wall_s=time.perf_counter() - start, completed=returncode == 0)
        self._save(name)
        if returncode != 0:
            raise SystemExit(f"stage {name} failed ({returncode}); see {log_file}")
        log(f"{name}: {attempt['wall_s']:.0f} s")
        return attempt["wall_s"]

    def _start(self, name: str, command: list[str]) -> dict:
        """Append a new, unfinished attempt to stage `name`'s record, on disk before the stage starts."""
        record = dict(self.done.get(name) or {})  # keeps a hand-written "note"
        runs = record.pop("runs", [record] if record else [])
        attempt = {"wall_s": None, "command": command, "completed": False}
        record["runs"] = [{key: r[key] for key in ("wall_s", "command", "extra") if key in r}
                          | {"completed": r.get("completed", True)} for r in runs] + [attempt]
        self.done[name] = record
        self._save(name)
        return attempt

    def _save(self, name: str) -> None:
        """Refresh stage `name`'s totals from its attempts and rewrite the file atomically (a stop
        mid-write must not lose the other stages' records)."""
        record = self.done[name]
        last = record["runs"][-1]
        record.update(wall_s=sum(r["wall_s"] or 0.0 for r in record["runs"]), command=last["command"],
                      completed=last["completed"])
        partial = self.file.with_suffix(".json.partial")
        partial.write_text(json.dumps(self.done, indent=2))
        os.replace(partial, self.file)


def read_metrics(run_dir: Path) -> dict[int, dict[str, float]]:
    rows: dict[int, dict[str, float]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        rows.setdefault(int(row.pop("step")), {}).update(row)
    return rows


# issue #10's bar: a weak but non-zero SFT start, a clear RL lift, enough episodes, the whole script in 90 minutes
BAR = {"sft_band": (0.05, 0.6), "lift": 0.25, "heldout_episodes": 40, "wall_min": 90.0}


def check_bar(sft: float | None, rl: float | None, episodes: int, wall_s: float, sft_ran: bool,
              whole_run: bool) -> dict:
    """Each bar beside its measured figure. The lift's standard error treats the two greedy scores
    as independent binomial means over `episodes` (same init states, so it over- rather than
    under-states the noise). `whole_run`: every stage, demos to RL, ran once, uninterrupted
    (whole_script_ran_once), so `wall_s` is one whole run's wall time and not a sum over pieces."""
    lift = None if sft is None or rl is None else rl - sft
    se = None if lift is None or not episodes else ((sft * (1 - sft) + rl * (1 - rl)) / episodes) ** 0.5
    low, high = BAR["sft_band"]
    tol = 1e-6  # the trainer logs success rates as float32: 24/40 arrives as 0.6000000238
    bar = {
        "sft_heldout_success": sft, "sft_in_band": sft is not None and low - tol <= sft <= high + tol,
        "sft_band": [low, high],
        "sft_strength_set_by_demo_count": sft_ran,
        "rl_minus_sft": lift, "rl_minus_sft_standard_error": se,
        "lift_met": lift is not None and lift >= BAR["lift"] - tol, "lift_bar": BAR["lift"],
        "heldout_episodes": episodes, "episodes_met": episodes >= BAR["heldout_episodes"],
        "wall_min": wall_s / 60, "wall_met": whole_run and wall_s / 60 <= BAR["wall_min"], "wall_bar_min": BAR["wall_min"],
        "whole_script_in_one_run": whole_run,
    }
    bar["all_met"] = all(bar[k] for k in ("sft_in_band", "sft_strength_set_by_demo_count", "lift_met", "episodes_met",
                                          "wall_met"))
    return bar


def whole_script_ran_once(done: dict) -> bool:
    """True when demo collection, SFT and RL all ran in this run directory, each in one piece: only then
    is the summed stage time the wall time of the whole script that the 90-minute bar is about (an RL
    stage started with --from-sft, or a stage resumed after a stop, is not)."""
    return all(name in done for name in ("collect_demos", "sft", "rl")) and \
        all(len(stage.get("runs", [stage])) == 1 and stage.get("completed", True) for stage in done.values())


def latest_checkpoint(run_dir: Path) -> Path:
    root = run_dir / "actor"
    return root / f"global_step_{(root / 'latest_checkpointed_iteration.txt').read_text().strip()}"


def measure_raw_limit(suite: str, tasks: list[int], workers: int, slots: int, max_steps: int, episodes: int) -> dict:
    """Bare LIBERO loops (physics every step + one render per 8-step chunk, as the pool renders, no
    model): one process pinned to one core, and `workers` processes on all cores."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_rollout import bare_stepping  # noqa: E402

    from verl.envs.base import EnvSpec
    from verl.models.openvla_oft.tiny import tiny_dataset_statistics

    stats = tiny_dataset_statistics()[f"{suite}_no_noops"]["action"]
    specs = [EnvSpec("libero", suite, tasks[i % len(tasks)], i) for i in range(episodes)]
    one_core = bare_stepping("libero", specs[: max(1, episodes // 2)], 1, slots, max_steps, False, [0], stats)
    all_cores = bare_stepping("libero", specs, workers, slots, max_steps, False, None, stats)
    return {"one_process_one_core": one_core, f"{workers}_processes_all_cores": all_cores,
            "episode_budget": max_steps, "note": "uniform random normalised actions through the rollout's "
            "un-normalisation; physics every step, one agent-view render per chunk of 8, warm resets"}


def rl_algorithm(command: list[str]) -> str:
    """The RL stage's algorithm from its command line (the last override wins, as in Hydra)."""
    estimator = "grpo"
    for arg in command:
        if arg.startswith("algorithm.adv_estimator="):
            estimator = arg.split("=", 1)[1]
    return {"grpo": "GRPO", "gae": "PPO + critic"}.get(estimator, estimator)


def rl_label(command: list[str]) -> str:
    """The plot's name for an RL stage: its algorithm and rollout temperature (two runs of one
    algorithm differ in the legend), e.g. ``GRPO, T=0.25``."""
    key = "actor_rollout_ref.rollout.temperature="
    temperatures = [arg[len(key):] for arg in command if arg.startswith(key)]
    algorithm = rl_algorithm(command)
    return f"{algorithm}, T={temperatures[-1]}" if temperatures else algorithm


def plot(curve: list[dict], tasks: list[int], suite: str, out: Path, sft: float | None, heldout: int, label: str,
         compare: dict | None = None) -> None:
    """Held-out success vs RL step; `label` names this run's RL stage, compare["label"] the other's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    steps = [p["step"] for p in curve]
    ax.plot(steps, [p["heldout_success"] for p in curve], "o-", lw=2, color="k", label=f"{label}: all held-out episodes")
    for task in tasks:
        key = f"task_{task}"
        ax.plot(steps, [p["per_task"].get(key, float("nan")) for p in curve], ".--", alpha=0.7, label=f"{label}: {suite} {key}")
    if compare is not None:
        other = compare["curve"]
        ax.plot([p["step"] for p in other], [p["heldout_success"] for p in other], "s-", lw=2, color="tab:red",
                alpha=0.6, label=f"{compare['label']}: all held-out episodes")
    if sft is not None:  # the SFT policy's score (step 0), as a reference line
        ax.axhline(sft, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("RL step")
    ax.set_ylabel(f"greedy success ({heldout} held-out episodes)")
    ax.set_ylim(-0.02, 1.02)
    versus = f" vs {compare['label']}" if compare is not None else ""
    ax.set_title(f"Cold start on LIBERO (CPU): SFT on a few demos, then RL\n{label}{versus}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def init_kwargs(args: argparse.Namespace) -> dict:
    """make_tiny_checkpoint's arguments for the SFT starting point (flags of make_tiny_checkpoint.py)."""
    return {"seed": args.init_seed, "llm_layers": args.llm_layers, "llm_hidden": args.llm_hidden, "qk_init_std": args.qk_init_std,
            "patch_size": args.patch_size}


def setup_commands(args: argparse.Namespace, run: Path) -> dict[str, list[str]]:
    """The demo collection, initial checkpoint and SFT commands, as a user would type them."""
    py = sys.executable
    tasks = [int(t) for t in args.tasks.split(",")]
    train_states = NUM_INIT_STATES - args.heldout
    demos, init = run / "demos", run / "init_checkpoint"
    return {
        # the scripted expert on training init states only; it tries more states when it fails on
        # one, until each task has its demos, never touching the held-out states
        "collect_demos": [
            py, "scripts/collect_libero_demos.py", "--suite", args.suite, "--tasks", ",".join(map(str, tasks)),
            "--init-states", f"0-{train_states - 1}", "--num-demos", str(args.demos_per_task + 1),
            "--cameras", "agentview", "--out", str(demos), "--report", str(run / "expert_report.json"),
            "--workers", str(min(len(tasks), os.cpu_count() or 1)),
        ],
        # a small model of the OpenVLA-OFT architecture, random init; 4 decoder layers of width 128 whose
        # attention tells positions apart from the start (the 56 action slots are zero embeddings)
        "init_checkpoint": [py, "scripts/make_tiny_checkpoint.py", "--out", str(init),
                            *(f"--{k.replace('_', '-')}={v}" for k, v in init_kwargs(args).items())],
        # one demo per task held out for the validation loss
        "sft": [
            py, "-m", "verl.trainer.main_sft", f"data.train_files=[{demos}]", f"data.task_suite_name={args.suite}",
            f"data.demos_per_task={args.demos_per_task}", "data.val_demos_per_task=1", "data.batch_size=32",
            "data.micro_batch_size=32", f"actor_rollout_ref.model.path={init}", f"actor_rollout_ref.model.dtype={args.sft_dtype}",
            f"actor_rollout_ref.model.attn_implementation={args.attn_implementation}",
            f"actor_rollout_ref.actor.optim.lr={args.sft_lr}", f"actor_rollout_ref.actor.optim.warmup_style={args.sft_lr_schedule}",
            f"actor_rollout_ref.actor.optim.min_lr_ratio={args.sft_min_lr_ratio}",
            "actor_rollout_ref.actor.optim.lr_warmup_steps=20", f"trainer.total_epochs={args.sft_epochs}",
            *([f"trainer.total_training_steps={args.sft_steps}"] if args.sft_steps else []),
            "trainer.device=cpu", "trainer.n_gpus_per_node=1", "trainer.test_freq=200", "trainer.log_freq=50",
            "eval.freq=-1", f"eval.task_ids=[{args.tasks}]", f"eval.held_out_trials_per_task={args.heldout}", f"trainer.seed={args.seed}",
            f"trainer.default_local_dir={run / 'sft'}", "trainer.project_name=cold_start", "trainer.experiment_name=sft",
        ],
    }


def rl_command(args: argparse.Namespace, run: Path, sft_ckpt: Path) -> list[str]:
    """GRPO from the SFT checkpoint; validation on the held-out init states before training (the SFT
    policy's score) and every test_freq steps."""
    tasks = [int(t) for t in args.tasks.split(",")]
    episodes_per_step = args.prompts_per_step * args.n_samples
    mini = max(1, episodes_per_step // args.rl_mini_batches)
    return [
        sys.executable, "-m", "verl.trainer.main_ppo", f"actor_rollout_ref.model.path={sft_ckpt}",
        f"actor_rollout_ref.model.attn_implementation={args.attn_implementation}",
        f"data.task_suite_name={args.suite}", f"actor_rollout_ref.rollout.task_suite_name={args.suite}",
        f"actor_rollout_ref.rollout.unnorm_key={args.suite}", f"data.task_ids=[{','.join(map(str, tasks))}]",
        f"data.num_trials_per_task={NUM_INIT_STATES}", "data.val_split=held_out",
        f"data.held_out_trials_per_task={args.heldout}", f"data.train_batch_size={args.prompts_per_step}",
        f"data.n_samples={args.n_samples}", f"data.max_sample_rounds={args.max_sample_rounds}", f"data.val_batch_size={args.heldout * len(tasks)}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={mini}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size={math.gcd(mini, args.n_samples)}", "actor_rollout_ref.actor.traj_mini_batch_size=16",
        f"actor_rollout_ref.actor.optim.lr={args.rl_lr}", f"actor_rollout_ref.actor.optim.lr_warmup_steps={args.rl_warmup_steps}",
        # only when set: a constant-LR run's command stays what earlier run directories recorded (stages.json)
        *([f"actor_rollout_ref.actor.optim.warmup_style={args.rl_lr_schedule}",
           f"actor_rollout_ref.actor.optim.min_lr_ratio={args.rl_min_lr_ratio}"] if args.rl_lr_schedule != "constant" else []),
        f"actor_rollout_ref.rollout.temperature={args.rl_temperature}", f"actor_rollout_ref.actor.ppo_epochs={args.rl_ppo_epochs}",
        f"actor_rollout_ref.rollout.max_env_steps={args.max_env_steps}",
        f"env.num_workers={args.env_workers}", f"env.envs_per_worker={args.envs_per_worker}",
        f"env.libero_cached_tasks={min(args.env_cached_tasks, len(tasks))}", f"data.task_balanced={args.task_balanced}",
        "trainer.device=cpu", "trainer.n_gpus_per_node=1", f"trainer.total_training_steps={args.rl_steps}",
        f"trainer.test_freq={args.test_freq}", "trainer.val_before_train=True", f"trainer.save_freq={args.save_freq}",
        "trainer.logger=[console]", f"trainer.seed={args.seed}", f"trainer.default_local_dir={run / 'rl'}",
        "trainer.project_name=cold_start", "trainer.experiment_name=grpo",
        # the rollout's log-probs are pi_old (it runs the actor's weights: they measured equal, |diff| = 0, in
        # every step of both task-balanced runs) and no entropy pass after the update: two forwards over the
        # batch less per step (15-28 of ~300 s on the 2-core Intel Xeon), the same training
        "actor_rollout_ref.actor.use_rollout_log_probs=True", "trainer.entropy_after_update=False",
        *args.rl_override,
    ]


TIME_BUDGET_RESERVE_S = 60.0  # of --time-budget-min, for what the trainer's clock does not see: the GRPO
# stage's start before the trainer is built, its shutdown, and the report


def rl_time_limit(args: argparse.Namespace, stages: Stages) -> list[str]:
    """With --time-budget-min: `trainer.time_limit_s` for the GRPO stage, the budget less the time
    every stage took so far (earlier attempts included) and a reserve; [] without a budget."""
    if args.time_budget_min is None:
        return []
    spent = sum(stage["wall_s"] or 0.0 for stage in stages.done.values())
    left = args.time_budget_min * 60 - spent - TIME_BUDGET_RESERVE_S
    if left <= 0 and not stages.completed("rl"):
        raise SystemExit(f"--time-budget-min={args.time_budget_min:g}: the stages before GRPO took {spent / 60:.1f} "
                         "min, which leaves no time for it")
    return [f"trainer.time_limit_s={max(left, 1.0):.0f}"]


# the stage config keys this script's flags set, to name the flag when validation refuses one
FLAG_OF_KEY = {
    "data.task_balanced": "--task-balanced / --no-task-balanced",
    "env.libero_cached_tasks": "--env-cached-tasks",
    "data.train_batch_size": "--prompts-per-step",
    "data.n_samples": "--n-samples",
    "data.max_sample_rounds": "--max-sample-rounds",
    "actor_rollout_ref.actor.optim.lr": "--rl-lr / --sft-lr",
    "actor_rollout_ref.actor.optim.warmup_style": "--sft-lr-schedule / --rl-lr-schedule",
    "actor_rollout_ref.actor.optim.min_lr_ratio": "--sft-min-lr-ratio / --rl-min-lr-ratio",
    "actor_rollout_ref.actor.ppo_epochs": "--rl-ppo-epochs",
    "actor_rollout_ref.rollout.temperature": "--rl-temperature",
    "actor_rollout_ref.rollout.max_env_steps": "--max-env-steps",
    "env.num_workers": "--env-workers",
    "env.envs_per_worker": "--envs-per-worker",
    "trainer.total_training_steps": "--rl-steps / --sft-steps",
    "trainer.test_freq": "--test-freq",
    "trainer.save_freq": "--save-freq",
    "actor_rollout_ref.model.attn_implementation": "--attn-implementation",
}


def stage_config(command: list[str], config_name: str):
    """The resolved config a `python -m verl.trainer.main_*` stage command composes (Hydra, its overrides)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(ROOT / "verl" / "trainer" / "config"), version_base=None):
        cfg = compose(config_name, overrides=command[command.index("-m") + 2:])
    OmegaConf.resolve(cfg)
    return cfg


def check_stage_configs(args: argparse.Namespace, run: Path) -> None:
    """Compose the SFT and RL stages' configs as their commands will and validate them now: a bad flag
    or --rl-override fails in a second, not after an hour of demos and SFT."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from verl.trainer.config_validation import ConfigError, validate_config, validate_sft_config

    sft_ckpt = run / "sft_checkpoint"  # a placeholder: paths are checked when the stage runs
    stages = [("rl", rl_command(args, run, sft_ckpt), "ppo_trainer", validate_config)]
    if args.from_sft is None:
        stages.insert(0, ("sft", setup_commands(args, run)["sft"], "sft_trainer", validate_sft_config))
    for name, command, config_name, validate in stages:
        try:
            validate(stage_config(command, config_name), check_paths=False)
        except ConfigError as err:
            flags = [f"{key} is set by {flag}" for key, flag in FLAG_OF_KEY.items() if key in str(err)]
            flags += [f"--rl-override {o}" for o in args.rl_override if override_key(o) in str(err)]
            hint = f" ({'; '.join(flags)})" if flags else ""
            raise SystemExit(f"the {name} stage's config is invalid: {err}{hint}") from None
        except (HydraException, OmegaConfBaseException) as err:  # an unknown key, a malformed override
            raise SystemExit(f"the {name} stage's overrides do not compose: {err}") from None


def override_key(override: str) -> str:
    """The config key a Hydra override sets: "+a.b=1" -> "a.b"."""
    return override.split("=", 1)[0].lstrip("+~")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "cold_start_libero")
    p.add_argument("--suite", default="libero_object")
    p.add_argument("--tasks", default="0,1", help="task ids of the suite")
    p.add_argument("--demos-per-task", type=int, default=10,
                   help="training demos per task (the SFT strength knob; patch 28 + cosine SFT on the AMD EPYC: "
                        "8 -> held-out 0.175, 10 -> 0.175 / 0.50 / 0.60 / 0.75 / 0.375 at --seed 1-5, 12 -> 0.55; on the Intel Xeon, "
                        "10 -> 0.175 / 0.525 at --seed 8 / 9)")
    p.add_argument("--heldout", type=int, default=20, help="held-out init states per task (the last ones of 50)")
    p.add_argument("--sft-epochs", type=int, default=30)
    p.add_argument("--sft-steps", type=int, default=2000,
                   help="SFT optimizer steps (overrides --sft-epochs; 0 -> epochs). 12 demos/task, fp32, on a 2-core Intel "
                        "Xeon: 1500 -> 0.125 held-out success (GRPO did not lift it in 6 steps), 2000 -> 0.20 (GRPO: 0.50 at "
                        "step 14); on a 2-core AMD EPYC: 1200 -> 0.05, 1500 -> 0.35, 2000 -> 0.675 "
                        "(docs/benchmarks/cold_start_libero_cpu.json)")
    p.add_argument("--sft-lr", type=float, default=5e-4)
    p.add_argument("--sft-lr-schedule", choices=("constant", "cosine"), default="cosine",
                   help="SFT LR after the 20 warm-up steps: constant, or cosine decay to --sft-min-lr-ratio x --sft-lr at "
                        "the last step. On a 2-core AMD EPYC at --patch-size 28, constant ended on a spike: validation loss "
                        "2.21 at step 1800, 2.72 at 2000, held-out success 0/40")
    p.add_argument("--sft-min-lr-ratio", type=float, default=0.1, help="with --sft-lr-schedule cosine: the final LR / --sft-lr")
    p.add_argument("--sft-dtype", choices=("auto", "float32", "bfloat16"), default="float32",
                   help="SFT compute dtype (fp32 master weights either way). Same demos, init and seed on a 2-core "
                        "Intel Xeon with AMX: fp32 reached validation loss 2.25 and held-out 0.125 at step 1500, bf16 "
                        "2.57 and 0.05, at 1.9 against 1.5 s/step. auto: bfloat16 where the CPU has native bf16 "
                        "(AVX512-BF16 / AMX), else float32")
    p.add_argument("--attn-implementation", choices=("auto", "sdpa", "eager"), default="eager",
                   help="the decoder's attention in both stages. On these 2 cores eager trains the small model ~12%% faster "
                        "than SDPA (0.88 against 1.00 s per SFT step at --patch-size 28)")
    p.add_argument("--llm-layers", type=int, default=4, help="decoder layers of the small model (2 cannot separate the 56 action slots)")
    p.add_argument("--llm-hidden", type=int, default=128, help="decoder width of the small model")
    p.add_argument("--patch-size", type=int, default=28,
                   help="vision patch size of the small model (the real model's 14: 256 image tokens per image; 28: 64). "
                        "28 makes SFT ~2.7x faster (0.6 vs 1.6 s/step) and the whole script fit 89.7 min, but GRPO took "
                        "its held-out success 0.275 -> 0.10 while training-state success rose "
                        "(docs/benchmarks/cold_start_libero_cpu_patch28.json); 14 lifted 0.20 -> 0.50 in 162 min. With 10 demos, "
                        "cosine SFT and GRPO at T=0.7 (the defaults), 28 lifted 0.525 -> 0.85 in 77.5 min (seed 9)")
    p.add_argument("--qk-init-std", type=float, default=0.1, help="init std of the decoder's query/key projections (see tiny.py)")
    p.add_argument("--rl-steps", type=int, default=16,
                   help="GRPO steps; from the shipped policy, 4 x 8 episodes per step, task-balanced: held-out 0.35 -> "
                        "0.45 (step 5) -> 0.60 (10) -> 0.625 (14) (docs/benchmarks/cold_start_libero_cpu_grpo_task_balanced.json)")
    p.add_argument("--time-budget-min", type=float, default=90.0,
                   help="wall budget of the whole script (the issue's bar; 0: none): the GRPO stage ends validated and "
                        "saved when one more step would not fit in what the earlier stages left (trainer.time_limit_s, "
                        f"less {TIME_BUDGET_RESERVE_S:.0f} s); --rl-steps is then the most steps, and what the LR schedule "
                        "spans")
    p.add_argument("--rl-lr-schedule", choices=("constant", "cosine"), default="cosine",
                   help="GRPO LR after --rl-warmup-steps: constant, or cosine decay to --rl-min-lr-ratio x --rl-lr at "
                        "--rl-steps. At constant 5e-5 held-out success peaked near step 8 and fell back by step 24 "
                        "(docs/benchmarks/cold_start_libero_cpu_patch28_10demos.json); cosine over 16 steps, one seed: "
                        "0.60 -> 0.75 (step 4) -> 0.725 (12) -> 0.825 (16) (..._whole_seed3_rlcosine.json)")
    p.add_argument("--rl-min-lr-ratio", type=float, default=0.1, help="with --rl-lr-schedule cosine: the final LR / --rl-lr")
    p.add_argument("--rl-lr", type=float, default=5e-5,
                   help="measured: 2e-4 with one Adam step per RL step collapsed the policy in 3 steps; 2e-5 and 1e-4 "
                        "(4 mini-batches, warm-up) were stable but did not lift held-out success in 2 steps. From the "
                        "sharper cosine-SFT policy (held-out 0.55, --patch-size 28, T=0.7), 1e-4 collapsed it (ppo_kl "
                        "0.04-0.11 per step, 0/40 at step 7) and 3e-5 lifted it (ppo_kl <= 0.007; 0.725 at step 16; "
                        "docs/benchmarks/cold_start_libero_cpu_patch28_cosine.json)")
    p.add_argument("--rl-warmup-steps", type=int, default=2, help="RL steps of linear LR warm-up (Adam's first steps are sign steps)")
    p.add_argument("--rl-mini-batches", type=int, default=4,
                   help="optimizer steps per RL step (PPO mini-batches); with more than one, the clip acts")
    p.add_argument("--rl-override", action="append", default=[], metavar="KEY=VALUE",
                   help="extra Hydra override for the RL stage (repeatable; last wins), e.g. algorithm.adv_estimator=gae")
    p.add_argument("--rl-ppo-epochs", type=int, default=2, help="passes over each step's episodes (more policy change per env step; 2 lifted held-out 0.35 -> 0.60 in 10 steps)")
    p.add_argument("--rl-temperature", type=float, default=0.7, help="1.6 is the reference's for a 7B policy; far too random for a tiny one. From one patch-28 SFT policy (seed 8, Intel Xeon), greedy held-out went 0.175 -> 0.025 (step 12) -> 0.10 (16) at 0.5, and 0.175 -> 0.35 (12) -> 0.125 (18) at 0.25 (docs/benchmarks/cold_start_libero_cpu_grpo_t025_from_seed8_sft.json)")
    p.add_argument("--prompts-per-step", type=int, default=8,
                   help="init states per GRPO step, each rolled out --n-samples times (8 x 8 = 64 episodes); with "
                        "--task-balanced every step holds both tasks")
    p.add_argument("--task-balanced", action=argparse.BooleanOptionalAction, default=True,
                   help="data.task_balanced: every GRPO step draws an equal share of each task's init states. Uniform "
                        "shuffling of 2 tasks x 4 prompts gave whole steps of one task, and the other task collapsed "
                        "(0.35 -> 0.125 at step 4); balanced, from the same policy: 0.35 -> 0.625 in 14 steps. "
                        "--no-task-balanced for the curriculum (data.curriculum.enable=True)")
    p.add_argument("--env-cached-tasks", type=int, default=2,
                   help="env.libero_cached_tasks: built simulators per env slot (one per task, so a task switch is a "
                        "0.3 s reset instead of a ~4 s rebuild; ~0.75 GiB host memory per extra env)")
    p.add_argument("--save-freq", type=int, default=2,
                   help="RL checkpoint every N steps, so an interrupted RL stage resumes where it stopped (-1: none)")
    p.add_argument("--max-sample-rounds", type=int, default=1, help="rollout rounds per step to fill the batch with mixed groups")
    p.add_argument("--n-samples", type=int, default=8)
    p.add_argument("--test-freq", type=int, default=4)
    p.add_argument("--max-env-steps", type=int, default=220,
                   help="episode budget: the expert needs ~105 steps, and every held-out success of the SFT and RL "
                        "policies in 10 GRPO steps at a budget of 300 took <= 213")
    p.add_argument("--env-workers", type=int, default=2)
    p.add_argument("--envs-per-worker", type=int, default=4)
    p.add_argument("--raw-limit-episodes", type=int, default=8)
    p.add_argument("--skip-raw-limit", action="store_true")
    p.add_argument("--seed", type=int, default=1, help="trainer seed (data order, sampling)")
    p.add_argument("--init-seed", type=int, default=0, help="weight seed of the SFT starting point")
    p.add_argument("--from-sft", type=Path, default=None,
                   help="skip demos and SFT: start GRPO from this SFT checkpoint (a directory, or a .safetensors delta "
                        "written by scripts/tiny_checkpoint_delta.py)")
    p.add_argument("--quick", action="store_true",
                   help=f"the ~20-minute first run: GRPO from the shipped SFT policy ({SHIPPED_SFT.relative_to(ROOT)}) "
                        "on its weak task only: " + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items())
                        + " unless given; held-out evaluation every 2 steps; results under --run-dir only")
    p.add_argument("--out", type=Path, default=None,
                   help="result JSON (and a PNG beside it); default <run-dir>/result.json, so a run never overwrites the "
                        "committed docs/benchmarks/cold_start_libero_cpu.json (give that path to publish a run)")
    p.add_argument("--compare", type=Path, default=None, metavar="RESULT_JSON",
                   help="another run's result JSON from the same SFT checkpoint and held-out init states (checked), "
                        "e.g. GRPO's beside PPO's: its curve is drawn beside this one, and its step-0 evaluation "
                        "stands in for this run's when this run skipped it (greedy evaluation is deterministic)")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: write the JSON / PNG from what <run-dir> holds (e.g. an RL stage stopped early, "
                        "whose wall time was entered in stages.json by hand)")
    args = p.parse_args(argv)
    if args.quick:
        p.set_defaults(**QUICK, skip_raw_limit=True)  # flags given on the command line still win
        args = p.parse_args(argv)
        args.from_sft = args.from_sft or SHIPPED_SFT
    if args.out is None:
        args.out = args.run_dir / "result.json"
    if args.sft_dtype == "auto":
        args.sft_dtype = "bfloat16" if cpu_has_native_bf16() else "float32"
    if not args.time_budget_min >= 0:
        raise SystemExit(f"--time-budget-min={args.time_budget_min:g}: expected minutes >= 0 (0: no budget)")
    if args.time_budget_min == 0:
        args.time_budget_min = None
    sampled = [o for o in args.rl_override if override_key(o) == "actor_rollout_ref.rollout.val_temperature"]
    if sampled:
        raise SystemExit(f"--rl-override {sampled[0]}: this script's results are greedy held-out success (the bar, "
                         "and --compare's step 0); evaluate a checkpoint sampled with main_ppo trainer.val_only=True "
                         "and that override instead")
    if not 0 < args.heldout < NUM_INIT_STATES:
        raise SystemExit(f"--heldout={args.heldout}: expected 1..{NUM_INIT_STATES - 1}")
    if args.demos_per_task + 1 > NUM_INIT_STATES - args.heldout:
        raise SystemExit(f"--demos-per-task={args.demos_per_task} needs {args.demos_per_task + 1} training init "
                         f"states; only {NUM_INIT_STATES - args.heldout} are not held out")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = missing_packages()
    if missing and not args.report_only:
        raise SystemExit(f"{sys.executable} lacks {', '.join(missing)}: run this script with the virtualenv that "
                         "scripts/install.sh made (~/.venvs/verl/bin/python, or PYTHON=... for the examples/ script)")
    tasks = [int(t) for t in args.tasks.split(",")]
    train_states = NUM_INIT_STATES - args.heldout
    run = args.run_dir.resolve()
    if not args.report_only:
        check_stage_configs(args, run)
    run.mkdir(parents=True, exist_ok=True)
    stages = Stages(run)
    started = time.perf_counter()
    sft_dir, rl_dir = run / "sft", run / "rl"
    if args.report_only:
        sft_ckpt = Path(stages.done.get("rl", {}).get("command", ["", "", "", "=?"])[3].split("=", 1)[1])
    elif args.from_sft is None:
        commands = setup_commands(args, run)
        for name in ("collect_demos", "init_checkpoint", "sft"):
            stages.run(name, commands[name], run / f"{name}.log")
        sft_ckpt = latest_checkpoint(sft_dir)
        # the SFT policy as a small file (what the repository ships for the quick start)
        stages.run("pack_sft", [sys.executable, "scripts/tiny_checkpoint_delta.py", "pack", str(sft_ckpt),
                                "--init", json.dumps(init_kwargs(args)), "--out", str(run / "sft_policy.delta.safetensors")],
                   run / "pack_sft.log")
    elif args.from_sft.suffix == ".safetensors":
        sft_ckpt = run / "sft_checkpoint"
        stages.run("unpack_sft", [sys.executable, "scripts/tiny_checkpoint_delta.py", "unpack", str(args.from_sft),
                                  "--out", str(sft_ckpt)], run / "unpack_sft.log")
    else:
        sft_ckpt = args.from_sft
    if not args.report_only:
        stages.run("rl", rl_command(args, run, sft_ckpt), run / "rl.log", rl_time_limit(args, stages))
    pipeline_wall = sum(stage["wall_s"] for stage in stages.done.values())

    # 6. the raw env limit on this machine (after the experiment: it must not slow the stages)
    raw_file = run / "raw_env_limit.json"
    if not args.skip_raw_limit and not raw_file.is_file():
        log("measuring the raw env limit")
        raw_file.write_text(json.dumps(measure_raw_limit(args.suite, tasks, args.env_workers, args.envs_per_worker,
                                                         args.max_env_steps, args.raw_limit_episodes), indent=2))
    raw = json.loads(raw_file.read_text()) if raw_file.is_file() else None

    # report
    metrics = read_metrics(rl_dir)
    curve = []
    for step in sorted(metrics):
        row = metrics[step]
        if "val/test_score/all" not in row:
            continue
        prefix = f"val/test_score/{args.suite}/"  # per task: val/test_score/<suite>/<task_id>
        per_task = {f"task_{k[len(prefix):]}": v for k, v in row.items() if k.startswith(prefix)}
        curve.append({"step": step, "heldout_success": row["val/test_score/all"], "per_task": per_task,
                      "episodes": row.get("val/episodes")})
    algorithm = rl_algorithm(stages.done.get("rl", {}).get("command", []))
    sft_ran = stages.completed("sft")  # else the SFT stage's flags describe nothing this run used
    compare = None
    if args.compare is not None:
        other = json.loads(args.compare.read_text())
        missing = [k for k in ("sft_checkpoint", "heldout_init_states", "tasks", "suite", "curve") if k not in other]
        if missing:
            raise SystemExit(f"--compare {args.compare}: no {', '.join(missing)} (expected a result JSON this script wrote)")
        same = (Path(other["sft_checkpoint"]).resolve() == Path(sft_ckpt).resolve()
                and other["heldout_init_states"] == list(range(train_states, NUM_INIT_STATES))
                and other["tasks"] == tasks and other["suite"] == args.suite)
        if not same:
            raise SystemExit(f"--compare {args.compare}: not the same SFT checkpoint, suite, tasks and held-out init "
                             f"states as this run ({sft_ckpt})")
        other_rl = other.get("commands", {}).get("rl", [])
        compare = {"file": str(args.compare), "curve": other["curve"], "algorithm": rl_algorithm(other_rl),
                   "label": rl_label(other_rl)}
        if other["curve"] and other["curve"][0]["step"] == 0 and (not curve or curve[0]["step"] != 0):
            curve.insert(0, {**other["curve"][0], "source": f"{args.compare} (same SFT checkpoint and held-out "
                                                            "states; greedy evaluation is deterministic)"})
    train_rows = [metrics[s] for s in sorted(metrics) if "rollout/env_steps_per_s" in metrics[s]]
    rollout_rate = sum(r["rollout/env_steps_per_s"] for r in train_rows) / max(1, len(train_rows))
    sft_report = read_metrics(sft_dir) if (sft_dir / "metrics.jsonl").is_file() else {}
    last_sft = sft_report[max(sft_report)] if sft_report else {}
    expert = json.loads((run / "expert_report.json").read_text()) if (run / "expert_report.json").is_file() else None
    # the SFT score is the step-0 validation (of the SFT checkpoint itself); never a later step's
    before = curve[0] if curve and curve[0]["step"] == 0 else None
    if curve and before is None:
        log(f"the RL run has no step-0 validation (trainer.val_before_train=False): no SFT score is reported; "
            f"give --compare with a result JSON that has one, or run main_ppo with trainer.val_only=True on {sft_ckpt}")
    train_prefix = f"train_verify_score/{args.suite}/"
    result = {
        "suite": args.suite, "tasks": tasks, "demos_per_task": args.demos_per_task if sft_ran else None,
        "heldout_init_states": list(range(train_states, NUM_INIT_STATES)),
        "heldout_episodes": int(curve[-1]["episodes"]) if curve else 0,
        "sft_heldout_success": before["heldout_success"] if before else None,
        "rl_heldout_success": curve[-1]["heldout_success"] if curve and curve[-1]["step"] > 0 else None,
        "sft_heldout_per_task": before["per_task"] if before else None,
        "rl_heldout_per_task": curve[-1]["per_task"] if curve and curve[-1]["step"] > 0 else None,
        "curve": curve,
        "wall_s": pipeline_wall,
        "stage_wall_s": {name: stage["wall_s"] for name, stage in stages.done.items()},
        "sft_final": {k: v for k, v in last_sft.items() if k.startswith(("sft/", "val/"))},
        "rl_train_success_per_step": [metrics[s].get("train_verify_score/all") for s in sorted(metrics) if s > 0],
        "rl_train_success_per_task_per_step": [
            {f"task_{k[len(train_prefix):]}": v for k, v in metrics[s].items() if k.startswith(train_prefix)}
            for s in sorted(metrics) if s > 0],
        "rl_steps_completed": max([s for s in metrics if "train_verify_score/all" in metrics[s]], default=0),
        "rl_stage_note": stages.done.get("rl", {}).get("note"),
        "rl_stopped_by_time_limit": any(m.get("trainer/stopped_by_time_limit") == 1.0 for m in metrics.values()),
        "rollout_env_steps_per_s_mean": rollout_rate,
        "raw_env_limit": raw,
        "rollout_vs_raw_limit": (rollout_rate / raw[f"{args.env_workers}_processes_all_cores"]["env_steps_per_s"]) if raw else None,
        "expert": expert,
        "algorithm": algorithm,
        "compared_with": None if compare is None else {"file": compare["file"], "algorithm": compare["algorithm"],
                                                      "label": compare["label"],
                                                      "curve": [{k: p[k] for k in ("step", "heldout_success", "per_task")}
                                                                for p in compare["curve"]]},
        "sft_checkpoint": str(sft_ckpt),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                     if sft_ran or k not in SFT_STAGE_SETTINGS},
        "commands": {name: stage["command"] for name, stage in stages.done.items()},
    }
    result["bar"] = check_bar(result["sft_heldout_success"], result["rl_heldout_success"], result["heldout_episodes"],
                              pipeline_wall, sft_ran, whole_script_ran_once(stages.done))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    if curve:
        plot(curve, tasks, args.suite, args.out.with_suffix(".png"), result["sft_heldout_success"], result["heldout_episodes"],
             rl_label(stages.done.get("rl", {}).get("command", [])), compare)
    log(f"held-out success: SFT {result['sft_heldout_success']} -> RL {result['rl_heldout_success']} "
        f"({result['heldout_episodes']} episodes); stages {pipeline_wall / 60:.1f} min; wrote {args.out}")
    bar = result["bar"]
    log("bar: " + ", ".join(f"{k.removesuffix('_met')} {'met' if bar[k] else 'NOT met'}"
                            for k in ("sft_in_band", "lift_met", "episodes_met", "wall_met")))
    log(f"script wall (this invocation): {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    exit_on_sigterm()  # `kill <pid>` stops the running stage too (Stages.run)
    sys.exit(main())
