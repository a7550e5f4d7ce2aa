"""ActorRolloutRefWorker on 2 CPU FSDP2 ranks with the built-in reach env (real env processes)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from verl.models.openvla_oft import load_openvla_checkpoint
from verl.models.openvla_oft.tiny import make_tiny_checkpoint
from verl.protocol import DataProto
from verl.trainer.config_validation import validate_config
from verl.workers import trajectory as tj

pytestmark = pytest.mark.ray

CONFIG_DIR = Path(__file__).resolve().parents[2] / "verl" / "trainer" / "config"
CHUNK, DIM = 8, 7


def reach_config(ckpt: Path, run_dir: Path, *extra: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose("ppo_trainer", overrides=[
            f"actor_rollout_ref.model.path={ckpt}", "data.task_suite_name=reach",
            "actor_rollout_ref.rollout.task_suite_name=reach", "actor_rollout_ref.rollout.unnorm_key=reach",
            "trainer.device=cpu", "trainer.n_gpus_per_node=2", "data.train_batch_size=2", "data.n_samples=4",
            "actor_rollout_ref.actor.ppo_mini_batch_size=8", "actor_rollout_ref.actor.ppo_micro_batch_size=2",
            "actor_rollout_ref.actor.traj_mini_batch_size=2", "actor_rollout_ref.actor.optim.lr=1e-3",
            "env.num_workers=1", "env.envs_per_worker=3", f"trainer.default_local_dir={run_dir}", *extra,
        ])
    OmegaConf.resolve(cfg)
    validate_config(cfg)
    return cfg


def reach_prompts(n: int, greedy: bool, seed: int = 0) -> DataProto:
    prompts = DataProto.from_dict(non_tensors={
        tj.TASK_SUITE_NAME: np.array(["reach"] * n, dtype=object),
        tj.TASK_ID: np.array([i % 4 for i in range(n)], dtype=object),
        tj.TRIAL_ID: np.array(list(range(n)), dtype=object),
        tj.UID: np.array([f"g{i // 4}" for i in range(n)], dtype=object),
    })
    prompts.meta_info.update(greedy=greedy, seed=seed)
    return prompts


@pytest.fixture(scope="module")
def worker_group(ray_session, tmp_path_factory):
    from verl.single_controller.ray import RayClassWithInitArgs, RayResourcePool, RayWorkerGroup
    from verl.workers.fsdp_workers import ActorRolloutRefWorker

    root = tmp_path_factory.mktemp("fsdp_worker")
    ckpt = make_tiny_checkpoint(root / "ckpt", seed=0)
    cfg = reach_config(ckpt, root / "run")
    pool = RayResourcePool([2], use_gpu=False)
    wg = RayWorkerGroup(pool, RayClassWithInitArgs(ActorRolloutRefWorker, config=cfg))
    wg.init_model()
    yield wg, root
    wg.close_envs()
    wg.shutdown()
    pool.release()


def test_rollout_is_well_formed_and_finished_envs_get_no_forwards(worker_group):
    wg, _ = worker_group
    out = wg.generate_sequences(reach_prompts(9, greedy=False, seed=3))  # uneven over 2 ranks: padded
    assert len(out) == 9
    t = 3  # reach: 24 steps / chunk 8
    assert out.batch[tj.IMAGES].shape == (9, t, 1, 224, 224, 3) and out.batch[tj.IMAGES].dtype == torch.uint8
    assert out.batch[tj.RESPONSES].shape == (9, t, CHUNK * DIM)
    finish, num_steps = out.batch[tj.FINISH_STEP], out.batch[tj.NUM_STEPS]
    assert ((finish >= 1) & (finish <= 24)).all()
    assert torch.equal(num_steps, (finish + CHUNK - 1) // CHUNK)  # no model call after the episode ended
    assert torch.equal(out.batch[tj.RESPONSE_MASK].sum(-1), (finish * DIM).float())
    tokens = out.batch[tj.RESPONSES]
    assert ((tokens >= 31744) & (tokens < 32000)).all()
    assert list(out.non_tensor_batch[tj.UID]) == [f"g{i // 4}" for i in range(9)]
    assert all(len(p) > 0 for p in out.non_tensor_batch[tj.PROMPT_IDS])
    assert all("target" in s for s in out.non_tensor_batch[tj.INSTRUCTION])
    for i in range(9):  # stored observations exist exactly for the steps the policy acted on
        steps = int(num_steps[i])
        assert out.batch[tj.IMAGES][i, :steps].float().std() > 0
        assert out.batch[tj.IMAGES][i, steps:].sum() == 0
    # the model saw exactly one observation per model call of every episode: the 9 rows plus
    # the one padded duplicate (its own sampled episode, 1..3 calls) that makes 2 equal shares
    rows = sum(out.meta_info["metrics"]["rollout/forward_rows"])
    assert 1 <= rows - num_steps.sum().item() <= t
    even = wg.generate_sequences(reach_prompts(8, greedy=False, seed=4))
    assert sum(even.meta_info["metrics"]["rollout/forward_rows"]) == even.batch[tj.NUM_STEPS].sum().item()


def test_greedy_rollouts_are_reproducible(worker_group):
    wg, _ = worker_group
    a = wg.generate_sequences(reach_prompts(4, greedy=True))
    b = wg.generate_sequences(reach_prompts(4, greedy=True))
    assert torch.equal(a.batch[tj.RESPONSES], b.batch[tj.RESPONSES])
    assert torch.equal(a.batch[tj.FINISH_STEP], b.batch[tj.FINISH_STEP])
    c = wg.generate_sequences(reach_prompts(4, greedy=False, seed=11))
    d = wg.generate_sequences(reach_prompts(4, greedy=False, seed=11))
    assert torch.equal(c.batch[tj.RESPONSES], d.batch[tj.RESPONSES])  # same seed, same samples


def test_the_rpc_samples_at_a_validation_temperature_when_asked(worker_group):
    """rollout.val_temperature reaches the engine through meta_info: the same seed draws other tokens
    at T=0.1 than at the training temperature (1.6), from a sharper distribution (entropy grows with T)."""
    wg, _ = worker_group
    cold = reach_prompts(4, greedy=False, seed=11)
    cold.meta_info.update(temperature=0.1, validation=True)
    cold = wg.generate_sequences(cold)
    hot = wg.generate_sequences(reach_prompts(4, greedy=False, seed=11))
    assert not torch.equal(cold.batch[tj.RESPONSES], hot.batch[tj.RESPONSES])
    mask_cold, mask_hot = cold.batch[tj.RESPONSE_MASK].bool(), hot.batch[tj.RESPONSE_MASK].bool()
    assert cold.batch[tj.ROLLOUT_ENTROPY][mask_cold].mean() < hot.batch[tj.ROLLOUT_ENTROPY][mask_hot].mean()


def test_log_prob_recompute_equals_rollout_and_update_follows_advantage(worker_group):
    wg, root = worker_group
    batch = wg.generate_sequences(reach_prompts(8, greedy=False, seed=5))
    mask = batch.batch[tj.RESPONSE_MASK].bool()
    recomputed = wg.compute_log_prob(batch)
    old = recomputed.batch[tj.OLD_LOG_PROBS]
    assert torch.allclose(old[mask], batch.batch[tj.ROLLOUT_LOG_PROBS][mask], atol=1e-5)
    # the rollout's per-token entropy is the recompute's too (what actor.use_rollout_log_probs=True logs)
    entropy = recomputed.batch[tj.ENTROPY]
    assert torch.allclose(entropy[mask], batch.batch[tj.ROLLOUT_ENTROPY][mask], atol=1e-5)
    assert entropy[mask].min() > 0  # sampled at temperature: a real distribution, not a placeholder

    wg.save_checkpoint(str(root / "before_update"))
    batch.batch[tj.OLD_LOG_PROBS] = old
    batch.batch[tj.ADVANTAGES] = batch.batch[tj.RESPONSE_MASK] * 1.0
    batch.meta_info["seed"] = 0
    metrics = wg.update_actor(batch).meta_info["metrics"]
    assert len(metrics["actor/pg_loss"]) == 2 and np.allclose(metrics["actor/pg_loss"], -1.0, atol=1e-4)
    new = wg.compute_log_prob(batch).batch[tj.OLD_LOG_PROBS]
    assert (new - old)[mask].mean() > 0.001

    # the checkpoint is an HF directory that loads alone, and restores the pre-update weights
    saved = root / "before_update"
    assert (saved / "config.json").is_file() and (saved / "dataset_statistics.json").is_file()
    model = load_openvla_checkpoint(saved, action_dim=DIM, action_chunk=CHUNK)
    assert model.num_action_tokens == CHUNK * DIM
    wg.load_checkpoint(str(saved))
    restored = wg.compute_log_prob(batch).batch[tj.OLD_LOG_PROBS]
    assert torch.allclose(restored[mask], old[mask], atol=1e-6)

    # from the restored weights, negative advantages push the same log-probs down
    batch.batch[tj.ADVANTAGES] = -batch.batch[tj.RESPONSE_MASK]
    wg.update_actor(batch)
    lowered = wg.compute_log_prob(batch).batch[tj.OLD_LOG_PROBS]
    assert (lowered - old)[mask].mean() < -0.001



def fault_rows(batch: DataProto, rows: list[int], model_calls: int) -> None:
    """Make these episodes end after `model_calls` whole chunks; 0: faulted at reset."""
    finish = batch.batch[tj.FINISH_STEP]
    finish[rows] = model_calls * CHUNK
    batch.batch[tj.NUM_STEPS][rows] = model_calls
    batch.batch[tj.RESPONSE_MASK] = tj.response_mask_from_finish_step(finish, 3, CHUNK, DIM)
    batch.batch[tj.IMAGES][rows, model_calls:] = 0
    if model_calls == 0:
        batch.batch[tj.FAULTED][rows] = True
        for row in rows:
            batch.non_tensor_batch[tj.PROMPT_IDS][row] = np.zeros(0, dtype=np.int64)


@pytest.mark.parametrize("rank1_calls", [1, 0], ids=["uneven", "no_valid_step"])
def test_rank_with_fewer_or_no_valid_steps_through_the_rpcs(worker_group, rank1_calls):
    """compute_log_prob and update_actor as the driver calls them, rank 1's share (rows 2, 3) with
    one model call per episode or none at all (faulted at reset), rank 0's ordinary: both ranks
    finish, agree on the update, and learn only from their valid steps."""
    wg, _ = worker_group
    batch = wg.generate_sequences(reach_prompts(4, greedy=False, seed=9))
    batch.meta_info = {}
    rank0_calls = batch.batch[tj.NUM_STEPS][:2].clone()
    fault_rows(batch, [2, 3], rank1_calls)
    mask = batch.batch[tj.RESPONSE_MASK].bool()
    assert mask[:2].any() and mask[2:].sum().item() == rank1_calls * 2 * CHUNK * DIM
    # [N, T*A]: the tokens of every model call (the last call's chunk may run past the episode's end)
    called = (torch.arange(3) < batch.batch[tj.NUM_STEPS].unsqueeze(1)).repeat_interleave(CHUNK * DIM, dim=1)

    old = wg.compute_log_prob(batch).batch[tj.OLD_LOG_PROBS]
    assert torch.isfinite(old).all() and (old[~called] == 0).all() and (old[called] != 0).all()
    assert torch.allclose(old[mask], batch.batch[tj.ROLLOUT_LOG_PROBS][mask], atol=1e-5)  # the same policy

    batch.batch[tj.OLD_LOG_PROBS] = old
    batch.batch[tj.ADVANTAGES] = batch.batch[tj.RESPONSE_MASK] * 1.0
    batch.meta_info["seed"] = 1
    metrics = wg.update_actor(batch).meta_info["metrics"]
    # one mini-batch per rank, taken together: the same global grad norm on both ranks
    assert len(metrics["actor/grad_norm"]) == 2 and metrics["actor/grad_norm"][0] == metrics["actor/grad_norm"][1]
    assert np.isfinite(metrics["actor/grad_norm"]).all() and metrics["actor/grad_norm"][0] > 0
    assert metrics["actor/pg_loss"][0] == pytest.approx(-1.0, abs=1e-4)
    assert metrics["actor/pg_loss"][1] == (pytest.approx(-1.0, abs=1e-4) if rank1_calls else 0.0)
    new = wg.compute_log_prob(batch).batch[tj.OLD_LOG_PROBS]
    assert (new[~called] == 0).all() and (new - old)[mask].mean() > 0.001
    assert torch.equal(batch.batch[tj.NUM_STEPS][:2], rank0_calls)
