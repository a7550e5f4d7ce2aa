"""The PPO actor on one process: log-prob recomputation and one clip-higher update."""

import math

import numpy as np
import pytest
import torch

from verl.models.openvla_oft.processor import OpenVLAProcessor
from verl.models.openvla_oft.tiny import build_tiny_model, build_tiny_tokenizer
from verl.protocol import DataProto
from verl.trainer.ppo import core_algos
from verl.workers import step_batches
from verl.workers import trajectory as tj
from verl.workers.actor.dp_actor import ActorSettings, DataParallelPPOActor
from verl.workers.policy_inputs import PolicyInputBuilder

CHUNK, DIM, T = 8, 7, 3
A = CHUNK * DIM


def settings(**kw):
    base = dict(
        temperature=1.6, ppo_mini_batch_size=4, ppo_micro_batch_size=1, steps_per_forward=2,
        log_prob_micro_batch_size=3, ppo_epochs=1, shuffle=False, grad_clip=1.0, clip_ratio_low=0.2,
        clip_ratio_high=0.28, clip_ratio_c=None, loss_agg_mode="seq-mean-token-mean", entropy_coeff=0.0,
        pad_token_id=32000, use_proprio=False,
    )
    base.update(kw)
    return ActorSettings(**base)


def synthetic_batch(processor, n=4, seed=0, finish_steps=(24, 10, 17, 3)):
    g = torch.Generator().manual_seed(seed)
    instructions = ["put the bowl on the plate", "open the drawer", "pick up the ketchup", "push the plate"]
    finish_step = torch.tensor(finish_steps)[:n]
    num_steps = (finish_step + CHUNK - 1) // CHUNK
    prompt_ids = np.empty(n, dtype=object)
    for i in range(n):
        prompt_ids[i] = np.asarray(processor.prompt_token_ids(instructions[i]), dtype=np.int64)
    batch = DataProto.from_dict(
        tensors={
            tj.IMAGES: torch.randint(0, 256, (n, T, 1, 224, 224, 3), dtype=torch.uint8, generator=g),
            tj.RESPONSES: torch.randint(31744, 32000, (n, T, A), generator=g),
            tj.FINISH_STEP: finish_step,
            tj.NUM_STEPS: num_steps,
            tj.RESPONSE_MASK: tj.response_mask_from_finish_step(finish_step, T, CHUNK, DIM),
        },
        non_tensors={tj.PROMPT_IDS: prompt_ids},
    )
    return batch


@pytest.fixture(scope="module")
def processor():
    return OpenVLAProcessor(build_tiny_tokenizer())


def make_actor(processor, optimizer=True, **kw):
    torch.manual_seed(0)
    model = build_tiny_model(seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3) if optimizer else None
    inputs = PolicyInputBuilder(processor.preprocess_images, 32000, torch.device("cpu"))
    return DataParallelPPOActor(settings(**kw), model, inputs, optimizer=opt)


def test_response_mask_counts_executed_actions():
    mask = tj.response_mask_from_finish_step(torch.tensor([10, 0]), max_steps=3, action_chunk=CHUNK, action_dim=DIM)
    assert mask.shape == (2, T * A)
    assert mask[0].sum().item() == 10 * DIM and mask[0, : 10 * DIM].all() and not mask[0, 10 * DIM:].any()
    assert mask[1].sum().item() == 0


def test_compute_log_prob_matches_direct_forward_and_zeros_padding(processor):
    actor = make_actor(processor, optimizer=False)
    batch = synthetic_batch(processor)
    log_probs = actor.compute_log_prob(batch)[0].view(4, T, A)
    # one direct forward for (episode 1, step 1)
    ids = torch.as_tensor(batch.non_tensor_batch[tj.PROMPT_IDS][1]).unsqueeze(0)
    pix = processor.preprocess_images(batch.batch[tj.IMAGES][1, 1:2])
    with torch.no_grad():
        logits = actor.model(ids, torch.ones_like(ids), pix)
    direct = torch.log_softmax(logits / 1.6, -1).gather(-1, (batch.batch[tj.RESPONSES][1, 1] - 31744).view(1, A, 1))
    assert torch.allclose(log_probs[1, 1], direct.view(A), atol=1e-5)
    # episode 3 made one model call (finish_step 3): steps 1, 2 never forwarded
    assert (log_probs[3, 1:] == 0).all() and (log_probs[3, 0] != 0).all()


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_update_moves_log_prob_with_the_advantage_sign(processor, sign):
    actor = make_actor(processor)
    batch = synthetic_batch(processor)
    old, _ = actor.compute_log_prob(batch)
    batch.batch[tj.OLD_LOG_PROBS] = old
    batch.batch[tj.ADVANTAGES] = batch.batch[tj.RESPONSE_MASK] * sign
    metrics = actor.update_policy(batch, seed=0)
    new, _ = actor.compute_log_prob(batch)
    mask = batch.batch[tj.RESPONSE_MASK].bool()
    change = (new - old)[mask].mean().item()
    assert change * sign > 0.002, change
    for key in ("actor/pg_loss", "actor/pg_clipfrac", "actor/ppo_kl", "actor/grad_norm", "actor/entropy"):
        assert key in metrics and np.isfinite(metrics[key]).all()
    # the only mini-batch starts at ratio 1: pg_loss = -mean advantage
    assert metrics["actor/pg_loss"][0] == pytest.approx(-sign, abs=1e-4)
    assert metrics["actor/ppo_kl"][0] == pytest.approx(0.0, abs=1e-5)


def capture_grads(actor) -> dict[str, torch.Tensor]:
    """Swap in SGD(lr=0) that records the (clipped) gradients of each optimizer step."""
    actor.optimizer = torch.optim.SGD(actor.model.parameters(), lr=0.0)
    captured = {}
    orig_step = actor.optimizer.step

    def capture():
        captured.update({n: p.grad.clone() for n, p in actor.model.named_parameters() if p.grad is not None})
        orig_step()

    actor.optimizer.step = capture
    return captured


def test_pieces_give_the_same_gradient_as_one_forward(processor):
    """Splitting a mini-batch into step pieces must not change the gradient (exact loss weights)."""
    batch = synthetic_batch(processor, seed=3)
    grads = []
    for steps_per_forward, micro in ((1, 1), (16, 4)):
        actor = make_actor(processor, steps_per_forward=steps_per_forward, ppo_micro_batch_size=micro)
        batch.batch[tj.OLD_LOG_PROBS] = actor.compute_log_prob(batch)[0] - 0.1  # ratios != 1
        g = torch.Generator().manual_seed(1)
        batch.batch[tj.ADVANTAGES] = torch.randn(4, 1, generator=g) * batch.batch[tj.RESPONSE_MASK]
        captured = capture_grads(actor)  # keep weights, read grads
        actor.settings.grad_clip = 1e9
        actor.update_policy(batch)
        grads.append(captured)
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-4), name


def short_batch(processor, n=2, seed=0, finish_steps=(10, 3)):
    """n episodes of 1-2 model calls: cheap updates (every call costs a forward and a backward)."""
    return synthetic_batch(processor, n=n, seed=seed, finish_steps=finish_steps)


@pytest.mark.parametrize("ratio, adv, pg_loss, clipfrac", [
    (1.25, 1.0, -1.25, 0.0),  # inside 1 + clip_ratio_high = 1.3 (a swapped 1.1 would clip it)
    (0.8, -1.0, 0.9, 1.0),  # below 1 - clip_ratio_low = 0.9 (a swapped 0.7 would not)
])
def test_update_clips_with_the_configured_low_and_high_ratio(processor, ratio, adv, pg_loss, clipfrac):
    actor = make_actor(processor, clip_ratio_low=0.1, clip_ratio_high=0.3)
    batch = short_batch(processor)
    mask = batch.batch[tj.RESPONSE_MASK]
    current, _ = actor.compute_log_prob(batch)
    batch.batch[tj.OLD_LOG_PROBS] = current - math.log(ratio) * mask  # every valid token starts at this ratio
    batch.batch[tj.ADVANTAGES] = adv * mask
    metrics = actor.update_policy(batch)
    assert metrics["actor/pg_loss"] == [pytest.approx(pg_loss, rel=1e-4)]
    assert metrics["actor/pg_clipfrac"] == [pytest.approx(clipfrac)]
    assert metrics["actor/ppo_kl"] == [pytest.approx(-math.log(ratio), rel=1e-4)]  # k1 of KL(old || new)


def test_entropy_bonus_gradient_ascends_the_entropy(processor):
    """With zero advantages the update's gradient is the bonus alone: -entropy_coeff * d(entropy),
    the entropy aggregated as the loss is (checked against autograd of agg_loss over the batch)."""
    batch = short_batch(processor)
    mask = batch.batch[tj.RESPONSE_MASK]
    actor = make_actor(processor, entropy_coeff=0.5, grad_clip=1e9)
    old, before = actor.compute_log_prob(batch)
    batch.batch[tj.OLD_LOG_PROBS] = old
    batch.batch[tj.ADVANTAGES] = torch.zeros_like(old)
    grads = capture_grads(actor)
    metrics = actor.update_policy(batch)
    assert metrics["actor/entropy"][0] == pytest.approx(before[mask.bool()].mean().item(), rel=1e-4)

    actor.model.zero_grad()
    steps = tj.valid_step_index(batch.batch[tj.NUM_STEPS])
    _, entropy = actor._log_prob_and_entropy(actor._forward_steps(batch, steps), batch, steps)  # [S, A]
    per_token = torch.zeros(2, T, A).index_put((steps[:, 0], steps[:, 1]), entropy).view(2, T * A)
    core_algos.agg_loss(per_token, mask, "seq-mean-token-mean").backward()
    expected = {n: -0.5 * p.grad for n, p in actor.model.named_parameters() if p.grad is not None}
    assert grads.keys() == expected.keys() and len(grads) > 10
    for name in grads:
        assert torch.allclose(grads[name], expected[name], atol=1e-7, rtol=1e-4), name


def test_gradient_is_clipped_to_grad_clip(processor):
    actor = make_actor(processor, grad_clip=1e-3)
    actor.optimizer = torch.optim.SGD(actor.model.parameters(), lr=1.0)  # the step is the clipped gradient
    batch = short_batch(processor)
    old, _ = actor.compute_log_prob(batch)
    batch.batch[tj.OLD_LOG_PROBS] = old
    batch.batch[tj.ADVANTAGES] = batch.batch[tj.RESPONSE_MASK]
    before = {n: p.detach().clone() for n, p in actor.model.named_parameters()}
    metrics = actor.update_policy(batch)
    step = torch.sqrt(sum(((p.detach() - before[n]) ** 2).sum() for n, p in actor.model.named_parameters()))
    assert metrics["actor/grad_norm"][0] > 0.01  # the norm before clipping is reported
    assert step.item() == pytest.approx(1e-3, rel=1e-3)


def test_every_epoch_takes_its_optimizer_steps(processor):
    actor = make_actor(processor, ppo_epochs=2, ppo_mini_batch_size=2)
    batch = short_batch(processor)
    old, _ = actor.compute_log_prob(batch)
    batch.batch[tj.OLD_LOG_PROBS] = old
    batch.batch[tj.ADVANTAGES] = batch.batch[tj.RESPONSE_MASK]
    metrics = actor.update_policy(batch)
    assert len(metrics["actor/grad_norm"]) == 2 and len(metrics["actor/pg_loss"]) == 2
    # the second epoch starts off-policy: the first step raised the log-probs of the taken actions
    assert metrics["actor/ppo_kl"][0] == pytest.approx(0.0, abs=1e-5) and metrics["actor/ppo_kl"][1] < -1e-4
    assert metrics["actor/pg_loss"][1] < metrics["actor/pg_loss"][0] - 1e-4


@pytest.mark.parametrize("shuffle", [False, True])
def test_mini_batches_follow_the_seeded_shuffle(processor, shuffle):
    """One trajectory per mini-batch, advantage i + 1 for episode i and lr 0 (ratio stays 1): each
    step's pg_loss names the episode it trained on, so the metrics spell out the visiting order."""
    actor = make_actor(processor, ppo_mini_batch_size=1, ppo_epochs=2, shuffle=shuffle)
    actor.optimizer = torch.optim.SGD(actor.model.parameters(), lr=0.0)
    batch = short_batch(processor, n=4, finish_steps=(3, 3, 3, 3))
    old, _ = actor.compute_log_prob(batch)
    batch.batch[tj.OLD_LOG_PROBS] = old
    batch.batch[tj.ADVANTAGES] = torch.arange(1.0, 5.0).unsqueeze(-1) * batch.batch[tj.RESPONSE_MASK]
    visited = [round(-loss) - 1 for loss in actor.update_policy(batch, seed=3)["actor/pg_loss"]]
    if shuffle:
        g = torch.Generator().manual_seed(3)  # one generator for the whole update: each epoch reshuffles
        expected = torch.randperm(4, generator=g).tolist() + torch.randperm(4, generator=g).tolist()
        assert expected[:4] != [0, 1, 2, 3] and expected[:4] != expected[4:]  # the seed shows a shuffle
    else:
        expected = [0, 1, 2, 3] * 2
    assert visited == expected


def test_filler_pieces_change_nothing(processor, monkeypatch):
    """Zero-weight replays (run so every rank makes as many forwards as the busiest one) add no
    gradient and no metric: one rank's update with 3 extra fillers equals the one without."""
    batch = short_batch(processor, n=3, finish_steps=(17, 3, 10), seed=2)
    results = []
    for extra in (0, 3):
        actor = make_actor(processor)
        batch.batch[tj.OLD_LOG_PROBS] = actor.compute_log_prob(batch)[0] - 0.1 * batch.batch[tj.RESPONSE_MASK]
        batch.batch[tj.ADVANTAGES] = torch.tensor([[1.0], [-2.0], [0.5]]) * batch.batch[tj.RESPONSE_MASK]
        monkeypatch.setattr(step_batches, "pieces_on_all_ranks", lambda local, device, extra=extra: local + extra)
        grads = capture_grads(actor)
        results.append((grads, actor.update_policy(batch)))
    (grads0, metrics0), (grads3, metrics3) = results
    assert grads0.keys() == grads3.keys() and len(grads0) > 10
    for name in grads0:
        assert torch.allclose(grads0[name], grads3[name], atol=1e-7, rtol=1e-5), name
    for key in ("actor/pg_loss", "actor/pg_clipfrac", "actor/ppo_kl", "actor/entropy", "actor/grad_norm"):
        assert metrics3[key] == pytest.approx(metrics0[key], rel=1e-5, abs=1e-7), key


def test_left_pad_copies_read_only_prompts_without_a_warning():
    """Prompts that come through Ray are read-only numpy arrays: padded as any others, and silently
    (torch.as_tensor would warn once per run about writing to non-writable memory)."""
    import warnings

    prompts = [np.array([1, 5, 7]), np.array([1, 9]), []]
    prompts[0].setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        input_ids, attention_mask = tj.left_pad(prompts, pad_id=0)
    assert input_ids.tolist() == [[1, 5, 7], [0, 1, 9], [0, 0, 0]]
    assert attention_mask.tolist() == [[1, 1, 1], [0, 1, 1], [0, 0, 0]]
