"""The value model and the critic's update on one process: one value per model call, padding never
forwarded, the clipped value regression fits its targets, and splitting into pieces (or adding the
zero-weight replays other ranks may force) does not change the gradient."""

import numpy as np
import pytest
import torch

from verl.models.openvla_oft.processor import OpenVLAProcessor
from verl.models.openvla_oft.tiny import build_tiny_model, build_tiny_tokenizer
from verl.models.openvla_oft.value_model import OpenVLAValueModel
from verl.protocol import DataProto
from verl.workers import step_batches
from verl.workers import trajectory as tj
from verl.workers.critic.dp_critic import CriticSettings, DataParallelPPOCritic
from verl.workers.policy_inputs import PolicyInputBuilder

CHUNK, DIM, T = 8, 7, 3
A = CHUNK * DIM


@pytest.fixture(scope="module")
def processor():
    return OpenVLAProcessor(build_tiny_tokenizer())


def value_model(seed=0):
    torch.manual_seed(seed)
    model = OpenVLAValueModel(build_tiny_model(seed=0), head_hidden=16)
    torch.nn.init.normal_(model.value_head.fc2.weight, std=0.1)  # a critic that has learned something
    return model


def make_critic(processor, lr=1e-3, **kw):
    model = value_model()
    base = dict(ppo_mini_batch_size=4, ppo_micro_batch_size=1, steps_per_forward=2, forward_micro_batch_size=3,
                ppo_epochs=1, shuffle=False, grad_clip=10.0, cliprange_value=10.0, use_proprio=False)
    base.update(kw)
    inputs = PolicyInputBuilder(processor.preprocess_images, 32000, torch.device("cpu"))
    return DataParallelPPOCritic(CriticSettings(**base), model, inputs, torch.optim.AdamW(model.parameters(), lr=lr))


def batch_of(processor, finish_steps=(24, 10, 17, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    n = len(finish_steps)
    finish_step = torch.tensor(finish_steps)
    prompt_ids = np.empty(n, dtype=object)
    for i, text in enumerate(["put the bowl on the plate", "open the drawer", "pick up the ketchup", "push it"][:n]):
        prompt_ids[i] = np.asarray(processor.prompt_token_ids(text), dtype=np.int64)
    return DataProto.from_dict(tensors={
        tj.IMAGES: torch.randint(0, 256, (n, T, 1, 224, 224, 3), dtype=torch.uint8, generator=g),
        tj.RESPONSES: torch.randint(31744, 32000, (n, T, A), generator=g),
        tj.NUM_STEPS: (finish_step + CHUNK - 1) // CHUNK,
        tj.RESPONSE_MASK: tj.response_mask_from_finish_step(finish_step, T, CHUNK, DIM),
        tj.STEP_RETURNS: torch.rand(n, T, generator=g) * 5,
    }, non_tensors={tj.PROMPT_IDS: prompt_ids})


def test_value_head_starts_at_zero_and_reads_the_prompt_end(processor):
    model = OpenVLAValueModel(build_tiny_model(seed=0), head_hidden=16)
    assert model.vla.language_model.lm_head is None  # no token prediction in a critic
    ids = torch.as_tensor(processor.prompt_token_ids("open the drawer")).unsqueeze(0)
    pix = processor.preprocess_images(torch.randint(0, 256, (2, 1, 224, 224, 3), dtype=torch.uint8))
    ids2 = ids.repeat(2, 1)
    with torch.no_grad():
        assert model(ids2, torch.ones_like(ids2), pix).tolist() == [0.0, 0.0]
    model = value_model()
    with torch.no_grad():
        v = model(ids2, torch.ones_like(ids2), pix)
        # actions are not an input of V(s): the same observation with other action tokens has the same value
        v_actions = model(ids2, torch.ones_like(ids2), pix, action_tokens=torch.full((2, A), 31800))
        # a left-padded row computes what it computes alone
        longer = torch.as_tensor(processor.prompt_token_ids("put the bowl on the plate"))
        padded = torch.full((2, len(longer)), 32000)
        padded[0, -ids.shape[1]:] = ids[0]
        padded[1] = longer
        v_padded = model(padded, (padded != 32000).long(), pix)
    assert v.shape == (2,) and v[0] != v[1]  # different images, different values
    torch.testing.assert_close(v, v_actions)
    torch.testing.assert_close(v_padded[0], v[0], atol=1e-5, rtol=1e-5)


def test_compute_values_one_per_valid_call(processor):
    critic = make_critic(processor)
    batch = batch_of(processor)
    values = critic.compute_values(batch)
    assert values.shape == (4, T)
    ids = torch.as_tensor(batch.non_tensor_batch[tj.PROMPT_IDS][1]).unsqueeze(0)
    with torch.no_grad():
        direct = critic.model(ids, torch.ones_like(ids), processor.preprocess_images(batch.batch[tj.IMAGES][1, 1:2]))
    assert values[1, 1].item() == pytest.approx(direct.item(), abs=1e-5)
    assert (values[3, 1:] == 0).all() and values[3, 0] != 0  # episode 3 made one call only


def test_value_loss_falls_on_fixed_targets(processor):
    critic = make_critic(processor, lr=3e-3)
    batch = batch_of(processor)
    batch.batch[tj.VALUES] = critic.compute_values(batch)
    losses = [critic.update_critic(batch)["critic/vf_loss"][0] for _ in range(8)]
    assert losses[-1] < 0.5 * losses[0], losses
    metrics = critic.update_critic(batch)
    for key in ("critic/vf_loss", "critic/vf_clipfrac", "critic/vpred_mean", "critic/grad_norm"):
        assert np.isfinite(metrics[key]).all(), key


def test_value_clip_bounds_the_change_per_update(processor):
    """With a tiny cliprange the clipped branch is active wherever the target is far: clipfrac > 0."""
    critic = make_critic(processor, cliprange_value=1e-4)
    batch = batch_of(processor)
    batch.batch[tj.VALUES] = critic.compute_values(batch)
    critic.update_critic(batch)
    metrics = critic.update_critic(batch)  # values moved off the anchor: now the clip bites
    assert metrics["critic/vf_clipfrac"][0] > 0.5


def grads_of(critic, batch):
    captured = {}
    critic.optimizer = torch.optim.SGD(critic.model.parameters(), lr=0.0)
    step = critic.optimizer.step

    def capture():
        captured.update({n: p.grad.clone() for n, p in critic.model.named_parameters() if p.grad is not None})
        step()

    critic.optimizer.step = capture
    metrics = critic.update_critic(batch)
    return captured, metrics


def test_pieces_and_fillers_leave_the_gradient_unchanged(processor, monkeypatch):
    batch = batch_of(processor)
    batch.batch[tj.VALUES] = make_critic(processor).compute_values(batch) + 0.3
    one, m_one = grads_of(make_critic(processor, steps_per_forward=100, ppo_micro_batch_size=4), batch)
    small, m_small = grads_of(make_critic(processor, steps_per_forward=1), batch)
    monkeypatch.setattr(step_batches, "pieces_on_all_ranks", lambda local, device: local + 3)
    filled, m_filled = grads_of(make_critic(processor, steps_per_forward=1), batch)
    assert len(one) > 10 and one.keys() == small.keys() == filled.keys()
    for name in one:
        torch.testing.assert_close(small[name], one[name], atol=1e-6, rtol=1e-4)
        torch.testing.assert_close(filled[name], small[name], atol=1e-7, rtol=1e-5)
    assert m_small["critic/vf_loss"][0] == pytest.approx(m_one["critic/vf_loss"][0], rel=1e-5)
    assert m_filled["critic/vf_loss"][0] == pytest.approx(m_small["critic/vf_loss"][0], rel=1e-6)


def test_faulted_episode_is_not_regressed(processor):
    """A faulted episode (mask zeroed by the trainer) adds nothing to the value loss."""
    batch = batch_of(processor)
    batch.batch[tj.VALUES] = make_critic(processor).compute_values(batch)
    with_fault = batch_of(processor)
    with_fault.batch[tj.VALUES] = batch.batch[tj.VALUES]
    with_fault.batch[tj.STEP_RETURNS][2] = 1e3  # absurd targets on the faulted episode
    with_fault.batch[tj.RESPONSE_MASK][2] = 0
    clean = batch_of(processor)
    clean.batch[tj.VALUES] = batch.batch[tj.VALUES]
    clean.batch[tj.RESPONSE_MASK][2] = 0
    g_fault, _ = grads_of(make_critic(processor), with_fault)
    g_clean, _ = grads_of(make_critic(processor), clean)
    for name in g_clean:
        torch.testing.assert_close(g_fault[name], g_clean[name])
