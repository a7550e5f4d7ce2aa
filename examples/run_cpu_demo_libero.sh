#!/usr/bin/env bash
# CPU demo: the full SimpleVLA-RL loop on real LIBERO with a tiny OpenVLA-OFT (same architecture,
# random weights), 2 CPU workers, short episodes. It shows every stage working end to end
# (rollout, scoring, GRPO update, validation, checkpoint), not learning: an untrained tiny policy
# never succeeds at LIBERO, so dynamic sampling is off here (it would drop every group).
# Usage: bash examples/run_cpu_demo_libero.sh [extra Hydra overrides]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${OUT:-$ROOT/runs/cpu_demo_libero}
VENV_PYTHON=${VERL_VENV:-$HOME/.venvs/verl}/bin/python  # what scripts/install.sh made
PYTHON=${PYTHON:-$([ -x "$VENV_PYTHON" ] && echo "$VENV_PYTHON" || echo python)}
export MUJOCO_GL=${MUJOCO_GL:-egl}

CKPT=$OUT/tiny_openvla_oft
if [ ! -f "$CKPT/config.json" ]; then
    "$PYTHON" "$ROOT/scripts/make_tiny_checkpoint.py" --out "$CKPT"
fi

"$PYTHON" -u -m verl.trainer.main_ppo \
    data.task_suite_name=libero_spatial \
    data.num_trials_per_task=2 \
    data.n_samples=2 \
    data.filter_accuracy=False \
    data.train_batch_size=2 \
    data.val_batch_size=4 \
    actor_rollout_ref.model.path="$CKPT" \
    actor_rollout_ref.actor.ppo_mini_batch_size=4 \
    actor_rollout_ref.actor.ppo_micro_batch_size=2 \
    actor_rollout_ref.actor.traj_mini_batch_size=4 \
    actor_rollout_ref.rollout.task_suite_name=libero_spatial \
    actor_rollout_ref.rollout.unnorm_key=libero_spatial \
    actor_rollout_ref.rollout.max_env_steps=24 \
    actor_rollout_ref.rollout.num_steps_wait=2 \
    env.num_workers=1 \
    env.envs_per_worker=2 \
    trainer.device=cpu \
    trainer.n_gpus_per_node=2 \
    trainer.total_epochs=1 \
    trainer.total_training_steps=2 \
    trainer.test_freq=2 \
    trainer.save_freq=2 \
    trainer.logger="['console','tensorboard']" \
    trainer.wandb_mode=offline \
    trainer.project_name=cpu_demo \
    trainer.experiment_name=libero_spatial_tiny \
    trainer.default_local_dir="$OUT/run" \
    trainer.resume_mode=auto \
    "$@"
