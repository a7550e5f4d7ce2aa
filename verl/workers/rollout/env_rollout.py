"""The rollout engine: drive many live envs through the policy with continuous batching.

Every env slot of the rank's EnvPool holds one episode. Each round, the observations of all
envs waiting for an action go through ONE batched forward (parallel decoding: a whole action
chunk per call), and the chunks go back to the pool. A finished episode leaves the batch at once
(no forwards for finished envs, unlike the reference), and its slot is reset to the next pending
episode, so the pool stays full until the queue drains.

With `pipeline_stages=2` the slots are split into two groups (half of every env worker's slots
each): while one group's chunks execute in the simulators, the other group is in the model.

Fault accounting (`RolloutStats`): an episode an env fault ended is `faulted` (dropped from
training); one whose reset faulted but succeeded on its retry is `recovered` (trained on as
usual). Every env worker restart during the rollout is attributed by the episodes it hit (the
pool tags their results with its id): `faulted` if one of them ended faulted, else `recovered`,
or `idle` if it hit none (a worker that died with no episode of this rollout on it). So
env_worker_restarts = env_worker_restarts_faulted + _recovered + _idle, always.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch

from verl.envs.base import ChunkResult, EnvSpec
from verl.models.openvla_oft import ACTION_TOKEN_BEGIN, ActionTokenizer
from verl.models.openvla_oft.constants import LIBERO_PROPRIO_DIM
from verl.protocol import DataProto
from verl.utils.progress import EpisodeProgress
from verl.utils.torch_functional import action_log_prob_and_entropy
from verl.workers import trajectory as tj
from verl.workers.policy_inputs import PolicyInputBuilder
from verl.workers.rollout.policy_env_io import env_actions, model_images, model_proprio

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decoding:
    """How one rollout picks action tokens: argmax (`greedy`), else sampled at `temperature` from
    `generator`; log-probs are always under `temperature`."""

    greedy: bool
    temperature: float
    generator: torch.Generator


@dataclass
class RolloutSettings:
    benchmark: str  # libero | robotwin2 | reach
    temperature: float
    action_chunk: int
    action_dim: int
    max_env_steps: int  # episode budget; fixes the padded step axis T = ceil(max_env_steps / chunk)
    max_batch_size: int = 64
    center_crop: bool = True
    num_images: int = 1
    use_proprio: bool = False
    proprio_dim: int = LIBERO_PROPRIO_DIM  # the model's (config.proprio_dim): the width of every batch's proprio
    pipeline_stages: int = 1
    pad_token_id: int = 32000
    progress_bar: bool = True  # a bar over the rollout's episodes with the running success rate

    @property
    def max_model_calls(self) -> int:
        return math.ceil(self.max_env_steps / self.action_chunk)


@dataclass
class Episode:
    """One trajectory being collected: what the policy saw and did, step by step."""

    index: int
    spec: EnvSpec
    instruction: str = ""
    prompt_ids: Optional[np.ndarray] = None
    images: list[np.ndarray] = field(default_factory=list)  # per model call: uint8 [n_img, 224, 224, 3]
    proprio: list[np.ndarray] = field(default_factory=list)
    tokens: list[np.ndarray] = field(default_factory=list)  # per model call: int64 [A]
    log_probs: list[np.ndarray] = field(default_factory=list)  # per model call: float32 [A]
    entropies: list[np.ndarray] = field(default_factory=list)  # per model call: float32 [A]
    finish_step: int = 0
    complete: bool = False
    faulted: bool = False
    retried: bool = False  # its reset faulted and was retried
    worker_restarts: set[int] = field(default_factory=set)  # ids of the env worker restarts that hit it
    record_video: bool = False  # saved as an mp4 when the pool has a video_dir
    video_tag: Optional[str] = None  # in the video's file name (the prompt's uid), so the driver can find it


@dataclass
class RolloutStats:
    forwards: int = 0  # batched model calls
    forward_rows: int = 0  # observations that went through the model (sum over calls)
    model_s: float = 0.0
    env_wait_s: float = 0.0
    env_busy_s: float = 0.0  # the busiest env worker's time serving this rollout's requests
    wall_s: float = 0.0
    env_steps: int = 0
    faulted: int = 0  # episodes an env fault ended (no reward, no training)
    recovered: int = 0  # episodes whose reset faulted and whose retry succeeded; not faulted after that
    env_worker_restarts: int = 0  # env worker processes restarted (crashed or hung) during this rollout
    # env_worker_restarts by what they did to this rollout's episodes (they add up to it)
    restarts_faulted: int = 0  # hit at least one episode that ended faulted
    restarts_recovered: int = 0  # hit only episodes that recovered
    restarts_idle: int = 0  # hit no episode of this rollout (e.g. a worker that died between requests)

    def as_metrics(self, prefix: str) -> dict[str, float]:
        return {
            f"{prefix}/forwards": float(self.forwards),
            f"{prefix}/forward_rows": float(self.forward_rows),
            f"{prefix}/model_time_s": self.model_s,
            f"{prefix}/env_wait_time_s": self.env_wait_s,
            f"{prefix}/env_busy_time_s": self.env_busy_s,
            f"{prefix}/wall_time_s": self.wall_s,
            f"{prefix}/env_steps": float(self.env_steps),
            f"{prefix}/env_steps_per_s": self.env_steps / max(self.wall_s, 1e-9),
            f"{prefix}/faulted_episodes": float(self.faulted),
            f"{prefix}/recovered_episodes": float(self.recovered),
            f"{prefix}/env_worker_restarts": float(self.env_worker_restarts),
            f"{prefix}/env_worker_restarts_faulted": float(self.restarts_faulted),
            f"{prefix}/env_worker_restarts_recovered": float(self.restarts_recovered),
            f"{prefix}/env_worker_restarts_idle": float(self.restarts_idle),
        }


class EnvRollout:
    """Collect trajectories for a batch of episode specs on one rank."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenize: Callable[[str], list[int]],
        inputs: PolicyInputBuilder,
        pool: Any,  # verl.envs.env_pool.EnvPool
        settings: RolloutSettings,
        action_stats: dict[str, Any],
        proprio_stats: Optional[dict[str, Any]] = None,
    ):
        """`action_stats` / `proprio_stats`: the checkpoint's statistics of `unnorm_key`; the proprio
        ones are required with `settings.use_proprio` (the model takes proprio normalised by them)."""
        if settings.use_proprio and proprio_stats is None:
            raise ValueError("use_proprio needs the checkpoint's proprio statistics (norm_stats[unnorm_key]['proprio'])")
        self.model = model
        self.tokenize = tokenize
        self.inputs = inputs
        self.device = inputs.device
        self.pool = pool
        self.settings = settings
        self.action_stats = action_stats
        self.proprio_stats = proprio_stats
        self.stats = RolloutStats()
        self._prompt_cache: dict[str, np.ndarray] = {}
        self._last_error = ""
        self._slot_task: dict[int, tuple[str, int]] = {}  # slot -> (suite, task) of its last episode
        self._progress = EpisodeProgress(0, "")
        self.action_tokenizer = ActionTokenizer()
        self._image_threads: Optional[ThreadPoolExecutor] = None  # during a rollout (see _observe)

    # ----------------------------------------------------------------------------- public
    @torch.no_grad()
    def generate_sequences(self, prompts: DataProto, greedy: bool, seed: int, temperature: Optional[float] = None,
                           validation: Optional[bool] = None) -> DataProto:
        """Roll out one episode per row of `prompts` (non-tensor task_suite_name/task_id/trial_id).

        greedy: argmax action tokens; else sampled at `temperature` (None: the settings', i.e. the
        training rollouts'), from a generator seeded with `seed`. The stored log-probs are under
        the temperature sampled at. validation (None: = greedy): labels the progress bar, and
        without flags records every episode's video.
        Videos (when the pool has a video_dir): the episodes whose `record_video` prompt flag is set,
        named with their `uid`; without flags, every validation episode.
        """
        start = time.perf_counter()
        self.stats = RolloutStats()
        validation = greedy if validation is None else validation
        decoding = Decoding(greedy, self.settings.temperature if temperature is None else float(temperature),
                            torch.Generator(device=self.device).manual_seed(seed))
        keys = prompts.non_tensor_batch
        episodes = [
            Episode(index=i, spec=EnvSpec(
                benchmark=self.settings.benchmark,
                task_suite_name=str(keys[tj.TASK_SUITE_NAME][i]),
                task_id=int(keys[tj.TASK_ID][i]),
                trial_id=int(keys[tj.TRIAL_ID][i]),
                seed=int(keys[tj.SEED][i]) if tj.SEED in keys else 0,
            ), record_video=bool(keys[tj.RECORD_VIDEO][i]) if tj.RECORD_VIDEO in keys else validation,
                video_tag=str(keys[tj.UID][i]) if tj.UID in keys else None)
            for i in range(len(prompts))
        ]
        self.model.eval()
        busy_before = list(self.pool.busy_s)
        restarts_before = self.pool.counters["worker_restarts"]
        self._progress = EpisodeProgress(len(episodes), self._progress_label(validation), self.settings.progress_bar)
        try:
            # observations arrive while the env workers wait for actions: their cores are free, and the
            # image pipeline (JPEG, Lanczos, crop: libjpeg and numpy, which release the GIL) runs on them
            with ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads()),
                                    thread_name_prefix="rollout-images") as self._image_threads:
                self._run(episodes, decoding)
        finally:
            self._image_threads = None
            self._progress.close()
        self.stats.wall_s = time.perf_counter() - start
        self.stats.env_busy_s = max(after - before for after, before in zip(self.pool.busy_s, busy_before))
        self._account_faults(episodes, restarts_before)
        if episodes and self.stats.faulted == len(episodes):
            # a small share can fault entirely by bad luck (a worker killed twice); a broken simulator
            # set-up fails every request and the env pool raises (env.max_consecutive_failures)
            logger.warning("all %d episodes of this rollout faulted; last error: %s", len(episodes), self._last_error)
        out = self._to_batch(episodes)
        out.meta_info["metrics"] = self.stats.as_metrics("rollout")
        return out.union(prompts)  # a new batch: the caller's prompts stay untouched

    def _progress_label(self, validation: bool) -> str:
        rank = f" rank {torch.distributed.get_rank()}" if torch.distributed.is_initialized() else ""
        return f"{'validation' if validation else 'rollout'} step {getattr(self.pool, 'global_step', 0)}{rank}"

    def _account_faults(self, episodes: list[Episode], restarts_before: int) -> None:
        """Count faulted and recovered episodes, and attribute each env worker restart of this
        rollout to what it did (see the module docstring); one log line per restart."""
        s = self.stats
        s.faulted = sum(ep.faulted for ep in episodes)
        s.recovered = sum(ep.retried and not ep.faulted for ep in episodes)
        restart_ids = set(range(restarts_before + 1, self.pool.counters["worker_restarts"] + 1))
        hit: dict[int, list[Episode]] = {r: [] for r in restart_ids}
        for ep in episodes:
            for r in ep.worker_restarts & restart_ids:
                hit[r].append(ep)
        outcome = {r: "idle" if not eps else "faulted" if any(ep.faulted for ep in eps) else "recovered"
                   for r, eps in hit.items()}
        s.env_worker_restarts = len(restart_ids)
        s.restarts_faulted = sum(o == "faulted" for o in outcome.values())
        s.restarts_recovered = sum(o == "recovered" for o in outcome.values())
        s.restarts_idle = sum(o == "idle" for o in outcome.values())
        records = {record.restart_id: record for record in self.pool.restart_log}
        for r in sorted(restart_ids):
            record = records.get(r)
            pid, reason = (record.pid, record.reason) if record else (None, "(no longer in the pool's restart log)")
            # one grep-able line per restart: scripts/fault_campaign.py matches it to the fault it injected
            logger.warning("env fault accounting: restart %d pid=%s outcome=%s episodes=%d faulted=%d (%s)",
                           r, pid, outcome[r], len(hit[r]), sum(ep.faulted for ep in hit[r]),
                           (reason.splitlines() or [""])[0][:200])

    # ----------------------------------------------------------------------------- loop
    def _slot_groups(self) -> list[list[int]]:
        """All slots, or (pipelining) two groups, each holding half of every env worker's slots.

        A worker serves its requests in order, so while one group is in the model every worker
        still has the other group's chunks (and resets) to execute: env cores never wait for the
        model as long as a model call takes no longer than a group's chunks.
        """
        slots = list(range(self.pool.num_envs))
        if self.settings.pipeline_stages == 1:
            return [slots]
        by_worker: dict[int, list[int]] = {}
        for s in slots:
            by_worker.setdefault(self.pool.worker_of(s), []).append(s)
        if all(len(own) >= 2 for own in by_worker.values()):
            first = {s for own in by_worker.values() for s in own[: len(own) // 2]}
        elif len(by_worker) >= 2:  # one slot per worker: split the workers instead
            workers = sorted(by_worker)
            first = {s for w in workers[: len(workers) // 2] for s in by_worker[w]}
        else:
            logger.warning("pipeline_stages=%d needs >= 2 env slots; running unpipelined", self.settings.pipeline_stages)
            return [slots]
        return [[s for s in slots if s in first], [s for s in slots if s not in first]]

    def _run(self, episodes: list[Episode], decoding: Decoding) -> None:
        """Visit the slot groups in turn: collect the group's finished calls, start pending
        episodes in its free slots, and send one model call's chunks for its live envs.

        Resets are asynchronous like steps, so a group being reset never stalls the model; the
        control flow depends only on results, never on timing, so rollouts are reproducible.
        """
        pending = deque(episodes)
        groups = self._slot_groups()
        occupant: dict[int, Episode] = {}  # slot -> live episode (its env has an observation or is stepping)
        in_flight: list[list[tuple[Any, dict[int, Episode]]]] = [[] for _ in groups]  # (handle, slot -> episode)
        while pending or occupant or any(in_flight):
            for g, slots in enumerate(groups):
                for handle, episodes_of in in_flight[g]:
                    t0 = time.perf_counter()
                    results = self.pool.wait(handle)
                    self.stats.env_wait_s += time.perf_counter() - t0
                    if handle.kind == "reset":
                        self._absorb_resets(episodes_of, results, occupant)
                    else:
                        self._absorb_chunks(list(episodes_of), results, occupant)
                in_flight[g] = []
                ready = [s for s in slots if s in occupant]
                if ready:
                    chunks = self._act(ready, occupant, decoding)
                    in_flight[g].append((self.pool.step_chunk_async(ready, chunks), {s: occupant[s] for s in ready}))
                starting = self._start_episodes([s for s in slots if s not in occupant], pending)
                if starting:
                    handle = self.pool.reset_async(list(starting), [ep.spec for ep in starting.values()],
                                                   record_video=[ep.record_video for ep in starting.values()],
                                                   video_tags=[ep.video_tag or "" for ep in starting.values()])
                    in_flight[g].append((handle, starting))

    def _start_episodes(self, free: list[int], pending: deque) -> dict[int, Episode]:
        """Assign pending episodes to free slots (slot -> episode).

        A slot prefers an episode of the task it ran last: switching a LIBERO env to another task
        rebuilds the simulator (seconds), resetting it within a task takes a fraction of that.
        The choice depends only on the queue and the slots, so rollouts stay reproducible.
        """
        starting: dict[int, Episode] = {}
        for slot in free[: len(pending)]:
            ep = self._pop_for_slot(slot, pending)
            self._slot_task[slot] = (ep.spec.task_suite_name, ep.spec.task_id)
            starting[slot] = ep
        return starting

    def _absorb_resets(self, starting: dict[int, Episode], results: list[ChunkResult],
                       occupant: dict[int, Episode]) -> None:
        """A reset slot becomes live with its first observation; a faulted reset ends that episode."""
        observed = []
        for (slot, ep), res in zip(starting.items(), results):
            ep.retried = res.retried
            ep.worker_restarts.update(res.worker_restarts)
            if res.faulted or res.obs is None:
                ep.faulted = True
                self._last_error = res.error
                logger.warning("episode %s faulted at reset: %s", ep.spec, res.error)
                self._progress.update(False)
                continue
            ep.instruction = res.obs.instruction
            ep.prompt_ids = self._prompt_ids(ep.instruction)
            observed.append((ep, res))
            occupant[slot] = ep
        self._observe(observed)

    def _pop_for_slot(self, slot: int, pending: deque) -> Episode:
        task = self._slot_task.get(slot)
        if task is not None:
            for i, ep in enumerate(pending):
                if (ep.spec.task_suite_name, ep.spec.task_id) == task:
                    del pending[i]
                    return ep
        return pending.popleft()

    def _prompt_ids(self, instruction: str) -> np.ndarray:
        if instruction not in self._prompt_cache:
            self._prompt_cache[instruction] = np.asarray(self.tokenize(instruction), dtype=np.int64)
        return self._prompt_cache[instruction]

    def _observe(self, observed: list[tuple[Episode, ChunkResult]]) -> None:
        """Keep each episode's observation the policy acts on next (only those it will act on)."""
        s = self.settings
        images = self._image_threads.map(
            lambda res: model_images(res.obs.images, s.benchmark, s.center_crop, s.num_images),
            [res for _, res in observed])
        for (ep, res), image in zip(observed, images):
            ep.images.append(image)
            if s.use_proprio:
                raw = np.asarray(res.obs.proprio, dtype=np.float64)
                if raw.shape != (s.proprio_dim,):
                    raise ValueError(f"the env returned proprio of shape {raw.shape} but the model takes "
                                     f"({s.proprio_dim},) (config.json proprio_dim)")
                # stored normalised: the update recomputes log-probs on exactly what the policy saw
                ep.proprio.append(model_proprio(raw, s.benchmark, self.proprio_stats))

    def _act(self, slots: list[int], occupant: dict[int, Episode], decoding: Decoding) -> list[np.ndarray]:
        """One batched forward per `max_batch_size` live envs -> env-space action chunks."""
        t0 = time.perf_counter()
        chunks: list[np.ndarray] = []
        for start in range(0, len(slots), self.settings.max_batch_size):
            batch = [occupant[s] for s in slots[start:start + self.settings.max_batch_size]]
            proprio = torch.from_numpy(np.stack([ep.proprio[-1] for ep in batch])) if self.settings.use_proprio else None
            inputs = self.inputs([ep.prompt_ids for ep in batch],
                                 torch.from_numpy(np.stack([ep.images[-1] for ep in batch])),  # [B, n_img, 224, 224, 3]
                                 proprio)
            tokens, logits = self.model.sample_action_tokens(
                **inputs, temperature=decoding.temperature, greedy=decoding.greedy, generator=decoding.generator)
            self.stats.forwards += 1
            self.stats.forward_rows += len(batch)
            bins = tokens - ACTION_TOKEN_BEGIN  # [B, A]
            log_probs, entropy = action_log_prob_and_entropy(logits, bins, decoding.temperature)  # [B, A] each
            tokens_np, lp_np, ent_np = tokens.cpu().numpy(), log_probs.cpu().numpy(), entropy.cpu().numpy()  # a device sync
            for row, ep in enumerate(batch):
                ep.tokens.append(tokens_np[row])
                ep.log_probs.append(lp_np[row].astype(np.float32))
                ep.entropies.append(ent_np[row].astype(np.float32))
                normalized = self.action_tokenizer.decode(tokens_np[row]).reshape(self.settings.action_chunk, self.settings.action_dim)
                chunks.append(env_actions(normalized, self.settings.benchmark, self.action_stats))
        self.stats.model_s += time.perf_counter() - t0
        return chunks

    def _absorb_chunks(self, slots: list[int], results: list[ChunkResult], occupant: dict[int, Episode]) -> None:
        observed = []
        for slot, res in zip(slots, results):
            ep = occupant[slot]
            ep.worker_restarts.update(res.worker_restarts)
            ep.finish_step += res.steps_taken
            self.stats.env_steps += res.steps_taken
            budget_left = len(ep.tokens) < self.settings.max_model_calls
            if res.faulted:
                self._last_error = res.error
            if res.done or res.faulted or not budget_left:
                ep.complete, ep.faulted = bool(res.success), bool(res.faulted)
                del occupant[slot]
                self._progress.update(ep.complete)
            else:
                observed.append((ep, res))
        self._observe(observed)

    # ----------------------------------------------------------------------------- output
    def _to_batch(self, episodes: list[Episode]) -> DataProto:
        s = self.settings
        n, t, a = len(episodes), s.max_model_calls, s.action_chunk * s.action_dim
        images = torch.zeros((n, t, s.num_images, 224, 224, 3), dtype=torch.uint8)
        responses = torch.full((n, t, a), ACTION_TOKEN_BEGIN, dtype=torch.long)
        log_probs = torch.zeros((n, t, a), dtype=torch.float32)
        entropies = torch.zeros((n, t, a), dtype=torch.float32)
        # the model's width, not an episode's: any episode (the first included) may have faulted at
        # reset with no observation, and every rank's and round's batch must concatenate
        proprio_dim = s.proprio_dim if s.use_proprio else 0
        proprio = torch.zeros((n, t, proprio_dim), dtype=torch.float32)
        for i, ep in enumerate(episodes):
            k = len(ep.tokens)
            if k:
                images[i, :k] = torch.from_numpy(np.stack(ep.images[:k]))
                responses[i, :k] = torch.from_numpy(np.stack(ep.tokens))
                log_probs[i, :k] = torch.from_numpy(np.stack(ep.log_probs))
                entropies[i, :k] = torch.from_numpy(np.stack(ep.entropies))
                if proprio_dim:
                    proprio[i, :k] = torch.from_numpy(np.stack(ep.proprio[:k]))
        finish_step = torch.tensor([ep.finish_step for ep in episodes], dtype=torch.long)
        tensors = {
            tj.IMAGES: images,
            tj.RESPONSES: responses,
            tj.ROLLOUT_LOG_PROBS: log_probs.view(n, t * a),
            tj.ROLLOUT_ENTROPY: entropies.view(n, t * a),
            tj.RESPONSE_MASK: tj.response_mask_from_finish_step(finish_step, t, s.action_chunk, s.action_dim),
            tj.FINISH_STEP: finish_step,
            tj.NUM_STEPS: torch.tensor([len(ep.tokens) for ep in episodes], dtype=torch.long),
            tj.COMPLETE: torch.tensor([ep.complete for ep in episodes], dtype=torch.bool),
            tj.FAULTED: torch.tensor([ep.faulted for ep in episodes], dtype=torch.bool),
        }
        if s.use_proprio:
            tensors[tj.PROPRIO] = proprio
        prompt_ids = np.empty(n, dtype=object)
        for i, ep in enumerate(episodes):
            prompt_ids[i] = ep.prompt_ids if ep.prompt_ids is not None else np.zeros(0, dtype=np.int64)
        non_tensors = {
            tj.PROMPT_IDS: prompt_ids,
            tj.INSTRUCTION: np.array([ep.instruction for ep in episodes], dtype=object),
        }
        return DataProto.from_dict(tensors=tensors, non_tensors=non_tensors)

