#!/usr/bin/env python
"""Write a tiny random OpenVLA(-OFT) checkpoint in the released format (for tests and the CPU demo).

    python scripts/make_tiny_checkpoint.py --out /tmp/tiny_oft [--openvla] [--action-dim 7 --action-chunk 8]
        [--use-proprio] [--num-images 1] [--seed 0] [--llm-hidden 64 --llm-layers 2 --vision-width 32 --vision-depth 2] [--patch-size 14] [--qk-init-std 0.1]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from verl.models.openvla_oft.tiny import make_tiny_checkpoint  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="checkpoint directory to create")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--parallel-decoding", dest="parallel_decoding", action="store_true", default=True,
                      help="OpenVLA-OFT: chunk*dim action tokens in one bidirectional forward (default)")
    mode.add_argument("--openvla", dest="parallel_decoding", action="store_false",
                      help="plain OpenVLA: 7 causal action tokens")
    parser.add_argument("--action-dim", type=int, default=7, help="7 for LIBERO, 14 for RoboTwin")
    parser.add_argument("--action-chunk", type=int, default=8, help="8 for LIBERO, 25 for RoboTwin")
    parser.add_argument("--use-proprio", action="store_true", help="add the OFT proprio projector")
    parser.add_argument("--proprio-dim", type=int, default=8, help="8 for LIBERO")
    parser.add_argument("--num-images", type=int, default=1, help="images per sample (num_images_in_input)")
    parser.add_argument("--seed", type=int, default=0, help="weight seed")
    parser.add_argument("--llm-hidden", type=int, default=64, help="decoder width (the real model: 4096)")
    parser.add_argument("--llm-layers", type=int, default=2, help="decoder layers (the real model: 32)")
    parser.add_argument("--vision-width", type=int, default=32, help="width of both vision towers (real: 1024/1152)")
    parser.add_argument("--vision-depth", type=int, default=2, help="blocks per vision tower (real: 24/27)")
    parser.add_argument("--patch-size", type=int, default=14,
                        help="vision patch size of both towers (the real model: 14; 28 -> 64 image tokens instead of 256)")
    parser.add_argument("--qk-init-std", type=float, default=None,
                        help="init std of the decoder's query/key projections (default 0.02 like every weight; "
                             "~1/sqrt(llm-hidden) for a model that will be trained from scratch, e.g. by SFT)")
    parser.add_argument("--overwrite", action="store_true", help="replace a model already in --out")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    make_tiny_checkpoint(
        args.out,
        parallel_decoding=args.parallel_decoding,
        action_dim=args.action_dim,
        action_chunk=args.action_chunk,
        use_proprio=args.use_proprio,
        proprio_dim=args.proprio_dim,
        num_images_in_input=args.num_images,
        seed=args.seed,
        overwrite=args.overwrite,
        qk_init_std=args.qk_init_std,
        llm_hidden=args.llm_hidden,
        llm_layers=args.llm_layers,
        vision_width=args.vision_width,
        vision_depth=args.vision_depth,
        patch_size=args.patch_size,
    )


if __name__ == "__main__":
    main()
