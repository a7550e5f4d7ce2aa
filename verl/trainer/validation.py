"""Closed-loop evaluation on the driver: prompts of a `RobDataset` -> success rates and a report.

Greedy (argmax action tokens, as the reference) unless a validation temperature is set: then the
episodes sample at it, from a generator seeded by the run's seed (the same draws at every
validation), to measure the sampled policy that training improves.

Shared by the RL trainer (`trainer.test_freq`, `val_only`), scripts/evaluate_checkpoint.py and the SFT
trainer (`eval.freq`). A `ValidationReport` is what people read: a per-task console table, the
metrics (`val/test_score/<suite>`, `val/test_score/<suite>/<task_id>`, ...), and under
`<default_local_dir>/validation/step_<N>/` a `report.json` (per suite and task) and an `episodes.jsonl`
(one line per episode: suite, task, init state, success, steps, video).
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from verl.protocol import DataProto
from verl.trainer.ppo.reward import success_by_suite, success_by_task
from verl.utils.video import episode_video_name
from verl.workers import trajectory as tj

logger = logging.getLogger(__name__)

PROMPT_KEYS = (tj.TASK_SUITE_NAME, tj.TASK_ID, tj.TRIAL_ID, tj.SEED, tj.DATA_SOURCE)
EPISODE_KEYS = (tj.TASK_SUITE_NAME, tj.TASK_ID, tj.TRIAL_ID, tj.SEED, tj.DATA_SOURCE, tj.UID, tj.INSTRUCTION)
REPORT_DIR = "validation"  # <default_local_dir>/validation/step_<N>[_T<t>]/{report.json, episodes.jsonl}
REPORT_FILE = "report.json"
EPISODES_FILE = "episodes.jsonl"


def prompts_from_dataset(dataset: Any, indices: list[int], uid_prefix: str) -> DataProto:
    """Rows `indices` of a RobDataset as a prompt batch, each tagged with a unique group uid."""
    rows = [dataset[i] for i in indices]
    non_tensors = {key: np.array([r[key] for r in rows], dtype=object) for key in PROMPT_KEYS}
    non_tensors[tj.UID] = np.array([f"{uid_prefix}-{i}" for i in range(len(rows))], dtype=object)
    return DataProto.from_dict(non_tensors=non_tensors)


def video_flags(dataset: Any, max_per_task: int) -> np.ndarray:
    """bool [len(dataset)]: the first `max_per_task` items of each (suite, task), in dataset order."""
    seen: dict[tuple[str, int], int] = defaultdict(int)
    flags = np.zeros(len(dataset), dtype=bool)
    for i in range(len(dataset)):
        row = dataset[i]
        key = (str(row[tj.TASK_SUITE_NAME]), int(row[tj.TASK_ID]))
        flags[i] = seen[key] < max_per_task
        seen[key] += 1
    return flags


def decoding_label(temperature: float) -> str:
    """How validation picked actions, for reports: "greedy" (temperature 0) or "sampled at T=<t>"."""
    return "greedy" if temperature == 0 else f"sampled at T={temperature:g}"


def report_directory(run_dir: str | os.PathLike, step: int, temperature: float = 0.0) -> Path:
    """<run_dir>/validation/step_<N>/ for a greedy validation, step_<N>_T<t>/ for a sampled one, so
    evaluating a step sampled never replaces its greedy report (or the other way round)."""
    suffix = "" if temperature == 0 else f"_T{temperature:g}"
    return Path(run_dir) / REPORT_DIR / f"step_{step}{suffix}"


def validation_episodes(worker_group: Any, dataset: Any, batch_size: int, seed: int, step: int,
                        max_videos_per_task: Optional[int] = None, temperature: float = 0.0) -> DataProto:
    """One episode per item of `dataset`, in rounds of `batch_size` prompts: greedy when
    `temperature` is 0, else sampled at it (round r seeded by seed * 1000 + r).

    `max_videos_per_task`: mark only that many episodes per task for a video (the env pool records
    them when the run saves videos); None marks none and the rollout records every episode.
    Returns complete, finish_step, faulted, the task keys, data source, uid and instruction per episode.
    """
    results: list[DataProto] = []
    indices = list(range(len(dataset)))
    flags = video_flags(dataset, max_videos_per_task) if max_videos_per_task is not None else None
    for r, start in enumerate(range(0, len(indices), batch_size)):
        prompts = prompts_from_dataset(dataset, indices[start:start + batch_size], f"val{step}r{r}")
        if flags is not None:
            prompts.non_tensor_batch[tj.RECORD_VIDEO] = flags[start:start + batch_size].astype(object)
        # each round its own draws, the same at every validation (greedy ignores them)
        prompts.meta_info.update(greedy=temperature == 0, temperature=temperature or None, validation=True,
                                 seed=seed * 1000 + r, global_step=step)
        out = worker_group.generate_sequences(prompts)
        out.meta_info.pop("metrics", None)
        keys = [k for k in (*EPISODE_KEYS, tj.RECORD_VIDEO) if k in out.non_tensor_batch]
        episodes = out.select(batch_keys=[tj.COMPLETE, tj.FINISH_STEP, tj.FAULTED], non_tensor_batch_keys=keys)
        episodes.meta_info = {}  # each round's own seed must not block concatenating the rounds
        results.append(episodes)
    return DataProto.concat(results)


def success_tables(episodes: DataProto) -> dict[str, float]:
    """`val/test_score/<suite>`, `val/test_score/all`, `val/test_score/<data_source>` (RoboTwin:
    `<suite>_train_iid` and `<suite>_eval_ood`, as the reference), per task
    `val/test_score/<suite>/<task_id>`."""
    complete = episodes.batch[tj.COMPLETE].numpy().astype(np.float64)
    by_source: dict[str, list[float]] = defaultdict(list)
    if tj.DATA_SOURCE in episodes.non_tensor_batch:
        for ok, source in zip(complete, episodes.non_tensor_batch[tj.DATA_SOURCE]):
            by_source[str(source)].append(ok)
    metrics = {f"val/test_score/{source}": float(np.mean(v)) for source, v in sorted(by_source.items())}
    metrics.update({f"val/test_score/{suite}": rate for suite, rate in success_by_suite(episodes).items()})
    metrics.update({f"val/test_score/{key}": rate for key, rate in success_by_task(episodes).items()})
    metrics["val/episodes"] = float(len(complete))
    metrics["val/finish_step_mean"] = float(episodes.batch[tj.FINISH_STEP].float().mean().item()) if len(complete) else 0.0
    metrics["val/faulted_episodes"] = float(episodes.batch[tj.FAULTED].float().sum().item())
    return metrics


# ------------------------------------------------------------------------------------------- report
@dataclass
class TaskResult:
    """One task's row of the report."""

    suite: str
    task_id: int
    instruction: str
    episodes: int
    successes: int
    faulted: int
    mean_steps: float  # env steps per episode (finish_step), successes and failures alike
    videos: list[str] = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0


@dataclass
class ValidationReport:
    """Everything one validation found; `write` puts it under <run>/validation/step_<N>/."""

    step: int
    weights: str  # what was evaluated: a checkpoint directory, or the policy in training at this step
    metrics: dict[str, float]
    tasks: list[TaskResult]
    episodes: list[dict[str, Any]]
    temperature: float = 0.0  # 0: greedy; else the temperature the episodes sampled at

    @property
    def decoding(self) -> str:
        return decoding_label(self.temperature)

    def videos_by_task(self) -> dict[str, list[str]]:
        """`val/videos/<suite>/<task_id>` -> the video files of that task's recorded episodes."""
        return {f"val/videos/{t.suite}/{t.task_id}": t.videos for t in self.tasks if t.videos}

    def table(self) -> str:
        """The per-task success table printed on the console."""
        total = sum(t.episodes for t in self.tasks)
        successes = sum(t.successes for t in self.tasks)
        faulted = sum(t.faulted for t in self.tasks)
        lines = [f"validation at step {self.step}: success {self.metrics.get('val/test_score/all', 0.0):.3f} "
                 f"({successes}/{total} episodes, {faulted} faulted, {self.decoding})",
                 f"weights: {self.weights}",
                 f"{'suite':<22} {'task':>4} {'success':>8} {'episodes':>9} {'steps':>7}  instruction"]
        for t in self.tasks:
            lines.append(f"{t.suite:<22} {t.task_id:>4} {t.success_rate:>8.3f} {f'{t.successes}/{t.episodes}':>9} "
                         f"{t.mean_steps:>7.1f}  {t.instruction}")
        for suite in sorted({t.suite for t in self.tasks}):
            rows = [t for t in self.tasks if t.suite == suite]
            n, k = sum(t.episodes for t in rows), sum(t.successes for t in rows)
            lines.append(f"{suite:<22} {'all':>4} {k / max(n, 1):>8.3f} {f'{k}/{n}':>9}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        suites = {}
        for suite in sorted({t.suite for t in self.tasks}):
            rows = [t for t in self.tasks if t.suite == suite]
            n, k = sum(t.episodes for t in rows), sum(t.successes for t in rows)
            suites[suite] = {"episodes": n, "successes": k, "success_rate": k / max(n, 1)}
        return {
            "step": self.step, "weights": self.weights, "decoding": self.decoding,
            "success_rate": self.metrics.get("val/test_score/all", 0.0),
            "episodes": len(self.episodes), "suites": suites,
            "tasks": [{**asdict(t), "success_rate": t.success_rate} for t in self.tasks],
            "metrics": self.metrics,
        }

    def write(self, run_dir: str | os.PathLike) -> Path:
        """report.json and episodes.jsonl under `report_directory` (replaced if present: the same step
        evaluated the same way again)."""
        directory = report_directory(run_dir, self.step, self.temperature)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / REPORT_FILE).write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        with open(directory / EPISODES_FILE, "w") as handle:
            for record in self.episodes:
                handle.write(json.dumps(record) + "\n")
        return directory


def _column(episodes: DataProto, key: str, default: Any) -> list[Any]:
    values = episodes.non_tensor_batch.get(key)
    return list(values) if values is not None else [default] * len(episodes)


def build_report(episodes: DataProto, step: int, weights: str, video_dir: Optional[str] = None,
                 temperature: float = 0.0) -> ValidationReport:
    """Per-episode records, per-task rows and the metrics of one validation's episodes.

    `video_dir`: where the env pool saved videos (named by `episode_video_name` with the episode's
    uid as tag); an episode's `video` is its file when that exists, else null.
    """
    complete = episodes.batch[tj.COMPLETE].numpy().astype(bool)
    finish = episodes.batch[tj.FINISH_STEP].numpy()
    faulted = episodes.batch[tj.FAULTED].numpy().astype(bool)
    columns = {key: _column(episodes, key, None) for key in EPISODE_KEYS}
    records: list[dict[str, Any]] = []
    for i in range(len(episodes)):
        suite, task, trial = str(columns[tj.TASK_SUITE_NAME][i]), int(columns[tj.TASK_ID][i]), int(columns[tj.TRIAL_ID][i])
        video = None
        if video_dir is not None and columns[tj.UID][i] is not None:
            path = Path(video_dir) / episode_video_name(step, suite, task, trial, bool(complete[i]), str(columns[tj.UID][i]))
            video = str(path) if path.is_file() else None
        seed = columns[tj.SEED][i]
        records.append({
            "suite": suite, "task_id": task, "init_state": trial, "seed": None if seed is None else int(seed),
            "data_source": None if columns[tj.DATA_SOURCE][i] is None else str(columns[tj.DATA_SOURCE][i]),
            "instruction": "" if columns[tj.INSTRUCTION][i] is None else str(columns[tj.INSTRUCTION][i]),
            "success": bool(complete[i]), "steps": int(finish[i]), "faulted": bool(faulted[i]), "video": video,
        })
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[(record["suite"], record["task_id"])].append(record)
    tasks = [
        TaskResult(suite=suite, task_id=task, instruction=next((r["instruction"] for r in rows if r["instruction"]), ""),
                   episodes=len(rows), successes=sum(r["success"] for r in rows), faulted=sum(r["faulted"] for r in rows),
                   mean_steps=float(np.mean([r["steps"] for r in rows])), videos=[r["video"] for r in rows if r["video"]])
        for (suite, task), rows in sorted(groups.items())
    ]
    metrics = {**success_tables(episodes), "val/temperature": float(temperature)}
    return ValidationReport(step=step, weights=weights, metrics=metrics, tasks=tasks, episodes=records,
                            temperature=float(temperature))


def weights_label(start_weights: str, start_step: int, step: int, training: str) -> str:
    """What a validation at `step` evaluated, for its report: the weights the run loaded (at
    `start_step`), else the policy `training` (e.g. "training", "SFT") made from them."""
    if step == start_step:
        return start_weights
    return f"the policy after {training} step {step} (the run started from {start_weights})"


def report_validation(episodes: DataProto, step: int, weights: str, run_dir: str, save_video: bool,
                      tracking: Any = None, temperature: float = 0.0) -> dict[str, float]:
    """One validation's report, the same for RL and SFT: the per-task table on the console, the
    files under `report_directory`, its videos to W&B / TensorBoard; its metrics."""
    report = build_report(episodes, step, weights, video_dir=os.path.join(run_dir, "videos") if save_video else None,
                          temperature=temperature)
    written = report.write(run_dir)
    logger.info("%s\nreport: %s", report.table(), written)
    if tracking is not None:
        tracking.log_videos(report.videos_by_task(), step=step)
    return report.metrics
