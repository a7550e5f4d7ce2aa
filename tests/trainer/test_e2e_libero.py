"""main_ppo end to end on real LIBERO (tiny OpenVLA-OFT, 2 CPU workers, short episodes):
two training steps, validation and a checkpoint, then a resumed third step.

One task, two init states: each env slot builds its simulator once. Building one costs ~5 s, and
with all 10 libero_spatial tasks the run spent most of its time building them (232 s, now ~100 s).
Each step is now a whole epoch, so the resume starts at an epoch boundary; resuming mid-epoch is
tested on reach (tests/trainer/test_e2e_reach.py), task switching in tests/envs/test_libero_env.py."""

import pytest

from e2e_utils import read_metrics, run_main
from verl.models.openvla_oft import load_openvla_checkpoint
from verl.models.openvla_oft.tiny import make_tiny_checkpoint

REFERENCE_METRICS = [
    "val/test_score/libero_spatial", "val/test_score/all", "train_verify_score/all", "train_reward/verifier",
    "actor/pg_loss", "actor/pg_clipfrac", "actor/ppo_kl", "actor/grad_norm", "actor/lr",
    "actor_after/entropy_loss_eval",
    *[f"critic/{name}/{stat}" for name in ("score", "rewards", "advantages", "returns") for stat in ("mean", "max", "min")],
    *[f"timing/{name}" for name in ("gen", "verify", "adv", "update_actor", "testing")],
]


def libero_overrides(ckpt, run_dir, *extra):
    return [
        f"actor_rollout_ref.model.path={ckpt}", "data.task_suite_name=libero_spatial",
        "actor_rollout_ref.rollout.task_suite_name=libero_spatial", "actor_rollout_ref.rollout.unnorm_key=libero_spatial",
        "data.task_ids=[0]", "data.num_trials_per_task=2", "data.n_samples=2", "data.filter_accuracy=False",
        "data.train_batch_size=2", "data.val_batch_size=2",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4", "actor_rollout_ref.actor.ppo_micro_batch_size=2",
        "actor_rollout_ref.actor.traj_mini_batch_size=2",
        "actor_rollout_ref.rollout.max_env_steps=16", "actor_rollout_ref.rollout.num_steps_wait=2",
        "env.num_workers=1", "env.envs_per_worker=2", "trainer.device=cpu", "trainer.n_gpus_per_node=2",
        "trainer.ray_num_cpus=3", "trainer.val_before_train=False", "trainer.test_freq=2", "trainer.save_freq=2",
        "trainer.logger=[console,file]", f"trainer.default_local_dir={run_dir}", *extra,
    ]


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_libero_train_validate_checkpoint_resume(tmp_path, dtype):
    """fp32 (the CPU default) and bf16: the GPU's mixed-precision policy (bf16 gathers and compute,
    fp32 master weights and gradient reduction) running on CPU."""
    ckpt = make_tiny_checkpoint(tmp_path / "tiny", seed=0)
    run_dir = tmp_path / "run"
    dtype_key = f"actor_rollout_ref.model.dtype={dtype}"
    proc = run_main(libero_overrides(ckpt, run_dir, "trainer.total_training_steps=2", dtype_key), timeout=1500)
    metrics = read_metrics(run_dir)
    assert sorted(metrics) == [1, 2]
    missing = [m for m in REFERENCE_METRICS if m not in metrics[2]]
    assert not missing, missing
    assert "─── step 2" in proc.stdout  # the console table
    assert metrics[2]["rollout/faulted_episodes"] == 0
    assert 1 <= metrics[1]["rollout/finish_step_mean"] <= 16
    # the update's recompute of the rollout's log-probs: same weights, same dtype, so equal up to the
    # kernels' batch-shape dependence (bf16 vs fp32 differ by <= 0.25, tests/workers/test_mixed_precision.py)
    for step in (1, 2):
        assert metrics[step]["rollout/old_vs_rollout_logprob_abs_diff"] <= 0.02
        assert metrics[step]["rollout/old_vs_rollout_logprob_abs_diff_max"] <= 0.25

    step_dir = run_dir / "actor" / "global_step_2"
    assert (step_dir / "dataset_statistics.json").is_file() and (step_dir / "tokenizer.json").is_file()
    model = load_openvla_checkpoint(step_dir)  # evaluable alone
    assert model.num_action_tokens == 56

    run_main(libero_overrides(ckpt, run_dir, "trainer.total_training_steps=3", "trainer.resume_mode=auto", dtype_key),
             timeout=1500)
    resumed = read_metrics(run_dir)
    assert sorted(resumed) == [1, 2, 3]  # continued at step 3, did not redo steps 1-2
    assert (run_dir / "actor" / "global_step_3").is_dir()
    assert "val/test_score/all" in resumed[3]
