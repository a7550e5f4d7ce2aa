#!/usr/bin/env bash
# GPU smoke test: one prepared run of the exact GPU configuration on ONE CUDA GPU, timed.
#
#   bash scripts/gpu_smoke.sh [--out DIR] [--steps N] [--task libero|reach] [extra Hydra overrides]
#   bash scripts/gpu_smoke.sh --cpu-dry-run [--out DIR]     # no GPU: the same path with a tiny model
#
# What it runs: a random ~1.09 B-parameter model of the exact OpenVLA-OFT architecture
# (scripts/make_tiny_checkpoint.py --vision-width 1024 --vision-depth 12 --llm-hidden 2048
# --llm-layers 12: both towers, projector, Llama decoder, 32064-row vocabulary, 56-token parallel
# decoding) through `python -m verl.trainer.main_ppo` with model.dtype=bfloat16 (FSDP2
# MixedPrecisionPolicy bf16 compute, fp32 master weights and gradient reduction) and
# attn_implementation=auto (flash-attention 2 when installed, else SDPA): rollouts on LIBERO
# (libero_spatial; the built-in `reach` task when LIBERO is not installed, said on the console and
# in the JSON), old log-probs, GRPO update, for --steps steps (default 2: the first includes
# warm-up), then the final checkpoint main_ppo always writes.
# It writes DIR/gpu_smoke.json: wall time, per-step timing/* and perf/* metrics (peak allocated
# and reserved GPU memory), the GPU, the attention implementation used, and scripts/memory_plan.py's
# prediction for the same settings (so one run also checks the memory model on a real GPU).
# Budget: under 10 minutes on one H100-class GPU (checkpoint creation ~1 min, Ray + env start
# ~1 min, 2 steps of 8 episodes x 64 env steps, a ~13 GB final checkpoint); main_ppo is killed at
# 540 s. --cpu-dry-run: tiny model, reach, trainer.device=cpu, the same bf16 mixed-precision policy
# on gloo; proves the script end to end except for CUDA (tests/scripts/test_gpu_smoke.py runs it).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python}
export MUJOCO_GL=${MUJOCO_GL:-egl}

DRY_RUN=0
OUT=""
STEPS=2
TASK=""
EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu-dry-run) DRY_RUN=1; shift ;;
        --out) [ $# -ge 2 ] || { echo "gpu_smoke.sh: --out needs a directory" >&2; exit 2; }; OUT=$2; shift 2 ;;
        --steps) [ $# -ge 2 ] || { echo "gpu_smoke.sh: --steps needs a positive integer" >&2; exit 2; }
                 [[ "$2" =~ ^[1-9][0-9]*$ ]] || { echo "gpu_smoke.sh: --steps: expected a positive integer, got '$2'" >&2; exit 2; }
                 STEPS=$2; shift 2 ;;
        --task) [ $# -ge 2 ] || { echo "gpu_smoke.sh: --task needs libero or reach" >&2; exit 2; }
                [[ "$2" == libero || "$2" == reach ]] || { echo "gpu_smoke.sh: --task: expected libero or reach, got '$2'" >&2; exit 2; }
                TASK=$2; shift 2 ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        --*) echo "gpu_smoke.sh: unknown flag $1 (expected --cpu-dry-run, --out DIR, --steps N, --task libero|reach, or Hydra overrides key=value)" >&2; exit 2 ;;
        *=*) EXTRA+=("$1"); shift ;;
        *) echo "gpu_smoke.sh: unexpected argument '$1' (Hydra overrides look like key=value)" >&2; exit 2 ;;
    esac
done

if [ "$DRY_RUN" = 1 ]; then
    MODE=cpu_dry_run
    OUT=${OUT:-$ROOT/runs/gpu_smoke_cpu_dry_run}
    SIZE=()  # the tiny default sizes
    TASK=${TASK:-reach}
    DEVICE=(trainer.device=cpu actor_rollout_ref.model.dtype=bfloat16 trainer.ray_num_cpus=3)
else
    MODE=gpu
    OUT=${OUT:-$ROOT/runs/gpu_smoke}
    if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        echo "gpu_smoke.sh: no CUDA GPU visible to torch; run with --cpu-dry-run to check the script without one" >&2
        exit 3
    fi
    SIZE=(--vision-width 1024 --vision-depth 12 --llm-hidden 2048 --llm-layers 12 --qk-init-std 0.1)
    DEVICE=(trainer.device=cuda actor_rollout_ref.model.dtype=bfloat16)
fi
mkdir -p "$OUT"

FALLBACK_NOTE=""
if [ -z "$TASK" ]; then
    if "$PYTHON" -c "import libero.libero" 2>/dev/null; then
        TASK=libero
    else
        TASK=reach
        FALLBACK_NOTE="LIBERO is not installed: ran the built-in reach task instead"
        echo "gpu_smoke.sh: $FALLBACK_NOTE" >&2
    fi
fi
if [ "$TASK" = libero ]; then
    SUITE=libero_spatial
    TASK_ARGS=(data.task_suite_name=$SUITE actor_rollout_ref.rollout.task_suite_name=$SUITE
               actor_rollout_ref.rollout.unnorm_key=$SUITE actor_rollout_ref.rollout.max_env_steps=64
               actor_rollout_ref.rollout.num_steps_wait=10 env.num_workers=2 env.envs_per_worker=4)
else
    SUITE=reach
    TASK_ARGS=(data.task_suite_name=reach actor_rollout_ref.rollout.task_suite_name=reach
               actor_rollout_ref.rollout.unnorm_key=reach env.num_workers=1 env.envs_per_worker=4)
fi

CKPT=$OUT/model
if [ ! -f "$CKPT/config.json" ]; then
    START=$SECONDS
    "$PYTHON" "$ROOT/scripts/make_tiny_checkpoint.py" --out "$CKPT" "${SIZE[@]}"
    CKPT_S=$((SECONDS - START))
else
    CKPT_S=0
fi

RUN=$OUT/run
rm -rf "$RUN"
START=$SECONDS
set +e
timeout 540 "$PYTHON" -u -m verl.trainer.main_ppo \
    actor_rollout_ref.model.path="$CKPT" \
    actor_rollout_ref.model.attn_implementation=auto \
    "${TASK_ARGS[@]}" \
    "${DEVICE[@]}" \
    data.num_trials_per_task=2 \
    data.n_samples=4 \
    data.train_batch_size=2 \
    data.val_batch_size=8 \
    data.filter_accuracy=False \
    actor_rollout_ref.actor.ppo_mini_batch_size=8 \
    actor_rollout_ref.actor.ppo_micro_batch_size=1 \
    actor_rollout_ref.actor.traj_mini_batch_size=16 \
    actor_rollout_ref.actor.fsdp_config.optimizer_offload=True \
    actor_rollout_ref.rollout.log_prob_micro_batch_size=32 \
    trainer.n_gpus_per_node=1 \
    trainer.nnodes=1 \
    trainer.total_epochs=100 \
    trainer.total_training_steps=$STEPS \
    trainer.val_before_train=False \
    trainer.test_freq=-1 \
    trainer.save_freq=-1 \
    trainer.logger="['console']" \
    trainer.project_name=gpu_smoke \
    trainer.experiment_name=$MODE \
    trainer.default_local_dir="$RUN" \
    trainer.resume_mode=disable \
    "${EXTRA[@]}" 2>&1 | tee "$OUT/main_ppo.log"
RC=${PIPESTATUS[0]}
set -e
WALL_S=$((SECONDS - START))

VERL_ROOT=$ROOT "$PYTHON" - "$OUT" "$RUN" "$MODE" "$TASK" "$SUITE" "$RC" "$WALL_S" "$CKPT_S" "$STEPS" "$FALLBACK_NOTE" "$CKPT" <<'EOF'
"""Collect the run's timings and memory into gpu_smoke.json, with memory_plan's prediction."""
import importlib.util
import json
import os
import platform
import sys
from pathlib import Path

import torch

out, run, mode, task, suite, rc, wall, ckpt_s, steps, note, ckpt = sys.argv[1:]
flash = importlib.util.find_spec("flash_attn") is not None

rows = []
metrics_file = Path(run) / "metrics.jsonl"
if metrics_file.is_file():
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
keep = ("timing/", "perf/", "rollout/env_steps", "rollout/forwards", "rollout/model_time_s", "rollout/wall_time_s",
        "actor/grad_norm", "actor/pg_loss", "train_verify_score/all")
steps_out = [{k: v for k, v in r.items() if k == "step" or k.startswith(keep)} for r in rows]
log = (Path(out) / "main_ppo.log").read_text(errors="replace") if (Path(out) / "main_ppo.log").is_file() else ""
report = {
    "mode": mode, "task": task, "suite": suite, "main_ppo_exit_code": int(rc), "passed": int(rc) == 0 and len(rows) == int(steps),
    "main_ppo_wall_s": float(wall), "checkpoint_creation_s": float(ckpt_s), "steps_requested": int(steps),
    "note": note or None, "steps": steps_out,
    "torch": torch.__version__, "python": platform.python_version(),
    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    "flash_attn_installed": flash,
    # attn_implementation=auto resolves as verl.models.openvla_oft.language_model.resolve_attn_implementation
    "attn_implementation": "flash_attention_2" if mode == "gpu" and torch.cuda.is_available() and flash else "sdpa",
}
if rows:
    peaks = [r.get("perf/max_memory_allocated_gb") for r in rows if r.get("perf/max_memory_allocated_gb") is not None]
    report["peak_memory_allocated_gb"] = max(peaks) if peaks else None
    report["peak_cpu_rss_gb"] = max((r.get("perf/cpu_rss_gb", 0.0) for r in rows), default=None)
try:
    repo = Path(os.environ["VERL_ROOT"])
    spec = importlib.util.spec_from_file_location("memory_plan", repo / "scripts" / "memory_plan.py")
    mp = importlib.util.module_from_spec(spec); sys.modules["memory_plan"] = mp; spec.loader.exec_module(mp)
    settings = mp.RunSettings(gpus=1, dtype="bfloat16",
                              device="cuda" if mode == "gpu" else "cpu", optimizer_offload=mode == "gpu",
                              rollout_rows=8 if task == "libero" else 4, log_prob_micro_batch_size=32,
                              traj_mini_batch_size=16, episodes_per_gpu=8,
                              max_env_steps=64 if task == "libero" else 24)
    plan = mp.plan(ckpt, settings)
    report["memory_plan"] = {"phases_gb": plan["phases_gb"], "peak_gb": plan["peak_gb"], "params_B": plan["params_B"]}
    if report.get("peak_memory_allocated_gb"):
        report["memory_plan"]["measured_over_predicted"] = report["peak_memory_allocated_gb"] / plan["peak_gb"]
except Exception as err:  # the smoke result matters more than the comparison
    report["memory_plan_error"] = repr(err)
path = Path(out) / "gpu_smoke.json"
path.write_text(json.dumps(report, indent=2) + "\n")
print(json.dumps({k: v for k, v in report.items() if k != "steps"}, indent=2))
print(f"wrote {path}")
EOF
exit "$RC"
