#!/usr/bin/env python
"""How far did training move a policy? Compare checkpoints' action-token distributions on the same
demo frames: how often each token's argmax bin (the greedy action) changed, against how far the
whole distribution moved (KL), and how each agrees with the demonstrator.

    python scripts/compare_policies.py BASE OTHER [OTHER ...] --demos DIR_OR_HDF5 [--unnorm-key libero_object]
        [--frames 512] [--temperature 0.5] [--out compare.json]

BASE is usually the SFT checkpoint and the OTHERs the RL run's `global_step_N` directories. Every
checkpoint sees the same frames (evenly spaced over all demo steps, the rollout's centred crop);
the demo actions are tokenised with BASE's dataset_statistics.json. Per OTHER, over all
frames x action tokens (e.g. 512 x 56):

- argmax_changed: fraction of tokens whose most likely bin differs from BASE's; `bin_shift_*` how
  far it moved (in bins; 1 bin = 2/255 of the normalised action range);
- kl_t1 / kl_at_t: mean KL(BASE || OTHER) per token of the softmax at temperature 1 / at --temperature;
- argmax_changed_by_base_margin: the same fraction within quartiles of BASE's top-1 minus top-2
  logit gap: if the greedy action changes mostly where BASE was nearly tied, small updates move the
  greedy policy more than they move the sampled one;
- per checkpoint (BASE too): entropy at --temperature, the demonstrator's bin as argmax
  (demo_exact) or within 8 bins (demo_near), and the demonstrator's mean negative log-likelihood.

Demo frames are the expert's states, not the states each policy visits; the figures say how the
policies differ where the expert goes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", type=Path, help="the reference checkpoint directory (e.g. the SFT policy)")
    parser.add_argument("others", type=Path, nargs="+", help="checkpoint directories compared with BASE")
    parser.add_argument("--demos", type=Path, required=True, help="LIBERO .hdf5 file, a folder of them, or a LeRobot dataset")
    parser.add_argument("--unnorm-key", default=None, help="dataset_statistics key (default: BASE's only key)")
    parser.add_argument("--frames", type=int, default=512, help="demo frames, evenly spaced over all demo steps")
    parser.add_argument("--temperature", type=float, default=0.5, help="the rollout's sampling temperature")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the figures")
    args = parser.parse_args(argv)
    for path in (args.base, *args.others):
        if not (path / "config.json").is_file():
            parser.error(f"{path} is not a checkpoint directory (no config.json)")
    if args.frames < 1 or args.temperature <= 0:
        parser.error("--frames must be >= 1 and --temperature > 0")
    return args


def demo_frames(base: Path, demos: Path, unnorm_key: str | None, frames: int):
    """The DemoFrameDataset of every demo under `demos` (tokenised with BASE's statistics) and the
    indices of `frames` evenly spaced samples."""
    from verl.models.openvla_oft import OpenVLAProcessor
    from verl.utils.dataset import sft_dataset as sd

    stats = json.loads((base / "dataset_statistics.json").read_text())
    if unnorm_key is None:
        if len(stats) != 1:
            raise SystemExit(f"{base}/dataset_statistics.json has keys {sorted(stats)}: pass --unnorm-key")
        unnorm_key = next(iter(stats))
    if unnorm_key not in stats:
        raise SystemExit(f"--unnorm-key {unnorm_key!r} not in {base}/dataset_statistics.json ({sorted(stats)})")
    config = json.loads((base / "config.json").read_text())
    episodes = sd.load_demos([str(demos)])
    data = sd.DemoFrameDataset(episodes, benchmark="libero", cameras=["agentview"],
                               action_chunk=int(config.get("action_chunk", 8)), action_stats=stats[unnorm_key]["action"],
                               tokenize=OpenVLAProcessor.from_pretrained(base).prompt_token_ids)
    indices = np.unique(np.linspace(0, len(data) - 1, num=min(frames, len(data))).round().astype(np.int64))
    return data, indices


@torch.no_grad()
def action_logits(checkpoint: Path, data, indices: np.ndarray, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw action-bin logits [N, A, 256] of `checkpoint` on the frames, and the demo bins [N, A]."""
    from verl.models.openvla_oft import ACTION_TOKEN_BEGIN, OpenVLAProcessor, load_openvla_checkpoint
    from verl.utils.dataset import sft_dataset as sd
    from verl.workers.policy_inputs import PolicyInputBuilder

    model = load_openvla_checkpoint(checkpoint).eval()
    inputs = PolicyInputBuilder(OpenVLAProcessor.from_pretrained(checkpoint).preprocess_images,
                                model.config.pad_token_id, torch.device("cpu"))
    logits, targets = [], []
    for start in range(0, len(indices), batch_size):
        batch = data.batch(indices[start:start + batch_size])
        tokens = batch.batch[sd.ACTION_TOKENS]
        logits.append(model(**inputs(list(batch.non_tensor_batch[sd.PROMPT_IDS]), batch.batch[sd.IMAGES]),
                            action_tokens=tokens).float())
        targets.append(tokens - ACTION_TOKEN_BEGIN)
    return torch.cat(logits), torch.cat(targets)


def policy_figures(logits: torch.Tensor, demo_bins: torch.Tensor, temperature: float) -> dict[str, float]:
    """One checkpoint alone: entropy at the sampling temperature and agreement with the demonstrator
    (demo_near: within the SFT metric near_acc's NEAR_BINS)."""
    from verl.workers.actor.bc_learner import NEAR_BINS

    log_p = torch.log_softmax(logits / temperature, dim=-1)
    greedy = logits.argmax(-1)
    return {
        "entropy_at_t": float(-(log_p.exp() * log_p).sum(-1).mean()),
        "demo_exact": float((greedy == demo_bins).float().mean()),
        "demo_near": float(((greedy - demo_bins).abs() <= NEAR_BINS).float().mean()),
        "demo_nll_t1": float(-torch.log_softmax(logits, -1).gather(-1, demo_bins[..., None]).mean()),
    }


def mean_kl(base: torch.Tensor, other: torch.Tensor, temperature: float) -> float:
    """Mean over tokens of KL(softmax(base / T) || softmax(other / T))."""
    log_p, log_q = torch.log_softmax(base / temperature, -1), torch.log_softmax(other / temperature, -1)
    return float((log_p.exp() * (log_p - log_q)).sum(-1).mean())


def compare(base: torch.Tensor, other: torch.Tensor, temperature: float) -> dict[str, object]:
    """How `other` differs from `base` on the same tokens (both [N, A, 256])."""
    base_argmax, other_argmax = base.argmax(-1), other.argmax(-1)
    changed = base_argmax != other_argmax
    shift = (base_argmax - other_argmax).abs()[changed].float()
    top2 = base.topk(2, dim=-1).values
    margin = (top2[..., 0] - top2[..., 1]).flatten()
    edges = torch.quantile(margin, torch.tensor([0.25, 0.5, 0.75]))
    quartile = torch.bucketize(margin, edges)
    by_margin = []
    for q in range(4):
        rows = quartile == q
        by_margin.append({"quartile": q + 1, "base_margin_max": float(margin[rows].max()),
                          "argmax_changed": float(changed.flatten()[rows].float().mean())})
    return {
        "argmax_changed": float(changed.float().mean()),
        "bin_shift_mean": float(shift.mean()) if len(shift) else 0.0,
        "bin_shift_median": float(shift.median()) if len(shift) else 0.0,
        "bin_shift_at_most_2": float((shift <= 2).float().mean()) if len(shift) else 1.0,
        "kl_t1": mean_kl(base, other, 1.0),
        "kl_at_t": mean_kl(base, other, temperature),
        "argmax_changed_by_base_margin": by_margin,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(0)
    data, indices = demo_frames(args.base, args.demos, args.unnorm_key, args.frames)
    base_logits, demo_bins = action_logits(args.base, data, indices, args.batch_size)
    result = {"base": str(args.base), "demos": str(args.demos), "frames": int(len(indices)),
              "tokens_per_frame": int(base_logits.shape[1]), "temperature": args.temperature,
              "base_policy": policy_figures(base_logits, demo_bins, args.temperature), "others": []}
    print(f"{len(indices)} frames x {base_logits.shape[1]} tokens; BASE {args.base}: {result['base_policy']}")
    for path in args.others:
        logits, _ = action_logits(path, data, indices, args.batch_size)
        row = {"checkpoint": str(path), **compare(base_logits, logits, args.temperature),
               "policy": policy_figures(logits, demo_bins, args.temperature)}
        result["others"].append(row)
        quartiles = " ".join(f"{m['argmax_changed']:.3f}" for m in row["argmax_changed_by_base_margin"])
        print(f"{path}: argmax changed {row['argmax_changed']:.3f} (median shift {row['bin_shift_median']:.0f} bins), "
              f"KL t1 {row['kl_t1']:.4f} / at T {row['kl_at_t']:.4f}; changed by BASE-margin quartile {quartiles}; "
              f"demo exact {row['policy']['demo_exact']:.3f} near {row['policy']['demo_near']:.3f} "
              f"nll {row['policy']['demo_nll_t1']:.3f} entropy@T {row['policy']['entropy_at_t']:.3f}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
