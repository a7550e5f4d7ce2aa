"""Worker: the base class of every process a worker group drives.

A worker learns its place in the group only from environment variables (RANK, WORLD_SIZE,
LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), the same ones torchrun sets, so
worker code runs unchanged under Ray, torchrun or a single plain process, and never needs to
import Ray for its own logic.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import tempfile
from dataclasses import dataclass
from typing import IO, Optional

from verl.utils.network import get_node_ip

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedEnv:
    """A worker's place in its group, as read from the environment."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str | None
    master_port: int | None

    @classmethod
    def from_environ(cls) -> DistributedEnv:
        """Read the variables; a lone process with none of them set is rank 0 of 1."""

        def read_int(name: str, default: int) -> int:
            raw = os.environ.get(name)
            if raw is None or raw == "":
                return default
            try:
                return int(raw)
            except ValueError:
                raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None

        rank = read_int("RANK", 0)
        world_size = read_int("WORLD_SIZE", 1)
        if not 0 <= rank < world_size:
            raise ValueError(f"RANK={rank} is outside WORLD_SIZE={world_size}")
        port = read_int("MASTER_PORT", -1)
        return cls(
            rank=rank,
            world_size=world_size,
            local_rank=read_int("LOCAL_RANK", 0),
            local_world_size=read_int("LOCAL_WORLD_SIZE", 1),
            master_addr=os.environ.get("MASTER_ADDR") or None,
            master_port=port if port >= 0 else None,
        )


# A worker dumps every thread's Python stack to its stack file on this signal: the driver sends it
# to a rank that missed a call's deadline, to say where that rank is stuck (e.g. which collective).
STACK_DUMP_SIGNAL = signal.SIGUSR1


def stack_file_path(pid: int) -> str:
    return os.path.join(tempfile.gettempdir(), "verl_worker_stacks", f"{pid}.txt")


@dataclass(frozen=True)
class ProcessInfo:
    """Where a worker runs, so the driver can ask it for its stacks."""

    pid: int
    node_ip: str
    stack_file: Optional[str]  # None when the dump hook could not be installed


class Worker:
    """Base class for workers: rank and world size from the environment.

    Subclasses declare their RPCs with `@register(...)` (see `decorator.py`); a worker group
    calls them on every rank and joins the results.
    """

    def __init__(self) -> None:
        self._dist_env = DistributedEnv.from_environ()
        self._stack_file: Optional[IO[str]] = self._install_stack_dump()

    @staticmethod
    def _install_stack_dump() -> Optional[IO[str]]:
        """faulthandler writes all threads' stacks to this process's stack file on STACK_DUMP_SIGNAL,
        even while the main thread is blocked in C (a collective, a pipe read)."""
        path = stack_file_path(os.getpid())
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            handle = open(path, "w")
            faulthandler.register(STACK_DUMP_SIGNAL, file=handle, all_threads=True, chain=False)
        except (OSError, ValueError, RuntimeError) as error:  # no signals off the main thread, read-only /tmp
            logger.warning("no stack dumps for this worker: %s", error)
            return None
        return handle

    def process_info(self) -> ProcessInfo:
        """pid, node and stack file of this worker (the group asks once, at start-up)."""
        return ProcessInfo(os.getpid(), get_node_ip(), self._stack_file.name if self._stack_file else None)

    @property
    def rank(self) -> int:
        return self._dist_env.rank

    @property
    def world_size(self) -> int:
        return self._dist_env.world_size

    @property
    def local_rank(self) -> int:
        return self._dist_env.local_rank

    @property
    def local_world_size(self) -> int:
        return self._dist_env.local_world_size

    def get_master_addr_port(self) -> tuple[str | None, int | None]:
        """(MASTER_ADDR, MASTER_PORT) this worker was given, for the driver to inspect."""
        return self._dist_env.master_addr, self._dist_env.master_port
