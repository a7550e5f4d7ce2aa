"""core_algos against values worked out by hand."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from verl.trainer.ppo import core_algos as ca
from verl.utils.torch_functional import entropy_from_logits, logprobs_from_logits


def test_grpo_advantage_hand_values():
    # two groups of 3 samples; rewards on the last valid token only (sum = score)
    rewards = torch.zeros(6, 4)
    mask = torch.ones(6, 4)
    mask[0, 3] = 0  # a shorter trajectory
    scores = [1.0, 0.0, 0.0, 5.0, 5.0, 5.0]
    for i, s in enumerate(scores):
        rewards[i, 2] = s
    index = np.array(["a", "a", "a", "b", "b", "b"], dtype=object)
    adv, ret = ca.compute_grpo_outcome_advantage(rewards, mask, index, epsilon=1e-6)
    # group a: mean 1/3, unbiased std sqrt(((2/3)^2 + 2 (1/3)^2) / 2) = sqrt(1/3)
    std = math.sqrt(1 / 3)
    assert adv[0, 0].item() == pytest.approx((2 / 3) / (std + 1e-6), rel=1e-5)
    assert adv[1, 1].item() == pytest.approx((-1 / 3) / (std + 1e-6), rel=1e-5)
    assert adv[0, 3].item() == 0.0  # masked token gets no advantage
    # group b: all equal -> zero advantage, not NaN
    assert torch.all(adv[3:] == 0)
    assert torch.equal(adv, ret)


def test_grpo_without_std_and_singleton_group():
    rewards = torch.tensor([[1.0], [3.0], [2.0]])
    mask = torch.ones(3, 1)
    index = np.array([0, 0, 1])
    adv, _ = ca.compute_grpo_outcome_advantage(rewards, mask, index, norm_adv_by_std_in_grpo=False)
    assert adv[:, 0].tolist() == pytest.approx([-1.0, 1.0, 2.0])  # singleton: mean 0, std 1


def test_gae_matches_manual_recursion():
    gamma, lam = 0.9, 0.8
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.6, 0.7]])
    mask = torch.ones(1, 3)
    # manual: delta_t = r_t + gamma V_{t+1} - V_t, V_3 = 0
    d2 = 1.0 + 0 - 0.7
    d1 = 0.0 + gamma * 0.7 - 0.6
    d0 = 0.0 + gamma * 0.6 - 0.5
    a2 = d2
    a1 = d1 + gamma * lam * a2
    a0 = d0 + gamma * lam * a1
    raw = torch.tensor([a0, a1, a2])
    adv, ret = ca.compute_gae_advantage_return(rewards, values, mask, gamma, lam)
    assert ret[0].tolist() == pytest.approx((raw + values[0]).tolist(), rel=1e-6)
    whitened = (raw - raw.mean()) / torch.sqrt(raw.var(unbiased=True) + 1e-8)
    assert adv[0].tolist() == pytest.approx(whitened.tolist(), rel=1e-5)


def test_gae_skips_masked_gap():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 99.0, 0.7]])  # the masked middle value must be ignored
    mask = torch.tensor([[1.0, 0.0, 1.0]])
    _, ret = ca.compute_gae_advantage_return(rewards, values, mask, gamma=1.0, lam=1.0)
    assert ret[0, 0].item() == pytest.approx(1.0)  # bootstraps over the gap to the reward
    assert ret[0, 2].item() == pytest.approx(1.0)


def test_policy_loss_clip_higher_hand_values():
    old = torch.zeros(1, 4)
    # ratios 1.5, 0.5, 1.1, 0.5 with advantages +1, +1, -1, -1
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1, 0.5]]))
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    mask = torch.ones(1, 4)
    loss, m = ca.compute_policy_loss(old, new, adv, mask, clip_ratio_low=0.2, clip_ratio_high=0.28)
    # token 0: A>0, ratio 1.5 -> clipped at 1.28: loss -1.28 (clipped branch active)
    # token 1: A>0, ratio 0.5 -> max(-0.5, -0.8) = -0.5 (unclipped)
    # token 2: A<0, ratio 1.1 -> max(1.1, 1.1) = 1.1
    # token 3: A<0, ratio 0.5 -> max(0.5, 0.8) = 0.8 (clipped branch active)
    assert loss.item() == pytest.approx((-1.28 - 0.5 + 1.1 + 0.8) / 4, rel=1e-5)
    assert m["pg_clipfrac"].item() == pytest.approx(0.5)
    expected_kl = -(new[0]).mean().item()
    assert m["ppo_kl"].item() == pytest.approx(expected_kl, rel=1e-5)


def test_policy_loss_dual_clip_caps_negative_advantage():
    old = torch.zeros(1, 1)
    new = torch.log(torch.tensor([[10.0]]))
    adv = torch.tensor([[-1.0]])
    loss, m = ca.compute_policy_loss(old, new, adv, torch.ones(1, 1), clip_ratio_c=3.0)
    assert loss.item() == pytest.approx(3.0)
    assert m["pg_clipfrac_lower"].item() == 1.0
    with pytest.raises(ValueError, match="clip_ratio_c"):
        ca.compute_policy_loss(old, new, adv, torch.ones(1, 1), clip_ratio_c=0.5)


def test_policy_loss_gradient_zero_when_clipped():
    old = torch.zeros(1, 1)
    new = torch.log(torch.tensor([[1.5]])).requires_grad_()
    loss, _ = ca.compute_policy_loss(old, new, torch.ones(1, 1), torch.ones(1, 1))
    loss.backward()
    assert new.grad.item() == 0.0


def test_agg_loss_modes():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0], [7.0, 7.0, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert ca.agg_loss(loss, mask, "token-mean").item() == pytest.approx(10 / 4)
    assert ca.agg_loss(loss, mask, "seq-mean-token-mean").item() == pytest.approx((2 + 4) / 2)
    assert ca.agg_loss(loss, mask, "seq-mean-token-sum").item() == pytest.approx((6 + 4) / 2)
    with pytest.raises(ValueError, match="valid"):
        ca.agg_loss(loss, mask, "nope")


def test_filter_groups_inclusive_bounds():
    # 8 samples per group: 0, 1, 7, 8 successes
    success = np.concatenate([np.zeros(8), [1] + [0] * 7, [1] * 7 + [0], np.ones(8)])
    index = np.repeat(np.arange(4), 8)
    keep, rates = ca.filter_groups_by_accuracy(success, index, 0.1, 0.9)
    assert rates == {0: 0.0, 1: 0.125, 2: 0.875, 3: 1.0}
    assert keep.tolist() == [False] * 8 + [True] * 16 + [False] * 8
    keep, _ = ca.filter_groups_by_accuracy(success, index, 0.125, 0.875)  # exactly on the bounds
    assert keep[8:24].all()


def test_dynamic_sampling_rates_leave_faulted_episodes_out():
    """An episode an env fault ended is neither a success nor a failure: [1, 0, fault, fault] is a
    0.5 group (kept by [0.1, 0.9]), [1, fault, fault, fault] a 1.0 group (dropped), and a group
    that faulted entirely has no rate (dropped)."""
    success = np.array([1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0], dtype=float)
    index = np.repeat([0, 1, 2], 4)
    valid = np.array([1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0], dtype=bool)
    keep, rates = ca.filter_groups_by_accuracy(success, index, 0.1, 0.9, valid=valid)
    assert rates[0] == 0.5 and rates[1] == 1.0 and np.isnan(rates[2])
    assert keep.tolist() == [True] * 4 + [False] * 8
    # without the mask, faults would count as failures: group 1 would look like a 0.25 group and be kept
    keep_unmasked, _ = ca.filter_groups_by_accuracy(success, index, 0.1, 0.9)
    assert keep_unmasked[4:8].all()


def test_kl_estimators():
    lp = torch.log(torch.tensor([0.5]))
    ref = torch.log(torch.tensor([0.25]))
    k1 = math.log(2)
    assert ca.kl_penalty(lp, ref, "kl").item() == pytest.approx(k1)
    assert ca.kl_penalty(lp, ref, "abs").item() == pytest.approx(k1)
    assert ca.kl_penalty(lp, ref, "mse").item() == pytest.approx(0.5 * k1 * k1)
    assert ca.kl_penalty(lp, ref, "low_var_kl").item() == pytest.approx(0.5 - math.log(0.5) - 1)
    with pytest.raises(ValueError, match="low_var_kl"):
        ca.kl_penalty(lp, ref, "k9")


def test_adaptive_kl_controller():
    ctl = ca.AdaptiveKLController(0.1, target_kl=1.0, horizon=10)
    ctl.update(current_kl=2.0, n_steps=5)  # error clipped to 0.2 -> *1.1
    assert ctl.value == pytest.approx(0.11)


def test_logprobs_and_entropy_from_logits():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    assert logprobs_from_logits(logits, torch.tensor([1])).item() == pytest.approx(math.log(0.25))
    expected_h = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert entropy_from_logits(logits).item() == pytest.approx(expected_h)
    assert ca.compute_entropy_loss(logits.unsqueeze(0), torch.ones(1, 1)).item() == pytest.approx(expected_h)


def test_unknown_estimator_lists_valid_names():
    with pytest.raises(ValueError, match="algorithm.adv_estimator='reinforce'.*gae.*grpo"):
        ca.get_adv_estimator("reinforce")


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_token_weights_split_pieces_sum_to_agg_loss(mode):
    """Pieces of a mini-batch weighted by token_loss_weights add up to the whole mini-batch loss."""
    g = torch.Generator().manual_seed(0)
    loss = torch.randn(4, 12, generator=g)
    mask = (torch.rand(4, 12, generator=g) > 0.3).float()
    mask[3] = 0  # an empty trajectory
    w = ca.token_loss_weights(mask, mode)
    whole = ca.agg_loss(loss, mask, mode)
    pieces = sum((loss[:, i:i + 5] * w[:, i:i + 5]).sum() for i in range(0, 12, 5))
    assert pieces.item() == pytest.approx(whole.item(), rel=1e-6)
    old = torch.zeros(4, 12)
    adv = torch.randn(4, 12, generator=g)
    full, _ = ca.compute_policy_loss(old, loss * 0.1, adv, mask, loss_agg_mode=mode)
    weighted, _ = ca.compute_policy_loss(old, loss * 0.1, adv, mask, loss_agg_mode=mode, token_weights=w)
    assert weighted.item() == pytest.approx(full.item(), rel=1e-5)


@pytest.mark.parametrize("ratio, adv, expected", [
    (1.25, 1.0, -1.25),  # A > 0 inside [1 - 0.1, 1 + 0.3]: unclipped (a swapped upper bound 1.1 would clip)
    (1.5, 1.0, -1.3),  # A > 0 above the upper bound: capped at 1 + clip_ratio_high
    (0.8, -1.0, 0.9),  # A < 0 below 1 - 0.1: held at 0.9 (a swapped lower bound 0.7 would not clip)
    (0.5, -1.0, 0.9),  # A < 0 below the lower bound: held at 1 - clip_ratio_low
])
def test_policy_loss_clip_bounds_are_asymmetric(ratio, adv, expected):
    """clip_ratio_low bounds the ratio from below, clip_ratio_high from above (DAPO's clip-higher),
    one token at a time so that swapping the two bounds cannot cancel out in a mean."""
    old = torch.zeros(1, 1)
    new = torch.log(torch.tensor([[ratio]]))
    loss, m = ca.compute_policy_loss(old, new, torch.tensor([[adv]]), torch.ones(1, 1),
                                     clip_ratio_low=0.1, clip_ratio_high=0.3)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    clipped = expected != pytest.approx(-adv * ratio)
    assert m["pg_clipfrac"].item() == float(clipped)


def test_policy_loss_masked_tokens_do_not_count():
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[2.0, 1.0, 1.0]]))  # the masked token would be clipped
    adv = torch.tensor([[1.0, 2.0, 4.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0]])
    loss, m = ca.compute_policy_loss(old, new, adv, mask)
    assert loss.item() == pytest.approx(-3.0)
    assert m["pg_clipfrac"].item() == 0.0


def test_value_loss_hand_values():
    """0.5 * max((V - R)^2, (V_clip - R)^2), V_clip = V_old + clip(V - V_old, -c, c)."""
    old_values = torch.tensor([[0.0, 0.0, 0.0, 5.0]])
    values = torch.tensor([[1.0, 0.3, -1.0, 5.0]])
    returns = torch.tensor([[0.0, 1.0, -1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    loss, m = ca.compute_value_loss(values, old_values, returns, mask, cliprange_value=0.5)
    # token 0: V 1.0 clipped to 0.5: max(1.0, 0.25) = 1.0 (unclipped branch larger)
    # token 1: V 0.3 inside the range: max(0.49, 0.49) = 0.49
    # token 2: V -1.0 clipped to -0.5, R -1: max(0.0, 0.25) = 0.25 (clipped branch active)
    # token 3: masked
    assert loss.item() == pytest.approx(0.5 * (1.0 + 0.49 + 0.25) / 3, rel=1e-5)
    assert m["vf_clipfrac"].item() == pytest.approx(1 / 3)
    seq_sum, _ = ca.compute_value_loss(values, old_values, returns, mask, 0.5, loss_agg_mode="seq-mean-token-sum")
    assert seq_sum.item() == pytest.approx(0.5 * (1.0 + 0.49 + 0.25), rel=1e-5)


def test_value_loss_gradient_stops_at_the_clip():
    """Once the clipped branch is the larger one, the loss no longer depends on V (PPO's value clip)."""
    values = torch.tensor([[-1.0]], requires_grad=True)
    loss, _ = ca.compute_value_loss(values, torch.zeros(1, 1), torch.tensor([[-1.0]]), torch.ones(1, 1), 0.5)
    loss.backward()
    assert values.grad.item() == 0.0
    values = torch.tensor([[0.3]], requires_grad=True)
    loss, _ = ca.compute_value_loss(values, torch.zeros(1, 1), torch.tensor([[1.0]]), torch.ones(1, 1), 0.5)
    loss.backward()
    assert values.grad.item() == pytest.approx(0.3 - 1.0)  # d/dV 0.5 (V - R)^2


def test_kl_estimators_when_the_policy_is_less_likely_than_the_reference():
    """k1 is negative here: `abs` must flip it, k2 and k3 stay positive, k3 is clamped at 10."""
    lp = torch.log(torch.tensor([0.25]))
    ref = torch.log(torch.tensor([0.5]))
    k1 = -math.log(2)
    assert ca.kl_penalty(lp, ref, "kl").item() == pytest.approx(k1)
    assert ca.kl_penalty(lp, ref, "abs").item() == pytest.approx(-k1)
    assert ca.kl_penalty(lp, ref, "mse").item() == pytest.approx(0.5 * k1 * k1)
    assert ca.kl_penalty(lp, ref, "low_var_kl").item() == pytest.approx(2.0 - math.log(2.0) - 1)
    # log(ref / p) = 20: exp(20) - 20 - 1 is ~4.9e8 unclamped
    far = ca.kl_penalty(torch.tensor([-20.0]), torch.tensor([0.0]), "low_var_kl")
    assert far.item() == 10.0
    assert ca.kl_penalty(torch.tensor([0.0]), torch.tensor([-20.0]), "low_var_kl").item() == 10.0  # 19 unclamped
    assert ca.kl_penalty(torch.tensor([0.0]), torch.tensor([-5.0]), "low_var_kl").item() == pytest.approx(
        math.exp(-5.0) + 4.0)  # inside the clamp: unchanged


def test_grpo_groups_are_normalised_apart():
    """Each group uses its own mean and std, and the rows of a group need not be adjacent."""
    scores = torch.tensor([1.0, 10.0, 0.0, 30.0, 0.0, 20.0])
    index = np.array(["a", "b", "a", "b", "a", "b"], dtype=object)
    adv, _ = ca.compute_grpo_outcome_advantage(scores.unsqueeze(-1), torch.ones(6, 1), index, epsilon=0.0)
    a = torch.tensor([1.0, 0.0, 0.0])
    b = torch.tensor([10.0, 30.0, 20.0])
    assert adv[[0, 2, 4], 0].tolist() == pytest.approx(((a - a.mean()) / a.std()).tolist(), rel=1e-6)
    assert adv[[1, 3, 5], 0].tolist() == pytest.approx(((b - b.mean()) / b.std()).tolist(), rel=1e-6)


def test_fixed_kl_controller_keeps_its_value_and_adaptive_lowers_it_below_target():
    fixed = ca.FixedKLController(0.05)
    fixed.update(current_kl=10.0, n_steps=100)
    assert fixed.value == 0.05
    ctl = ca.AdaptiveKLController(0.1, target_kl=1.0, horizon=10)
    ctl.update(current_kl=0.9, n_steps=10)  # error -0.1 -> *0.9
    assert ctl.value == pytest.approx(0.09)


# ------------------------------------------------------------------------------ estimators over model calls
def _gae_inputs():
    """3 episodes x 4 model calls x 2 tokens per call (reward 5 on success, on the last executed token):
    0 succeeds at its 3rd call, which executed only 1 of its 2 actions; 1 runs the whole budget and
    fails; 2 faulted (the trainer zeroes a faulted episode's mask)."""
    mask = torch.zeros(3, 8)
    mask[0, :5] = 1  # calls 0, 1 and the first action of call 2
    mask[1, :] = 1
    rewards = torch.zeros(3, 8)
    rewards[0, 4] = 5.0
    values = torch.tensor([[0.5, 1.0, 2.0, 9.0], [0.2, 0.1, 0.3, 0.4], [7.0, 7.0, 0.0, 0.0]])
    return ca.AdvantageInputs(rewards, mask, np.array(["a", "b", "c"], dtype=object), tokens_per_step=2, values=values)


def test_gae_over_model_calls_by_hand():
    g, lam = 0.9, 0.8
    cfg = SimpleNamespace(gamma=g, lam=lam, whiten_advantages=False)
    out = ca.get_adv_estimator("gae").fn(_gae_inputs(), cfg)
    # episode 0: success at call 2, terminal (V after the end = 0); the padded call 3's value is ignored
    a2 = 5.0 - 2.0
    a1 = (g * 2.0 - 1.0) + g * lam * a2
    a0 = (g * 1.0 - 0.5) + g * lam * a1
    # episode 1: cut by the step budget: also terminal, reward 0, no bootstrap
    b3 = -0.4
    b2 = (g * 0.4 - 0.3) + g * lam * b3
    b1 = (g * 0.3 - 0.1) + g * lam * b2
    b0 = (g * 0.1 - 0.2) + g * lam * b1
    expected_returns = torch.tensor([[a0 + 0.5, a1 + 1.0, a2 + 2.0, 0.0], [b0 + 0.2, b1 + 0.1, b2 + 0.3, b3 + 0.4],
                                     [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(out.step_returns, expected_returns)
    # advantages broadcast to each call's VALID tokens: call 2 of episode 0 executed one action only
    expected_adv = torch.tensor([[a0, a0, a1, a1, a2, 0.0, 0.0, 0.0], [b0, b0, b1, b1, b2, b2, b3, b3], [0.0] * 8])
    torch.testing.assert_close(out.advantages, expected_adv)
    assert out.returns[0, :5].tolist() == pytest.approx([a0 + 0.5, a0 + 0.5, a1 + 1.0, a1 + 1.0, a2 + 2.0])


def test_gae_whitening_is_over_valid_model_calls():
    cfg = SimpleNamespace(gamma=0.9, lam=0.8, whiten_advantages=True)
    inputs = _gae_inputs()
    raw = ca.get_adv_estimator("gae").fn(inputs, SimpleNamespace(gamma=0.9, lam=0.8, whiten_advantages=False))
    out = ca.get_adv_estimator("gae").fn(inputs, cfg)
    calls = torch.cat([raw.advantages[0, [0, 2, 4]], raw.advantages[1, ::2]])  # the 7 valid calls, once each
    whitened = (calls - calls.mean()) / torch.sqrt(calls.var(unbiased=True) + 1e-8)
    got = torch.cat([out.advantages[0, [0, 2, 4]], out.advantages[1, ::2]])
    torch.testing.assert_close(got, whitened)
    assert (out.advantages[2] == 0).all() and (out.advantages[0, 5:] == 0).all()
    torch.testing.assert_close(out.step_returns, raw.step_returns)  # returns use the raw advantages


def test_grpo_estimator_leaves_faulted_episodes_out_of_the_baseline():
    mask = torch.ones(3, 4)
    mask[2] = 0  # faulted
    rewards = torch.zeros(3, 4)
    rewards[0, 3] = 1.0
    inputs = ca.AdvantageInputs(rewards, mask, np.array(["g", "g", "g"], dtype=object), tokens_per_step=2)
    out = ca.get_adv_estimator("grpo").fn(inputs, SimpleNamespace(norm_adv_by_std_in_grpo=True))
    s = 1 / math.sqrt(2)  # successes [1, 0]: mean 0.5, unbiased std 1/sqrt(2)
    assert out.advantages[:, 0].tolist() == pytest.approx([0.5 / s, -0.5 / s, 0.0], rel=1e-5)
    assert out.step_returns is None


def test_estimator_registry():
    assert ca.get_adv_estimator("gae").needs_critic and not ca.get_adv_estimator("grpo").needs_critic
    with pytest.raises(ValueError, match="registered twice"):
        ca.register_adv_est("grpo")(lambda inputs, cfg: None)
