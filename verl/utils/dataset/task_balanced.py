"""Task-balanced batches: every training batch holds (as nearly as its size allows) the same number
of prompts of each task.

With few tasks and small batches, uniform shuffled epochs put all of a step's prompts on one task
now and then (2 tasks, 4 prompts: one step in 8). GRPO then updates only on that task, and the
other task's success can collapse before a later step repairs it. Here prompt k of the run (k
counts across steps) is of task tasks[k mod K], so each batch cycles through the K tasks where the
previous one stopped; within a task, trials come in a shuffled cycle (`TaskTrials`).

Everything is seeded and part of `state_dict()`: a resumed run draws exactly the prompts the
uninterrupted run would have drawn.
"""

from __future__ import annotations

from typing import Any, Sequence

from verl.utils.dataset.task_trials import TaskTrials

KIND = "task_balanced"


class TaskBalancedSampler:
    """Same interface as `StatefulSampler` (`take`, `epoch`, `observe`, `metrics`, `state_dict`,
    `load_state_dict`)."""

    def __init__(self, task_of_index: Sequence[int], seed: int = 0) -> None:
        self.trials = TaskTrials(task_of_index, seed)
        self.drawn = 0  # prompts handed out so far; prompt k is of task tasks[k mod K]

    def __len__(self) -> int:
        return len(self.trials.task_of_index)

    @property
    def epoch(self) -> int:
        """Prompts drawn so far, in units of the dataset's size (what `train/epoch` logs)."""
        return self.drawn // len(self)

    def take(self, n: int) -> list[int]:
        tasks = self.trials.tasks
        out = [self.trials.next_trial(tasks[(self.drawn + k) % len(tasks)]) for k in range(n)]
        self.drawn += n
        return out

    def observe(self, task_ids: Any, success: Any) -> None:
        """Outcomes do not change the task cycle (the curriculum sampler's hook)."""

    def metrics(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"kind": KIND, "seed": self.trials.seed, "data_len": len(self), "tasks": list(self.trials.tasks),
                "drawn": self.drawn, **self.trials.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != KIND:
            raise ValueError("the checkpoint's sampler state is not a task-balanced one: the run was saved with "
                             "data.task_balanced=False; resume it with the same setting")
        if state["data_len"] != len(self) or list(state["tasks"]) != list(self.trials.tasks):
            raise ValueError(f"task-balanced sampler state was saved for {state['data_len']} prompts of tasks "
                             f"{state['tasks']}; this run has {len(self)} prompts of tasks {self.trials.tasks}")
        self.trials.seed = int(state["seed"])
        self.drawn = int(state["drawn"])
        self.trials.load_state_dict(state)
