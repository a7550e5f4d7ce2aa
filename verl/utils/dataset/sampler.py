"""A resumable sampler: the order of every epoch is a pure function of (seed, epoch), and the
position inside the epoch is saved, so a killed run resumes on exactly the next prompt."""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np


class StatefulSampler:
    """Yields dataset indices epoch after epoch; ``state_dict()`` / ``load_state_dict()`` resume exactly.

    The position counts indices handed out, so checkpoint what has been consumed: with a torch
    ``DataLoader`` use ``num_workers=0`` (no prefetching) or restore ``position`` yourself.
    """

    def __init__(self, data_len: int, shuffle: bool = True, seed: int = 0) -> None:
        if data_len < 1:
            raise ValueError(f"StatefulSampler data_len={data_len} must be >= 1")
        self.data_len = data_len
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.position = 0  # indices of the current epoch already yielded

    def epoch_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.data_len)
        return np.random.default_rng([self.seed, epoch]).permutation(self.data_len)

    def __len__(self) -> int:
        return self.data_len

    def __iter__(self) -> Iterator[int]:
        """The rest of the current epoch; the next ``iter`` starts the following epoch."""
        order = self.epoch_order(self.epoch)
        while self.position < self.data_len:
            index = int(order[self.position])
            self.position += 1
            yield index
        self.epoch += 1
        self.position = 0

    def take(self, n: int) -> list[int]:
        """The next `n` indices, continuing into the next epoch(s) when this one runs out."""
        out: list[int] = []
        while len(out) < n:
            if self.position >= self.data_len:
                self.epoch += 1
                self.position = 0
            order = self.epoch_order(self.epoch)
            count = min(n - len(out), self.data_len - self.position)
            out.extend(int(i) for i in order[self.position:self.position + count])
            self.position += count
        return out

    def observe(self, task_ids: Any, success: Any) -> None:
        """Outcomes do not change a uniform order (the curriculum sampler's hook)."""

    def metrics(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "data_len": self.data_len, "shuffle": self.shuffle}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("data_len", self.data_len) != self.data_len:
            raise ValueError(
                f"sampler state was saved for a dataset of {state['data_len']} items, this one has {self.data_len}"
            )
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.seed = int(state["seed"])
        self.shuffle = bool(state.get("shuffle", self.shuffle))
