#!/usr/bin/env python
"""Evaluate a checkpoint directory alone (the whole validation set; greedy, or sampled with the override
actor_rollout_ref.rollout.val_temperature=T) and print/save the report.

    python scripts/evaluate_checkpoint.py CKPT_DIR --suite libero_10 [--task-ids 0,3] [--out eval.json]
        [--run-dir DIR] [Hydra overrides ...]

CKPT_DIR is any OpenVLA(-OFT) HF directory: an SFT model, a `global_step_N` saved by training or an
exported release (they carry dataset_statistics.json, so they evaluate without the training run).
Extra arguments are Hydra overrides for main_ppo, e.g. trainer.n_gpus_per_node=8, trainer.device=cpu,
actor_rollout_ref.rollout.save_video=True. `--task-ids` evaluates only those tasks of the suite
(data.task_ids). It is main_ppo's `trainer.val_only=True` run, so the report is validation's: the
per-task table on the console, and under the run directory (`--run-dir`, default a new temporary one)
validation/step_0/report.json, validation/step_0/episodes.jsonl and videos/. `--out` gets the scores
(`val/...` metrics) and the report.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing; Ray's workers find it via PYTHONPATH
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)


def _task_ids(text: str) -> list[int]:
    """``"0,3,7"`` -> ``[0, 3, 7]`` (range and duplicates are checked by the config validation)."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--task-ids={text!r}: expected comma-separated integers such as 0,3,7") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--suite", required=True, help="task suite, e.g. libero_10, robotwin2_click_bell, reach")
    parser.add_argument("--unnorm-key", default=None, help="dataset_statistics key (default: the suite)")
    parser.add_argument("--task-ids", type=_task_ids, default=None,
                        help="comma-separated task ids of the suite to evaluate, e.g. 0,3,7 (default: all tasks)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the scores and the report")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="where the report, episodes and videos go (default: a new temporary directory)")
    args, overrides = parser.parse_known_args(argv)
    if not (args.checkpoint / "config.json").is_file():
        parser.error(f"{args.checkpoint} is not a checkpoint directory (no config.json)")
    logging.basicConfig(level=os.environ.get("VERL_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="verl_eval_"))
    base = [
        f"actor_rollout_ref.model.path={args.checkpoint}",
        f"data.task_suite_name={args.suite}", f"actor_rollout_ref.rollout.task_suite_name={args.suite}",
        f"actor_rollout_ref.rollout.unnorm_key={args.unnorm_key or args.suite}",
        "trainer.val_only=True", "trainer.logger=[console]", f"trainer.default_local_dir={run_dir}",
    ]
    if args.task_ids is not None:
        base.append(f"data.task_ids=[{','.join(map(str, args.task_ids))}]")
    from hydra import compose, initialize_config_module

    from verl.trainer.main_ppo import run_ppo

    with initialize_config_module("verl.trainer.config", version_base=None):
        config = compose("ppo_trainer", overrides=base + overrides)
    from verl.trainer.config_validation import ConfigError

    try:
        run_ppo(config)
    except ConfigError as err:
        print(f"invalid config: {err}", file=sys.stderr)
        return 2
    from verl.trainer.validation import REPORT_FILE, report_directory

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    scores = {k: v for row in rows for k, v in row.items() if k.startswith("val/")}
    report_file = report_directory(run_dir, 0, config.actor_rollout_ref.rollout.val_temperature) / REPORT_FILE
    report = json.loads(report_file.read_text())
    print(json.dumps(scores, indent=2))
    print(f"report: {report_file}")
    if args.out:
        args.out.write_text(json.dumps({"checkpoint": str(args.checkpoint), **scores, "report": report}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
