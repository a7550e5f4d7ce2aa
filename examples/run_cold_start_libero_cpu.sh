#!/usr/bin/env bash
# The cold-start path on real LIBERO, on a CPU: scripted demos on training init states -> SFT of a
# small model of the exact OpenVLA-OFT architecture -> greedy evaluation on held-out init states ->
# GRPO -> greedy evaluation on the same held-out states. Writes $OUT/result.json and .png
# (held-out success vs GRPO step); --out docs/benchmarks/cold_start_libero_cpu.json publishes a run.
# Each stage is a command you can run yourself (see scripts/cold_start_libero.py, or the
# "commands" field of the JSON); an interrupted run continues where it stopped.
# Usage: bash examples/run_cold_start_libero_cpu.sh [--demos-per-task N] [--rl-steps N] [...]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV_PYTHON=${VERL_VENV:-$HOME/.venvs/verl}/bin/python  # what scripts/install.sh made
PYTHON=${PYTHON:-$([ -x "$VENV_PYTHON" ] && echo "$VENV_PYTHON" || echo python)}
export MUJOCO_GL=${MUJOCO_GL:-egl} PYTHONUNBUFFERED=1 WANDB_MODE=${WANDB_MODE:-offline}
OUT=${OUT:-$ROOT/runs/cold_start_libero}
"$PYTHON" "$ROOT/scripts/cold_start_libero.py" --run-dir "$OUT" "$@"
