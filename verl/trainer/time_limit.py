"""Ending a training run cleanly before a wall-clock limit (`trainer.time_limit_s`).

Cluster jobs have a time limit (SLURM's `--time`), and a CPU experiment has a budget. A run that
is killed at the limit loses every step since its last checkpoint and never validates the policy
it reached. With a limit, the trainer checks after each step whether one more step, and then the
final validation and checkpoint, still fit; when they do not, it validates and saves now and ends
normally. `trainer.resume_mode=auto` then continues the run exactly where it stopped.

The prediction is deliberately pessimistic: each phase (a training step, a validation, a save)
is assumed to take as long as the longest one of its kind seen so far in this process, since
step time varies with episode length (a weak policy runs every episode to the step budget).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Optional

STEP, VALIDATE, SAVE = "step", "validate", "save"


class TimeLimit:
    """Wall-clock budget of one trainer process. `limit_s=None`: no limit (every query says go on)."""

    def __init__(self, limit_s: Optional[float], clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.limit_s = limit_s
        self.start = clock()
        self.deadline = None if limit_s is None else self.start + float(limit_s)
        self.longest: dict[str, float] = {}

    @contextmanager
    def measure(self, phase: str) -> Iterator[None]:
        """Time one phase (STEP, VALIDATE or SAVE) and keep the longest of its kind."""
        began = self.clock()
        yield
        self.longest[phase] = max(self.longest.get(phase, 0.0), self.clock() - began)

    def next_step_fits(self, due_now: Iterable[str] = ()) -> bool:
        """Whether the phases still due after the current step (`due_now`, e.g. its scheduled
        validation), one more step, and that step's final validation and save end before the
        deadline. Before any step was measured there is nothing to predict from: True.
        A validation not yet measured is assumed to take as long as a step; a save, no time."""
        if self.deadline is None or STEP not in self.longest:
            return True
        step = self.longest[STEP]
        cost = {STEP: step, VALIDATE: self.longest.get(VALIDATE, step), SAVE: self.longest.get(SAVE, 0.0)}
        needed = sum(cost[phase] for phase in due_now) + cost[STEP] + cost[VALIDATE] + cost[SAVE]
        return self.clock() + needed <= self.deadline

    def elapsed(self) -> float:
        return self.clock() - self.start
