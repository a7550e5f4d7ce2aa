#!/usr/bin/env python
"""A supervised ("SFT") tiny OpenVLA-OFT for the built-in reach task: the starting point of the
learning test, as a real SFT checkpoint is the starting point of SimpleVLA-RL.

The demonstrations head for the named target but too slowly (`--speed`, in normalised action
units), so the greedy SFT policy points the right way yet mostly stops short of the target: a
policy that RL can improve, the way SimpleVLA-RL improves an imperfect SFT policy. The action
labels are soft (a Gaussian of `--sigma-bins` over the 256 bins), so the policy keeps the spread
that sampling at temperature 1.6 explores.

    python scripts/make_reach_sft_checkpoint.py --out DIR [--speed 0.1] [--sigma-bins 16] [--steps 150]
        [--num-targets 4] [--trials 32] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def demonstrations(num_targets: int, trials: int, speed: float | list[float]):
    """(instructions, images uint8 [N, 1, 224, 224, 3], labels [N, 8, 7] normalised actions).

    `speed`: one speed for every target, or one per target (targets of different difficulty)."""
    speeds = speed if isinstance(speed, list) else [speed] * num_targets
    if len(speeds) != num_targets:
        raise SystemExit(f"--speed has {len(speeds)} values for {num_targets} targets: give one, or one per target")
    from verl.envs.base import EnvSpec
    from verl.envs.reach_env import ReachAdapter, ReachConfig

    adapter = ReachAdapter(reach=ReachConfig(num_targets=num_targets))
    instructions, images, labels = [], [], []
    for task in range(num_targets):
        for trial in range(trials):
            obs = adapter.reset(EnvSpec("reach", "reach", task, trial))
            direction = adapter.target_position() - adapter.agent_position
            action = np.zeros(7)
            action[:2] = speeds[task] * direction / np.linalg.norm(direction)
            instructions.append(obs.instruction)
            images.append(obs.images)
            labels.append(np.tile(action, (8, 1)))  # one chunk of 8 identical actions
    return instructions, np.stack(images), np.stack(labels)


def soft_bin_targets(labels: np.ndarray, sigma_bins: float) -> torch.Tensor:
    """Normalised actions [N, 8, 7] -> Gaussian targets over the 256 bins [N, 56, 256]."""
    from verl.models.openvla_oft import ACTION_TOKEN_BEGIN, ActionTokenizer

    bins = ActionTokenizer().encode(labels.reshape(len(labels), -1)) - ACTION_TOKEN_BEGIN  # [N, 56]
    grid = np.arange(256)
    weights = np.exp(-0.5 * ((grid[None, None, :] - bins[..., None]) / sigma_bins) ** 2)
    return torch.as_tensor(weights / weights.sum(-1, keepdims=True), dtype=torch.float32)


def train(out: Path, speed: float | list[float], sigma_bins: float, steps: int, num_targets: int, trials: int, seed: int,
          batch_size: int = 16, lr: float = 1e-3) -> dict:
    from verl.models.openvla_oft import OpenVLAProcessor, save_openvla_checkpoint
    from verl.models.openvla_oft.tiny import build_tiny_model, build_tiny_tokenizer, tiny_dataset_statistics

    torch.manual_seed(seed)
    model = build_tiny_model(seed=seed)
    processor = OpenVLAProcessor(build_tiny_tokenizer())
    instructions, images, labels = demonstrations(num_targets, trials, speed)
    targets = soft_bin_targets(labels, sigma_bins)
    input_ids, attention_mask = processor.tokenize_prompts(instructions)
    pixel_values = processor.preprocess_images(torch.from_numpy(images))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    start = time.time()
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(instructions), (batch_size,), generator=generator)
        logits = model(input_ids[idx], attention_mask[idx], pixel_values[idx])  # [B, 56, 256]
        loss = -(targets[idx] * torch.log_softmax(logits, dim=-1)).sum(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        greedy = model(input_ids, attention_mask, pixel_values).argmax(-1)  # [N, 56]
    wanted = targets.argmax(-1)
    within_2_bins = (greedy - wanted).abs().le(2).float().view(len(instructions), 8, 7)[..., :2].mean().item()
    save_openvla_checkpoint(model, out, processor=processor, norm_stats=tiny_dataset_statistics(), overwrite=True)
    report = {"out": str(out), "final_loss": loss.item(), "greedy_moves_within_2_bins": within_2_bins,
              "train_seconds": time.time() - start, "speed": speed, "sigma_bins": sigma_bins, "steps": steps}
    (out / "sft_report.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--speed", default="0.1",
                        help="demonstrated |action| toward the target (of 1); a comma list gives one per target")
    parser.add_argument("--sigma-bins", type=float, default=16.0, help="label spread over the 256 action bins")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--num-targets", type=int, default=4)
    parser.add_argument("--trials", type=int, default=32, help="demonstrations per target")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    speeds = [float(v) for v in args.speed.split(",")]
    report = train(args.out, speeds[0] if len(speeds) == 1 else speeds, args.sigma_bins, args.steps, args.num_targets, args.trials, args.seed,
                   batch_size=args.batch_size, lr=args.lr)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
