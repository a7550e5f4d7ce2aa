#!/usr/bin/env bash
# The variables every RL launch script reads, checked before anything starts. Sourced, not run;
# the caller sets DEFAULT_PROJECT_NAME (its W&B project) and MODEL_KIND (what SFT_MODEL_PATH holds).
#   EXPERIMENT_NAME  run name            SFT_MODEL_PATH  the starting checkpoint directory
#   CKPT_PATH        checkpoint root     NUM_GPUS        GPUs per node (8)
#   NUM_NODES        nodes (1)           ALIGN_PATH      align.json (Ray runtime env: WANDB_API_KEY, MUJOCO_GL, ...)
#   PROJECT_NAME     W&B project (the caller's default)
PROJECT_NAME=${PROJECT_NAME:-$DEFAULT_PROJECT_NAME}
EXPERIMENT_NAME=${EXPERIMENT_NAME:?export EXPERIMENT_NAME (the run name)}
SFT_MODEL_PATH=${SFT_MODEL_PATH:?export SFT_MODEL_PATH (the $MODEL_KIND checkpoint directory)}
CKPT_PATH=${CKPT_PATH:?export CKPT_PATH (where checkpoints go)}
NUM_GPUS=${NUM_GPUS:-8}
NUM_NODES=${NUM_NODES:-1}
ALIGN_PATH=${ALIGN_PATH:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/align.json}
export MUJOCO_GL=${MUJOCO_GL:-egl}
