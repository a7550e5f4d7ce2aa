"""all_ranks_succeed on 2 gloo ranks (no Ray): a step only rank 0 can fail (reading the checkpoint)
makes every rank raise together, instead of leaving the others in the next collective."""

import os
import time
import traceback
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from verl.utils.network import get_free_port
from verl.utils.distributed import PeerRankError, all_ranks_succeed

GROUP_TIMEOUT_S = 120  # a rank left behind fails after this instead of hanging the test run


def _rank_main(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    outcome = {}
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=timedelta(seconds=GROUP_TIMEOUT_S))
    try:
        def read_checkpoint():
            if rank == 0:
                raise ValueError("weight file model-00001-of-00002.safetensors is truncated")
            return "built on the meta device"

        assert all_ranks_succeed("noop", lambda: rank) == rank  # success: each rank its own result
        try:
            all_ranks_succeed("loading the checkpoint", read_checkpoint)
            outcome["raised"] = None
        except Exception as error:
            outcome["raised"] = (type(error).__name__, str(error))
        value = torch.tensor([1.0])
        dist.all_reduce(value)  # the ranks are still in step after the failure
        outcome["all_reduce"] = value.item()
    except BaseException:
        outcome["error"] = traceback.format_exc()
    finally:
        torch.save(outcome, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.destroy_process_group()


def test_every_rank_learns_that_rank_0_failed(tmp_path):
    ctx = mp.start_processes(_rank_main, args=(get_free_port(), str(tmp_path)), nprocs=2, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + GROUP_TIMEOUT_S * 3  # hang guard only
    while not ctx.join(timeout=10):
        assert time.monotonic() < deadline, "ranks did not finish"
    outcomes = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert not any("error" in o for o in outcomes), outcomes
    assert outcomes[0]["raised"] == ("ValueError", "weight file model-00001-of-00002.safetensors is truncated")
    kind, text = outcomes[1]["raised"]
    assert kind == PeerRankError.__name__
    assert "loading the checkpoint failed on rank(s) [0]" in text and "is truncated" in text
    assert [o["all_reduce"] for o in outcomes] == [2.0, 2.0]
