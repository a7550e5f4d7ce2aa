"""Ray back end of the single controller: resource pools, actor classes, worker groups.

The driver builds a `RayResourcePool` (placement groups: one bundle per worker), wraps a
`Worker` subclass in `RayClassWithInitArgs`, and gets a `RayWorkerGroup` with one actor per
bundle. Calling a registered method on the group (`wg.generate_sequences(batch)`) dispatches
it to the actors as its `@register` metadata says and collects the results in rank order.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import time
import uuid
from typing import Any, Callable

import ray
from ray.util.placement_group import PlacementGroup, placement_group, placement_group_table, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from verl.single_controller.base.decorator import DISPATCH_TABLE, Execute, RegisterInfo, registered_methods
from verl.single_controller.base.worker import STACK_DUMP_SIGNAL, ProcessInfo
from verl.utils.network import get_node_ip, node_address

logger = logging.getLogger(__name__)

__all__ = ["PendingResult", "RayClassWithInitArgs", "RayResourcePool", "RayWorkerGroup", "WorkerError",
           "WorkerTimeoutError"]


class WorkerError(RuntimeError):
    """A worker method failed remotely; carries the method, the rank and the remote traceback."""

    def __init__(self, method: str, rank: int, remote_traceback: str) -> None:
        self.method = method
        self.rank = rank
        self.remote_traceback = remote_traceback
        super().__init__(f"{method} failed on rank {rank}:\n{remote_traceback}")


class WorkerTimeoutError(TimeoutError):
    """A worker method missed its deadline; carries the method, the late ranks and their stacks."""

    def __init__(self, method: str, timeout_s: float, late_ranks: list[int], stacks: dict[int, str]) -> None:
        self.method = method
        self.late_ranks = late_ranks
        self.stacks = stacks
        text = f"{method} did not finish within {timeout_s}s on ranks {late_ranks}"
        for rank in late_ranks:
            if rank in stacks:
                text += f"\n--- rank {rank}: where it is now ---\n{stacks[rank]}"
        super().__init__(text)


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def _remote_traceback(error: Exception) -> str:
    """The traceback text Ray recorded in the worker process (else the error's own text),
    without the terminal colour codes Ray adds."""
    text = getattr(error, "traceback_str", None) or str(error)
    return _ANSI_ESCAPE.sub("", text)


class RayResourcePool:
    """Placement groups reserving one bundle per worker, one group per node.

    On CPU each bundle is `{"CPU": num_cpus_per_bundle}` (1 by default: Ray's usual many-CPU
    bundles leave a placement group on a small machine pending forever, with no error); on GPU
    it is `{"CPU": num_cpus_per_bundle, "GPU": 1}`. `max_colocate_count` worker groups may share
    the bundles, each actor taking that fraction of a bundle.
    """

    def __init__(
        self,
        process_on_nodes: list[int],
        use_gpu: bool,
        max_colocate_count: int = 1,
        name_prefix: str = "",
        num_cpus_per_bundle: float = 1.0,
        placement_timeout_s: float = 120.0,
    ) -> None:
        if not process_on_nodes or any(not isinstance(n, int) or n <= 0 for n in process_on_nodes):
            raise ValueError(f"process_on_nodes must be a non-empty list of positive ints, got {process_on_nodes}")
        if max_colocate_count < 1:
            raise ValueError(f"max_colocate_count must be >= 1, got {max_colocate_count}")
        if num_cpus_per_bundle < 0:
            raise ValueError(f"num_cpus_per_bundle must be >= 0, got {num_cpus_per_bundle}")
        if placement_timeout_s <= 0:
            raise ValueError(f"placement_timeout_s must be positive, got {placement_timeout_s}")
        self.process_on_nodes = list(process_on_nodes)
        self.use_gpu = use_gpu
        self.max_colocate_count = max_colocate_count
        self.name_prefix = name_prefix
        self.num_cpus_per_bundle = num_cpus_per_bundle
        self.placement_timeout_s = placement_timeout_s
        self._placement_groups: list[PlacementGroup] | None = None

    @property
    def world_size(self) -> int:
        return sum(self.process_on_nodes)

    @property
    def bundle(self) -> dict[str, float]:
        """The resources of one bundle."""
        bundle = {"CPU": self.num_cpus_per_bundle} if self.num_cpus_per_bundle > 0 else {}
        if self.use_gpu:
            bundle["GPU"] = 1
        return bundle

    def actor_resources(self) -> dict[str, float]:
        """num_cpus / num_gpus of one actor: its share of a bundle."""
        return {
            "num_cpus": self.num_cpus_per_bundle / self.max_colocate_count,
            "num_gpus": (1 / self.max_colocate_count) if self.use_gpu else 0,
        }

    def _requested(self) -> dict[str, float]:
        return {k: v * self.world_size for k, v in self.bundle.items()}

    def get_placement_groups(self) -> list[PlacementGroup]:
        """Create the placement groups on first use and wait until Ray has placed them.

        Raises RuntimeError, saying what was requested and what the cluster has, when the
        request can never fit or is not placed within `placement_timeout_s`.
        """
        if self._placement_groups is not None:
            return self._placement_groups
        requested = self._requested()
        total = ray.cluster_resources()
        too_big = {k: v for k, v in requested.items() if v > total.get(k, 0)}
        if too_big:
            raise RuntimeError(
                f"resource pool needs {requested} ({self.world_size} bundles of {self.bundle}), "
                f"but the whole Ray cluster has {({k: total.get(k, 0) for k in requested})}"
            )
        groups = []
        for node_index, count in enumerate(self.process_on_nodes):
            name = f"{self.name_prefix}pg_node{node_index}" if self.name_prefix else ""
            # STRICT_PACK: all bundles of one entry of process_on_nodes on one node.
            groups.append(placement_group([dict(self.bundle) for _ in range(count)], strategy="STRICT_PACK", name=name))
        ready, _ = ray.wait([pg.ready() for pg in groups], num_returns=len(groups), timeout=self.placement_timeout_s)
        if len(ready) != len(groups):
            available = ray.available_resources()
            for pg in groups:
                remove_placement_group(pg)
            raise RuntimeError(
                f"placement groups for {self.process_on_nodes} workers per node (bundle {self.bundle}, "
                f"{requested} in all) were not placed within {self.placement_timeout_s:.0f}s; "
                f"available now: {({k: available.get(k, 0) for k in requested})}. Other placement "
                "groups or actors may hold the resources, or no single node has enough of them."
            )
        self._placement_groups = groups
        return groups

    def release(self) -> None:
        """Remove the placement groups (kill the worker groups using them first)."""
        for pg in self._placement_groups or []:
            remove_placement_group(pg)
        self._placement_groups = None


class RayClassWithInitArgs:
    """A worker class, its constructor arguments, and extra Ray actor options.

    `cls` is a plain class or a `ray.remote` actor class. Actor options (e.g. a `runtime_env`
    with `env_vars`) are added with `update_options`; the worker group adds its own env vars
    (RANK, MASTER_ADDR, ...) on top.
    """

    def __init__(self, cls: type | Any, *args: Any, **kwargs: Any) -> None:
        self.cls = cls
        self.args = args
        self.kwargs = kwargs
        self.options: dict[str, Any] = {}

    def update_options(self, options: dict[str, Any]) -> RayClassWithInitArgs:
        """Merge Ray actor options into those already set (env_vars are merged key by key)."""
        options = copy.deepcopy(options)
        new_env = options.get("runtime_env", {}).get("env_vars")
        old_env = self.options.get("runtime_env", {}).get("env_vars")
        self.options.update(options)
        if new_env is not None and old_env is not None:
            self.options["runtime_env"]["env_vars"] = {**old_env, **new_env}
        return self

    @property
    def worker_class(self) -> type:
        """The plain Python class (unwrapped from a Ray actor class)."""
        metadata = getattr(self.cls, "__ray_metadata__", None)
        return metadata.modified_class if metadata is not None else self.cls

    def remote_class(self) -> Any:
        """The Ray actor class to instantiate."""
        return self.cls if hasattr(self.cls, "__ray_metadata__") else ray.remote(self.cls)


def _read_stacks(infos: dict[int, ProcessInfo], ranks: list[int], settle_s: float = 2.0) -> dict[int, str]:
    """Ask `ranks` (those on this node) to dump their Python stacks; rank -> the dump's text."""
    here = get_node_ip()
    asked: dict[int, str] = {}
    for rank in ranks:
        info = infos.get(rank)
        if info is None or info.stack_file is None:
            continue
        if info.node_ip != here:
            asked[rank] = f"(on node {info.node_ip}: send signal {int(STACK_DUMP_SIGNAL)} to pid {info.pid}, " \
                          f"then read {info.stack_file} there)"
            continue
        try:
            open(info.stack_file, "w").close()  # only this dump, not an earlier one
            os.kill(info.pid, STACK_DUMP_SIGNAL)
        except OSError as error:
            asked[rank] = f"(no stack dump: {error})"
            continue
        asked[rank] = ""
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline and any(v == "" and not os.path.getsize(infos[r].stack_file)
                                              for r, v in asked.items()):
        time.sleep(0.05)
    time.sleep(0.1)  # faulthandler writes thread by thread
    out = {}
    for rank, text in asked.items():
        if text == "":
            with open(infos[rank].stack_file) as handle:
                text = handle.read().strip() or "(the worker did not answer the stack-dump signal)"
        out[rank] = text
    return out


def _wait_all(method: str, refs: list[ray.ObjectRef], ranks: list[int], timeout_s: float | None,
              infos: dict[int, ProcessInfo] | None = None) -> list[Any]:
    """Results of `refs` in rank order; the first failure raises WorkerError at once.

    Waiting on whichever finishes first (not rank by rank) matters: when one rank fails, the
    others are often blocked in a collective waiting for it. Past `timeout_s` a
    WorkerTimeoutError names the late ranks, with their stacks when `infos` says where they run.
    """
    rank_of = {ref: rank for ref, rank in zip(refs, ranks)}
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    pending = list(refs)
    while pending:
        remaining = None if deadline is None else max(deadline - time.monotonic(), 0)
        done, pending = ray.wait(pending, num_returns=1, timeout=remaining)
        if not done:
            late = sorted(rank_of[r] for r in pending)
            raise WorkerTimeoutError(method, timeout_s, late, _read_stacks(infos or {}, late))
        for ref in done:
            try:
                ray.get(ref)
            except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as error:
                raise WorkerError(method, rank_of[ref], _remote_traceback(error)) from error
    return ray.get(list(refs))


class PendingResult:
    """The result of a non-blocking call: `.get()` waits, raises WorkerError, and collects.

    `refs` holds the raw Ray ObjectRefs in rank order, for `ray.wait` on several calls.
    `on_failure` runs before a WorkerError or WorkerTimeoutError propagates (the group's abort).
    """

    def __init__(self, method: str, refs: list[ray.ObjectRef], ranks: list[int], collect: Callable[[list], Any],
                 default_timeout_s: float | None = None, infos: dict[int, ProcessInfo] | None = None,
                 on_failure: Callable[[Exception], None] | None = None) -> None:
        self.method = method
        self.refs = refs
        self.ranks = ranks
        self._collect = collect
        self._default_timeout_s = default_timeout_s
        self._infos = infos
        self._on_failure = on_failure

    def get(self, timeout_s: float | None = None) -> Any:
        """Wait (at most `timeout_s`, else the group's call timeout) and collect the results."""
        timeout_s = self._default_timeout_s if timeout_s is None else timeout_s
        try:
            outputs = _wait_all(self.method, self.refs, self.ranks, timeout_s, self._infos)
        except (WorkerError, WorkerTimeoutError) as error:
            if self._on_failure is not None:
                self._on_failure(error)
            raise
        return self._collect(outputs)


class RayWorkerGroup:
    """One Ray actor per bundle of a resource pool, driven as one object.

    Rank r runs in bundle r (bundles ordered node by node). Each actor gets RANK, WORLD_SIZE,
    LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT as environment variables before
    its constructor runs, so a worker may join torch.distributed inside `__init__`. The
    master address and port are found by a short task in rank 0's bundle before any actor
    starts, so no actor has to wait for another to report them.

    Methods carrying `@register` metadata are called as attributes:
    `wg.generate_sequences(batch)`.

    Every call waits at most `call_timeout_s` (None: forever); a late call raises
    WorkerTimeoutError with the late ranks' Python stacks. With `abort_on_failure`, the first
    failed or late call kills every actor before the error propagates: the other ranks are
    usually blocked in a collective with the failed one and can never finish on their own.
    """

    def __init__(
        self,
        resource_pool: RayResourcePool,
        ray_cls_with_init: RayClassWithInitArgs,
        name_prefix: str | None = None,
        init_timeout_s: float | None = None,
        call_timeout_s: float | None = None,
        abort_on_failure: bool = False,
    ) -> None:
        self.resource_pool = resource_pool
        self.ray_cls_with_init = ray_cls_with_init
        worker_class = ray_cls_with_init.worker_class
        self.name_prefix = name_prefix or f"{worker_class.__name__}_{uuid.uuid4().hex[:6]}"
        self._registered: dict[str, RegisterInfo] = registered_methods(worker_class)
        self._public_methods = {n for n in dir(worker_class) if not n.startswith("_") and callable(getattr(worker_class, n))}
        self._workers: list[Any] = []
        self._infos: dict[int, ProcessInfo] = {}
        self.call_timeout_s = call_timeout_s
        self.abort_on_failure = abort_on_failure
        self.failure: Exception | None = None  # the first failed call's error (the group is dead if aborted)
        self._spawn(init_timeout_s)

    # ------------------------------------------------------------------ start-up

    def _bundles(self) -> list[tuple[PlacementGroup, int, int, int]]:
        """(placement group, bundle index, local rank, local world size) for every rank."""
        placements = []
        for pg in self.resource_pool.get_placement_groups():
            node_of_bundle = placement_group_table(pg)["bundles_to_node_id"]
            placements += [(pg, index, node_of_bundle[index]) for index in range(pg.bundle_count)]
        per_node: dict[str, int] = {}
        local_ranks = []
        for _, _, node in placements:
            local_ranks.append(per_node.get(node, 0))
            per_node[node] = local_ranks[-1] + 1
        return [(pg, index, local, per_node[node]) for (pg, index, node), local in zip(placements, local_ranks)]

    def _spawn(self, init_timeout_s: float | None) -> None:
        bundles = self._bundles()
        world_size = len(bundles)
        resources = self.resource_pool.actor_resources()
        first_pg = bundles[0][0]
        # rank 0's node and a free port there, for the process-group store (a light task: see verl.utils.network)
        probe = ray.remote(node_address).options(
            **resources, scheduling_strategy=PlacementGroupSchedulingStrategy(first_pg, placement_group_bundle_index=0)
        )
        master_addr, master_port = ray.get(probe.remote(), timeout=self.resource_pool.placement_timeout_s)
        self.master_addr, self.master_port = master_addr, master_port

        base_options = copy.deepcopy(self.ray_cls_with_init.options)
        user_env = base_options.pop("runtime_env", {}).get("env_vars", {})
        user_runtime_env = self.ray_cls_with_init.options.get("runtime_env", {})
        remote_cls = self.ray_cls_with_init.remote_class()
        try:
            for rank, (pg, bundle_index, local_rank, local_world_size) in enumerate(bundles):
                env_vars = {
                    **user_env,
                    "RANK": str(rank),
                    "WORLD_SIZE": str(world_size),
                    "LOCAL_RANK": str(local_rank),
                    "LOCAL_WORLD_SIZE": str(local_world_size),
                    "MASTER_ADDR": master_addr,
                    "MASTER_PORT": str(master_port),
                }
                if not self.resource_pool.use_gpu:
                    # A CPU pool means CPU workers, even on a node that has GPUs.
                    env_vars["CUDA_VISIBLE_DEVICES"] = ""
                # On GPU, Ray itself sets CUDA_VISIBLE_DEVICES to the actor's assigned GPU.
                options = {
                    **base_options,
                    **resources,
                    "runtime_env": {**copy.deepcopy(user_runtime_env), "env_vars": env_vars},
                    "scheduling_strategy": PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=bundle_index),
                    "name": f"{self.name_prefix}_rank{rank}",
                }
                actor = remote_cls.options(**options).remote(*self.ray_cls_with_init.args, **self.ray_cls_with_init.kwargs)
                self._workers.append(actor)
            # Surfaces constructor failures now, with the rank, instead of at the first call.
            ready = [w.__ray_ready__.remote() for w in self._workers]
            _wait_all("__init__", ready, list(range(world_size)), init_timeout_s)
            if hasattr(self.ray_cls_with_init.worker_class, "process_info"):
                infos = _wait_all("process_info", [w.process_info.remote() for w in self._workers],
                                  list(range(world_size)), init_timeout_s)
                self._infos = dict(enumerate(infos))
        except BaseException:
            self.shutdown()
            raise
        logger.info("worker group %s: %d workers, master %s:%d", self.name_prefix, world_size, master_addr, master_port)

    # ------------------------------------------------------------------ calls

    @property
    def world_size(self) -> int:
        return len(self._workers)

    @property
    def workers(self) -> list[Any]:
        """The actor handles, in rank order."""
        return list(self._workers)

    @property
    def registered_method_names(self) -> list[str]:
        return sorted(self._registered)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        # Only reached when normal lookup fails, so the group's own attributes win.
        if name.startswith("_"):
            raise AttributeError(name)
        registered = self.__dict__.get("_registered", {})
        if name not in registered:
            raise AttributeError(
                f"{type(self).__name__} has no attribute {name!r}; registered worker methods: {sorted(registered)}"
            )
        info = registered[name]

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._call_registered(name, info, args, kwargs)

        call.__name__ = name
        return call

    def _pending(self, name: str, refs: list[ray.ObjectRef], ranks: list[int], collect: Callable[[list], Any]) -> PendingResult:
        return PendingResult(name, refs, ranks, collect, default_timeout_s=self.call_timeout_s, infos=self._infos,
                             on_failure=self._failed)

    def _failed(self, error: Exception) -> None:
        if self.failure is None:
            self.failure = error
        if self.abort_on_failure and self._workers:
            logger.error("worker group %s: %s failed; stopping all %d workers", self.name_prefix,
                         getattr(error, "method", "a call"), len(self._workers))
            self.shutdown()

    def _call_registered(self, name: str, info: RegisterInfo, args: tuple, kwargs: dict) -> Any:
        dispatch_fn, collect_fn = DISPATCH_TABLE[info.dispatch_mode]
        plan = dispatch_fn(self.world_size, args, kwargs)
        ranks = list(range(plan.num_calls)) if info.execute_mode is Execute.ALL else [0]
        refs = [getattr(self._workers[r], name).remote(*plan.args[r], **plan.kwargs[r]) for r in ranks]
        pending = self._pending(name, refs, ranks, lambda outputs: collect_fn(outputs, plan))
        return pending.get() if info.blocking else pending

    def _check_method(self, name: str) -> None:
        if name not in self._public_methods:
            raise AttributeError(f"worker class has no public method {name!r}; it has {sorted(self._public_methods)}")

    def execute_all(self, name: str, *args: Any, **kwargs: Any) -> list[Any]:
        """Call method `name` with the same arguments on every rank; results in rank order."""
        return self.execute_all_async(name, *args, **kwargs).get()

    def execute_all_async(self, name: str, *args: Any, **kwargs: Any) -> PendingResult:
        """Like `execute_all` without waiting: call `.get()` on the result."""
        self._check_method(name)
        refs = [getattr(w, name).remote(*args, **kwargs) for w in self._workers]
        return self._pending(name, refs, list(range(self.world_size)), list)

    def execute_rank_zero(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call method `name` on rank 0 only and return its result."""
        self._check_method(name)
        ref = getattr(self._workers[0], name).remote(*args, **kwargs)
        return self._pending(name, [ref], [0], lambda outputs: outputs[0]).get()

    # ------------------------------------------------------------------ teardown

    def shutdown(self) -> None:
        """Kill the actors (the resource pool's placement groups stay; see `release`)."""
        for actor in self._workers:
            try:
                ray.kill(actor)
            except Exception as error:  # an actor that already died is fine
                logger.warning("could not kill actor %s: %s", actor, error)
        self._workers = []

    def __enter__(self) -> RayWorkerGroup:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()
