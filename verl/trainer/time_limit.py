"""Ending a training run cleanly before a wall-clock limit (`trainer.time_limit_s`).

Cluster jobs have a time limit (SLURM's `--time`), and a CPU experiment has a budget. A run that
is killed at the limit loses every step since its last checkpoint and never validates the policy
it reached. With a limit, the trainer checks after each step whether one more step, and then the
final validation and checkpoint, still fit; when they do not, it validates and saves now and ends
normally. `trainer.resume_mode=auto` then continues the run exactly where it stopped.

The prediction is deliberately pessimistic: each phase (a training step, a validation, a save)
is assumed to take as long as the longest one of its kind seen so far in this process, since
step time varies with episode length (a weak policy runs every episode to the step budget), and
one not seen yet as long as a step. Both trainers (RL and SFT) use it.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Optional

from tqdm import tqdm

logger = logging.getLogger(__name__)

STEP, VALIDATE, EVALUATE, SAVE = "step", "validate", "evaluate", "save"  # EVALUATE: SFT's closed-loop evaluation


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
        """Time one phase (STEP, VALIDATE, EVALUATE or SAVE) and keep the longest of its kind."""
        began = self.clock()
        yield
        self.longest[phase] = max(self.longest.get(phase, 0.0), self.clock() - began)

    def next_step_fits(self, due_now: Iterable[str] = (), at_end: Iterable[str] = (VALIDATE, SAVE)) -> bool:
        """Whether the phases still due after the current step (`due_now`, e.g. its scheduled
        validation), one more step, and the phases that end a run (`at_end`) finish before the
        deadline. Before any step was measured there is nothing to predict from: True. A phase not
        measured yet is assumed to take as long as a step."""
        if self.deadline is None or STEP not in self.longest:
            return True
        needed = sum(self.longest.get(phase, self.longest[STEP]) for phase in [*due_now, STEP, *at_end])
        return self.clock() + needed <= self.deadline

    def elapsed(self) -> float:
        return self.clock() - self.start

    def announce_stop(self, step: int, total: int, progress: Optional[tqdm]) -> None:
        """Say on the console (above the progress bar) and in the log why the run ends early."""
        message = (f"trainer.time_limit_s={self.limit_s:g}: stopped after step {step} of {total} ({self.elapsed():.0f} "
                   f"s since start; the longest step took {self.longest[STEP]:.1f} s), validated and saved; run again "
                   "with resume_mode=auto and the same trainer.default_local_dir to continue")
        logger.warning(message)
        if progress is not None:
            progress.write(message)
