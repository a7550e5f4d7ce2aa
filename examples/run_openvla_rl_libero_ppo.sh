#!/usr/bin/env bash
# VLA-RL's recipe on LIBERO (arXiv 2505.18719) with our keys: plain OpenVLA-7B + LoRA rank 32, PPO with
# a learned critic (the policy's backbone + a value head), GAE over model calls (gamma 0.99, lambda
# 0.95), PPO clip 0.2, value clip 0.2, critic warm-up 5 steps, curriculum task selection, T=1.5.
# Export before running (the same variables as run_openvla_oft_rl_libero.sh):
#   EXPERIMENT_NAME  run name            SFT_MODEL_PATH  OpenVLA checkpoint (e.g. a LIBERO-finetuned openvla-7b)
#   CKPT_PATH        checkpoint root     DATASET_NAME    libero_spatial (VLA-RL's ablation suite) | libero_object | ...
#   NUM_GPUS         GPUs per node (8)   NUM_NODES       nodes (1)
#   ALIGN_PATH       align.json (Ray runtime env: WANDB_API_KEY, MUJOCO_GL, ...)
# Reward 1 on success (VLA-RL's scale, which its value clip of 0.2 assumes; SimpleVLA-RL uses 5).
# Values the issue does not fix are ours: 64 episodes per step (one per prompt: PPO needs no group),
# two actor / critic mini-batches per step, critic backbone from the same checkpoint with its own LoRA.
# Any Hydra override can be appended, e.g. data.curriculum.enable=False (VLA-RL's "without curriculum").
set -euo pipefail
DEFAULT_PROJECT_NAME=VLA-RL
MODEL_KIND=OpenVLA
source "$(dirname "${BASH_SOURCE[0]}")/launch_variables.sh"
DATASET_NAME=${DATASET_NAME:-libero_spatial}

python -u -m verl.trainer.main_ppo \
    data.task_suite_name=$DATASET_NAME \
    data.num_trials_per_task=50 \
    data.n_samples=1 \
    data.filter_accuracy=False \
    data.train_batch_size=64 \
    data.val_batch_size=496 \
    data.curriculum.enable=True \
    actor_rollout_ref.model.path=$SFT_MODEL_PATH \
    actor_rollout_ref.model.vla=openvla \
    actor_rollout_ref.model.action_token_len=7 \
    actor_rollout_ref.model.action_chunks_len=1 \
    actor_rollout_ref.model.lora_rank=32 \
    actor_rollout_ref.model.enable_gradient_checkpointing=True \
    actor_rollout_ref.actor.optim.lr=5e-6 \
    actor_rollout_ref.actor.ppo_mini_batch_size=32 \
    actor_rollout_ref.actor.ppo_micro_batch_size=$NUM_GPUS \
    actor_rollout_ref.actor.clip_ratio_low=0.2 \
    actor_rollout_ref.actor.clip_ratio_high=0.2 \
    actor_rollout_ref.actor.loss_agg_mode=token-mean \
    actor_rollout_ref.actor.traj_mini_batch_size=64 \
    actor_rollout_ref.actor.fsdp_config.optimizer_offload=True \
    actor_rollout_ref.rollout.temperature=1.5 \
    actor_rollout_ref.rollout.unnorm_key=$DATASET_NAME \
    actor_rollout_ref.rollout.task_suite_name=$DATASET_NAME \
    actor_rollout_ref.rollout.log_prob_micro_batch_size=64 \
    algorithm.adv_estimator=gae \
    algorithm.gamma=0.99 \
    algorithm.lam=0.95 \
    verifier.reward_coef=1 \
    critic.model.lora_rank=32 \
    critic.model.enable_gradient_checkpointing=True \
    critic.optim.lr=5e-5 \
    critic.cliprange_value=0.2 \
    critic.warmup_steps=5 \
    critic.fsdp_config.optimizer_offload=True \
    trainer.logger="['console','wandb']" \
    trainer.project_name=$PROJECT_NAME \
    trainer.experiment_name=$EXPERIMENT_NAME \
    trainer.default_local_dir=$CKPT_PATH/$PROJECT_NAME/$EXPERIMENT_NAME \
    trainer.n_gpus_per_node=$NUM_GPUS \
    trainer.nnodes=$NUM_NODES \
    trainer.save_freq=25 \
    trainer.test_freq=4 \
    trainer.total_epochs=100 \
    trainer.val_before_train=True \
    trainer.runtime_env=$ALIGN_PATH \
    trainer.wandb_mode=online \
    "$@"
