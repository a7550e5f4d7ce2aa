"""The SFT learner: cross-entropy over action tokens fits a handful of demo frames."""

import numpy as np
import torch

from verl.models.openvla_oft import ACTION_TOKEN_BEGIN
from verl.models.openvla_oft.processor import OpenVLAProcessor
from verl.models.openvla_oft.tiny import build_tiny_model, build_tiny_tokenizer
from verl.utils.dataset import sft_dataset as sd
from verl.workers.actor.bc_learner import BCSettings, BehaviorCloningLearner, action_token_loss
from verl.workers.policy_inputs import PolicyInputBuilder

from verl.utils.dataset.demo_episode import DemoEpisode


def smooth_demo(seed: int, instruction: str, steps: int = 3) -> DemoEpisode:
    """A demo moving in one direction (with a little noise) and closing the gripper halfway, like a
    scripted reach-and-grasp: chunk labels are structured, as real demos' are."""
    rng = np.random.default_rng(seed)
    direction = rng.uniform(-0.8, 0.8, size=6)
    arm = np.tile(direction, (steps, 1)) + rng.normal(0, 0.02, (steps, 6))
    gripper = np.where(np.arange(steps) < steps // 2, -1.0, 1.0)[:, None]
    frames = rng.integers(0, 256, size=(steps, 64, 64, 3), dtype=np.uint8)
    return DemoEpisode(instruction=instruction, images={"agentview": frames},
                       actions=np.concatenate([arm, gripper], axis=1).astype(np.float32), source=f"smooth-{seed}")


def test_action_token_loss_is_cross_entropy_and_counts_the_gripper_dim():
    logits = torch.randn(2, 14, 256)
    target = torch.randint(0, 256, (2, 14))
    loss, metrics = action_token_loss(logits, target, action_dim=7)
    expected = -torch.log_softmax(logits, -1).gather(-1, target[..., None]).mean()
    torch.testing.assert_close(loss, expected)
    perfect = torch.nn.functional.one_hot(target, 256).float() * 10
    perfect[:, 6, :] = 0  # first action's gripper token wrong for both rows
    perfect[:, 6, (target[:, 6] + 1) % 256] = 10
    _, m = action_token_loss(perfect, target, action_dim=7)
    assert abs(m["token_acc"].item() - 26 / 28) < 1e-6 and m["gripper_acc"].item() == 0.5


def test_sft_fits_a_handful_of_frames():
    torch.manual_seed(0)
    processor = OpenVLAProcessor(build_tiny_tokenizer())
    demos = [smooth_demo(0, "pick up the soup"), smooth_demo(1, "pick up the milk")]
    entry = sd.dataset_statistics(demos, benchmark="libero")
    data = sd.DemoFrameDataset(demos, benchmark="libero", cameras=["agentview"], action_chunk=8,
                               action_stats=entry["action"], tokenize=processor.prompt_token_ids)
    # what SFT from scratch needs of the tiny architecture: 4 decoder layers, width 128, attention that
    # tells positions apart at init (the 56 action slots enter as identical zero embeddings)
    model = build_tiny_model(seed=0, qk_init_std=0.1, llm_layers=4, llm_hidden=128)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    learner = BehaviorCloningLearner(BCSettings(micro_batch_size=6, grad_clip=1.0, action_dim=7), model,
                                     PolicyInputBuilder(processor.preprocess_images, 32000, torch.device("cpu")), optimizer)
    batch = data.batch(range(len(data)))
    first = learner.evaluate(batch)
    steps = [learner.train_step(batch) for _ in range(100)]
    losses = [out["sft/loss"][0] for out in steps]
    assert all(out["timing/update"][0] > 0 for out in steps)  # the worker's own time for the step
    after = learner.evaluate(batch)
    n = after["sft_val_sum/count"][0]
    assert losses[-1] < 0.25 * losses[0]
    assert after["sft_val_sum/loss"][0] / n < 0.25 * first["sft_val_sum/loss"][0] / n
    assert after["sft_val_sum/token_acc"][0] / n >= 0.9
    # the greedy tokens the rollout would sample are the labels
    with torch.no_grad():
        inputs = learner.inputs(list(batch.non_tensor_batch[sd.PROMPT_IDS]), batch.batch[sd.IMAGES])
        tokens, _ = model.sample_action_tokens(**inputs, greedy=True)
    assert (tokens == batch.batch[sd.ACTION_TOKENS]).float().mean().item() >= 0.9


def test_plain_openvla_sft_is_teacher_forced_over_its_7_tokens():
    """Plain OpenVLA: one action per call, 7 causal tokens; the loss at token k must not see token k
    (teacher forcing shifts by one), so a model cannot copy its labels: changing a later label leaves
    earlier logits unchanged."""
    torch.manual_seed(0)
    processor = OpenVLAProcessor(build_tiny_tokenizer())
    demos = [smooth_demo(0, "pick up the soup")]
    entry = sd.dataset_statistics(demos, benchmark="libero")
    data = sd.DemoFrameDataset(demos, benchmark="libero", cameras=["agentview"], action_chunk=1,
                               action_stats=entry["action"], tokenize=processor.prompt_token_ids)
    batch = data.batch(range(len(data)))
    assert batch.batch[sd.ACTION_TOKENS].shape == (3, 7)
    model = build_tiny_model(seed=0, parallel_decoding=False, action_chunk=1)
    inputs = PolicyInputBuilder(processor.preprocess_images, 32000, torch.device("cpu"))(
        list(batch.non_tensor_batch[sd.PROMPT_IDS]), batch.batch[sd.IMAGES])
    tokens = batch.batch[sd.ACTION_TOKENS]
    changed = tokens.clone()
    changed[:, 4] = ACTION_TOKEN_BEGIN + (changed[:, 4] - ACTION_TOKEN_BEGIN + 100) % 256
    with torch.no_grad():
        a, b = model(**inputs, action_tokens=tokens), model(**inputs, action_tokens=changed)
    torch.testing.assert_close(a[:, :5], b[:, :5])  # logits for tokens 0..4 never see token 4
    assert not torch.allclose(a[:, 5:], b[:, 5:])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    learner = BehaviorCloningLearner(BCSettings(micro_batch_size=3, grad_clip=1.0, action_dim=7), model,
                                     PolicyInputBuilder(processor.preprocess_images, 32000, torch.device("cpu")), optimizer)
    losses = [learner.train_step(batch)["sft/loss"][0] for _ in range(15)]
    assert losses[-1] < losses[0]
