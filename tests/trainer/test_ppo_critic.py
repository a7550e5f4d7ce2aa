"""VLA-RL's algorithms end to end on the reach task (2 CPU workers, the critic colocated on the
actor's bundles): critic warm-up, exact resume with a critic and the curriculum sampler, the
curriculum moving towards the unsolved target, task-balanced batches, and PPO + critic learning."""

import json
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from e2e_utils import deterministic, reach_overrides, read_metrics, run_main, run_until
from verl.models.openvla_oft.tiny import make_tiny_checkpoint

# VLA-RL's reward scale (1 on success) goes with its value clip of 0.2; returns of 5 would take 25 steps to fit
PPO = ("algorithm.adv_estimator=gae", "algorithm.gamma=0.99", "algorithm.lam=0.95", "critic.optim.lr=1e-3",
       "verifier.reward_coef=1")


@pytest.fixture(scope="module")
def random_policy(tmp_path_factory):
    """A random tiny policy: on reach its (nearly uniform) actions random-walk, so a near target is
    often reached by chance and a far one rarely: two tasks of different difficulty, no SFT needed."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("reach_random") / "tiny", seed=0)


def actor_weights(directory: Path) -> dict[str, torch.Tensor]:
    return {k: v for f in sorted(Path(directory).glob("model-*.safetensors")) for k, v in load_file(str(f)).items()}


def critic_weights(step_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(step_dir / "critic" / "model.safetensors"))


def two_target_overrides(ckpt: Path, run_dir: Path, *extra: str) -> list[str]:
    """Target 0 near the start (easy), target 1 far (hard); one 8-step chunk per episode."""
    return reach_overrides(ckpt, run_dir, "env.reach.num_targets=2", "env.reach.target_distance=[0.3,0.75]",
                           "env.reach.max_episode_steps=8", "env.reach.step_size=0.25", "data.num_trials_per_task=8",
                           *extra)


@pytest.mark.slow
def test_critic_warmup_trains_only_the_critic(random_policy, tmp_path):
    run_dir = tmp_path / "run"
    run_main(two_target_overrides(
        random_policy, run_dir, *PPO, "critic.warmup_steps=3", "critic.ppo_epochs=4",
        "data.train_batch_size=4", "data.filter_accuracy=False", "actor_rollout_ref.actor.ppo_mini_batch_size=8",
        "trainer.total_training_steps=4", "trainer.save_freq=1", "trainer.test_freq=-1",
        "trainer.val_before_train=False"))
    metrics = read_metrics(run_dir)
    ckpts = run_dir / "actor"
    initial = actor_weights(random_policy)
    for step in (1, 2, 3):  # warm-up: the actor is not touched, bit for bit
        assert metrics[step]["actor/critic_warmup"] == 1.0 and "actor/pg_loss" not in metrics[step]
        saved = actor_weights(ckpts / f"global_step_{step}")
        assert saved.keys() == initial.keys()
        assert all(torch.equal(saved[k], initial[k]) for k in initial), f"actor changed during warm-up step {step}"
    assert "actor/pg_loss" in metrics[4] and "actor/critic_warmup" not in metrics[4]
    after = actor_weights(ckpts / "global_step_4")
    assert any(not torch.equal(after[k], initial[k]) for k in initial)
    # the critic learns: same policy, same data distribution, lower value loss each warm-up step
    losses = [metrics[step]["critic/vf_loss"] for step in (1, 2, 3)]
    print("critic/vf_loss during warm-up:", losses)
    assert losses[2] < losses[0]
    assert metrics[3]["critic/values/mean"] > 0.05  # V starts at 0; the batches' success rate is well above it
    c1, c2 = critic_weights(ckpts / "global_step_1"), critic_weights(ckpts / "global_step_2")
    assert any(not torch.equal(c1[k], c2[k]) for k in c1)
    for key in ("critic/vf_loss", "critic/vf_clipfrac", "critic/vpred_mean", "critic/vf_explained_var",
                "critic/values/mean", "critic/values/max", "critic/values/min", "critic/advantages/mean",
                "critic/returns/mean"):
        assert key in metrics[4], key


@pytest.mark.slow
def test_exact_resume_with_critic_and_curriculum(random_policy, tmp_path):
    """3 steps straight == 2 steps, SIGKILL, resume: same step-3 metrics, actor and critic weights."""
    common = (*PPO, "data.curriculum.enable=True", "data.curriculum.temperature=0.2", "critic.warmup_steps=1",
              "trainer.total_training_steps=3", "trainer.save_freq=2", "trainer.test_freq=3",
              "trainer.val_before_train=False", "actor_rollout_ref.actor.optim.lr_warmup_steps=3",
              "critic.optim.lr_warmup_steps=3")
    straight_dir, killed_dir = tmp_path / "straight", tmp_path / "killed"
    run_main(two_target_overrides(random_policy, straight_dir, *common))
    latest = killed_dir / "actor" / "latest_checkpointed_iteration.txt"
    run_until(two_target_overrides(random_policy, killed_dir, *common),
              done=lambda: latest.is_file() and latest.read_text().strip() == "2")
    assert not (killed_dir / "actor" / "global_step_3").exists()
    run_main(two_target_overrides(random_policy, killed_dir, *common, "trainer.resume_mode=auto"))

    a, b = deterministic(read_metrics(straight_dir)[3]), deterministic(read_metrics(killed_dir)[3])
    assert "critic/vf_loss" in a and "curriculum/probability/task_1" in a and "val/test_score/all" in a
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-7), key
    for read in (actor_weights, critic_weights):  # the critic saves beside the actor: global_step_N/critic/
        wa, wb = read(straight_dir / "actor" / "global_step_3"), read(killed_dir / "actor" / "global_step_3")
        assert wa.keys() == wb.keys() and len(wa) > 10
        for key in wa:
            assert torch.equal(wa[key], wb[key]), key


@pytest.mark.slow
def test_curriculum_draws_the_unsolved_target_more_often(random_policy, tmp_path):
    """GRPO with the curriculum: the estimates tell the easy target (0) from the hard one (1), and
    the sampling probabilities follow: target 1 is drawn more often."""
    run_dir = tmp_path / "run"
    run_main(two_target_overrides(
        random_policy, run_dir, "data.curriculum.enable=True", "data.curriculum.temperature=0.25",
        "data.curriculum.ema=0.5", "data.train_batch_size=4", "data.n_samples=4", "data.filter_accuracy=False",
        "actor_rollout_ref.actor.ppo_mini_batch_size=16", "actor_rollout_ref.actor.ppo_micro_batch_size=4",
        "actor_rollout_ref.actor.optim.lr=1e-6", "trainer.total_training_steps=3", "trainer.save_freq=-1",
        "trainer.test_freq=-1", "trainer.val_before_train=False"))
    metrics = read_metrics(run_dir)
    last = metrics[3]
    assert last["curriculum/success_estimate/task_0"] > last["curriculum/success_estimate/task_1"] + 0.1
    assert last["curriculum/probability/task_1"] > 0.6 > last["curriculum/probability/task_0"]
    assert last["curriculum/probability/task_0"] + last["curriculum/probability/task_1"] == pytest.approx(1.0)


@pytest.mark.slow
def test_ppo_with_critic_improves_greedy_success_on_reach(reach_sft_policy, tmp_path):
    """The GRPO learning test's task and seeds, with PPO + a learned critic (+ 2 warm-up steps):
    greedy success from <= 0.3 to >= 0.7 by step 12 (18 steps measured 0.0 at steps 0-9, 1.0 at 12-18;
    docs/benchmarks/learning_reach_grpo_vs_ppo.json). Steps and wall time to 0.7 are printed."""
    run_dir = tmp_path / "run"
    start = time.time()
    run_main(reach_overrides(
        reach_sft_policy, run_dir, "env.reach.num_targets=1", "env.reach.max_episode_steps=8",
        "env.reach.step_size=0.25",
        *PPO, "critic.warmup_steps=2", "critic.ppo_epochs=2",
        "data.train_batch_size=8", "data.n_samples=8", "data.num_trials_per_task=16", "data.val_batch_size=64",
        "actor_rollout_ref.actor.ppo_mini_batch_size=64", "actor_rollout_ref.actor.ppo_micro_batch_size=8",
        "actor_rollout_ref.actor.traj_mini_batch_size=32", "actor_rollout_ref.rollout.log_prob_micro_batch_size=64",
        "env.envs_per_worker=8", "trainer.total_training_steps=12", "trainer.test_freq=3", "trainer.save_freq=-1",
        "trainer.val_before_train=True", "trainer.seed=1",
    ), timeout=1200)
    wall = time.time() - start
    metrics = read_metrics(run_dir)
    curve = {step: m["val/test_score/all"] for step, m in metrics.items() if "val/test_score/all" in m}
    reached = min((s for s, v in curve.items() if v >= 0.7), default=None)
    print("PPO + critic greedy validation success by step:", curve, f"first >= 0.7 at step {reached}, wall {wall:.0f} s")
    assert curve[0] <= 0.3
    assert curve[12] >= 0.7
    assert metrics[12]["critic/vf_explained_var"] > 0.0  # the value model predicts better than a constant


@pytest.mark.slow
def test_task_balanced_batches_and_per_task_training_success(random_policy, tmp_path):
    """data.task_balanced: the trainer draws with the task-balanced sampler (its state is in the
    checkpoint), and every step logs the training success of each task it rolled out."""
    run_dir = tmp_path / "run"
    run_main(two_target_overrides(
        random_policy, run_dir, "data.task_balanced=True", "data.train_batch_size=2", "data.n_samples=4",
        "data.filter_accuracy=False", "actor_rollout_ref.actor.ppo_mini_batch_size=8",
        "actor_rollout_ref.actor.ppo_micro_batch_size=4", "trainer.total_training_steps=2", "trainer.save_freq=2",
        "trainer.test_freq=-1", "trainer.val_before_train=False"))
    state = json.loads((run_dir / "actor" / "global_step_2" / "trainer_state.json").read_text())
    assert state["sampler"]["kind"] == "task_balanced" and state["sampler"]["drawn"] == 4
    for step, m in read_metrics(run_dir).items():
        per_task = [m[f"train_verify_score/reach/{t}"] for t in (0, 1)]  # one prompt of each task every step
        assert sum(per_task) / 2 == pytest.approx(m["train_verify_score/all"]), step
