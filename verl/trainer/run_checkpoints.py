"""A run's checkpoint directory on the driver: atomic saves, `latest` bookkeeping, pruning, resume.

Shared by the RL and SFT trainers. Layout under `<default_local_dir>/actor/`:
    global_step_N/                   the workers' HF directory + per-rank state, plus trainer_state.json
    latest_checkpointed_iteration.txt
A save goes to `global_step_N.tmp`, is checked (every safetensors shard against its header, every
rank's state present), flushed to disk, and renamed; `latest` is replaced atomically after the
rename. A crash or a full disk mid-save leaves the previous checkpoint as latest, never a
half-written one. Before any worker starts, `check_output_dir` says whether the directory is
writable and has room for a checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

from verl.models.openvla_oft.checkpoint_files import CheckpointFileError, inspect_checkpoint
from verl.trainer.config_validation import ConfigError
from verl.workers.checkpoint import ACTOR_STATE_DIR, CRITIC_DIR, CRITIC_STATE_DIR, CRITIC_WEIGHTS

logger = logging.getLogger(__name__)

CHECKPOINT_SUBDIR = "actor"
LATEST_FILE = "latest_checkpointed_iteration.txt"
TRAINER_STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"^global_step_(\d+)$")
FREE_SPACE_MARGIN = 1.2  # ask for this much more room than one checkpoint's estimate


class CheckpointWriteError(RuntimeError):
    """A save produced an incomplete or unreadable checkpoint; `latest` still names the previous one."""


def checkpoint_bytes(model_path: str, lora: bool) -> int:
    """About the size of one checkpoint of this model: fp32 weights + AdamW's two fp32 moments of
    the trained parameters (all of them, or ~none with LoRA). 0 when the files cannot be read
    (the config validation reports that)."""
    try:
        params = inspect_checkpoint(model_path).num_parameters
    except CheckpointFileError:
        return 0
    return params * 4 * (1 if lora else 3)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RunCheckpoints:
    """Where a run's checkpoints live and how they are written, found and pruned."""

    def __init__(self, default_local_dir: str, max_to_keep: Optional[int] = None, *,
                 world_size: Optional[int] = None, critic: bool = False) -> None:
        self.root = Path(default_local_dir) / CHECKPOINT_SUBDIR
        self.max_to_keep = max_to_keep
        self.world_size = world_size  # ranks whose state a save must hold (None: not checked)
        self.critic = critic  # a save must also hold the critic's weights and per-rank state

    def step_dir(self, step: int) -> Path:
        return self.root / f"global_step_{step}"

    def existing(self) -> list[str]:
        return sorted(p.name for p in self.root.glob("global_step_*"))

    def check_not_overwriting(self, resume_mode: str, val_only: bool) -> None:
        """Before any worker starts: never overwrite a run's checkpoints silently."""
        existing = self.existing()
        if resume_mode == "disable" and existing and not val_only:
            raise ConfigError(
                f"trainer.resume_mode=disable but trainer.default_local_dir={self.root.parent} already holds "
                f"checkpoints ({', '.join(existing[:3])}{', ...' if len(existing) > 3 else ''}) that this run "
                "would overwrite: use trainer.resume_mode=auto to continue it, or another trainer.default_local_dir")

    def check_output_dir(self, model_path: str, lora: bool, will_save: bool) -> None:
        """Before any worker starts: the run directory is writable and (if the run saves) has room
        for a checkpoint. Raises ConfigError naming trainer.default_local_dir."""
        run_dir = self.root.parent
        key = f"trainer.default_local_dir={str(run_dir)!r}"
        probe = run_dir / f".write_test_{os.getpid()}"
        try:
            run_dir.mkdir(parents=True, exist_ok=True)  # `actor/` only appears once something is saved
            probe.write_bytes(b"0" * 4096)
            _fsync(probe)
            probe.unlink()
        except OSError as err:
            raise ConfigError(f"{key} is not writable ({err.strerror or err}): checkpoints, metrics and "
                              "videos go there") from None
        if not will_save:
            return
        needed = checkpoint_bytes(model_path, lora)
        free = shutil.disk_usage(run_dir).free
        if free < needed * FREE_SPACE_MARGIN:
            raise ConfigError(
                f"{key} has {free / 1e9:.2f} GB free but one checkpoint of this model takes about "
                f"{needed / 1e9:.2f} GB (fp32 weights{'' if lora else ' + AdamW state'}): free some space or "
                "choose another directory (trainer.max_actor_ckpt_to_keep bounds how many are kept)")

    def verify(self, directory: Path) -> None:
        """Raise CheckpointWriteError unless `directory` is a complete checkpoint (read back from disk)."""
        try:
            inspect_checkpoint(directory)
        except CheckpointFileError as err:
            raise CheckpointWriteError(f"the checkpoint written to {directory} is unreadable: {err}") from None
        if self.world_size is not None:
            missing = [r for r in range(self.world_size)
                       if not (directory / ACTOR_STATE_DIR / f"rank_{r}.pt").is_file()]
            if missing:
                raise CheckpointWriteError(f"the checkpoint written to {directory} lacks the state of ranks {missing}")
        if self.critic:
            wanted = [directory / CRITIC_DIR / CRITIC_WEIGHTS] + [
                directory / CRITIC_DIR / CRITIC_STATE_DIR / f"rank_{r}.pt" for r in range(self.world_size or 1)]
            absent = [str(p.relative_to(directory)) for p in wanted if not p.is_file()]
            if absent:
                raise CheckpointWriteError(f"the checkpoint written to {directory} lacks the critic's {absent}")

    def save(self, step: int, write_workers: Callable[[str], None], trainer_state: dict[str, Any]) -> Path:
        """`write_workers(tmp_dir)` has every rank write its part; then the driver's state, a check
        of what was written, a flush to disk, the rename, latest."""
        final = self.step_dir(step)
        tmp = final.with_name(final.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            write_workers(str(tmp))
            (tmp / TRAINER_STATE_FILE).write_text(json.dumps({"global_steps": step, **trainer_state}, indent=2))
            self.verify(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # a full disk needs its space back; latest is untouched
            raise
        for path in sorted(tmp.rglob("*"), reverse=True):  # files, then their directories
            _fsync(path)
        _fsync(tmp)
        old = final.with_name(final.name + ".old")
        if final.exists():  # the same step saved again (e.g. a resumed run re-reaching it)
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
        os.replace(tmp, final)
        _fsync(self.root)
        latest = self.root / LATEST_FILE
        latest_tmp = latest.with_suffix(".tmp")
        latest_tmp.write_text(str(step))
        _fsync(latest_tmp)
        os.replace(latest_tmp, latest)
        _fsync(self.root)
        if old.exists():
            shutil.rmtree(old)
        self.prune()
        logger.info("saved checkpoint %s", final)
        return final

    def prune(self) -> None:
        if not self.max_to_keep:
            return
        steps = sorted(int(m.group(1)) for p in self.root.glob("global_step_*")
                       if p.is_dir() and (m := _STEP_DIR.match(p.name)))
        for step in steps[:-self.max_to_keep]:
            shutil.rmtree(self.step_dir(step))

    def resume_dir(self, resume_mode: str, resume_from_path: Optional[str]) -> Optional[Path]:
        if resume_mode == "disable":
            return None
        if resume_mode == "resume_path":
            return Path(resume_from_path)
        latest = self.root / LATEST_FILE
        if not latest.is_file():
            return None
        return self.step_dir(int(latest.read_text().strip()))

    @staticmethod
    def trainer_state(directory: Path) -> dict[str, Any]:
        state_file = directory / TRAINER_STATE_FILE
        if not state_file.is_file():
            raise FileNotFoundError(f"{state_file} not found: {directory} is not a complete checkpoint")
        return json.loads(state_file.read_text())
