"""EnvRollout in one process against a real EnvPool (reach, 2 env processes): pipelining changes
when envs step, never what an episode does."""

import numpy as np
import pytest
import torch

from verl.envs.config import EnvPoolConfig
from verl.envs.env_pool import EnvPool
from verl.models.openvla_oft import OpenVLAProcessor, get_action_norm_stats, load_openvla_checkpoint
from verl.models.openvla_oft.normalization import get_proprio_norm_stats
from verl.models.openvla_oft.tiny import make_tiny_checkpoint
from verl.protocol import DataProto
from verl.workers import trajectory as tj
from verl.workers.policy_inputs import PolicyInputBuilder
from verl.workers.rollout.env_rollout import EnvRollout, RolloutSettings


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    ckpt = make_tiny_checkpoint(tmp_path_factory.mktemp("rollout") / "tiny", seed=0)
    model = load_openvla_checkpoint(ckpt).eval()
    processor = OpenVLAProcessor.from_pretrained(ckpt)
    pool = EnvPool(EnvPoolConfig(benchmark="reach", num_workers=2, envs_per_worker=2, max_episode_steps=24,
                                 num_steps_wait=0))
    yield model, processor, pool
    pool.close()


def rollout(parts, stages: int, greedy: bool, seed: int = 0, settings_temperature: float = 1.6,
            **call) -> DataProto:
    model, processor, pool = parts
    inputs = PolicyInputBuilder(processor.preprocess_images, 32000, torch.device("cpu"))
    settings = RolloutSettings(benchmark="reach", temperature=settings_temperature, action_chunk=8, action_dim=7, max_env_steps=24,
                               pipeline_stages=stages, max_batch_size=3)
    engine = EnvRollout(model, processor.prompt_token_ids, inputs, pool, settings,
                        get_action_norm_stats(model.config.norm_stats, "reach"))
    n = 10
    prompts = DataProto.from_dict(non_tensors={
        tj.TASK_SUITE_NAME: np.array(["reach"] * n, dtype=object),
        tj.TASK_ID: np.array([i % 4 for i in range(n)], dtype=object),
        tj.TRIAL_ID: np.array(list(range(n)), dtype=object),
    })
    out = engine.generate_sequences(prompts, greedy=greedy, seed=seed, **call)
    assert prompts.batch is None and set(prompts.non_tensor_batch) == {tj.TASK_SUITE_NAME, tj.TASK_ID, tj.TRIAL_ID}
    return out


def test_pipelined_greedy_rollout_equals_unpipelined(parts):
    one, two = rollout(parts, 1, greedy=True), rollout(parts, 2, greedy=True)
    assert torch.equal(one.batch[tj.FINISH_STEP], two.batch[tj.FINISH_STEP])
    assert torch.equal(one.batch[tj.COMPLETE], two.batch[tj.COMPLETE])
    assert torch.equal(one.batch[tj.RESPONSES], two.batch[tj.RESPONSES])
    assert torch.equal(one.batch[tj.IMAGES], two.batch[tj.IMAGES])
    # 10 episodes over 4 slots with batches of at most 3: several forwards, every episode complete
    assert (one.batch[tj.NUM_STEPS] >= 1).all() and not one.batch[tj.FAULTED].any()
    assert two.meta_info["metrics"]["rollout/forward_rows"] == one.batch[tj.NUM_STEPS].sum().item()


def test_sampled_rollout_is_reproducible_per_seed(parts):
    a, b, c = rollout(parts, 2, False, seed=5), rollout(parts, 2, False, seed=5), rollout(parts, 2, False, seed=6)
    assert torch.equal(a.batch[tj.RESPONSES], b.batch[tj.RESPONSES])
    assert not torch.equal(a.batch[tj.RESPONSES], c.batch[tj.RESPONSES])


def test_a_call_temperature_samples_as_settings_with_that_temperature(parts):
    """Sampled validation (rollout.val_temperature): the call's temperature replaces the training
    one, for the draws and for the stored log-probs."""
    called = rollout(parts, 1, False, seed=5, temperature=0.5, validation=True)
    built = rollout(parts, 1, False, seed=5, settings_temperature=0.5)
    training = rollout(parts, 1, False, seed=5)
    assert torch.equal(called.batch[tj.RESPONSES], built.batch[tj.RESPONSES])
    assert torch.equal(called.batch[tj.ROLLOUT_LOG_PROBS], built.batch[tj.ROLLOUT_LOG_PROBS])
    assert not torch.equal(called.batch[tj.RESPONSES], training.batch[tj.RESPONSES])


class RecordingPool:
    """The real pool, with a log of how many step calls were in flight at each model forward."""

    def __init__(self, pool):
        self._pool = pool
        self.steps_in_flight: set[int] = set()
        self.in_flight_at_forward: list[int] = []

    def __getattr__(self, name):
        return getattr(self._pool, name)

    def step_chunk_async(self, env_ids, chunks):
        handle = self._pool.step_chunk_async(env_ids, chunks)
        self.steps_in_flight.add(id(handle))
        return handle

    def wait(self, handle, timeout=None):
        self.steps_in_flight.discard(id(handle))
        return self._pool.wait(handle, timeout)


def test_slot_groups_split_every_workers_slots(parts):
    model, processor, _ = parts
    settings = RolloutSettings(benchmark="reach", temperature=1.6, action_chunk=8, action_dim=7, max_env_steps=24,
                               pipeline_stages=2)
    layouts = {(1, 4): [[0, 1], [2, 3]], (2, 2): [[0, 1], [2, 3]], (2, 1): [[0], [1]], (1, 1): [[0]]}
    for (workers, per_worker), groups in layouts.items():
        with EnvPool(EnvPoolConfig(benchmark="reach", num_workers=workers, envs_per_worker=per_worker)) as pool:
            inputs = PolicyInputBuilder(processor.preprocess_images, 32000, torch.device("cpu"))
            engine = EnvRollout(model, processor.prompt_token_ids, inputs, pool, settings, {})
            assert engine._slot_groups() == groups, (workers, per_worker)


@pytest.mark.parametrize("stages", [1, 2])
def test_pipelined_forwards_overlap_env_steps_on_one_worker(parts, stages):
    """With 2 stages the model runs while the other group's chunks are in the simulator, even
    when one env worker hosts every slot; with 1 stage it never does."""
    model, processor, _ = parts
    with EnvPool(EnvPoolConfig(benchmark="reach", num_workers=1, envs_per_worker=4, max_episode_steps=24,
                               num_steps_wait=0)) as real_pool:
        pool = RecordingPool(real_pool)
        original = model.sample_action_tokens

        def recording_forward(*args, **kwargs):
            pool.in_flight_at_forward.append(len(pool.steps_in_flight))
            return original(*args, **kwargs)

        model.sample_action_tokens = recording_forward
        try:
            out = rollout((model, processor, pool), stages, greedy=True)
        finally:
            del model.sample_action_tokens
    metrics = out.meta_info["metrics"]
    assert len(pool.in_flight_at_forward) == metrics["rollout/forwards"]
    assert 0 < metrics["rollout/env_busy_time_s"] <= metrics["rollout/wall_time_s"]
    overlapped = sum(n > 0 for n in pool.in_flight_at_forward)
    if stages == 1:
        assert overlapped == 0
    else:  # every forward but the first of each wave of resets overlaps env work
        assert overlapped >= len(pool.in_flight_at_forward) // 2, pool.in_flight_at_forward


class FaultingResetPool(RecordingPool):
    """The real pool, except that the first reset of every episode in `faulted_trials` comes back faulted
    (as after a worker that was killed during the reset and during its retry)."""

    def __init__(self, pool, faulted_trials):
        super().__init__(pool)
        self.faulted_trials = set(faulted_trials)
        self.specs = {}

    def reset_async(self, env_ids, specs, record_video=None, video_tags=None):
        handle = self._pool.reset_async(env_ids, specs, record_video, video_tags)
        self.specs[id(handle)] = list(specs)
        return handle

    def wait(self, handle, timeout=None):
        results = super().wait(handle, timeout)
        for i, spec in enumerate(self.specs.pop(id(handle), [])):
            if spec.trial_id in self.faulted_trials:
                self.faulted_trials.discard(spec.trial_id)
                results[i] = self._pool._faulted("killed during the reset and its retry")
        return results


def test_proprio_width_is_the_models_even_when_episode_0_faults_at_reset(tmp_path):
    """Episode 0 faulting at reset (no observation at all) must not give the batch proprio of width 0."""
    ckpt = make_tiny_checkpoint(tmp_path / "proprio", use_proprio=True, proprio_dim=2, seed=0)  # reach: [x, y]
    model = load_openvla_checkpoint(ckpt).eval()
    processor = OpenVLAProcessor.from_pretrained(ckpt)
    with EnvPool(EnvPoolConfig(benchmark="reach", num_workers=1, envs_per_worker=2, max_episode_steps=24,
                               num_steps_wait=0)) as real_pool:
        pool = FaultingResetPool(real_pool, faulted_trials=[0])
        inputs = PolicyInputBuilder(processor.preprocess_images, 32000, torch.device("cpu"))
        settings = RolloutSettings(benchmark="reach", temperature=1.6, action_chunk=8, action_dim=7,
                                   max_env_steps=24, use_proprio=True, proprio_dim=2)
        engine = EnvRollout(model, processor.prompt_token_ids, inputs, pool, settings,
                            get_action_norm_stats(model.config.norm_stats, "reach"),
                            get_proprio_norm_stats(model.config.norm_stats, "reach"))
        prompts = DataProto.from_dict(non_tensors={
            tj.TASK_SUITE_NAME: np.array(["reach"] * 3, dtype=object),
            tj.TASK_ID: np.array([0, 1, 2], dtype=object),
            tj.TRIAL_ID: np.array([0, 1, 2], dtype=object),
        })
        out = engine.generate_sequences(prompts, greedy=True, seed=0)
    assert out.batch[tj.FAULTED].tolist() == [True, False, False]
    assert out.batch[tj.NUM_STEPS][0] == 0 and (out.batch[tj.NUM_STEPS][1:] >= 1).all()
    proprio = out.batch[tj.PROPRIO]
    assert proprio.shape == (3, 3, 2)
    assert (proprio[0] == 0).all() and (proprio[1, 0] != 0).any()


class ObservationLog:
    """The real pool, with every observation it returned, by the trial of the episode in the slot."""

    def __init__(self, pool):
        self._pool = pool
        self.trial_of_slot: dict[int, int] = {}
        self.frames: dict[int, list[np.ndarray]] = {}  # trial -> raw frames [n_cams, H, W, 3], in order

    def __getattr__(self, name):
        return getattr(self._pool, name)

    def reset_async(self, env_ids, specs, **kwargs):
        for slot, spec in zip(env_ids, specs):
            self.trial_of_slot[slot] = spec.trial_id
        return self._pool.reset_async(env_ids, specs, **kwargs)

    def wait(self, handle, timeout=None):
        results = self._pool.wait(handle, timeout)
        for slot, res in zip(handle.env_ids, results):
            if res.obs is not None:
                self.frames.setdefault(self.trial_of_slot[slot], []).append(res.obs.images)
        return results


@pytest.mark.parametrize("stages", [1, 2])
def test_each_episode_keeps_the_model_images_of_its_own_observations(parts, stages):
    """The image pipeline runs on several threads at once: every stored image must still be the
    pipeline's output for that episode's own observation at that model call, in order."""
    from verl.workers.rollout.policy_env_io import model_images

    model, processor, pool = parts
    log = ObservationLog(pool)
    out = rollout((model, processor, log), stages, greedy=False, seed=3)
    images, num_steps = out.batch[tj.IMAGES], out.batch[tj.NUM_STEPS]
    for i, trial in enumerate(out.non_tensor_batch[tj.TRIAL_ID]):
        expected = [model_images(frames, "reach", True, 1) for frames in log.frames[int(trial)][: int(num_steps[i])]]
        assert len(expected) == int(num_steps[i]) >= 1
        assert np.array_equal(images[i, : len(expected)].numpy(), np.stack(expected)), f"episode {i}"
    # the episodes differ (so an image given to the wrong episode would be caught)
    assert not torch.equal(images[0, 0], images[1, 0])
