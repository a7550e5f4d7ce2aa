"""Worker, @register and the dispatch table, without Ray."""

import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from verl.protocol import DataProto
from verl.single_controller.base import Dispatch, Execute, Worker, register
from verl.single_controller.base.decorator import DISPATCH_TABLE, get_register_info, registered_methods
from verl.utils.device import get_device_name, get_dist_backend, get_torch_device
from verl.utils.distributed import destroy_process_group, init_process_group_from_env
from verl.utils.network import get_free_port, get_node_ip

DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def clean_dist_env(monkeypatch):
    for name in DIST_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


class Registered(Worker):
    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def compute(self, data: DataProto) -> DataProto:
        return data

    @register(dispatch_mode=Dispatch.ONE_TO_ALL, blocking=False)
    def start(self) -> None:
        pass

    def plain(self) -> None:
        pass


def test_worker_reads_rank_from_environment(clean_dist_env):
    clean_dist_env.setenv("RANK", "3")
    clean_dist_env.setenv("WORLD_SIZE", "4")
    clean_dist_env.setenv("LOCAL_RANK", "1")
    clean_dist_env.setenv("LOCAL_WORLD_SIZE", "2")
    clean_dist_env.setenv("MASTER_ADDR", "10.0.0.1")
    clean_dist_env.setenv("MASTER_PORT", "29500")
    worker = Worker()
    assert (worker.rank, worker.world_size, worker.local_rank, worker.local_world_size) == (3, 4, 1, 2)
    assert worker.get_master_addr_port() == ("10.0.0.1", 29500)


def test_lone_worker_is_rank_zero_of_one(clean_dist_env):
    worker = Worker()
    assert (worker.rank, worker.world_size) == (0, 1)
    assert worker.get_master_addr_port() == (None, None)


def test_worker_rejects_bad_environment(clean_dist_env):
    clean_dist_env.setenv("RANK", "2")
    clean_dist_env.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="RANK=2"):
        Worker()
    clean_dist_env.setenv("RANK", "zero")
    with pytest.raises(ValueError, match="RANK='zero'"):
        Worker()


def test_node_ip_and_free_port():
    assert get_node_ip().count(".") == 3
    port = get_free_port()
    assert 0 < port < 65536


def test_the_master_address_probe_imports_no_torch():
    """A worker group runs node_address as a Ray task before its workers start: its module must
    stay light, or that task's process first imports torch (~3 s per worker group start)."""
    script = ("import sys; from verl.utils.network import node_address; ip, port = node_address(); "
              "print(ip.count('.'), 0 < port < 65536, sorted(m for m in ('torch', 'numpy', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.split() == ["3", "True", "[]"]


def test_register_attaches_metadata_without_wrapping():
    info = get_register_info(Registered.compute)
    assert info.dispatch_mode is Dispatch.DP_COMPUTE_PROTO
    assert info.execute_mode is Execute.ALL and info.blocking
    assert get_register_info(Registered.start).blocking is False
    assert get_register_info(Registered.plain) is None
    assert set(registered_methods(Registered)) == {"compute", "start"}
    assert Registered.compute.__name__ == "compute"


def test_register_rejects_bad_modes():
    with pytest.raises(TypeError, match="DP_COMPUTE_PROTO"):
        register(dispatch_mode="dp")
    with pytest.raises(ValueError, match="RANK_ZERO"):
        register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO, execute_mode=Execute.RANK_ZERO)


def rows(n: int) -> DataProto:
    return DataProto.from_dict(tensors={"x": torch.arange(n)})


def test_dp_dispatch_pads_splits_and_collect_unpads():
    dispatch_fn, collect_fn = DISPATCH_TABLE[Dispatch.DP_COMPUTE_PROTO]
    plan = dispatch_fn(2, (rows(5), "shared"), {"other": rows(5)})
    assert plan.pad_size == 1 and plan.num_calls == 2
    assert plan.args[0][0].batch["x"].tolist() == [0, 1, 2]
    assert plan.args[1][0].batch["x"].tolist() == [3, 4, 0]
    assert plan.args[1][1] == "shared"
    assert plan.kwargs[1]["other"].batch["x"].tolist() == [3, 4, 0]
    # The workers echo their chunk: padding removed, order kept.
    joined = collect_fn([plan.args[0][0], plan.args[1][0]], plan)
    assert joined.batch["x"].tolist() == [0, 1, 2, 3, 4]
    # Two output rows per input row: the padding's two rows go.
    doubled = collect_fn([a[0].repeat(2) for a in plan.args], plan)
    assert doubled.batch["x"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert collect_fn([1, 2], plan) == [1, 2]


def test_dp_dispatch_errors():
    dispatch_fn, _ = DISPATCH_TABLE[Dispatch.DP_COMPUTE_PROTO]
    with pytest.raises(ValueError, match="at least one DataProto"):
        dispatch_fn(2, (1,), {})
    with pytest.raises(ValueError, match="different lengths"):
        dispatch_fn(2, (rows(4), rows(3)), {})


def test_other_dispatch_modes():
    one_to_all, collect_list = DISPATCH_TABLE[Dispatch.ONE_TO_ALL]
    plan = one_to_all(3, (7,), {"k": 1})
    assert plan.args == [(7,)] * 3 and plan.kwargs == [{"k": 1}] * 3
    assert collect_list(["a", "b", "c"], plan) == ["a", "b", "c"]

    all_to_all, _ = DISPATCH_TABLE[Dispatch.ALL_TO_ALL]
    plan = all_to_all(2, ([1, 2],), {"k": ["a", "b"]})
    assert plan.args == [(1,), (2,)] and plan.kwargs == [{"k": "a"}, {"k": "b"}]
    with pytest.raises(ValueError, match="one entry per rank"):
        all_to_all(2, ([1, 2, 3],), {})

    rank_zero, collect_zero = DISPATCH_TABLE[Dispatch.RANK_ZERO]
    plan = rank_zero(4, (1,), {})
    assert plan.num_calls == 1
    assert collect_zero(["only"], plan) == "only"
    assert set(DISPATCH_TABLE) == set(Dispatch)


def test_device_helpers_agree():
    device = get_device_name()
    assert device in ("cuda", "cpu")
    assert get_dist_backend() == ("nccl" if device == "cuda" else "gloo")
    assert get_torch_device() is getattr(torch, device)


def test_init_process_group_from_env_is_idempotent(clean_dist_env):
    with pytest.raises(RuntimeError, match="MASTER_ADDR"):
        init_process_group_from_env()
    clean_dist_env.setenv("RANK", "0")
    clean_dist_env.setenv("WORLD_SIZE", "1")
    clean_dist_env.setenv("MASTER_ADDR", "127.0.0.1")
    clean_dist_env.setenv("MASTER_PORT", str(get_free_port()))
    try:
        init_process_group_from_env(timeout_s=30)
        init_process_group_from_env(timeout_s=30)  # second call is a no-op
        assert dist.is_initialized() and dist.get_world_size() == 1
        assert dist.get_backend() == get_dist_backend()
        t = torch.tensor([2.0])
        dist.all_reduce(t)
        assert t.item() == 2.0
    finally:
        destroy_process_group()
        destroy_process_group()
    assert not dist.is_initialized()
