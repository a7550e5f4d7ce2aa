"""Fixtures shared by the trainer's end-to-end tests."""

import subprocess
import sys

import pytest

from e2e_utils import ROOT


@pytest.fixture(scope="session")
def reach_sft_policy(tmp_path_factory):
    """The reach learning tests' starting policy (GRPO's and PPO's alike): a tiny SFT policy that
    heads for the single target too slowly to reach it (scripts/make_reach_sft_checkpoint.py).
    Runs only read it, so one copy serves the session."""
    out = tmp_path_factory.mktemp("reach_sft") / "sft"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_reach_sft_checkpoint.py"), "--out", str(out),
                    "--num-targets", "1", "--speed", "0.16", "--steps", "100", "--seed", "0"],
                   check=True, cwd=ROOT, capture_output=True, timeout=600)
    return out
