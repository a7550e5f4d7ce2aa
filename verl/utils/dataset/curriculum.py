"""Curriculum task selection: draw each prompt's task by the policy's current success on it.

Each prompt's task j is drawn with probability P(j) = softmax_j(score_j / tau), where s_j
estimates task j's current success rate from training rollouts: an exponential moving average
over training steps, s_j <- ema * s_j + (1 - ema) * (success of task j's episodes this step).
Two scores (data.curriculum.weighting):

- hardest (VLA-RL): score_j = 0.5 - s_j, so the tasks the policy fails most are drawn most. A
  task never tried starts at s = 0.5, the centre: weight 1, between the hard tasks (weight > 1)
  and the solved ones (weight < 1).
- informative: score_j = 1 - s_j^n - (1 - s_j)^n, the chance that a group of n = data.n_samples
  episodes has both outcomes. GRPO learns only from such groups (an all-success or all-failure
  group has zero advantage and dynamic sampling drops it), so this spends the rollouts where the
  step can learn: neither on the solved tasks nor on those the policy never solves.

Within a task, init states (trials) come in a seeded shuffled order, a fresh order each time
the task's trials run out. Everything random is seeded and part of `state_dict()`, so a resumed
run draws exactly the prompts the uninterrupted run would have drawn (exact resume).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

import numpy as np

from verl.utils.dataset.task_trials import TaskTrials

NEUTRAL_SUCCESS = 0.5  # the estimate of a task with no training episode yet
KIND = "curriculum"
_SCORES = {  # weighting -> score(success [K], n_samples); the module docstring says why each
    "hardest": lambda s, n: NEUTRAL_SUCCESS - s,
    "informative": lambda s, n: 1.0 - s ** n - (1.0 - s) ** n,
}
WEIGHTINGS = tuple(_SCORES)


def check_weighting(weighting: str) -> None:
    """The one check of `data.curriculum.weighting` (the sampler calls it at build time, before any draw)."""
    if weighting not in _SCORES:
        raise ValueError(f"data.curriculum.weighting={weighting!r}: expected one of {WEIGHTINGS}")


def curriculum_probabilities(success: np.ndarray, temperature: float, weighting: str = "hardest",
                             n_samples: int = 1) -> np.ndarray:
    """[K] success estimates -> [K] task probabilities, softmax(score / tau); the module docstring
    gives each weighting's score. `n_samples`: episodes per prompt (the informative weighting's n)."""
    check_weighting(weighting)
    score = _SCORES[weighting](np.asarray(success, dtype=np.float64), n_samples)
    logits = score / temperature
    weights = np.exp(logits - logits.max())
    return weights / weights.sum()


class CurriculumSampler:
    """Draws dataset indices task-first by the curriculum; same interface as `StatefulSampler`
    (`take`, `epoch`, `state_dict`, `load_state_dict`) plus `observe` (feed back outcomes) and
    `metrics` (per-task estimates and probabilities)."""

    def __init__(self, task_of_index: Sequence[int], temperature: float, ema: float, seed: int = 0,
                 weighting: str = "hardest", n_samples: int = 1) -> None:
        if len(task_of_index) < 1:
            raise ValueError("CurriculumSampler needs a non-empty dataset")
        if temperature <= 0:
            raise ValueError(f"data.curriculum.temperature={temperature}: expected > 0")
        if not 0.0 <= ema < 1.0:
            raise ValueError(f"data.curriculum.ema={ema}: expected 0 <= ema < 1")
        check_weighting(weighting)
        if n_samples < 1:
            raise ValueError(f"data.n_samples={n_samples}: expected >= 1")
        self.trials = TaskTrials(task_of_index, seed)
        self.tasks = self.trials.tasks
        self.temperature = float(temperature)
        self.ema = float(ema)
        self.weighting = weighting
        self.n_samples = int(n_samples)
        self.seed = int(seed)
        self.success = np.full(len(self.tasks), NEUTRAL_SUCCESS)
        self.episodes_seen = np.zeros(len(self.tasks), dtype=np.int64)
        self.rng = np.random.default_rng([self.seed, 7])
        self.drawn = 0

    def __len__(self) -> int:
        return len(self.trials.task_of_index)

    @property
    def epoch(self) -> int:
        """Prompts drawn so far, in units of the dataset's size (what `train/epoch` logs)."""
        return self.drawn // len(self)

    def probabilities(self) -> np.ndarray:
        return curriculum_probabilities(self.success, self.temperature, self.weighting, self.n_samples)

    def take(self, n: int) -> list[int]:
        """`n` dataset indices: tasks drawn i.i.d. from the curriculum, trials in a shuffled cycle within a task."""
        tasks = self.rng.choice(len(self.tasks), size=n, p=self.probabilities())
        self.drawn += n
        return [self.trials.next_trial(self.tasks[k]) for k in tasks]

    def observe(self, task_ids: Sequence[int], success: Sequence[float]) -> None:
        """One training step's episodes (task id, 0/1 success each; faulted ones left out): one EMA
        update per task that had episodes."""
        per_task: dict[int, list[float]] = defaultdict(list)
        for task, ok in zip(task_ids, success):
            per_task[int(task)].append(float(ok))
        for position, task in enumerate(self.tasks):
            if task in per_task:
                rate = float(np.mean(per_task[task]))
                self.success[position] = self.ema * self.success[position] + (1.0 - self.ema) * rate
                self.episodes_seen[position] += len(per_task[task])

    def metrics(self) -> dict[str, float]:
        probs = self.probabilities()
        out = {}
        for position, task in enumerate(self.tasks):
            out[f"curriculum/success_estimate/task_{task}"] = float(self.success[position])
            out[f"curriculum/probability/task_{task}"] = float(probs[position])
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": KIND, "seed": self.seed, "data_len": len(self), "tasks": list(self.tasks),
            "success": self.success.tolist(), "episodes_seen": self.episodes_seen.tolist(),
            "drawn": self.drawn, "rng": self.rng.bit_generator.state, **self.trials.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != KIND:
            raise ValueError("the checkpoint's sampler state is not a curriculum's: the run was saved with "
                             "data.curriculum.enable=False; resume it with the same setting")
        if state["data_len"] != len(self) or list(state["tasks"]) != list(self.tasks):
            raise ValueError(f"curriculum state was saved for {state['data_len']} prompts of tasks {state['tasks']}; "
                             f"this run has {len(self)} prompts of tasks {self.tasks}")
        self.seed = int(state["seed"])
        self.success = np.asarray(state["success"], dtype=np.float64)
        self.episodes_seen = np.asarray(state["episodes_seen"], dtype=np.int64)
        self.trials.seed = self.seed
        self.trials.load_state_dict(state)
        self.drawn = int(state["drawn"])
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state["rng"]
