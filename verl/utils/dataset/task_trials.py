"""Per-task trial cycles: the part of task-first sampling that the curriculum and the task-balanced
sampler share. Within a task, its init states (trials) come in a seeded shuffled order, a fresh
order each time the task's trials run out, so every trial is used once per pass."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


class TaskTrials:
    """Hands out the dataset indices of each task's trials, one pass after another; the position is
    part of `state_dict()` so a resumed run continues on exactly the next trial."""

    def __init__(self, task_of_index: Sequence[int], seed: int) -> None:
        if len(task_of_index) < 1:
            raise ValueError("task-first sampling needs a non-empty dataset")
        self.task_of_index = np.asarray(task_of_index, dtype=np.int64)
        self.tasks = sorted(set(self.task_of_index.tolist()))
        self.indices_of_task = {t: np.nonzero(self.task_of_index == t)[0] for t in self.tasks}
        self.seed = int(seed)
        self.cursor = {t: 0 for t in self.tasks}  # trials of the task's current pass already handed out
        self.passes = {t: 0 for t in self.tasks}  # completed passes over the task's trials

    def next_trial(self, task: int) -> int:
        """The dataset index of `task`'s next trial."""
        members = self.indices_of_task[task]
        if self.cursor[task] >= len(members):
            self.cursor[task], self.passes[task] = 0, self.passes[task] + 1
        order = np.random.default_rng([self.seed, task, self.passes[task]]).permutation(members)
        index = int(order[self.cursor[task]])
        self.cursor[task] += 1
        return index

    def state_dict(self) -> dict[str, Any]:
        return {"cursor": {str(t): c for t, c in self.cursor.items()},
                "passes": {str(t): p for t, p in self.passes.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cursor = {int(t): int(c) for t, c in state["cursor"].items()}
        self.passes = {int(t): int(p) for t, p in state["passes"].items()}
