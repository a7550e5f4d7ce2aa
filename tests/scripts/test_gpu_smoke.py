"""scripts/gpu_smoke.sh --cpu-dry-run: the GPU smoke script end to end except for CUDA (tiny
model, reach task, main_ppo on one CPU worker), and its JSON."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_bad_flag_is_refused():
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_smoke.sh"), "--steps", "zero"], capture_output=True,
                          text=True, cwd=ROOT)
    assert proc.returncode == 2 and "--steps: expected a positive integer" in proc.stderr


@pytest.mark.slow
def test_cpu_dry_run_writes_timings_and_memory(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_smoke.sh"), "--cpu-dry-run", "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_smoke.json").read_text())
    assert report["mode"] == "cpu_dry_run" and report["task"] == "reach" and report["passed"]
    assert len(report["steps"]) == 2
    assert all(s["timing/step"] > 0 and s["perf/cpu_rss_gb"] > 0 for s in report["steps"])
    assert report["memory_plan"]["peak_gb"] > 0 and "memory_plan_error" not in report
