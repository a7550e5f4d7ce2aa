"""scripts/bench_rollout.py --paired-rounds on the built-in reach task: every engine run is
compared with the bare runs bracketing it, and the JSON holds each round and the medians."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_negative_rounds_are_refused():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_rollout.py"), "--paired-rounds", "-1"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode != 0 and "--paired-rounds=-1: expected an integer >= 0" in proc.stderr


@pytest.mark.slow
def test_paired_rounds_bracket_each_engine_run_with_bare_runs(tmp_path):
    out = tmp_path / "paired.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_rollout.py"), "--suite", "reach",
                           "--workers", "1", "--envs-per-worker", "2", "--episodes", "4", "--max-steps", "16",
                           "--model-cores", "none", "--env-cores", "none", "--paired-rounds", "2", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    rounds = result["paired_rounds"]
    assert len(rounds) == 2 and rounds[0]["bare_after"] == rounds[1]["bare_before"]  # shared bracketing run
    for r in rounds:
        reference = (r["bare_before"] + r["bare_after"]) / 2
        for k in (1, 2):
            assert r[f"stages{k}_efficiency"] == pytest.approx(r[f"stages{k}_env_steps_per_s"] / reference)
    for k in (1, 2):
        effs = sorted(r[f"stages{k}_efficiency"] for r in rounds)
        assert result[f"stages{k}_efficiency_median"] == pytest.approx(sum(effs) / 2)
    bares = [rounds[0]["bare_before"], *(r["bare_after"] for r in rounds)]
    assert result["bare_rate_spread"] == pytest.approx(max(bares) / min(bares))
    assert "bare_render_every_step" not in result  # paired mode runs nothing else
